//! [`ReplayLog`]: one stream's bounded history, compact where it is old.
//!
//! Live readers read the newest events, so those are kept whole
//! ([`Sequenced`], shared by `Arc` with their cached encodings: one encoding per
//! dialect however many readers). Older events are only read by a client
//! resuming from far back, so their tokens are kept as text in one buffer
//! (four bytes of bookkeeping per token instead of an event, its `Arc`, its
//! `String` and its encodings) and rebuilt as events when such a reader asks.
//! A finished stream is compacted whole once its last reader has left
//! ([`ReplayLog::compact_all`]), its few other events without their cached
//! encodings, so a reply kept for replay costs little more than its text.
//!
//! The log is bounded (events and bytes). When old events are dropped, a reader
//! that needs them gets [`HubError::Expired`]: recovery is all or nothing, never
//! a partial replay presented as complete.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Waker;

use super::{HubError, ReplayLimits, Sequenced};
use crate::events::{Failure, StreamEvent};

/// Newest events kept whole while a stream runs: a reader this close to the
/// head (at 20 ms per token, about half a second) shares their encodings.
pub(super) const RECENT: usize = 32;

/// Bytes a whole event costs beyond its text (the event, its `Arc`, its cached
/// encoding): an estimate that keeps the byte bound honest for the many small
/// token events.
const EVENT_OVERHEAD: usize = 128;

/// Bytes a compacted token costs beyond its text.
const COMPACT_OVERHEAD: usize = std::mem::size_of::<u32>();

/// Marks an old event kept whole (in `wholes`) rather than as text.
const WHOLE: u32 = 1 << 31;

/// Most bytes of compacted text (offsets keep the high bit for [`WHOLE`]);
/// a token past it is kept whole.
const MAX_TEXT: usize = (WHOLE - 1) as usize;

/// Most wakers one stream holds between two publishes. Past it, every waiting
/// reader is woken early and registers again, so readers that come and go
/// without a publish (a paused provider, clients resuming again and again)
/// cannot grow the list.
const MAX_WAKERS: usize = 64;

/// One stream's history.
pub(super) struct ReplayLog {
    /// The stream, for the events rebuilt from old ones.
    stream_id: Arc<str>,
    /// The seq of the oldest event kept; grows when old events are dropped.
    first_seq: u64,
    /// The oldest events, compacted, from `first_seq`: for each, where its
    /// text ends in `text` (it starts where the one before ends, the first
    /// at `dead`), with [`WHOLE`] set for an event kept whole in `wholes`
    /// (which has no text there).
    old: VecDeque<u32>,
    /// The old events kept whole, oldest first (there are few: the start,
    /// progress, the end).
    wholes: VecDeque<Arc<Sequenced>>,
    /// The text of the compacted tokens, back to back.
    text: String,
    /// Bytes at the start of `text` whose tokens were dropped: where the
    /// oldest event's text starts.
    dead: usize,
    /// The newest events, whole, after `old`.
    recent: VecDeque<Arc<Sequenced>>,
    /// How many of the newest events stay whole.
    keep_whole: usize,
    /// Estimated bytes held.
    bytes: usize,
    /// Bounds on events and bytes.
    limits: ReplayLimits,
    /// Whether the terminal event has been published.
    pub(super) finished: bool,
    /// Tasks of readers that found nothing new: woken by the next publish.
    pub(super) wakers: Vec<Waker>,
}

/// Estimated bytes a whole event holds.
fn whole_cost(event: &StreamEvent) -> usize {
    EVENT_OVERHEAD
        + match event {
            StreamEvent::Token(text) => text.len(),
            StreamEvent::Completed { response, .. } => response.len(),
            StreamEvent::Failed(Failure::Provider(text) | Failure::RateLimited(text)) => text.len(),
            _ => 0,
        }
}

impl ReplayLog {
    /// An empty log of stream `stream_id`.
    pub(super) fn new(stream_id: Arc<str>, limits: ReplayLimits) -> Self {
        ReplayLog {
            stream_id,
            first_seq: 1,
            old: VecDeque::new(),
            wholes: VecDeque::new(),
            text: String::new(),
            dead: 0,
            recent: VecDeque::new(),
            keep_whole: RECENT,
            bytes: 0,
            limits,
            finished: false,
            wakers: Vec::new(),
        }
    }

