//! The hub: where streams live. A stream is owned here, not by any connection;
//! connections attach to it after a seq and detach freely.
//!
//! [`Hub`] is the seam: its callers see streams only by id, through
//! [`StreamWriter`] (the one producer), [`Subscription`] (a reader from a
//! cursor) and [`StreamInfo`]. It carries typed [`StreamEvent`]s with their seq;
//! each event keeps a small cache of its encodings so that a dialect encodes it
//! once however many connections follow it ([`Sequenced::encoded`]).
//!
//! - [`memory`]: the in-process implementation (bounded replay logs, old
//!   events compacted to their text).
//!
//! Nothing here knows a transport or a dialect: an encoding is opaque bytes in
//! a numbered slot.

mod log;
pub mod memory;

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use crate::events::StreamEvent;

pub use memory::MemoryHub;

/// How many encodings one event can cache: one per dialect.
pub const ENCODING_SLOTS: usize = 4;

/// One published event: its stream, its position and the event itself, with its
/// encodings cached beside it. Shared (`Arc`) by the log and every reader.
#[derive(Debug)]
pub struct Sequenced {
    /// The stream it belongs to.
    pub stream_id: Arc<str>,
    /// Its seq (1, 2, 3 … per stream).
    pub seq: u64,
    /// What happened.
    pub event: StreamEvent,
    /// Its encodings, made on first use. The first dialect to ask keeps its
    /// encoding inline, with its slot (a stream is almost always read in one
    /// dialect, whichever it is); the others are allocated only if a
    /// connection speaking another dialect reads the same event.
    first: OnceLock<(usize, Bytes)>,
    /// Every slot but the inline one's, by slot.
    others: OnceLock<Box<[OnceLock<Bytes>; ENCODING_SLOTS]>>,
}

impl Sequenced {
    /// Whether this is a token.
    pub fn is_token(&self) -> bool {
        matches!(self.event, StreamEvent::Token(_))
    }

    /// This token's text joined with the tokens right after it in `events`
    /// (taken from it), and the last one's seq: how every route sends a
    /// behind reader's run of tokens as one.
    pub fn join_tokens<E: AsRef<Sequenced>>(
        token: &str,
        seq: u64,
        events: &mut std::iter::Peekable<impl Iterator<Item = E>>,
    ) -> (String, u64) {
        let mut text = token.to_owned();
        let mut last = seq;
        while let Some(next) = events.next_if(|next| next.as_ref().is_token()) {
            let next = next.as_ref();
            if let StreamEvent::Token(more) = &next.event {
                text.push_str(more);
            }
            last = next.seq;
        }
        (text, last)
    }

    /// A published event.
    pub fn new(stream_id: Arc<str>, seq: u64, event: StreamEvent) -> Self {
        Sequenced {
            stream_id,
            seq,
            event,
            first: OnceLock::new(),
            others: OnceLock::new(),
        }
    }

    /// The event's encoding in `slot`, made by `encode` the first time it is
    /// asked for and shared afterwards: one encoding per slot, however many
    /// readers ask.
    ///
    /// # Panics
    /// If `slot` is not below [`ENCODING_SLOTS`] (a dialect's fixed constant)
    /// and another slot's encoding is kept inline.
    pub fn encoded(&self, slot: usize, encode: impl Fn(&Sequenced) -> Bytes) -> Bytes {
        let (owner, bytes) = self.first.get_or_init(|| (slot, encode(self)));
        if *owner == slot {
            return bytes.clone();
        }
        self.others
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())))[slot]
            .get_or_init(|| encode(self))
            .clone()
    }

    /// Drops the cached encodings (a finished stream kept for a late reader,
    /// who encodes again).
    pub(super) fn forget_encodings(&mut self) {
        self.first = OnceLock::new();
        self.others = OnceLock::new();
    }
}

/// How much of a stream's history is kept for replay.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLimits {
    /// Most events kept.
    pub max_events: usize,
    /// Most bytes of event payload kept (token text counts; fixed overhead per
    /// event is estimated).
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

/// Why a hub could not do what was asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    /// No such stream, or its retention window has passed.
    #[error("no such stream")]
    NotFound,
    /// The events after the requested seq are no longer all kept; a partial
    /// replay is never presented as complete.
    #[error("the stream's events after seq {0} are no longer available")]
    Expired(u64),
}

/// What a stream is, without its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The owner key of who started it (`None`: started without a token).
    pub owner: Option<String>,
    /// Whether its terminal event is out.
    pub finished: bool,
    /// Its last seq (0 before the first event).
    pub last_seq: u64,
}

impl StreamInfo {
    /// Whether `owner` may attach to or cancel the stream: its owner, or anyone
    /// for a stream started without a token (its unguessable id is the key).
    pub fn is_accessible_by(&self, owner: Option<&str>) -> bool {
        match &self.owner {
            None => true,
            Some(mine) => owner == Some(mine.as_str()),
        }
    }
}

/// What a new stream needs.
#[derive(Debug, Clone)]
pub struct NewStream {
    /// The owner key of who starts it (`None`: no token).
    pub owner: Option<String>,
    /// How long it may run with nobody attached before it is asked to stop.
    pub detach_grace: Duration,
}

/// Why a stream is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A client cancelled it.
    Cancelled,
    /// Nobody was attached for the detach grace.
    Detached,
    /// The server is shutting down.
    Interrupted,
}

