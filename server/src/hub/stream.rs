//! One stream: its replay log (every event, serialized once), its single writer,
//! and subscriptions that read the log from a cursor.
//!
//! Why a log and cursors rather than a broadcast channel: a subscriber that
//! attaches "after seq N" must get exactly seq > N and then the live events, with
//! no gap and no duplicate even while the writer races ahead. Reading one ordered
//! log under a lock, and waking on a `watch` of the latest seq, gives that by
//! construction; a slow subscriber never slows the writer or other subscribers —
//! it just reads a larger batch next time.

use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use rill_protocol::{ErrorCode, ServerEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One published event: its position and its JSON text, shared by every reader.
#[derive(Debug, Clone)]
pub struct Published {
    /// The event's seq (1, 2, 3 … per stream).
    pub seq: u64,
    /// The event's type (`start`, `token`, …), for transports that label events.
    pub kind: &'static str,
    /// The JSON text, serialized once (cloning shares the bytes).
    pub text: Utf8Bytes,
}

/// A generation, independent of any connection.
pub struct Stream {
    /// Opaque and unguessable: holding it is what lets an anonymous client attach.
    id: Arc<str>,
    /// The user that started it; only they may attach or cancel (`None`: anonymous).
    owner: Option<String>,
    /// Every event so far. Guarded by a std mutex: critical sections are a push
    /// or a slice copy of refcounted texts, never an await.
    log: Mutex<ReplayLog>,
    /// The latest published seq; subscribers wait on it for new events.
    latest: watch::Sender<u64>,
    /// Cancelled to stop generation (client cancel, shutdown).
    cancel: CancellationToken,
}

struct ReplayLog {
    /// The seq of `events[0]` (1 until old events are ever dropped).
    first_seq: u64,
    /// Contiguous events from `first_seq`.
    events: Vec<Published>,
    /// Whether the terminal event has been published.
    finished: bool,
}

/// Why a subscriber could not attach.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttachError {
    /// The events after the requested seq are no longer all in the log; a partial
    /// replay is never presented as complete.
    #[error("the stream's events after seq {0} are no longer available")]
    Expired(u64),
}

impl Stream {
    pub(super) fn new(id: Arc<str>, owner: Option<String>) -> Self {
        Stream {
            id,
            owner,
            log: Mutex::new(ReplayLog {
                first_seq: 1,
                events: Vec::new(),
                finished: false,
            }),
            latest: watch::Sender::new(0),
            cancel: CancellationToken::new(),
        }
    }

    /// The stream's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The user that started it.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Whether `user` may attach to or cancel this stream.
    pub fn is_accessible_by(&self, user: Option<&str>) -> bool {
        match &self.owner {
            None => true,
            Some(owner) => user == Some(owner.as_str()),
        }
    }

    /// Whether the terminal event has been published.
    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// Asks the writer to stop; it ends the stream with `finish_reason: cancelled`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Resolves when someone asked this stream to stop.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// A subscription that yields every event with seq > `after_seq`, then live ones.
    pub fn attach(self: &Arc<Self>, after_seq: u64) -> Result<Subscription, AttachError> {
        // Subscribe to wake-ups before looking at the log, so no event published
        // in between can be missed.
        let wake = self.latest.subscribe();
        let log = self.lock();
        if after_seq.saturating_add(1) < log.first_seq {
            return Err(AttachError::Expired(after_seq));
        }
        drop(log);
        Ok(Subscription {
            stream: self.clone(),
            cursor: after_seq,
            wake,
        })
    }

