//! [`SqlStore`]: the [`Store`] over SQLite or PostgreSQL with sqlx's `Any` driver.
//!
//! Every query is a function of one connection. Reads borrow a connection of
//! the pool (SQLite's WAL lets them run beside the writer); writes are
//! [`Write`] jobs for the one [`Writer`] of the database, which commits
//! whatever has queued up together.

use std::path::Path;

use futures::future::BoxFuture;
use sqlx::any::{AnyPoolOptions, AnyRow, install_default_drivers};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Executor, Row};

use super::queries::{self as q, CONVERSATION_COLUMNS, MESSAGE_COLUMNS};
use super::writer::Writer;
use super::{
    Conversation, ConversationPage, Figures, HistoryMessage, MessageStatus, NewMessage, Regenerate,
    SearchHit, SearchPage, Share, Store, StoreError, StoredMessage, Turn, branch, now_ms,
};

/// One migration embedded in the binary: its SQL for SQLite and for
/// PostgreSQL (the same text unless full-text search needs each its own).
struct Step {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// A migration whose portable SQL serves both databases.
macro_rules! portable {
    ($version:expr, $description:expr, $file:literal) => {
        Step {
            version: $version,
            description: $description,
            sqlite: include_str!(concat!("../../migrations/", $file)),
            postgres: include_str!(concat!("../../migrations/", $file)),
        }
    };
}

/// The migrations, in order (see `migrations/README.md`).
const MIGRATIONS: [Step; 10] = [
    portable!(1, "conversations", "0001_conversations.sql"),
    portable!(
        2,
        "drop the old migration log",
        "0002_drop_rill_migrations.sql"
    ),
    portable!(3, "routing confidence", "0003_routing_confidence.sql"),
    portable!(4, "projects", "0004_projects.sql"),
    Step {
        version: 5,
        description: "full-text search",
        sqlite: include_str!("../../migrations/0005_search.sqlite.sql"),
        postgres: include_str!("../../migrations/0005_search.postgres.sql"),
    },
    portable!(6, "shared links", "0006_shares.sql"),
    portable!(7, "reply figures", "0007_reply_figures.sql"),
    portable!(8, "branches", "0008_branches.sql"),
    Step {
        version: 9,
        description: "documents",
        sqlite: include_str!("../../migrations/0009_documents.sqlite.sql"),
        postgres: include_str!("../../migrations/0009_documents.postgres.sql"),
    },
    Step {
        version: 10,
        description: "search indexed after the commit",
        sqlite: include_str!("../../migrations/0010_search_after_commit.sqlite.sql"),
        postgres: include_str!("../../migrations/0010_search_after_commit.postgres.sql"),
    },
];

/// The embedded migrations, as a source for sqlx's migrator (the `migrate!`
/// macro would compile sqlx's macro crate, and SQLite a second time for the
/// host, to embed the same files), for one kind of database.
#[derive(Debug)]
struct Embedded {
    postgres: bool,
}

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .map(|step| {
                    Migration::new(
                        step.version,
                        step.description.into(),
                        MigrationType::Simple,
                        if self.postgres {
                            step.postgres
                        } else {
                            step.sqlite
                        }
                        .into(),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Reads a `conversations` row.
fn conversation_from_row(row: &AnyRow) -> Result<Conversation, sqlx::Error> {
    Ok(Conversation {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        title: row.try_get("title")?,
        customer_id: row.try_get("customer_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        leaf_id: row.try_get("leaf_id")?,
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
        stream_id: row.try_get("stream_id")?,
        created_at: row.try_get("created_at")?,
        confidence: row.try_get("confidence")?,
        figures: Figures {
            usage: prompt.zip(completion),
            usage_estimated: row.try_get::<Option<i64>, _>("usage_estimated")? == Some(1),
            first_token_ms: row.try_get("first_token_ms")?,
            total_ms: row.try_get("total_ms")?,
        },
        parent_id: row.try_get("parent_id")?,
        slot: row.try_get("slot")?,
        selected_at: row.try_get("selected_at")?,
        sources: row.try_get("sources")?,
        versions: Vec::new(),
    })
}

/// Conversations in SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    /// Connections for reads.
    pool: AnyPool,
    /// Whether the database is PostgreSQL (full-text search differs).
    postgres: bool,
    /// The one writer of this database.
    writer: Writer,
}

/// How a [`SqlStore`] is opened, beyond its location.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Bytes of recent histories' text the SQLite writer keeps, so that a
    /// conversation's next question is sent with it without reading it back
    /// (`--history-cache-mib`; 0: none). PostgreSQL's writer keeps none.
    pub history_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            history_cache_bytes: super::recent::Recent::BUDGET,
        }
    }
}

impl SqlStore {
    /// Opens `database_url`, or the SQLite file `<data_dir>/rill.db` when none is
    /// given, applies pending migrations, and starts the writer.
    ///
    /// SQLite runs in WAL mode with `synchronous = NORMAL`: a commit is durable
    /// once written to the WAL, with no fsync per commit. That survives any
    /// crash of rill itself (kill -9, panic, out of memory) with every
    /// committed write; a power loss or kernel crash can lose the writes of the
    /// last moments before it (the WAL is synced at checkpoints), never
    /// corrupt the database. PostgreSQL keeps its own settings (`synchronous_commit`).
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(database_url, data_dir, StoreOptions::default()).await
    }

