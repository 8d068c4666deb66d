//! The application's state: the parts every route shares, built once at startup.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::auth::JwtKeys;
use crate::config::{DatabaseUrl, ProviderConfig};
use crate::conversations::Conversations;
use crate::engine::{Engine, EngineLimits};
use crate::hub::{Hub, MemoryHub};
use crate::provider::Provider;
use crate::provider::demo::DemoProvider;
use crate::provider::openai::OpenAiProvider;
use crate::store::{SqlStore, Store, StoreError, StoreOptions};

/// Why the server could not start. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The JWT secret or a public key could not be loaded.
    #[error("{0}")]
    Keys(#[from] crate::auth::KeyError),
    /// The store could not be opened, migrated or recovered.
    #[error("cannot open the store ({location}): {source}")]
    Store {
        /// Where the store is (passwords redacted).
        location: String,
        /// What failed.
        source: StoreError,
    },
    /// The personas file is unusable (its line and field named).
    #[error("{0}")]
    Personas(#[from] crate::personas::PersonaFileError),
    /// The prices file is unusable.
    #[error("{0}")]
    Prices(#[from] crate::prices::PriceFileError),
    /// The provider's configuration is unusable.
    #[error("cannot set up the provider: {0}")]
    Provider(String),
}

/// Everything a request handler may need: one pointer to the [`Parts`], so a
/// clone is one reference count. Every connection holds clones (its handler's,
/// its session's); when it was the struct of the parts itself, each clone
/// copied every field and allocated the JWT keys anew: 7 KiB more per idle
/// WebSocket (idle-5000: 12.7 against 5.7 KiB, BENCHMARKS.md).
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

impl std::ops::Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// The parts of the [`AppState`], built once at startup.
pub struct Parts {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Starts generations and gives access to their streams.
    pub engine: Engine,
    /// The callers' conversations.
    pub conversations: Conversations,
    /// Verifies (and, for `rill token`, signs) JWTs.
    pub keys: JwtKeys,
    /// Where the compiled site is and what it is called, for server rendering.
    pub leptos: LeptosOptions,
    /// When the server started (`/health` uptime).
    pub started: Instant,
    /// Open WebSocket connections (`/health`, and the wait for their close
    /// frames at shutdown).
    pub connections: Connections,
    /// Question rates and connection caps.
    pub limits: Arc<crate::limits::Limits>,
    /// Rooms and their members (projects' notifications, presence, broadcast).
    pub rooms: Arc<crate::rooms::Rooms>,
    /// Projects' documents and their search indexes.
    pub documents: crate::documents::Documents,
    /// Cancelled when the server shuts down; every connection watches it.
    pub shutdown: CancellationToken,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

impl AppState {
    /// Builds the state: keys (reading or creating the secret), the store (opened
    /// and migrated; replies a crash left `streaming` become `interrupted`), hub,
    /// provider.
    pub async fn new(config: Config) -> Result<Self, StartupError> {
        let keys = JwtKeys::load(&config.key_sources(), &config.data_dir)?;
        let personas = crate::personas::Personas::load(config.personas.as_deref())?;
        let prices = Arc::new(crate::prices::Prices::load(config.prices.as_deref())?);
        let location = config.database_url.as_ref().map_or_else(
            || format!("SQLite {}", config.data_dir.join("rill.db").display()),
            DatabaseUrl::redacted,
        );
        let store_error = |source| StartupError::Store {
            location: location.clone(),
            source,
        };
        let database = config.database_url.as_ref().map(|u| u.0.as_str());
        let options = StoreOptions {
            history_cache_bytes: config.history_cache_bytes,
        };
        let store = SqlStore::open_with(database, &config.data_dir, options)
            .await
            .map_err(store_error)?;
        let interrupted = store.mark_interrupted().await.map_err(store_error)?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "replies cut by the last stop are marked interrupted"
            );
        }
        tracing::info!(store = %location, "conversations store ready");
        let store = Arc::new(store);
        let rooms = Arc::new(crate::rooms::Rooms::default());
        let documents = crate::documents::Documents::new(
            store.clone(),
            store.clone(),
            rooms.clone(),
            config.data_dir.join("index"),
            config.documents,
        );
        let resumed = documents.resume().await.map_err(|e| StartupError::Store {
            location: location.clone(),
            source: StoreError::UnexpectedAnswer(e.to_string()),
        })?;
        if resumed > 0 {
            tracing::warn!(
                resumed,
                "documents a stop left processing are processed again"
            );
        }
        let store: Arc<dyn Store> = store;
        let hub: Arc<dyn Hub> = Arc::new(MemoryHub::with_budget(
            config.stream_retention,
            config.replay,
            config.stream_retention_budget,
        ));
        let provider: Arc<dyn Provider> = match &config.provider {
            ProviderConfig::Demo => {
                Arc::new(DemoProvider::new(config.demo_delay, config.demo_tokens))
            }
            ProviderConfig::OpenAi(settings) => {
                Arc::new(OpenAiProvider::new(settings.clone()).map_err(StartupError::Provider)?)
            }
        };
        let engine = Engine::new(
            hub.clone(),
            provider,
            store.clone(),
            personas,
            EngineLimits {
                max_personas: config.max_personas,
                max_streams: config.max_streams,
                detach_grace: config.detach_grace,
                history_max_messages: config.history_max_messages,
                history_max_chars: config.history_max_chars,
                checkpoint_interval: config.checkpoint_interval,
            },
        )
        .with_prices(prices.clone())
        .with_documents(documents.clone());
        let leptos = LeptosOptions::builder()
            .output_name("rill")
            .site_root(config.site_root.to_string_lossy().into_owned())
            .site_pkg_dir("pkg")
            .site_addr(config.addr)
            .build();
        let config_limits = config.limits;
        Ok(AppState(Arc::new(Parts {
            config: Arc::new(config),
            engine,
            conversations: Conversations::new(store, hub, prices.clone()),
            keys,
            leptos,
            started: Instant::now(),
            connections: Connections::default(),
            limits: Arc::new(crate::limits::Limits::new(config_limits)),
            rooms,
            documents,
            shutdown: CancellationToken::new(),
        })))
    }
}

/// Counts open connections; anyone can wait for a count. Cheap to clone.
#[derive(Clone, Default)]
pub struct Connections {
    /// The count; a `watch` so waiting needs no polling.
    count: Arc<watch::Sender<usize>>,
}

impl Connections {
    /// Counts a connection until the guard is dropped.
    pub fn open(&self) -> ConnectionGuard {
        self.count.send_modify(|n| *n += 1);
        ConnectionGuard(self.count.clone())
    }

    /// How many are open now.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Resolves once the count satisfies `ready`.
    pub async fn wait_until(&self, ready: impl FnMut(&usize) -> bool) {
        // The sender lives in `self`: the wait cannot fail.
        let _ = self.count.subscribe().wait_for(ready).await;
    }
}

/// Keeps one connection counted; dropping it (however the connection ends)
/// uncounts it.
pub struct ConnectionGuard(Arc<watch::Sender<usize>>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection keeps clones of the state: each must be one pointer
    /// (a reference count), whatever parts the state grows.
    #[test]
    fn the_state_is_one_pointer() {
        assert_eq!(
            std::mem::size_of::<AppState>(),
            std::mem::size_of::<usize>()
        );
    }
}
