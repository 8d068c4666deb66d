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
    let replay = sse_events(client.get(format!("{url}?after=0"))).await;
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

/// The events of a whole SSE response.
async fn sse_events(request: reqwest::RequestBuilder) -> Vec<SseEvent> {
    parse_sse(&request.send().await.unwrap().text().await.unwrap())
}

/// The stream ids of a response's `start` events, in the order of `personas`.
fn ordered_ids(events: &[SseEvent], personas: &[&str]) -> Vec<String> {
    personas
        .iter()
        .map(|persona| {
            events
                .iter()
                .find(|e| e.data["type"] == "start" && e.data["persona_id"] == *persona)
                .unwrap()
                .data["stream_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn several_streams_in_one_response_have_unambiguous_ids_and_resume_as_one() {
    let server = start_with(|c| c.demo_delay = std::time::Duration::from_millis(1)).await;
    let personas = ["tech_enthusiast", "creative_writer", "data_scientist"];
    let body = reqwest::Client::new()
        .post(server.http("/api/v1/chat/stream"))
        .body(json!({"message": "three at once", "persona_ids": personas}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = parse_sse(&body);
    let ids = ordered_ids(&events, &personas);
    // Every event's id is the position of all three streams after it.
    let mut cursor = [0u64; 3];
    for event in events.iter().filter(|e| e.data["seq"].is_u64()) {
        let stream = ids
            .iter()
            .position(|id| event.data["stream_id"] == id.as_str())
            .unwrap();
        cursor[stream] = event.data["seq"].as_u64().unwrap();
        let expected = cursor.map(|s| s.to_string()).join(",");
        assert_eq!(event.id.as_deref(), Some(expected.as_str()));
    }
    // All ended: then turn_complete, naming the three in order.
    let turn = events.last().unwrap();
    assert_eq!(turn.event.as_deref(), Some("turn_complete"));
    assert!(turn.id.is_none());
    for (i, reply) in turn.data["replies"].as_array().unwrap().iter().enumerate() {
        assert_eq!(reply["stream_id"], ids[i].as_str());
        assert_eq!(reply["persona_id"], personas[i]);
    }

    // Resuming from any event's id gives exactly what came after it.
    let url = server.http(&format!("/api/v1/streams/events?ids={}", ids.join(",")));
    let middle = &events[events.len() / 2];
    let resumed = sse_events(
        reqwest::Client::new()
            .get(&url)
            .header("last-event-id", middle.id.clone().unwrap()),
    )
    .await;
    let after_middle: Vec<&serde_json::Value> = events[events.len() / 2 + 1..]
        .iter()
        .map(|e| &e.data)
        .collect();
    let mut expected: Vec<String> = after_middle.iter().map(|d| d.to_string()).collect();
    let mut got: Vec<String> = resumed.iter().map(|e| e.data.to_string()).collect();
    // The same events; their interleaving may differ.
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(
        resumed.last().unwrap().event.as_deref(),
        Some("turn_complete")
    );

    // Mistakes are documented codes.
    let client = reqwest::Client::new();
    for (url, last_event_id, status, code) in [
        (url.clone(), Some("5,6"), 400, "INVALID_MESSAGE"),
        (url.clone(), Some("a,b,c"), 400, "INVALID_MESSAGE"),
        (
            server.http("/api/v1/streams/events"),
            None,
            400,
            "INVALID_MESSAGE",
        ),
        (
            server.http(&format!("/api/v1/streams/events?ids={},{}", ids[0], ids[0])),
            None,
            400,
            "INVALID_MESSAGE",
        ),
        (
            server.http(&format!("/api/v1/streams/events?ids={},nope", ids[0])),
            None,
            404,
            "STREAM_NOT_FOUND",
        ),
    ] {
        let mut request = client.get(&url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{url} {last_event_id:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], code);
    }
}
