//! HTTP routes. Each module exposes `router()`; they are merged in [`app`].
//!
//! - [`ws`]: `GET /ws/chat`, the native WebSocket dialect.
//! - [`http`]: `POST /api/v1/chat`, `POST /api/v1/streams`, cancel, `GET /health`.
//! - [`sse`]: server-sent events (`/api/v1/chat/stream`, `/api/v1/streams/{id}/events`).
//! - [`poll`]: long-poll (`/api/v1/streams/{id}/poll`).
//! - [`pages`]: the Leptos UI, `GET /ws/test`, and the compiled site's files.

pub mod http;
pub mod pages;
pub mod poll;
pub mod sse;
pub mod ws;

use axum::Router;

use crate::AppState;

/// The whole application router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(ws::router())
        .merge(http::router())
        .merge(sse::router())
        .merge(poll::router())
        .merge(pages::router(&state))
        .with_state(state)
}
