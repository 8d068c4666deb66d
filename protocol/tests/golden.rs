//! Golden JSON: the exact wire form of every event, and seed 003's literal frames.

use rill_protocol::server::Context;
use rill_protocol::{
    AuthUser, ClientFrame, ErrorCode, FinishReason, Limits, Metadata, ProgressStep, ServerEvent,
    Usage, parse_client_frame,
};
use serde_json::{Value, json};

fn sample_metadata() -> Metadata {
    Metadata {
        agent: "assistant".into(),
        model: "demo".into(),
        finish_reason: FinishReason::Stop,
        usage: Some(Usage {
            prompt_tokens: 5,
            completion_tokens: 3,
            estimated: false,
        }),
        sources: vec![],
        context: Context::default(),
        confidence: None,
        routing: None,
        reasoning: None,
        timing: None,
        cost: None,
    }
}

/// One of each event, with the exact text the server puts on the wire.
fn golden_events() -> Vec<(ServerEvent, &'static str)> {
    vec![
        (
            ServerEvent::Hello {
                connection_id: "c1".into(),
                protocol: 1,
                server: "rill/0.1.0".into(),
                heartbeat_ms: 25000,
                auth_required: false,
                limits: Limits {
                    max_frame_bytes: 65536,
                    max_personas: 8,
                },
            },
            r#"{"type":"hello","connection_id":"c1","protocol":1,"server":"rill/0.1.0","heartbeat_ms":25000,"auth_required":false,"limits":{"max_frame_bytes":65536,"max_personas":8}}"#,
        ),
        (
            ServerEvent::AuthSuccess {
                message: "Authentication successful".into(),
                user: AuthUser {
                    id: "user-uuid".into(),
                    email: Some("user@example.com".into()),
                    name: Some("User Name".into()),
                },
                connection_id: "c1".into(),
                protocol: 1,
                heartbeat_ms: 25000,
            },
            r#"{"type":"auth_success","message":"Authentication successful","user":{"id":"user-uuid","email":"user@example.com","name":"User Name"},"connection_id":"c1","protocol":1,"heartbeat_ms":25000}"#,
        ),
        (
            ServerEvent::AuthError {
                message: "Invalid token".into(),
                code: ErrorCode::AuthFailed,
            },
            r#"{"type":"auth_error","message":"Invalid token","code":"AUTH_FAILED"}"#,
        ),
        (
            ServerEvent::Pong {
                timestamp: Some(1_700_000_000_123u64.into()),
                server_time: 1_700_000_000_200,
            },
            r#"{"type":"pong","timestamp":1700000000123,"server_time":1700000000200}"#,
        ),
        (
            ServerEvent::Start {
                stream_id: "s1".into(),
                seq: 1,
                session_id: "sess".into(),
                message_id: "m1".into(),
                user_message_id: Some("u1".into()),
                persona_id: "assistant".into(),
                model: "demo".into(),
                client_message_id: None,
            },
            r#"{"type":"start","stream_id":"s1","seq":1,"session_id":"sess","message_id":"m1","user_message_id":"u1","persona_id":"assistant","model":"demo"}"#,
        ),
        (
            ServerEvent::Progress {
                stream_id: "s1".into(),
                seq: 2,
                step: ProgressStep::RagRetrieval,
                message: "Searching knowledge base...".into(),
                agent: None,
                confidence: None,
            },
            r#"{"type":"progress","stream_id":"s1","seq":2,"step":"rag_retrieval","message":"Searching knowledge base..."}"#,
        ),
        (
            ServerEvent::Progress {
                stream_id: "s1".into(),
                seq: 3,
                step: ProgressStep::AgentRouting,
                message: "Data Scientist answers".into(),
                agent: Some("data_scientist".into()),
                confidence: Some(0.62),
            },
            r#"{"type":"progress","stream_id":"s1","seq":3,"step":"agent_routing","message":"Data Scientist answers","agent":"data_scientist","confidence":0.62}"#,
        ),
        (
            ServerEvent::Token {
                stream_id: "s1".into(),
                seq: 3,
                token: "Hello".into(),
                first_seq: None,
                partial_response: None,
            },
            r#"{"type":"token","stream_id":"s1","seq":3,"token":"Hello"}"#,
        ),
        (
            ServerEvent::Complete {
                stream_id: "s1".into(),
                seq: 4,
                response: "Hello".into(),
                session_id: "sess".into(),
                metadata: sample_metadata(),
            },
            r#"{"type":"complete","stream_id":"s1","seq":4,"response":"Hello","session_id":"sess","metadata":{"agent":"assistant","model":"demo","finish_reason":"stop","usage":{"prompt_tokens":5,"completion_tokens":3},"sources":[],"context":{"sources":[]}}}"#,
        ),
        (
            ServerEvent::error(ErrorCode::EmptyMessage, "Message is empty"),
            r#"{"type":"error","error":"Message is empty","code":"EMPTY_MESSAGE"}"#,
        ),
        (
            ServerEvent::Error {
                error: "The model provider failed".into(),
                code: ErrorCode::ProviderError,
                stream_id: Some("s1".into()),
                seq: Some(3),
                retry_after_ms: None,
            },
            r#"{"type":"error","error":"The model provider failed","code":"PROVIDER_ERROR","stream_id":"s1","seq":3}"#,
        ),
        (
            ServerEvent::Joined {
                room: "project_42".into(),
            },
            r#"{"type":"joined","room":"project_42"}"#,
        ),
        (
            ServerEvent::Left {
                room: "project_42".into(),
            },
            r#"{"type":"left","room":"project_42"}"#,
        ),
        (
            ServerEvent::RoomEvent {
                room: "project_42".into(),
                event: "document_status".into(),
                data: serde_json::json!({"document_id": 7, "progress": 40}),
            },
            r#"{"type":"room_event","room":"project_42","event":"document_status","data":{"document_id":7,"progress":40}}"#,
        ),
        (
            ServerEvent::Presence {
                room: "project_42".into(),
                status: rill_protocol::PresenceStatus::Left,
                user: "user:alice".into(),
            },
            r#"{"type":"presence","room":"project_42","status":"left","user":"user:alice"}"#,
        ),
        (
            ServerEvent::Dropped { count: 12 },
            r#"{"type":"dropped","count":12}"#,
        ),
        (
            ServerEvent::TurnComplete {
                session_id: "sess".into(),
                replies: vec![
                    rill_protocol::TurnReply {
                        stream_id: "s1".into(),
                        persona_id: "tech_enthusiast".into(),
                        message_id: "m1".into(),
                        finish_reason: Some(rill_protocol::FinishReason::Stop),
                    },
                    rill_protocol::TurnReply {
                        stream_id: "s2".into(),
                        persona_id: "creative_writer".into(),
                        message_id: "m2".into(),
                        finish_reason: None,
                    },
                ],
            },
            r#"{"type":"turn_complete","session_id":"sess","replies":[{"stream_id":"s1","persona_id":"tech_enthusiast","message_id":"m1","finish_reason":"stop"},{"stream_id":"s2","persona_id":"creative_writer","message_id":"m2"}]}"#,
        ),
    ]
}

