//! The native dialect (`docs/protocol.md`): JSON text frames tagged by `type`,
//! the shapes of [`rill_protocol`]. SSE and long-poll carry the same texts.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rill_protocol::{
    ClientFrame, ErrorCode, Metadata, PROTOCOL_VERSION, PresenceStatus, ProgressStep, ServerEvent,
    parse_client_frame,
};

use super::Dialect;
use crate::error::Error;
use crate::events::{Failure, Started, StreamEvent};
use crate::hub::Sequenced;
use crate::rooms::{RoomEvent, RoomEventKind};
use crate::session::{Command, Reply};

/// Stream events the native dialect has encoded since the process started: one
/// per event, however many connections follow it (a test checks this).
static EVENTS_ENCODED: AtomicU64 = AtomicU64::new(0);

/// What a reader that fell behind a stream's replay window is told (with
/// `STREAM_NOT_FOUND`: the events it missed are gone), in every dialect.
pub(crate) const FELL_BEHIND: &str =
    "This connection fell too far behind the stream; its events are no longer available";

/// How many stream events have been encoded in the native dialect.
pub fn events_encoded() -> u64 {
    EVENTS_ENCODED.load(Ordering::Relaxed)
}

/// rill's own dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

impl Native {
    /// The protocol event for a stream event.
    pub fn server_event(event: &Sequenced) -> ServerEvent {
        let stream_id = event.stream_id.to_string();
        let seq = event.seq;
        match &event.event {
            StreamEvent::Started(started) => ServerEvent::Start {
                stream_id,
                seq,
                session_id: started.session_id.clone(),
                message_id: started.message_id.clone(),
                user_message_id: started.user_message_id.clone(),
                persona_id: started.persona_id.clone(),
                model: started.model.clone(),
                client_message_id: started.client_message_id.clone(),
            },
            StreamEvent::Progress(step) => ServerEvent::Progress {
                stream_id,
                seq,
                step: *step,
                message: progress_text(*step).to_owned(),
                agent: None,
                confidence: None,
            },
            StreamEvent::Routed {
                persona_id,
                name,
                confidence,
            } => ServerEvent::Progress {
                stream_id,
                seq,
                step: ProgressStep::AgentRouting,
                message: format!("{name} answers"),
                agent: Some(persona_id.clone()),
                confidence: Some(*confidence),
            },
            StreamEvent::Sources(sources) => ServerEvent::Sources {
                stream_id,
                seq,
                sources: sources.clone(),
            },
            StreamEvent::Token(token) => ServerEvent::Token {
                stream_id,
                seq,
                token: token.clone(),
                first_seq: None,
                partial_response: None,
            },
            StreamEvent::Completed {
                response,
                session_id,
                metadata,
                ..
            } => ServerEvent::Complete {
                stream_id,
                seq,
                response: response.clone(),
                session_id: session_id.clone(),
                metadata: (**metadata).clone(),
            },
            StreamEvent::Failed(failure) => {
                let (code, error) = failure_text(failure);
                ServerEvent::Error {
                    error,
                    code,
                    stream_id: Some(stream_id),
                    seq: Some(seq),
                    retry_after_ms: None,
                }
            }
        }
    }
}

/// A room event as `room_event` or `presence`.
pub(crate) fn room_event_frame(event: &RoomEvent) -> Bytes {
    let frame = match &event.kind {
        RoomEventKind::Event { event: name, data } => ServerEvent::RoomEvent {
            room: event.room.to_string(),
            event: name.clone(),
            data: data.clone(),
        },
        RoomEventKind::Presence { joined, user } => ServerEvent::Presence {
            room: event.room.to_string(),
            status: if *joined {
                PresenceStatus::Joined
            } else {
                PresenceStatus::Left
            },
            user: user.clone(),
        },
    };
    Bytes::from(frame.to_json())
}

/// A `token` frame, serialized from borrowed parts (no copies of the text).
fn token_frame(stream_id: &str, seq: u64, token: &str) -> Bytes {
    tokens_frame(stream_id, None, seq, token, None)
}

/// A stream event's frame written field by field, in the order and with the
/// fields `serde` gives its `ServerEvent` (tests compare them). Every reply
/// starts with a `start` and two `progress` frames and ends with a
/// `complete`: written this way they skip `ServerEvent`'s copies of their
/// strings and (but for the metadata) serde's generic path.
struct Frame(Vec<u8>);

