//! # rill
//!
//! A real-time LLM chat server: an axum router that streams model output token by
//! token over WebSocket and HTTP, and serves the Leptos chat UI.
//!
//! ## Layout
//! - [`config`]: flags, `RILL_*` variables, the typed [`Config`].
//! - [`routes`]: transports — decode frames into commands, encode events into frames.
//! - [`session`]: one WebSocket connection (auth state, limits, dispatch).
//! - [`engine`]: validates a request, builds the prompt, drives a provider.
//! - [`hub`]: streams and their replay logs; connections attach after a seq.
//! - [`provider`]: where replies come from (`demo`; OpenAI-compatible next).
//! - [`store`]: conversations and messages in SQLite or PostgreSQL.
//! - [`auth`]: JWTs and identities.
//! - [`error`]: the one error type and its mapping to codes and statuses.
//!
//! [`serve`] runs the server on a listener until a shutdown future resolves; `main`
//! is thin, and tests start the same server on port 0.

pub mod auth;
pub mod config;
pub mod engine;
pub mod error;
pub mod hub;
pub mod provider;
pub mod routes;
pub mod session;
pub mod store;

#[cfg(feature = "embed")]
mod assets;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::auth::JwtKeys;
use crate::config::{DatabaseUrl, ProviderConfig};
use crate::engine::{Engine, EngineLimits};
use crate::hub::Hub;
use crate::provider::Provider;
use crate::provider::demo::DemoProvider;
use crate::provider::openai::OpenAiProvider;
use crate::store::{SqlStore, Store};

/// Everything a request handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Starts and drives generations (owns the hub).
    pub engine: Engine,
    /// Verifies (and, for `rill token`, signs) JWTs.
    pub keys: JwtKeys,
    /// Where the compiled site is and what it is called, for server rendering.
    pub leptos: LeptosOptions,
    /// When the server started (`/health` uptime).
    pub started: Instant,
    /// Open WebSocket connections (`/health`).
    pub connections: Arc<AtomicUsize>,
    /// Cancelled when the server shuts down; parent of every connection's token.
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
    pub async fn new(config: Config) -> std::io::Result<Self> {
        let keys = JwtKeys::load(config.jwt_secret.as_deref(), &config.data_dir)?;
        let database = config.database_url.as_ref().map(|u| u.0.as_str());
        let where_ = config.database_url.as_ref().map_or_else(
            || format!("SQLite {}", config.data_dir.join("rill.db").display()),
            DatabaseUrl::redacted,
        );
        let store = SqlStore::open(database, &config.data_dir)
            .await
            .map_err(|e| std::io::Error::other(format!("cannot open the store ({where_}): {e}")))?;
        let interrupted = store
            .mark_interrupted()
            .await
            .map_err(|e| std::io::Error::other(format!("store ({where_}): {e}")))?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "replies cut by the last stop are marked interrupted"
            );
        }
        tracing::info!(store = %where_, "conversations store ready");
        let hub = Hub::new(config.stream_retention, config.replay);
        let provider: Arc<dyn Provider> = match &config.provider {
            ProviderConfig::Demo => {
                Arc::new(DemoProvider::new(config.demo_delay, config.demo_tokens))
            }
            ProviderConfig::OpenAi(settings) => {
                Arc::new(OpenAiProvider::new(settings.clone()).map_err(std::io::Error::other)?)
            }
        };
        let engine = Engine::new(
            hub,
            provider,
            Arc::new(store),
            EngineLimits {
                max_personas: config.max_personas,
                max_streams: config.max_streams,
                detach_grace: config.detach_grace,
                history_max_messages: config.history_max_messages,
                history_max_chars: config.history_max_chars,
                checkpoint_interval: config.checkpoint_interval,
            },
        );
        let leptos = LeptosOptions::builder()
            .output_name("rill")
            .site_root(config.site_root.to_string_lossy().into_owned())
            .site_pkg_dir("pkg")
            .site_addr(config.addr)
            .build();
        Ok(AppState {
            config: Arc::new(config),
            engine,
            keys,
            leptos,
            started: Instant::now(),
            connections: Arc::new(AtomicUsize::new(0)),
            shutdown: CancellationToken::new(),
        })
    }
}

/// `rill/<version>`, as announced in `hello`.
pub fn server_name() -> String {
    format!("rill/{}", env!("CARGO_PKG_VERSION"))
}

/// Serves on `listener` until `shutdown` resolves (or the state's shutdown token is
/// cancelled). Then: stop accepting; close WebSockets with 1012 and end SSE
/// responses (clients reconnect and resume); let running replies finish for
/// `--shutdown-grace`, and cut the rest, which end as `interrupted`, keeping
/// their text.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = routes::app(state.clone());
    let token = state.shutdown.clone();
    let hub = state.engine.hub().clone();
    let grace = state.config.shutdown_grace;
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = shutdown => {}
                () = token.cancelled() => {}
            }
            token.cancel();
            // The drain deadline also bounds HTTP requests waiting for a reply.
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                cut_remaining(&hub);
            });
        })
        .await?;
    let tasks = state.engine.tasks();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        cut_remaining(state.engine.hub());
        let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    }
    // Give sessions a moment to send their close frames.
    let deadline = Instant::now() + Duration::from_secs(2);
    while state.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn cut_remaining(hub: &Hub) {
    let cut = hub.interrupt_all();
    if cut > 0 {
        tracing::warn!("shutdown deadline: interrupted {cut} running replies");
    }
}