#[test]
fn every_event_serializes_to_its_golden_text_and_back() {
    let events = golden_events();
    let mut kinds: Vec<&str> = events.iter().map(|(e, _)| e.kind()).collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        ServerEvent::TYPES,
        "one golden sample per event type"
    );
    for (event, golden) in events {
        assert_eq!(event.to_json(), golden);
        let back: ServerEvent = serde_json::from_str(golden).unwrap();
        assert_eq!(back, event);
    }
}

#[test]
fn token_carries_partial_response_only_when_set() {
    let event = ServerEvent::Token {
        stream_id: "s".into(),
        seq: 3,
        token: " world".into(),
        first_seq: None,
        partial_response: Some("Hello world".into()),
    };
    assert_eq!(
        event.to_json(),
        r#"{"type":"token","stream_id":"s","seq":3,"token":" world","partial_response":"Hello world"}"#
    );
}

#[test]
fn stream_events_report_their_position_and_terminality() {
    for (event, _) in golden_events() {
        let position = event.stream_position();
        match event.kind() {
            "start" | "progress" | "token" | "complete" => assert!(position.is_some()),
            "error" => assert_eq!(position.is_some(), event.is_terminal()),
            _ => assert!(position.is_none() && !event.is_terminal()),
        }
    }
}

// --- Seed 003 ("WebSocket Real-Time Chat Streaming"), its literal frames. ---

/// The client frames exactly as seed 003 documents them.
const SEED_003_CLIENT_FRAMES: [&str; 2] = [
    r#"{
  "type": "auth",
  "token": "jwt_token_here"
}"#,
    r#"{
  "type": "message",
  "message": "What is the engine power?",
  "session_id": "optional-session-id",
  "customer_id": "optional-customer-id"
}"#,
];

/// The server frames exactly as seed 003 documents them.
const SEED_003_SERVER_FRAMES: [&str; 6] = [
    r#"{
  "type": "auth_success",
  "message": "Authentication successful",
  "user": {
    "id": "user-uuid",
    "email": "user@example.com",
    "name": "User Name"
  }
}"#,
    r#"{
  "type": "auth_error",
  "message": "Invalid token"
}"#,
    r#"{
  "type": "progress",
  "step": "rag_retrieval",
  "message": "Searching knowledge base..."
}"#,
    r#"{
  "type": "token",
  "token": "word or phrase",
  "partial_response": "accumulated response so far"
}"#,
    r#"{
  "type": "complete",
  "response": "Full response text here",
  "session_id": "session-id",
  "metadata": {
    "agent": "specs",
    "confidence": 0.95,
    "context": {
      "sources": ["doc1.md", "doc2.md"]
    }
  }
}"#,
    r#"{
  "type": "error",
  "error": "Error message",
  "code": "ERROR_CODE"
}"#,
];

