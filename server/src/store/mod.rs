//! The store: conversations and messages, behind the [`Store`] trait. The one
//! implementation, [`SqlStore`], keeps them in SQLite (the embedded default, a
//! file in the data directory, WAL mode) or PostgreSQL (`postgres://…`), through
//! sqlx's `Any` driver so one set of queries and migrations serves both.
//!
//! Writes go through one writer per database that commits what has queued up
//! together: a thread with a plain SQLite connection for an SQLite file
//! (`sqlite`), sqlx's connection in a task otherwise (`writer`); both run the
//! same SQL (`queries`). Reads use sqlx's pool of connections.
//!
//! Ownership lives here: a conversation belongs to one owner key (`user:<sub>`,
//! `guest:<id>` or `public`), and nothing reads, continues or deletes another
//! owner's conversation ([`StoreError::Forbidden`]).

pub mod branch;
pub mod documents;
mod queries;
mod recent;
mod sql;
mod sqlite;
mod writer;

use std::time::{SystemTime, UNIX_EPOCH};

pub use sql::{SqlStore, StoreOptions};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The conversation belongs to another owner.
    #[error("this conversation belongs to another user")]
    Forbidden,
    /// No such conversation or message.
    #[error("not found")]
    NotFound,
    /// The database failed; the detail is for logs, not clients.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date (at startup).
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The writer task is gone (the store is shutting down).
    #[error("the store's writer has stopped")]
    WriterGone,
    /// The writer answered a write with the answer of another kind (a bug).
    #[error("unexpected answer from the store's writer: {0}")]
    UnexpectedAnswer(String),
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Being generated (checkpointed as it goes).
    Streaming,
    /// Finished normally (user messages are complete when stored).
    Complete,
    /// Stopped by the user.
    Cancelled,
    /// Cut by a shutdown or crash; the content is the last checkpoint.
    Interrupted,
    /// Failed; the content is what arrived before the failure.
    Error,
}

impl MessageStatus {
    /// The stored (and wire) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Streaming => "streaming",
            MessageStatus::Complete => "complete",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::Interrupted => "interrupted",
            MessageStatus::Error => "error",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "streaming" => MessageStatus::Streaming,
            "cancelled" => MessageStatus::Cancelled,
            "interrupted" => MessageStatus::Interrupted,
            "error" => MessageStatus::Error,
            _ => MessageStatus::Complete,
        }
    }
}

/// A conversation's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Its id (the wire's `session_id`).
    pub id: String,
    /// Its owner key.
    pub owner: String,
    /// Its title.
    pub title: String,
    /// The client's customer reference.
    pub customer_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch; the list is ordered by it.
    pub updated_at: i64,
    /// The last question of the branch it shows (`None` before the first).
    pub leaf_id: Option<String>,
}

/// An earlier message a question is sent with ([`Store::start_turn`]): only
/// what the model is shown, so that reading a long history decodes little.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    /// The message's id.
    pub id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// Its text, never empty.
    pub content: String,
}

impl From<StoredMessage> for HistoryMessage {
    fn from(message: StoredMessage) -> Self {
        HistoryMessage {
            id: message.id,
            role: message.role,
            content: message.content,
        }
    }
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Its id (the wire's `message_id` for replies).
    pub id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// The persona that answered (replies).
    pub persona: Option<String>,
    /// The model that answered (replies).
    pub model: Option<String>,
    /// Its text (the last checkpoint while streaming).
    pub content: String,
    /// Where it is in its life.
    pub status: MessageStatus,
    /// The stream that produced it (replies).
    pub stream_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// How sure routing was of `persona` (replies to `persona_id: "auto"`).
    pub confidence: Option<f64>,
    /// A finished reply's token counts and timing, as far as known.
    pub figures: Figures,
    /// A question's previous question on its branch; a reply's question.
    pub parent_id: Option<String>,
    /// A reply's place among its question's side-by-side replies (0, 1, …).
    pub slot: i64,
    /// When it was last chosen among its versions (milliseconds since the
    /// Unix epoch): the version selected last is shown.
    pub selected_at: i64,
    /// The sources a reply was given, as JSON (the `sources` event's list).
    pub sources: Option<String>,
    /// The ids of its versions, itself included, oldest first (only where a
    /// branch was chosen: [`Store::messages`]; otherwise empty).
    pub versions: Vec<String>,
}

/// A finished reply's figures: token counts (prompt, reply) and whether they
/// were estimated; milliseconds from its stream's start to its first and last
/// token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Token counts (prompt, reply), when known.
    pub usage: Option<(i64, i64)>,
    /// Whether rill estimated `usage` (the provider reported none).
    pub usage_estimated: bool,
    /// Until the first token.
    pub first_token_ms: Option<i64>,
    /// Until the last token.
    pub total_ms: Option<i64>,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its conversation (must exist).
    pub conversation_id: &'a str,
    /// `user` or `assistant`.
    pub role: &'a str,
    /// The persona (replies).
    pub persona: Option<&'a str>,
    /// The model (replies).
    pub model: Option<&'a str>,
    /// Its text so far.
    pub content: &'a str,
    /// Its status.
    pub status: MessageStatus,
    /// The stream that produces it (replies).
    pub stream_id: Option<&'a str>,
}

