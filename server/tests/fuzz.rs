//! Property-based fuzzing of the frame decoder and the native codec (proptest:
//! no nightly toolchain is needed). Inputs: arbitrary text, arbitrary JSON built
//! from the protocol's own field names, valid frames with random edits, and
//! arbitrary reply text to encode. Properties: nothing panics, every refusal has
//! a documented code, encoded frames are JSON that decodes back to what was
//! encoded, and a real server fed such frames keeps serving.
//!
//! Quick (in `./x test`): proptest's default number of cases. Long run:
//!
//! ```sh
//! PROPTEST_CASES=200000 cargo test --release -p rill --test fuzz -- --test-threads 2
//! ```

mod common;

use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use rill::dialect::{Dialect, Native};
use rill::events::StreamEvent;
use rill::hub::Sequenced;
use serde_json::{Value, json};

/// Codes a refused frame may carry (docs/protocol.md, § Error codes).
const DECODE_CODES: [&str; 4] = [
    "INVALID_MESSAGE",
    "EMPTY_MESSAGE",
    "MESSAGE_TOO_LARGE",
    "UNSUPPORTED",
];

/// Names the protocol uses, so generated objects hit real fields.
const KEYS: [&str; 21] = [
    "type",
    "message",
    "token",
    "stream_id",
    "after_seq",
    "session_id",
    "chat_id",
    "persona_id",
    "persona_ids",
    "model",
    "temperature",
    "max_tokens",
    "include_history",
    "client_message_id",
    "replace_from",
    "regenerate",
    "timestamp",
    "room",
    "customer_id",
    "previous_response_id",
    "protocol",
];
/// Every type a client may send, and one it may not (`pong` is the server's).
fn types() -> Vec<&'static str> {
    let mut types = rill_protocol::ClientFrame::TYPES.to_vec();
    types.push("pong");
    types
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(types()).prop_map(|t| json!(t)),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..8).prop_map(
                |pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            ),
        ]
    })
}

/// A frame with the protocol's shape and random values.
fn frame_like() -> impl Strategy<Value = String> {
    (
        prop::sample::select(types()),
        prop::collection::vec((prop::sample::select(KEYS.to_vec()), json_value()), 0..6),
    )
        .prop_map(|(kind, fields)| {
            let mut object = serde_json::Map::new();
            object.insert("type".into(), json!(kind));
            for (key, value) in fields {
                object.insert(key.to_owned(), value);
            }
            Value::Object(object).to_string()
        })
}

/// A valid frame with a few bytes replaced, inserted or cut.
fn mutated() -> impl Strategy<Value = String> {
    let valid = prop::sample::select(vec![
        r#"{"type":"message","message":"What is the engine power?","session_id":"s1"}"#,
        r#"{"type":"resume","stream_id":"abc","after_seq":12}"#,
        r#"{"type":"auth","token":"eyJhbGciOiJIUzI1NiJ9.e30.sig"}"#,
        r#"{"type":"ping","timestamp":1700000000000}"#,
        r#"{"type":"message","message":"hi","persona_ids":["a","b"],"temperature":0.5}"#,
    ]);
    (
        valid,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    )
        .prop_map(|(frame, edits)| {
            let mut bytes = frame.as_bytes().to_vec();
            for (at, byte, how) in edits {
                let i = at.index(bytes.len().max(1)).min(bytes.len());
                match how {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

fn any_frame() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        frame_like(),
        mutated(),
        json_value().prop_map(|v| v.to_string())
    ]
}

proptest! {
    #[test]
    fn decoding_any_frame_never_panics_and_refusals_have_documented_codes(text in any_frame()) {
        match Native.decode(&text) {
            Ok(_) => {}
            Err(error) => {
                let code = error.code().as_str();
                prop_assert!(DECODE_CODES.contains(&code), "{code} for {text:?}");
                prop_assert!(!error.client_message().is_empty());
            }
        }
        // The nesting check is total too, and agrees with the limit.
        let _ = rill::limits::check_depth(text.as_bytes(), 32);
    }

    #[test]
    fn any_reply_text_encodes_to_json_that_decodes_back(text in any::<String>(), seq in any::<u64>()) {
        let stream: Arc<str> = Arc::from("s\"1\\");
        let event = Sequenced::new(stream.clone(), seq, StreamEvent::Token(text.clone()));
        let frame: Value = serde_json::from_slice(&Native.encoded(&event)).expect("a token frame is JSON");
        prop_assert_eq!(&frame["type"], "token");
        prop_assert_eq!(frame["token"].as_str(), Some(text.as_str()));
        prop_assert_eq!(frame["seq"].as_u64(), Some(seq));
        prop_assert_eq!(frame["stream_id"].as_str(), Some(&*stream));
    }
}

#[test]
fn a_real_server_fed_fuzzed_frames_keeps_serving() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Rates off: the point is the decoder, not the flood guard.
        let server = start_with(|c| c.limits.messages_per_minute_per_ip = 0).await;
        let mut runner = proptest::test_runner::TestRunner::default();
        let mut ws = server.ws().await;
        let before: Value = reqwest::get(server.http("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for _ in 0..runner.config().cases.min(5_000) {
            let frame = any_frame().new_tree(&mut runner).unwrap().current();
            // Valid questions start real (short) replies; the rest are refused.
            send_text(&mut ws, &frame).await;
        }
        // Whatever came back, the connection answers, and so does a new client.
        send(&mut ws, json!({"type": "ping", "timestamp": 7})).await;
        loop {
            let frame = recv(&mut ws).await;
            if frame["type"] == "pong" && frame["timestamp"] == 7 {
                break;
            }
        }
        let mut fresh = server.ws().await;
        send(
            &mut fresh,
            json!({"type": "message", "message": "still there?"}),
        )
        .await;
        let frames = recv_until_done(&mut fresh, 1).await;
        assert_eq!(frames.last().unwrap()["type"], "complete");
        let after: Value = reqwest::get(server.http("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(after["status"], "ok");
        assert_eq!(before["status"], "ok");
    });
}
