//! Rates and caps: questions over the rate per user and per address
//! (`RATE_LIMITED` with `retry_after_ms`, the connection stays usable), WebSocket
//! connection storms over the per-address, per-user and total caps (an error,
//! then close 1013), JSON nesting and question length. After each, a
//! well-behaved client is still served and nothing stored is lost.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Asks on `ws` and returns the last frame of the answer (the `complete`, or
/// the refusal).
async fn ask(ws: &mut Ws, question: &str, session: Option<&str>) -> Value {
    send(
        ws,
        json!({"type": "message", "message": question, "session_id": session}),
    )
    .await;
    let first = recv(ws).await;
    if first["type"] == "error" {
        return first;
    }
    recv_until_done(ws, 1).await.pop().unwrap()
}

#[tokio::test]
async fn questions_over_the_users_rate_wait_and_the_connection_stays() {
    let server = start_with(|c| {
        c.limits.messages_per_minute_per_user = 30;
        c.limits.messages_per_minute_per_ip = 0;
    })
    .await;
    let token = server.token("eager");
    let mut ws = server.ws_at(&format!("/ws/chat?token={token}")).await;
    // A burst of 30 is allowed (a cell comes back every 2 s meanwhile), then
    // a question must wait.
    let mut answered = 0;
    let refused = loop {
        let done = ask(&mut ws, &format!("question {answered}"), Some("flood")).await;
        if done["type"] != "complete" {
            break done;
        }
        answered += 1;
        assert!(answered <= 40, "never refused");
    };
    assert!(answered >= 30, "the burst was {answered}");
    assert_eq!(refused["code"], "RATE_LIMITED", "{refused}");
    let wait = refused["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(
        (1..=2_000).contains(&wait),
        "30 a minute: one every 2 s, {wait}"
    );
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("from this user")
    );
    assert_usable(&mut ws).await;

    // Over HTTP too: 429 with Retry-After. (A cell comes back every 2 s, so one
    // may have come back meanwhile: the next question takes it.)
    let mut response = None;
    for _ in 0..3 {
        let answer = reqwest::Client::new()
            .post(server.http("/api/v1/chat"))
            .bearer_auth(&token)
            .json(&json!({"message": "also too many"}))
            .send()
            .await
            .unwrap();
        if answer.status().as_u16() != 200 {
            response = Some(answer);
            break;
        }
    }
    let response = response.expect("refused within three questions");
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    // The newest refusal says how long to wait now.
    let wait = body["retry_after_ms"].as_u64().expect("retry_after_ms");

    // Another user is not affected; after the wait this one asks again.
    let mut other = server
        .ws_at(&format!("/ws/chat?token={}", server.token("calm")))
        .await;
    assert_eq!(ask(&mut other, "hello", None).await["type"], "complete");
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    assert_eq!(
        ask(&mut ws, "after the wait", Some("flood")).await["type"],
        "complete"
    );
    // Nothing was lost: every answered question is stored, no refused one is.
    let stored = get_json_as(&server, "/api/v1/conversations/flood", &token).await;
    let questions = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .count();
    assert_eq!(questions, answered + 1, "{stored}");
}

#[tokio::test]
async fn questions_over_the_address_rate_are_refused_for_anonymous_callers() {
    let server = start_with(|c| c.limits.messages_per_minute_per_ip = 2).await;
    let mut ws = server.ws().await;
    assert_eq!(ask(&mut ws, "one", None).await["type"], "complete");
    assert_eq!(ask(&mut ws, "two", None).await["type"], "complete");
    let refused = ask(&mut ws, "three", None).await;
    assert_eq!(refused["code"], "RATE_LIMITED", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("from this address")
    );
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn a_connection_storm_over_the_address_cap_is_turned_away_with_1013() {
    let server = start_with(|c| c.limits.max_connections_per_ip = 3).await;
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(server.ws().await);
    }
    for _ in 0..5 {
        let mut extra = server.ws().await;
        let (error, code, reason) = close_of(&mut extra).await;
        assert_eq!(error.unwrap()["code"], "RATE_LIMITED");
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::Again, "try again later")
        );
    }
    // The admitted ones are served; closing one makes room.
    for ws in &mut kept {
        assert_usable(ws).await;
    }
    let mut first = kept.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        let mut ws = server.ws().await;
        send(&mut ws, json!({"type": "ping", "timestamp": 7})).await;
        if recv(&mut ws).await["type"] == "pong" {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a place came free");
}

