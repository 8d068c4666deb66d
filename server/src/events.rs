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
    /// The reply began (boxed: every event is the size of the largest kind,
    /// and the replay log keeps its newest events whole).
    Started(Box<Started>),
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
        /// Who answered and how it ended (boxed, as `Started`).
        metadata: Box<Metadata>,
    },
    /// The reply failed before any text.
    Failed(Failure),
}

/// How a reply began: the payload of [`StreamEvent::Started`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    /// The conversation.
    pub session_id: String,
    /// The id of the reply being produced.
    pub message_id: String,
    /// The id the question was stored under.
    pub user_message_id: Option<String>,
    /// The persona answering.
    pub persona_id: String,
    /// The model answering.
    pub model: String,
    /// The client's own id for the question, echoed.
    pub client_message_id: Option<String>,
}

impl StreamEvent {
    /// A `Started` event of reply `message_id` in conversation `session_id`,
    /// by the assistant on the demo model (for tests).
    #[cfg(test)]
    pub(crate) fn started_for_test(session_id: &str, message_id: &str) -> Self {
        StreamEvent::Started(Box::new(Started {
            session_id: session_id.into(),
            message_id: message_id.into(),
            user_message_id: None,
            persona_id: "assistant".into(),
            model: "demo".into(),
            client_message_id: None,
        }))
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event is as large as the largest kind, and a stream's replay log
    /// keeps its newest events whole: the rare large kinds are boxed, so a
    /// token's event stays small.
    #[test]
    fn an_event_is_small() {
        assert!(
            std::mem::size_of::<StreamEvent>() <= 96,
            "{} bytes",
            std::mem::size_of::<StreamEvent>()
        );
    }

    /// Boxed or not, an event's serialized form is the same: a `Started`
    /// reads as a map of its fields.
    #[test]
    fn a_boxed_event_serializes_as_its_fields() {
        let started = StreamEvent::started_for_test("c", "m");
        let json = serde_json::to_value(&started).unwrap();
        assert_eq!(json["Started"]["persona_id"], "assistant");
        let back: StreamEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, started);
    }
}
