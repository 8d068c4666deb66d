//! Plain HTTP: `POST /api/v1/chat` (waits for the whole reply), starting and
//! cancelling streams that run in the server, the model and persona lists, and
//! `GET /health`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use rill_protocol::Metadata;
use serde::Serialize;

use super::extract::{Caller, read_message_request};
use crate::error::Error;
use crate::events::{Failure, StreamEvent};
use crate::session::{Command, Following, Outcome, Session};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/chat", post(chat))
        .route("/api/v1/streams", post(start_streams))
        .route("/api/v1/streams/{id}/cancel", post(cancel))
        .route("/api/v1/models", get(models))
        .route("/api/v1/personas", get(personas))
        .route("/health", get(health))
}

/// A question asked over HTTP.
pub(crate) struct Asked {
    /// Its conversation.
    pub(crate) session_id: String,
    /// One followed stream per persona.
    pub(crate) streams: Vec<Following>,
    /// Whether it named several personas (`persona_ids`).
    pub(crate) several: bool,
}

/// Asks the question in `body` through `session`.
pub(crate) async fn ask(
    state: &AppState,
    session: &mut Session,
    body: Body,
) -> Result<Asked, Error> {
    let request = read_message_request(state, body).await?;
    let several = request.persona_ids.is_some();
    match session
        .handle(Command::Message(request))
        .await
        .map_err(|r| r.error)?
    {
        Outcome::Started {
            session_id,
            streams,
        } => Ok(Asked {
            session_id,
            streams,
            several,
        }),
        other => Err(Error::Internal(format!(
            "a message produced {other:?} instead of streams"
        ))),
    }
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
    let mut session = caller.session(&state);
    let Asked {
        session_id,
        streams,
        ..
    } = ask(&state, &mut session, body).await?;
    let mut replies = Vec::with_capacity(streams.len());
    for following in streams {
        replies.push(wait_for_reply(following).await?);
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
        session_id,
        stream_id: first.stream_id,
        metadata: first.metadata,
        replies: others,
    }))
}

/// Waits for a stream's terminal event and turns it into a reply or an error.
async fn wait_for_reply(mut following: Following) -> Result<Reply, Error> {
    let stream_id = following.subscription.stream_id().to_string();
    let mut last = None;
    while let Some(batch) = following
        .subscription
        .next_batch()
        .await
        .map_err(|_| Error::StreamNotFound)?
    {
        last = batch.into_iter().last();
    }
    let last = last.ok_or_else(|| Error::Internal("stream ended without events".into()))?;
    match &last.event {
        StreamEvent::Completed {
            response, metadata, ..
        } => Ok(Reply {
            persona_id: metadata.agent.clone(),
            stream_id,
            response: response.clone(),
            metadata: (**metadata).clone(),
        }),
        StreamEvent::Failed(failure) => Err(match failure {
            Failure::Provider(detail) => Error::Provider(detail.clone()),
            Failure::RateLimited(detail) => Error::RateLimited(detail.clone()),
            Failure::Crashed => Error::Internal("the stream ended unexpectedly".into()),
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
    let mut session = caller.session(&state);
    let Asked {
        session_id,
        streams,
        ..
    } = ask(&state, &mut session, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(StartedStreams {
            stream_ids: streams
                .iter()
                .map(|f| f.subscription.stream_id().to_string())
                .collect(),
            session_id,
        }),
    ))
}

/// `POST /api/v1/streams/{id}/cancel`.
async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(stream_id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), Error> {
    caller
        .session(&state)
        .handle(Command::Cancel {
            stream_id: stream_id.clone(),
        })
        .await
        .map_err(|r| r.error)?;
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

async fn models(
    State(state): State<AppState>,
    // The list may come from the provider: authenticated like everything else.
    _caller: Caller,
) -> Result<Json<Models>, Error> {
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

/// `GET /api/v1/personas`: who may answer (their system prompts stay here).
async fn personas(
    State(state): State<AppState>,
    // Authenticated like the rest of the API (`--auth-required`).
    _caller: Caller,
) -> Json<rill_protocol::PersonaList> {
    Json(state.engine.personas().list())
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
        connections: state.connections.count(),
        streams: state.engine.running(),
    })
}
