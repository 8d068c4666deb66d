//! Abuse that the other suites do not cover: invalid UTF-8 at the socket level,
//! and another user's stream and conversation ids on every transport. Each
//! asserts the documented answer, that the server still serves a well-behaved
//! client, and that nothing stored was lost.

mod common;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007_and_others_are_served() {
    let server = start().await;
    let mut bystander = server.ws().await;
    let mut ws = server.ws().await;
    let bad = Frame::message(
        bytes::Bytes::from_static(b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}"),
        OpCode::Data(Data::Text),
        true,
    );
    ws.send(Message::Frame(bad)).await.unwrap();
    let close = loop {
        match tokio::time::timeout(FRAME_TIMEOUT, ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(close))) => break close,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close code");
    assert_eq!(close.code, CloseCode::Invalid, "{close:?}");
    assert_usable(&mut bystander).await;
    send(
        &mut bystander,
        json!({"type": "message", "message": "still fine?"}),
    )
    .await;
    assert_eq!(
        recv_until_done(&mut bystander, 1).await.last().unwrap()["type"],
        "complete"
    );
}

/// `method path` with a bearer token: status and JSON body.
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, server.http(path))
        .bearer_auth(token)
        .json(&json!({"title": "mine now"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn another_users_stream_and_conversation_are_refused_on_every_transport() {
    let server = start().await;
    let alice = server.token("alice");
    let bob = server.token("bob");
    let mut ws = server.ws_at(&format!("/ws/chat?token={alice}")).await;
    send(
        &mut ws,
        json!({"type": "message", "message": "private", "session_id": "alice-1"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    let stream_id = frames[0]["stream_id"].as_str().unwrap().to_owned();
    let reply = frames.last().unwrap()["response"]
        .as_str()
        .unwrap()
        .to_owned();
    use reqwest::Method;
    // Streams: SSE, long-poll, cancel over HTTP.
    for (method, path) in [
        (Method::GET, format!("/api/v1/streams/{stream_id}/events")),
        (
            Method::GET,
            format!("/api/v1/streams/{stream_id}/poll?after=0"),
        ),
        (Method::POST, format!("/api/v1/streams/{stream_id}/cancel")),
    ] {
        let (status, body) = call(&server, method.clone(), &path, &bob).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{method} {path}: {body}"
        );
    }
    // Conversations: read, rename, delete, and continuing it with a question.
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let (status, body) = call(
            &server,
            method.clone(),
            "/api/v1/conversations/alice-1",
            &bob,
        )
        .await;
        assert!(
            matches!(
                (status, body["code"].as_str()),
                (403, Some("FORBIDDEN")) | (404, Some("NOT_FOUND"))
            ),
            "{method}: {status} {body}"
        );
    }
    let mut intruder = server.ws_at(&format!("/ws/chat?token={bob}")).await;
    send(
        &mut intruder,
        json!({"type": "message", "message": "let me in", "session_id": "alice-1"}),
    )
    .await;
    assert_eq!(recv(&mut intruder).await["code"], "FORBIDDEN");
    let (status, _) = {
        let response = reqwest::Client::new()
            .post(server.http("/api/v1/chat"))
            .bearer_auth(&bob)
            .json(&json!({"message": "let me in", "session_id": "alice-1"}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), ())
    };
    assert_eq!(status, 403);
    // Nothing of Alice's was changed or lost, and she is still served.
    let (status, stored) = call(
        &server,
        Method::GET,
        "/api/v1/conversations/alice-1",
        &alice,
    )
    .await;
    assert_eq!(status, 200);
    let messages = stored["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{stored}");
    assert_eq!(messages[0]["content"], "private");
    assert_eq!(messages[1]["content"], reply.as_str());
    assert_ne!(stored["title"], "mine now");
    assert_usable(&mut ws).await;
}
