//! The SQLite writer: the same [`Write`] jobs and group commit as
//! [`super::writer`], run on a thread of its own with a plain SQLite
//! connection (rusqlite, the same SQLite library sqlx links).
//!
//! Why not sqlx here: its SQLite driver runs each statement on a worker thread
//! and hands the result back, two thread switches per statement. With rill
//! pinned to one core, those switches were most of what a question cost the
//! server (`BENCHMARKS.md`). Here a whole batch runs in one transaction on
//! this thread: one hand-over in, one answer out per job, no switch per
//! statement, and prepared statements are cached for the life of the
//! connection. Reads still use sqlx's pool (WAL lets them run beside this
//! writer). The queries are the ones the sqlx path runs (`super::queries`),
//! except that a question following the one just answered is sent with the
//! history the writer kept (`super::recent`): its text, or its rows to read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use tokio::sync::mpsc;

use super::queries as q;
use super::recent::{self, Kept, Recent, Reply};
use super::sql::{Answer, OwnedMessage, Write, new_share};
use super::writer::{Job, LINGER, MAX_BATCH, QUEUE, Writer};
use super::{
    Conversation, Figures, HistoryMessage, MessageStatus, Share, StoreError, StoredMessage, Turn,
    now_ms,
};

/// Opens the database file at `path` for writing and starts its writer thread
/// (and the thread that checkpoints its WAL).
pub(super) fn start(path: &Path, history_cache_bytes: usize) -> Result<Writer, StoreError> {
    let mut connection = Connection::open(path).map_err(database)?;
    // As the pool's connections (see `SqlStore::open`): WAL, no fsync per
    // commit, foreign keys, wait on a busy file. No automatic checkpoint: it
    // would run inside the commit that crosses 1,000 WAL pages, and every
    // job of that batch would wait for it (up to 14 ms measured); the
    // checkpoint thread does it beside the writer instead. The WAL file is
    // cut back to `WalBound::LIMIT` when it starts over (see `WalBound`).
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {};",
            WalBound::LIMIT
        ))
        .map_err(database)?;
    connection.set_prepared_statement_cache_capacity(64);
    let checkpoints = Checkpoints::start(path)?;
    let mut wal = WalBound::new(path);
    let (jobs, queue) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("rill-sqlite-writer".into())
        .spawn(move || {
            yield_to_the_runtime();
            let recent = Recent::with_budget(history_cache_bytes);
            run(&mut connection, queue, &checkpoints, &mut wal, recent);
        })
        .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
    Ok(Writer::from_queue(jobs))
}

/// A SQLite error as the store's database error (the detail is for logs).
fn database(error: rusqlite::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(format!("sqlite: {error}")))
}

fn run(
    connection: &mut Connection,
    mut queue: mpsc::Receiver<Job>,
    checkpoints: &Checkpoints,
    wal: &mut WalBound,
    mut recent: Recent,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    // Rows noted before a restart are indexed at the first quiet moment.
    let mut search = SearchIndexing::at_start(Instant::now());
    loop {
        let first = match next_job(&mut queue, &waker, search.due_when_idle()) {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(Idle) => {
                search.index_chunk(connection);
                continue;
            }
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Only queued writes: wait a little for more (see `LINGER`).
        let until = Instant::now() + LINGER;
        let mut waited = batch.iter().any(Job::waited);
        while !waited && batch.len() < MAX_BATCH {
            match next_job(&mut queue, &waker, Some(until)) {
                Ok(Some(job)) => {
                    waited = job.waited();
                    batch.push(job);
                }
                Ok(None) | Err(Idle) => break,
            }
        }
        search.written(
            batch.iter().map(|job| notes(job.write())).sum(),
            Instant::now(),
        );
        match commit(connection, &batch, &mut recent) {
            Ok(answers) => {
                for (job, answer) in batch.drain(..).zip(answers) {
                    job.answer(answer);
                }
            }
            Err(error) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    job.answer(Err(error));
                }
            }
            Err(error) => {
                tracing::warn!(%error, jobs = batch.len(), "a batch of writes failed: running them one by one");
                for job in batch.drain(..) {
                    let answer = match commit(connection, std::slice::from_ref(&job), &mut recent) {
                        Ok(mut answers) => answers.pop().unwrap_or(Err(StoreError::WriterGone)),
                        Err(error) => Err(error),
                    };
                    job.answer(answer);
                }
            }
        }
        checkpoints.committed();
        wal.committed(connection);
        // A writer that is never quiet still indexes, a chunk per batch.
        if search.overdue(Instant::now()) {
            search.index_chunk(connection);
        }
    }
}

/// No job came before the indexing for search was due.
struct Idle;