#[test]
fn seed_003_client_frames_parse() {
    let auth = parse_client_frame(SEED_003_CLIENT_FRAMES[0]).unwrap();
    assert!(matches!(auth, ClientFrame::Auth { ref token } if token == "jwt_token_here"));
    let message = parse_client_frame(SEED_003_CLIENT_FRAMES[1]).unwrap();
    let ClientFrame::Message(request) = message else {
        panic!("not a message");
    };
    assert_eq!(request.text(), Some("What is the engine power?"));
    assert_eq!(request.session_id.as_deref(), Some("optional-session-id"));
    assert_eq!(request.customer_id.as_deref(), Some("optional-customer-id"));
}

/// Every key path of `seed` is in `ours` with a value of the same JSON kind.
fn assert_superset(seed: &Value, ours: &Value, path: &str, optional: &[&str]) {
    match (seed, ours) {
        (Value::Object(seed), Value::Object(ours)) => {
            for (key, seed_value) in seed {
                let here = format!("{path}.{key}");
                if optional.contains(&here.as_str()) {
                    continue;
                }
                let ours_value = ours
                    .get(key)
                    .unwrap_or_else(|| panic!("rill's frame lacks {here}"));
                assert_superset(seed_value, ours_value, &here, optional);
            }
        }
        (seed, ours) => assert_eq!(
            std::mem::discriminant(seed),
            std::mem::discriminant(ours),
            "{path}: seed has {seed}, rill has {ours}"
        ),
    }
}

#[test]
fn rill_server_frames_carry_every_field_seed_003_documents() {
    let seed: Vec<Value> = SEED_003_SERVER_FRAMES
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    let ours: Vec<Value> = [
        ServerEvent::AuthSuccess {
            message: "Authentication successful".into(),
            user: AuthUser {
                id: "u".into(),
                email: Some("e@x".into()),
                name: Some("n".into()),
            },
            connection_id: "c".into(),
            protocol: 1,
            heartbeat_ms: 25000,
        },
        ServerEvent::AuthError {
            message: "Invalid token".into(),
            code: ErrorCode::AuthFailed,
        },
        ServerEvent::Progress {
            stream_id: "s".into(),
            seq: 2,
            step: ProgressStep::Generating,
            message: "Generating response...".into(),
            agent: None,
            confidence: None,
        },
        ServerEvent::Token {
            stream_id: "s".into(),
            seq: 3,
            token: "w".into(),
            first_seq: None,
            partial_response: Some("w".into()),
        },
        ServerEvent::Complete {
            stream_id: "s".into(),
            seq: 4,
            response: "w".into(),
            session_id: "sess".into(),
            metadata: Metadata {
                sources: vec!["doc1.md".into()],
                context: Context {
                    sources: vec!["doc1.md".into()],
                },
                ..sample_metadata()
            },
        },
        ServerEvent::error(ErrorCode::ProcessingError, "Error message"),
    ]
    .iter()
    .map(|event| serde_json::to_value(event).unwrap())
    .collect();
    // `confidence` is documented as optional: the demo provider has none to give.
    let optional = [".metadata.confidence"];
    for (seed, ours) in seed.iter().zip(&ours) {
        assert_superset(seed, ours, "", &optional);
    }
    assert_eq!(ours[4]["metadata"]["agent"], json!("assistant"));
}

#[test]
fn unknown_error_codes_are_rejected_by_rill_clients() {
    // rill's own clients deserialize events; the seed's minimal error frame
    // (with a code rill does not have) must not be mistaken for a known one.
    assert!(serde_json::from_str::<ServerEvent>(SEED_003_SERVER_FRAMES[5]).is_err());
    let ok = r#"{"type":"error","error":"Error message","code":"PROCESSING_ERROR"}"#;
    assert!(serde_json::from_str::<ServerEvent>(ok).is_ok());
}

#[test]
fn every_seed_name_for_the_conversation_parses() {
    // Seed 004 sends a numeric chat_id; seed 002 a previous_response_id.
    let frame = rill_protocol::parse_client_frame(
        r#"{"type":"message","message":"hi","chat_id":1,"include_history":true}"#,
    )
    .unwrap();
    let rill_protocol::ClientFrame::Message(request) = frame else {
        panic!("a message")
    };
    assert_eq!(request.conversation_id(), Some("1"));
    assert_eq!(request.include_history, Some(true));
    let frame = rill_protocol::parse_client_frame(
        r#"{"type":"message","message":"hi","previous_response_id":"r-1","replace_from":"m-1"}"#,
    )
    .unwrap();
    let rill_protocol::ClientFrame::Message(request) = frame else {
        panic!("a message")
    };
    assert_eq!(request.previous_response_id.as_deref(), Some("r-1"));
    assert_eq!(request.replace_from.as_deref(), Some("m-1"));
    // Answering again needs no text: the reply names its question.
    let frame =
        rill_protocol::parse_client_frame(r#"{"type":"message","regenerate":"r-2"}"#).unwrap();
    let rill_protocol::ClientFrame::Message(request) = frame else {
        panic!("a message")
    };
    assert_eq!(request.regenerate.as_deref(), Some("r-2"));
    assert_eq!(request.text(), None);
    assert!(
        rill_protocol::parse_client_frame(r#"{"type":"message","message":"hi","chat_id":{"a":1}}"#)
            .is_err()
    );
}
