//! Transports. Each module exposes `router()`; they are merged in [`app`]. A
//! route only translates: frames or requests into session commands, outcomes
//! into frames or responses.
//!
//! - [`extract`]: who is calling ([`extract::Caller`]) and size-limited bodies.
//! - [`ws`]: `GET /ws/chat` (native, and seed 000's plain text) and `GET /ws`
//!   (seed 002); the connection loop any dialect can use.
//! - [`broadcast`]: `GET /ws/broadcast`, seed 000's every-message-to-everyone socket.
//! - [`rooms`]: the publish API and presence of rooms.
//! - [`socketio`]: Socket.IO at `/socket.io/` (seed 004's events).
//! - [`conversations`]: `/api/v1/conversations…` and guest identities.
//! - [`http`]: `POST /api/v1/chat`, `POST /api/v1/streams`, cancel, `GET /health`.
//! - [`sse`]: server-sent events (`/api/v1/chat/stream`, `/api/v1/streams/{id}/events`).
//! - [`poll`]: long-poll (`/api/v1/streams/{id}/poll`).
//! - [`pages`]: the Leptos UI, `GET /ws/test`, `GET /chat`, and the compiled site's files.

pub mod broadcast;
pub mod conversations;
pub mod documents;
pub mod extract;
pub mod http;
pub mod math;
pub mod pages;
pub mod poll;
pub mod rooms;
pub mod share;
pub mod socketio;
pub mod sse;
pub mod ws;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{Verified, bearer_token};
use crate::error::Error;
use crate::state::AppState;

/// The cookie holding the browser's token (a guest token the pages set, or a
/// user token the embedding site sets).
pub const TOKEN_COOKIE: &str = "rill_token";

/// Who is calling: the token of `query_token`, else `Authorization: Bearer`, else
/// the `rill_token` cookie. A bad explicit token is an error (AUTH_FAILED); a bad
/// or expired cookie is ignored (the page sets a fresh one). The cookie counts
/// only for requests from this server's own pages or a listed origin: another
/// site's page that sends it is refused (403), so it cannot ride on it
/// (cross-site request forgery, cross-site WebSocket hijacking).
pub(crate) fn caller_identity(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Verified, Error> {
    let explicit = query_token.filter(|t| !t.is_empty()).or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
    });
    if let Some(token) = explicit {
        return Ok(state.keys.verify_token(token)?);
    }
    let Some(cookie) = cookie_token(headers) else {
        return Ok(Verified::default());
    };
    match origin_of(state, headers) {
        Origin::Absent | Origin::Own | Origin::Listed => {}
        Origin::AnyAllowed(origin) | Origin::Foreign(origin) => {
            return Err(Error::OriginNotAllowed(origin));
        }
    }
    Ok(state.keys.verify_token(cookie).ok().unwrap_or_default())
}

/// Who opens a WebSocket, checked before the upgrade: a browser page of a
/// foreign origin is refused (403; browsers let any page open a WebSocket to
/// any server), and so is a bad token (401 `AUTH_FAILED`, so a client never
/// believes it is authenticated when it is not).
pub(crate) fn socket_caller(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Verified, Error> {
    if let Origin::Foreign(origin) = origin_of(state, headers) {
        return Err(Error::OriginNotAllowed(origin));
    }
    caller_identity(state, headers, query_token)
}

/// Where a request comes from, by its `Origin` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// No `Origin`: not a browser page (a native app, a script), or a
    /// same-origin navigation.
    Absent,
    /// This server's own pages (the origin's host is the request's `Host`).
    Own,
    /// An origin listed with `--allow-origin`.
    Listed,
    /// Another origin, allowed only because `--allow-origin '*'` is set (it may
    /// call the API with tokens, never with the cookie).
    AnyAllowed(String),
    /// Another origin, not allowed.
    Foreign(String),
}

/// Classifies the request's `Origin`. `null` (a file:// page, a sandboxed
/// frame) is an origin like any other: allowed only when listed.
pub(crate) fn origin_of(state: &AppState, headers: &HeaderMap) -> Origin {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Origin::Absent;
    };
    let origin = String::from_utf8_lossy(origin.as_bytes())
        .trim()
        .trim_end_matches('/')
        .to_owned();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    let allowed = &state.config.allow_origins;
    if origin_host.is_some() && host.is_some() && origin_host == host {
        Origin::Own
    } else if allowed.iter().any(|a| a.eq_ignore_ascii_case(&origin)) {
        Origin::Listed
    } else if allowed.iter().any(|a| a == "*") {
        Origin::AnyAllowed(origin)
    } else {
        Origin::Foreign(origin)
    }
}

/// The `rill_token` cookie's value, if sent.
pub(crate) fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The whole application router.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .merge(ws::router())
        .merge(http::router())
        .merge(conversations::router())
        .merge(documents::router(&state))
        .merge(share::router())
        .merge(math::router())
        .merge(sse::router())
        .merge(poll::router())
        .merge(rooms::router())
        .merge(broadcast::router())
        .merge(pages::router())
        // Socket.IO answers its own path (`/socket.io/`) in front of the routes,
        // on a copy of the request's head (see `own_request_head`).
        .layer(socketio::layer(&state))
        // A plain function of the request, in tower's own layer: axum's
        // `map_request` would box a future for every request on every path.
        .layer(tower::util::MapRequestLayer::new(
            socketio::own_request_head,
        ));
    let router = match cors(&state.config.allow_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    // A plain function of the response, in tower's layer (as above): no boxed
    // future per request.
    router
        .layer(tower::util::MapResponseLayer::new(security_headers))
        .with_state(state)
}

/// Headers every response carries: no MIME sniffing, no referrer leaking to
/// links a reply contains, no framing by other sites (pages add their own
/// Content-Security-Policy).
fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
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
