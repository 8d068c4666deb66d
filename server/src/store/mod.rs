//! The store: conversations and messages in SQLite (the embedded default, a file
//! in the data directory, WAL mode) or PostgreSQL (`postgres://…`), through
//! sqlx's `Any` driver so one set of queries and migrations serves both.
//!
//! Ownership lives here: a conversation belongs to one owner key (`user:<sub>`
//! or `anon:<id>`), and nothing reads, continues or deletes another owner's
//! conversation ([`StoreError::Forbidden`]).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};

/// Migrations embedded in the binary, in order (see `migrations/README.md`).
const MIGRATIONS: [(i64, &str); 1] = [(1, include_str!("../../migrations/0001_conversations.sql"))];

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
    /// The stored spelling.
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
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Token counts, when known.
    pub usage: Option<(i64, i64)>,
    /// The stream that produced it (replies).
    pub stream_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reads a `conversations` row.
fn conversation_from_row(row: &sqlx::any::AnyRow) -> Result<Conversation, sqlx::Error> {
    Ok(Conversation {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        title: row.try_get("title")?,
        customer_id: row.try_get("customer_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The conversation store.
#[derive(Clone)]
pub struct Store {
    /// Connections to SQLite or PostgreSQL.
    pool: AnyPool,
}

impl Store {
    /// Opens `database_url`, or the SQLite file `<data_dir>/rill.db` when none is
    /// given, and applies pending migrations.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        install_default_drivers();
        let url = match database_url {
            Some(url) => url.to_owned(),
            None => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
                format!("sqlite://{}?mode=rwc", data_dir.join("rill.db").display())
            }
        };
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 10 })
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL: readers do not block the writer; foreign keys for
                        // ON DELETE CASCADE; wait rather than fail on a busy file.
                        connection.execute("PRAGMA journal_mode = WAL").await?;
                        connection.execute("PRAGMA foreign_keys = ON").await?;
                        connection.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies every embedded migration not yet applied, each in a transaction.
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS rill_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for (version, sql) in MIGRATIONS {
            let applied = sqlx::query("SELECT version FROM rill_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&self.pool)
                .await?
                .is_some();
            if applied {
                continue;
            }
            let mut transaction = self.pool.begin().await?;
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let statement: String = statement
                    .lines()
                    .filter(|line| !line.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join("\n");
                if !statement.trim().is_empty() {
                    transaction.execute(statement.as_str()).await?;
                }
            }
            sqlx::query("INSERT INTO rill_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(now_ms())
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await?;
            tracing::info!(version, "applied migration");
        }
        Ok(())
    }

    /// The conversation `id` for `owner`: created if unknown (clients choose their
    /// own ids), `Forbidden` if it belongs to someone else.
    pub async fn ensure_conversation(
        &self,
        id: &str,
        owner: &str,
        customer_id: Option<&str>,
        title: &str,
    ) -> Result<Conversation, StoreError> {
        let now = now_ms();
        // Insert-if-absent, then read: two clients racing on a new id agree on
        // the first owner.
        sqlx::query(
            "INSERT INTO conversations (id, owner, title, customer_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(owner)
        .bind(title)
        .bind(customer_id)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let conversation = self.conversation(id).await?.ok_or(StoreError::NotFound)?;
        if conversation.owner != owner {
            return Err(StoreError::Forbidden);
        }
        Ok(conversation)
    }

    /// A conversation by id, whoever owns it (callers check ownership).
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(
            "SELECT id, owner, title, customer_id, created_at, updated_at FROM conversations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(conversation_from_row)
            .transpose()
            .map_err(StoreError::from)
    }

    /// The conversation `id` if `owner` owns it.
    pub async fn owned_conversation(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Conversation, StoreError> {
        let conversation = self.conversation(id).await?.ok_or(StoreError::NotFound)?;
        if conversation.owner != owner {
            return Err(StoreError::Forbidden);
        }
        Ok(conversation)
    }

    /// Stores a message and touches its conversation.
    pub async fn add_message(&self, message: NewMessage<'_>) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO messages (id, conversation_id, role, persona, model, content, status, stream_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(message.id)
        .bind(message.conversation_id)
        .bind(message.role)
        .bind(message.persona)
        .bind(message.model)
        .bind(message.content)
        .bind(message.status.as_str())
        .bind(message.stream_id)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        sqlx::query("UPDATE conversations SET updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(message.conversation_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Saves the text so far of a reply being generated.
    pub async fn checkpoint(&self, message_id: &str, content: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE messages SET content = $1, updated_at = $2 WHERE id = $3 AND status = 'streaming'")
            .bind(content)
            .bind(now_ms())
            .bind(message_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Finalizes a reply: its whole text, how it ended, its usage.
    pub async fn finish_message(
        &self,
        message_id: &str,
        content: &str,
        status: MessageStatus,
        usage: Option<(i64, i64)>,
    ) -> Result<(), StoreError> {
        let (prompt, completion) = usage.unzip();
        sqlx::query(
            "UPDATE messages SET content = $1, status = $2, prompt_tokens = $3, completion_tokens = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(content)
        .bind(status.as_str())
        .bind(prompt)
        .bind(completion)
        .bind(now_ms())
        .bind(message_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// At startup: replies left `streaming` by a crash or a cut are `interrupted`
    /// (their content is the last checkpoint). Returns how many.
    pub async fn mark_interrupted(&self) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE messages SET status = 'interrupted', updated_at = $1 WHERE status = 'streaming'",
        )
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// A conversation's messages, oldest first, if `owner` owns it.
    pub async fn messages(
        &self,
        owner: &str,
        conversation_id: &str,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.owned_conversation(owner, conversation_id).await?;
        let rows = sqlx::query(
            "SELECT id, conversation_id, role, persona, model, content, status, prompt_tokens, completion_tokens, stream_id, created_at \
             FROM messages WHERE conversation_id = $1 ORDER BY created_at, id",
        )
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| -> Result<StoredMessage, sqlx::Error> {
                let prompt: Option<i64> = row.try_get("prompt_tokens")?;
                let completion: Option<i64> = row.try_get("completion_tokens")?;
                Ok(StoredMessage {
                    id: row.try_get("id")?,
                    conversation_id: row.try_get("conversation_id")?,
                    role: row.try_get("role")?,
                    persona: row.try_get("persona")?,
                    model: row.try_get("model")?,
                    content: row.try_get("content")?,
                    status: MessageStatus::parse(&row.try_get::<String, _>("status")?),
                    usage: prompt.zip(completion),
                    stream_id: row.try_get("stream_id")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    /// `owner`'s conversations, most recently updated first.
    pub async fn conversations(
        &self,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<Conversation>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, owner, title, customer_id, created_at, updated_at FROM conversations \
             WHERE owner = $1 ORDER BY updated_at DESC, id LIMIT $2",
        )
        .bind(owner)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(conversation_from_row)
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    /// Deletes `owner`'s conversation and its messages.
    pub async fn delete_conversation(&self, owner: &str, id: &str) -> Result<(), StoreError> {
        self.owned_conversation(owner, id).await?;
        // Explicit, so it does not depend on foreign-key enforcement.
        sqlx::query("DELETE FROM messages WHERE conversation_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM conversations WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