impl Frame {
    /// `head` (`{"type":"<kind>","stream_id":`), the stream id, `,"seq":…`,
    /// with room for `more` bytes. Keys are written whole, with their quotes
    /// and punctuation: one copy each.
    #[inline]
    fn new(head: &[u8], stream_id: &str, seq: u64, more: usize) -> Self {
        let mut out = Vec::with_capacity(head.len() + 32 + stream_id.len() + more);
        out.extend_from_slice(head);
        json_string(&mut out, stream_id);
        out.extend_from_slice(br#","seq":"#);
        json_u64(&mut out, seq);
        Frame(out)
    }

    /// `key` is `,"<name>":`.
    #[inline]
    fn str(mut self, key: &[u8], value: &str) -> Self {
        self.0.extend_from_slice(key);
        json_string(&mut self.0, value);
        self
    }

    /// A field that is left out when it is `None`.
    #[inline]
    fn str_if(self, key: &[u8], value: Option<&str>) -> Self {
        match value {
            Some(value) => self.str(key, value),
            None => self,
        }
    }

    #[inline]
    fn end(mut self) -> Bytes {
        self.0.push(b'}');
        Bytes::from(self.0)
    }
}

/// A token frame: one token (`first_seq` absent), or several coalesced
/// (`first_seq`..=`seq`); with the reply so far when the client asked for it.
fn tokens_frame(
    stream_id: &str,
    first_seq: Option<u64>,
    seq: u64,
    token: &str,
    partial_response: Option<&str>,
) -> Bytes {
    // Nearly every frame is one, and their text rarely needs escaping.
    // Written out rather than through `Frame`, whose moves measured about 60
    // instructions a frame more (callgrind).
    let mut out = Vec::with_capacity(
        80 + stream_id.len() + token.len() + partial_response.map_or(0, |p| 24 + p.len()),
    );
    out.extend_from_slice(br#"{"type":"token","stream_id":"#);
    json_string(&mut out, stream_id);
    out.extend_from_slice(br#","seq":"#);
    json_u64(&mut out, seq);
    out.extend_from_slice(br#","token":"#);
    json_string(&mut out, token);
    if let Some(first_seq) = first_seq {
        out.extend_from_slice(br#","first_seq":"#);
        json_u64(&mut out, first_seq);
    }
    if let Some(partial) = partial_response {
        out.extend_from_slice(br#","partial_response":"#);
        json_string(&mut out, partial);
    }
    out.push(b'}');
    Bytes::from(out)
}

/// A `progress` frame of a step (not of routing's choice, which names who
/// answers).
fn progress_frame(stream_id: &str, seq: u64, step: ProgressStep) -> Bytes {
    let message = progress_text(step);
    Frame::new(
        br#"{"type":"progress","stream_id":"#,
        stream_id,
        seq,
        40 + message.len(),
    )
    .str(br#","step":"#, step.as_str())
    .str(br#","message":"#, message)
    .end()
}

/// A `start` frame.
fn start_frame(stream_id: &str, seq: u64, started: &Started) -> Bytes {
    let more = 128
        + started.session_id.len()
        + started.message_id.len()
        + started.user_message_id.as_ref().map_or(0, String::len)
        + started.persona_id.len()
        + started.model.len()
        + started.client_message_id.as_ref().map_or(0, String::len);
    Frame::new(br#"{"type":"start","stream_id":"#, stream_id, seq, more)
        .str(br#","session_id":"#, &started.session_id)
        .str(br#","message_id":"#, &started.message_id)
        .str_if(
            br#","user_message_id":"#,
            started.user_message_id.as_deref(),
        )
        .str(br#","persona_id":"#, &started.persona_id)
        .str(br#","model":"#, &started.model)
        .str_if(
            br#","client_message_id":"#,
            started.client_message_id.as_deref(),
        )
        .end()
}

/// A `complete` frame: the reply and the session written straight from the
/// event, the metadata through serde (without the copies `ServerEvent` takes).
fn complete_frame(
    stream_id: &str,
    seq: u64,
    response: &str,
    session_id: &str,
    metadata: &Metadata,
) -> Bytes {
    let more = 512 + response.len() + session_id.len();
    let mut frame = Frame::new(br#"{"type":"complete","stream_id":"#, stream_id, seq, more)
        .str(br#","response":"#, response)
        .str(br#","session_id":"#, session_id);
    frame.0.extend_from_slice(br#","metadata":"#);
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut frame.0, metadata);
    frame.end()
}

/// Appends `text` as a JSON string: copied as it is unless something in it
/// needs escaping (a quote, a backslash, a control character), then escaped
/// as serde_json escapes it.
pub(super) fn json_string(out: &mut Vec<u8>, text: &str) {
    // A fold without a short cut, which the compiler turns into vector
    // instructions (`all` stops at the first hit, one byte at a time): this
    // runs twice per token frame (the stream id and the token).
    let needs_escaping = text.bytes().fold(false, |seen, b| {
        seen | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !needs_escaping {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Appends `n` in decimal.
pub(super) fn json_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The human text of a progress step (seed 003's wording).
fn progress_text(step: ProgressStep) -> &'static str {
    match step {
        ProgressStep::Starting => "Processing started",
        ProgressStep::AgentRouting => "Choosing who answers...",
        ProgressStep::RagRetrieval => "Searching the documents...",
        ProgressStep::Generating => "Generating response...",
    }
}

/// The code and human text of a failed stream.
fn failure_text(failure: &Failure) -> (ErrorCode, String) {
    match failure {
        Failure::Provider(detail) => (ErrorCode::ProviderError, detail.clone()),
        Failure::RateLimited(detail) => (ErrorCode::RateLimited, detail.clone()),
        Failure::Crashed => (
            ErrorCode::ProcessingError,
            "The stream ended unexpectedly".to_owned(),
        ),
    }
}

impl Dialect for Native {
    fn slot(&self) -> usize {
        0
    }

    /// A frame whose first non-blank character is not `{` is a plain-text
    /// question (seed 000's raw chat, answered in [`super::Raw`] frames); a
    /// broken JSON object stays `INVALID_MESSAGE`.
    fn decode(&self, frame: &str) -> Result<Command, Error> {
        if !frame.trim_start().starts_with('{') {
            return Ok(Command::RawQuestion(frame.to_owned()));
        }
        Ok(match parse_client_frame(frame)? {
            ClientFrame::Auth { token } => Command::Auth { token },
            ClientFrame::Message(request) => Command::Message(request),
            ClientFrame::Cancel { stream_id } => Command::Cancel { stream_id },
            ClientFrame::Resume {
                stream_id,
                after_seq,
            } => Command::Resume {
                stream_id,
                after_seq,
            },
            ClientFrame::Ping { timestamp } => Command::Ping { timestamp },
            ClientFrame::Hello { .. } => Command::Hello,
            ClientFrame::Join { room } => Command::Join { room },
            ClientFrame::Leave { room } => Command::Leave { room },
            ClientFrame::Broadcast { room, message } => Command::Broadcast { room, message },
        })
    }

    fn encode_event(&self, event: &Sequenced) -> Bytes {
        EVENTS_ENCODED.fetch_add(1, Ordering::Relaxed);
        // Tokens are nearly every event, and every reply starts with a start
        // and two steps and ends with a complete: written straight from the
        // borrowed parts, the same JSON as `ServerEvent`'s (tests check).
        match &event.event {
            StreamEvent::Token(token) => token_frame(&event.stream_id, event.seq, token),
            StreamEvent::Progress(step) => progress_frame(&event.stream_id, event.seq, *step),
            StreamEvent::Started(started) => start_frame(&event.stream_id, event.seq, started),
            StreamEvent::Completed {
                response,
                session_id,
                metadata,
                ..
            } => complete_frame(&event.stream_id, event.seq, response, session_id, metadata),
            _ => Bytes::from(Self::server_event(event).to_json()),
        }
    }

    fn encode_reply(&self, reply: &Reply) -> Bytes {
        let event = match reply {
            Reply::Hello {
                connection_id,
                server,
                heartbeat_ms,
                auth_required,
                limits,
            } => ServerEvent::Hello {
                connection_id: connection_id.to_string(),
                protocol: PROTOCOL_VERSION,
                server: server.clone(),
                heartbeat_ms: *heartbeat_ms,
                auth_required: *auth_required,
                limits: limits.clone(),
            },
            Reply::Authenticated {
                user,
                connection_id,
                heartbeat_ms,
            } => ServerEvent::AuthSuccess {
                message: "Authentication successful".into(),
                user: user.clone(),
                connection_id: connection_id.to_string(),
                protocol: PROTOCOL_VERSION,
                heartbeat_ms: *heartbeat_ms,
            },
            Reply::AuthRejected(error) => ServerEvent::AuthError {
                message: error.to_string(),
                code: ErrorCode::AuthFailed,
            },
            Reply::Echo(text) => return Bytes::from(format!("Echo: {text}")),
            Reply::Joined { room } => ServerEvent::Joined { room: room.clone() },
            Reply::Left { room } => ServerEvent::Left { room: room.clone() },
            Reply::Dropped { count } => ServerEvent::Dropped { count: *count },
            Reply::Pong {
                timestamp,
                server_time,
            } => ServerEvent::Pong {
                timestamp: timestamp.clone(),
                server_time: *server_time,
            },
            Reply::Refused(refusal) => ServerEvent::Error {
                error: refusal.error.client_message(),
                code: refusal.error.code(),
                // Quoted back from the client: bounded.
                stream_id: refusal
                    .stream_id
                    .as_ref()
                    .map(|id| id.chars().take(128).collect()),
                seq: None,
                retry_after_ms: refusal.error.retry_after_ms(),
            },
            Reply::FellBehind { stream_id } => ServerEvent::Error {
                error: FELL_BEHIND.into(),
                code: ErrorCode::StreamNotFound,
                stream_id: Some(stream_id.to_string()),
                seq: None,
                retry_after_ms: None,
            },
        };
        Bytes::from(event.to_json())
    }

    fn coalesced_tokens(
        &self,
        stream_id: &str,
        seqs: std::ops::RangeInclusive<u64>,
        text: &str,
        so_far: Option<&str>,
    ) -> Bytes {
        tokens_frame(stream_id, Some(*seqs.start()), *seqs.end(), text, so_far)
    }

    /// A `token` frame carrying `partial_response` (the opt-in `?partial=1`
    /// form): encoded per connection, since the text so far is the reader's.
    fn token_with_partial(&self, event: &Sequenced, so_far: &str) -> Option<Bytes> {
        let StreamEvent::Token(token) = &event.event else {
            return None;
        };
        Some(tokens_frame(
            &event.stream_id,
            None,
            event.seq,
            token,
            Some(so_far),
        ))
    }

    /// `turn_complete`, after a question that named several personas.
    fn encode_turn(&self, turn: &super::Turn) -> Option<Bytes> {
        if !turn.several {
            return None;
        }
        let event = ServerEvent::TurnComplete {
            session_id: turn.session_id.clone(),
            replies: turn
                .replies
                .iter()
                .map(|reply| rill_protocol::TurnReply {
                    stream_id: reply.stream_id.to_string(),
                    persona_id: reply.persona_id.clone(),
                    message_id: reply.message_id.clone(),
                    finish_reason: reply.finish_reason,
                })
                .collect(),
        };
        Some(Bytes::from(event.to_json()))
    }

    fn event_name(&self, event: &StreamEvent) -> &'static str {
        match event {
            StreamEvent::Started { .. } => "start",
            StreamEvent::Progress(_) | StreamEvent::Routed { .. } => "progress",
            StreamEvent::Sources(_) => "sources",
            StreamEvent::Token(_) => "token",
            StreamEvent::Completed { .. } => "complete",
            StreamEvent::Failed(_) => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sequenced(seq: u64, event: StreamEvent) -> Sequenced {
        Sequenced::new(Arc::from("s1"), seq, event)
    }

    #[test]
    fn stream_events_encode_to_the_protocol_frames() {
        let progress =
            Native.encode_event(&sequenced(2, StreamEvent::Progress(ProgressStep::Starting)));
        let progress: serde_json::Value = serde_json::from_slice(&progress).unwrap();
        assert_eq!(
            progress,
            serde_json::json!({"type": "progress", "stream_id": "s1", "seq": 2, "step": "starting", "message": "Processing started"})
        );
        let crashed = Native.encode_event(&sequenced(9, StreamEvent::Failed(Failure::Crashed)));
        let crashed: ServerEvent = serde_json::from_slice(&crashed).unwrap();
        assert!(crashed.is_terminal());
        assert_eq!(crashed.stream_position(), Some(("s1", 9)));
    }

    #[test]
    fn every_client_frame_type_decodes_and_bad_frames_are_invalid_message() {
        for kind in ClientFrame::TYPES {
            let frame = serde_json::json!({"type": kind, "token": "t", "stream_id": "s", "room": "r", "message": "m"});
            assert!(Native.decode(&frame.to_string()).is_ok(), "{kind}");
        }
        assert_eq!(
            Native.decode("[]").unwrap(),
            Command::RawQuestion("[]".into()),
            "not an object: a raw question"
        );
        for bad in [
            "{",
            " {\"type\"",
            r#"{"type":"nope"}"#,
            r#"{"type":"resume","stream_id":"s","after_seq":-1}"#,
        ] {
            let error = Native.decode(bad).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidMessage, "{bad}");
        }
    }

    #[test]
    fn the_fast_token_frame_is_the_protocol_token_frame() {
        for text in ["plain", "quote \" and \\ and \n", "ünïcødé ✓", ""] {
            let event = sequenced(7, StreamEvent::Token(text.into()));
            let fast = Native.encode_event(&event);
            assert_eq!(
                std::str::from_utf8(&fast).unwrap(),
                Native::server_event(&event).to_json(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_fast_start_progress_and_complete_frames_are_the_protocol_frames() {
        let mut events = Vec::new();
        for step in [
            ProgressStep::Starting,
            ProgressStep::AgentRouting,
            ProgressStep::RagRetrieval,
            ProgressStep::Generating,
        ] {
            events.push(StreamEvent::Progress(step));
        }
        for (user_message_id, client_message_id) in [
            (None, None),
            (Some("q-1"), None),
            (None, Some("c \"1\" ü")),
            (Some("q\\2"), Some("")),
        ] {
            events.push(StreamEvent::Started(Box::new(Started {
                session_id: "conv \"one\"".into(),
                message_id: "m-1".into(),
                user_message_id: user_message_id.map(str::to_owned),
                persona_id: "ünï\n".into(),
                model: "demo".into(),
                client_message_id: client_message_id.map(str::to_owned),
            })));
        }
        for metadata in [
            serde_json::json!({"agent": "assistant", "model": "demo", "finish_reason": "stop",
                "sources": [], "context": {"sources": []}}),
            serde_json::json!({"agent": "a\"b", "model": "m", "finish_reason": "length",
                "usage": {"prompt_tokens": 3, "completion_tokens": 9, "estimated": true},
                "sources": ["x.md"], "context": {"sources": ["x.md"]}, "confidence": 0.5,
                "routing": {"method": "keywords"}, "reasoning": "why\n",
                "timing": {"first_token_ms": 1, "total_ms": 20},
                "cost": {"amount": 0.25, "currency": "USD"}}),
        ] {
            events.push(StreamEvent::Completed {
                response: "line one\n\"two\" ü\t".into(),
                message_id: "m-1".into(),
                session_id: "conv".into(),
                metadata: Box::new(serde_json::from_value(metadata).unwrap()),
            });
        }
        for event in events {
            let event = Sequenced::new(Arc::from("s-\"1"), 12, event);
            let fast = Native.encode_event(&event);
            assert_eq!(
                std::str::from_utf8(&fast).unwrap(),
                Native::server_event(&event).to_json(),
                "{:?}",
                event.event
            );
        }
    }

    #[test]
    fn a_coalesced_token_frame_is_the_json_of_its_fields() {
        #[derive(serde::Serialize)]
        struct Token<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            stream_id: &'a str,
            seq: u64,
            token: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            first_seq: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            partial_response: Option<&'a str>,
        }
        let texts = [
            "plain",
            "quote \" and \\ and \n\t\u{1}",
            "ünïcødé ✓ \u{7f}",
            "",
        ];
        for text in texts {
            for (first_seq, seq) in [(None, 0), (Some(3), 9), (None, u64::MAX)] {
                for partial in [None, Some(text), Some("so \"far\"")] {
                    let frame = tokens_frame("s-1\"", first_seq, seq, text, partial);
                    let expected = serde_json::to_string(&Token {
                        kind: "token",
                        stream_id: "s-1\"",
                        seq,
                        token: text,
                        first_seq,
                        partial_response: partial,
                    })
                    .unwrap();
                    assert_eq!(std::str::from_utf8(&frame).unwrap(), expected);
                }
            }
        }
    }

    #[test]
    fn a_long_text_is_escaped_wherever_its_escape_falls() {
        // The check runs many bytes at a time: put the byte that needs
        // escaping at every place of a text longer than a vector.
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
            let base = "wörd ".repeat(16);
            for (at, _) in base.char_indices() {
                let mut text = base.clone();
                text.insert(at, special);
                let mut out = Vec::new();
                json_string(&mut out, &text);
                assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
            }
        }
        let mut out = Vec::new();
        json_string(&mut out, &"x".repeat(100));
        assert_eq!(out, serde_json::to_vec(&"x".repeat(100)).unwrap());
    }

    #[test]
    fn a_partial_token_carries_the_text_so_far() {
        let event = sequenced(4, StreamEvent::Token("b".into()));
        let frame = Native.token_with_partial(&event, "ab").unwrap();
        let frame: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(frame["partial_response"], "ab");
        assert_eq!(frame["token"], "b");
        assert!(
            Native
                .token_with_partial(
                    &sequenced(1, StreamEvent::Progress(ProgressStep::Generating)),
                    ""
                )
                .is_none()
        );
    }
}