    /// The seq of the oldest event kept.
    pub(super) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// How many events are kept.
    fn len(&self) -> usize {
        self.old.len() + self.recent.len()
    }

    /// The seq of the newest event (0 before the first).
    pub(super) fn last_seq(&self) -> u64 {
        (self.first_seq - 1) + self.len() as u64
    }

    /// Whether every event is compacted.
    #[cfg(test)]
    pub(super) fn is_compact(&self) -> bool {
        self.recent.is_empty()
    }

    /// Estimated bytes held (the byte bound, and the hub's budget for
    /// finished streams).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends the next event, compacting and dropping the oldest ones as the
    /// bounds require (the newest event always stays: a terminal event is
    /// always replayable).
    pub(super) fn push(&mut self, event: Arc<Sequenced>) {
        self.finished = event.event.is_terminal();
        self.bytes += whole_cost(&event.event);
        self.recent.push_back(event);
        while self.recent.len() > self.keep_whole {
            self.compact_oldest();
        }
        while self.len() > 1
            && (self.len() > self.limits.max_events || self.bytes > self.limits.max_bytes)
        {
            self.drop_oldest();
        }
    }

    /// Compacts every event: the stream is finished and its live readers are
    /// done (one still reading gets rebuilt events, just as exact).
    pub(super) fn compact_all(&mut self) {
        self.keep_whole = 0;
        while !self.recent.is_empty() {
            self.compact_oldest();
        }
        // Nobody is reading along any more: a late reader encodes again.
        for event in &mut self.wholes {
            if let Some(event) = Arc::get_mut(event) {
                event.forget_encodings();
            }
        }
        self.old.shrink_to_fit();
        self.wholes.shrink_to_fit();
        self.text.shrink_to_fit();
        self.recent.shrink_to_fit();
    }

    /// Moves the oldest whole event to the compacted part.
    fn compact_oldest(&mut self) {
        let Some(event) = self.recent.pop_front() else {
            return;
        };
        match &event.event {
            // Past `MAX_TEXT` of text (2 GiB) a token is kept whole rather
            // than overflow the offsets.
            StreamEvent::Token(token) if self.text.len() + token.len() <= MAX_TEXT => {
                self.text.push_str(token);
                self.bytes = self.bytes - whole_cost(&event.event) + COMPACT_OVERHEAD + token.len();
                self.old.push_back(self.text.len() as u32);
            }
            _ => {
                self.old.push_back(self.text.len() as u32 | WHOLE);
                self.wholes.push_back(event);
            }
        }
    }

    /// Drops the oldest event.
    fn drop_oldest(&mut self) {
        if let Some(end) = self.old.pop_front() {
            if end & WHOLE == 0 {
                let len = end as usize - self.dead;
                self.bytes -= COMPACT_OVERHEAD + len;
            } else if let Some(event) = self.wholes.pop_front() {
                self.bytes -= whole_cost(&event.event);
            }
            self.dead = (end & !WHOLE) as usize;
            self.reclaim_text();
        } else if let Some(event) = self.recent.pop_front() {
            self.bytes -= whole_cost(&event.event);
        } else {
            return;
        }
        self.first_seq += 1;
    }

    /// Gives back the text of dropped tokens once it is half the buffer
    /// (amortized: each byte moves at most once per halving).
    fn reclaim_text(&mut self) {
        if self.dead == 0 || self.dead < self.text.len() / 2 {
            return;
        }
        let dead = self.dead;
        self.text.drain(..dead);
        // `dead` is at most the end of every old event: no offset underflows.
        let shift = dead as u32;
        for end in &mut self.old {
            *end -= shift;
        }
        self.dead = 0;
    }

    /// The event at `index` (0 is `first_seq`).
    fn get(&self, index: usize) -> Option<Arc<Sequenced>> {
        let Some(&end) = self.old.get(index) else {
            return self.recent.get(index - self.old.len()).cloned();
        };
        let seq = self.first_seq + index as u64;
        if end & WHOLE != 0 {
            let at = self.wholes.binary_search_by_key(&seq, |e| e.seq).ok()?;
            return self.wholes.get(at).cloned();
        }
        let start = match index {
            0 => self.dead,
            _ => (self.old[index - 1] & !WHOLE) as usize,
        };
        let text = self.text.get(start..end as usize)?;
        Some(Arc::new(Sequenced::new(
            self.stream_id.clone(),
            seq,
            StreamEvent::Token(text.to_owned()),
        )))
    }

