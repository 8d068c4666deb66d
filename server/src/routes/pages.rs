//! Pages: the Leptos chat UI (server-rendered, then hydrated), the plain protocol
//! test page at `/ws/test`, seed 000's plain-text chat page at `/chat` and its
//! broadcast page at `/broadcast`, and the
//! compiled site's files (embedded in release builds, read from `--site-root`
//! otherwise).

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use leptos::prelude::provide_context;
use rill_app::history::InitialChat;

use super::conversations::{GUEST_TTL_SECS, token_cookie};
use crate::auth::Identity;
use crate::error::Error;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    // Server rendering spawns its tasks on the global executor (leptos_routes
    // would set it; these routes render by hand). Already set is fine.
    let _ = any_spawner::Executor::init_tokio();
    Router::new()
        .route("/", get(home))
        .route("/c/{id}", get(conversation))
        .route("/ws/test", get(ws_test))
        .route("/chat", get(plain_chat))
        .route("/broadcast", get(broadcast_page))
        .fallback(site_file)
}

/// `/`: a new chat, with the sidebar.
async fn home(State(state): State<AppState>, request: Request) -> Response {
    render(state, None, request).await
}

/// `/c/{id}`: a conversation, its history rendered on the server.
async fn conversation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    render(state, Some(id), request).await
}

/// Renders the chat page for the browser's identity: its `rill_token` cookie,
/// or a new guest identity (set as the cookie) on a first visit or when the
/// cookie is stale. The conversations are loaded before rendering, so the first
/// paint has the history; the same data is embedded for hydration.
async fn render(state: AppState, id: Option<String>, request: Request) -> Response {
    let known = super::cookie_token(request.headers())
        .and_then(|token| state.keys.identity(token).ok())
        .filter(|identity| !matches!(identity, Identity::Anonymous))
        // With authentication required, only a user sees any history.
        .filter(|identity| !state.config.auth_required || identity.is_authenticated());
    let (identity, new_cookie) = match known {
        Some(identity) => (identity, None),
        None if state.config.auth_required => (Identity::Anonymous, None),
        None => {
            let (guest, token) = state.keys.mint_guest(GUEST_TTL_SECS);
            (Identity::Guest(guest), Some(token_cookie(&token)))
        }
    };
    let initial = initial_chat(&state, &identity, id.as_deref()).await;
    let options = state.leptos.clone();
    // One nonce per page: the hydration scripts carry it, the policy names it.
    let nonce = leptos::nonce::Nonce::new();
    let policy = content_security_policy(&nonce);
    let handler = leptos_axum::render_app_to_stream_with_context(
        move || {
            provide_context(initial.clone());
            provide_context(nonce.clone());
        },
        move || rill_app::shell(options.clone()),
    );
    let mut response = handler(request).await;
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    if let Some(cookie) = new_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    // The page carries per-user data.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

/// The sidebar's first page and the open conversation, as far as they load.
async fn initial_chat(state: &AppState, identity: &Identity, id: Option<&str>) -> InitialChat {
    let mut initial = InitialChat::default();
    if identity.owner().is_some() {
        match state.conversations.list(identity, 50, None).await {
            Ok(page) => {
                initial.conversations = page.conversations;
                initial.next = page.next;
            }
            Err(error) => tracing::warn!(%error, "page: cannot list conversations"),
        }
    }
    if let Some(id) = id {
        match state.conversations.detail(identity, id).await {
            Ok(conversation) => initial.current = Some(conversation),
            Err(error) => {
                initial.problem = Some(match error {
                    Error::Forbidden => "This conversation belongs to someone else.".to_owned(),
                    Error::NotFound(_) => {
                        "This conversation does not exist (it may have been deleted).".to_owned()
                    }
                    other => other.client_message(),
                });
            }
        }
    }
    initial
}

/// The chat page's Content-Security-Policy: scripts only from this origin or
/// carrying the page's nonce (no injected script runs, even if markup got
/// through), wasm allowed, images only from this origin (a reply's markdown
/// image cannot carry the conversation to another server), connections only
/// to this origin, and no framing.
fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The protocol test page (seed 003): connect, authenticate, send, watch raw frames.
async fn ws_test() -> Response {
    inline_page(include_str!("../../assets/ws_test.html"))
}

/// A self-contained page whose script and style are inline: its policy allows
/// that and nothing from elsewhere.
fn inline_page(html: &'static str) -> Response {
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
             frame-ancestors 'none'",
        ),
    );
    response
}

/// Seed 000's plain streaming chat page (raw text over `/ws/chat`), rill's
/// own version: every text is inserted as text, never as HTML.
async fn plain_chat() -> Response {
    inline_page(include_str!("../../assets/chat.html"))
}

/// Seed 000's broadcast test page (over `/ws/broadcast`): what one tab sends,
/// every tab shows.
async fn broadcast_page() -> Response {
    inline_page(include_str!("../../assets/broadcast.html"))
}

/// Serves a file of the compiled site, or 404.
async fn site_file(State(state): State<AppState>, request: Request) -> Response {
    #[cfg(feature = "embed")]
    {
        let _ = &state;
        crate::assets::serve(request.uri().path(), request.headers()).unwrap_or_else(not_found)
    }
    #[cfg(not(feature = "embed"))]
    {
        use tower::ServiceExt;
        let service = tower_http::services::ServeDir::new(&state.config.site_root)
            .precompressed_br()
            .precompressed_gzip();
        match service.oneshot(request).await {
            Ok(response) if response.status() != StatusCode::NOT_FOUND => response.into_response(),
            _ => not_found(),
        }
    }
}

/// The answer for paths that are neither a route nor a file.
fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not found\n").into_response()
}
