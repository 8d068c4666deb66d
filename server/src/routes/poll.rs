//! Long-poll, the last-resort transport: `GET /api/v1/streams/{id}/poll?after=N&wait_ms=`
//! answers with the JSON array of events with seq > N, holding the request until
//! at least one exists or `wait_ms` passes. Works through any proxy that passes
//! plain HTTP.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::extract::{Caller, optional_seq};
use crate::dialect::{Dialect, Native};
use crate::error::Error;
use crate::hub::Sequenced;
use crate::session::{Command, Outcome};
use crate::state::AppState;

/// The longest a poll is held when the client asks for no limit.
const DEFAULT_WAIT: Duration = Duration::from_secs(25);
/// The longest a poll may be held (keeps well under common proxy timeouts).
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most events one answer carries; the client polls again after the last seq.
const MAX_EVENTS: usize = 1024;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/streams/{id}/poll", get(poll))
}

/// The query, checked by hand: a bad number is a documented INVALID_MESSAGE,
/// not the framework's plain-text rejection.
#[derive(Debug, Default, Deserialize)]
struct PollQuery {
    after: Option<String>,
    wait_ms: Option<String>,
}

async fn poll(
    State(state): State<AppState>,
    caller: Caller,
    Path(stream_id): Path<String>,
    Query(query): Query<PollQuery>,
) -> Result<Response, Error> {
    let after_seq = optional_seq("after", query.after.as_deref())?.unwrap_or(0);
    let wait = optional_seq("wait_ms", query.wait_ms.as_deref())?
        .map_or(DEFAULT_WAIT, Duration::from_millis)
        .min(MAX_WAIT);
    let mut session = caller.session(&state);
    // Attached while waiting, so the detach grace does not run during a poll.
    let Outcome::Following(mut following) = session
        .handle(Command::Resume {
            stream_id,
            after_seq,
        })
        .await
        .map_err(|r| r.error)?
    else {
        return Err(Error::Internal("a resume produced no stream".into()));
    };
    following.subscription.set_batch(MAX_EVENTS);
    let mut events = Vec::new();
    tokio::select! {
        read = following.subscription.next_into(&mut events) => {
            read.map_err(|_| Error::StreamNotFound)?;
        }
        () = tokio::time::sleep(wait) => {}
        () = state.shutdown.cancelled() => {}
    }
    Ok(json_array(&events))
}

/// The events as one JSON array of their native texts (encoded once, shared).
fn json_array(events: &[Arc<Sequenced>]) -> Response {
    let frames: Vec<_> = events.iter().map(|e| Native.encoded(e)).collect();
    let mut body = Vec::with_capacity(2 + frames.iter().map(|f| f.len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(frame);
    }
    body.push(b']');
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
