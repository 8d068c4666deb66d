//! Server-sent events: the same events as the WebSocket, resumable by
//! Last-Event-ID and ?after=, with proxy-proof headers.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn chat_stream_sends_every_event_with_its_seq_and_type() {
    let server = start().await;
    let response = reqwest::Client::new()
        .post(server.http("/api/v1/chat/stream"))
        .body(json!({"message": "over sse"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache, no-transform");
    assert_eq!(headers["x-accel-buffering"], "no");
    let events = parse_sse(&response.text().await.unwrap());
    let frames: Vec<_> = events.iter().map(|e| e.data.clone()).collect();
    let stream_id = frames[0]["stream_id"].as_str().unwrap();
    let (tokens, complete) = check_stream(&frames, stream_id);
    assert_eq!(complete["response"], tokens);
    for event in &events {
        assert_eq!(
            event.id.as_deref(),
            Some(event.data["seq"].to_string().as_str())
        );
        assert_eq!(event.event.as_deref(), event.data["type"].as_str());
    }
}

#[tokio::test]
async fn attach_resumes_after_last_event_id_or_after() {
    let server = start().await;
    let (ids, _) = start_stream(&server, json!({"message": "resume me over sse"})).await;
    let url = server.http(&format!("/api/v1/streams/{}/events", ids[0]));
    let client = reqwest::Client::new();
    let all = parse_sse(&client.get(&url).send().await.unwrap().text().await.unwrap());
    let total = all.len() as u64;
    assert!(total > 10);

    let seqs = |events: Vec<SseEvent>| -> Vec<u64> {
        events
            .iter()
            .map(|e| e.data["seq"].as_u64().unwrap())
            .collect()
    };
    let by_header = client
        .get(&url)
        .header("last-event-id", "5")
        .send()
        .await
        .unwrap();
    assert_eq!(
        seqs(parse_sse(&by_header.text().await.unwrap())),
        (6..=total).collect::<Vec<_>>()
    );
    let by_query = client.get(format!("{url}?after=3")).send().await.unwrap();
    assert_eq!(
        seqs(parse_sse(&by_query.text().await.unwrap())),
        (4..=total).collect::<Vec<_>>()
    );
    let both = client
        .get(format!("{url}?after=3"))
        .header("last-event-id", "7")
        .send()
        .await
        .unwrap();
    assert_eq!(
        seqs(parse_sse(&both.text().await.unwrap())),
        (8..=total).collect::<Vec<_>>(),
        "the browser's Last-Event-ID wins"
    );
    let replay: Vec<_> = parse_sse(
        &client
            .get(format!("{url}?after=0"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(replay, all, "a replay is byte-for-byte the same events");
}

#[tokio::test]
async fn attach_errors_are_documented_codes() {
    let server = start().await;
    let client = reqwest::Client::new();
    let response = client
        .get(server.http("/api/v1/streams/nope/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["code"],
        "STREAM_NOT_FOUND"
    );

    // Alice's stream: Bob (?token=, as EventSource sends it) is forbidden.
    let alice = server.token("alice");
    let started: serde_json::Value = client
        .post(server.http("/api/v1/streams"))
        .bearer_auth(&alice)
        .body(json!({"message": "private"}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["stream_ids"][0].as_str().unwrap();
    let bob = server.token("bob");
    let response = client
        .get(server.http(&format!("/api/v1/streams/{id}/events?token={bob}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = client
        .get(server.http(&format!("/api/v1/streams/{id}/events?token={alice}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client
        .get(server.http(&format!("/api/v1/streams/{id}/events?token=garbage")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn shutdown_ends_sse_and_interrupts_replies_after_the_grace() {
    let server = start_with(|c| {
        c.demo_delay = std::time::Duration::from_millis(20);
        c.demo_tokens = 100_000;
        c.shutdown_grace = std::time::Duration::from_millis(300);
    })
    .await;
    let (ids, _) = start_stream(&server, json!({"message": "long"})).await;
    let mut response = reqwest::Client::new()
        .get(server.http(&format!("/api/v1/streams/{}/events", ids[0])))
        .send()
        .await
        .unwrap();
    // Shut down once tokens are flowing (read as they come, no sleeping).
    let mut body = Vec::new();
    while !String::from_utf8_lossy(&body).contains("event: token") {
        let chunk = tokio::time::timeout(FRAME_TIMEOUT, response.chunk())
            .await
            .expect("events arrive")
            .unwrap()
            .expect("the response is still open");
        body.extend_from_slice(&chunk);
    }
    server.state.shutdown.cancel();
    while let Some(chunk) = tokio::time::timeout(FRAME_TIMEOUT, response.chunk())
        .await
        .expect("the response ends after the shutdown")
        .unwrap()
    {
        body.extend_from_slice(&chunk);
    }
    let events = parse_sse(&String::from_utf8(body).unwrap());
    assert!(events.iter().any(|e| e.data["type"] == "token"));
    assert!(
        events.iter().all(|e| e.data["type"] != "complete"),
        "SSE ended before the reply"
    );
    wait_finished(&server, &ids[0]).await;
    let end = terminal_event(&server, &ids[0]).await;
    assert_eq!(end["metadata"]["finish_reason"], "interrupted", "{end}");
    assert!(
        !end["response"].as_str().unwrap().is_empty(),
        "the text so far is kept"
    );
}

#[tokio::test]
async fn an_idle_event_stream_gets_keepalive_comments() {
    let server = start_with(|c| {
        // After start, progress and the first token, nothing for a minute.
        c.demo_delay = std::time::Duration::from_secs(60);
        c.demo_tokens = 10;
    })
    .await;
    let (ids, _) = start_stream(&server, json!({"message": "quiet"})).await;
    let mut response = reqwest::get(server.http(&format!("/api/v1/streams/{}/events", ids[0])))
        .await
        .unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !seen.contains(": keepalive") {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("a keepalive within 15 s of silence")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: token"), "events came first: {seen}");
}