#[tokio::test]
async fn the_total_and_per_user_caps_close_with_1013() {
    let server = start_with(|c| {
        c.limits.max_connections = 3;
        c.limits.max_connections_per_user = 1;
    })
    .await;
    let token = server.token("solo");
    let mut mine = server.ws_at(&format!("/ws/chat?token={token}")).await;
    let mut twin = server.ws_at(&format!("/ws/chat?token={token}")).await;
    let (error, code, _) = close_of(&mut twin).await;
    assert_eq!(error.unwrap()["code"], "RATE_LIMITED");
    assert_eq!(code, CloseCode::Again);
    // Authenticating as that user on another connection is refused the same way.
    let mut anonymous = server.ws().await;
    send(&mut anonymous, json!({"type": "auth", "token": token})).await;
    let (error, code, _) = close_of(&mut anonymous).await;
    assert!(
        error.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("for this user")
    );
    assert_eq!(code, CloseCode::Again);
    // Three in all: the third anonymous one fills it, the fourth is told to wait.
    let mut second = server.ws().await;
    let mut third = server.ws().await;
    let mut fourth = server.ws().await;
    let (error, code, _) = close_of(&mut fourth).await;
    assert_eq!(error.unwrap()["code"], "OVERLOADED");
    assert_eq!(code, CloseCode::Again);
    for ws in [&mut mine, &mut second, &mut third] {
        assert_usable(ws).await;
    }
    assert_eq!(ask(&mut mine, "still here", None).await["type"], "complete");
}

#[tokio::test]
async fn deep_nesting_and_long_questions_are_refused_with_their_codes() {
    let server = start_with(|c| {
        c.max_json_depth = 8;
        c.max_message_chars = 20;
    })
    .await;
    let mut ws = server.ws().await;
    let deep = format!(
        "{{\"type\":\"message\",\"message\":\"hi\",\"x\":{}1{}}}",
        "[".repeat(20),
        "]".repeat(20)
    );
    send_text(&mut ws, &deep).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["code"], "INVALID_MESSAGE", "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("nested deeper than 8")
    );
    // A bomb of brackets far past the limit costs one pass, not a parser's stack.
    send_text(&mut ws, &"[".repeat(60_000)).await;
    assert_eq!(recv(&mut ws).await["code"], "INVALID_MESSAGE");
    // Twenty-one characters (not bytes: "é" is two bytes and one character).
    let long = ask(&mut ws, "ééééééééééééééééééééé", None).await;
    assert_eq!(long["code"], "MESSAGE_TOO_LARGE", "{long}");
    assert!(long["error"].as_str().unwrap().contains("21 characters"));
    assert_eq!(
        ask(&mut ws, "éééééééééééééééééééé", None).await["type"],
        "complete"
    );
    // Over HTTP the same.
    let response = reqwest::Client::new()
        .post(server.http("/api/v1/chat"))
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client() {
    let chat = |server: &TestServer, forwarded: &'static str| {
        let request = reqwest::Client::new()
            .post(server.http("/api/v1/chat"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"message": "hi"}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let proxied = start_with(|c| {
        c.limits.messages_per_minute_per_ip = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    // The last entry is the one the proxy appended: the client.
    assert_eq!(chat(&proxied, "10.9.9.9, 192.0.2.1").await, 200);
    assert_eq!(chat(&proxied, "192.0.2.2").await, 200);
    assert_eq!(chat(&proxied, "10.9.9.9, 192.0.2.1").await, 429);
    // Without --trusted-proxy the header is not believed.
    let direct = start_with(|c| c.limits.messages_per_minute_per_ip = 1).await;
    assert_eq!(chat(&direct, "192.0.2.1").await, 200);
    assert_eq!(chat(&direct, "192.0.2.2").await, 429);
}

#[tokio::test]
async fn a_connection_that_only_pings_is_closed_when_idle_and_a_busy_one_is_not() {
    let server = start_with(|c| {
        c.heartbeat = Duration::from_secs(1);
        c.connection_idle = Duration::from_secs(1);
        c.demo_delay = Duration::from_millis(20);
        c.demo_tokens = 150;
    })
    .await;
    let mut idle = server.ws().await;
    let mut busy = server.ws().await;
    // The busy one's reply runs for about three seconds: never idle meanwhile.
    send(
        &mut busy,
        json!({"type": "message", "message": "take your time"}),
    )
    .await;
    // Pings keep the idle one alive but do not make it active.
    let closed = async {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            send(&mut idle, json!({"type": "ping"})).await;
            let Ok(frame) = tokio::time::timeout(Duration::from_millis(300), idle.next()).await
            else {
                continue;
            };
            match frame {
                Some(Ok(Message::Close(Some(close)))) => break close,
                Some(Ok(_)) => {}
                other => panic!("expected the idle close, got {other:?}"),
            }
        }
    };
    let close = tokio::time::timeout(FRAME_TIMEOUT, closed)
        .await
        .expect("closed in time");
    assert_eq!(
        (close.code, close.reason.as_str()),
        (CloseCode::Normal, "idle timeout")
    );
    let frames = recv_until_done(&mut busy, 1).await;
    assert_eq!(frames.last().unwrap()["type"], "complete");
}