    /// [`SqlStore::open`] with `options`.
    pub async fn open_with(
        database_url: Option<&str>,
        data_dir: &Path,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
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
                        // WAL: readers do not block the writer; NORMAL: no fsync per
                        // commit (see above); foreign keys for ON DELETE CASCADE;
                        // wait rather than fail on a busy file.
                        connection.execute("PRAGMA journal_mode = WAL").await?;
                        connection.execute("PRAGMA synchronous = NORMAL").await?;
                        connection.execute("PRAGMA foreign_keys = ON").await?;
                        connection.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Migrator::new(Embedded { postgres: !sqlite })
            .await?
            .run(&pool)
            .await?;
        let writer = match sqlite_file(&url)? {
            // An SQLite file: batches run on a thread of their own (`sqlite.rs`).
            Some(path) => super::sqlite::start(&path, options.history_cache_bytes)?,
            // PostgreSQL, or an in-memory SQLite only the pool can see: the
            // writer's connection leaves the pool, it is the writer's alone.
            None => Writer::start(pool.acquire().await?.detach()),
        };
        Ok(SqlStore {
            pool,
            postgres: !sqlite,
            writer,
        })
    }

    /// The pool (documents write through it: `documents.rs`).
    pub(super) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection for reading.
    async fn reader(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    async fn write(&self, write: Write) -> Result<Answer, StoreError> {
        self.writer.write(write).await
    }

    /// Waits until every write queued before this call (checkpoints, which
    /// nobody waits for, included) is committed.
    pub async fn settle(&self) -> Result<(), StoreError> {
        self.write(Write::Settle).await.map(drop)
    }
}

/// The file of an SQLite `url`; `None` for PostgreSQL or an in-memory database.
fn sqlite_file(url: &str) -> Result<Option<std::path::PathBuf>, StoreError> {
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
    Ok(Some(options.get_filename().to_path_buf()))
}

/// A write, with everything it needs owned (it waits in the writer's queue).
#[derive(Debug)]
pub(super) enum Write {
    /// [`Store::start_turn`].
    StartTurn(Turn),
    /// [`Store::ensure_conversation`].
    Ensure {
        id: String,
        owner: String,
        customer_id: Option<String>,
        title: String,
    },
    /// [`Store::add_message`].
    Add(OwnedMessage),
    /// [`Store::checkpoint`].
    Checkpoint { id: String, content: String },
    /// [`Store::ensure_project`] when the project was not found.
    EnsureProject { id: String, owner: String },
    /// [`Store::set_persona`].
    SetPersona {
        id: String,
        persona: String,
        model: String,
        confidence: f64,
    },
    /// [`Store::set_sources`].
    SetSources { id: String, sources: String },
    /// [`Store::finish_message`].
    Finish {
        id: String,
        content: String,
        status: MessageStatus,
        figures: Figures,
    },
    /// [`Store::mark_interrupted`].
    MarkInterrupted,
    /// Indexes for search the messages noted since the last time (SQLite:
    /// migration 0010); nothing on PostgreSQL.
    IndexForSearch,
    /// [`Store::select_version`], once read and decided: these messages are
    /// selected now, `leaf` ends the branch shown.
    Select {
        conversation_id: String,
        selected: Vec<String>,
        leaf: String,
    },
    /// [`Store::rename`].
    Rename {
        owner: String,
        id: String,
        title: String,
    },
    /// [`Store::delete_conversation`].
    Delete { owner: String, id: String },
    /// [`Store::share`].
    Share {
        owner: String,
        conversation_id: String,
        token: String,
        expires_at: Option<i64>,
    },
    /// [`Store::unshare`].
    Unshare {
        owner: String,
        conversation_id: String,
    },
    /// Nothing: [`SqlStore::settle`] waits for its (empty) commit.
    Settle,
}

/// A write's answer.
#[derive(Debug)]
pub(super) enum Answer {
    Done,
    Count(u64),
    Conversation(Conversation),
    History(Vec<HistoryMessage>),
    Share(Share),
}

/// A message to insert, owned.
#[derive(Debug, Clone)]
pub(super) struct OwnedMessage {
    pub(super) id: String,
    pub(super) conversation_id: String,
    pub(super) role: &'static str,
    pub(super) persona: Option<String>,
    pub(super) model: Option<String>,
    pub(super) content: String,
    pub(super) status: MessageStatus,
    pub(super) stream_id: Option<String>,
}

impl OwnedMessage {
    fn from_new(message: &NewMessage<'_>) -> Self {
        OwnedMessage {
            id: message.id.to_owned(),
            conversation_id: message.conversation_id.to_owned(),
            role: if message.role == "user" {
                "user"
            } else {
                "assistant"
            },
            persona: message.persona.map(str::to_owned),
            model: message.model.map(str::to_owned),
            content: message.content.to_owned(),
            status: message.status,
            stream_id: message.stream_id.map(str::to_owned),
        }
    }
}

/// Runs one write on the writer's connection (inside its batch's transaction).
pub(super) async fn apply(
    connection: &mut AnyConnection,
    write: &Write,
) -> Result<Answer, StoreError> {
    match write {
        Write::StartTurn(turn) => start_turn(connection, turn).await.map(Answer::History),
        Write::Ensure {
            id,
            owner,
            customer_id,
            title,
        } => ensure(connection, id, owner, customer_id.as_deref(), title)
            .await
            .map(Answer::Conversation),
        Write::Add(message) => {
            let now = super::tick();
            insert_message(connection, message, now).await?;
            if message.role == "user" {
                set_leaf(connection, &message.conversation_id, &message.id).await?;
            }
            touch(connection, &message.conversation_id, now).await?;
            Ok(Answer::Done)
        }
        Write::Checkpoint { id, content } => {
            sqlx::query(q::CHECKPOINT)
                .bind(content.as_str())
                .bind(now_ms())
                .bind(id.as_str())
                .execute(&mut *connection)
                .await?;
            Ok(Answer::Done)
        }
        Write::EnsureProject { id, owner } => {
            sqlx::query(q::ENSURE_PROJECT)
                .bind(id.as_str())
                .bind(owner.as_str())
                .bind(now_ms())
                .execute(&mut *connection)
                .await?;
            let found: Option<String> = sqlx::query_scalar(q::PROJECT_OWNER)
                .bind(id.as_str())
                .fetch_optional(&mut *connection)
                .await?;
            project_owned_by(found, owner).map(|()| Answer::Done)
        }
        Write::SetPersona {
            id,
            persona,
            model,
            confidence,
        } => {
            sqlx::query(q::SET_PERSONA)
                .bind(persona.as_str())
                .bind(model.as_str())
                .bind(*confidence)
                .bind(id.as_str())
                .execute(&mut *connection)
                .await?;
            Ok(Answer::Done)
        }
        Write::SetSources { id, sources } => {
            sqlx::query(q::SET_SOURCES)
                .bind(sources.as_str())
                .bind(id.as_str())
                .execute(&mut *connection)
                .await?;
            Ok(Answer::Done)
        }
        Write::Finish {
            id,
            content,
            status,
            figures,
        } => {
            let (prompt, completion) = figures.usage.unzip();
            sqlx::query(q::FINISH)
                .bind(content.as_str())
                .bind(status.as_str())
                .bind(prompt)
                .bind(completion)
                .bind(now_ms())
                .bind(figures.usage.map(|_| i64::from(figures.usage_estimated)))
                .bind(figures.first_token_ms)
                .bind(figures.total_ms)
                .bind(id.as_str())
                .execute(&mut *connection)
                .await?;
            Ok(Answer::Done)
        }
        Write::Settle => Ok(Answer::Done),
        Write::MarkInterrupted => {
            let result = sqlx::query(q::MARK_INTERRUPTED)
                .bind(now_ms())
                .execute(&mut *connection)
                .await?;
            Ok(Answer::Count(result.rows_affected()))
        }
        Write::IndexForSearch => {
            if connection.backend_name() == "PostgreSQL" {
                return Ok(Answer::Count(0));
            }
            let result = sqlx::query(q::INDEX_PENDING)
                .execute(&mut *connection)
                .await?;
            sqlx::query(q::CLEAR_PENDING)
                .execute(&mut *connection)
                .await?;
            Ok(Answer::Count(result.rows_affected()))
        }
        Write::Select {
            conversation_id,
            selected,
            leaf,
        } => {
            let now = super::tick();
            for id in selected {
                sqlx::query(q::SELECT_VERSION)
                    .bind(now)
                    .bind(id.as_str())
                    .execute(&mut *connection)
                    .await?;
            }
            set_leaf(connection, conversation_id, leaf).await?;
            Ok(Answer::Done)
        }
        Write::Rename { owner, id, title } => {
            owned(connection, owner, id).await?;
            sqlx::query(q::RENAME)
                .bind(title.as_str())
                .bind(id.as_str())
                .execute(&mut *connection)
                .await?;
            owned(connection, owner, id).await.map(Answer::Conversation)
        }
        Write::Delete { owner, id } => {
            owned(connection, owner, id).await?;
            // Explicit, so it does not depend on foreign-key enforcement.
            for sql in [q::DELETE_SHARES, q::DELETE_MESSAGES] {
                sqlx::query(sql)
                    .bind(id.as_str())
                    .execute(&mut *connection)
                    .await?;
            }
            sqlx::query(q::DELETE_CONVERSATION)
                .bind(id.as_str())
                .execute(&mut *connection)
                .await?;
            Ok(Answer::Done)
        }
        Write::Share {
            owner,
            conversation_id,
            token,
            expires_at,
        } => {
            owned(connection, owner, conversation_id).await?;
            let now = now_ms();
            let live = sqlx::query(q::LIVE_SHARE)
                .bind(conversation_id.as_str())
                .bind(now)
                .fetch_optional(&mut *connection)
                .await?
                .map(|row| share_from_row(&row))
                .transpose()?;
            let share = match live {
                Some(live) => {
                    sqlx::query(q::RESHARE)
                        .bind(now)
                        .bind(*expires_at)
                        .bind(live.token.as_str())
                        .execute(&mut *connection)
                        .await?;
                    Share {
                        shared_upto: now,
                        expires_at: *expires_at,
                        ..live
                    }
                }
                None => {
                    sqlx::query(q::INSERT_SHARE)
                        .bind(token.as_str())
                        .bind(conversation_id.as_str())
                        .bind(now)
                        .bind(now)
                        .bind(*expires_at)
                        .execute(&mut *connection)
                        .await?;
                    new_share(token, conversation_id, now, *expires_at)
                }
            };
            Ok(Answer::Share(share))
        }
        Write::Unshare {
            owner,
            conversation_id,
        } => {
            owned(connection, owner, conversation_id).await?;
            let result = sqlx::query(q::REVOKE_SHARES)
                .bind(now_ms())
                .bind(conversation_id.as_str())
                .execute(&mut *connection)
                .await?;
            Ok(Answer::Count(result.rows_affected()))
        }
    }
}

/// A link just made.
pub(super) fn new_share(
    token: &str,
    conversation_id: &str,
    now: i64,
    expires_at: Option<i64>,
) -> Share {
    Share {
        token: token.to_owned(),
        conversation_id: conversation_id.to_owned(),
        created_at: now,
        shared_upto: now,
        expires_at,
        revoked_at: None,
    }
}

/// Reads a `shares` row.
fn share_from_row(row: &AnyRow) -> Result<Share, sqlx::Error> {
    Ok(Share {
        token: row.try_get("token")?,
        conversation_id: row.try_get("conversation_id")?,
        created_at: row.try_get("created_at")?,
        shared_upto: row.try_get("shared_upto")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// A question's whole write: the conversation (created if new, or marked as
/// just updated), where the question goes on the tree, the history before it
/// on its branch, the question and its empty replies, the new leaf. Four
/// statements (five with `replace_from`; three to regenerate a reply): each
/// costs a round trip to the database.
async fn start_turn(
    connection: &mut AnyConnection,
    turn: &Turn,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let now = super::tick();
    let leaf = claim(connection, turn, now).await?;
    // The question the new one follows, which is also where the history ends.
    let parent = match (&turn.regenerate, &turn.replace_from) {
        (Some(target), _) => target.question_parent.clone(),
        (None, Some(replaced)) => sqlx::query(q::REPLACED_PARENT)
            .bind(replaced.as_str())
            .bind(turn.conversation_id.as_str())
            .fetch_optional(&mut *connection)
            .await?
            .ok_or(StoreError::NotFound)?
            .try_get("parent_id")?,
        (None, None) => leaf,
    };
    let history = match parent.as_deref() {
        Some(anchor) if turn.include_history && turn.history_limit > 0 => {
            let rows = sqlx::query(q::BRANCH_MESSAGES)
                .bind(anchor)
                .bind(i64::try_from(turn.history_limit).unwrap_or(i64::MAX))
                .fetch_all(&mut *connection)
                .await?
                .iter()
                .map(message_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            super::history(rows, anchor, turn.history_limit)
        }
        _ => Vec::new(),
    };
    let sql = q::insert_turn_sql(super::turn_rows(turn));
    let mut query = sqlx::query(&sql);
    for row in super::turn_values(turn, parent.as_deref()) {
        query = query
            .bind(row.id)
            .bind(turn.conversation_id.as_str())
            .bind(row.role)
            .bind(row.persona)
            .bind(row.model)
            .bind(row.content)
            .bind(row.status)
            .bind(row.stream_id)
            .bind(now)
            .bind(row.parent_id)
            .bind(row.slot);
    }
    query.execute(&mut *connection).await?;
    if turn.regenerate.is_none() {
        set_leaf(connection, &turn.conversation_id, &turn.question_id).await?;
    }
    Ok(history)
}

/// Makes `question` the last of the branch conversation `id` shows.
async fn set_leaf(
    connection: &mut AnyConnection,
    id: &str,
    question: &str,
) -> Result<(), StoreError> {
    sqlx::query(q::SET_LEAF)
        .bind(question)
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Creates the turn's conversation for its owner, or marks it as just updated
/// if the owner already has it; `Forbidden` if someone else does. One
/// statement: an upsert whose update only applies to the same owner. Returns
/// the conversation's leaf (`None` for a new one).
async fn claim(
    connection: &mut AnyConnection,
    turn: &Turn,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(q::CLAIM_CONVERSATION)
        .bind(turn.conversation_id.as_str())
        .bind(turn.owner.as_str())
        .bind(turn.title.as_str())
        .bind(turn.customer_id.as_deref())
        .bind(now)
        .bind(now)
        .fetch_optional(&mut *connection)
        .await?
        .ok_or(StoreError::Forbidden)?;
    Ok(row.try_get("leaf_id")?)
}

/// The conversation `id` for `owner`, created if unknown (insert-if-absent,
/// then read: two clients racing on a new id agree on the first owner).
async fn ensure(
    connection: &mut AnyConnection,
    id: &str,
    owner: &str,
    customer_id: Option<&str>,
    title: &str,
) -> Result<Conversation, StoreError> {
    let now = now_ms();
    sqlx::query(q::ENSURE_CONVERSATION)
        .bind(id)
        .bind(owner)
        .bind(title)
        .bind(customer_id)
        .bind(now)
        .bind(now)
        .execute(&mut *connection)
        .await?;
    owned(connection, owner, id).await
}

/// The conversation `id` if `owner` owns it.
async fn owned(
    connection: &mut AnyConnection,
    owner: &str,
    id: &str,
) -> Result<Conversation, StoreError> {
    let row = sqlx::query(q::CONVERSATION)
        .bind(id)
        .fetch_optional(&mut *connection)
        .await?
        .ok_or(StoreError::NotFound)?;
    let conversation = conversation_from_row(&row)?;
    if conversation.owner != owner {
        return Err(StoreError::Forbidden);
    }
    Ok(conversation)
}

async fn insert_message(
    connection: &mut AnyConnection,
    message: &OwnedMessage,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(q::INSERT_MESSAGE)
        .bind(message.id.as_str())
        .bind(message.conversation_id.as_str())
        .bind(message.role)
        .bind(message.persona.as_deref())
        .bind(message.model.as_deref())
        .bind(message.content.as_str())
        .bind(message.status.as_str())
        .bind(message.stream_id.as_deref())
        .bind(now)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Marks a conversation as just updated (it moves to the top of the list).
async fn touch(connection: &mut AnyConnection, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query(q::TOUCH_CONVERSATION)
        .bind(now)
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// A conversation's messages, oldest first.
async fn messages_of(
    connection: &mut AnyConnection,
    conversation_id: &str,
) -> Result<Vec<StoredMessage>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY created_at, id"
    ))
    .bind(conversation_id)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .iter()
        .map(message_from_row)
        .collect::<Result<_, _>>()?)
}

/// Whether the project's owner (`found`, absent if no such project) is
/// `owner`: `Forbidden` if someone else, `NotFound` if none.
pub(super) fn project_owned_by(found: Option<String>, owner: &str) -> Result<(), StoreError> {
    match found {
        Some(found) if found == owner => Ok(()),
        Some(_) => Err(StoreError::Forbidden),
        None => Err(StoreError::NotFound),
    }
}

impl Answer {
    /// What the writer answered to another kind of write (a bug, never a
    /// client's doing): named, not formatted, so no write pays for it.
    fn unexpected(self, wanted: &str) -> StoreError {
        let got = match self {
            Answer::Done => "done",
            Answer::Count(_) => "a count",
            Answer::Conversation(_) => "a conversation",
            Answer::History(_) => "a history",
            Answer::Share(_) => "a link",
        };
        StoreError::UnexpectedAnswer(format!("wanted {wanted}, got {got}"))
    }

    fn history(self) -> Result<Vec<HistoryMessage>, StoreError> {
        match self {
            Answer::History(history) => Ok(history),
            other => Err(other.unexpected("a history")),
        }
    }

    fn conversation(self) -> Result<Conversation, StoreError> {
        match self {
            Answer::Conversation(conversation) => Ok(conversation),
            other => Err(other.unexpected("a conversation")),
        }
    }

    fn share(self) -> Result<Share, StoreError> {
        match self {
            Answer::Share(share) => Ok(share),
            other => Err(other.unexpected("a link")),
        }
    }

    fn count(self) -> Result<u64, StoreError> {
        match self {
            Answer::Count(count) => Ok(count),
            other => Err(other.unexpected("a count")),
        }
    }
}

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn start_turn(&self, turn: Turn) -> Result<Vec<HistoryMessage>, StoreError> {
        let answer = self.write(Write::StartTurn(turn)).await?;
        answer.history()
    }

    async fn ensure_conversation(
        &self,
        id: &str,
        owner: &str,
        customer_id: Option<&str>,
        title: &str,
    ) -> Result<Conversation, StoreError> {
        let answer = self
            .write(Write::Ensure {
                id: id.to_owned(),
                owner: owner.to_owned(),
                customer_id: customer_id.map(str::to_owned),
                title: title.to_owned(),
            })
            .await?;
        answer.conversation()
    }

    async fn project_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(q::PROJECT_OWNER)
            .bind(id)
            .fetch_optional(&mut *self.reader().await?)
            .await?)
    }

    async fn ensure_project(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        // Known projects are read, not written: joining a room is frequent.
        let found = self.project_owner(id).await?;
        if found.is_some() {
            return project_owned_by(found, owner);
        }
        self.write(Write::EnsureProject {
            id: id.to_owned(),
            owner: owner.to_owned(),
        })
        .await
        .map(drop)
    }

    async fn owned_conversation(&self, owner: &str, id: &str) -> Result<Conversation, StoreError> {
        owned(&mut *self.reader().await?, owner, id).await
    }

    async fn conversation_of_message(
        &self,
        owner: &str,
        message_id: &str,
    ) -> Result<Conversation, StoreError> {
        let mut connection = self.reader().await?;
        let row = sqlx::query("SELECT conversation_id FROM messages WHERE id = $1")
            .bind(message_id)
            .fetch_optional(&mut *connection)
            .await?
            .ok_or(StoreError::NotFound)?;
        let conversation_id: String = row.try_get("conversation_id")?;
        owned(&mut connection, owner, &conversation_id).await
    }

    async fn add_message(&self, message: NewMessage<'_>) -> Result<(), StoreError> {
        self.write(Write::Add(OwnedMessage::from_new(&message)))
            .await
            .map(drop)
    }

    async fn checkpoint(&self, message_id: &str, content: &str) -> Result<(), StoreError> {
        self.writer
            .queue(Write::Checkpoint {
                id: message_id.to_owned(),
                content: content.to_owned(),
            })
            .await
    }

    async fn set_persona(
        &self,
        message_id: &str,
        persona: &str,
        model: &str,
        confidence: f64,
    ) -> Result<(), StoreError> {
        self.write(Write::SetPersona {
            id: message_id.to_owned(),
            persona: persona.to_owned(),
            model: model.to_owned(),
            confidence,
        })
        .await
        .map(drop)
    }

    async fn set_sources(
        &self,
        message_id: &str,
        sources: &[rill_protocol::documents::Source],
    ) -> Result<(), StoreError> {
        let sources = serde_json::to_string(sources)
            .map_err(|e| StoreError::UnexpectedAnswer(format!("sources as JSON: {e}")))?;
        self.write(Write::SetSources {
            id: message_id.to_owned(),
            sources,
        })
        .await
        .map(drop)
    }

    async fn finish_message(
        &self,
        message_id: &str,
        content: &str,
        status: MessageStatus,
        figures: Figures,
    ) -> Result<(), StoreError> {
        self.write(Write::Finish {
            id: message_id.to_owned(),
            content: content.to_owned(),
            status,
            figures,
        })
        .await
        .map(drop)
    }

    async fn mark_interrupted(&self) -> Result<u64, StoreError> {
        let answer = self.write(Write::MarkInterrupted).await?;
        answer.count()
    }

    async fn messages(
        &self,
        owner: &str,
        conversation_id: &str,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut connection = self.reader().await?;
        let conversation = owned(&mut connection, owner, conversation_id).await?;
        let all = messages_of(&mut connection, conversation_id).await?;
        Ok(branch::shown(all, conversation.leaf_id.as_deref()))
    }

    async fn regenerate_target(
        &self,
        owner: &str,
        reply_id: &str,
    ) -> Result<Regenerate, StoreError> {
        let mut connection = self.reader().await?;
        let row = sqlx::query(q::REGENERATE_TARGET)
            .bind(reply_id)
            .fetch_optional(&mut *connection)
            .await?
            .ok_or(StoreError::NotFound)?;
        let conversation_id: String = row.try_get("conversation_id")?;
        owned(&mut connection, owner, &conversation_id).await?;
        Ok(Regenerate {
            conversation_id,
            question_id: row.try_get("question_id")?,
            question: row.try_get("question")?,
            question_parent: row.try_get("question_parent")?,
            persona: row.try_get("persona")?,
            routed: row.try_get::<Option<f64>, _>("confidence")?.is_some(),
            slot: row.try_get("slot")?,
        })
    }

    async fn select_version(
        &self,
        owner: &str,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let all = {
            let mut connection = self.reader().await?;
            owned(&mut connection, owner, conversation_id).await?;
            messages_of(&mut connection, conversation_id).await?
        };
        let (selected, leaf) = branch::select(&all, message_id).ok_or(StoreError::NotFound)?;
        self.write(Write::Select {
            conversation_id: conversation_id.to_owned(),
            selected,
            leaf,
        })
        .await
        .map(drop)
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
        .fetch_all(&mut *self.reader().await?)
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
        let answer = self
            .write(Write::Rename {
                owner: owner.to_owned(),
                id: id.to_owned(),
                title: title.to_owned(),
            })
            .await?;
        answer.conversation()
    }

    async fn delete_conversation(&self, owner: &str, id: &str) -> Result<(), StoreError> {
        self.write(Write::Delete {
            owner: owner.to_owned(),
            id: id.to_owned(),
        })
        .await
        .map(drop)
    }

    async fn search(
        &self,
        owner: &str,
        terms: &[String],
        limit: i64,
        offset: i64,
    ) -> Result<SearchPage, StoreError> {
        let Some((last, rest)) = terms.split_last() else {
            return Ok(SearchPage {
                hits: Vec::new(),
                more: false,
            });
        };
        let limit = limit.clamp(1, 100);
        if !self.postgres {
            // What was written before the search is found by it: the
            // writer indexes what it has noted first (migration 0010).
            self.write(Write::IndexForSearch).await?;
        }
        // Terms are letters and digits only (the caller's contract), so they
        // need no quoting beyond what each syntax asks for.
        let (sql, query) = if self.postgres {
            let mut query: Vec<String> = rest.to_vec();
            query.push(format!("{last}:*"));
            (SEARCH_POSTGRES, query.join(" & "))
        } else {
            let mut query: Vec<String> = rest.iter().map(|t| format!("\"{t}\"")).collect();
            query.push(format!("\"{last}\"*"));
            (SEARCH_SQLITE, query.join(" "))
        };
        let rows = sqlx::query(sql)
            .bind(query)
            .bind(owner)
            .bind(limit + 1)
            .bind(offset.max(0))
            .fetch_all(&mut *self.reader().await?)
            .await?;
        let mut hits = rows
            .iter()
            .map(|row| {
                Ok(SearchHit {
                    message_id: row.try_get("id")?,
                    conversation_id: row.try_get("conversation_id")?,
                    conversation_title: row.try_get("title")?,
                    role: row.try_get("role")?,
                    persona: row.try_get("persona")?,
                    created_at: row.try_get("created_at")?,
                    snippet: row.try_get("snippet")?,
                    score: row.try_get("score")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let more = hits.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        hits.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(SearchPage { hits, more })
    }

    async fn share(
        &self,
        owner: &str,
        conversation_id: &str,
        token: &str,
        expires_at: Option<i64>,
    ) -> Result<Share, StoreError> {
        let answer = self
            .write(Write::Share {
                owner: owner.to_owned(),
                conversation_id: conversation_id.to_owned(),
                token: token.to_owned(),
                expires_at,
            })
            .await?;
        answer.share()
    }

    async fn unshare(&self, owner: &str, conversation_id: &str) -> Result<u64, StoreError> {
        let answer = self
            .write(Write::Unshare {
                owner: owner.to_owned(),
                conversation_id: conversation_id.to_owned(),
            })
            .await?;
        answer.count()
    }

    async fn live_share(
        &self,
        owner: &str,
        conversation_id: &str,
    ) -> Result<Option<Share>, StoreError> {
        let mut connection = self.reader().await?;
        owned(&mut connection, owner, conversation_id).await?;
        Ok(sqlx::query(q::LIVE_SHARE)
            .bind(conversation_id)
            .bind(now_ms())
            .fetch_optional(&mut *connection)
            .await?
            .map(|row| share_from_row(&row))
            .transpose()?)
    }

    async fn share_by_token(&self, token: &str) -> Result<Option<Share>, StoreError> {
        Ok(sqlx::query(q::SHARE_BY_TOKEN)
            .bind(token)
            .fetch_optional(&mut *self.reader().await?)
            .await?
            .map(|row| share_from_row(&row))
            .transpose()?)
    }

    async fn shared_messages(
        &self,
        share: &Share,
    ) -> Result<(Conversation, Vec<StoredMessage>), StoreError> {
        let mut connection = self.reader().await?;
        let row = sqlx::query(q::CONVERSATION)
            .bind(share.conversation_id.as_str())
            .fetch_optional(&mut *connection)
            .await?
            .ok_or(StoreError::NotFound)?;
        let conversation = conversation_from_row(&row)?;
        let all = messages_of(&mut connection, &share.conversation_id).await?;
        let messages = branch::shown_upto(all, conversation.leaf_id.as_deref(), share.shared_upto);
        Ok((conversation, messages))
    }
}

/// Search on SQLite: the FTS5 index, ranked by BM25 (lower is better, so
/// negated), the best passage of up to 24 words. `$1` the FTS5 query, `$2`
/// the owner, `$3` how many, `$4` from where.
const SEARCH_SQLITE: &str = "SELECT m.id, m.conversation_id, c.title, m.role, m.persona, \
     m.created_at, snippet(messages_fts, 0, char(57344), char(57345), '…', 24) AS snippet, \
     -bm25(messages_fts) AS score \
     FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid \
     JOIN conversations c ON c.id = m.conversation_id \
     WHERE messages_fts MATCH $1 AND c.owner = $2 \
     ORDER BY bm25(messages_fts), m.created_at DESC LIMIT $3 OFFSET $4";

/// Search on PostgreSQL: the GIN index (same expression and condition),
/// ranked by `ts_rank`; passages are made for the page's rows only.
const SEARCH_POSTGRES: &str = "SELECT m.id, m.conversation_id, c.title, m.role, m.persona, \
     m.created_at, ts_headline('simple', m.content, to_tsquery('simple', $1), \
     'StartSel=' || chr(57344) || ', StopSel=' || chr(57345) || \
     ', MaxWords=24, MinWords=8, MaxFragments=2, FragmentDelimiter=\" … \"') AS snippet, \
     hit.score FROM (\
       SELECT m.id, ts_rank(to_tsvector('simple', m.content), to_tsquery('simple', $1))::float8 AS score \
       FROM messages m JOIN conversations c ON c.id = m.conversation_id \
       WHERE c.owner = $2 AND m.status <> 'streaming' \
       AND to_tsvector('simple', m.content) @@ to_tsquery('simple', $1) \
       ORDER BY score DESC, m.created_at DESC LIMIT $3 OFFSET $4\
     ) hit JOIN messages m ON m.id = hit.id JOIN conversations c ON c.id = m.conversation_id \
     ORDER BY hit.score DESC, m.created_at DESC";
