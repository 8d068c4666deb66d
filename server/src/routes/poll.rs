//! Long-poll, the last-resort transport: `GET /api/v1/streams/{id}/poll?after=N&wait_ms=`
//! answers with the JSON array of events with seq > N, holding the request until
//! at least one exists or `wait_ms` passes. Works through any proxy that passes
//! plain HTTP.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::AppState;
use crate::error::Error;
use crate::hub::Published;

/// The longest a poll is held when the client asks for no limit.
const DEFAULT_WAIT: Duration = Duration::from_secs(25);
/// The longest a poll may be held (keeps well under common proxy timeouts).
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most events one answer carries; the client polls again after the last seq.
const MAX_EVENTS: usize = 1024;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/streams/{id}/poll", get(poll))
}

#[derive(Debug, Default, Deserialize)]
struct PollQuery {
    after: Option<u64>,
    wait_ms: Option<u64>,
}

async fn poll(
    State(state): State<AppState>,
    crate::routes::http::Caller(identity): crate::routes::http::Caller,
    Path(stream_id): Path<String>,
    Query(query): Query<PollQuery>,
) -> Result<Response, Error> {
    let after = query.after.unwrap_or(0);
    let wait = query
        .wait_ms
        .map_or(DEFAULT_WAIT, Duration::from_millis)
        .min(MAX_WAIT);
    let stream = state.engine.stream_for(&identity, &stream_id)?;
    // Attached while waiting, so the detach grace does not run during a poll.
    let mut subscription = stream.attach(after).map_err(|_| Error::StreamNotFound)?;
    let (mut events, finished) = stream
        .events_after(after, MAX_EVENTS)
        .map_err(|_| Error::StreamNotFound)?;
    if events.is_empty() && !finished {
        tokio::select! {
            batch = subscription.next_batch() => {
                events = batch.map_err(|_| Error::StreamNotFound)?.unwrap_or_default();
            }
            () = tokio::time::sleep(wait) => {}
            () = state.shutdown.cancelled() => {}
        }
    }
    Ok(json_array(&events))
}

/// The events as one JSON array, built from their serialized texts (no re-encoding).
fn json_array(events: &[Published]) -> Response {
    let mut body =
        String::with_capacity(2 + events.iter().map(|e| e.text.len() + 1).sum::<usize>());
    body.push('[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event.text.as_str());
    }
    body.push(']');
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}
