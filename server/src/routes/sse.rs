//! Server-sent events: `POST /api/v1/chat/stream` (start and stream) and
//! `GET /api/v1/streams/{id}/events` (attach, resuming by `Last-Event-ID` or
//! `?after=`). Each SSE event is one stream event in the native dialect: `id:`
//! its seq, `event:` its type, `data:` the same JSON text every other
//! transport sends (encoded once, shared).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;

use super::extract::{Caller, optional_seq};
use crate::dialect::{Dialect, Native};
use crate::error::Error;
use crate::hub::Sequenced;
use crate::session::{Command, Following, Outcome, Reply};
use crate::state::AppState;

/// A comment line this often keeps proxies and load balancers from timing out.
const KEEPALIVE: Duration = Duration::from_secs(15);

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/chat/stream", post(chat_stream))
        .route("/api/v1/streams/{id}/events", get(events))
}

/// `?after=` of the attach route (checked by hand: a bad value is a documented
/// INVALID_MESSAGE, not the framework's plain-text rejection).
#[derive(Debug, Default, Deserialize)]
struct AttachQuery {
    after: Option<String>,
}

async fn chat_stream(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, Error> {
    let mut session = caller.session(&state);
    let (_, streams) = super::http::ask(&state, &mut session, body).await?;
    Ok(sse_response(&state, streams))
}

/// The position to resume after: `Last-Event-ID` (a browser's `EventSource`
/// reconnects with it) wins over `?after=`; neither (or empty) means from the
/// start.
fn resume_position(headers: &HeaderMap, after: Option<&str>) -> Result<u64, Error> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Error::InvalidMessage("Last-Event-ID must be a seq".into()))
        })
        .transpose()?;
    match optional_seq("Last-Event-ID", last_event_id)? {
        Some(after) => Ok(after),
        None => Ok(optional_seq("after", after)?.unwrap_or(0)),
    }
}

async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(stream_id): Path<String>,
    Query(query): Query<AttachQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let after_seq = resume_position(&headers, query.after.as_deref())?;
    let mut session = caller.session(&state);
    match session
        .handle(Command::Resume {
            stream_id,
            after_seq,
        })
        .await
        .map_err(|r| r.error)?
    {
        Outcome::Following(following) => Ok(sse_response(&state, vec![following])),
        other => Err(Error::Internal(format!(
            "a resume produced {other:?} instead of a stream"
        ))),
    }
}

/// The SSE response for some followed streams: their events interleaved as they
/// come, ended after every terminal event, or when the server shuts down.
fn sse_response(state: &AppState, streams: Vec<Following>) -> Response {
    let events = futures::stream::select_all(streams.into_iter().map(sse_events))
        .take_until(state.shutdown.clone().cancelled_owned());
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive"))
        .into_response();
    let headers = response.headers_mut();
    // Proxies must pass events through as they come: no caching, no transforming
    // (compression buffers), no buffering (nginx honours X-Accel-Buffering).
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One stream's SSE event.
fn sse_event(event: &Sequenced) -> Event {
    let data = Native.encoded(event);
    Event::default()
        .id(event.seq.to_string())
        .event(Native.event_name(&event.event))
        .data(String::from_utf8_lossy(&data))
}

/// One followed stream as SSE events, ending after its terminal event.
fn sse_events(following: Following) -> BoxStream<'static, Result<Event, Infallible>> {
    futures::stream::unfold(Some(following), |state| async move {
        let mut following = state?;
        let mut batch: Vec<Arc<Sequenced>> = Vec::new();
        match following.subscription.next_into(&mut batch).await {
            Ok(true) => {
                let events: Vec<Result<Event, Infallible>> =
                    batch.iter().map(|e| Ok(sse_event(e))).collect();
                Some((events, Some(following)))
            }
            Ok(false) => None,
            Err(_) => {
                let stream_id = following.subscription.stream_id().clone();
                let data = Native.encode_reply(&Reply::FellBehind { stream_id });
                let event = Event::default()
                    .event("error")
                    .data(String::from_utf8_lossy(&data));
                Some((vec![Ok(event)], None))
            }
        }
    })
    .flat_map(futures::stream::iter)
    .boxed()
}