/// A question's whole write ([`Store::start_turn`]).
#[derive(Debug, Clone)]
pub struct Turn {
    /// The conversation (created for `owner` if unknown).
    pub conversation_id: String,
    /// Who asks.
    pub owner: String,
    /// The client's customer reference, kept with a new conversation.
    pub customer_id: Option<String>,
    /// A new conversation's title.
    pub title: String,
    /// A stored message this question is a new version of (a reply: its
    /// question); the old version and its branch are kept.
    pub replace_from: Option<String>,
    /// A reply to answer again: no question is stored, `replies` holds its
    /// one new version.
    pub regenerate: Option<Regenerate>,
    /// Whether to read the history before the question.
    pub include_history: bool,
    /// Most earlier messages to read as history (the newest that have text).
    pub history_limit: usize,
    /// The question's id.
    pub question_id: String,
    /// The question.
    pub question: String,
    /// One empty `streaming` reply per persona.
    pub replies: Vec<NewReply>,
}

/// A stored reply to generate again ([`Store::regenerate_target`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Regenerate {
    /// The reply's conversation.
    pub conversation_id: String,
    /// The question it answers.
    pub question_id: String,
    /// That question's text.
    pub question: String,
    /// The question before it on its branch (where the history ends).
    pub question_parent: Option<String>,
    /// The persona that answered (the one routing chose, if `routed`).
    pub persona: Option<String>,
    /// Whether routing chose the persona (`persona_id: "auto"`).
    pub routed: bool,
    /// Its place among the question's side-by-side replies.
    pub slot: i64,
}

/// A reply about to be generated.
#[derive(Debug, Clone)]
pub struct NewReply {
    /// Its id.
    pub id: String,
    /// The persona answering.
    pub persona: String,
    /// The model answering.
    pub model: String,
    /// The stream producing it.
    pub stream_id: String,
}

/// One page of an owner's conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationPage {
    /// Newest first.
    pub conversations: Vec<Conversation>,
    /// The cursor for the next (older) page, if there is one.
    pub next: Option<String>,
}

/// Where a search snippet's matched words start and end: characters of
/// Unicode's private use area, which the HTTP layer turns into `<mark>` after
/// escaping the text (so no stored text can write markup).
pub const MARK_START: char = '\u{E000}';
/// See [`MARK_START`].
pub const MARK_END: char = '\u{E001}';

/// A message found by [`Store::search`].
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The message.
    pub message_id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// The conversation's title.
    pub conversation_title: String,
    /// `user` or `assistant`.
    pub role: String,
    /// The persona that answered (replies).
    pub persona: Option<String>,
    /// When it was written (milliseconds since the Unix epoch).
    pub created_at: i64,
    /// The best passage, matched words between [`MARK_START`] and [`MARK_END`].
    pub snippet: String,
    /// Relevance, higher is better (comparable within one result only).
    pub score: f64,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// Best first.
    pub hits: Vec<SearchHit>,
    /// Whether a next page has results.
    pub more: bool,
}

/// A public read-only link to a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The secret of the link (`/s/<token>`).
    pub token: String,
    /// The conversation shown.
    pub conversation_id: String,
    /// When the link was made.
    pub created_at: i64,
    /// The link shows the messages written up to this time.
    pub shared_upto: i64,
    /// When the link stops working, if ever.
    pub expires_at: Option<i64>,
    /// When the owner revoked it.
    pub revoked_at: Option<i64>,
}

