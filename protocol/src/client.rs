//! Client → server frames, and the parser that classifies bad ones.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ErrorCode;

/// One frame a client sends, tagged by `"type"`. Unknown fields are ignored.
// A frame lives for one dispatch and is never stored in bulk: boxing `message`
// would cost an allocation per frame to save stack bytes nobody keeps.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Authenticate this connection with a JWT.
    Auth {
        /// The JWT (HS256).
        token: String,
    },
    /// Ask a question: starts one stream per persona.
    Message(MessageRequest),
    /// Stop a stream; it ends with `finish_reason: "cancelled"`.
    Cancel {
        /// The stream to stop.
        stream_id: String,
    },
    /// Attach to a stream after a known position.
    Resume {
        /// The stream to attach to.
        stream_id: String,
        /// The last seq the client has; it receives seq > after_seq.
        #[serde(default)]
        after_seq: u64,
    },
    /// Liveness check; answered by `pong`.
    Ping {
        /// The client's clock, echoed back verbatim.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<serde_json::Number>,
    },
    /// Ask for the server's capabilities; answered by `hello`.
    Hello {
        /// The protocol version the client speaks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<u32>,
    },
    /// Join a room (`project_<id>`: a project of the caller's); answered by
    /// `joined`, then `room_event` and `presence` frames of that room.
    Join {
        /// The room.
        room: String,
    },
    /// Leave a room; answered by `left`.
    Leave {
        /// The room.
        room: String,
    },
    /// Send a text to a room this connection is in: its members get a
    /// `room_event` named `message` with `{text, from}`.
    Broadcast {
        /// The room.
        room: String,
        /// The text to broadcast.
        #[serde(default)]
        message: String,
    },
}

impl ClientFrame {
    /// Every `type` a client may send, in documentation order.
    pub const TYPES: [&'static str; 9] = [
        "auth",
        "message",
        "cancel",
        "resume",
        "ping",
        "hello",
        "join",
        "leave",
        "broadcast",
    ];
}

/// The body of a `message` frame, and of the HTTP chat routes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageRequest {
    /// The question. Missing, empty or blank is `EMPTY_MESSAGE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The conversation (seed 003's name for it). Absent: the server makes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Seed 004's name for the conversation; used when `session_id` is absent.
    /// Seed 004 sends numbers (`"chat_id": 1`): a number is read as its decimal text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    pub chat_id: Option<String>,
    /// Seed 002's continuation: the `message_id` of an earlier reply (its
    /// conversation is continued), or a conversation id. Used when neither
    /// `session_id` nor `chat_id` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// Opaque customer reference, stored with the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The persona that answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona_id: Option<String>,
    /// Several personas answer, one stream each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona_ids: Option<Vec<String>>,
    /// The model; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Upper bound on the reply's length in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Send the conversation's history to the model (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_history: Option<bool>,
    /// The client's own id for this message, echoed in `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    /// Tools for the model (OpenAI Responses API tool objects, e.g.
    /// `{"type": "web_search"}`); only the openai provider offers them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<serde_json::Value>>,
    /// Ask for the model's reasoning summary too (Responses API); only the
    /// openai provider offers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_reasoning: Option<bool>,
    /// Edit-and-resend: the id of a stored question of this conversation (or
    /// of a reply: its question) that this message is a new version of. The
    /// old version and the branch after it are kept (`versions` in the
    /// conversation; `POST …/select` shows it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_from: Option<String>,
    /// Answer again: the id of a stored reply. Its question is answered anew
    /// (`message` is not needed, and is ignored) by the same persona unless
    /// one `persona_id` is named (`auto` routes again); the new reply is a
    /// version of the old one, which is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regenerate: Option<String>,
    /// Answer from this project's documents: the best passages are retrieved
    /// before the model answers (`progress` `rag_retrieval`, then `sources`).
    /// A project without documents, or unknown, answers without retrieval;
    /// another user's is `FORBIDDEN`. Seed 004 sends numbers: read as text.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "string_or_number"
    )]
    pub project_id: Option<String>,
}

/// Reads an optional id sent as a string or as an integer.
fn string_or_number<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Int(i64),
        Unsigned(u64),
    }
    Ok(match Option::<Id>::deserialize(deserializer)? {
        None => None,
        Some(Id::Text(text)) => Some(text),
        Some(Id::Int(n)) => Some(n.to_string()),
        Some(Id::Unsigned(n)) => Some(n.to_string()),
    })
}

/// The persona a reply is attributed to when the client names none.
pub const DEFAULT_PERSONA: &str = "assistant";

impl MessageRequest {
    /// The question if it has any non-blank text.
    pub fn text(&self) -> Option<&str> {
        self.message.as_deref().filter(|m| !m.trim().is_empty())
    }

