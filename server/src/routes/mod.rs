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
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::AppState;

/// The whole application router.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .merge(ws::router())
        .merge(http::router())
        .merge(sse::router())
        .merge(poll::router())
        .merge(pages::router(&state));
    let router = match cors(&state.config.allow_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// CORS for a UI hosted on another origin (`--allow-origin`); none by default.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("last-event-id"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
