//! `GET /ws/chat`: upgrades to the native dialect (see [`crate::session`]).

use axum::Router;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use crate::AppState;
use crate::error::Error;
use crate::session::{self, SessionParams};

/// WebSocket read buffer: chat frames are small, and idle connections should be
/// cheap (the buffers dominate per-connection memory).
const READ_BUFFER: usize = 8 * 1024;
/// Bytes buffered before a write is flushed.
const WRITE_BUFFER: usize = 8 * 1024;
/// Hard cap on unflushed output per connection; a peer that does not read is
/// disconnected past it.
const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/ws/chat", get(upgrade))
}

/// Query parameters of `/ws/chat`.
#[derive(Debug, Default, Deserialize)]
struct WsQuery {
    /// A JWT, instead of an `auth` frame.
    token: Option<String>,
    /// `1`/`true`: token events carry `partial_response`.
    partial: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Error> {
    // A bad token is refused before the upgrade (401 AUTH_FAILED), so a client
    // never believes it is authenticated when it is not.
    let identity = super::caller_identity(&state, &headers, query.token.as_deref())?;
    let partial = matches!(query.partial.as_deref(), Some("1" | "true" | "yes"));
    let hard_limit = state.config.ws_hard_limit();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| session::run(socket, state, SessionParams { identity, partial })))
}
