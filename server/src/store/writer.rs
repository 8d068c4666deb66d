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

/// A write and who waits for its answer.
pub(super) struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

impl Job {
    /// What to write.
    pub(super) fn write(&self) -> &Write {
        &self.write
    }

    /// Hands the answer to whoever waits (if they still do).
    pub(super) fn answer(self, answer: Result<Answer, StoreError>) {
        let _ = self.reply.send(answer);
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
            .send(Job { write, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
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
        match commit(&mut connection, &batch).await {
            Ok(answers) => {
                for (job, answer) in batch.drain(..).zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(error) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    let _ = job.reply.send(Err(error));
                }
            }
            Err(error) => {
                tracing::warn!(%error, jobs = batch.len(), "a batch of writes failed: running them one by one");
                for job in batch.drain(..) {
                    let answer = match commit(&mut connection, std::slice::from_ref(&job)).await {
                        Ok(mut answers) => answers.pop().unwrap_or(Err(StoreError::WriterGone)),
                        Err(error) => Err(error),
                    };
                    let _ = job.reply.send(answer);
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
