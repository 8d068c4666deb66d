//! HTTP routes. Each module exposes `router()`; they are merged in [`app`].
//!
//! - [`ws`]: `GET /ws/chat`, the native WebSocket dialect.
//! - [`http`]: `POST /api/v1/chat`, `GET /health`.
//! - [`pages`]: the Leptos UI, `GET /ws/test`, and the compiled site's files.

pub mod http;
pub mod pages;
pub mod ws;

use axum::Router;

use crate::AppState;

/// The whole application router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(ws::router())
        .merge(http::router())
        .merge(pages::router(&state))
        .with_state(state)
}
