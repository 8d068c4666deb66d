//! The store's one writer per database: every write is a job on a bounded
//! queue, and the writer runs whatever has queued up in one transaction
//! (group commit). Many conversations' writes cost one commit, and writers
//! never contend for SQLite's single write lock (whose busy handler sleeps).
//!
//! Backpressure: the queue holds [`QUEUE`] jobs; past that, callers wait for
//! room (their own write is not lost, only later). A batch holds at most
//! [`MAX_BATCH`] jobs. If a batch fails as a whole (a database error in one
//! job), each of its jobs is run again alone, so one bad write fails only its
//! own caller.

use sqlx::{AnyConnection, Connection};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::sql::{Answer, Write, apply};

/// Jobs waiting for the writer.
pub(super) const QUEUE: usize = 1024;
/// Most jobs committed together.
pub(super) const MAX_BATCH: usize = 256;
/// How long a batch of queued writes only (checkpoints: nobody waits for
/// them) waits for more before it is committed. Streams checkpoint at their
/// own moments, so without it each checkpoint was a commit of its own (1,000
/// commits a second with 1,000 streams); a write somebody waits for ends the
/// wait at once.
pub(super) const LINGER: std::time::Duration = std::time::Duration::from_millis(100);

/// A write and who waits for its answer (`None`: nobody, see [`Writer::queue`]).
pub(super) struct Job {
    write: Write,
    reply: Option<oneshot::Sender<Result<Answer, StoreError>>>,
}

impl Job {
    /// What to write.
    pub(super) fn write(&self) -> &Write {
        &self.write
    }

    /// Whether somebody waits for the answer ([`Writer::write`], not
    /// [`Writer::queue`]).
    pub(super) fn waited(&self) -> bool {
        self.reply.is_some()
    }

    /// Hands the answer to whoever waits (if they still do); a queued
    /// write's failure, which nobody waits for, is logged.
    pub(super) fn answer(self, answer: Result<Answer, StoreError>) {
        match self.reply {
            Some(reply) => {
                let _ = reply.send(answer);
            }
            None => {
                if let Err(error) = answer {
                    tracing::warn!(%error, "a queued write (a checkpoint) failed");
                }
            }
        }
    }
}

/// The writer's queue. Cheap to clone; the writer stops when every clone is gone.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer on `connection` (its own, outside any pool).
    pub(super) fn start(connection: AnyConnection) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(connection, queue));
        Writer { jobs }
    }

    /// A writer whose jobs another loop runs (the SQLite thread).
    pub(super) fn from_queue(jobs: mpsc::Sender<Job>) -> Self {
        Writer { jobs }
    }

    /// Runs `write` in the next batch and waits until it is committed.
    pub(super) async fn write(&self, write: Write) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                write,
                reply: Some(reply),
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Queues `write` for the next batch without waiting for its commit:
    /// returns once the queue has room for it. The writer runs jobs in the
    /// order they were queued, so any write queued after this one (waited
    /// for or not) is committed with it or after it. Its failure is logged.
    pub(super) async fn queue(&self, write: Write) -> Result<(), StoreError> {
        self.jobs
            .send(Job { write, reply: None })
            .await
            .map_err(|_| StoreError::WriterGone)
    }
}

async fn run(mut connection: AnyConnection, mut queue: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Only queued writes: wait a little for more (see `LINGER`).
        let until = tokio::time::Instant::now() + LINGER;
        let mut waited = batch.iter().any(Job::waited);
        while !waited && batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(until, queue.recv()).await {
                Ok(Some(job)) => {
                    waited = job.waited();
                    batch.push(job);
                }
                Ok(None) | Err(_) => break,
            }
        }
        match commit(&mut connection, &batch).await {
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
                    let answer = match commit(&mut connection, std::slice::from_ref(&job)).await {
                        Ok(mut answers) => answers.pop().unwrap_or(Err(StoreError::WriterGone)),
                        Err(error) => Err(error),
                    };
                    job.answer(answer);
                }
            }
        }
    }
}

/// Runs every job of `batch` in one transaction. A job's own refusal
/// (`Forbidden`, `NotFound`) is its answer and does not stop the batch; a
/// database error rolls the whole batch back.
async fn commit(
    connection: &mut AnyConnection,
    batch: &[Job],
) -> Result<Vec<Result<Answer, StoreError>>, StoreError> {
    let mut transaction = connection.begin().await?;
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch {
        match apply(&mut transaction, &job.write).await {
            Err(StoreError::Database(error)) => return Err(StoreError::Database(error)),
            answer => answers.push(answer),
        }
    }
    transaction.commit().await?;
    Ok(answers)
}
