//! The hub: the registry of streams. A stream is owned here, not by any connection;
//! connections attach to it after a seq and detach freely.
//!
//! - [`stream`]: one stream, its replay log, its single writer and its subscriptions.

pub mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use stream::{AttachError, Published, ReplayLimits, Stream, StreamWriter, Subscription};

/// The registry of live and recently finished streams. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    /// Every stream that is running or still inside its retention window.
    /// A std mutex: lookups and inserts are short and never held across an await.
    streams: Mutex<HashMap<Arc<str>, Arc<Stream>>>,
    /// How long a finished stream stays replayable before it is dropped.
    retention: Duration,
    /// How much history each stream keeps for replay.
    limits: ReplayLimits,
    /// Streams still generating: incremented at create, decremented by the
    /// terminal event (which every stream gets, even if its writer panics).
    running: AtomicUsize,
}

impl Hub {
    /// An empty hub whose finished streams stay replayable for `retention`, each
    /// keeping at most `limits` of history.
    pub fn new(retention: Duration, limits: ReplayLimits) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                streams: Mutex::new(HashMap::new()),
                retention,
                limits,
                running: AtomicUsize::new(0),
            }),
        }
    }

    /// Registers a new stream owned by `owner` and returns it with its only writer.
    pub fn create(&self, owner: Option<String>) -> (Arc<Stream>, StreamWriter) {
        let id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let stream = Arc::new(Stream::new(id.clone(), owner, self.inner.limits));
        self.lock().insert(id, stream.clone());
        self.inner.running.fetch_add(1, Ordering::Relaxed);
        let hub = self.clone();
        let writer = StreamWriter::new(
            stream.clone(),
            Box::new(move |id: Arc<str>| {
                hub.inner.running.fetch_sub(1, Ordering::Relaxed);
                hub.expire_later(id);
            }),
        );
        (stream, writer)
    }

    /// The stream with this id, if it is running or still retained.
    pub fn get(&self, id: &str) -> Option<Arc<Stream>> {
        self.lock().get(id).cloned()
    }

    /// How many streams are running or retained.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the hub holds no stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many streams are still generating.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::Relaxed)
    }

    /// Stops every running stream because the server is shutting down; each
    /// ends with `finish_reason: interrupted`, keeping its text.
    pub fn interrupt_all(&self) -> usize {
        let running: Vec<Arc<Stream>> = self
            .lock()
            .values()
            .filter(|s| !s.is_finished())
            .cloned()
            .collect();
        for stream in &running {
            stream.interrupt();
        }
        running.len()
    }

    /// Drops a finished stream once its retention window has passed.
    fn expire_later(&self, id: Arc<str>) {
        let hub = Arc::downgrade(&self.inner);
        let retention = self.inner.retention;
        // Outside a runtime (unit tests of the writer) the stream simply stays.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(retention).await;
                if let Some(hub) = hub.upgrade() {
                    hub.streams
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                }
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Stream>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.inner
            .streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_protocol::{ErrorCode, ServerEvent};

    #[tokio::test(start_paused = true)]
    async fn finished_streams_expire_after_retention() {
        let hub = Hub::new(Duration::from_secs(300), ReplayLimits::default());
        let (stream, mut writer) = hub.create(None);
        assert_eq!(hub.running(), 1);
        let id = stream.id().to_owned();
        writer.finish(|seq| ServerEvent::Error {
            error: "x".into(),
            code: ErrorCode::ProcessingError,
            stream_id: Some(id.clone()),
            seq: Some(seq),
        });
        assert!(hub.get(&id).is_some());
        assert_eq!(hub.running(), 0, "finished streams are not running");
        tokio::time::sleep(Duration::from_secs(299)).await;
        assert!(hub.get(&id).is_some(), "still inside retention");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(hub.get(&id).is_none(), "dropped after retention");
    }
}
