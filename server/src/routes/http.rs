//! Plain HTTP: `POST /api/v1/chat` (waits for the whole reply), starting and
//! cancelling streams that run in the server, and `GET /health`.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use rill_protocol::client::parse_message_request;
use rill_protocol::{ErrorCode, MessageRequest, Metadata, ServerEvent};
use serde::Serialize;

use crate::AppState;
use crate::auth::Identity;
use crate::error::Error;
use crate::hub::Stream;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/chat", post(chat))
        .route("/api/v1/streams", post(start_streams))
        .route("/api/v1/streams/{id}/cancel", post(cancel))
        .route("/api/v1/models", get(models))
        .route("/health", get(health))
}

/// `?token=`: browsers' `EventSource` cannot send headers.
#[derive(Debug, Default, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The caller's identity from `?token=`, `Authorization: Bearer` or the
/// `rill_token` cookie; a bad explicit token is 401 AUTH_FAILED.
pub struct Caller(pub Identity);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let query_token = Query::<TokenQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|Query(q)| q.token);
        super::caller_identity(state, &parts.headers, query_token.as_deref()).map(Caller)
    }
}

impl Caller {
    /// The identity, if it may start replies on this server.
    pub(crate) fn may_start(self, state: &AppState) -> Result<Identity, Error> {
        if state.config.auth_required && !self.0.is_authenticated() {
            return Err(Error::AuthRequired);
        }
        Ok(self.0)
    }
}

/// Reads a request body up to the frame size limit (`MESSAGE_TOO_LARGE` past it).
pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<bytes::Bytes, Error> {
    let limit = state.config.max_frame_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Error::MessageTooLarge { limit })
}

/// Reads a JSON body of the `message` fields, enforcing the frame size limit.
pub(crate) async fn read_message_request(
    state: &AppState,
    body: Body,
) -> Result<MessageRequest, Error> {
    Ok(parse_message_request(&read_body(state, body).await?)?)
}

/// One persona's finished reply.
#[derive(Debug, Serialize)]
struct Reply {
    persona_id: String,
    stream_id: String,
    response: String,
    metadata: Metadata,
}

/// The answer of `POST /api/v1/chat` (seed 003's REST shape, plus ids).
#[derive(Debug, Serialize)]
struct ChatResponse {
    response: String,
    session_id: String,
    stream_id: String,
    metadata: Metadata,
    /// Every persona's reply when several were asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replies: Vec<Reply>,
}

async fn chat(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<Json<ChatResponse>, Error> {
    let identity = caller.may_start(&state)?;
    let request = read_message_request(&state, body).await?;
    let started = state.engine.start(&identity, request).await?;
    let mut replies = Vec::with_capacity(started.streams.len());
    for stream in &started.streams {
        replies.push(wait_for_reply(stream).await?);
    }
    let first = replies.remove(0);
    let others = if replies.is_empty() {
        Vec::new()
    } else {
        let mut all = vec![Reply {
            persona_id: first.persona_id.clone(),
            stream_id: first.stream_id.clone(),
            response: first.response.clone(),
            metadata: first.metadata.clone(),
        }];
        all.extend(replies);
        all
    };
    Ok(Json(ChatResponse {
        response: first.response,
        session_id: started.session_id,
        stream_id: first.stream_id,
        metadata: first.metadata,
        replies: others,
    }))
}

/// Waits for a stream's terminal event and turns it into a reply or an error.
async fn wait_for_reply(stream: &std::sync::Arc<Stream>) -> Result<Reply, Error> {
    let mut subscription = stream
        .attach(0)
        .map_err(|_| Error::Internal("a fresh stream refused attach(0)".into()))?;
    let mut last = None;
    while let Some(batch) = subscription
        .next_batch()
        .await
        .map_err(|_| Error::StreamNotFound)?
    {
        last = batch.into_iter().last();
    }
    let last = last.ok_or_else(|| Error::Internal("stream ended without events".into()))?;
    match serde_json::from_str::<ServerEvent>(last.text.as_str()) {
        Ok(ServerEvent::Complete {
            response, metadata, ..
        }) => Ok(Reply {
            persona_id: metadata.agent.clone(),
            stream_id: stream.id().to_owned(),
            response,
            metadata,
        }),
        Ok(ServerEvent::Error { code, error, .. }) => Err(match code {
            ErrorCode::ProviderError => Error::Provider(error),
            ErrorCode::RateLimited => Error::RateLimited(error),
            _ => Error::Internal(error),
        }),
        other => Err(Error::Internal(format!(
            "unexpected terminal event: {other:?}"
        ))),
    }
}

/// The answer of `POST /api/v1/streams`.
#[derive(Debug, Serialize)]
struct StartedStreams {
    stream_ids: Vec<String>,
    session_id: String,
}

/// `POST /api/v1/streams`: starts the reply in the server and returns at once; any
/// transport then attaches (SSE `…/events`, long-poll `…/poll`, WebSocket `resume`).
async fn start_streams(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<StartedStreams>), Error> {
    let identity = caller.may_start(&state)?;
    let request = read_message_request(&state, body).await?;
    let started = state.engine.start(&identity, request).await?;
    Ok((
        StatusCode::CREATED,
        Json(StartedStreams {
            stream_ids: started.streams.iter().map(|s| s.id().to_owned()).collect(),
            session_id: started.session_id,
        }),
    ))
}

/// `POST /api/v1/streams/{id}/cancel`.
async fn cancel(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(stream_id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), Error> {
    let stream = state.engine.stream_for(&identity, &stream_id)?;
    stream.cancel();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "stream_id": stream_id, "status": "cancelling" })),
    ))
}

/// `GET /api/v1/models`.
#[derive(Debug, Serialize)]
struct Models {
    provider: &'static str,
    default: String,
    models: Vec<ModelEntry>,
}

#[derive(Debug, Serialize)]
struct ModelEntry {
    id: String,
}

async fn models(State(state): State<AppState>) -> Result<Json<Models>, Error> {
    let default = state.engine.default_model();
    let mut ids = state.engine.models().await?;
    // The default is always offered, even if the upstream list omits it.
    if !ids.contains(&default) {
        ids.insert(0, default.clone());
    }
    Ok(Json(Models {
        provider: state.engine.provider_name(),
        default,
        models: ids.into_iter().map(|id| ModelEntry { id }).collect(),
    }))
}

/// `GET /health`.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_s: u64,
    connections: usize,
    streams: usize,
}

async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started.elapsed().as_secs(),
        connections: state.connections.load(std::sync::atomic::Ordering::Relaxed),
        streams: state.engine.hub().running(),
    })
}
