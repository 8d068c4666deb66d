//! [`SqlStore`]: the [`Store`] over SQLite or PostgreSQL with sqlx's `Any` driver.

use std::path::Path;

use futures::future::BoxFuture;
use sqlx::any::{AnyPoolOptions, AnyRow, install_default_drivers};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row};

use super::{
    Conversation, ConversationPage, MessageStatus, NewMessage, Store, StoreError, StoredMessage,
    now_ms,
};

/// Migrations embedded in the binary, in order: version, description, SQL
/// (see `migrations/README.md`).
const MIGRATIONS: [(i64, &str, &str); 2] = [
    (
        1,
        "conversations",
        include_str!("../../migrations/0001_conversations.sql"),
    ),
    (
        2,
        "drop the old migration log",
        include_str!("../../migrations/0002_drop_rill_migrations.sql"),
    ),
];

/// The embedded migrations, as a source for sqlx's migrator (the `migrate!`
/// macro would compile sqlx's macro crate, and SQLite a second time for the
/// host, to embed the same files).
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        (*description).into(),
                        MigrationType::Simple,
                        (*sql).into(),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The columns of a conversation, in [`conversation_from_row`]'s order.
const CONVERSATION_COLUMNS: &str = "id, owner, title, customer_id, created_at, updated_at";

/// Reads a `conversations` row.
fn conversation_from_row(row: &AnyRow) -> Result<Conversation, sqlx::Error> {
    Ok(Conversation {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        title: row.try_get("title")?,
        customer_id: row.try_get("customer_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Reads a `messages` row.
fn message_from_row(row: &AnyRow) -> Result<StoredMessage, sqlx::Error> {
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
}

/// Conversations in SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    /// Connections to SQLite or PostgreSQL.
    pool: AnyPool,
}

impl SqlStore {
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
            .acquire_timeout(std::time::Duration::from_secs(10))
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
        let store = SqlStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies every embedded migration not yet applied, with sqlx's migrator:
    /// each in a transaction, recorded with its checksum in `_sqlx_migrations`
    /// (an edited released migration is refused), under PostgreSQL's advisory
    /// lock (instances starting together migrate once).
    async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = Migrator::new(Embedded).await?;
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// A conversation by id, whoever owns it (callers check ownership).
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(conversation_from_row).transpose()?)
    }

    /// Marks a conversation as just updated (it moves to the top of the list).
    async fn touch(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE conversations SET updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn ensure_conversation(
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
        self.owned_conversation(owner, id).await
    }

    async fn owned_conversation(&self, owner: &str, id: &str) -> Result<Conversation, StoreError> {
        let conversation = self.conversation(id).await?.ok_or(StoreError::NotFound)?;
        if conversation.owner != owner {
            return Err(StoreError::Forbidden);
        }
        Ok(conversation)
    }

    async fn conversation_of_message(
        &self,
        owner: &str,
        message_id: &str,
    ) -> Result<Conversation, StoreError> {
        let row = sqlx::query("SELECT conversation_id FROM messages WHERE id = $1")
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        let conversation_id: String = row.try_get("conversation_id")?;
        self.owned_conversation(owner, &conversation_id).await
    }

    async fn add_message(&self, message: NewMessage<'_>) -> Result<(), StoreError> {
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
        self.touch(message.conversation_id, now).await
    }

    async fn checkpoint(&self, message_id: &str, content: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE messages SET content = $1, updated_at = $2 WHERE id = $3 AND status = 'streaming'")
            .bind(content)
            .bind(now_ms())
            .bind(message_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_message(
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

    async fn mark_interrupted(&self) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "UPDATE messages SET status = 'interrupted', updated_at = $1 WHERE status = 'streaming'",
        )
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn messages(
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
        Ok(rows
            .iter()
            .map(message_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn truncate_from(
        &self,
        owner: &str,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<u64, StoreError> {
        self.owned_conversation(owner, conversation_id).await?;
        let row =
            sqlx::query("SELECT created_at FROM messages WHERE id = $1 AND conversation_id = $2")
                .bind(message_id)
                .bind(conversation_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(StoreError::NotFound)?;
        let created_at: i64 = row.try_get("created_at")?;
        // The list order is (created_at, id): delete that message and all after it.
        let result = sqlx::query(
            "DELETE FROM messages WHERE conversation_id = $1 AND (created_at > $2 OR (created_at = $2 AND id >= $3))",
        )
        .bind(conversation_id)
        .bind(created_at)
        .bind(message_id)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn conversations(
        &self,
        owner: &str,
        limit: i64,
        after: Option<&str>,
    ) -> Result<ConversationPage, StoreError> {
        let limit = limit.clamp(1, 200);
        // The cursor is "<updated_at>:<id>" of the last conversation of a page;
        // a malformed one starts from the top rather than failing.
        let cursor = after.and_then(|c| {
            let (time, id) = c.split_once(':')?;
            Some((time.parse::<i64>().ok()?, id.to_owned()))
        });
        let (time, id) = cursor.unwrap_or((i64::MAX, String::new()));
        let first_page = after.is_none() || time == i64::MAX;
        let rows = sqlx::query(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations \
             WHERE owner = $1 AND ($2 = 1 OR updated_at < $3 OR (updated_at = $3 AND id < $4)) \
             ORDER BY updated_at DESC, id DESC LIMIT $5"
        ))
        .bind(owner)
        .bind(i64::from(first_page))
        .bind(time)
        .bind(id)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut conversations = rows
            .iter()
            .map(conversation_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if conversations.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
            conversations.pop();
            conversations
                .last()
                .map(|c| format!("{}:{}", c.updated_at, c.id))
        } else {
            None
        };
        Ok(ConversationPage {
            conversations,
            next,
        })
    }

    async fn rename(&self, owner: &str, id: &str, title: &str) -> Result<Conversation, StoreError> {
        self.owned_conversation(owner, id).await?;
        sqlx::query("UPDATE conversations SET title = $1 WHERE id = $2")
            .bind(title)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.owned_conversation(owner, id).await
    }

    async fn delete_conversation(&self, owner: &str, id: &str) -> Result<(), StoreError> {
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
