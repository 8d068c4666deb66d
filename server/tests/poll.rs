//! Long-poll and the plain-HTTP stream routes (start, cancel).

mod common;

use common::*;
use serde_json::{Value, json};

async fn poll(server: &TestServer, id: &str, after: u64, wait_ms: u64) -> (u16, Value) {
    let response = reqwest::get(server.http(&format!(
        "/api/v1/streams/{id}/poll?after={after}&wait_ms={wait_ms}"
    )))
    .await
    .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn polling_from_zero_walks_the_whole_stream_exactly() {
    let server = start().await;
    let (ids, session) =
        start_stream(&server, json!({"message": "poll me", "session_id": "p-1"})).await;
    assert_eq!(session, "p-1");
    let mut frames = Vec::new();
    let mut after = 0;
    for _ in 0..1000 {
        let (status, batch) = poll(&server, &ids[0], after, 5000).await;
        assert_eq!(status, 200);
        let batch = batch.as_array().unwrap().clone();
        assert!(!batch.is_empty(), "a poll waits until there is something");
        after = batch.last().unwrap()["seq"].as_u64().unwrap();
        let done = batch.last().unwrap()["type"] == "complete";
        frames.extend(batch);
        if done {
            break;
        }
    }
    let (tokens, complete) = check_stream(&frames, &ids[0]);
    assert_eq!(complete["response"], tokens);
    // The same events as the WebSocket would have sent: resume from 0 and compare.
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "resume", "stream_id": ids[0], "after_seq": 0}),
    )
    .await;
    assert_eq!(recv_until_done(&mut ws, 1).await, frames);
    // After the end there is nothing more, and the poll does not hang.
    let (_, rest) = poll(&server, &ids[0], after, 30_000).await;
    assert_eq!(rest, json!([]));
}

#[tokio::test]
async fn a_poll_that_finds_nothing_answers_an_empty_array_after_wait_ms() {
    let server = start_with(|c| {
        c.demo_delay = std::time::Duration::from_secs(5);
        c.demo_tokens = 100;
    })
    .await;
    let (ids, _) = start_stream(&server, json!({"message": "slow"})).await;
    // start + 2 progress + the first token arrive at once; then nothing for 5 s.
    let (_, first) = poll(&server, &ids[0], 0, 100).await;
    let last = first.as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    let (status, empty) = poll(&server, &ids[0], last, 50).await;
    assert_eq!((status, empty), (200, json!([])));
}

#[tokio::test]
async fn poll_errors_and_cancel_over_http() {
    let server = start_with(|c| {
        c.demo_delay = std::time::Duration::from_millis(20);
        c.demo_tokens = 100_000;
    })
    .await;
    let (status, body) = poll(&server, "nope", 0, 10).await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (404, "STREAM_NOT_FOUND")
    );
    let (ids, _) = start_stream(&server, json!({"message": "cancel me"})).await;
    let client = reqwest::Client::new();
    let response = client
        .post(server.http(&format!("/api/v1/streams/{}/cancel", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_finished(&server, &ids[0]).await;
    assert_eq!(
        terminal_event(&server, &ids[0]).await["metadata"]["finish_reason"],
        "cancelled"
    );
    let response = client
        .post(server.http("/api/v1/streams/nope/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let (status, body) = post_chat(&server, "not json", None).await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (400, "INVALID_MESSAGE")
    );
}
