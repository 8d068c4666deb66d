//! `POST /api/v1/math`: TeX formulas to MathML, for the browser's chat (its
//! bundle carries no TeX renderer: see `rill_app::math`). At most
//! `MAX_FORMULAS` formulas of `MAX_TEX_CHARS` characters a request, within the
//! body limit; a formula that does not parse gets its reason, not a failure
//! of the request.

use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use rill_app::math::{MAX_FORMULAS, MathRequest, MathResponse, render};

use super::extract::{Caller, read_body};
use crate::error::Error;
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/math", post(typeset))
}

async fn typeset(
    State(state): State<AppState>,
    Caller(..): Caller,
    body: Body,
) -> Result<Json<MathResponse>, Error> {
    let bytes = read_body(&state, body).await?;
    let request: MathRequest = serde_json::from_slice(&bytes).map_err(|e| {
        Error::InvalidMessage(format!(
            "expected {{\"formulas\": [{{\"tex\": \"…\", \"display\": false}}]}}: {e}"
        ))
    })?;
    if request.formulas.len() > MAX_FORMULAS {
        return Err(Error::InvalidMessage(format!(
            "at most {MAX_FORMULAS} formulas a request"
        )));
    }
    // Parsing is quick and bounded (length and nesting are checked first),
    // but it is CPU work: off the async workers.
    let results = tokio::task::spawn_blocking(move || {
        request.formulas.iter().map(render).collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Error::Internal(format!("math: {e}")))?;
    Ok(Json(MathResponse { results }))
}
