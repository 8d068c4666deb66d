//! The conversations service: what the HTTP routes and the pages may do with a
//! caller's conversations (list, read, rename, delete), with ownership and
//! input checks in one place. Routes only translate its answers.

use std::sync::Arc;

use rill_protocol::conversations::{
    ConversationDetail, ConversationList, ConversationMessage, ConversationSummary, SearchHit,
    SearchResults, ShareLink,
};
use rill_protocol::{Timing, Usage};

use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::prices::Prices;
use crate::store::{self, Conversation, Share, Store, StoredMessage};

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
pub fn utc_minute(ms: i64) -> String {
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

/// Most words a search takes (more are ignored).
pub const MAX_SEARCH_TERMS: usize = 16;

/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 500;

/// Most results one page of a search may hold.
pub const MAX_SEARCH_PAGE: i64 = 50;

/// How far a search pages (results past it are not worth reading).
const MAX_SEARCH_OFFSET: i64 = 1_000;

/// Longest a shared link may last: ten years, in seconds.
pub const MAX_SHARE_SECS: u64 = 10 * 365 * 24 * 3600;

/// The words of a search query as both stores' indexes split text: runs of
/// letters and digits, lower-cased, each once, in order, at most
/// [`MAX_SEARCH_TERMS`] of at most 64 characters.
pub fn search_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let term: String = word.chars().flat_map(char::to_lowercase).take(64).collect();
        if !terms.contains(&term) {
            terms.push(term);
        }
        if terms.len() == MAX_SEARCH_TERMS {
            break;
        }
    }
    terms
}

/// A store snippet as plain text (its match markers removed) and as HTML (the
/// text escaped, the matched words in `<mark>`).
pub fn snippet_text_and_html(snippet: &str) -> (String, String) {
    let mut text = String::with_capacity(snippet.len());
    let mut html = String::with_capacity(snippet.len() + 32);
    let mut open = false;
    for c in snippet.chars() {
        match c {
            store::MARK_START if !open => {
                html.push_str("<mark>");
                open = true;
            }
            store::MARK_END if open => {
                html.push_str("</mark>");
                open = false;
            }
            store::MARK_START | store::MARK_END => {}
            c => {
                text.push(c);
                push_escaped(&mut html, c);
            }
        }
    }
    if open {
        html.push_str("</mark>");
    }
    (text, html)
}

/// Appends `c` to HTML text or a quoted attribute, escaped.
pub fn push_escaped(html: &mut String, c: char) {
    match c {
        '&' => html.push_str("&amp;"),
        '<' => html.push_str("&lt;"),
        '>' => html.push_str("&gt;"),
        '"' => html.push_str("&quot;"),
        '\'' => html.push_str("&#39;"),
        c => html.push(c),
    }
}

/// `text` escaped for HTML.
pub fn escape_html(text: &str) -> String {
    let mut html = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut html, c);
    }
    html
}

/// What a shared link shows.
#[derive(Debug)]
pub enum Shared {
    /// The conversation up to the link's snapshot.
    Live(ConversationDetail),
    /// The owner revoked the link.
    Revoked,
    /// The link expired at this time (milliseconds since the Unix epoch).
    Expired(i64),
    /// No such link.
    Unknown,
}

/// A stored link as the API shows it.
fn share_link(share: Share) -> ShareLink {
    ShareLink {
        path: format!("/s/{}", share.token),
        token: share.token,
        shared_upto: share.shared_upto,
        expires_at: share.expires_at,
    }
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
    /// What each model costs (a reply's cost).
    prices: Arc<Prices>,
}

