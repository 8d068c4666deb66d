//! [`MemoryHub`]: streams in this process. Each stream keeps a bounded replay
//! log of its events; readers hold cursors into it.
//!
//! Why a log and cursors rather than a broadcast channel: a reader that attaches
//! "after seq N" must get exactly seq > N and then the live events, with no gap
//! and no duplicate even while the writer races ahead. Reading one ordered log
//! under a lock gives that by construction; a slow reader never slows the
//! writer or other readers — it just reads a larger batch next time.
//!
//! A reader that finds nothing new leaves its task's waker in the log (in the
//! same critical section as the read, so no publish slips in between); the
//! next publish wakes exactly those tasks, outside the lock. A token costs one
//! lock, one `Arc` and one wake-up per reading task.
//!
//! The log is bounded (events and bytes). When old events are dropped, a reader
//! that needs them gets [`HubError::Expired`]: recovery is all or nothing, never
//! a partial replay presented as complete.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;

use super::log::ReplayLog;
use super::{
    Hub, HubError, NewStream, ReplayLimits, Sequenced, StopReason, StreamInfo, StreamLog,
    StreamWriter, Subscription,
};
use crate::events::{Failure, StreamEvent};

/// The in-process hub. Cheap to clone.
#[derive(Clone)]
pub struct MemoryHub {
    inner: Arc<Inner>,
}

struct Inner {
    /// Every stream that is running or still inside its retention window.
    /// A std mutex: lookups and inserts are short and never held across an await.
    streams: Mutex<HashMap<Arc<str>, Arc<MemoryStream>>>,
    /// How long a finished stream stays replayable before it is dropped.
    retention: Duration,
    /// How much history each stream keeps for replay.
    limits: ReplayLimits,
    /// Streams still generating: incremented at create, decremented by the
    /// terminal event (which every stream gets, even if its writer panics).
    running: AtomicUsize,
    /// The finished streams inside their retention window, oldest first.
    retained: Mutex<Retained>,
    /// Most bytes the finished streams may hold together: past it the oldest
    /// are dropped before their retention window ends.
    retained_budget: usize,
}

/// The finished streams still kept, in the order they finished: the bytes
/// each holds (its replay log's estimate plus [`RETAINED_OVERHEAD`]) and
/// when its retention window ends.
#[derive(Default)]
struct Retained {
    order: VecDeque<Kept>,
    bytes: usize,
}

/// A finished stream in [`Retained`].
struct Kept {
    id: Arc<str>,
    bytes: usize,
    until: tokio::time::Instant,
}

/// Bytes a finished stream holds beyond its replay log: the stream itself,
/// its entry in the map, its retention timer.
const RETAINED_OVERHEAD: usize = 1024;

/// The default budget of the finished streams kept for replay (256 MiB).
pub const DEFAULT_RETAINED_BUDGET: usize = 256 << 20;

impl MemoryHub {
    /// An empty hub whose finished streams stay replayable for `retention`, each
    /// keeping at most `limits` of history, all of them together at most
    /// [`DEFAULT_RETAINED_BUDGET`].
    pub fn new(retention: Duration, limits: ReplayLimits) -> Self {
        Self::with_budget(retention, limits, DEFAULT_RETAINED_BUDGET)
    }

    /// [`MemoryHub::new`] whose finished streams hold at most `budget` bytes
    /// together: past it, the oldest finished streams are dropped before
    /// their retention window ends (a late resume gets `NotFound`, as after
    /// the window; the newest finished stream is always kept).
    pub fn with_budget(retention: Duration, limits: ReplayLimits, budget: usize) -> Self {
        MemoryHub {
            inner: Arc::new(Inner {
                streams: Mutex::new(HashMap::new()),
                retention,
                limits,
                running: AtomicUsize::new(0),
                retained: Mutex::new(Retained::default()),
                retained_budget: budget,
            }),
        }
    }

    /// Bytes the finished streams kept for replay hold (estimated).
    pub fn retained_bytes(&self) -> usize {
        lock(&self.inner.retained).bytes
    }