/// Lowers the calling thread's priority (nice 10) below the runtime's, so
/// that on a busy core the kernel runs the runtime's thread first and this
/// one in what it leaves. With rill on one core, the SQLite threads' bursts
/// (a batch, its commit, indexing for search, a WAL checkpoint) held up every
/// token due meanwhile, and each switch between the threads cost both. In
/// alternating runs (`BENCHMARKS.md`, What changed) the token gap p99 of
/// 1,000 paced streams fell by 1.5–5 ms and tokens per CPU-second at full
/// speed rose a fifth; a question's first token comes a little later at the
/// median (its commit waits for the core a little longer). The writer is not
/// starved: when every task waits for it, the runtime sleeps and it has the
/// core. Where the core is not shared (several cores), nothing changes.
fn yield_to_the_runtime() {
    // On Linux a thread's id names that thread alone to setpriority, and
    // raising one's own nice value needs no privilege.
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(%error, "lowering the SQLite thread's priority");
    }
}

/// Wakes the writer thread from `park` when a job arrives.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The next job (`None`: every sender is gone, the store is closed), or
/// [`Idle`] once `due` passes with none. The tokio receiver is polled from
/// this plain thread: its waker unparks the thread.
fn next_job(
    queue: &mut mpsc::Receiver<Job>,
    waker: &Waker,
    due: Option<Instant>,
) -> Result<Option<Job>, Idle> {
    let mut context = Context::from_waker(waker);
    loop {
        match queue.poll_recv(&mut context) {
            Poll::Ready(job) => return Ok(job),
            Poll::Pending => {}
        }
        match due {
            None => std::thread::park(),
            Some(due) => match due.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => std::thread::park_timeout(wait),
                _ => return Err(Idle),
            },
        }
    }
}

/// How many rows a write may note for search (exact for the writes that
/// note one; the rest note none).
fn notes(write: &Write) -> usize {
    match write {
        Write::StartTurn(_) | Write::Add(_) | Write::Finish { .. } | Write::MarkInterrupted => 1,
        Write::Ensure { .. }
        | Write::Checkpoint { .. }
        | Write::EnsureProject { .. }
        | Write::SetPersona { .. }
        | Write::SetSources { .. }
        | Write::IndexForSearch
        | Write::Select { .. }
        | Write::Rename { .. }
        | Write::Delete { .. }
        | Write::Share { .. }
        | Write::Unshare { .. }
        | Write::Settle => 0,
    }
}

/// Indexing for search after the commits (migration 0010): the triggers note
/// the rows to index, and the writer indexes them in chunks of at most
/// [`SearchIndexing::CHUNK`] rows, each a transaction of its own, in the
/// quiet after a burst of writes: once no write has come for
/// [`SearchIndexing::QUIET`], chunk after chunk for as long as none comes. A
/// writer that is never that quiet indexes a chunk after each batch once the
/// first noted row has waited [`SearchIndexing::MOST_DELAY`] or about
/// [`SearchIndexing::MOST_ROWS`] rows wait. Every search first indexes all
/// that is noted ([`Write::IndexForSearch`]), so its results are whole
/// however long rows wait; a search just after a burst does that work
/// itself.
///
/// Why chunks: under load the writer is idle between almost every pair of
/// batches; indexing one or two rows at a time cost 126 µs of writer time a
/// row, five times the cost in larger chunks.
///
/// Why after the burst, and not at the first idle moment: a question that
/// comes while a chunk is being indexed waits for it (a few milliseconds, an
/// FTS5 merge tens), and its first token with it. A build that did not index
/// during the run at all had a lower first token p99 with 1,000 streams
/// started over a second in seven alternating pairs of seven, and waiting
/// for the quiet lowered it with 100 connections asking 60 short questions
/// each in six pairs of six (`BENCHMARKS.md`, ninth and tenth sessions).
/// Waiting for the quiet moves the work there; it does not remove it.
struct SearchIndexing {
    /// About how many rows wait (at least [`Self::CHUNK`] after a full chunk).
    noted: usize,
    /// Since when rows may be waiting (`None`: none since the last indexing).
    since: Option<Instant>,
    /// When the last batch of writes came (or the writer started).
    last_write: Instant,
}

impl SearchIndexing {
    /// Most rows indexed in one transaction: a few milliseconds of work.
    const CHUNK: usize = 64;
    /// How long no write must come before the writer indexes.
    const QUIET: Duration = Duration::from_millis(100);
    /// The longest a noted row waits while the writer is never quiet.
    const MOST_DELAY: Duration = Duration::from_secs(5);
    /// About the most rows that wait while the writer is never quiet (a
    /// search that finds them waiting indexes them all first: about 3 ms for
    /// 4,000 short messages, more for long ones; `BENCHMARKS.md`).
    const MOST_ROWS: usize = 4096;

    /// Rows noted before a restart (or by another process) may wait: index
    /// them at the first quiet moment.
    fn at_start(now: Instant) -> Self {
        SearchIndexing {
            noted: Self::CHUNK,
            since: Some(now),
            last_write: now,
        }
    }

    /// A batch of writes came at `now`; `rows` more rows may be noted.
    fn written(&mut self, rows: usize, now: Instant) {
        self.last_write = now;
        if rows > 0 {
            self.noted += rows;
            self.since.get_or_insert(now);
        }
    }

    /// When an idle writer should index a chunk (`None`: nothing waits).
    fn due_when_idle(&self) -> Option<Instant> {
        self.since.map(|_| self.last_write + Self::QUIET)
    }

