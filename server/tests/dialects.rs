//! Seed clients against the real server: seed 002's WebSocket API at `/ws`
//! (its JavaScript example, persona chat, multi-persona chat, continuation by
//! `previous_response_id`, the echo of non-JSON frames) and seed 000's raw-text
//! chat on `/ws/chat`. Each test sends the frames the seed's client sends and
//! reads the fields it reads.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The next text frame, as text (pings skipped).
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame arrives")
            .expect("the socket is open")
            .expect("the frame is valid");
        match message {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame: {other:?}"),
        }
    }
}

/// Seed 002 frames until one of type `kind` with `status: completed` (or an
/// error) arrives; all of them, that one last.
async fn until(ws: &mut Ws, kind: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame: Value = serde_json::from_str(&next_text(ws).await).unwrap();
        let done =
            (frame["type"] == kind && frame["status"] == "completed") || frame["type"] == "error";
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

fn chunks(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "chunk")
        .map(|f| f["chunk"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn seed_002_javascript_example_streams_chunks_then_a_response() {
    let server = start().await;
    let mut ws = server.ws_at("/ws").await;
    // The example's onopen: openai_chat with input_text and model.
    send(
        &mut ws,
        json!({"type": "openai_chat", "data": {"input_text": "Hello, world!", "model": "gpt-4o-mini"}}),
    )
    .await;
    let frames = until(&mut ws, "response").await;
    let statuses: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "status")
        .map(|f| f["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["starting", "processing", "streaming"]);
    for status in frames.iter().filter(|f| f["type"] == "status") {
        assert!(status["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // The example's onmessage: `if (data.type === 'chunk') write(data.chunk)`.
    let text = chunks(&frames);
    assert!(text.contains("Hello, world!"), "{text}");
    let finals: Vec<bool> = frames
        .iter()
        .filter(|f| f["type"] == "chunk")
        .map(|f| f["is_final"].as_bool().unwrap())
        .collect();
    assert_eq!(finals.iter().filter(|f| **f).count(), 1);
    assert!(finals.last().unwrap(), "the last chunk is final");
    let response = frames.last().unwrap();
    assert_eq!(response["type"], "response");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["data"]["output_text"], text);
    assert!(response["data"]["response_id"].is_string());
}

#[tokio::test]
async fn previous_response_id_continues_that_conversation() {
    let server = start().await;
    let mut ws = server.ws_at("/ws").await;
    send(
        &mut ws,
        json!({"type": "openai_chat", "data": {"input_text": "My name is Ada.", "model": "gpt-4o-mini"}}),
    )
    .await;
    let first = until(&mut ws, "response").await;
    let data = &first.last().unwrap()["data"];
    let response_id = data["response_id"].as_str().unwrap().to_owned();
    let session = data["session_id"].as_str().unwrap().to_owned();
    send(
        &mut ws,
        json!({"type": "openai_chat", "data": {"input_text": "What is my name?", "previous_response_id": response_id}}),
    )
    .await;
    let second = until(&mut ws, "response").await;
    let data = &second.last().unwrap()["data"];
    assert_eq!(data["session_id"], session.as_str());
    assert_ne!(data["response_id"], response_id.as_str());
    let conversation = get_json(&server, &format!("/api/v1/conversations/{session}")).await;
    assert_eq!(conversation["messages"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn persona_chat_answers_in_the_personas_voice() {
    let server = start().await;
    let mut ws = server.ws_at("/ws").await;
    send(
        &mut ws,
        json!({"type": "chat", "data": {
            "message": "What's your favorite programming language?",
            "persona_id": "tech_enthusiast", "api": "openai", "model": "gpt-4o-mini",
            "temperature": 0.7, "max_tokens": 1000}}),
    )
    .await;
    let frames = until(&mut ws, "response").await;
    let response = frames.last().unwrap();
    assert_eq!(response["data"]["persona_id"], "tech_enthusiast");
    assert_eq!(response["data"]["response"], chunks(&frames));
    assert!(
        chunks(&frames).contains("Three things I would try right away"),
        "the tech enthusiast's voice"
    );
}

#[tokio::test]
async fn multi_chat_streams_every_persona_then_persona_responses_and_a_combined_response() {
    let server = start_with(|c| c.demo_delay = Duration::from_millis(2)).await;
    let mut ws = server.ws_at("/ws").await;
    let personas = ["tech_enthusiast", "creative_writer", "data_scientist"];
    send(
        &mut ws,
        json!({"type": "multi_chat", "data": {
            "message": "What do you think about AI?", "persona_ids": personas,
            "api": "openai", "model": "gpt-4o-mini", "temperature": 0.7, "max_tokens": 1000}}),
    )
    .await;
    let frames = until(&mut ws, "response").await;
    let answers: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "persona_response")
        .collect();
    assert_eq!(answers.len(), 3);
    for answer in &answers {
        let index = answer["index"].as_u64().unwrap() as usize;
        assert_eq!(answer["persona_id"], personas[index]);
        // Each persona's chunks (tagged with its index) make its response.
        let own: String = frames
            .iter()
            .filter(|f| f["type"] == "chunk" && f["index"] == index)
            .map(|f| f["chunk"].as_str().unwrap())
            .collect();
        assert_eq!(answer["response"], own);
    }
    let statuses = frames
        .iter()
        .filter(|f| f["type"] == "status" && f["status"] == "starting")
        .count();
    assert_eq!(statuses, 3, "status updates for each persona");
    let combined = frames.last().unwrap();
    assert_eq!(combined["type"], "response");
    let responses = combined["data"]["responses"].as_array().unwrap();
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response["persona_id"], personas[i]);
        assert_eq!(response["index"], i);
        let answer = answers.iter().find(|a| a["index"] == i).unwrap();
        assert_eq!(response["response"], answer["response"]);
    }
}

#[tokio::test]
async fn echo_errors_and_unsupported_features_keep_the_socket_usable() {
    let server = start().await;
    let mut ws = server.ws_at("/ws").await;
    // Seed 000's /ws: anything that is not a JSON object comes back.
    ws.send(Message::Text("hello there".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "Echo: hello there");
    ws.send(Message::Text("line one\nline two".into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "Echo: line one\nline two");
    for (frame, needle) in [
        (json!({"type": "dance"}), "Unknown message type: dance"),
        (json!({"data": {}}), "type"),
        (
            json!({"type": "multi_chat", "data": {"message": "x"}}),
            "persona_ids",
        ),
        (json!({"type": "chat", "data": {"message": ""}}), "empty"),
        (
            json!({"type": "chat", "data": {"message": "x", "persona_id": "pirate"}}),
            "pirate",
        ),
        (
            json!({"type": "openai_chat", "data": {"input_text": "x", "tools": [{"type": "web_search"}]}}),
            "Responses API",
        ),
    ] {
        send(&mut ws, frame.clone()).await;
        let error: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert_eq!(error["type"], "error", "{frame}");
        assert_eq!(error["status"], "error");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{frame} → {error}"
        );
    }
    send(&mut ws, json!({"type": "ping", "data": {"timestamp": 5}})).await;
    let pong: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["timestamp"], 5);
}

#[tokio::test]
async fn seed_002_frames_need_a_token_when_auth_is_required() {
    let server = start_with(|c| c.auth_required = true).await;
    let mut ws = server.ws_at("/ws").await;
    send(&mut ws, json!({"type": "chat", "data": {"message": "hi"}})).await;
    let error: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(error["code"], "AUTH_REQUIRED");
    let token = server.token("ada");
    send(&mut ws, json!({"type": "auth", "data": {"token": token}})).await;
    let ok: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(ok["status"], "authenticated", "{ok}");
    send(&mut ws, json!({"type": "chat", "data": {"message": "hi"}})).await;
    let frames = until(&mut ws, "response").await;
    assert_eq!(frames.last().unwrap()["type"], "response");
}

#[tokio::test]
async fn seed_000_raw_text_chat_gets_start_tokens_end() {
    let server = start().await;
    let mut ws = server.ws().await;
    // The seed page's askQuestion(): the question as a plain text frame.
    ws.send(Message::Text("What is streaming?".into()))
        .await
        .unwrap();
    let mut frames = Vec::new();
    loop {
        let frame: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        let end = frame["type"] == "end";
        frames.push(frame);
        if end {
            break;
        }
    }
    assert_eq!(frames[0]["type"], "start");
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|k| *k == "token"),
        "{kinds:?}"
    );
    let text: String = frames
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["content"].as_str().unwrap())
        .collect();
    assert!(text.contains("What is streaming?"), "{text}");
    // The same socket still speaks the native dialect.
    assert_usable(&mut ws).await;
    // And the reply was stored like any other.
    let stream_id = frames[0]["stream_id"].as_str().unwrap();
    let terminal = terminal_event(&server, stream_id).await;
    assert_eq!(terminal["response"], text.as_str());
}

#[tokio::test]
async fn the_plain_chat_page_is_served_with_a_strict_policy() {
    let server = start().await;
    let response = reqwest::get(server.http("/chat")).await.unwrap();
    assert_eq!(response.status(), 200);
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let page = response.text().await.unwrap();
    assert!(page.contains("/ws/chat"));
    assert!(!page.contains("innerHTML"), "model text is never HTML");
}
