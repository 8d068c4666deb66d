//! One stream: its replay log (every event, serialized once), its single writer,
//! and subscriptions that read the log from a cursor.
//!
//! Why a log and cursors rather than a broadcast channel: a subscriber that
//! attaches "after seq N" must get exactly seq > N and then the live events, with
//! no gap and no duplicate even while the writer races ahead. Reading one ordered
//! log under a lock, and waking on a `watch` of the latest seq, gives that by
//! construction; a slow subscriber never slows the writer or other subscribers —
//! it just reads a larger batch next time.
//!
//! The log is bounded (events and bytes). When old events are dropped, a reader
//! that needs them gets [`AttachError::Expired`]: recovery is all or nothing,
//! never a partial replay presented as complete.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// How much of a stream's history is kept for replay.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLimits {
    /// Most events kept.
    pub max_events: usize,
    /// Most bytes of event text kept.
    pub max_bytes: usize,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        ReplayLimits {
            max_events: 20_000,
            max_bytes: 4 << 20,
        }
    }
}

/// A generation, independent of any connection.
pub struct Stream {
    /// Opaque and unguessable: holding it is what lets an anonymous client attach.
    id: Arc<str>,
    /// The user that started it; only they may attach or cancel (`None`: anonymous).
    owner: Option<String>,
    /// Every event still kept. Guarded by a std mutex: critical sections are a
    /// push or a copy of refcounted texts, never an await.
    log: Mutex<ReplayLog>,
    /// The latest published seq; subscribers wait on it for new events.
    latest: watch::Sender<u64>,
    /// How many subscriptions are attached; the engine cancels a stream nobody
    /// has watched for the detach grace.
    attached: watch::Sender<usize>,
    /// Cancelled to stop generation (client cancel, detach grace, shutdown).
    cancel: CancellationToken,
    /// Set when the stop is a server shutdown rather than a client's cancel.
    interrupted: AtomicBool,
}

struct ReplayLog {
    /// The seq of `events[0]`; grows when old events are dropped.
    first_seq: u64,
    /// Contiguous events from `first_seq`.
    events: VecDeque<Published>,
    /// Bytes of text in `events`.
    bytes: usize,
    /// Bounds on `events` and `bytes`.
    limits: ReplayLimits,
    /// Whether the terminal event has been published.
    finished: bool,
}

impl ReplayLog {
    fn push(&mut self, published: Published) {
        self.bytes += published.text.len();
        self.events.push_back(published);
        // Keep at least the newest event: a terminal event is always replayable.
        while self.events.len() > 1
            && (self.events.len() > self.limits.max_events || self.bytes > self.limits.max_bytes)
        {
            if let Some(dropped) = self.events.pop_front() {
                self.bytes -= dropped.text.len();
                self.first_seq += 1;
            }
        }
    }
}

/// Why a subscriber could not read what it asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttachError {
    /// The events after the requested seq are no longer all in the log; a partial
    /// replay is never presented as complete.
    #[error("the stream's events after seq {0} are no longer available")]
    Expired(u64),
}