    /// Whether a writer that is not quiet should index a chunk now.
    fn overdue(&self, now: Instant) -> bool {
        self.since.is_some_and(|since| {
            self.noted >= Self::MOST_ROWS
                || now.saturating_duration_since(since) >= Self::MOST_DELAY
        })
    }

    fn index_chunk(&mut self, connection: &mut Connection) {
        let chunk = i64::try_from(Self::CHUNK).unwrap_or(i64::MAX);
        let indexed = connection.transaction().map_err(database).and_then(|tx| {
            execute(&tx, q::INDEX_PENDING_CHUNK, params![chunk])?;
            let taken = execute(&tx, q::CLEAR_PENDING_CHUNK, params![chunk])?;
            tx.commit().map_err(database)?;
            Ok(taken)
        });
        self.indexed(indexed, Instant::now());
    }

    /// What a chunk's indexing came to (how many rows it took) at `now`.
    fn indexed(&mut self, taken: Result<u64, StoreError>, now: Instant) {
        match taken {
            Ok(taken) if taken < Self::CHUNK as u64 => {
                self.noted = 0;
                self.since = None;
            }
            // More wait: a quiet writer goes on at once.
            Ok(_) => self.noted = self.noted.saturating_sub(Self::CHUNK).max(Self::CHUNK),
            // The rows stay noted: indexed after the next quiet spell (or
            // the longest delay), or by a search.
            Err(error) => {
                tracing::warn!(%error, "indexing for search failed");
                self.noted = self.noted.min(Self::MOST_ROWS - 1);
                self.since = Some(now);
                self.last_write = now;
            }
        }
    }
}

/// Checkpoints of the WAL, on a thread of their own with a connection of its
/// own: `PRAGMA wal_checkpoint(PASSIVE)` every [`Checkpoints::EVERY`] while
/// the writer commits. WAL mode lets a checkpoint run beside the writer, so
/// no commit waits for one; once a checkpoint has copied everything the
/// writer starts the WAL file over. Under sustained writes none copies
/// everything, and [`WalBound`] keeps the file from growing without end.
struct Checkpoints {
    /// Commits so far (the checkpoint thread compares).
    commits: Arc<AtomicU64>,
    thread: std::thread::Thread,
}

impl Checkpoints {
    const EVERY: Duration = Duration::from_millis(500);

    fn start(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path).map_err(database)?;
        let commits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&commits);
        let thread = std::thread::Builder::new()
            .name("rill-sqlite-checkpoint".into())
            .spawn(move || {
                yield_to_the_runtime();
                let mut seen = 0;
                // Ends when the writer is gone (it holds the other count).
                while Arc::strong_count(&counted) > 1 {
                    std::thread::park_timeout(Self::EVERY);
                    let commits = counted.load(Ordering::Relaxed);
                    if commits == seen {
                        continue;
                    }
                    seen = commits;
                    let done =
                        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(error) = done {
                        tracing::warn!(%error, "checkpointing the WAL failed");
                    }
                }
            })
            .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        Ok(Checkpoints {
            commits,
            thread: thread.thread().clone(),
        })
    }

    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.thread.unpark();
    }
}

/// Keeps the WAL file from growing without end. The checkpoint thread copies
/// the WAL into the database beside the writer, but SQLite starts the WAL
/// over only after a checkpoint that copied all of it, and under sustained
/// writes new commits always land while one runs: the file grew by every
/// commit (125 MB in ten seconds of `stream-100`, over a 19 MB database).
/// So once the file passes [`WalBound::LIMIT`], the writer checkpoints itself
/// between two batches, when nothing can land meanwhile (most of the WAL is
/// already copied by then); the next batch starts the WAL over, and SQLite
/// cuts the file back to the limit (`journal_size_limit`). A reader in the
/// middle of a read can keep the WAL from starting over: the writer tries
/// again each time the file has grown by another quarter of the limit.
struct WalBound {
    path: PathBuf,
    /// The size at which the writer checkpoints next.
    next: u64,
}

impl WalBound {
    /// Bytes the WAL file may keep (small under test, to see it cut).
    #[cfg(not(test))]
    const LIMIT: u64 = 64 << 20;
    #[cfg(test)]
    const LIMIT: u64 = 1 << 20;

    fn new(database: &Path) -> Self {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        WalBound {
            path: path.into(),
            next: Self::LIMIT,
        }
    }

    /// After a commit: checkpoint here if the file has passed the mark.
    fn committed(&mut self, connection: &Connection) {
        let Ok(size) = std::fs::metadata(&self.path).map(|m| m.len()) else {
            return;
        };
        if size <= Self::LIMIT {
            self.next = Self::LIMIT;
            return;
        }
        if size < self.next {
            return;
        }
        self.next = size + Self::LIMIT / 4;
        if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "checkpointing the WAL failed");
        }
    }
}

