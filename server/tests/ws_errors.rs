//! Every bad input gets its documented error code, and the connection stays usable.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn expect_error(ws: &mut Ws, code: &str) -> serde_json::Value {
    let frame = recv(ws).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["code"], code, "{frame}");
    assert!(
        frame["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{frame}"
    );
    frame
}

#[tokio::test]
async fn empty_messages_are_refused() {
    let server = start().await;
    let mut ws = server.ws().await;
    for frame in [
        json!({"type": "message", "message": ""}),
        json!({"type": "message", "message": "   \n\t"}),
        json!({"type": "message"}),
        json!({"type": "message", "message": null}),
    ] {
        send(&mut ws, frame).await;
        expect_error(&mut ws, "EMPTY_MESSAGE").await;
    }
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn malformed_frames_are_invalid_messages() {
    let server = start().await;
    let mut ws = server.ws().await;
    for text in [
        "{not json",
        r#"{"message": "no type"}"#,
        r#"{"type": "shout"}"#,
        r#"{"type": "message", "message": 42}"#,
        r#"{"type": "message", "message": "hi", "temperature": "hot"}"#,
        r#"{"type": "message", "message": "hi", "persona_ids": "not-a-list"}"#,
        r#"{"type": "auth"}"#,
        r#"{"type": "resume", "stream_id": "s", "after_seq": -1}"#,
        r#"{"type": "message", "message": "hi", "session_id": "\u0007bell"}"#,
    ] {
        send_text(&mut ws, text).await;
        expect_error(&mut ws, "INVALID_MESSAGE").await;
    }
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn unknown_type_error_names_the_type() {
    let server = start().await;
    let mut ws = server.ws().await;
    send_text(&mut ws, r#"{"type": "shout"}"#).await;
    let frame = expect_error(&mut ws, "INVALID_MESSAGE").await;
    assert!(frame["error"].as_str().unwrap().contains("shout"));
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_and_the_connection_stays() {
    let server = start_with(|c| c.max_frame_bytes = 1024).await;
    let mut ws = server.ws().await;
    let big = json!({"type": "message", "message": "x".repeat(2000)});
    send(&mut ws, big).await;
    expect_error(&mut ws, "MESSAGE_TOO_LARGE").await;
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn a_frame_over_the_hard_cap_closes_with_1009() {
    let server = start_with(|c| c.max_frame_bytes = 1024).await;
    let mut ws = server.ws().await;
    let huge = "x".repeat(server.state.config.ws_hard_limit() + 10);
    let _ = ws.send(Message::Text(huge.into())).await;
    let mut close_code = None;
    while let Ok(Some(message)) = tokio::time::timeout(FRAME_TIMEOUT, ws.next())
        .await
        .map(|m| m.and_then(Result::ok))
    {
        if let Message::Close(frame) = message {
            close_code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(close_code, Some(1009));
}

#[tokio::test]
async fn binary_frames_are_unsupported() {
    let server = start().await;
    let mut ws = server.ws().await;
    ws.send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    expect_error(&mut ws, "UNSUPPORTED").await;
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn too_many_personas_and_long_ids_are_refused() {
    let server = start_with(|c| c.max_personas = 2).await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "x", "persona_ids": ["a", "b", "c"]}),
    )
    .await;
    expect_error(&mut ws, "INVALID_MESSAGE").await;
    send(
        &mut ws,
        json!({"type": "message", "message": "x", "session_id": "s".repeat(1000)}),
    )
    .await;
    expect_error(&mut ws, "INVALID_MESSAGE").await;
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn unknown_streams_cannot_be_resumed_or_cancelled() {
    let server = start().await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "resume", "stream_id": "nope", "after_seq": 3}),
    )
    .await;
    let frame = expect_error(&mut ws, "STREAM_NOT_FOUND").await;
    assert_eq!(frame["stream_id"], "nope");
    send(&mut ws, json!({"type": "cancel", "stream_id": "nope"})).await;
    expect_error(&mut ws, "STREAM_NOT_FOUND").await;
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn a_room_that_is_not_a_projects_is_an_invalid_message() {
    let server = start().await;
    let mut ws = server.ws().await;
    send(&mut ws, json!({"type": "join", "room": "lobby"})).await;
    let error = expect_error(&mut ws, "INVALID_MESSAGE").await;
    assert!(
        error["error"].as_str().unwrap().contains("project_"),
        "{error}"
    );
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn a_storm_of_garbage_does_not_hurt_other_clients() {
    let server = start().await;
    let mut bad = server.ws().await;
    let mut good = server.ws().await;
    for i in 0..200 {
        send_text(&mut bad, &format!("{{garbage {i}")).await;
    }
    for _ in 0..200 {
        expect_error(&mut bad, "INVALID_MESSAGE").await;
    }
    send(
        &mut good,
        json!({"type": "message", "message": "still fine?"}),
    )
    .await;
    let frames = recv_until_done(&mut good, 1).await;
    assert_eq!(frames.last().unwrap()["type"], "complete");
    let health = get_json(&server, "/health").await;
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn too_many_replies_at_once_on_one_connection_are_rate_limited() {
    let server = start_with(|c| {
        c.max_streams_per_connection = 2;
        c.demo_delay = std::time::Duration::from_millis(20);
        c.demo_tokens = 2000;
    })
    .await;
    let mut ws = server.ws().await;
    for question in ["one", "two"] {
        send(&mut ws, json!({"type": "message", "message": question})).await;
    }
    send(&mut ws, json!({"type": "message", "message": "three"})).await;
    // The refusal arrives among the two streams' frames.
    let mut starts = 0;
    loop {
        let frame = recv(&mut ws).await;
        match frame["type"].as_str().unwrap() {
            "start" => starts += 1,
            "error" => {
                assert_eq!(frame["code"], "RATE_LIMITED", "{frame}");
                assert!(frame.get("stream_id").is_none());
                break;
            }
            _ => {}
        }
    }
    assert!(starts <= 2);
    assert_eq!(
        server.state.engine.running(),
        2,
        "the refused message started nothing"
    );
}

#[tokio::test]
async fn a_server_at_capacity_answers_overloaded() {
    let server = start_with(|c| {
        c.max_streams = 1;
        c.demo_delay = std::time::Duration::from_millis(20);
        c.demo_tokens = 2000;
    })
    .await;
    let mut first = server.ws().await;
    send(&mut first, json!({"type": "message", "message": "busy"})).await;
    assert_eq!(recv(&mut first).await["type"], "start");
    let mut second = server.ws().await;
    send(&mut second, json!({"type": "message", "message": "me too"})).await;
    expect_error(&mut second, "OVERLOADED").await;
    let (status, body) = post_chat(&server, json!({"message": "and me"}).to_string(), None).await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (503, "OVERLOADED")
    );
    // HTTP clients are told when to try again.
    let response = reqwest::Client::new()
        .post(server.http("/api/v1/chat"))
        .json(&json!({"message": "still me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_usable(&mut second).await;
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_disconnected_and_others_are_served() {
    let server = start_with(|c| {
        c.demo_delay = std::time::Duration::ZERO;
        // Far more than the socket buffers and the write cap hold.
        c.demo_tokens = 200_000;
        c.heartbeat = std::time::Duration::from_secs(1);
        c.heartbeat_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let mut stuck = server.ws().await;
    send(
        &mut stuck,
        json!({"type": "message", "message": "a very long reply"}),
    )
    .await;
    // Never read again: the server must give up on this socket by itself.
    let mut gone = false;
    for _ in 0..300 {
        if server.state.connections.count() == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the server kept a connection that takes no bytes");
    let mut fresh = server.ws().await;
    send(&mut fresh, json!({"type": "ping", "timestamp": 7})).await;
    let pong = recv(&mut fresh).await;
    assert_eq!(pong["type"], "pong");
    drop(stuck);
}
