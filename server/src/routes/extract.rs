//! What every HTTP route extracts: the caller's identity, and request bodies
//! bounded by the frame size limit.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use rill_protocol::MessageRequest;
use rill_protocol::client::parse_message_request;

use crate::auth::Identity;
use crate::error::Error;
use crate::session::Session;
use crate::state::AppState;

/// `?token=`: browsers' `EventSource` cannot send headers.
#[derive(Debug, Default, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The caller's identity from `?token=`, `Authorization: Bearer` or the
/// `rill_token` cookie; a bad explicit token is 401 AUTH_FAILED, and with
/// `--auth-required` anything but a user token is 401 AUTH_REQUIRED. Every
/// route that reaches a provider, a stream or a conversation extracts it.
pub struct Caller(pub Identity, pub Option<IpAddr>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let query_token = Query::<TokenQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|Query(q)| q.token);
        let caller = super::caller_identity(state, &parts.headers, query_token.as_deref())?;
        if state.config.auth_required && !caller.identity.is_authenticated() {
            return Err(Error::AuthRequired);
        }
        Ok(Caller(caller.identity, peer_ip(state, parts)))
    }
}

/// The client's address ([`peer_ip`]), as an extractor.
pub struct Peer(pub Option<IpAddr>);

impl FromRequestParts<AppState> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer_ip(state, parts)))
    }
}

/// The client's address: the connection's peer, or — when the peer is a
/// proxy listed with `--trusted-proxy` — the address it appended last to
/// `X-Forwarded-For`.
pub(crate) fn peer_ip(state: &AppState, parts: &Parts) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())?;
    if !state.config.trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .next_back();
    Some(forwarded.unwrap_or(peer))
}

impl Caller {
    /// A session for this request (HTTP requests are one-command sessions).
    pub fn session(self, state: &AppState) -> Session {
        Session::new(state, self.0).with_peer(self.1)
    }
}

/// Reads a request body up to the frame size limit (`MESSAGE_TOO_LARGE` past
/// it), nested no deeper than `--max-json-depth` (`INVALID_MESSAGE`).
pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<bytes::Bytes, Error> {
    let limit = state.config.max_frame_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Error::MessageTooLarge { limit })?;
    crate::limits::check_depth(&bytes, state.config.max_json_depth)?;
    Ok(bytes)
}

/// Reads a JSON body of the `message` fields, enforcing the frame size limit.
pub(crate) async fn read_message_request(
    state: &AppState,
    body: Body,
) -> Result<MessageRequest, Error> {
    Ok(parse_message_request(&read_body(state, body).await?)?)
}

/// An optional position: absent or empty (what an `EventSource` that saw no
/// id means) is `None`, anything else must be a seq ([`parse_seq`]).
pub(crate) fn optional_seq(field: &str, text: Option<&str>) -> Result<Option<u64>, Error> {
    text.filter(|text| !text.trim().is_empty())
        .map(|text| parse_seq(field, text))
        .transpose()
}

/// A seq a client sent as text (`?after=`, `Last-Event-ID`): a whole number from
/// 0 to 2^64 − 1, or `INVALID_MESSAGE` naming the field.
pub(crate) fn parse_seq(field: &str, text: &str) -> Result<u64, Error> {
    text.parse::<u64>().map_err(|_| {
        Error::InvalidMessage(format!(
            "{field} must be a whole number from 0 to {}",
            u64::MAX
        ))
    })
}
