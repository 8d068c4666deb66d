//! Server-sent events: `POST /api/v1/chat/stream` (start and stream) and
//! `GET /api/v1/streams/{id}/events` (attach, resuming by `Last-Event-ID` or
//! `?after=`). Each SSE event is one protocol event: `id:` its seq, `event:` its
//! type, `data:` its JSON (the same text every other transport sends).

use std::convert::Infallible;
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
use rill_protocol::{ErrorCode, ServerEvent};
use serde::Deserialize;

use crate::AppState;
use crate::error::Error;
use crate::hub::Subscription;
use crate::routes::http::{Caller, read_message_request};

/// A comment line this often keeps proxies and load balancers from timing out.
const KEEPALIVE: Duration = Duration::from_secs(15);

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/chat/stream", post(chat_stream))
        .route("/api/v1/streams/{id}/events", get(events))
}

/// `?after=` of the attach route.
#[derive(Debug, Default, Deserialize)]
struct AttachQuery {
    after: Option<u64>,
}

async fn chat_stream(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, Error> {
    let identity = caller.may_start(&state)?;
    let request = read_message_request(&state, body).await?;
    let started = state.engine.start(&identity, request).await?;
    let subscriptions = started
        .streams
        .iter()
        .map(|stream| stream.attach(0).map_err(|_| Error::StreamNotFound))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sse_response(&state, subscriptions))
}

async fn events(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(stream_id): Path<String>,
    Query(query): Query<AttachQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    // A browser's EventSource reconnects with Last-Event-ID: it wins over ?after=.
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let after = last_event_id.or(query.after).unwrap_or(0);
    let stream = state.engine.stream_for(&identity, &stream_id)?;
    let subscription = stream.attach(after).map_err(|_| Error::StreamNotFound)?;
    Ok(sse_response(&state, vec![subscription]))
}

/// The SSE response for some subscriptions: their events interleaved as they
/// come, ended after every terminal event, or when the server shuts down.
fn sse_response(state: &AppState, subscriptions: Vec<Subscription>) -> Response {
    let events = futures::stream::select_all(subscriptions.into_iter().map(sse_events))
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

/// One subscription as SSE events, ending after its terminal event.
fn sse_events(subscription: Subscription) -> BoxStream<'static, Result<Event, Infallible>> {
    futures::stream::unfold(Some(subscription), |state| async move {
        let mut subscription = state?;
        match subscription.next_batch().await {
            Ok(Some(batch)) => {
                let events: Vec<Result<Event, Infallible>> = batch
                    .iter()
                    .map(|p| {
                        Ok(Event::default()
                            .id(p.seq.to_string())
                            .event(p.kind)
                            .data(p.text.as_str()))
                    })
                    .collect();
                Some((events, Some(subscription)))
            }
            Ok(None) => None,
            Err(_) => {
                let event = ServerEvent::Error {
                    error: "This reader fell too far behind the stream; its events are no longer available".into(),
                    code: ErrorCode::StreamNotFound,
                    stream_id: Some(subscription.stream().id().to_owned()),
                    seq: None,
                };
                Some((vec![Ok(Event::default().event("error").data(event.to_json()))], None))
            }
        }
    })
    .flat_map(futures::stream::iter)
    .boxed()
}
