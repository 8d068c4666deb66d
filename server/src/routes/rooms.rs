//! Rooms over HTTP: `POST /api/v1/rooms/{room}/publish` lets a team's other
//! services notify a room's members (what seed 004's `broadcast_to_project`
//! does), with the `--api-key`; `GET /api/v1/rooms/{room}/presence` says who
//! is there, to the key's holder or the project's owner.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::rooms::{Present, RoomEventKind, check_room_name, project_of};
use crate::state::AppState;

/// Longest event name, in characters.
const MAX_EVENT_CHARS: usize = 64;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/rooms/{room}/publish", post(publish))
        .route("/api/v1/rooms/{room}/presence", get(presence))
}

/// The body of a publish.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    /// The event's name (`document_status`, `project_update` …).
    event: String,
    /// Its data (any JSON; `null` when absent).
    #[serde(default)]
    data: Value,
}

/// What a publish answers.
#[derive(Debug, Serialize)]
struct Published {
    room: String,
    event: String,
    /// How many connections it reached.
    delivered: usize,
}

/// Who is in a room.
#[derive(Debug, Serialize)]
struct Presence {
    room: String,
    members: Vec<Present>,
}

/// Whether the request carries the API key as `Authorization: Bearer <key>`:
/// `Ok(true)` if so, `Ok(false)` if it carries something else or nothing;
/// `NOT_FOUND` when the server has no key (the publish API is off).
fn has_api_key(state: &AppState, headers: &HeaderMap) -> Result<bool, Error> {
    let Some(key) = state.config.api_key.as_deref() else {
        return Err(Error::NotFound(
            "The rooms API is off: start rill with --api-key (RILL_API_KEY) to enable it",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    Ok(presented.is_some_and(|presented| same_secret(presented, key)))
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |differ, (x, y)| differ | (x ^ y))
            == 0
}

async fn publish(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Published>, Error> {
    if !has_api_key(&state, &headers)? {
        return Err(Error::ApiKeyRequired);
    }
    check_room_name(&room).map_err(Error::InvalidMessage)?;
    let bytes = super::extract::read_body(&state, body).await?;
    let Publish { event, data } = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidMessage(format!("a publish is {{event, data}}: {e}")))?;
    if event.is_empty()
        || event.chars().count() > MAX_EVENT_CHARS
        || !event
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    {
        return Err(Error::InvalidMessage(format!(
            "event must be 1 to {MAX_EVENT_CHARS} characters of a-z, A-Z, 0-9, _ - . :"
        )));
    }
    let delivered = state.rooms.publish(
        &room,
        RoomEventKind::Event {
            event: event.clone(),
            data,
        },
    );
    Ok(Json(Published {
        room,
        event,
        delivered,
    }))
}

/// Who is in the room: for the API key's holder, or for the owner of the
/// project whose room it is.
async fn presence(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Presence>, Error> {
    check_room_name(&room).map_err(Error::InvalidMessage)?;
    let service = state.config.api_key.is_some() && has_api_key(&state, &headers)?;
    if !service {
        let caller = super::caller_identity(&state, &headers, None)?;
        if state.config.auth_required && !caller.identity.is_authenticated() {
            return Err(Error::AuthRequired);
        }
        let project = project_of(&room).ok_or(Error::Forbidden)?;
        state
            .conversations
            .owned_project(&caller.identity, project)
            .await?;
    }
    let members = state.rooms.presence(&room);
    Ok(Json(Presence { room, members }))
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("k-123", "k-123"));
        assert!(!same_secret("k-123", "k-124"));
        assert!(!same_secret("k-12", "k-123"));
        assert!(!same_secret("", "k"));
    }
}
