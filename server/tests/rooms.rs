//! Rooms over the real server: joining a project's room on the native
//! dialect, isolation between projects, the publish API with and without its
//! key, presence, members' broadcasts, and seed 000's `/ws/broadcast`.

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const API_KEY: &str = "test-api-key";

async fn rooms_server() -> TestServer {
    start_with(|c| c.api_key = Some(API_KEY.into())).await
}

/// A native socket of `user` (authenticated by `?token=`).
async fn socket_of(server: &TestServer, user: &str) -> Ws {
    server
        .ws_at(&format!("/ws/chat?token={}", server.token(user)))
        .await
}

async fn join(ws: &mut Ws, room: &str) -> Value {
    send(ws, json!({"type": "join", "room": room})).await;
    recv(ws).await
}

async fn publish(server: &TestServer, room: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(server.http(&format!("/api/v1/rooms/{room}/publish")))
        .body(body.to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Asserts that nothing arrives on `ws` for a moment (it was not meant to).
async fn nothing_more(ws: &mut Ws) {
    if let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_millis(300), ws.next()).await
    {
        panic!("unexpected frame: {text}");
    }
}

#[tokio::test]
async fn a_published_event_reaches_exactly_the_projects_members() {
    let server = rooms_server().await;
    let mut alice = socket_of(&server, "alice").await;
    let mut alice_tab = socket_of(&server, "alice").await;
    let mut carol = socket_of(&server, "carol").await;

    assert_eq!(
        join(&mut alice, "project_a").await,
        json!({"type": "joined", "room": "project_a"})
    );
    let me = recv(&mut alice).await;
    assert_eq!(
        me,
        json!({"type": "presence", "room": "project_a", "status": "joined", "user": "user:alice"})
    );
    assert_eq!(join(&mut alice_tab, "project_a").await["type"], "joined");
    assert_eq!(
        recv(&mut alice).await["status"],
        "joined",
        "alice sees her tab join"
    );
    assert_eq!(recv(&mut alice_tab).await["type"], "presence");
    // Another user's project: forbidden, and nothing joined.
    let refused = join(&mut carol, "project_a").await;
    assert_eq!(refused["code"], "FORBIDDEN", "{refused}");
    assert_eq!(join(&mut carol, "project_c").await["type"], "joined");
    assert_eq!(recv(&mut carol).await["type"], "presence");

    let (status, body) = publish(
        &server,
        "project_a",
        Some(API_KEY),
        json!({"event": "document_status", "data": {"document_id": 7, "status": "processing", "progress": 40}}),
    )
    .await;
    assert_eq!(
        (status, body["delivered"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    for ws in [&mut alice, &mut alice_tab] {
        assert_eq!(
            recv(ws).await,
            json!({"type": "room_event", "room": "project_a", "event": "document_status",
                   "data": {"document_id": 7, "status": "processing", "progress": 40}})
        );
    }
    nothing_more(&mut carol).await;

    // Presence: the owner and the key's holder may see it; another user not.
    let presence = reqwest::Client::new()
        .get(server.http("/api/v1/rooms/project_a/presence"))
        .bearer_auth(server.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(presence.status(), 200);
    let presence: Value = presence.json().await.unwrap();
    assert_eq!(
        presence["members"],
        json!([{"user": "user:alice", "connections": 2}])
    );
    for (token, status) in [(server.token("carol"), 403), (API_KEY.to_owned(), 200)] {
        let response = reqwest::Client::new()
            .get(server.http("/api/v1/rooms/project_a/presence"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }

    // Leaving is announced to those who stay; the room then has one member.
    send(
        &mut alice_tab,
        json!({"type": "leave", "room": "project_a"}),
    )
    .await;
    assert_eq!(recv(&mut alice_tab).await["type"], "left");
    let left = recv(&mut alice).await;
    assert_eq!(
        (left["type"].as_str(), left["status"].as_str()),
        (Some("presence"), Some("left"))
    );
    let (_, body) = publish(&server, "project_a", Some(API_KEY), json!({"event": "x"})).await;
    assert_eq!(body["delivered"], 1);
    assert_eq!(recv(&mut alice).await["data"], Value::Null);
    // A member's broadcast reaches the room, naming who sent it.
    send(&mut alice_tab, json!({"type": "join", "room": "project_a"})).await;
    assert_eq!(recv(&mut alice_tab).await["type"], "joined");
    send(
        &mut alice,
        json!({"type": "broadcast", "room": "project_a", "message": "hello room"}),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let frame = recv(&mut alice_tab).await;
        if frame["type"] == "room_event" {
            seen.push(frame["data"].clone());
        }
        if frame["type"] == "presence" {
            seen.push(frame["status"].clone());
        }
    }
    assert_eq!(seen[1], json!({"text": "hello room", "from": "user:alice"}));
    send(
        &mut carol,
        json!({"type": "broadcast", "room": "project_a", "message": "let me in"}),
    )
    .await;
    assert_eq!(recv(&mut carol).await["code"], "FORBIDDEN");
    // Closing a socket leaves its rooms.
    drop(alice_tab);
    let mut last = recv(&mut alice).await;
    while last["type"] != "presence" || last["status"] != "left" {
        last = recv(&mut alice).await;
    }
}

#[tokio::test]
async fn the_publish_api_needs_its_key_and_is_off_without_one() {
    let server = rooms_server().await;
    let body = json!({"event": "project_update", "data": {"type": "document_added"}});
    for (key, status, code) in [
        (None, 401, "AUTH_FAILED"),
        (Some("wrong-key"), 401, "AUTH_FAILED"),
        (Some(server.token("alice").as_str()), 401, "AUTH_FAILED"),
    ] {
        let (got, answer) = publish(&server, "project_a", key, body.clone()).await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{key:?}"
        );
    }
    for (bad, needle) in [
        (json!({"data": {}}), "event"),
        (json!({"event": "has space"}), "event must be"),
        (json!({"event": "e", "extra": 1}), "extra"),
    ] {
        let (status, answer) = publish(&server, "project_a", Some(API_KEY), bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{answer}"
        );
    }
    let (status, answer) = publish(&server, "project_a", Some(API_KEY), body.clone()).await;
    assert_eq!((status, answer["delivered"].as_u64()), (200, Some(0)));

    let off = start().await;
    let (status, answer) = publish(&off, "project_a", Some(API_KEY), body).await;
    assert_eq!((status, answer["code"].as_str()), (404, Some("NOT_FOUND")));
    assert!(answer["error"].as_str().unwrap().contains("--api-key"));
}

#[tokio::test]
async fn room_names_and_limits_are_checked() {
    let server = rooms_server().await;
    let mut ws = socket_of(&server, "alice").await;
    for room in ["lobby", "project_", &format!("project_{}", "x".repeat(200))] {
        let answer = join(&mut ws, room).await;
        assert_eq!(answer["code"], "INVALID_MESSAGE", "{room}: {answer}");
    }
    for i in 0..16 {
        assert_eq!(
            join(&mut ws, &format!("project_{i}")).await["type"],
            "joined"
        );
        assert_eq!(recv(&mut ws).await["type"], "presence");
    }
    assert_eq!(join(&mut ws, "project_16").await["code"], "RATE_LIMITED");
    assert_usable(&mut ws).await;
    // With --auth-required, a socket must authenticate before joining.
    let strict = start_with(|c| c.auth_required = true).await;
    let mut anonymous = strict.ws().await;
    assert_eq!(
        join(&mut anonymous, "project_a").await["code"],
        "AUTH_REQUIRED"
    );
}

/// The next text frame of a broadcast socket.
async fn text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(FRAME_TIMEOUT, ws.next())
            .await
            .expect("a frame arrives")
            .expect("the socket is open")
            .expect("the frame is valid")
        {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame: {other:?}"),
        }
    }
}

#[tokio::test]
async fn seed_000_broadcast_reaches_every_client_within_the_rates() {
    let server = start_with(|c| {
        c.api_key = Some(API_KEY.into());
        c.limits.messages_per_minute_per_ip = 3;
    })
    .await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(server.ws_at("/ws/broadcast").await);
    }
    // Every tab is in the room before anyone speaks.
    let mut present = 0;
    while present < 3 {
        let presence = get_json_as(&server, "/api/v1/rooms/broadcast/presence", API_KEY).await;
        present = presence["members"][0]["connections"].as_u64().unwrap_or(0);
    }
    tabs[0]
        .send(Message::Text("hello all".into()))
        .await
        .unwrap();
    for tab in &mut tabs {
        assert_eq!(text(tab).await, "Someone said: hello all");
    }
    tabs[2].send(Message::Text("second".into())).await.unwrap();
    for tab in &mut tabs {
        assert_eq!(text(tab).await, "Someone said: second");
    }
    // The publish API reaches the broadcast page too.
    let (status, _) = publish(
        &server,
        "broadcast",
        Some(API_KEY),
        json!({"event": "message", "data": {"text": "from a service"}}),
    )
    .await;
    assert_eq!(status, 200);
    for tab in &mut tabs {
        assert_eq!(text(tab).await, "Someone said: from a service");
    }
    // Past the rate (3 a minute from this address): only the sender hears why.
    tabs[1].send(Message::Text("third".into())).await.unwrap();
    for tab in &mut tabs {
        assert_eq!(text(tab).await, "Someone said: third");
    }
    tabs[1].send(Message::Text("fourth".into())).await.unwrap();
    let refusal = text(&mut tabs[1]).await;
    assert!(
        refusal.starts_with("Error: Too many questions"),
        "{refusal}"
    );
    for tab in tabs
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, tab)| tab)
    {
        if let Ok(Some(Ok(Message::Text(more)))) =
            tokio::time::timeout(Duration::from_millis(300), tab.next()).await
        {
            panic!("a refused message went out: {more}");
        }
    }
}