impl Conversations {
    /// The service over `store`, cancelling replies in `hub` on delete,
    /// pricing replies with `prices`.
    pub fn new(store: Arc<dyn Store>, hub: Arc<dyn Hub>, prices: Arc<Prices>) -> Self {
        Conversations { store, hub, prices }
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
            messages: messages
                .into_iter()
                .map(|m| message(m, &self.prices))
                .collect(),
        })
    }

    /// Shows version `message_id` of the caller's conversation (and the
    /// branch after it as it was left); answers with the conversation as it
    /// now shows.
    pub async fn select(
        &self,
        identity: &Identity,
        id: &str,
        message_id: &str,
    ) -> Result<ConversationDetail> {
        let owner = identity.conversation_owner();
        match self.store.select_version(&owner, id, message_id).await {
            Err(store::StoreError::NotFound) => {
                // Say which was not found: the conversation, or the message in it.
                self.store.owned_conversation(&owner, id).await?;
                return Err(Error::NotFound(
                    "message_id: no such message in this conversation",
                ));
            }
            other => other?,
        }
        self.detail(identity, id).await
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

    /// The caller's messages matching every word of `query` (the last also as
    /// a prefix: search as you type), best first, `limit` per page from
    /// `cursor`. Needs an identity, as the list does.
    pub async fn search(
        &self,
        identity: &Identity,
        query: &str,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<SearchResults> {
        let owner = identity.owner().ok_or(Error::AuthRequired)?;
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::InvalidMessage(format!(
                "q must be at most {MAX_QUERY_CHARS} characters"
            )));
        }
        let terms = search_terms(query);
        if terms.is_empty() {
            return Err(Error::InvalidMessage(
                "q must contain at least one word (letters or digits)".into(),
            ));
        }
        if !(1..=MAX_SEARCH_PAGE).contains(&limit) {
            return Err(Error::InvalidMessage(format!(
                "limit must be between 1 and {MAX_SEARCH_PAGE}"
            )));
        }
        let offset = match cursor {
            None => 0,
            Some(cursor) => cursor
                .parse::<i64>()
                .ok()
                .filter(|offset| (0..=MAX_SEARCH_OFFSET).contains(offset))
                .ok_or_else(|| {
                    Error::InvalidMessage(
                        "cursor must be the `next` of a previous page of this search".into(),
                    )
                })?,
        };
        let page = self.store.search(&owner, &terms, limit, offset).await?;
        let next = (page.more && offset + limit <= MAX_SEARCH_OFFSET)
            .then(|| (offset + limit).to_string());
        let results = page
            .hits
            .into_iter()
            .map(|hit| {
                let (snippet, snippet_html) = snippet_text_and_html(&hit.snippet);
                SearchHit {
                    message_id: hit.message_id,
                    conversation_id: hit.conversation_id,
                    conversation_title: hit.conversation_title,
                    role: hit.role,
                    persona_id: hit.persona,
                    created_at: hit.created_at,
                    snippet,
                    snippet_html,
                    score: hit.score,
                }
            })
            .collect();
        Ok(SearchResults {
            terms,
            results,
            next,
        })
    }

    /// Shares the caller's conversation read-only: its link (the same token
    /// if it already has a live one, with the snapshot moved to now), lasting
    /// `expires_in` seconds or until revoked.
    pub async fn share(
        &self,
        identity: &Identity,
        id: &str,
        expires_in: Option<u64>,
    ) -> Result<ShareLink> {
        let expires_at = match expires_in {
            None => None,
            Some(secs) if (1..=MAX_SHARE_SECS).contains(&secs) => {
                Some(store::now_ms().saturating_add(i64::try_from(secs).unwrap_or(i64::MAX) * 1000))
            }
            Some(_) => {
                return Err(Error::InvalidMessage(format!(
                    "expires_in must be between 1 and {MAX_SHARE_SECS} seconds"
                )));
            }
        };
        let owner = identity.conversation_owner();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let share = self.store.share(&owner, id, &token, expires_at).await?;
        Ok(share_link(share))
    }

    /// The caller's conversation's live link (`NOT_FOUND` if it has none).
    pub async fn live_share(&self, identity: &Identity, id: &str) -> Result<ShareLink> {
        let owner = identity.conversation_owner();
        self.store
            .live_share(&owner, id)
            .await?
            .map(share_link)
            .ok_or(Error::NotFound("This conversation has no live shared link"))
    }

    /// Revokes the caller's conversation's links; how many were live.
    pub async fn unshare(&self, identity: &Identity, id: &str) -> Result<u64> {
        let owner = identity.conversation_owner();
        Ok(self.store.unshare(&owner, id).await?)
    }

    /// What the link `token` shows, for anyone who has it.
    pub async fn shared(&self, token: &str) -> Result<Shared> {
        // Tokens are 32 lower-case hex digits: anything else is not asked for.
        if token.len() != 32
            || !token
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Ok(Shared::Unknown);
        }
        let Some(share) = self.store.share_by_token(token).await? else {
            return Ok(Shared::Unknown);
        };
        if share.revoked_at.is_some() {
            return Ok(Shared::Revoked);
        }
        if let Some(at) = share.expires_at.filter(|at| *at <= store::now_ms()) {
            return Ok(Shared::Expired(at));
        }
        let (conversation, messages) = match self.store.shared_messages(&share).await {
            Ok(found) => found,
            Err(crate::store::StoreError::NotFound) => return Ok(Shared::Unknown),
            Err(error) => return Err(error.into()),
        };
        Ok(Shared::Live(ConversationDetail {
            conversation: ConversationSummary {
                // The owner's customer reference is theirs, not the reader's.
                customer_id: None,
                ..summary(conversation)
            },
            messages: messages
                .into_iter()
                .map(|m| message(m, &self.prices))
                .collect(),
        }))
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