/// The registry of streams. Implementations: [`MemoryHub`]; a shared one (Redis
/// Streams) can implement the same calls without changing their callers.
pub trait Hub: Send + Sync + 'static {
    /// Registers a new stream and returns its only writer.
    fn create(&self, stream: NewStream) -> Box<dyn StreamWriter>;

    /// What the stream is, if it is running or still retained.
    fn info(&self, stream_id: &str) -> Option<StreamInfo>;

    /// A reader of every event with seq > `after_seq`, then the live ones.
    fn attach(&self, stream_id: &str, after_seq: u64) -> Result<Subscription, HubError>;

    /// Like [`Hub::attach`], but the reader does not count as attached: it does
    /// not keep a stream alive past its detach grace (for observers that are not
    /// clients, such as tests waiting for an end).
    fn observe(&self, stream_id: &str, after_seq: u64) -> Result<Subscription, HubError>;

    /// Events with seq > `after`, at most `max`, appended to `out`; whether the
    /// stream has finished.
    fn events_after(
        &self,
        stream_id: &str,
        after: u64,
        max: usize,
        out: &mut Vec<Arc<Sequenced>>,
    ) -> Result<bool, HubError>;

    /// Asks a running stream to stop (it ends as cancelled). Whether it exists.
    fn cancel(&self, stream_id: &str) -> bool;

    /// Stops every running stream because the server is shutting down (each ends
    /// as interrupted, keeping its text). Returns how many.
    fn interrupt_all(&self) -> usize;

    /// How many streams are generating.
    fn running(&self) -> usize;
}

/// The only producer of one stream: assigns seqs and publishes. Dropping it
/// without a terminal event ends the stream as [`crate::events::Failure::Crashed`].
pub trait StreamWriter: Send {
    /// The stream's id.
    fn id(&self) -> &Arc<str>;

    /// Publishes the next event; returns its seq. After the terminal event,
    /// nothing more is published.
    fn publish(&mut self, event: StreamEvent) -> u64;

    /// Ready when the stream should stop, saying why (cancelled, interrupted,
    /// or nobody attached for the detach grace). Polled by the generation
    /// before every token, so it is a poll of the writer itself: a future of
    /// its own was one more allocation to fetch from memory per token.
    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<StopReason>;
}

/// The reading side a hub implementation gives its subscriptions.
pub trait StreamLog: Send + Sync {
    /// Appends events with seq > `after` (at most `max`) to `out`; whether the
    /// stream has finished. If nothing was appended and the stream has not
    /// finished, `waker` (if given) is woken by the next publish: registering
    /// and reading are one step, so no event can slip in between.
    fn read_after(
        &self,
        after: u64,
        max: usize,
        out: &mut Vec<Arc<Sequenced>>,
        waker: Option<&Waker>,
    ) -> Result<bool, HubError>;

    /// The subscription reading this log is gone.
    fn detach(&self);
}

/// The most events one batch carries by default (bounds the copy made under a
/// log's lock).
pub const MAX_BATCH: usize = 256;

/// Reads one stream from a cursor. Counts as attached while it exists.
///
/// A subscription is polled by whoever delivers its events (a connection's own
/// task): a publish wakes that task directly, with no task of its own and no
/// channel in between.
pub struct Subscription {
    /// The stream read.
    stream_id: Arc<str>,
    /// The last seq delivered.
    cursor: u64,
    /// Most events per batch.
    batch: usize,
    /// Where the events are.
    log: Arc<dyn StreamLog>,
    /// Whether the log counts this reader as attached (and must be told when
    /// it goes).
    attached: bool,
}

impl Subscription {
    /// A subscription reading `log` after `cursor` (for hub implementations:
    /// with `attached`, `log` has already counted it and is told when it goes).
    pub fn new(stream_id: Arc<str>, cursor: u64, log: Arc<dyn StreamLog>, attached: bool) -> Self {
        Subscription {
            stream_id,
            cursor,
            batch: MAX_BATCH,
            log,
            attached,
        }
    }

    /// Reads at most `max` events per batch from now on (at least 1).
    pub fn set_batch(&mut self, max: usize) {
        self.batch = max.max(1);
    }

    /// The stream read.
    pub fn stream_id(&self) -> &Arc<str> {
        &self.stream_id
    }

    /// The last seq delivered.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Appends the next events in order to `out`: `Ready(Ok(true))` if there
    /// were some, `Ready(Ok(false))` once the terminal event has been
    /// delivered, `Ready(Err(Expired))` if this reader fell so far behind that
    /// the events it needs were dropped, and `Pending` (the task is woken by
    /// the next publish) if there is nothing new yet.
    pub fn poll_next_into(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<Arc<Sequenced>>,
    ) -> Poll<Result<bool, HubError>> {
        let before = out.len();
        let finished = self
            .log
            .read_after(self.cursor, self.batch, out, Some(cx.waker()))?;
        if let Some(last) = out[before..].last() {
            self.cursor = last.seq;
            return Poll::Ready(Ok(true));
        }
        if finished {
            return Poll::Ready(Ok(false));
        }
        Poll::Pending
    }

    /// Appends the next events in order to `out`, waiting for at least one
    /// (see [`Subscription::poll_next_into`]).
    pub async fn next_into(&mut self, out: &mut Vec<Arc<Sequenced>>) -> Result<bool, HubError> {
        std::future::poll_fn(|cx| self.poll_next_into(cx, out)).await
    }

    /// The next events in order (see [`Subscription::next_into`]); `None` at the end.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Arc<Sequenced>>>, HubError> {
        let mut out = Vec::new();
        Ok(self.next_into(&mut out).await?.then_some(out))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.attached {
            self.log.detach();
        }
    }
}
