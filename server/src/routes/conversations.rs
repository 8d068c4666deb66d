//! Conversations over HTTP: list (paged, newest first), read, rename, delete;
//! and `POST /api/v1/auth/guest`, which gives a browser an anonymous identity
//! to own its conversations.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rill_protocol::Usage;
use rill_protocol::conversations::{
    ConversationDetail, ConversationList, ConversationMessage, ConversationSummary, GuestToken,
    RenameConversation,
};
use serde::Deserialize;

use super::http::Caller;
use crate::AppState;
use crate::auth::Identity;
use crate::error::Error;
use crate::store::{Conversation, StoredMessage};

/// How long a guest identity lasts (a year; each page load renews its cookie).
pub const GUEST_TTL_SECS: u64 = 365 * 24 * 3600;

/// Longest title, in characters.
const MAX_TITLE_CHARS: usize = 200;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/guest", post(guest))
        .route("/api/v1/conversations", get(list))
        .route(
            "/api/v1/conversations/{id}",
            get(read).patch(rename).delete(delete),
        )
}

/// The `Set-Cookie` value that keeps `token` in the browser.
pub(crate) fn token_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{}={token}; Path=/; Max-Age={GUEST_TTL_SECS}; HttpOnly; SameSite=Lax",
        super::TOKEN_COOKIE
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /api/v1/auth/guest`: a new anonymous identity (also set as the cookie).
/// Refused when the server requires authentication: guests could not chat.
async fn guest(State(state): State<AppState>) -> Result<Response, Error> {
    if state.config.auth_required {
        return Err(Error::AuthRequired);
    }
    let (_, token) = state.keys.mint_guest(GUEST_TTL_SECS);
    let cookie = token_cookie(&token);
    let mut response = (
        StatusCode::CREATED,
        Json(GuestToken {
            token,
            expires_in: GUEST_TTL_SECS,
        }),
    )
        .into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// The owner key of a caller who must have an identity (listing is per owner:
/// conversations without a token are reachable by id only).
fn owner_required(identity: &Identity) -> Result<String, Error> {
    identity.owner().ok_or(Error::AuthRequired)
}

/// `?limit=&after=` of the list.
#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    after: Option<String>,
}

/// `GET /api/v1/conversations`.
async fn list(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<ConversationList>, Error> {
    let owner = owner_required(&identity)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Error::InvalidMessage(
            "limit must be between 1 and 200".into(),
        ));
    }
    let page = state
        .engine
        .store()
        .conversations(&owner, limit, query.after.as_deref())
        .await?;
    Ok(Json(ConversationList {
        conversations: page.conversations.into_iter().map(summary).collect(),
        next: page.next,
    }))
}

/// `GET /api/v1/conversations/{id}`.
async fn read(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> Result<Json<ConversationDetail>, Error> {
    Ok(Json(detail(&state, &identity, &id).await?))
}

/// A conversation and its messages, if `identity` owns it.
pub(crate) async fn detail(
    state: &AppState,
    identity: &Identity,
    id: &str,
) -> Result<ConversationDetail, Error> {
    let owner = identity.conversation_owner();
    let store = state.engine.store();
    let conversation = store.owned_conversation(&owner, id).await?;
    let messages = store.messages(&owner, id).await?;
    Ok(ConversationDetail {
        conversation: summary(conversation),
        messages: messages.into_iter().map(message).collect(),
    })
}

/// `PATCH /api/v1/conversations/{id}` with `{"title": …}`.
async fn rename(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<ConversationSummary>, Error> {
    let bytes = super::http::read_body(&state, body).await?;
    let RenameConversation { title } = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidMessage(format!("expected {{\"title\": \"…\"}}: {e}")))?;
    let title = title.trim();
    if title.is_empty()
        || title.chars().count() > MAX_TITLE_CHARS
        || title.chars().any(char::is_control)
    {
        return Err(Error::InvalidMessage(format!(
            "title must be 1 to {MAX_TITLE_CHARS} characters without control characters"
        )));
    }
    let owner = identity.conversation_owner();
    let renamed = state.engine.store().rename(&owner, &id, title).await?;
    Ok(Json(summary(renamed)))
}

/// `DELETE /api/v1/conversations/{id}`: 204; replies still generating in it are
/// cancelled.
async fn delete(
    State(state): State<AppState>,
    Caller(identity): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let owner = identity.conversation_owner();
    let store = state.engine.store();
    let messages = store.messages(&owner, &id).await?;
    store.delete_conversation(&owner, &id).await?;
    for stream_id in messages.iter().filter_map(|m| m.stream_id.as_deref()) {
        if let Some(stream) = state.engine.hub().get(stream_id) {
            stream.cancel();
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn summary(conversation: Conversation) -> ConversationSummary {
    ConversationSummary {
        id: conversation.id,
        title: conversation.title,
        customer_id: conversation.customer_id,
        created_at: conversation.created_at,
        updated_at: conversation.updated_at,
    }
}

fn message(message: StoredMessage) -> ConversationMessage {
    ConversationMessage {
        id: message.id,
        role: message.role,
        persona_id: message.persona,
        model: message.model,
        content: message.content,
        status: message.status.as_str().to_owned(),
        usage: message.usage.map(|(prompt, completion)| Usage {
            prompt_tokens: u32::try_from(prompt).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
        }),
        stream_id: message.stream_id,
        created_at: message.created_at,
    }
}
