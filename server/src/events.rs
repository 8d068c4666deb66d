//! The core's events: what a stream says, free of any wire dialect. The engine
//! writes them, the hub stores and fans them out, and each dialect encodes them
//! into its own frames (with its own human texts).

use rill_protocol::documents::Source;
use rill_protocol::{Metadata, ProgressStep};
use serde::{Deserialize, Serialize};

/// One event of a stream. A stream is `Started`, some `Progress`, `Token`s, and
/// exactly one terminal event: `Completed` or `Failed`.
///
/// Serializable so that a hub shared between instances can carry it as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamEvent {
    /// The reply began.
    Started {
        /// The conversation.
        session_id: String,
        /// The id of the reply being produced.
        message_id: String,
        /// The id the question was stored under.
        user_message_id: Option<String>,
        /// The persona answering.
        persona_id: String,
        /// The model answering.
        model: String,
        /// The client's own id for the question, echoed.
        client_message_id: Option<String>,
    },
    /// What the stream is doing before its tokens.
    Progress(ProgressStep),
    /// Routing (`persona_id: "auto"`) chose who answers.
    Routed {
        /// The persona that answers.
        persona_id: String,
        /// Its display name.
        name: String,
        /// How sure the router is (0–1).
        confidence: f64,
    },
    /// The passages retrieval found for the question (its project's
    /// documents), best first; before the first token.
    Sources(Vec<Source>),
    /// A piece of the reply.
    Token(String),
    /// The reply ended (how: `metadata.finish_reason`); `response` is all of it.
    Completed {
        /// The whole reply.
        response: String,
        /// The id the reply is stored under (seed 002's `response_id`).
        message_id: String,
        /// The conversation.
        session_id: String,
        /// Who answered and how it ended.
        metadata: Metadata,
    },
    /// The reply failed before any text.
    Failed(Failure),
}

impl StreamEvent {
    /// Whether this event ends its stream.
    pub fn is_terminal(&self) -> bool {
        matches!(self, StreamEvent::Completed { .. } | StreamEvent::Failed(_))
    }
}

/// Why a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The model provider failed; its explanation (never a secret).
    Provider(String),
    /// The model provider refused for rate; its explanation.
    RateLimited(String),
    /// The generation ended without a terminal event (its task panicked or was aborted).
    Crashed,
}