    /// How many streams are running or retained.
    pub fn len(&self) -> usize {
        self.streams().len()
    }

    /// Whether the hub holds no stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A reader after `after_seq`; `attached` readers count against the
    /// detach grace.
    fn subscribe(
        &self,
        stream_id: &str,
        after_seq: u64,
        attached: bool,
    ) -> Result<Subscription, HubError> {
        let stream = self.get(stream_id).ok_or(HubError::NotFound)?;
        // Count the reader before checking the log, so the detach grace cannot
        // fire in between; undo if the replay it asks for is gone.
        if attached {
            stream.attached.fetch_add(1, Ordering::AcqRel);
        }
        if after_seq.saturating_add(1) < stream.log().first_seq() {
            if attached {
                stream.detach();
            }
            return Err(HubError::Expired(after_seq));
        }
        Ok(Subscription::new(
            stream.id.clone(),
            after_seq,
            stream,
            attached,
        ))
    }

    fn get(&self, id: &str) -> Option<Arc<MemoryStream>> {
        self.streams().get(id).cloned()
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<MemoryStream>>> {
        lock(&self.inner.streams)
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every
/// critical section here is a single push, pop or copy).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub for MemoryHub {
    fn create(&self, new: NewStream) -> Box<dyn StreamWriter> {
        let id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let stream = Arc::new(MemoryStream::new(
            id.clone(),
            new.owner,
            self.inner.limits,
            new.detach_grace,
        ));
        self.streams().insert(id.clone(), stream.clone());
        self.inner.running.fetch_add(1, Ordering::Relaxed);
        Box::new(MemoryWriter {
            stream,
            hub: Arc::downgrade(&self.inner),
            next_seq: 1,
            finished: false,
            waking: Vec::new(),
            alone: None,
            registered: None,
        })
    }

    fn info(&self, stream_id: &str) -> Option<StreamInfo> {
        let stream = self.get(stream_id)?;
        let log = stream.log();
        Some(StreamInfo {
            owner: stream.owner.clone(),
            finished: log.finished,
            last_seq: log.last_seq(),
        })
    }

    fn attach(&self, stream_id: &str, after_seq: u64) -> Result<Subscription, HubError> {
        self.subscribe(stream_id, after_seq, true)
    }

    fn observe(&self, stream_id: &str, after_seq: u64) -> Result<Subscription, HubError> {
        self.subscribe(stream_id, after_seq, false)
    }

    fn events_after(
        &self,
        stream_id: &str,
        after: u64,
        max: usize,
        out: &mut Vec<Arc<Sequenced>>,
    ) -> Result<bool, HubError> {
        self.get(stream_id)
            .ok_or(HubError::NotFound)?
            .read_after(after, max, out, None)
    }

    fn cancel(&self, stream_id: &str) -> bool {
        self.get(stream_id)
            .map(|s| s.stop.set(StopReason::Cancelled))
            .is_some()
    }

    fn interrupt_all(&self) -> usize {
        let running: Vec<Arc<MemoryStream>> = self
            .streams()
            .values()
            .filter(|s| !s.log().finished)
            .cloned()
            .collect();
        for stream in &running {
            stream.stop.set(StopReason::Interrupted);
        }
        running.len()
    }

    fn running(&self) -> usize {
        self.inner.running.load(Ordering::Relaxed)
    }
}

/// One stream held in memory.
struct MemoryStream {
    /// Opaque and unguessable: holding it is what lets a token-less client attach.
    id: Arc<str>,
    /// The owner key of who started it; only they may attach or cancel (`None`:
    /// started without a token).
    owner: Option<String>,
    /// Every event still kept. A std mutex: critical sections are a push or a
    /// copy of `Arc`s, never an await.
    log: Mutex<ReplayLog>,
    /// How many subscriptions are attached; a stream nobody has watched for the
    /// detach grace is asked to stop (see [`StreamWriter::poll_stopped`]).
    attached: AtomicUsize,
    /// How long it may run with nobody attached.
    grace: Duration,
    /// Set to stop generation (client cancel, detach grace, shutdown).
    stop: StopSignal,
}

/// Why a stream must stop, once someone has said so: an atomic the generation
/// checks before each token without taking a lock, and the waker of the task
/// waiting on it.
#[derive(Default)]
struct StopSignal {
    /// 0 while running, else a [`StopReason`] code; the first reason wins.
    reason: AtomicU8,
    /// The generation's task.
    waker: AtomicWaker,
    /// How many times `waker` was taken to be woken, counted after each
    /// take: while it has not moved since the generation registered, its
    /// waker is still there, and a poll need not register it again.
    wakes: AtomicU32,
}

/// The waker a generation last registered with its [`StopSignal`], and the
/// signal's count of wakes when it did.
type Registered = Option<(u32, Waker)>;

impl StopSignal {
    fn code(reason: StopReason) -> u8 {
        match reason {
            StopReason::Cancelled => 1,
            StopReason::Detached => 2,
            StopReason::Interrupted => 3,
        }
    }

    fn get(&self) -> Option<StopReason> {
        match self.reason.load(Ordering::Acquire) {
            1 => Some(StopReason::Cancelled),
            2 => Some(StopReason::Detached),
            3 => Some(StopReason::Interrupted),
            _ => None,
        }
    }

    /// Asks the stream to stop for `reason` (unless it already was asked).
    fn set(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(
            0,
            Self::code(reason),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.wake();
    }

    /// Wakes the generation (it checks the reason, and whether it is alone).
    fn wake(&self) {
        let waker = self.waker.take();
        // After the take: a count the generation reads at its next poll
        // tells it its waker is gone.
        self.wakes.fetch_add(1, Ordering::Release);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ready with the reason once the stream is asked to stop; otherwise the
    /// task of `cx` is woken when it is (or when its last reader leaves).
    /// Registering an `AtomicWaker` costs two atomic read-modify-writes, on
    /// every token of a running reply: skipped while the same task's waker
    /// is still registered (`registered`: nothing took it since).
    fn poll(&self, cx: &mut Context<'_>, registered: &mut Registered) -> Poll<StopReason> {
        if let Some(reason) = self.get() {
            return Poll::Ready(reason);
        }
        // Read before registering: a take after this read counts past it.
        let wakes = self.wakes.load(Ordering::Acquire);
        if let Some((at, waker)) = registered
            && *at == wakes
            && waker.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        self.waker.register(cx.waker());
        *registered = Some((wakes, cx.waker().clone()));
        match self.get() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}

impl MemoryStream {
    fn new(id: Arc<str>, owner: Option<String>, limits: ReplayLimits, grace: Duration) -> Self {
        MemoryStream {
            log: Mutex::new(ReplayLog::new(id.clone(), limits)),
            id,
            owner,
            attached: AtomicUsize::new(0),
            grace,
            stop: StopSignal::default(),
        }
    }

    fn log(&self) -> MutexGuard<'_, ReplayLog> {
        lock(&self.log)
    }
}

impl StreamLog for MemoryStream {
    fn read_after(
        &self,
        after: u64,
        max: usize,
        out: &mut Vec<Arc<Sequenced>>,
        waker: Option<&Waker>,
    ) -> Result<bool, HubError> {
        self.log().read_after(after, max, out, waker)
    }

    fn detach(&self) {
        let before = self
            .attached
            .try_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        if before > 1 {
            return;
        }
        // The last reader of a finished stream is done with it: keep it
        // compact. A running one now starts its grace: its generation, which
        // polls the stop signal, is woken to arm the timer.
        let mut log = self.log();
        if log.finished {
            log.compact_all();
        } else {
            drop(log);
            self.stop.wake();
        }
    }
}

/// The writer of a [`MemoryStream`].
struct MemoryWriter {
    /// The stream written to.
    stream: Arc<MemoryStream>,
    /// The hub, told when the stream finishes (weak: a writer outliving its hub
    /// in a test must not keep it alive).
    hub: Weak<Inner>,
    /// The seq the next event gets.
    next_seq: u64,
    /// Whether the terminal event is out.
    finished: bool,
    /// The wakers of the last publish, woken outside the lock (kept to reuse
    /// its allocation).
    waking: Vec<Waker>,
    /// The detach grace's timer ([`StreamWriter::poll_stopped`]), while
    /// nobody is attached.
    alone: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The waker registered with the stream's stop signal.
    registered: Registered,
}

impl StreamWriter for MemoryWriter {
    fn id(&self) -> &Arc<str> {
        &self.stream.id
    }

    fn publish(&mut self, event: StreamEvent) -> u64 {
        if self.finished {
            return self.next_seq - 1;
        }
        let seq = self.next_seq;
        let terminal = event.is_terminal();
        let published = Arc::new(Sequenced::new(self.stream.id.clone(), seq, event));
        {
            let mut log = self.stream.log();
            log.push(published);
            std::mem::swap(&mut log.wakers, &mut self.waking);
        }
        for waker in self.waking.drain(..) {
            waker.wake();
        }
        self.next_seq += 1;
        self.finished = terminal;
        if terminal {
            let bytes = {
                let mut log = self.stream.log();
                // Nobody is reading it now: compact at once (otherwise the
                // last reader to leave does).
                if self.stream.attached.load(Ordering::Acquire) == 0 {
                    log.compact_all();
                }
                log.bytes()
            };
            if let Some(hub) = self.hub.upgrade() {
                hub.running.fetch_sub(1, Ordering::Relaxed);
                hub.retain(self.stream.id.clone(), RETAINED_OVERHEAD + bytes);
                expire_later(&hub);
            }
        }
        seq
    }

    /// Also stops the stream once nobody has been attached to it for its
    /// grace without interruption: the generation's own poll keeps the
    /// timer, armed only while nobody is attached (a reader leaving last
    /// wakes it), so a check costs an atomic load and a waker's
    /// registration, and no task watches each stream.
    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<StopReason> {
        let stream = &self.stream;
        if let Poll::Ready(reason) = stream.stop.poll(cx, &mut self.registered) {
            return Poll::Ready(reason);
        }
        // After the stop signal registered the waker: a reader leaving from
        // here on wakes this poll again.
        if stream.attached.load(Ordering::Acquire) > 0 {
            self.alone = None;
            return Poll::Pending;
        }
        let grace = stream.grace;
        let timer = self
            .alone
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(grace)));
        if timer.as_mut().poll(cx).is_ready() {
            stream.stop.set(StopReason::Detached);
            return stream.stop.poll(cx, &mut self.registered);
        }
        Poll::Pending
    }
}

impl Drop for MemoryWriter {
    /// A writer dropped without a terminal event (its task panicked or was
    /// aborted) still ends the stream, so no reader waits forever.
    fn drop(&mut self) {
        if !self.finished {
            self.publish(StreamEvent::Failed(Failure::Crashed));
        }
    }
}

impl Inner {
    /// Counts a stream that has just finished against the budget, dropping
    /// the oldest finished streams while the budget is exceeded.
    fn retain(&self, id: Arc<str>, bytes: usize) {
        let now = tokio::time::Instant::now();
        // Any retention is accepted: one past what an instant can hold is
        // "never" (30 years), as tokio's own sleep does.
        let until = now
            .checked_add(self.retention)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        let mut dropped = Vec::new();
        {
            let mut retained = lock(&self.retained);
            retained.order.push_back(Kept { id, bytes, until });
            retained.bytes += bytes;
            while retained.bytes > self.retained_budget && retained.order.len() > 1 {
                if let Some(oldest) = retained.order.pop_front() {
                    retained.bytes -= oldest.bytes;
                    dropped.push(oldest.id);
                }
            }
        }
        if !dropped.is_empty() {
            tracing::debug!(
                dropped = dropped.len(),
                "finished streams dropped before their retention ended: the budget is spent"
            );
            self.drop_streams(&dropped);
        }
    }

    /// Drops the finished streams whose retention window has passed (those
    /// the budget has not dropped already). They finished in order, so they
    /// are the oldest.
    fn expire(&self) {
        let now = tokio::time::Instant::now();
        let mut expired = Vec::new();
        {
            let mut retained = lock(&self.retained);
            while let Some(oldest) = retained.order.pop_front() {
                if oldest.until > now {
                    retained.order.push_front(oldest);
                    break;
                }
                retained.bytes -= oldest.bytes;
                expired.push(oldest.id);
            }
        }
        self.drop_streams(&expired);
    }

    fn drop_streams(&self, ids: &[Arc<str>]) {
        if ids.is_empty() {
            return;
        }
        let mut streams = lock(&self.streams);
        for id in ids {
            streams.remove(id);
        }
    }
}

/// Drops a finished stream once the retention window has passed.
fn expire_later(hub: &Arc<Inner>) {
    let retention = hub.retention;
    let hub = Arc::downgrade(hub);
    // Outside a runtime (unit tests of the writer) the stream simply stays.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            tokio::time::sleep(retention).await;
            if let Some(hub) = hub.upgrade() {
                hub.expire();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Resolves when the stream `writer` writes should stop, saying why.
    async fn stopped(writer: &mut dyn StreamWriter) -> StopReason {
        std::future::poll_fn(|cx| writer.poll_stopped(cx)).await
    }

    fn hub() -> MemoryHub {
        MemoryHub::new(Duration::from_secs(60), ReplayLimits::default())
    }

    fn create(hub: &MemoryHub) -> Box<dyn StreamWriter> {
        hub.create(NewStream {
            owner: None,
            detach_grace: Duration::from_secs(60),
        })
    }

    fn token(text: &str) -> StreamEvent {
        StreamEvent::Token(text.into())
    }

    fn end() -> StreamEvent {
        StreamEvent::Failed(Failure::Provider("end".into()))
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
        let mut writer = create(&hub);
        let id = writer.id().clone();
        for i in 0..5 {
            writer.publish(token(&i.to_string()));
        }
        writer.publish(end());
        for after in 0..=7 {
            let expected: Vec<u64> = (after + 1..=6).collect();
            assert_eq!(drain(hub.attach(&id, after).unwrap()).await, expected);
        }
    }

    #[tokio::test]
    async fn attach_after_the_largest_seq_reads_nothing_and_ends() {
        let hub = hub();
        let mut writer = create(&hub);
        let id = writer.id().clone();
        writer.publish(token("a"));
        writer.publish(end());
        assert!(drain(hub.attach(&id, u64::MAX).unwrap()).await.is_empty());
        let mut out = Vec::new();
        assert_eq!(
            hub.events_after(&id, u64::MAX, usize::MAX, &mut out),
            Ok(true)
        );
        assert!(out.is_empty());
        assert_eq!(hub.events_after(&id, u64::MAX - 1, 10, &mut out), Ok(true));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn concurrent_attach_while_writing_has_no_gap_or_duplicate() {
        let hub = hub();
        let mut writer = create(&hub);
        let id = writer.id().clone();
        let readers: Vec<_> = (0..8)
            .map(|i| {
                let hub = hub.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    // Attach at staggered points of the race.
                    for _ in 0..i {
                        tokio::task::yield_now().await;
                    }
                    drain(hub.attach(&id, 0).unwrap()).await
                })
            })
            .collect();
        let writer_task = tokio::spawn(async move {
            for i in 0..500 {
                writer.publish(token(&i.to_string()));
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            writer.publish(end());
        });
        writer_task.await.unwrap();
        let expected: Vec<u64> = (1..=501).collect();
        for reader in readers {
            assert_eq!(reader.await.unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn a_finished_stream_is_compacted_when_its_last_reader_leaves() {
        let hub = hub();
        let mut writer = create(&hub);
        let id = writer.id().clone();
        let reader = hub.attach(&id, 0).unwrap();
        for i in 0..100 {
            writer.publish(token(&i.to_string()));
        }
        writer.publish(end());
        let stream = hub.get(&id).unwrap();
        assert!(!stream.log().is_compact(), "a reader is still attached");
        assert_eq!(drain(reader).await.len(), 101);
        assert!(stream.log().is_compact(), "the last reader left");
        let mut out = Vec::new();
        hub.events_after(&id, 0, 1000, &mut out).unwrap();
        let texts: Vec<String> = out
            .iter()
            .filter_map(|e| match &e.event {
                StreamEvent::Token(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
        assert_eq!(
            drain(hub.attach(&id, 0).unwrap()).await,
            (1..=101).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_dropped_writer_ends_the_stream_as_crashed() {
        let hub = hub();
        let mut writer = create(&hub);
        let id = writer.id().clone();
        writer.publish(token("a"));
        let sub = hub.attach(&id, 0).unwrap();
        drop(writer);
        assert_eq!(drain(sub).await, vec![1, 2]);
        let mut out = Vec::new();
        assert_eq!(hub.events_after(&id, 1, 10, &mut out), Ok(true));
        assert_eq!(out[0].event, StreamEvent::Failed(Failure::Crashed));
        assert_eq!(hub.running(), 0);
    }

    #[tokio::test]
    async fn a_bounded_log_refuses_partial_replays() {
        let hub = MemoryHub::new(
            Duration::from_secs(60),
            ReplayLimits {
                max_events: 10,
                max_bytes: usize::MAX,
            },
        );
        let mut writer = create(&hub);
        let id = writer.id().clone();
        let mut slow = hub.attach(&id, 0).unwrap();
        for i in 0..25 {
            writer.publish(token(&i.to_string()));
        }
        writer.publish(end());
        // Events 1..=16 were dropped: the last 10 (17..=26) remain.
        assert_eq!(hub.attach(&id, 0).err(), Some(HubError::Expired(0)));
        assert_eq!(hub.attach(&id, 15).err(), Some(HubError::Expired(15)));
        assert_eq!(
            drain(hub.attach(&id, 16).unwrap()).await,
            (17..=26).collect::<Vec<_>>()
        );
        // A reader that fell behind is told, not handed a gap.
        assert!(matches!(slow.next_batch().await, Err(HubError::Expired(0))));
    }

    #[tokio::test]
    async fn the_byte_bound_keeps_at_least_the_terminal_event() {
        let hub = MemoryHub::new(
            Duration::from_secs(60),
            ReplayLimits {
                max_events: 1000,
                max_bytes: 10,
            },
        );
        let mut writer = create(&hub);
        let id = writer.id().clone();
        writer.publish(token("long enough to exceed"));
        writer.publish(end());
        assert_eq!(drain(hub.attach(&id, 1).unwrap()).await, vec![2]);
    }

    #[tokio::test(start_paused = true)]
    async fn finished_streams_expire_after_retention() {
        let hub = MemoryHub::new(Duration::from_secs(300), ReplayLimits::default());
        let mut writer = create(&hub);
        assert_eq!(hub.running(), 1);
        let id = writer.id().clone();
        writer.publish(end());
        assert!(hub.info(&id).is_some_and(|i| i.finished));
        assert_eq!(hub.running(), 0, "finished streams are not running");
        tokio::time::sleep(Duration::from_secs(299)).await;
        assert!(hub.info(&id).is_some(), "still inside retention");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(hub.info(&id).is_none(), "dropped after retention");
    }

    #[tokio::test]
    async fn any_retention_is_accepted() {
        let hub = MemoryHub::new(Duration::from_secs(u64::MAX), ReplayLimits::default());
        let mut writer = create(&hub);
        let id = writer.id().clone();
        writer.publish(end());
        assert!(hub.info(&id).is_some_and(|i| i.finished));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_budget_the_oldest_finished_streams_go_first() {
        let text = "x".repeat(4000);
        // Room for about three such streams.
        let budget = 3 * (RETAINED_OVERHEAD + 4000 + 4 * 128) + 100;
        let hub = MemoryHub::with_budget(Duration::from_secs(300), ReplayLimits::default(), budget);
        let mut ids = Vec::new();
        let mut readers = Vec::new();
        for i in 0..10 {
            let mut writer = create(&hub);
            let id = writer.id().clone();
            if i == 0 {
                // A reader already attached keeps reading a dropped stream.
                readers.push(hub.attach(&id, 0).unwrap());
            }
            writer.publish(token(&text));
            writer.publish(end());
            assert!(hub.retained_bytes() <= budget, "within the budget");
            ids.push(id);
        }
        let kept: Vec<bool> = ids.iter().map(|id| hub.info(id).is_some()).collect();
        assert_eq!(kept.iter().filter(|k| **k).count(), 3, "{kept:?}");
        assert!(kept[7] && kept[8] && kept[9], "the newest stay: {kept:?}");
        assert_eq!(hub.attach(&ids[0], 0).err(), Some(HubError::NotFound));
        assert_eq!(drain(readers.pop().unwrap()).await, vec![1, 2]);
        // A stream larger than the whole budget is still kept, alone.
        let mut writer = create(&hub);
        let big = writer.id().clone();
        writer.publish(token(&"y".repeat(budget)));
        writer.publish(end());
        assert!(hub.info(&big).is_some());
        assert_eq!(hub.len(), 1);
        // Retention still ends them, and the account with them.
        tokio::time::sleep(Duration::from_secs(301)).await;
        assert!(hub.is_empty());
        assert_eq!(hub.retained_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_nobody_watches_is_asked_to_stop_after_the_grace() {
        let hub = hub();
        let mut writer = hub.create(NewStream {
            owner: None,
            detach_grace: Duration::from_secs(60),
        });
        let id = writer.id().clone();
        let sub = hub.attach(&id, 0).unwrap();
        // The writer goes with the watcher, and ends with it.
        let watcher = tokio::spawn(async move { stopped(&mut *writer).await });
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!watcher.is_finished(), "attached: no grace running");
        drop(sub);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let again = hub.attach(&id, 0).unwrap();
        tokio::time::sleep(Duration::from_secs(45)).await;
        assert!(!watcher.is_finished(), "re-attaching restarted the grace");
        drop(again);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(watcher.await.unwrap(), StopReason::Detached);
    }

    #[tokio::test(start_paused = true)]
    async fn an_observer_does_not_keep_a_stream_alive() {
        let hub = hub();
        let mut writer = create(&hub);
        let mut observer = hub.observe(writer.id(), u64::MAX).unwrap();
        assert_eq!(stopped(&mut *writer).await, StopReason::Detached);
        drop(writer);
        assert!(
            matches!(observer.next_batch().await, Ok(None)),
            "it saw the end"
        );
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_generation_polled_again_and_again_is_still_woken_by_each_stop_or_leave() {
        let hub = hub();
        let mut writer = create(&hub);
        let id = writer.id().clone();
        let reader = hub.attach(&id, 0).unwrap();
        let count = Arc::new(Counting::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || count.0.load(Ordering::SeqCst);
        // Polled once per token: registered once, then nothing to do.
        for _ in 0..5 {
            assert!(writer.poll_stopped(&mut cx).is_pending());
        }
        assert_eq!(woken(), 0);
        // Its last reader leaving wakes it (to start the grace), which
        // takes its waker: the next poll must register it again.
        drop(reader);
        assert_eq!(woken(), 1);
        let again = hub.attach(&id, 0).unwrap();
        for _ in 0..5 {
            assert!(writer.poll_stopped(&mut cx).is_pending());
        }
        drop(again);
        assert_eq!(
            woken(),
            2,
            "the waker was registered again after the first wake"
        );
        let _watching = hub.attach(&id, 0).unwrap();
        assert!(writer.poll_stopped(&mut cx).is_pending());
        // Another task polling it (a moved future) registers its own waker.
        let other = Arc::new(Counting::default());
        let other_waker = Waker::from(other.clone());
        assert!(
            writer
                .poll_stopped(&mut Context::from_waker(&other_waker))
                .is_pending()
        );
        assert!(hub.cancel(&id));
        assert_eq!(other.0.load(Ordering::SeqCst), 1, "the last waker is woken");
        assert_eq!(woken(), 2);
        assert_eq!(
            writer.poll_stopped(&mut cx),
            Poll::Ready(StopReason::Cancelled)
        );
    }

    #[tokio::test]
    async fn cancel_and_interrupt_say_why_the_stream_stops() {
        let hub = hub();
        let mut cancelled = create(&hub);
        let mut interrupted = create(&hub);
        let _readers = (
            hub.attach(cancelled.id(), 0).unwrap(),
            hub.attach(interrupted.id(), 0).unwrap(),
        );
        // Waiting before they are told: the signal wakes the poll.
        let id = cancelled.id().clone();
        let waiting = tokio::spawn(async move {
            let reason = stopped(&mut *cancelled).await;
            (reason, cancelled)
        });
        tokio::task::yield_now().await;
        assert!(hub.cancel(&id));
        assert!(!hub.cancel("no-such-stream"));
        let (reason, _cancelled) = waiting.await.unwrap();
        assert_eq!(reason, StopReason::Cancelled);
        assert_eq!(hub.interrupt_all(), 2, "both are still running");
        assert_eq!(stopped(&mut *interrupted).await, StopReason::Interrupted);
    }

    #[tokio::test]
    async fn one_encoding_per_slot_however_many_readers() {
        let hub = hub();
        let mut writer = create(&hub);
        let id = writer.id().clone();
        // A live reader: the newest events stay whole (and shared) while it reads.
        let _live = hub.attach(&id, 0).unwrap();
        writer.publish(token("shared"));
        writer.publish(end());
        let encodings = AtomicUsize::new(0);
        for _ in 0..100 {
            let mut out = Vec::new();
            hub.events_after(&id, 0, 10, &mut out).unwrap();
            for event in &out {
                for slot in [0, 2] {
                    let bytes = event.encoded(slot, |e| {
                        encodings.fetch_add(1, Ordering::Relaxed);
                        Bytes::from(format!("{slot}:{}", e.seq))
                    });
                    assert_eq!(bytes, format!("{slot}:{}", event.seq));
                }
            }
        }
        assert_eq!(
            encodings.load(Ordering::Relaxed),
            2 * 2,
            "2 events × 2 slots"
        );
    }

    #[test]
    fn whichever_slot_asks_first_is_kept_inline_and_the_others_still_once() {
        let event = Sequenced::new("s".into(), 1, token("t"));
        let encodings = AtomicUsize::new(0);
        let encode = |slot: usize| {
            event.encoded(slot, |_| {
                encodings.fetch_add(1, Ordering::Relaxed);
                Bytes::from(format!("{slot}"))
            })
        };
        // A stream read only in another dialect than the native one.
        assert_eq!(encode(1), "1");
        assert_eq!(encode(1), "1");
        assert!(
            event.others.get().is_none(),
            "one dialect: nothing allocated"
        );
        // Then a native reader and a third dialect: each encoded once.
        for _ in 0..3 {
            assert_eq!(encode(0), "0");
            assert_eq!(encode(3), "3");
            assert_eq!(encode(1), "1");
        }
        assert_eq!(encodings.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn owned_streams_are_private() {
        let info = |owner: Option<&str>| StreamInfo {
            owner: owner.map(str::to_owned),
            finished: false,
            last_seq: 0,
        };
        assert!(info(Some("alice")).is_accessible_by(Some("alice")));
        assert!(!info(Some("alice")).is_accessible_by(Some("bob")));
        assert!(!info(Some("alice")).is_accessible_by(None));
        assert!(info(None).is_accessible_by(None));
        assert!(info(None).is_accessible_by(Some("bob")));
    }
}
