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