/// Conversations and their messages. Every method that names a conversation
/// checks that `owner` owns it.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Stores a question and its empty replies in one write: the conversation
    /// (created if unknown, `Forbidden` if someone else's), the question (after
    /// the last question of the branch shown, or as a new version of
    /// `replace_from`: `NotFound` if no such message in it) made the branch's
    /// last, one `streaming` reply per persona. With `regenerate`, only the
    /// reply's new version. Returns the branch's messages before the question
    /// that have text, the newest `history_limit` (empty unless
    /// `include_history`).
    async fn start_turn(&self, turn: Turn) -> Result<Vec<HistoryMessage>, StoreError>;

    /// The conversation `id` for `owner`: created (with `title`) if unknown —
    /// clients choose their own ids — and `Forbidden` if someone else's.
    async fn ensure_conversation(
        &self,
        id: &str,
        owner: &str,
        customer_id: Option<&str>,
        title: &str,
    ) -> Result<Conversation, StoreError>;

    /// The project `id` for `owner`: created if unknown (clients choose their
    /// own ids), `Forbidden` if someone else's.
    async fn ensure_project(&self, id: &str, owner: &str) -> Result<(), StoreError>;

    /// Who owns project `id`, if it exists.
    async fn project_owner(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// The conversation `id` if `owner` owns it.
    async fn owned_conversation(&self, owner: &str, id: &str) -> Result<Conversation, StoreError>;

    /// The conversation holding message `message_id`, if `owner` owns it
    /// (`NotFound` if no such message).
    async fn conversation_of_message(
        &self,
        owner: &str,
        message_id: &str,
    ) -> Result<Conversation, StoreError>;

    /// Stores a message and touches its conversation.
    async fn add_message(&self, message: NewMessage<'_>) -> Result<(), StoreError>;

    /// Saves the text so far of a reply being generated, without waiting for
    /// the commit: it returns once the write is queued (at once, unless the
    /// writer's queue is full). The write is committed with the writer's next
    /// batch, before any write queued after it (such as the reply's
    /// [`Store::finish_message`]); a failure is logged. A generation never
    /// waits on the database between two tokens.
    async fn checkpoint(&self, message_id: &str, content: &str) -> Result<(), StoreError>;

    /// Records who answers a reply once routing chose (`persona_id: "auto"`),
    /// with what model and how sure routing was.
    async fn set_persona(
        &self,
        message_id: &str,
        persona: &str,
        model: &str,
        confidence: f64,
    ) -> Result<(), StoreError>;

    /// Records the sources retrieval gave a reply being generated.
    async fn set_sources(
        &self,
        message_id: &str,
        sources: &[rill_protocol::documents::Source],
    ) -> Result<(), StoreError>;

    /// Finalizes a reply: its whole text, how it ended, its figures.
    async fn finish_message(
        &self,
        message_id: &str,
        content: &str,
        status: MessageStatus,
        figures: Figures,
    ) -> Result<(), StoreError>;

    /// At startup: replies left `streaming` by a crash or a cut become
    /// `interrupted`, keeping their last checkpoint. Returns how many.
    async fn mark_interrupted(&self) -> Result<u64, StoreError>;

    /// The branch a conversation shows, oldest first, each message with its
    /// versions.
    async fn messages(
        &self,
        owner: &str,
        conversation_id: &str,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The reply `reply_id` of `owner`'s, with its question, to generate again
    /// (`NotFound` if no such reply, or it answers no question).
    async fn regenerate_target(
        &self,
        owner: &str,
        reply_id: &str,
    ) -> Result<Regenerate, StoreError>;

    /// Shows version `message_id` of `owner`'s conversation: it and its
    /// branch up to the first question become the selected versions, and the
    /// conversation shows the branch down from it as it was left (`NotFound`
    /// if no such message in it).
    async fn select_version(
        &self,
        owner: &str,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<(), StoreError>;

    /// `owner`'s conversations, most recently updated first, `limit` per page,
    /// starting after the cursor `after` of a previous page.
    async fn conversations(
        &self,
        owner: &str,
        limit: i64,
        after: Option<&str>,
    ) -> Result<ConversationPage, StoreError>;

    /// Renames `owner`'s conversation.
    async fn rename(&self, owner: &str, id: &str, title: &str) -> Result<Conversation, StoreError>;

    /// Deletes `owner`'s conversation and its messages.
    async fn delete_conversation(&self, owner: &str, id: &str) -> Result<(), StoreError>;

    /// `owner`'s messages matching every word of `terms` (lower-case words of
    /// letters and digits; the last also matches as a prefix), best first,
    /// `limit` from `offset`. Replies still streaming are not searched.
    async fn search(
        &self,
        owner: &str,
        terms: &[String],
        limit: i64,
        offset: i64,
    ) -> Result<SearchPage, StoreError>;

    /// Shares `owner`'s conversation: its live link with the snapshot moved to
    /// now and `expires_at` set, or a new link with `token` if it has none.
    async fn share(
        &self,
        owner: &str,
        conversation_id: &str,
        token: &str,
        expires_at: Option<i64>,
    ) -> Result<Share, StoreError>;

    /// Revokes every live link of `owner`'s conversation. Returns how many.
    async fn unshare(&self, owner: &str, conversation_id: &str) -> Result<u64, StoreError>;

    /// The live link of `owner`'s conversation, if it has one.
    async fn live_share(
        &self,
        owner: &str,
        conversation_id: &str,
    ) -> Result<Option<Share>, StoreError>;

    /// The link `token`, live or not (`None` if there never was one).
    async fn share_by_token(&self, token: &str) -> Result<Option<Share>, StoreError>;

    /// What link `share` shows: its conversation and the branch it shows,
    /// of the messages written up to the link's snapshot, oldest first.
    async fn shared_messages(
        &self,
        share: &Share,
    ) -> Result<(Conversation, Vec<StoredMessage>), StoreError>;
}

/// One message of a turn's insert (`queries::insert_turn_sql`'s row).
pub(crate) struct TurnRow<'a> {
    pub(crate) id: &'a str,
    pub(crate) role: &'static str,
    pub(crate) persona: Option<&'a str>,
    pub(crate) model: Option<&'a str>,
    pub(crate) content: &'a str,
    pub(crate) status: &'static str,
    pub(crate) stream_id: Option<&'a str>,
    pub(crate) parent_id: Option<&'a str>,
    pub(crate) slot: i64,
}

/// How many messages `turn` inserts: its question (unless it regenerates a
/// reply) and its replies.
pub(crate) fn turn_rows(turn: &Turn) -> usize {
    turn.replies.len() + usize::from(turn.regenerate.is_none())
}

/// The messages `turn` inserts: the question after `parent`, then its
/// replies in slots 0, 1, …; or, regenerating, the reply's new version in
/// its slot.
pub(crate) fn turn_values<'a>(turn: &'a Turn, parent: Option<&'a str>) -> Vec<TurnRow<'a>> {
    let reply = |reply: &'a NewReply, question: &'a str, slot: i64| TurnRow {
        id: &reply.id,
        role: "assistant",
        persona: Some(&reply.persona),
        model: Some(&reply.model),
        content: "",
        status: MessageStatus::Streaming.as_str(),
        stream_id: Some(&reply.stream_id),
        parent_id: Some(question),
        slot,
    };
    match &turn.regenerate {
        Some(target) => turn
            .replies
            .iter()
            .map(|r| reply(r, &target.question_id, target.slot))
            .collect(),
        None => std::iter::once(TurnRow {
            id: &turn.question_id,
            role: "user",
            persona: None,
            model: None,
            content: &turn.question,
            status: MessageStatus::Complete.as_str(),
            stream_id: None,
            parent_id: parent,
            slot: 0,
        })
        .chain(
            turn.replies
                .iter()
                .zip(0..)
                .map(|(r, slot)| reply(r, &turn.question_id, slot)),
        )
        .collect(),
    }
}

/// The history a question after `anchor` is sent with, from `rows` (the
/// branch's last questions and their replies): the shown versions that
/// have text, the newest `limit` of them, oldest first (an empty reply,
/// failed before any text, says nothing to the model).
pub(crate) fn history(rows: Vec<StoredMessage>, anchor: &str, limit: usize) -> Vec<HistoryMessage> {
    history_settled(rows, anchor, limit).0
}

/// [`history`], and whether every message of the branch shown is final (no
/// reply on it still streaming, whose text would change).
pub(crate) fn history_settled(
    rows: Vec<StoredMessage>,
    anchor: &str,
    limit: usize,
) -> (Vec<HistoryMessage>, bool) {
    let shown = branch::shown(rows, Some(anchor));
    let settled = shown.iter().all(|m| m.status != MessageStatus::Streaming);
    let mut shown: Vec<HistoryMessage> = shown
        .into_iter()
        .filter(|m| !m.content.is_empty())
        .map(HistoryMessage::from)
        .collect();
    let skip = shown.len().saturating_sub(limit);
    shown.drain(..skip);
    (shown, settled)
}

/// Milliseconds since the Unix epoch, strictly increasing in this process:
/// the time of writes that order versions (a message's `selected_at`), so
/// that of two selections the later one wins even within one millisecond.
pub(crate) fn tick() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub use rill_protocol::conversations::title_from;
