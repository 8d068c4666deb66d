//! Documents over HTTP, under `/api/v1/projects/{project_id}/documents`:
//! upload (multipart, field `file`; answered `202 processing` at once, the
//! rest announced to the project's room), list, read, delete. Projects are
//! owned as rooms are: an unknown project is created for the uploader;
//! someone else's is `FORBIDDEN`.

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use rill_protocol::documents::{DocumentInfo, DocumentList, ProjectList};

use super::extract::Caller;
use crate::error::Error;
use crate::state::AppState;

/// What a multipart body may carry besides the file (boundaries, headers).
const MULTIPART_OVERHEAD: usize = 64 * 1024;

pub(crate) fn router(state: &AppState) -> Router<AppState> {
    let limit = state.documents.limits().max_bytes + MULTIPART_OVERHEAD;
    Router::new()
        .route("/api/v1/projects", get(projects))
        .route(
            "/api/v1/projects/{project_id}/documents",
            post(upload).get(list).layer(DefaultBodyLimit::max(limit)),
        )
        .route(
            "/api/v1/projects/{project_id}/documents/{document_id}",
            get(read).delete(delete),
        )
}

/// `POST …/documents`: the multipart field `file` (its file name and
/// content type are read from the part).
async fn upload(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path(project_id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<DocumentInfo>), Error> {
    let mut multipart = multipart.map_err(|e| {
        Error::InvalidMessage(format!(
            "upload the file as multipart/form-data with a part named \"file\" ({e})"
        ))
    })?;
    let limit = state.documents.limits().max_bytes;
    let too_large = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::DocumentTooLarge { limit }
        } else {
            Error::InvalidMessage(format!("the multipart body is malformed: {e}"))
        }
    };
    while let Some(mut field) = multipart.next_field().await.map_err(too_large)? {
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().unwrap_or("document").to_owned();
        let content_type = field.content_type().map(str::to_owned);
        let mut content = Vec::new();
        while let Some(piece) = field.chunk().await.map_err(too_large)? {
            if content.len() + piece.len() > limit {
                return Err(Error::DocumentTooLarge { limit });
            }
            content.extend_from_slice(&piece);
        }
        let document = state
            .documents
            .upload(
                &identity,
                &project_id,
                &filename,
                content_type.as_deref(),
                content,
            )
            .await?;
        return Ok((StatusCode::ACCEPTED, Json(document)));
    }
    Err(Error::InvalidMessage(
        "the upload has no part named \"file\"".into(),
    ))
}

/// `GET /api/v1/projects`: the caller's projects, newest first.
async fn projects(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
) -> Result<Json<ProjectList>, Error> {
    Ok(Json(ProjectList {
        projects: state.documents.projects(&identity).await?,
    }))
}

/// `GET …/documents`: newest first.
async fn list(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path(project_id): Path<String>,
) -> Result<Json<DocumentList>, Error> {
    let documents = state.documents.list(&identity, &project_id).await?;
    Ok(Json(DocumentList {
        project_id,
        documents,
    }))
}

/// `GET …/documents/{document_id}`.
async fn read(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path((project_id, document_id)): Path<(String, String)>,
) -> Result<Json<DocumentInfo>, Error> {
    Ok(Json(
        state
            .documents
            .get(&identity, &project_id, &document_id)
            .await?,
    ))
}

/// `DELETE …/documents/{document_id}`: 204.
async fn delete(
    State(state): State<AppState>,
    Caller(identity, _): Caller,
    Path((project_id, document_id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    state
        .documents
        .delete(&identity, &project_id, &document_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
