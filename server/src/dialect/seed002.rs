//! Seed 002's dialect (`/ws`): client frames `{"type", "data": {...}}` —
//! `chat`, `multi_chat`, `openai_chat` — answered with `status`, `chunk`,
//! `persona_response`, `response` and `error` frames (`docs/dialects.md`).
//! A text frame that is not a JSON object is echoed as `Echo: <text>`, as
//! seed 000's `/ws` does.
//!
//! rill adds fields seed clients ignore — `stream_id` and `seq` on every
//! stream frame, `code` on errors — and the frames `auth`, `ping`, `cancel`
//! and `resume`, so a client of this dialect can authenticate, stop a reply
//! and finish one after a reconnect.

use bytes::Bytes;
use rill_protocol::{MessageRequest, ProgressStep};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Dialect, Place, Turn};
use crate::error::Error;
use crate::events::{Failure, StreamEvent};
use crate::hub::Sequenced;
use crate::session::{Command, Reply};

/// Seed 002's dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seed002;

/// `data` of `chat` and `multi_chat` (unknown fields, like `api`, ignored).
#[derive(Debug, Default, Deserialize)]
struct ChatData {
    message: Option<String>,
    persona_id: Option<String>,
    persona_ids: Option<Vec<String>>,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    /// rill: the conversation to continue.
    session_id: Option<String>,
    /// rill: continue the conversation of this reply.
    previous_response_id: Option<String>,
    include_history: Option<bool>,
}

/// `data` of `openai_chat`.
#[derive(Debug, Default, Deserialize)]
struct OpenAiData {
    input_text: Option<String>,
    model: Option<String>,
    previous_response_id: Option<String>,
    tools: Option<Vec<Value>>,
    include_reasoning: Option<bool>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    /// rill: the persona answering.
    persona_id: Option<String>,
}

/// `data` of `auth`, `ping`, `cancel`, `resume`.
#[derive(Debug, Default, Deserialize)]
struct ControlData {
    token: Option<String>,
    timestamp: Option<serde_json::Number>,
    stream_id: Option<String>,
    after_seq: Option<u64>,
}

/// `data` as `T`, or INVALID_MESSAGE naming the frame type and the problem.
fn data<T: for<'de> Deserialize<'de> + Default>(
    kind: &str,
    data: Option<Value>,
) -> Result<T, Error> {
    match data {
        None | Some(Value::Null) => Ok(T::default()),
        Some(value @ Value::Object(_)) => serde_json::from_value(value)
            .map_err(|e| Error::InvalidMessage(format!("invalid {kind} data: {e}"))),
        Some(_) => Err(Error::InvalidMessage(format!(
            "{kind}: data must be an object"
        ))),
    }
}

/// A stream frame's human status text.
fn status(event: &StreamEvent) -> Option<(&'static str, String)> {
    Some(match event {
        StreamEvent::Started { .. } => ("starting", "Initializing...".to_owned()),
        StreamEvent::Progress(ProgressStep::Starting) => {
            ("processing", "Sending request...".to_owned())
        }
        StreamEvent::Progress(ProgressStep::AgentRouting) => {
            ("processing", "Choosing a persona...".to_owned())
        }
        StreamEvent::Progress(ProgressStep::RagRetrieval) => {
            ("processing", "Searching the documents...".to_owned())
        }
        StreamEvent::Routed { name, .. } => ("processing", format!("{name} answers")),
        StreamEvent::Progress(ProgressStep::Generating) => {
            ("streaming", "Streaming response...".to_owned())
        }
        _ => return None,
    })
}

/// Frames joined by `\n` (see [`super`]).
fn joined(frames: &[Value]) -> Bytes {
    let mut out = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        // Writing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, frame);
    }
    Bytes::from(out)
}