    /// The conversation id the client named as `session_id` or `chat_id`
    /// (`previous_response_id` needs the store to resolve; see the server).
    pub fn conversation_id(&self) -> Option<&str> {
        self.session_id
            .as_deref()
            .or(self.chat_id.as_deref())
            .filter(|id| !id.is_empty())
    }

    /// The personas that answer: `persona_ids`, else `persona_id`, else the default.
    pub fn personas(&self) -> Vec<String> {
        match (&self.persona_ids, &self.persona_id) {
            (Some(ids), _) if !ids.is_empty() => ids.clone(),
            (_, Some(id)) if !id.is_empty() => vec![id.clone()],
            _ => vec![DEFAULT_PERSONA.to_owned()],
        }
    }
}

/// Why a client frame was rejected. Every variant is answered with `INVALID_MESSAGE`
/// and a human message naming the problem; the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Not JSON at all.
    Malformed(String),
    /// JSON, but not an object.
    NotAnObject,
    /// An object without a string `type`.
    MissingType,
    /// A `type` this protocol does not have.
    UnknownType(String),
    /// A known `type` whose fields have the wrong shape.
    InvalidFields {
        /// The frame's type.
        kind: String,
        /// What serde found wrong.
        detail: String,
    },
}

impl FrameError {
    /// The protocol error code for this failure.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidMessage
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Malformed(detail) => write!(f, "malformed JSON: {detail}"),
            FrameError::NotAnObject => f.write_str("a frame must be a JSON object"),
            FrameError::MissingType => f.write_str("a frame needs a string \"type\" field"),
            FrameError::UnknownType(kind) => write!(
                f,
                "unknown type \"{kind}\"; expected one of: {}",
                ClientFrame::TYPES.join(", ")
            ),
            FrameError::InvalidFields { kind, detail } => {
                write!(f, "invalid \"{kind}\" frame: {detail}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Parses one client frame, classifying what is wrong with a bad one.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    // A well-formed object parses in one pass, without a `Value` in between
    // (about half the cost of every question's frame). Anything else takes
    // the path below, which says what is wrong (and keeps the last of a
    // duplicated key, which the one pass refuses). Only an object: the one
    // pass would take a tagged array too.
    if text.trim_start().starts_with('{')
        && let Ok(frame) = serde_json::from_str(text)
    {
        return Ok(frame);
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))?;
    parse_client_value(value)
}

/// Like [`parse_client_frame`], for JSON that is already parsed.
pub fn parse_client_value(value: Value) -> Result<ClientFrame, FrameError> {
    let Value::Object(ref object) = value else {
        return Err(FrameError::NotAnObject);
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => return Err(FrameError::MissingType),
    };
    if !ClientFrame::TYPES.contains(&kind.as_str()) {
        return Err(FrameError::UnknownType(truncate(&kind, 64)));
    }
    serde_json::from_value(value).map_err(|e| FrameError::InvalidFields {
        kind,
        detail: e.to_string(),
    })
}

/// Parses the body of the HTTP chat routes (the fields of a `message` frame).
pub fn parse_message_request(body: &[u8]) -> Result<MessageRequest, FrameError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !value.is_object() {
        return Err(FrameError::NotAnObject);
    }
    serde_json::from_value(value).map_err(|e| FrameError::InvalidFields {
        kind: "message".to_owned(),
        detail: e.to_string(),
    })
}

