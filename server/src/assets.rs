//! The compiled site (wasm, js, css), embedded into the release binary so rill
//! serves its UI from any working directory. Precompressed `.br`/`.gz` variants
//! made by the build are served when the client accepts them.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "$CARGO_MANIFEST_DIR/../target/site"]
struct Site;

/// Serves `path` from the embedded site, honouring `Accept-Encoding` and
/// `If-None-Match`; `None` if the site has no such file.
pub(crate) fn serve(path: &str, headers: &HeaderMap) -> Option<Response> {
    let path = path.trim_start_matches('/');
    if path.is_empty() || path.ends_with(".br") || path.ends_with(".gz") {
        return None;
    }
    let plain = Site::get(path)?;
    let etag = format!("\"{}\"", hex(&plain.metadata.sha256_hash()[..12]));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag))
    {
        return Some((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let accepts = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (body, encoding) = [("br", ".br"), ("gzip", ".gz")]
        .iter()
        .find_map(|(name, suffix)| {
            accepts
                .split(',')
                .any(|e| e.trim().split(';').next() == Some(name))
                .then(|| Site::get(&format!("{path}{suffix}")))
                .flatten()
                .map(|file| (file.data, Some(*name)))
        })
        .unwrap_or((plain.data, None));
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut response = body.into_owned().into_response();
    let response_headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
        response_headers.insert(header::CONTENT_TYPE, value);
    }
    if let Some(encoding) = encoding {
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response_headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    // File names are not content-hashed: revalidate every time (cheap with the ETag).
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, value);
    }
    Some(response)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
