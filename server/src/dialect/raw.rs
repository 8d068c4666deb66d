//! Seed 000's raw-text chat: on `/ws/chat`, a text frame that is not a JSON
//! object is a question, answered `{"type":"start"}`, `{"type":"token",
//! "content":…}` per token and `{"type":"end"}`. Progress has no frame here;
//! a failure is `{"type":"error","content":…}` then `end`, so a seed page
//! still closes its reply. Frames carry `stream_id` and `seq` too (seed
//! clients ignore them; a `resume` frame in the native dialect can use them).
//!
//! Only the encoding is this dialect's: the question arrives on the native
//! endpoint (see [`super::Native`]'s decode) and runs like any other.

use bytes::Bytes;
use serde_json::json;

use super::Dialect;
use crate::error::Error;
use crate::events::{Failure, StreamEvent};
use crate::hub::Sequenced;
use crate::session::{Command, Reply};

/// Seed 000's raw-text chat frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Dialect for Raw {
    fn slot(&self) -> usize {
        2
    }

    /// Every text frame is a question.
    fn decode(&self, frame: &str) -> Result<Command, Error> {
        Ok(Command::RawQuestion(frame.to_owned()))
    }

    fn encode_event(&self, event: &Sequenced) -> Bytes {
        let (stream_id, seq) = (event.stream_id.as_ref(), event.seq);
        let text = match &event.event {
            StreamEvent::Started { .. } => {
                json!({"type": "start", "stream_id": stream_id, "seq": seq}).to_string()
            }
            StreamEvent::Token(token) => {
                json!({"type": "token", "content": token, "stream_id": stream_id, "seq": seq})
                    .to_string()
            }
            StreamEvent::Completed { .. } => {
                json!({"type": "end", "stream_id": stream_id, "seq": seq}).to_string()
            }
            StreamEvent::Failed(failure) => {
                let message = match failure {
                    Failure::Provider(text) | Failure::RateLimited(text) => text.as_str(),
                    Failure::Crashed => "The stream ended unexpectedly",
                };
                format!(
                    "{}\n{}",
                    json!({"type": "error", "content": message, "stream_id": stream_id, "seq": seq}),
                    json!({"type": "end", "stream_id": stream_id, "seq": seq})
                )
            }
            StreamEvent::Progress(_) | StreamEvent::Routed { .. } | StreamEvent::Sources(_) => {
                String::new()
            }
        };
        Bytes::from(text)
    }

    /// Replies (a refused question) keep the native shape: a raw client shows
    /// them as they are.
    fn encode_reply(&self, reply: &Reply) -> Bytes {
        super::Native.encode_reply(reply)
    }

    fn event_name(&self, event: &StreamEvent) -> &'static str {
        match event {
            StreamEvent::Started { .. } => "start",
            StreamEvent::Token(_) => "token",
            StreamEvent::Completed { .. } => "end",
            StreamEvent::Failed(_) => "error",
            StreamEvent::Progress(_) | StreamEvent::Routed { .. } => "progress",
            StreamEvent::Sources(_) => "sources",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_reply_is_start_tokens_end() {
        let event = |seq, event| Raw.encode_event(&Sequenced::new(Arc::from("s"), seq, event));
        let start = event(1, StreamEvent::started_for_test("c", "m"));
        let start: serde_json::Value = serde_json::from_slice(&start).unwrap();
        assert_eq!(start, json!({"type": "start", "stream_id": "s", "seq": 1}));
        let token: serde_json::Value =
            serde_json::from_slice(&event(3, StreamEvent::Token("Hi".into()))).unwrap();
        assert_eq!(token["type"], "token");
        assert_eq!(token["content"], "Hi");
        assert!(
            event(
                2,
                StreamEvent::Progress(rill_protocol::ProgressStep::Starting)
            )
            .is_empty()
        );
        let failed = event(4, StreamEvent::Failed(Failure::Crashed));
        let frames: Vec<_> = super::super::frames(failed).collect();
        assert_eq!(frames.len(), 2);
        let end: serde_json::Value = serde_json::from_slice(&frames[1]).unwrap();
        assert_eq!(end["type"], "end");
    }
}