/// Keeps error messages bounded when they quote client input.
fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seed_003_auth_frame() {
        let frame = parse_client_frame(r#"{"type": "auth", "token": "jwt_token_here"}"#).unwrap();
        assert_eq!(
            frame,
            ClientFrame::Auth {
                token: "jwt_token_here".into()
            }
        );
    }

    #[test]
    fn parses_seed_003_message_frame() {
        let frame = parse_client_frame(
            r#"{
              "type": "message",
              "message": "What is the engine power?",
              "session_id": "optional-session-id",
              "customer_id": "optional-customer-id"
            }"#,
        )
        .unwrap();
        let ClientFrame::Message(request) = frame else {
            panic!("not a message: {frame:?}");
        };
        assert_eq!(request.text(), Some("What is the engine power?"));
        assert_eq!(request.conversation_id(), Some("optional-session-id"));
        assert_eq!(request.customer_id.as_deref(), Some("optional-customer-id"));
        assert_eq!(request.personas(), vec!["assistant".to_owned()]);
    }

    #[test]
    fn seed_003_js_client_null_session_id_is_accepted() {
        // The seed's JS `sendMessage(message)` sends `session_id: null`.
        let frame =
            parse_client_frame(r#"{"type":"message","message":"hi","session_id":null}"#).unwrap();
        let ClientFrame::Message(request) = frame else {
            panic!("not a message");
        };
        assert_eq!(request.conversation_id(), None);
    }

    #[test]
    fn chat_id_is_the_conversation_when_session_id_is_absent() {
        let request: MessageRequest =
            serde_json::from_str(r#"{"message":"x","chat_id":"c-1"}"#).unwrap();
        assert_eq!(request.conversation_id(), Some("c-1"));
    }

    #[test]
    fn blank_message_has_no_text() {
        for body in [
            r#"{"type":"message"}"#,
            r#"{"type":"message","message":""}"#,
            r#"{"type":"message","message":" \n\t "}"#,
            r#"{"type":"message","message":null}"#,
        ] {
            let ClientFrame::Message(request) = parse_client_frame(body).unwrap() else {
                panic!("not a message");
            };
            assert_eq!(request.text(), None, "{body}");
        }
    }

    #[test]
    fn classifies_bad_frames() {
        assert!(matches!(
            parse_client_frame("{not json"),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(parse_client_frame("[1,2]"), Err(FrameError::NotAnObject));
        assert_eq!(parse_client_frame("42"), Err(FrameError::NotAnObject));
        assert_eq!(
            parse_client_frame(r#"{"message":"hi"}"#),
            Err(FrameError::MissingType)
        );
        assert_eq!(
            parse_client_frame(r#"{"type":7}"#),
            Err(FrameError::MissingType)
        );
        assert_eq!(
            parse_client_frame(r#"{"type":"shout"}"#),
            Err(FrameError::UnknownType("shout".into()))
        );
        let err = parse_client_frame(r#"{"type":"message","message":42}"#).unwrap_err();
        assert!(
            matches!(&err, FrameError::InvalidFields { kind, .. } if kind == "message"),
            "{err:?}"
        );
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = parse_client_frame(r#"{"type":"auth"}"#).unwrap_err();
        assert!(err.to_string().contains("token"), "{err}");
    }

    #[test]
    fn the_one_pass_parses_what_the_classifying_path_parses() {
        let frames = [
            r#"{"type":"message","message":"hi \"there\" ü","session_id":"s1","persona_ids":["a","b"],"temperature":0.5}"#,
            r#"{"message":"type second","type":"message","project_id":42,"customer_id":-7,"max_tokens":10}"#,
            r#"{"type":"message","message":"first","message":"last"}"#,
            r#"{"type":"ping","type":"ping","timestamp":5}"#,
            r#"{"type":"resume","stream_id":"s","after_seq":18446744073709551615}"#,
            r#"{"type":"auth","token":"t","extra":{"nested":[1,2,{"x":null}]}}"#,
            r#"{"type":"broadcast","room":"r","message":"m"}"#,
            r#"{"type":"hello","protocol":1}"#,
            r#"  {"type":"cancel","stream_id":"s"}  "#,
        ];
        for text in frames {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                parse_client_frame(text),
                parse_client_value(value),
                "{text}"
            );
        }
        // Tagged arrays are not frames.
        assert_eq!(
            parse_client_frame(r#"["ping"]"#),
            Err(FrameError::NotAnObject)
        );
        assert_eq!(
            parse_client_frame(r#" ["ping", 5]"#),
            Err(FrameError::NotAnObject)
        );
    }

    #[test]
    fn unknown_type_in_error_text_is_bounded() {
        let long = "x".repeat(10_000);
        let err = parse_client_frame(&format!(r#"{{"type":"{long}"}}"#)).unwrap_err();
        assert!(err.to_string().len() < 300);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let frame =
            parse_client_frame(r#"{"type":"ping","extra":{"a":1},"timestamp":17}"#).unwrap();
        assert_eq!(
            frame,
            ClientFrame::Ping {
                timestamp: Some(17.into())
            }
        );
    }

    #[test]
    fn resume_defaults_after_seq_to_zero() {
        assert_eq!(
            parse_client_frame(r#"{"type":"resume","stream_id":"s"}"#).unwrap(),
            ClientFrame::Resume {
                stream_id: "s".into(),
                after_seq: 0
            }
        );
    }

    #[test]
    fn persona_ids_win_over_persona_id() {
        let request: MessageRequest =
            serde_json::from_str(r#"{"persona_id":"a","persona_ids":["b","c"]}"#).unwrap();
        assert_eq!(request.personas(), vec!["b".to_owned(), "c".to_owned()]);
    }

    #[test]
    fn http_body_parser_rejects_non_objects() {
        assert_eq!(
            parse_message_request(b"\"hi\""),
            Err(FrameError::NotAnObject)
        );
        assert!(parse_message_request(br#"{"message":"hi","temperature":"hot"}"#).is_err());
        assert_eq!(
            parse_message_request(br#"{"message":"hi"}"#)
                .unwrap()
                .text(),
            Some("hi")
        );
    }
}