    /// Appends events with seq > `after` (at most `max`) to `out`; whether the
    /// stream has finished. If nothing was appended and the stream has not
    /// finished, `waker` is woken by the next publish.
    pub(super) fn read_after(
        &mut self,
        after: u64,
        max: usize,
        out: &mut Vec<Arc<Sequenced>>,
        waker: Option<&Waker>,
    ) -> Result<bool, HubError> {
        if after.saturating_add(1) < self.first_seq {
            return Err(HubError::Expired(after));
        }
        // Clients choose `after`: no arithmetic on it may overflow. Past the
        // end (or at u64::MAX) there is simply nothing to read.
        let start = after
            .checked_add(1)
            .and_then(|next| next.checked_sub(self.first_seq))
            .and_then(|offset| usize::try_from(offset).ok())
            .unwrap_or(usize::MAX)
            .min(self.len());
        let end = start.saturating_add(max).min(self.len());
        if start < self.old.len() {
            out.extend((start..end).filter_map(|index| self.get(index)));
        } else {
            let from = start - self.old.len();
            out.extend(self.recent.range(from..end - self.old.len()).cloned());
        }
        if start == end
            && !self.finished
            && let Some(waker) = waker
        {
            self.wait(waker);
        }
        Ok(self.finished)
    }

    /// Wakes `waker` at the next publish.
    fn wait(&mut self, waker: &Waker) {
        if self.wakers.iter().any(|w| w.will_wake(waker)) {
            return;
        }
        if self.wakers.len() >= MAX_WAKERS {
            for waker in self.wakers.drain(..) {
                waker.wake();
            }
        }
        self.wakers.push(waker.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_events: usize, max_bytes: usize) -> ReplayLimits {
        ReplayLimits {
            max_events,
            max_bytes,
        }
    }

    fn log_with(limits: ReplayLimits, events: &[StreamEvent]) -> ReplayLog {
        let mut log = ReplayLog::new("s".into(), limits);
        for (i, event) in events.iter().enumerate() {
            log.push(Arc::new(Sequenced::new(
                "s".into(),
                i as u64 + 1,
                event.clone(),
            )));
        }
        log
    }

    fn reply(tokens: usize) -> Vec<StreamEvent> {
        let mut events = vec![StreamEvent::Progress(rill_protocol::ProgressStep::Starting)];
        events.extend((0..tokens).map(|i| StreamEvent::Token(format!(" w{i}"))));
        events.push(StreamEvent::Failed(Failure::Provider("end".into())));
        events
    }

    fn read(log: &mut ReplayLog, after: u64, max: usize) -> Vec<(u64, StreamEvent)> {
        let mut out = Vec::new();
        log.read_after(after, max, &mut out, None).unwrap();
        out.iter().map(|e| (e.seq, e.event.clone())).collect()
    }

    fn expected(events: &[StreamEvent], after: usize, max: usize) -> Vec<(u64, StreamEvent)> {
        events
            .iter()
            .enumerate()
            .skip(after)
            .take(max)
            .map(|(i, e)| (i as u64 + 1, e.clone()))
            .collect()
    }

    #[test]
    fn every_read_is_exact_across_the_compacted_and_whole_parts() {
        let events = reply(100);
        let mut log = log_with(ReplayLimits::default(), &events);
        assert_eq!(log.old.len(), events.len() - RECENT, "old events compacted");
        for after in 0..=events.len() + 1 {
            for max in [1, 7, 40, 1000] {
                assert_eq!(
                    read(&mut log, after as u64, max),
                    expected(&events, after, max),
                    "after {after}, max {max}"
                );
            }
        }
        // Live readers encoded every event they read.
        let mut out = Vec::new();
        log.read_after(0, usize::MAX, &mut out, None).unwrap();
        for event in out.drain(..) {
            event.encoded(0, |_| bytes::Bytes::from_static(b"frame"));
        }
        assert!(log.wholes.iter().all(|e| e.first.get().is_some()));
        log.compact_all();
        assert!(log.recent.is_empty());
        assert!(
            log.wholes.iter().all(|e| e.first.get().is_none()),
            "a compacted stream keeps no encodings"
        );
        assert_eq!(
            read(&mut log, 0, usize::MAX),
            expected(&events, 0, usize::MAX)
        );
        assert_eq!(read(&mut log, u64::MAX, 10), vec![]);
    }

    #[test]
    fn a_compacted_reply_costs_little_more_than_its_text() {
        let events = reply(200);
        let mut log = log_with(ReplayLimits::default(), &events);
        let text: usize = events
            .iter()
            .map(|e| match e {
                StreamEvent::Token(t) => t.len(),
                _ => 0,
            })
            .sum();
        log.compact_all();
        assert!(
            log.bytes() < text + 200 * COMPACT_OVERHEAD + 4 * EVENT_OVERHEAD,
            "{} bytes for {text} bytes of text",
            log.bytes()
        );
    }

    #[test]
    fn bounds_drop_the_oldest_events_and_refuse_partial_replays() {
        let events = reply(200);
        let mut log = log_with(limits(50, usize::MAX), &events);
        let first = events.len() as u64 - 49;
        assert_eq!(log.first_seq(), first);
        assert_eq!(log.last_seq(), events.len() as u64);
        let mut out = Vec::new();
        assert_eq!(
            log.read_after(first - 2, 10, &mut out, None),
            Err(HubError::Expired(first - 2))
        );
        assert_eq!(
            read(&mut log, first - 1, usize::MAX),
            expected(&events, first as usize - 1, usize::MAX)
        );
    }

    #[test]
    fn the_byte_bound_reclaims_dropped_text_and_keeps_reads_exact() {
        let events: Vec<StreamEvent> = (0..5000)
            .map(|i| StreamEvent::Token(format!("token-{i:05} ")))
            .collect();
        let mut log = log_with(limits(usize::MAX, 64 * 1024), &events);
        assert!(log.bytes() <= 64 * 1024);
        assert!(
            log.text.len() <= 2 * 64 * 1024,
            "dropped text is given back"
        );
        let first = log.first_seq();
        assert_eq!(
            read(&mut log, first - 1, usize::MAX),
            expected(&events, first as usize - 1, usize::MAX)
        );
    }

    #[test]
    fn the_newest_event_stays_whatever_the_bounds() {
        let events = reply(3);
        let last = events.len() as u64;
        let mut log = log_with(limits(1, 1), &events);
        assert_eq!(log.first_seq(), last);
        assert_eq!(
            read(&mut log, last - 1, 10),
            expected(&events, events.len() - 1, 10)
        );
    }

    /// A waker that counts its wakes.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn waiting_readers_are_woken_once_and_cannot_grow_the_list() {
        let mut log = ReplayLog::new("s".into(), ReplayLimits::default());
        let counters: Vec<Arc<Counting>> = (0..100)
            .map(|_| Arc::new(Counting(Default::default())))
            .collect();
        for counter in &counters {
            let waker = Waker::from(counter.clone());
            let mut out = Vec::new();
            // The same reader waiting twice is registered once.
            log.read_after(0, 10, &mut out, Some(&waker)).unwrap();
            log.read_after(0, 10, &mut out, Some(&waker)).unwrap();
            assert!(out.is_empty());
        }
        assert!(log.wakers.len() <= MAX_WAKERS, "bounded");
        let woken_early = counters
            .iter()
            .filter(|c| c.0.load(std::sync::atomic::Ordering::Relaxed) > 0)
            .count();
        assert_eq!(woken_early + log.wakers.len(), 100, "nobody forgotten");
        // A publish wakes every reader still waiting (the memory hub takes
        // them from the log and wakes them outside its lock).
        for waker in log.wakers.drain(..) {
            waker.wake();
        }
        assert!(
            counters
                .iter()
                .all(|c| c.0.load(std::sync::atomic::Ordering::Relaxed) == 1),
            "each woken exactly once"
        );
    }
}