/// A token's `chunk` frame, written field by field: the frame of almost
/// every event, where a `json!` value and its serialization cost about six
/// thousand instructions a token (a map of five entries built, sorted,
/// escaped byte by byte and dropped), eight times the native token frame.
fn chunk_frame(text: &str, stream_id: &str, seq: u64) -> Bytes {
    use super::native::{json_string, json_u64};
    let mut out = Vec::with_capacity(64 + text.len() + stream_id.len());
    out.extend_from_slice(br#"{"type":"chunk","chunk":"#);
    json_string(&mut out, text);
    out.extend_from_slice(br#","is_final":false,"stream_id":"#);
    json_string(&mut out, stream_id);
    out.extend_from_slice(br#","seq":"#);
    json_u64(&mut out, seq);
    out.push(b'}');
    Bytes::from(out)
}

/// Adds `persona_id` and `index` to a frame of a multi-persona question.
fn placed(mut frame: Value, place: Option<&Place>) -> Value {
    if let Some(place) = place.filter(|p| p.several) {
        frame["index"] = json!(place.index);
        if let Some(persona) = &place.persona_id {
            frame["persona_id"] = json!(persona.as_ref());
        }
    }
    frame
}

impl Seed002 {
    /// A stream event's frames; `place` for a stream of a multi-persona question.
    fn stream_frames(event: &Sequenced, place: Option<&Place>) -> Bytes {
        let stream_id = event.stream_id.as_ref();
        let seq = event.seq;
        let several = place.is_some_and(|p| p.several);
        if let (StreamEvent::Token(text), false) = (&event.event, several) {
            return chunk_frame(text, stream_id, seq);
        }
        let frames = match &event.event {
            StreamEvent::Token(text) => vec![json!({
                "type": "chunk", "chunk": text, "is_final": false,
                "stream_id": stream_id, "seq": seq,
            })],
            StreamEvent::Completed {
                response,
                message_id,
                session_id,
                metadata,
            } => {
                let last = json!({
                    "type": "chunk", "chunk": "", "is_final": true,
                    "stream_id": stream_id, "seq": seq,
                });
                let answer = if several {
                    json!({
                        "type": "persona_response",
                        "persona_id": metadata.agent,
                        "response": response,
                        "index": place.map_or(0, |p| p.index),
                        "response_id": message_id,
                        "stream_id": stream_id,
                    })
                } else {
                    json!({
                        "type": "response",
                        "status": "completed",
                        "message": "Response complete",
                        "data": {
                            "response_id": message_id,
                            "id": message_id,
                            "output_text": response,
                            "response": response,
                            "persona_id": metadata.agent,
                            "session_id": session_id,
                            "model": metadata.model,
                            "finish_reason": metadata.finish_reason,
                            "usage": metadata.usage,
                            "confidence": metadata.confidence,
                            "reasoning": metadata.reasoning,
                        },
                        "stream_id": stream_id,
                    })
                };
                vec![placed(last, place), answer]
            }
            StreamEvent::Failed(failure) => {
                let (code, message) = match failure {
                    Failure::Provider(text) => ("PROVIDER_ERROR", text.clone()),
                    Failure::RateLimited(text) => ("RATE_LIMITED", text.clone()),
                    Failure::Crashed => (
                        "PROCESSING_ERROR",
                        "The stream ended unexpectedly".to_owned(),
                    ),
                };
                vec![json!({
                    "type": "error", "status": "error", "message": message, "code": code,
                    "stream_id": stream_id, "seq": seq,
                })]
            }
            other => {
                let Some((status, message)) = status(other) else {
                    return Bytes::new();
                };
                let mut frame = json!({
                    "type": "status", "status": status, "message": message,
                    "stream_id": stream_id, "seq": seq,
                });
                match other {
                    StreamEvent::Started(started) => {
                        frame["persona_id"] = json!(started.persona_id);
                        frame["session_id"] = json!(started.session_id);
                        frame["response_id"] = json!(started.message_id);
                        frame["model"] = json!(started.model);
                    }
                    StreamEvent::Routed {
                        persona_id,
                        confidence,
                        ..
                    } => {
                        frame["persona_id"] = json!(persona_id);
                        frame["confidence"] = json!(confidence);
                    }
                    _ => {}
                }
                vec![frame]
            }
        };
        let frames: Vec<Value> = frames
            .into_iter()
            .map(|frame| match frame["type"].as_str() {
                Some("persona_response" | "response") => frame,
                _ => placed(frame, place),
            })
            .collect();
        joined(&frames)
    }
}

impl Dialect for Seed002 {
    fn slot(&self) -> usize {
        1
    }

    fn decode(&self, frame: &str) -> Result<Command, Error> {
        let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(frame) else {
            return Ok(Command::Echo(frame.to_owned()));
        };
        let kind = match object.remove("type") {
            Some(Value::String(kind)) => kind,
            _ => {
                return Err(Error::InvalidMessage(
                    "a frame needs a string \"type\": chat, multi_chat or openai_chat".into(),
                ));
            }
        };
        let raw = object.remove("data");
        Ok(match kind.as_str() {
            "chat" | "multi_chat" => {
                let d: ChatData = data(&kind, raw)?;
                let several = kind == "multi_chat";
                if several && d.persona_ids.as_ref().is_none_or(Vec::is_empty) {
                    return Err(Error::InvalidMessage(
                        "multi_chat needs data.persona_ids: a list of persona ids".into(),
                    ));
                }
                Command::Message(MessageRequest {
                    message: d.message,
                    session_id: d.session_id,
                    previous_response_id: d.previous_response_id,
                    persona_id: if several { None } else { d.persona_id },
                    persona_ids: if several { d.persona_ids } else { None },
                    model: d.model,
                    temperature: d.temperature,
                    max_tokens: d.max_tokens,
                    include_history: d.include_history,
                    ..MessageRequest::default()
                })
            }
            "openai_chat" => {
                let d: OpenAiData = data(&kind, raw)?;
                Command::Message(MessageRequest {
                    message: d.input_text,
                    previous_response_id: d.previous_response_id,
                    persona_id: d.persona_id,
                    model: d.model,
                    temperature: d.temperature,
                    max_tokens: d.max_tokens,
                    tools: d.tools.filter(|t| !t.is_empty()),
                    include_reasoning: d.include_reasoning.filter(|r| *r),
                    ..MessageRequest::default()
                })
            }
            "auth" => {
                let d: ControlData = data(&kind, raw)?;
                let token = d
                    .token
                    .or_else(|| {
                        object
                            .remove("token")
                            .and_then(|t| t.as_str().map(str::to_owned))
                    })
                    .ok_or_else(|| Error::InvalidMessage("auth needs data.token".into()))?;
                Command::Auth { token }
            }
            "ping" => {
                let d: ControlData = data(&kind, raw)?;
                Command::Ping {
                    timestamp: d.timestamp,
                }
            }
            "cancel" => {
                let d: ControlData = data(&kind, raw)?;
                Command::Cancel {
                    stream_id: d.stream_id.ok_or_else(|| {
                        Error::InvalidMessage("cancel needs data.stream_id".into())
                    })?,
                }
            }
            "resume" => {
                let d: ControlData = data(&kind, raw)?;
                Command::Resume {
                    stream_id: d.stream_id.ok_or_else(|| {
                        Error::InvalidMessage("resume needs data.stream_id".into())
                    })?,
                    after_seq: d.after_seq.unwrap_or(0),
                }
            }
            other => {
                return Err(Error::InvalidMessage(format!(
                    "Unknown message type: {}",
                    other.chars().take(64).collect::<String>()
                )));
            }
        })
    }

    fn encode_event(&self, event: &Sequenced) -> Bytes {
        Self::stream_frames(event, None)
    }

    /// Frames of a multi-persona question carry `persona_id` and `index`, and
    /// each reply ends with `persona_response`.
    fn encode_placed(&self, event: &Sequenced, place: &Place) -> Option<Bytes> {
        place
            .several
            .then(|| Self::stream_frames(event, Some(place)))
    }

    /// After a multi-persona question: `response` with every persona's reply.
    fn encode_turn(&self, turn: &Turn) -> Option<Bytes> {
        if !turn.several {
            return None;
        }
        let responses: Vec<Value> = turn
            .replies
            .iter()
            .map(|reply| {
                json!({
                    "persona_id": reply.persona_id,
                    "response": reply.response,
                    "index": reply.index,
                    "response_id": reply.message_id,
                    "stream_id": reply.stream_id.as_ref(),
                    "finish_reason": reply.finish_reason,
                })
            })
            .collect();
        Some(joined(&[json!({
            "type": "response",
            "status": "completed",
            "message": "All personas answered",
            "data": {"session_id": turn.session_id, "responses": responses},
        })]))
    }

    fn encode_reply(&self, reply: &Reply) -> Bytes {
        let frame = match reply {
            Reply::Echo(text) => return Bytes::from(format!("Echo: {text}")),
            Reply::Hello { .. }
            | Reply::Joined { .. }
            | Reply::Left { .. }
            | Reply::Dropped { .. } => return super::Native.encode_reply(reply),
            Reply::Authenticated {
                user,
                connection_id,
                ..
            } => json!({
                "type": "status", "status": "authenticated",
                "message": "Authentication successful",
                "user": user, "connection_id": connection_id.as_ref(),
            }),
            Reply::AuthRejected(error) => json!({
                "type": "error", "status": "error", "message": error.to_string(),
                "code": "AUTH_FAILED",
            }),
            Reply::Pong {
                timestamp,
                server_time,
            } => json!({"type": "pong", "timestamp": timestamp, "server_time": server_time}),
            Reply::Refused(refusal) => {
                let mut frame = json!({
                    "type": "error", "status": "error",
                    "message": refusal.error.client_message(),
                    "code": refusal.error.code(),
                });
                if let Some(stream_id) = &refusal.stream_id {
                    frame["stream_id"] = json!(stream_id.chars().take(128).collect::<String>());
                }
                if let Some(ms) = refusal.error.retry_after_ms() {
                    frame["retry_after_ms"] = json!(ms);
                }
                frame
            }
            Reply::FellBehind { stream_id } => json!({
                "type": "error", "status": "error",
                "message": "This connection fell too far behind the stream; its events are no longer available",
                "code": "STREAM_NOT_FOUND", "stream_id": stream_id.as_ref(),
            }),
        };
        joined(&[frame])
    }

    fn event_name(&self, event: &StreamEvent) -> &'static str {
        match event {
            StreamEvent::Token(_) => "chunk",
            StreamEvent::Completed { .. } => "response",
            StreamEvent::Failed(_) => "error",
            _ => "status",
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

    fn decoded(frame: &str) -> Result<Command, Error> {
        Seed002.decode(frame)
    }

    fn values(bytes: &Bytes) -> Vec<Value> {
        super::super::frames(bytes.clone())
            .map(|f| serde_json::from_slice(&f).unwrap())
            .collect()
    }

    #[test]
    fn seed_frames_decode_to_questions() {
        let Command::Message(chat) = decoded(
            r#"{"type":"chat","data":{"message":"Hi","persona_id":"tech_enthusiast","api":"openai","model":"gpt-4o-mini","temperature":0.7,"max_tokens":1000}}"#,
        )
        .unwrap() else {
            panic!("not a message")
        };
        assert_eq!(chat.message.as_deref(), Some("Hi"));
        assert_eq!(chat.persona_id.as_deref(), Some("tech_enthusiast"));
        assert_eq!(chat.max_tokens, Some(1000));
        let Command::Message(multi) = decoded(
            r#"{"type":"multi_chat","data":{"message":"AI?","persona_ids":["tech_enthusiast","creative_writer"]}}"#,
        )
        .unwrap() else {
            panic!("not a message")
        };
        assert_eq!(multi.personas(), vec!["tech_enthusiast", "creative_writer"]);
        let Command::Message(openai) = decoded(
            r#"{"type":"openai_chat","data":{"input_text":"Hello, world!","model":"gpt-4o-mini","previous_response_id":"r1","tools":[],"include_reasoning":false}}"#,
        )
        .unwrap() else {
            panic!("not a message")
        };
        assert_eq!(openai.message.as_deref(), Some("Hello, world!"));
        assert_eq!(openai.previous_response_id.as_deref(), Some("r1"));
        assert_eq!((openai.tools, openai.include_reasoning), (None, None));
    }

    #[test]
    fn non_objects_echo_and_bad_frames_are_named() {
        assert_eq!(
            decoded("hello there").unwrap(),
            Command::Echo("hello there".into())
        );
        assert_eq!(decoded("[1,2]").unwrap(), Command::Echo("[1,2]".into()));
        let error = |frame| decoded(frame).unwrap_err().to_string();
        assert!(error(r#"{"data":{}}"#).contains("\"type\""));
        assert!(error(r#"{"type":"dance"}"#).contains("Unknown message type: dance"));
        assert!(error(r#"{"type":"multi_chat","data":{"message":"x"}}"#).contains("persona_ids"));
        assert!(error(r#"{"type":"chat","data":"x"}"#).contains("object"));
        assert!(
            error(r#"{"type":"chat","data":{"temperature":"hot"}}"#).contains("invalid chat data")
        );
        let echo = Seed002.encode_reply(&Reply::Echo("hi".into()));
        assert_eq!(&echo[..], b"Echo: hi");
    }

    #[test]
    fn a_reply_is_status_chunks_then_final_chunk_and_response() {
        let started = StreamEvent::started_for_test("c1", "m1");
        let frames = values(&Seed002.encode_event(&sequenced(1, started)));
        assert_eq!(frames[0]["type"], "status");
        assert_eq!(frames[0]["status"], "starting");
        let generating = values(&Seed002.encode_event(&sequenced(
            3,
            StreamEvent::Progress(ProgressStep::Generating),
        )));
        assert_eq!(generating[0]["status"], "streaming");
        let chunk = values(&Seed002.encode_event(&sequenced(4, StreamEvent::Token("Hel".into()))));
        assert_eq!(
            chunk[0],
            json!({"type":"chunk","chunk":"Hel","is_final":false,"stream_id":"s1","seq":4})
        );
        let completed = StreamEvent::Completed {
            response: "Hel".into(),
            message_id: "m1".into(),
            session_id: "c1".into(),
            metadata: Box::new(rill_protocol::Metadata {
                agent: "assistant".into(),
                model: "demo".into(),
                finish_reason: rill_protocol::FinishReason::Stop,
                usage: None,
                sources: vec![],
                context: Default::default(),
                confidence: None,
                routing: None,
                reasoning: None,
                timing: None,
                cost: None,
            }),
        };
        let end = values(&Seed002.encode_event(&sequenced(5, completed.clone())));
        assert_eq!(end.len(), 2);
        assert_eq!(end[0]["is_final"], true);
        assert_eq!(end[1]["type"], "response");
        assert_eq!(end[1]["status"], "completed");
        assert_eq!(end[1]["data"]["response_id"], "m1");
        assert_eq!(end[1]["data"]["output_text"], "Hel");
        // In a multi-persona question: persona and index, and persona_response.
        let place = Place {
            index: 2,
            several: true,
            persona_id: Some(Arc::from("assistant")),
        };
        let end = values(
            &Seed002
                .encode_placed(&sequenced(5, completed), &place)
                .unwrap(),
        );
        assert_eq!(end[0]["index"], 2);
        assert_eq!(end[1]["type"], "persona_response");
        assert_eq!(end[1]["index"], 2);
        assert_eq!(end[1]["response"], "Hel");
    }

    #[test]
    fn a_chunk_frame_is_the_json_it_always_was() {
        for text in [
            "Oh,",
            " word",
            "",
            "\"quoted\" \\ back",
            "line\nbreak\ttab\u{1}",
            "naïve — 日本 🦀",
        ] {
            let frame = chunk_frame(text, "stream-1", 42);
            assert!(!frame.contains(&b'\n'), "one frame, one line: {text:?}");
            let parsed: Value = serde_json::from_slice(&frame).unwrap();
            assert_eq!(
                parsed,
                json!({"type": "chunk", "chunk": text, "is_final": false, "stream_id": "stream-1", "seq": 42}),
                "{text:?}"
            );
        }
    }
}
