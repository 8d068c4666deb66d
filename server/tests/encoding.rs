//! Serialize once: a stream event is encoded at most once per dialect, however
//! many connections and transports follow it. (Its own test binary: the count
//! it reads is process-wide.)

mod common;

use common::*;
use rill::dialect::native::events_encoded;
use serde_json::json;

#[tokio::test]
async fn each_event_is_encoded_once_whatever_the_number_of_readers() {
    let server = start_with(|c| {
        c.demo_delay = std::time::Duration::from_millis(5);
        c.demo_tokens = 60;
        c.max_streams_per_connection = 64;
    })
    .await;
    let before = events_encoded();
    let (ids, _) = start_stream(&server, json!({"message": "many readers"})).await;
    let id = &ids[0];

    // 40 WebSocket readers, some from the start and some in the middle…
    let mut sockets = Vec::new();
    for i in 0..40 {
        let mut ws = server.ws().await;
        send(
            &mut ws,
            json!({"type": "resume", "stream_id": id, "after_seq": i % 5}),
        )
        .await;
        sockets.push(ws);
    }
    // …and SSE readers, and long-polls, all of the same stream.
    let sse: Vec<_> = (0..10)
        .map(|_| {
            let url = server.http(&format!("/api/v1/streams/{id}/events"));
            tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() })
        })
        .collect();
    // A long-poll while the stream runs reads the same shared events.
    let poll = poll_events(&server, id).await;
    assert!(!poll.is_empty());
    let mut frames = Vec::new();
    for ws in &mut sockets {
        frames = recv_until_done(ws, 1).await;
    }
    for body in sse {
        let events = parse_sse(&body.await.unwrap());
        assert_eq!(events.last().unwrap().data["type"], "complete");
    }

    let events_in_stream = frames.last().unwrap()["seq"].as_u64().unwrap();
    assert_eq!(
        events_encoded() - before,
        events_in_stream,
        "one native encoding per event for 40 sockets, 10 SSE readers and a poll"
    );

    // Once the last reader has left, the finished stream is kept compact: a
    // later read rebuilds its tokens (one encoding per rebuilt event, for
    // that reader only) and gets exactly the same events.
    let before_late = events_encoded();
    let late = poll_events(&server, id).await;
    assert_eq!(late.len() as u64, events_in_stream);
    assert!(events_encoded() - before_late <= events_in_stream);
    assert_eq!(late.last().unwrap()["type"], "complete");
}

async fn poll_events(server: &TestServer, id: &str) -> Vec<serde_json::Value> {
    let poll: serde_json::Value =
        reqwest::get(server.http(&format!("/api/v1/streams/{id}/poll?after=0")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    poll.as_array().unwrap().clone()
}
