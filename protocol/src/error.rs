//! Stable error codes (the `code` of `error` and `auth_error` events) and close codes.

use serde::{Deserialize, Serialize};

/// Why a request failed. Serialized as SCREAMING_SNAKE_CASE; the set is stable:
/// clients may switch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The server requires authentication and the connection has none.
    AuthRequired,
    /// A token was presented and rejected (bad signature, expired, malformed).
    AuthFailed,
    /// A `message` with no text (missing, empty or only whitespace).
    EmptyMessage,
    /// Malformed JSON, not an object, unknown `type`, or fields of the wrong type.
    InvalidMessage,
    /// A frame or body over the configured size limit.
    MessageTooLarge,
    /// Too many requests; retry later.
    RateLimited,
    /// The stream is unknown or its replay window has expired.
    StreamNotFound,
    /// The resource belongs to someone else.
    Forbidden,
    /// No such conversation (or message in it) for this caller.
    NotFound,
    /// The model provider failed.
    ProviderError,
    /// An internal failure while processing; details are in the server log.
    ProcessingError,
    /// The server is at capacity; retry later.
    Overloaded,
    /// A valid request for something this server does not do (binary frames, …).
    Unsupported,
    /// An uploaded document rill cannot read: not Markdown, text, HTML or
    /// PDF, empty, or not what its name says.
    UnsupportedDocument,
    /// An uploaded document over the size limit (`--max-document-bytes`).
    DocumentTooLarge,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::AuthRequired,
        ErrorCode::AuthFailed,
        ErrorCode::EmptyMessage,
        ErrorCode::InvalidMessage,
        ErrorCode::MessageTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::StreamNotFound,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::ProviderError,
        ErrorCode::ProcessingError,
        ErrorCode::Overloaded,
        ErrorCode::Unsupported,
        ErrorCode::UnsupportedDocument,
        ErrorCode::DocumentTooLarge,
    ];

    /// The wire spelling, e.g. `"AUTH_REQUIRED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::EmptyMessage => "EMPTY_MESSAGE",
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::StreamNotFound => "STREAM_NOT_FOUND",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::ProviderError => "PROVIDER_ERROR",
            ErrorCode::ProcessingError => "PROCESSING_ERROR",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::UnsupportedDocument => "UNSUPPORTED_DOCUMENT",
            ErrorCode::DocumentTooLarge => "DOCUMENT_TOO_LARGE",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes rill uses (RFC 6455 §7.4).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The peer is going away; rill uses it for a client silent past the heartbeat timeout.
    pub const GOING_AWAY: u16 = 1001;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation (authentication timeout, expired token).
    pub const POLICY: u16 = 1008;
    /// A frame over the transport's hard size limit.
    pub const TOO_BIG: u16 = 1009;
    /// Internal server error.
    pub const INTERNAL: u16 = 1011;
    /// The server is restarting: reconnect and resume.
    pub const RESTARTING: u16 = 1012;
    /// Overloaded: try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_to_their_documented_spelling() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }
}
