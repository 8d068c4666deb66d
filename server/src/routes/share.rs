//! Shared links: `POST/GET/DELETE /api/v1/conversations/{id}/share` for the
//! owner, and the public read-only page `/s/{token}` for anyone with the link,
//! rendered on the server (no script, no sidebar, nothing of the owner's
//! identity). A revoked or expired link answers 410 with a page that says
//! which; an unknown one 404.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rill_protocol::conversations::{ConversationDetail, ShareLink, ShareRequest};

use super::extract::{Caller, read_body};
use crate::conversations::{Shared, escape_html, utc_minute};
use crate::error::Error;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/conversations/{id}/share",
            get(live).post(share).delete(revoke),
        )
        .route("/s/{token}", get(page))
}

/// `POST /api/v1/conversations/{id}/share` with an optional
/// `{"expires_in": seconds}`: the conversation's link (the same token when it
/// already has a live one; the snapshot moves to now).
async fn share(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<ShareLink>, Error> {
    let bytes = read_body(&state, body).await?;
    let request: ShareRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        ShareRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidMessage(format!(
                "expected nothing or {{\"expires_in\": seconds}}: {e}"
            ))
        })?
    };
    Ok(Json(
        state
            .conversations
            .share(&identity, &id, request.expires_in)
            .await?,
    ))
}

/// `GET /api/v1/conversations/{id}/share`: its live link, or 404.
async fn live(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path(id): Path<String>,
) -> Result<Json<ShareLink>, Error> {
    Ok(Json(state.conversations.live_share(&identity, &id).await?))
}

/// `DELETE /api/v1/conversations/{id}/share`: 204; its links stop working.
async fn revoke(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    state.conversations.unshare(&identity, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `/s/{token}`: the shared conversation, or a page saying why it is not there.
async fn page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let (status, title, body) = match state.conversations.shared(&token).await {
        Ok(Shared::Live(detail)) => {
            let names = |persona: &str| {
                state
                    .engine
                    .personas()
                    .get(persona)
                    .map_or_else(|| persona.to_owned(), |p| p.name.clone())
            };
            let title = shown_title(&detail.conversation.title).to_owned();
            (StatusCode::OK, title, conversation_html(&detail, names))
        }
        Ok(Shared::Revoked) => (
            StatusCode::GONE,
            "Link revoked".to_owned(),
            notice_html(
                "This link was revoked",
                "Its owner stopped sharing this conversation.",
            ),
        ),
        Ok(Shared::Expired(at)) => (
            StatusCode::GONE,
            "Link expired".to_owned(),
            notice_html(
                "This link has expired",
                &format!("It stopped working on {}.", utc_minute(at)),
            ),
        ),
        Ok(Shared::Unknown) => (
            StatusCode::NOT_FOUND,
            "No such link".to_owned(),
            notice_html(
                "No such shared conversation",
                "Check the link: it may be mistyped.",
            ),
        ),
        Err(error) => {
            tracing::warn!(%error, "shared page");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable".to_owned(),
                notice_html(
                    "This page cannot be shown right now",
                    "Try again in a moment.",
                ),
            )
        }
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex, nofollow\">\
         <title>{} · shared from rill</title>\
         <link rel=\"stylesheet\" href=\"/pkg/rill.css\"></head>\
         <body><div class=\"app shared-page\">{body}</div></body></html>\n",
        escape_html(&title)
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    // No script at all; styles from this origin; images only from it too (a
    // reply's image cannot report who reads the page elsewhere).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    // A revoked link must stop working at once: nothing keeps a copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A title to show: the stored one, or a neutral one when it is blank.
fn shown_title(title: &str) -> &str {
    if title.trim().is_empty() {
        "Shared conversation"
    } else {
        title.trim()
    }
}

/// A page's body saying why there is nothing to show.
fn notice_html(heading: &str, text: &str) -> String {
    format!(
        "<main class=\"chat shared\"><section class=\"shared-notice\" role=\"status\">\
         <h1>{}</h1><p>{}</p></section></main>",
        escape_html(heading),
        escape_html(text)
    )
}

/// The conversation, read-only: questions as text, replies as the same safe
/// markdown the chat renders, each reply named by its persona (`name_of`).
fn conversation_html(detail: &ConversationDetail, name_of: impl Fn(&str) -> String) -> String {
    let mut html = format!(
        "<main class=\"chat shared\"><header class=\"shared-head\"><h1>{}</h1>\
         <p class=\"shared-note\">A read-only copy of a conversation, shared from rill.</p>\
         </header><section class=\"log\" aria-label=\"Conversation\">",
        escape_html(shown_title(&detail.conversation.title))
    );
    if detail.messages.is_empty() {
        html.push_str("<p class=\"empty\">This conversation has no messages.</p>");
    }
    for message in &detail.messages {
        let id = escape_html(&message.id);
        if message.role == "user" {
            html.push_str(&format!(
                "<article class=\"msg user\" data-role=\"user\" id=\"m-{id}\">\
                 <div class=\"bubble\"><p class=\"user-text\">{}</p></div></article>",
                escape_html(&message.content)
            ));
            continue;
        }
        let who = message
            .persona_id
            .as_deref()
            .map_or_else(|| "Assistant".to_owned(), &name_of);
        let note = match message.status.as_str() {
            "cancelled" => "<p class=\"note stopped\">Stopped: this reply was cancelled.</p>",
            "interrupted" => {
                "<p class=\"note interrupted\">Interrupted: the server restarted before this reply finished.</p>"
            }
            "error" => "<p class=\"note error\">This reply ended with an error.</p>",
            "streaming" => "<p class=\"note\">Still being written when this page was loaded.</p>",
            _ => "",
        };
        html.push_str(&format!(
            "<article class=\"msg assistant\" data-role=\"assistant\" id=\"m-{id}\">\
             <div class=\"bubble\"><p class=\"persona-name\">{}</p>\
             <div class=\"markdown\">{}</div>{note}</div></article>",
            escape_html(&who),
            rill_app::markdown::render(&message.content)
        ));
    }
    html.push_str("</section></main>");
    html
}
