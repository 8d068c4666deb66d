//! The conversations service: what the HTTP routes and the pages may do with a
//! caller's conversations (list, read, rename, delete), with ownership and
//! input checks in one place. Routes only translate its answers.

use std::sync::Arc;

use rill_protocol::Usage;
use rill_protocol::conversations::{
    ConversationDetail, ConversationList, ConversationMessage, ConversationSummary,
};

use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::store::{Conversation, Store, StoredMessage};

/// A conversation as Markdown: its title, then each message under a heading
/// naming who wrote it (a reply: its persona's name, via `name_of`, and its
/// model) and when, with notes for replies that did not end normally.
pub fn to_markdown(detail: &ConversationDetail, name_of: impl Fn(&str) -> String) -> String {
    let title = if detail.conversation.title.trim().is_empty() {
        "Conversation"
    } else {
        detail.conversation.title.trim()
    };
    let mut out = format!(
        "# {title}\n\n_Exported from rill · conversation `{}` · started {}_\n",
        detail.conversation.id.replace('`', "'"),
        utc_minute(detail.conversation.created_at)
    );
    for message in &detail.messages {
        let when = utc_minute(message.created_at);
        if message.role == "user" {
            out.push_str(&format!("\n---\n\n### You · {when}\n\n"));
        } else {
            let who = message
                .persona_id
                .as_deref()
                .map_or_else(|| "Assistant".to_owned(), &name_of);
            let mut about = vec![who];
            if let Some(model) = &message.model {
                about.push(model.clone());
            }
            if let Some(confidence) = message.confidence {
                about.push(format!("auto, {:.0}% sure", confidence * 100.0));
            }
            out.push_str(&format!("\n### {} · {when}\n\n", about.join(" · ")));
        }
        out.push_str(message.content.trim_end());
        out.push('\n');
        let note = match message.status.as_str() {
            "cancelled" => Some("Stopped: this reply was cancelled."),
            "interrupted" => Some("Interrupted: the server restarted before this reply finished."),
            "error" => Some("This reply ended with an error."),
            "streaming" => Some("Still being written when exported."),
            _ => None,
        };
        if let Some(note) = note {
            out.push_str(&format!("\n> _{note}_\n"));
        }
    }
    out
}

