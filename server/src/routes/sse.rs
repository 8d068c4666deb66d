//! Server-sent events: `POST /api/v1/chat/stream` (start and stream),
//! `GET /api/v1/streams/{id}/events` (attach one stream) and
//! `GET /api/v1/streams/events?ids=a,b` (attach several), resuming by
//! `Last-Event-ID` or `?after=`. Each SSE event is one stream event in the
//! native dialect: `event:` its type, `data:` the same JSON text every other
//! transport sends (encoded once, shared), and `id:` the position to resume
//! from — its seq when the response carries one stream; when it carries
//! several, every stream's last seq so far, comma-separated in the order of
//! the streams (one id says where the whole response stands).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;

use super::extract::{Caller, optional_seq};
use crate::dialect::{Dialect, Native, TurnRecorder};
use crate::error::Error;
use crate::hub::Sequenced;
use crate::session::{Command, Following, Outcome, Reply, Session};
use crate::state::AppState;

/// A comment line this often keeps proxies and load balancers from timing out.
const KEEPALIVE: Duration = Duration::from_secs(15);

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/chat/stream", post(chat_stream))
        .route("/api/v1/streams/events", get(events_of_several))
        .route("/api/v1/streams/{id}/events", get(events))
}

/// `?after=` of the attach routes (checked by hand: a bad value is a documented
/// INVALID_MESSAGE, not the framework's plain-text rejection), and the streams
/// of the several-streams route.
#[derive(Debug, Default, Deserialize)]
struct AttachQuery {
    after: Option<String>,
    ids: Option<String>,
}

/// Most streams one several-streams response carries.
const MAX_STREAMS_PER_RESPONSE: usize = 64;

async fn chat_stream(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Response, Error> {
    let mut session = caller.session(&state);
    let asked = super::http::ask(&state, &mut session, body).await?;
    let turn = asked
        .several
        .then(|| TurnRecorder::new(asked.session_id, asked.streams.len()));
    let cursor = vec![0; asked.streams.len()];
    Ok(sse_response(&state, asked.streams, cursor, turn))
}

/// The position to resume after, for `streams` streams: `Last-Event-ID` (a
/// browser's `EventSource` reconnects with it) wins over `?after=`; neither
/// (or empty) means from the start. One seq per stream, comma-separated.
fn resume_position(
    headers: &HeaderMap,
    after: Option<&str>,
    streams: usize,
) -> Result<Vec<u64>, Error> {
    let last_event_id = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .map_err(|_| Error::InvalidMessage("Last-Event-ID must be a seq".into()))
        })
        .transpose()?;
    let (field, text) = match last_event_id.filter(|t| !t.trim().is_empty()) {
        Some(text) => ("Last-Event-ID", Some(text)),
        None => ("after", after),
    };
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(vec![0; streams]);
    };
    let seqs = text
        .split(',')
        .map(|part| optional_seq(field, Some(part.trim())).map(Option::unwrap_or_default))
        .collect::<Result<Vec<u64>, Error>>()?;
    if seqs.len() != streams {
        return Err(Error::InvalidMessage(format!(
            "{field} must hold {streams} seq(s), one per stream, comma-separated"
        )));
    }
    Ok(seqs)
}

async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(stream_id): Path<String>,
    Query(query): Query<AttachQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let cursor = resume_position(&headers, query.after.as_deref(), 1)?;
    let mut session = caller.session(&state);
    let following = follow(&mut session, stream_id, cursor[0]).await?;
    Ok(sse_response(&state, vec![following], cursor, None))
}

/// `GET /api/v1/streams/events?ids=a,b,c`: several streams in one response
/// (a multi-persona question's), resumable as one; `turn_complete` once all
/// ended. All or nothing: one unknown stream refuses the request.
async fn events_of_several(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<AttachQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let ids: Vec<String> = query
        .ids
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.is_empty() || ids.len() > MAX_STREAMS_PER_RESPONSE {
        return Err(Error::InvalidMessage(format!(
            "ids must name 1 to {MAX_STREAMS_PER_RESPONSE} streams, comma-separated"
        )));
    }
    if let Some(twice) = ids
        .iter()
        .enumerate()
        .find_map(|(i, id)| ids[..i].contains(id).then_some(id))
    {
        return Err(Error::InvalidMessage(format!(
            "ids names {:?} twice",
            twice.chars().take(128).collect::<String>()
        )));
    }
    let cursor = resume_position(&headers, query.after.as_deref(), ids.len())?;
    let mut session = caller.session(&state);
    let mut streams = Vec::with_capacity(ids.len());
    for (stream_id, after) in ids.into_iter().zip(&cursor) {
        streams.push(follow(&mut session, stream_id, *after).await?);
    }
    let turn = (streams.len() > 1).then(|| TurnRecorder::new(String::new(), streams.len()));
    Ok(sse_response(&state, streams, cursor, turn))
}