impl Stream {
    pub(super) fn new(id: Arc<str>, owner: Option<String>, limits: ReplayLimits) -> Self {
        Stream {
            id,
            owner,
            log: Mutex::new(ReplayLog {
                first_seq: 1,
                events: VecDeque::new(),
                bytes: 0,
                limits,
                finished: false,
            }),
            latest: watch::Sender::new(0),
            attached: watch::Sender::new(0),
            cancel: CancellationToken::new(),
            interrupted: AtomicBool::new(false),
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

    /// The last published seq (0 before the first event).
    pub fn last_seq(&self) -> u64 {
        *self.latest.borrow()
    }

    /// Asks the writer to stop; it ends the stream with `finish_reason: cancelled`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Stops the stream because the server is shutting down
    /// (`finish_reason: interrupted`).
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
        self.cancel.cancel();
    }

    /// Whether the stop was a shutdown.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Resolves when someone asked this stream to stop.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// How many subscriptions are attached now.
    pub fn attached(&self) -> usize {
        *self.attached.borrow()
    }

    /// Resolves once nobody has been attached for `grace` without interruption.
    pub async fn detached_for(&self, grace: Duration) {
        let mut attached = self.attached.subscribe();
        loop {
            if attached.wait_for(|n| *n == 0).await.is_err() {
                return;
            }
            // Nobody attached: wait out the grace unless someone attaches.
            if tokio::time::timeout(grace, attached.wait_for(|n| *n > 0))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// A subscription that yields every event with seq > `after_seq`, then live ones.
    pub fn attach(self: &Arc<Self>, after_seq: u64) -> Result<Subscription, AttachError> {
        // Subscribe to wake-ups before looking at the log, so no event published
        // in between can be missed.
        let wake = self.latest.subscribe();
        if after_seq.saturating_add(1) < self.lock().first_seq {
            return Err(AttachError::Expired(after_seq));
        }
        self.attached.send_modify(|n| *n += 1);
        Ok(Subscription {
            stream: self.clone(),
            cursor: after_seq,
            wake,
        })
    }

    /// Events with seq > `after`, at most `max`, and whether the stream has
    /// finished; `Expired` if some of them were dropped from the log.
    pub fn events_after(
        &self,
        after: u64,
        max: usize,
    ) -> Result<(Vec<Published>, bool), AttachError> {
        let log = self.lock();
        if after.saturating_add(1) < log.first_seq {
            return Err(AttachError::Expired(after));
        }
        let start = usize::try_from(after + 1 - log.first_seq).unwrap_or(usize::MAX);
        let batch = log
            .events
            .range(start.min(log.events.len())..)
            .take(max)
            .cloned()
            .collect();
        Ok((batch, log.finished))
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
            log.push(published);
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

/// Reads a stream's log from a cursor. Counts as attached while it exists.
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

    /// The next events in order, waiting for at least one; `Ok(None)` once the
    /// terminal event has been delivered; `Expired` if this reader fell so far
    /// behind that the events it needs were dropped from the log.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Published>>, AttachError> {
        loop {
            let (batch, finished) = self.stream.events_after(self.cursor, MAX_BATCH)?;
            if let Some(last) = batch.last() {
                self.cursor = last.seq;
                return Ok(Some(batch));
            }
            if finished {
                return Ok(None);
            }
            // The sender lives in the stream this subscription holds: it cannot be
            // dropped while we wait, so an error here cannot happen; treat it as the end.
            if self.wake.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stream
            .attached
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;

    fn hub() -> Hub {
        Hub::new(Duration::from_secs(60), ReplayLimits::default())
    }

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
        while let Some(batch) = sub.next_batch().await.unwrap() {
            seqs.extend(batch.iter().map(|p| p.seq));
        }
        seqs
    }

    #[tokio::test]
    async fn attach_after_any_seq_yields_exactly_the_rest() {
        let hub = hub();
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
        let hub = hub();
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
        let hub = hub();
        let (stream, mut writer) = hub.create(None);
        let id = stream.id().to_owned();
        writer.publish(|seq| token(&id, seq, "a"));
        let sub = stream.attach(0).unwrap();
        drop(writer);
        assert_eq!(drain(sub).await, vec![1, 2]);
        let (events, finished) = stream.events_after(1, 10).unwrap();
        assert!(finished);
        assert!(events[0].text.as_str().contains("PROCESSING_ERROR"));
    }

    #[tokio::test]
    async fn a_bounded_log_refuses_partial_replays() {
        let hub = Hub::new(
            Duration::from_secs(60),
            ReplayLimits {
                max_events: 10,
                max_bytes: usize::MAX,
            },
        );
        let (stream, mut writer) = hub.create(None);
        let id = stream.id().to_owned();
        let mut slow = stream.attach(0).unwrap();
        for i in 0..25 {
            writer.publish(|seq| token(&id, seq, &i.to_string()));
        }
        writer.finish(|seq| end(&id, seq));
        // Events 1..=16 were dropped: the last 10 (17..=26) remain.
        assert_eq!(stream.attach(0).err(), Some(AttachError::Expired(0)));
        assert_eq!(stream.attach(15).err(), Some(AttachError::Expired(15)));
        assert_eq!(
            drain(stream.attach(16).unwrap()).await,
            (17..=26).collect::<Vec<_>>()
        );
        // A reader that fell behind is told, not handed a gap.
        assert!(matches!(
            slow.next_batch().await,
            Err(AttachError::Expired(0))
        ));
    }

    #[tokio::test]
    async fn the_byte_bound_keeps_at_least_the_terminal_event() {
        let hub = Hub::new(
            Duration::from_secs(60),
            ReplayLimits {
                max_events: 1000,
                max_bytes: 10,
            },
        );
        let (stream, mut writer) = hub.create(None);
        let id = stream.id().to_owned();
        writer.publish(|seq| token(&id, seq, "long enough to exceed"));
        writer.finish(|seq| end(&id, seq));
        assert_eq!(drain(stream.attach(1).unwrap()).await, vec![2]);
    }

    #[tokio::test(start_paused = true)]
    async fn detached_for_waits_out_the_grace_without_subscribers() {
        let hub = hub();
        let (stream, _writer) = hub.create(None);
        let grace = Duration::from_secs(60);
        let sub = stream.attach(0).unwrap();
        assert_eq!(stream.attached(), 1);
        let watcher = {
            let stream = stream.clone();
            tokio::spawn(async move { stream.detached_for(grace).await })
        };
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!watcher.is_finished(), "attached: no grace running");
        drop(sub);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let again = stream.attach(0).unwrap();
        tokio::time::sleep(Duration::from_secs(45)).await;
        assert!(!watcher.is_finished(), "re-attaching restarted the grace");
        drop(again);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(watcher.is_finished());
    }

    #[test]
    fn owned_streams_are_private() {
        let stream = Stream::new("s".into(), Some("alice".into()), ReplayLimits::default());
        assert!(stream.is_accessible_by(Some("alice")));
        assert!(!stream.is_accessible_by(Some("bob")));
        assert!(!stream.is_accessible_by(None));
        let anonymous = Stream::new("t".into(), None, ReplayLimits::default());
        assert!(anonymous.is_accessible_by(None));
        assert!(anonymous.is_accessible_by(Some("bob")));
    }
}
