//! The server's one error type, and the only place that decides what a client sees
//! of an error: its protocol code, its HTTP status and its human message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rill_protocol::{ErrorCode, FrameError, ServerEvent};

use crate::auth::TokenError;
use crate::store::StoreError;

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `message` without authentication on a server that requires it. 401.
    #[error(
        "Authentication required: send an auth frame, ?token= or an Authorization: Bearer header"
    )]
    AuthRequired,
    /// A presented token was rejected. 401.
    #[error("{0}")]
    AuthFailed(#[from] TokenError),
    /// A service call without the server's `--api-key`. 401 (`AUTH_FAILED`).
    #[error("This needs the server's API key: Authorization: Bearer <key>")]
    ApiKeyRequired,
    /// A message with no text. 400.
    #[error("Message is empty")]
    EmptyMessage,
    /// A frame or body the protocol cannot accept. 400.
    #[error("{0}")]
    InvalidMessage(String),
    /// A frame or body over the size limit. 413.
    #[error("Message is too large: the limit is {limit} bytes")]
    MessageTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A question longer than `--max-message-chars`. 413.
    #[error("The question is {chars} characters long; the limit is {limit}")]
    QuestionTooLong {
        /// Its length.
        chars: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Too many requests from this client right now. 429.
    #[error("{0}")]
    RateLimited(String),
    /// Questions faster than the configured rate: retry after the wait. 429.
    #[error("Too many questions {whom}: try again in {retry_after_ms} ms")]
    TooFast {
        /// Whose rate: "from this user", "from this address".
        whom: &'static str,
        /// How long until one more is allowed.
        retry_after_ms: u64,
    },
    /// The server is at capacity. 503.
    #[error("The server is at capacity: try again shortly")]
    Overloaded,
    /// An unknown or expired stream. 404.
    #[error("Stream not found or expired")]
    StreamNotFound,
    /// No such conversation or message (for this caller). 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// Someone else's resource. 403.
    #[error("Forbidden: this belongs to another user")]
    Forbidden,
    /// A browser page of an origin this server does not allow (`--allow-origin`). 403.
    #[error(
        "Origin {0} is not allowed here (the server's --allow-origin lists the origins it accepts)"
    )]
    OriginNotAllowed(String),
    /// A valid request for something this server does not do. 400.
    #[error("{0}")]
    Unsupported(&'static str),
    /// An upload rill cannot read (the text says why). 415.
    #[error("{0}")]
    UnsupportedDocument(String),
    /// An upload over `--max-document-bytes`. 413.
    #[error("The document is too large: the limit is {limit} bytes")]
    DocumentTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The model provider failed (the text says how). 502.
    #[error("{0}")]
    Provider(String),
    /// A failure of ours; the detail is logged, the client sees a generic text. 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<FrameError> for Error {
    fn from(error: FrameError) -> Self {
        Error::InvalidMessage(error.to_string())
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Forbidden => Error::Forbidden,
            StoreError::NotFound => Error::NotFound("Conversation not found"),
            StoreError::Database(error) => Error::Internal(format!("store: {error}")),
            other @ (StoreError::Migration(_)
            | StoreError::WriterGone
            | StoreError::UnexpectedAnswer(_)) => Error::Internal(format!("store: {other}")),
        }
    }
}

impl Error {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::AuthRequired => ErrorCode::AuthRequired,
            Error::AuthFailed(_) | Error::ApiKeyRequired => ErrorCode::AuthFailed,
            Error::EmptyMessage => ErrorCode::EmptyMessage,
            Error::InvalidMessage(_) => ErrorCode::InvalidMessage,
            Error::MessageTooLarge { .. } | Error::QuestionTooLong { .. } => {
                ErrorCode::MessageTooLarge
            }
            Error::RateLimited(_) | Error::TooFast { .. } => ErrorCode::RateLimited,
            Error::Overloaded => ErrorCode::Overloaded,
            Error::StreamNotFound => ErrorCode::StreamNotFound,
            Error::Forbidden | Error::OriginNotAllowed(_) => ErrorCode::Forbidden,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Unsupported(_) => ErrorCode::Unsupported,
            Error::UnsupportedDocument(_) => ErrorCode::UnsupportedDocument,
            Error::DocumentTooLarge { .. } => ErrorCode::DocumentTooLarge,
            Error::Provider(_) => ErrorCode::ProviderError,
            Error::Internal(_) => ErrorCode::ProcessingError,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Error::AuthRequired | Error::AuthFailed(_) | Error::ApiKeyRequired => {
                StatusCode::UNAUTHORIZED
            }
            Error::EmptyMessage | Error::InvalidMessage(_) | Error::Unsupported(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::MessageTooLarge { .. }
            | Error::QuestionTooLong { .. }
            | Error::DocumentTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedDocument(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::RateLimited(_) | Error::TooFast { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Error::StreamNotFound | Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Forbidden | Error::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            Error::Provider(_) => StatusCode::BAD_GATEWAY,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The human text a client sees. Internal details never leave the server.
    pub fn client_message(&self) -> String {
        match self {
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "Internal error while processing the request".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// How long the client should wait before trying again, if this says.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::TooFast { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }

    /// The `error` event for this failure (not tied to a stream).
    pub fn to_event(&self) -> ServerEvent {
        let mut event = ServerEvent::error(self.code(), self.client_message());
        if let ServerEvent::Error { retry_after_ms, .. } = &mut event {
            *retry_after_ms = self.retry_after_ms();
        }
        event
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": self.client_message(),
            "code": self.code(),
        });
        let mut response = match self.retry_after_ms() {
            Some(ms) => {
                body["retry_after_ms"] = ms.into();
                let mut response = (self.status(), Json(body)).into_response();
                // Whole seconds, rounded up (RFC 9110).
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
                response
            }
            None => (self.status(), Json(body)).into_response(),
        };
        if matches!(self, Error::Overloaded) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Result with the server's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_do_not_reach_clients() {
        let error = Error::Internal("db password=hunter2".into());
        assert!(!error.client_message().contains("hunter2"));
        assert_eq!(error.code(), ErrorCode::ProcessingError);
    }

    #[test]
    fn every_variant_has_a_distinct_documented_code() {
        let all = [
            Error::AuthRequired,
            Error::AuthFailed(TokenError::Invalid),
            Error::EmptyMessage,
            Error::InvalidMessage(String::new()),
            Error::MessageTooLarge { limit: 1 },
            Error::RateLimited(String::new()),
            Error::Overloaded,
            Error::StreamNotFound,
            Error::Forbidden,
            Error::NotFound(""),
            Error::Unsupported(""),
            Error::Provider(String::new()),
            Error::Internal(String::new()),
        ];
        let mut codes: Vec<_> = all.iter().map(Error::code).collect();
        codes.sort_by_key(|c| c.as_str());
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        let fast = Error::TooFast {
            whom: "from this user",
            retry_after_ms: 1500,
        };
        assert_eq!(fast.code(), ErrorCode::RateLimited);
        assert_eq!(fast.retry_after_ms(), Some(1500));
        // A service without the API key is a kind of AUTH_FAILED, with its own text.
        assert_eq!(Error::ApiKeyRequired.code(), ErrorCode::AuthFailed);
        assert!(Error::ApiKeyRequired.client_message().contains("API key"));
        // A refused origin is a kind of FORBIDDEN, with its own text.
        let origin = Error::OriginNotAllowed("https://evil.example".into());
        assert_eq!(origin.code(), ErrorCode::Forbidden);
        assert!(origin.client_message().contains("https://evil.example"));
    }
}
