//! Pages: the Leptos chat UI (server-rendered, then hydrated), the plain protocol
//! test page at `/ws/test`, and the compiled site's files (embedded in release
//! builds, read from `--site-root` otherwise).

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use leptos_axum::{LeptosRoutes, generate_route_list};

use crate::AppState;

pub(crate) fn router(state: &AppState) -> Router<AppState> {
    let options = state.leptos.clone();
    let routes = generate_route_list(rill_app::App);
    Router::new()
        .route("/ws/test", get(ws_test))
        .leptos_routes(state, routes, move || rill_app::shell(options.clone()))
        .fallback(site_file)
}

/// The protocol test page (seed 003): connect, authenticate, send, watch raw frames.
async fn ws_test() -> Response {
    let mut response = Html(include_str!("../../assets/ws_test.html")).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Serves a file of the compiled site, or 404.
async fn site_file(State(state): State<AppState>, request: Request) -> Response {
    #[cfg(feature = "embed")]
    {
        let _ = &state;
        crate::assets::serve(request.uri().path(), request.headers())
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
pub(crate) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not found\n").into_response()
}