/// A title as a file name's stem: lower-case letters and digits joined by
/// `-`, at most 60 characters; `conversation` when nothing is left.
pub fn file_stem(title: &str) -> String {
    let mut stem = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            stem.push(c);
        } else if !stem.ends_with('-') && !stem.is_empty() {
            stem.push('-');
        }
        if stem.len() >= 60 {
            break;
        }
    }
    let stem = stem.trim_matches('-');
    if stem.is_empty() {
        "conversation".to_owned()
    } else {
        stem.to_owned()
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM UTC`.
fn utc_minute(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (the proleptic Gregorian calendar; H. Hinnant's
    // algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Longest title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// Most conversations one page may list.
pub const MAX_PAGE: i64 = 200;

/// Conversations of callers. Cheap to clone.
#[derive(Clone)]
pub struct Conversations {
    /// Where they are kept.
    store: Arc<dyn Store>,
    /// Where their replies stream (a deleted conversation's are cancelled).
    hub: Arc<dyn Hub>,
}

impl Conversations {
    /// The service over `store`, cancelling replies in `hub` on delete.
    pub fn new(store: Arc<dyn Store>, hub: Arc<dyn Hub>) -> Self {
        Conversations { store, hub }
    }

    /// Opens project `id` for the caller: created for them if unknown,
    /// `FORBIDDEN` if another owner's (anonymous callers share one owner).
    pub async fn open_project(&self, identity: &Identity, id: &str) -> Result<()> {
        if id.chars().count() > 128 || id.chars().any(char::is_control) {
            return Err(Error::InvalidMessage(
                "a project id is at most 128 characters without control characters".into(),
            ));
        }
        Ok(self
            .store
            .ensure_project(id, &identity.conversation_owner())
            .await?)
    }

    /// Checks that project `id` exists and is the caller's: `NOT_FOUND` if
    /// unknown, `FORBIDDEN` if another owner's.
    pub async fn owned_project(&self, identity: &Identity, id: &str) -> Result<()> {
        match self.store.project_owner(id).await? {
            Some(owner) if owner == identity.conversation_owner() => Ok(()),
            Some(_) => Err(Error::Forbidden),
            None => Err(Error::NotFound("No such project")),
        }
    }

    /// A page of the caller's conversations, newest first. Listing needs an
    /// identity: conversations started without a token are reachable by id only.
    pub async fn list(
        &self,
        identity: &Identity,
        limit: i64,
        after: Option<&str>,
    ) -> Result<ConversationList> {
        let owner = identity.owner().ok_or(Error::AuthRequired)?;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::InvalidMessage(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        let page = self.store.conversations(&owner, limit, after).await?;
        Ok(ConversationList {
            conversations: page.conversations.into_iter().map(summary).collect(),
            next: page.next,
        })
    }

    /// A conversation and its messages, if the caller owns it.
    pub async fn detail(&self, identity: &Identity, id: &str) -> Result<ConversationDetail> {
        let owner = identity.conversation_owner();
        let conversation = self.store.owned_conversation(&owner, id).await?;
        let messages = self.store.messages(&owner, id).await?;
        Ok(ConversationDetail {
            conversation: summary(conversation),
            messages: messages.into_iter().map(message).collect(),
        })
    }

    /// Renames the caller's conversation (1 to 200 characters, no control characters).
    pub async fn rename(
        &self,
        identity: &Identity,
        id: &str,
        title: &str,
    ) -> Result<ConversationSummary> {
        let title = title.trim();
        if title.is_empty()
            || title.chars().count() > MAX_TITLE_CHARS
            || title.chars().any(char::is_control)
        {
            return Err(Error::InvalidMessage(format!(
                "title must be 1 to {MAX_TITLE_CHARS} characters without control characters"
            )));
        }
        let owner = identity.conversation_owner();
        Ok(summary(self.store.rename(&owner, id, title).await?))
    }

    /// Deletes the caller's conversation; replies still generating in it are
    /// cancelled.
    pub async fn delete(&self, identity: &Identity, id: &str) -> Result<()> {
        let owner = identity.conversation_owner();
        let messages = self.store.messages(&owner, id).await?;
        self.store.delete_conversation(&owner, id).await?;
        for stream_id in messages.iter().filter_map(|m| m.stream_id.as_deref()) {
            self.hub.cancel(stream_id);
        }
        Ok(())
    }
}

fn summary(conversation: Conversation) -> ConversationSummary {
    ConversationSummary {
        id: conversation.id,
        title: conversation.title,
        customer_id: conversation.customer_id,
        created_at: conversation.created_at,
        updated_at: conversation.updated_at,
    }
}

fn message(message: StoredMessage) -> ConversationMessage {
    ConversationMessage {
        id: message.id,
        role: message.role,
        persona_id: message.persona,
        model: message.model,
        content: message.content,
        status: message.status.as_str().to_owned(),
        usage: message.usage.map(|(prompt, completion)| Usage {
            prompt_tokens: u32::try_from(prompt).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
        }),
        stream_id: message.stream_id,
        created_at: message.created_at,
        confidence: message.confidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_civil_utc() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(1_764_045_300_000), "2025-11-25 04:35 UTC");
        assert_eq!(utc_minute(951_782_400_000), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn titles_become_safe_file_stems() {
        assert_eq!(
            file_stem("What is the Engine power?"),
            "what-is-the-engine-power"
        );
        assert_eq!(file_stem("  «»  "), "conversation");
        assert_eq!(file_stem("a\"b/../c"), "a-b-c");
        assert!(file_stem(&"x".repeat(500)).len() <= 60);
    }
}