/// Follows `stream_id` after `after_seq` through `session`.
async fn follow(
    session: &mut Session,
    stream_id: String,
    after_seq: u64,
) -> Result<Following, Error> {
    match session
        .handle(Command::Resume {
            stream_id,
            after_seq,
        })
        .await
        .map_err(|r| r.error)?
    {
        Outcome::Following(following) => Ok(following),
        other => Err(Error::Internal(format!(
            "a resume produced {other:?} instead of a stream"
        ))),
    }
}

/// One stream event (or a stream's end notice) on its way into a response.
struct Piece {
    /// Which of the response's streams it belongs to.
    index: usize,
    /// Its seq (`None`: a notice, not a stream event).
    seq: Option<u64>,
    /// `event:`.
    name: &'static str,
    /// `data:`.
    data: Bytes,
}

/// The SSE response for some followed streams: their events interleaved as they
/// come, ended after every terminal event (then `turn_complete` when `turn`
/// records a multi-persona question), or when the server shuts down. `cursor`
/// is where each stream starts (each event's id is the position after it).
fn sse_response(
    state: &AppState,
    streams: Vec<Following>,
    mut cursor: Vec<u64>,
    turn: Option<TurnRecorder>,
) -> Response {
    let single = streams.len() == 1;
    let turn = turn.map(|turn| Arc::new(Mutex::new(turn)));
    let recorder = turn.clone();
    let events = futures::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(index, following)| pieces(following, index, recorder.clone())),
    )
    .map(move |piece| {
        let mut event = Event::default()
            .event(piece.name)
            .data(String::from_utf8_lossy(&piece.data));
        if let Some(seq) = piece.seq {
            cursor[piece.index] = seq;
            event = event.id(if single {
                seq.to_string()
            } else {
                cursor
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            });
        }
        Ok::<_, Infallible>(event)
    })
    // After the last stream ended: the turn's frame, if every reply was seen.
    .chain(futures::stream::iter(turn).filter_map(|turn| async move {
        let turn = std::mem::replace(&mut *turn.lock().ok()?, TurnRecorder::new(String::new(), 0));
        if !turn.is_finished() {
            return None;
        }
        let data = Native.encode_turn(&turn.into_turn())?;
        Some(Ok(Event::default()
            .event("turn_complete")
            .data(String::from_utf8_lossy(&data))))
    }))
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

/// One followed stream as pieces of the response, ending after its terminal
/// event; its events also go to `turn`, when it records a question.
fn pieces(
    following: Following,
    index: usize,
    turn: Option<Arc<Mutex<TurnRecorder>>>,
) -> BoxStream<'static, Piece> {
    futures::stream::unfold(Some(following), move |state| {
        let turn = turn.clone();
        async move {
            let mut following = state?;
            let mut batch: Vec<Arc<Sequenced>> = Vec::new();
            match following.subscription.next_into(&mut batch).await {
                Ok(true) => {
                    if let Some(turn) = &turn
                        && let Ok(mut turn) = turn.lock()
                    {
                        for event in &batch {
                            turn.observe(index, event);
                        }
                    }
                    let pieces: Vec<Piece> = batch
                        .iter()
                        .map(|event| Piece {
                            index,
                            seq: Some(event.seq),
                            name: Native.event_name(&event.event),
                            data: Native.encoded(event),
                        })
                        .collect();
                    Some((pieces, Some(following)))
                }
                Ok(false) => None,
                Err(_) => {
                    let stream_id = following.subscription.stream_id().clone();
                    if let Some(turn) = &turn
                        && let Ok(mut turn) = turn.lock()
                    {
                        turn.lost(index, &stream_id);
                    }
                    let data = Native.encode_reply(&Reply::FellBehind { stream_id });
                    let piece = Piece {
                        index,
                        seq: None,
                        name: "error",
                        data,
                    };
                    Some((vec![piece], None))
                }
            }
        }
    })
    .flat_map(futures::stream::iter)
    .boxed()
}