    /// Events with seq > `after`, at most `max`, and whether the stream has finished.
    pub fn events_after(&self, after: u64, max: usize) -> (Vec<Published>, bool) {
        let log = self.lock();
        let start = after.saturating_add(1).max(log.first_seq) - log.first_seq;
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        let batch = log
            .events
            .get(start..)
            .map(|rest| rest.iter().take(max).cloned().collect())
            .unwrap_or_default();
        (batch, log.finished)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayLog> {
        // Pushes are the only mutation; a poisoned log is still consistent.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The only writer of a stream: assigns seqs and appends to the log.
pub struct StreamWriter {
    /// The stream written to.
    stream: Arc<Stream>,
    /// The seq the next event gets.
    next_seq: u64,
    /// Whether the terminal event is out.
    finished: bool,
    /// Tells the hub the stream finished, so it can expire it after retention.
    on_finish: Option<Box<dyn FnOnce(Arc<str>) + Send + Sync>>,
}

impl StreamWriter {
    pub(super) fn new(
        stream: Arc<Stream>,
        on_finish: Box<dyn FnOnce(Arc<str>) + Send + Sync>,
    ) -> Self {
        StreamWriter {
            stream,
            next_seq: 1,
            finished: false,
            on_finish: Some(on_finish),
        }
    }

    /// The stream written to.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// The stream's id.
    pub fn id(&self) -> &str {
        self.stream.id()
    }

    /// Publishes a non-terminal event built for the next seq; returns that seq.
    pub fn publish(&mut self, build: impl FnOnce(u64) -> ServerEvent) -> u64 {
        self.append(build, false)
    }

    /// Publishes the terminal event; later calls do nothing.
    pub fn finish(&mut self, build: impl FnOnce(u64) -> ServerEvent) {
        if !self.finished {
            self.append(build, true);
        }
    }

    /// Whether the terminal event is out.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn append(&mut self, build: impl FnOnce(u64) -> ServerEvent, terminal: bool) -> u64 {
        if self.finished {
            return self.next_seq - 1;
        }
        let seq = self.next_seq;
        let event = build(seq);
        debug_assert_eq!(event.stream_position().map(|(_, s)| s), Some(seq));
        let published = Published {
            seq,
            kind: event.kind(),
            text: Utf8Bytes::from(event.to_json()),
        };
        {
            let mut log = self.stream.lock();
            log.events.push(published);
            log.finished = terminal;
        }
        self.next_seq += 1;
        self.finished = terminal;
        self.stream.latest.send_replace(seq);
        if terminal && let Some(on_finish) = self.on_finish.take() {
            on_finish(self.stream.id.clone());
        }
        seq
    }
}

impl Drop for StreamWriter {
    /// A writer dropped without a terminal event (its task panicked or was aborted)
    /// still ends the stream, so no subscriber waits forever.
    fn drop(&mut self) {
        if !self.finished {
            let id = self.stream.id.to_string();
            self.finish(|seq| ServerEvent::Error {
                error: "The stream ended unexpectedly".into(),
                code: ErrorCode::ProcessingError,
                stream_id: Some(id),
                seq: Some(seq),
            });
        }
    }
}

/// Reads a stream's log from a cursor.
pub struct Subscription {
    /// The stream read.
    stream: Arc<Stream>,
    /// The last seq delivered.
    cursor: u64,
    /// Wakes when new events are published.
    wake: watch::Receiver<u64>,
}

/// The most events one batch carries (bounds the copy made under the log's lock).
const MAX_BATCH: usize = 256;

impl Subscription {
    /// The stream read.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// The last seq delivered.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next events in order, waiting for at least one; `None` once the
    /// terminal event has been delivered.
    pub async fn next_batch(&mut self) -> Option<Vec<Published>> {
        loop {
            let (batch, finished) = self.stream.events_after(self.cursor, MAX_BATCH);
            if let Some(last) = batch.last() {
                self.cursor = last.seq;
                return Some(batch);
            }
            if finished {
                return None;
            }
            // The writer may be gone only after finishing (its Drop finishes).
            if self.wake.changed().await.is_err() {
                let (batch, _) = self.stream.events_after(self.cursor, MAX_BATCH);
                let last = batch.last()?.seq;
                self.cursor = last;
                return Some(batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use std::time::Duration;

    fn token(id: &str, seq: u64, text: &str) -> ServerEvent {
        ServerEvent::Token {
            stream_id: id.into(),
            seq,
            token: text.into(),
            partial_response: None,
        }
    }

    fn end(id: &str, seq: u64) -> ServerEvent {
        ServerEvent::Error {
            error: "end".into(),
            code: ErrorCode::ProcessingError,
            stream_id: Some(id.into()),
            seq: Some(seq),
        }
    }

    async fn drain(mut sub: Subscription) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(batch) = sub.next_batch().await {
            seqs.extend(batch.iter().map(|p| p.seq));
        }
        seqs
    }

    #[tokio::test]
    async fn attach_after_any_seq_yields_exactly_the_rest() {
        let hub = Hub::new(Duration::from_secs(60));
        let (stream, mut writer) = hub.create(None);
        let id = stream.id().to_owned();
        for i in 0..5 {
            writer.publish(|seq| token(&id, seq, &i.to_string()));
        }
        writer.finish(|seq| end(&id, seq));
        for after in 0..=7 {
            let expected: Vec<u64> = (after + 1..=6).collect();
            assert_eq!(drain(stream.attach(after).unwrap()).await, expected);
        }
    }

    #[tokio::test]
    async fn concurrent_attach_while_writing_has_no_gap_or_duplicate() {
        let hub = Hub::new(Duration::from_secs(60));
        let (stream, mut writer) = hub.create(None);
        let id = stream.id().to_owned();
        let readers: Vec<_> = (0..8)
            .map(|i| {
                let stream = stream.clone();
                tokio::spawn(async move {
                    // Attach at staggered points of the race.
                    for _ in 0..i {
                        tokio::task::yield_now().await;
                    }
                    let sub = stream.attach(0).unwrap();
                    drain(sub).await
                })
            })
            .collect();
        let writer_task = tokio::spawn(async move {
            for i in 0..500 {
                writer.publish(|seq| token(&id, seq, &i.to_string()));
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            writer.finish(|seq| end(&id, seq));
        });
        writer_task.await.unwrap();
        let expected: Vec<u64> = (1..=501).collect();
        for reader in readers {
            assert_eq!(reader.await.unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn dropped_writer_ends_the_stream_with_an_error() {
        let hub = Hub::new(Duration::from_secs(60));
        let (stream, mut writer) = hub.create(None);
        let id = stream.id().to_owned();
        writer.publish(|seq| token(&id, seq, "a"));
        let sub = stream.attach(0).unwrap();
        drop(writer);
        assert_eq!(drain(sub).await, vec![1, 2]);
        let (events, finished) = stream.events_after(1, 10);
        assert!(finished);
        assert!(events[0].text.as_str().contains("PROCESSING_ERROR"));
    }

    #[test]
    fn owned_streams_are_private() {
        let stream = Stream::new("s".into(), Some("alice".into()));
        assert!(stream.is_accessible_by(Some("alice")));
        assert!(!stream.is_accessible_by(Some("bob")));
        assert!(!stream.is_accessible_by(None));
        let anonymous = Stream::new("t".into(), None);
        assert!(anonymous.is_accessible_by(None));
        assert!(anonymous.is_accessible_by(Some("bob")));
    }
}