/// Runs every job of `batch` in one transaction. A job's own refusal
/// (`Forbidden`, `NotFound`) is its answer and does not stop the batch; a
/// database error rolls the whole batch back.
/// `recent` follows the writes; it forgets everything if they roll back.
fn commit(
    connection: &mut Connection,
    batch: &[Job],
    recent: &mut Recent,
) -> Result<Vec<Result<Answer, StoreError>>, StoreError> {
    let committed = (|| {
        let transaction = connection.transaction().map_err(database)?;
        let mut answers = Vec::with_capacity(batch.len());
        for job in batch {
            match apply(&transaction, job.write(), recent) {
                Err(StoreError::Database(error)) => return Err(StoreError::Database(error)),
                answer => answers.push(answer),
            }
        }
        transaction.commit().map_err(database)?;
        Ok(answers)
    })();
    if committed.is_err() {
        recent.clear();
    }
    committed
}

/// Runs one write inside the batch's transaction; `recent` follows what
/// changes a history.
fn apply(tx: &Transaction<'_>, write: &Write, recent: &mut Recent) -> Result<Answer, StoreError> {
    match write {
        Write::StartTurn(turn) => start_turn(tx, turn, recent).map(Answer::History),
        Write::Ensure {
            id,
            owner,
            customer_id,
            title,
        } => {
            let now = now_ms();
            tx.prepare_cached(q::ENSURE_CONVERSATION)
                .and_then(|mut s| {
                    s.execute(params![id, owner, title, customer_id.as_deref(), now, now])
                })
                .map_err(database)?;
            owned(tx, owner, id).map(Answer::Conversation)
        }
        Write::Add(message) => {
            // A message outside a turn: a new version, or a new leaf.
            recent.forget(&message.conversation_id);
            let now = super::tick();
            insert_message(tx, message, now)?;
            if message.role == "user" {
                execute(
                    tx,
                    q::SET_LEAF,
                    params![message.id, message.conversation_id],
                )?;
            }
            execute(
                tx,
                q::TOUCH_CONVERSATION,
                params![now, message.conversation_id],
            )?;
            Ok(Answer::Done)
        }
        Write::Checkpoint { id, content } => {
            execute(tx, q::CHECKPOINT, params![content, now_ms(), id])?;
            Ok(Answer::Done)
        }
        Write::EnsureProject { id, owner } => {
            execute(tx, q::ENSURE_PROJECT, params![id, owner, now_ms()])?;
            let found: Option<String> = tx
                .prepare_cached(q::PROJECT_OWNER)
                .and_then(|mut s| s.query_row(params![id], |row| row.get(0)).optional())
                .map_err(database)?;
            super::sql::project_owned_by(found, owner).map(|()| Answer::Done)
        }
        Write::SetPersona {
            id,
            persona,
            model,
            confidence,
        } => {
            execute(tx, q::SET_PERSONA, params![persona, model, confidence, id])?;
            Ok(Answer::Done)
        }
        Write::SetSources { id, sources } => {
            execute(tx, q::SET_SOURCES, params![sources, id])?;
            Ok(Answer::Done)
        }
        Write::Finish {
            id,
            content,
            status,
            figures,
        } => {
            let (prompt, completion) = figures.usage.unzip();
            let changed = execute(
                tx,
                q::FINISH,
                params![
                    content,
                    status.as_str(),
                    prompt,
                    completion,
                    now_ms(),
                    figures.usage.map(|_| i64::from(figures.usage_estimated)),
                    figures.first_token_ms,
                    figures.total_ms,
                    id
                ],
            )?;
            // Read apart: a `RETURNING` clause costs SQLite a temporary table.
            let conversation: Option<String> = if changed == 0 {
                None
            } else {
                tx.prepare_cached(q::MESSAGE_CONVERSATION)
                    .and_then(|mut s| s.query_row(params![id], |row| row.get(0)).optional())
                    .map_err(database)?
            };
            if let Some(conversation) = conversation {
                recent.finished(&conversation, id, content);
            }
            Ok(Answer::Done)
        }
        Write::Settle => Ok(Answer::Done),
        Write::MarkInterrupted => {
            recent.clear();
            let count = execute(tx, q::MARK_INTERRUPTED, params![now_ms()])?;
            Ok(Answer::Count(count))
        }
        Write::IndexForSearch => index_noted(tx).map(Answer::Count),
        Write::Select {
            conversation_id,
            selected,
            leaf,
        } => {
            recent.forget(conversation_id);
            let now = super::tick();
            for id in selected {
                execute(tx, q::SELECT_VERSION, params![now, id])?;
            }
            execute(tx, q::SET_LEAF, params![leaf, conversation_id])?;
            Ok(Answer::Done)
        }
        Write::Rename { owner, id, title } => {
            owned(tx, owner, id)?;
            execute(tx, q::RENAME, params![title, id])?;
            owned(tx, owner, id).map(Answer::Conversation)
        }
        Write::Delete { owner, id } => {
            owned(tx, owner, id)?;
            recent.forget(id);
            execute(tx, q::DELETE_SHARES, params![id])?;
            execute(tx, q::DELETE_MESSAGES, params![id])?;
            execute(tx, q::DELETE_CONVERSATION, params![id])?;
            Ok(Answer::Done)
        }
        Write::Share {
            owner,
            conversation_id,
            token,
            expires_at,
        } => {
            owned(tx, owner, conversation_id)?;
            let now = now_ms();
            let live = tx
                .prepare_cached(q::LIVE_SHARE)
                .and_then(|mut s| {
                    s.query_row(params![conversation_id, now], share_from_row)
                        .optional()
                })
                .map_err(database)?;
            let share = match live {
                Some(live) => {
                    execute(tx, q::RESHARE, params![now, expires_at, live.token])?;
                    Share {
                        shared_upto: now,
                        expires_at: *expires_at,
                        ..live
                    }
                }
                None => {
                    execute(
                        tx,
                        q::INSERT_SHARE,
                        params![token, conversation_id, now, now, expires_at],
                    )?;
                    new_share(token, conversation_id, now, *expires_at)
                }
            };
            Ok(Answer::Share(share))
        }
        Write::Unshare {
            owner,
            conversation_id,
        } => {
            owned(tx, owner, conversation_id)?;
            execute(tx, q::REVOKE_SHARES, params![now_ms(), conversation_id]).map(Answer::Count)
        }
    }
}