/// A stored message as the API shows it, its cost from `prices`.
fn message(message: StoredMessage, prices: &Prices) -> ConversationMessage {
    let usage = message.figures.usage.map(|(prompt, completion)| Usage {
        prompt_tokens: u32::try_from(prompt).unwrap_or(u32::MAX),
        completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
        estimated: message.figures.usage_estimated,
    });
    let timing = message
        .figures
        .first_token_ms
        .zip(message.figures.total_ms)
        .map(|(first, total)| Timing {
            first_token_ms: u64::try_from(first).unwrap_or(0),
            total_ms: u64::try_from(total).unwrap_or(0),
        });
    let cost = message
        .model
        .as_deref()
        .zip(usage.as_ref())
        .and_then(|(model, usage)| prices.cost(model, usage));
    ConversationMessage {
        timing,
        cost,
        id: message.id,
        role: message.role,
        persona_id: message.persona,
        model: message.model,
        content: message.content,
        status: message.status.as_str().to_owned(),
        usage,
        stream_id: message.stream_id,
        created_at: message.created_at,
        confidence: message.confidence,
        parent_id: message.parent_id,
        versions: if message.versions.len() > 1 {
            message.versions
        } else {
            Vec::new()
        },
        // Written by rill itself; a row it cannot read shows no sources.
        sources: message
            .sources
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_are_the_words_of_the_query() {
        assert_eq!(
            search_terms("  Rust's  \"borrow-checker\" RUST 2024! "),
            ["rust", "s", "borrow", "checker", "2024"]
        );
        assert_eq!(search_terms("Café crème"), ["café", "crème"]);
        assert!(search_terms("*** \" ( :* & | ! -").is_empty());
        // Operators of either database's syntax are only words here.
        assert_eq!(search_terms("NEAR(x OR y"), ["near", "x", "or", "y"]);
        assert_eq!(search_terms(&"w ".repeat(40)).len(), 1);
        let many: String = (0..40).map(|i| format!("w{i} ")).collect();
        assert_eq!(search_terms(&many).len(), MAX_SEARCH_TERMS);
        assert_eq!(search_terms(&"x".repeat(500))[0].len(), 64);
    }

    #[test]
    fn snippets_are_escaped_before_they_are_marked() {
        let raw = format!(
            "a <b>{}bold</b>{} & \"{}x",
            store::MARK_START,
            store::MARK_END,
            store::MARK_START
        );
        let (text, html) = snippet_text_and_html(&raw);
        assert_eq!(text, "a <b>bold</b> & \"x");
        assert_eq!(
            html,
            "a &lt;b&gt;<mark>bold&lt;/b&gt;</mark> &amp; &quot;<mark>x</mark>"
        );
    }

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
