//! Conversations over HTTP: list (paged, newest first), read, rename, delete;
//! and `POST /api/v1/auth/guest`, which gives a browser an anonymous identity
//! to own its conversations.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rill_protocol::conversations::{
    ConversationDetail, ConversationList, ConversationSummary, GuestToken, RenameConversation,
    SearchResults, SelectVersion,
};
use serde::Deserialize;

use super::extract::{Caller, read_body};
use crate::error::Error;
use crate::state::AppState;

/// How long a guest identity lasts (a year; each page load renews its cookie).
pub const GUEST_TTL_SECS: u64 = 365 * 24 * 3600;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/guest", post(guest))
        .route("/api/v1/conversations", get(list))
        .route(
            "/api/v1/conversations/{id}",
            get(read).patch(rename).delete(delete),
        )
        .route("/api/v1/conversations/{id}/export", get(export))
        .route("/api/v1/conversations/{id}/select", post(select))
        .route("/api/v1/search", get(search))
}

/// `?q=&limit=&cursor=` of a search.
#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: Option<String>,
    /// Read as text so a bad number gets rill's error, not the extractor's.
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/search?q=`: the caller's messages that contain every word.
async fn search(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResults>, Error> {
    let Query(query) =
        query.map_err(|e| Error::InvalidMessage(format!("bad search parameters: {e}")))?;
    let q = query
        .q
        .ok_or_else(|| Error::InvalidMessage("q is required: the words to search for".into()))?;
    let limit = match query.limit.as_deref() {
        None => 20,
        Some(text) => text.parse().map_err(|_| {
            Error::InvalidMessage(format!(
                "limit must be a number between 1 and {}",
                crate::conversations::MAX_SEARCH_PAGE
            ))
        })?,
    };
    Ok(Json(
        state
            .conversations
            .search(&identity, &q, limit, query.cursor.as_deref())
            .await?,
    ))
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

/// `?limit=&after=` of the list.
#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    after: Option<String>,
}

/// `GET /api/v1/conversations`.
async fn list(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<ConversationList>, Error> {
    let limit = query.limit.unwrap_or(50);
    Ok(Json(
        state
            .conversations
            .list(&identity, limit, query.after.as_deref())
            .await?,
    ))
}

/// `GET /api/v1/conversations/{id}`.
async fn read(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path(id): Path<String>,
) -> Result<Json<ConversationDetail>, Error> {
    Ok(Json(state.conversations.detail(&identity, &id).await?))
}

/// `?format=` of the export.
#[derive(Debug, Deserialize)]
struct ExportQuery {
    format: Option<String>,
}

/// `GET /api/v1/conversations/{id}/export?format=markdown|json`: the
/// conversation as a file to download.
async fn export(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path(id): Path<String>,
    Query(query): Query<ExportQuery>,
) -> Result<Response, Error> {
    let detail = state.conversations.detail(&identity, &id).await?;
    let (body, content_type, extension) = match query.format.as_deref().unwrap_or("markdown") {
        "markdown" | "md" => {
            let names = |persona: &str| {
                state
                    .engine
                    .personas()
                    .get(persona)
                    .map_or_else(|| persona.to_owned(), |p| p.name.clone())
            };
            (
                crate::conversations::to_markdown(&detail, names),
                "text/markdown; charset=utf-8",
                "md",
            )
        }
        "json" => (
            serde_json::to_string_pretty(&detail)
                .map_err(|e| Error::Internal(format!("export: {e}")))?,
            "application/json",
            "json",
        ),
        _ => {
            return Err(Error::InvalidMessage(
                "format must be markdown or json".into(),
            ));
        }
    };
    let filename = format!(
        "rill-{}.{extension}",
        crate::conversations::file_stem(&detail.conversation.title)
    );
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /api/v1/conversations/{id}/select` with `{"message_id": …}`: shows
/// that version; answers with the conversation as it now shows.
async fn select(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<ConversationDetail>, Error> {
    let bytes = read_body(&state, body).await?;
    let SelectVersion { message_id } = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidMessage(format!("expected {{\"message_id\": \"…\"}}: {e}")))?;
    Ok(Json(
        state
            .conversations
            .select(&identity, &id, &message_id)
            .await?,
    ))
}

/// `PATCH /api/v1/conversations/{id}` with `{"title": …}`.
async fn rename(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<ConversationSummary>, Error> {
    let bytes = read_body(&state, body).await?;
    let RenameConversation { title } = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidMessage(format!("expected {{\"title\": \"…\"}}: {e}")))?;
    Ok(Json(
        state.conversations.rename(&identity, &id, &title).await?,
    ))
}

/// `DELETE /api/v1/conversations/{id}`: 204; replies still generating in it are
/// cancelled.
async fn delete(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    state.conversations.delete(&identity, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