/// A `shares` row, columns in the queries' order.
fn share_from_row(row: &Row<'_>) -> rusqlite::Result<Share> {
    Ok(Share {
        token: row.get(0)?,
        conversation_id: row.get(1)?,
        created_at: row.get(2)?,
        shared_upto: row.get(3)?,
        expires_at: row.get(4)?,
        revoked_at: row.get(5)?,
    })
}

/// Indexes for search the rows the triggers noted; how many.
fn index_noted(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    let count = execute(tx, q::INDEX_PENDING, [])?;
    execute(tx, q::CLEAR_PENDING, [])?;
    Ok(count)
}

/// Runs a statement (prepared once per connection); how many rows it changed.
fn execute(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<u64, StoreError> {
    let changed = tx
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params))
        .map_err(database)?;
    Ok(changed as u64)
}

/// See `sql::start_turn`: the same writes, but the claim makes the question
/// the leaf in the same statement, and the history of a question that follows
/// the one just answered is the one kept (`recent`): its text, or its rows.
fn start_turn(
    tx: &Transaction<'_>,
    turn: &Turn,
    recent: &mut Recent,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let now = super::tick();
    // The owner and the leaf first: the claim below then makes the new
    // question the leaf in the same statement, once nothing can refuse the
    // question any more (a refusal does not roll the batch back).
    let existing: Option<(String, Option<String>)> = tx
        .prepare_cached(q::CONVERSATION_OWNER_AND_LEAF)
        .and_then(|mut s| {
            s.query_row(params![turn.conversation_id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })
        .map_err(database)?;
    let leaf = match existing {
        Some((owner, _)) if owner != turn.owner => return Err(StoreError::Forbidden),
        Some((_, leaf)) => leaf,
        None => None,
    };
    let parent = match (&turn.regenerate, &turn.replace_from) {
        (Some(target), _) => target.question_parent.clone(),
        (None, Some(replaced)) => tx
            .prepare_cached(q::REPLACED_PARENT)
            .and_then(|mut s| {
                s.query_row(params![replaced, turn.conversation_id], |row| row.get(0))
                    .optional()
            })
            .map_err(database)?
            .ok_or(StoreError::NotFound)?,
        (None, None) => leaf,
    };
    // A regenerated reply is another version on the branch: the leaf stays.
    let new_leaf = turn.regenerate.is_none().then_some(&turn.question_id);
    let claimed = execute(
        tx,
        q::CLAIM_CONVERSATION_AT_LEAF,
        params![
            turn.conversation_id,
            turn.owner,
            turn.title,
            turn.customer_id.as_deref(),
            now,
            now,
            new_leaf
        ],
    )?;
    if claimed == 0 {
        return Err(StoreError::Forbidden);
    }
    let wanted = turn.include_history && turn.history_limit > 0;
    // The history, and its rows when it can be kept (`None`: it cannot).
    let (history, rows) = match parent.as_deref() {
        Some(anchor) if wanted => {
            let read = match recent.take(&turn.conversation_id, anchor, turn.history_limit) {
                Some(Kept {
                    rows,
                    texts: Some(texts),
                }) => Some((texts, rows)),
                Some(Kept { rows, texts: None }) => {
                    read_rows(tx, &rows, &turn.conversation_id)?.map(|history| (history, rows))
                }
                None => None,
            };
            match read {
                Some((history, rows)) => (history, Some(rows)),
                None => branch_history(tx, anchor, turn.history_limit)?,
            }
        }
        None if wanted => (Vec::new(), Some(Vec::new())),
        _ => (Vec::new(), None),
    };
    let rows_of_turn = super::turn_values(turn, parent.as_deref());
    // One row at a time, each rowid from `last_insert_rowid`: a `RETURNING`
    // clause costs SQLite a temporary table per statement.
    let mut statement = tx.prepare_cached(&q::INSERT_TURN_ROW).map_err(database)?;
    let mut inserted: HashMap<&str, i64> = HashMap::with_capacity(rows_of_turn.len());
    for row in &rows_of_turn {
        statement
            .execute(params![
                row.id,
                turn.conversation_id,
                row.role,
                row.persona,
                row.model,
                row.content,
                row.status,
                row.stream_id,
                now,
                row.parent_id,
                row.slot,
            ])
            .map_err(database)?;
        inserted.insert(row.id, tx.last_insert_rowid());
    }
    drop(statement);
    // A regenerated reply is a new version on the branch: its history is
    // read the long way next time.
    match rows {
        Some(mut rows) if turn.regenerate.is_none() => {
            let question = rows_of_turn
                .iter()
                .find(|row| row.id == turn.question_id && !row.content.is_empty())
                .and_then(|row| Some((row, *inserted.get(row.id)?)));
            if let Some((_, rowid)) = question {
                rows.push(rowid);
            }
            // What the next history shows (the newest `limit`), with its
            // texts while they fit: the next question is then sent with a
            // copy of them, and SQLite is not asked.
            let from = rows.len().saturating_sub(turn.history_limit);
            rows.drain(..from);
            let shown = &history[from.min(history.len())..];
            let bytes = shown.iter().map(recent::cost_of).sum::<usize>()
                + question.map_or(0, |(row, _)| recent::cost(row.id, row.role, row.content));
            let texts = recent.has_room(bytes).then(|| {
                let mut texts = Vec::with_capacity(shown.len() + 1);
                texts.extend_from_slice(shown);
                texts.extend(question.map(|(row, _)| HistoryMessage {
                    id: row.id.to_owned(),
                    role: row.role.to_owned(),
                    content: row.content.to_owned(),
                }));
                texts
            });
            let replies = rows_of_turn
                .iter()
                .filter(|row| row.id != turn.question_id)
                .filter_map(|row| {
                    Some(Reply::streaming(
                        row.id.to_owned(),
                        *inserted.get(row.id)?,
                        row.role,
                    ))
                })
                .collect();
            recent.keep(
                &turn.conversation_id,
                &turn.question_id,
                turn.history_limit,
                rows,
                texts,
                replies,
            );
        }
        _ => recent.forget(&turn.conversation_id),
    }
    Ok(history)
}

/// The history after `anchor` the long way (up the branch), and its rows
/// if it can be kept: not while a reply it shows is still streaming.
fn branch_history(
    tx: &Transaction<'_>,
    anchor: &str,
    limit: usize,
) -> Result<(Vec<HistoryMessage>, Option<Vec<i64>>), StoreError> {
    let depth = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = tx
        .prepare_cached(q::BRANCH_MESSAGES_ROWIDS)
        .map_err(database)?;
    let mut rowids = HashMap::new();
    let rows = statement
        .query_map(params![anchor, depth], |row| {
            let message = message_from_row(row)?;
            Ok((message, row.get::<_, i64>(19)?))
        })
        .and_then(|rows| {
            rows.map(|row| {
                row.map(|(message, rowid)| {
                    rowids.insert(message.id.clone(), rowid);
                    message
                })
            })
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(database)?;
    let (history, settled) = super::history_settled(rows, anchor, limit);
    let kept = settled
        .then(|| {
            history
                .iter()
                .map(|m| rowids.get(&m.id).copied())
                .collect::<Option<Vec<i64>>>()
        })
        .flatten();
    Ok((history, kept))
}

/// What a history shows of the messages at `rows`, in order; `None` if one
/// is gone or not in `conversation` (then the history is read the long way).
/// One statement for all of them: a statement per row paid its start, its
/// binding and its reset each time (callgrind: about 5,000 instructions a
/// row then; what is left is SQLite's lookup and the three strings).
fn read_rows(
    tx: &Transaction<'_>,
    rows: &[i64],
    conversation: &str,
) -> Result<Option<Vec<HistoryMessage>>, StoreError> {
    if rows.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut statement = tx.prepare_cached(q::HISTORY_BY_ROWIDS).map_err(database)?;
    let mut found: Vec<Option<HistoryMessage>> = vec![None; rows.len()];
    let mut read = statement
        .query(params![json_array(rows), conversation])
        .map_err(database)?;
    while let Some(row) = read.next().map_err(database)? {
        let place: i64 = row.get(0).map_err(database)?;
        let slot = usize::try_from(place).ok().and_then(|i| found.get_mut(i));
        if let Some(slot) = slot {
            *slot = Some(HistoryMessage {
                id: row.get(1).map_err(database)?,
                role: row.get(2).map_err(database)?,
                content: row.get(3).map_err(database)?,
            });
        }
    }
    Ok(found.into_iter().collect())
}

/// `rows` as a JSON array of numbers, for `json_each`.
fn json_array(rows: &[i64]) -> String {
    let mut json = String::with_capacity(2 + rows.len() * 8);
    let mut digits = itoa::Buffer::new();
    json.push('[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(digits.format(*row));
    }
    json.push(']');
    json
}

fn insert_message(
    tx: &Transaction<'_>,
    message: &OwnedMessage,
    now: i64,
) -> Result<(), StoreError> {
    execute(
        tx,
        q::INSERT_MESSAGE,
        params![
            message.id,
            message.conversation_id,
            message.role,
            message.persona.as_deref(),
            message.model.as_deref(),
            message.content,
            message.status.as_str(),
            message.stream_id.as_deref(),
            now
        ],
    )?;
    Ok(())
}

/// The conversation `id` if `owner` owns it.
fn owned(tx: &Transaction<'_>, owner: &str, id: &str) -> Result<Conversation, StoreError> {
    let conversation = tx
        .prepare_cached(q::CONVERSATION)
        .and_then(|mut s| s.query_row(params![id], conversation_from_row).optional())
        .map_err(database)?
        .ok_or(StoreError::NotFound)?;
    if conversation.owner != owner {
        return Err(StoreError::Forbidden);
    }
    Ok(conversation)
}

/// A `conversations` row, columns in [`q::CONVERSATION_COLUMNS`]' order.
fn conversation_from_row(row: &Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: row.get(0)?,
        owner: row.get(1)?,
        title: row.get(2)?,
        customer_id: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        leaf_id: row.get(6)?,
    })
}

/// A `messages` row, columns in [`q::MESSAGE_COLUMNS`]' order.
fn message_from_row(row: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    let prompt: Option<i64> = row.get(7)?;
    let completion: Option<i64> = row.get(8)?;
    Ok(StoredMessage {
        id: row.get(0)?,
        conversation_id: row.get(1)?,
        role: row.get(2)?,
        persona: row.get(3)?,
        model: row.get(4)?,
        content: row.get(5)?,
        status: MessageStatus::parse(&row.get::<_, String>(6)?),
        stream_id: row.get(9)?,
        created_at: row.get(10)?,
        confidence: row.get(11)?,
        figures: Figures {
            usage: prompt.zip(completion),
            usage_estimated: row.get::<_, Option<i64>>(12)? == Some(1),
            first_token_ms: row.get(13)?,
            total_ms: row.get(14)?,
        },
        parent_id: row.get(15)?,
        slot: row.get(16)?,
        selected_at: row.get(17)?,
        sources: row.get(18)?,
        versions: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Connection, HistoryMessage, SearchIndexing, WalBound, json_array, read_rows};
    use crate::store::StoreError;
    use crate::store::{MessageStatus, NewMessage, SqlStore, Store};

    /// Sustained writes, one commit each, as a busy server makes them: the
    /// WAL file never holds much more than its limit, and nothing is lost.
    #[tokio::test]
    async fn the_wal_file_stays_bounded_under_sustained_writes() {
        let dir = std::env::temp_dir().join(format!("rill-wal-{}", uuid::Uuid::new_v4()));
        let store = SqlStore::open(None, &dir).await.unwrap();
        store
            .ensure_conversation("c", "user:ann", None, "")
            .await
            .unwrap();
        store
            .add_message(NewMessage {
                id: "r",
                conversation_id: "c",
                role: "assistant",
                persona: None,
                model: None,
                content: "",
                status: MessageStatus::Streaming,
                stream_id: None,
            })
            .await
            .unwrap();
        let wal = dir.join("rill.db-wal");
        // Each write rewrites a 64 KiB reply with other letters (SQLite
        // leaves a page whose bytes did not change unwritten): about 17 pages
        // of WAL, so the 300 of them would leave a WAL file of some 20 MB
        // without a bound.
        let mut largest = 0;
        let mut last = String::new();
        for i in 0..300u32 {
            let letter = char::from(b'a' + u8::try_from(i % 26).unwrap());
            last = format!("{letter}{letter}{letter} ").repeat(64 * 1024 / 4);
            store.checkpoint("r", &last).await.unwrap();
            store.settle().await.unwrap();
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        assert!(
            largest <= 2 * WalBound::LIMIT,
            "the WAL file reached {largest} bytes (limit {})",
            WalBound::LIMIT
        );
        let stored = store.messages("user:ann", "c").await.unwrap();
        assert_eq!(stored[0].content, last, "the last write is kept whole");
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A history read by row gives the messages in the order of `rows`
    /// (not the rows' order in the table), and nothing at all if one row
    /// is gone or in another conversation.
    #[test]
    fn a_history_read_by_row_keeps_the_order_asked_and_every_row() {
        let mut connection = Connection::open_in_memory().unwrap();
        connection
            .execute_batch(
                "CREATE TABLE messages (id TEXT, conversation_id TEXT, role TEXT, content TEXT);
                 INSERT INTO messages VALUES ('q1', 'c', 'user', 'One?'),
                     ('a1', 'c', 'assistant', 'One.'), ('q2', 'c', 'user', 'Two?'),
                     ('x', 'd', 'user', 'Elsewhere');",
            )
            .unwrap();
        let tx = connection.transaction().unwrap();
        let ids = |rows: &[i64]| {
            read_rows(&tx, rows, "c")
                .unwrap()
                .map(|history| history.into_iter().map(|m| m.id).collect::<Vec<_>>())
        };
        assert_eq!(
            ids(&[3, 1, 2]),
            Some(vec!["q2".into(), "q1".into(), "a1".into()])
        );
        assert_eq!(ids(&[]), Some(vec![]));
        assert_eq!(ids(&[1, 99]), None, "a row gone");
        assert_eq!(ids(&[1, 4]), None, "a row of another conversation");
        let history = read_rows(&tx, &[2], "c").unwrap().unwrap();
        assert_eq!(
            history,
            vec![HistoryMessage {
                id: "a1".into(),
                role: "assistant".into(),
                content: "One.".into()
            }]
        );
        assert_eq!(
            json_array(&[1, -2, i64::MAX]),
            format!("[1,-2,{}]", i64::MAX)
        );
    }

    /// The nice value of each of this process's threads named `name`
    /// (`/proc/self/task/*/stat`, field 19).
    #[cfg(target_os = "linux")]
    fn nice_of_threads(name: &str) -> Vec<i64> {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the name (which may hold spaces) start after ')'.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            if let Some(nice) = after.split_whitespace().nth(16) {
                found.push(nice.parse().unwrap());
            }
        }
        found
    }

    /// The SQLite threads run below the runtime's priority (nice 10), so
    /// that on a shared core the tokens' thread goes first.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_sqlite_threads_yield_to_the_runtime() {
        let dir = std::env::temp_dir().join(format!("rill-nice-{}", uuid::Uuid::new_v4()));
        let store = SqlStore::open(None, &dir).await.unwrap();
        // A write answered: the writer thread has started.
        store.settle().await.unwrap();
        let mut threads = (Vec::new(), Vec::new());
        for _ in 0..100 {
            // Thread names are cut to 15 bytes.
            threads = (
                nice_of_threads("rill-sqlite-wri"),
                nice_of_threads("rill-sqlite-che"),
            );
            // Other tests' stores may have their own threads, some just
            // starting: every writer yields once it runs.
            if !threads.0.is_empty()
                && threads.0.iter().all(|&nice| nice == 10)
                && threads.1.contains(&10)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (writers, checkpointers) = threads;
        assert!(!writers.is_empty() && !checkpointers.is_empty());
        assert!(writers.iter().all(|&nice| nice == 10), "{writers:?}");
        assert!(checkpointers.contains(&10), "{checkpointers:?}");
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The writer indexes in the quiet after a burst, not inside it: nothing
    /// is due while writes keep coming, a chunk is due once none has come for
    /// `QUIET`, a backlog goes on chunk after chunk, and a writer that is
    /// never quiet indexes a chunk per batch once rows waited too long or too
    /// many wait.
    #[test]
    fn indexing_for_search_waits_for_the_quiet_after_a_burst() {
        let quiet = SearchIndexing::QUIET;
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut search = SearchIndexing::at_start(start);
        assert_eq!(
            search.due_when_idle(),
            Some(start + quiet),
            "rows noted before a restart"
        );
        search.indexed(Ok(3), at(100));
        assert_eq!(search.due_when_idle(), None, "nothing waits");
        assert!(!search.overdue(at(10_000)));
        // A burst: a batch of two rows every 5 ms for a second.
        for ms in (1_000..2_000).step_by(5) {
            search.written(2, at(ms));
            assert_eq!(search.due_when_idle(), Some(at(ms) + quiet));
            assert!(!search.overdue(at(ms)), "{ms} ms: inside the burst");
        }
        // Writes that note nothing end a quiet spell too.
        search.written(0, at(2_000));
        assert_eq!(search.due_when_idle(), Some(at(2_000) + quiet));
        // A full chunk leaves more: the quiet writer goes on at once.
        search.indexed(Ok(SearchIndexing::CHUNK as u64), at(2_100));
        assert_eq!(search.due_when_idle(), Some(at(2_000) + quiet));
        search.indexed(Ok(1), at(2_110));
        assert_eq!(search.due_when_idle(), None);
        // Never quiet: overdue once the first row has waited the longest.
        search.written(1, at(3_000));
        let most = SearchIndexing::MOST_DELAY;
        assert!(!search.overdue(at(3_000) + most - Duration::from_millis(1)));
        assert!(search.overdue(at(3_000) + most));
        search.indexed(Ok(1), at(9_000));
        // … or once about `MOST_ROWS` rows wait, however recent.
        search.written(SearchIndexing::MOST_ROWS - 1, at(10_000));
        assert!(!search.overdue(at(10_000)));
        search.written(1, at(10_001));
        assert!(search.overdue(at(10_001)));
        // A failed chunk: the rows stay noted and are tried again after the
        // next quiet spell or the longest delay, not in a loop.
        search.indexed(Err(StoreError::WriterGone), at(11_000));
        assert_eq!(search.due_when_idle(), Some(at(11_000) + quiet));
        assert!(!search.overdue(at(11_000)));
        assert!(search.overdue(at(11_000) + most));
    }
}
