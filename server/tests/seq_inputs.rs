//! Hostile positions at every entry point that takes one (`resume`, `?after=`,
//! `Last-Event-ID`, long-poll): the largest seq, negative and non-numeric
//! values. Each gets its documented answer and the server keeps serving.

mod common;

use common::*;
use serde_json::{Value, json};

const HUGE: &str = "18446744073709551615";

/// A finished stream's id.
async fn finished_stream(server: &TestServer) -> String {
    let (ids, _) = start_stream(server, json!({"message": "positions"})).await;
    wait_finished(server, &ids[0]).await;
    ids[0].clone()
}

async fn get(server: &TestServer, path: &str, last_event_id: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(server.http(path));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A JSON error body with `code`.
fn code_of(body: &str) -> Value {
    serde_json::from_str::<Value>(body).expect("a JSON error body")["code"].clone()
}

#[tokio::test]
async fn websocket_resume_after_the_largest_seq_is_empty_and_bad_ones_are_invalid() {
    let server = start().await;
    let id = finished_stream(&server).await;
    let mut ws = server.ws().await;
    // u64::MAX: nothing after it; the stream has ended, so nothing is sent.
    send_text(
        &mut ws,
        &format!(r#"{{"type":"resume","stream_id":"{id}","after_seq":{HUGE}}}"#),
    )
    .await;
    assert_usable(&mut ws).await;
    for bad in ["-1", "\"7\"", "1.5", "18446744073709551616", "null"] {
        send_text(
            &mut ws,
            &format!(r#"{{"type":"resume","stream_id":"{id}","after_seq":{bad}}}"#),
        )
        .await;
        let error = recv(&mut ws).await;
        assert_eq!(error["code"], "INVALID_MESSAGE", "{bad}: {error}");
    }
    assert_usable(&mut ws).await;
    // The stream itself is intact for a well-behaved reader.
    send(
        &mut ws,
        json!({"type": "resume", "stream_id": id, "after_seq": 0}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    check_stream(&frames, &id);
}

#[tokio::test]
async fn sse_after_and_last_event_id_take_only_whole_numbers() {
    let server = start().await;
    let id = finished_stream(&server).await;
    let events = format!("/api/v1/streams/{id}/events");
    // The largest seq: an empty event stream that ends, not a crash.
    let (status, body) = get(&server, &format!("{events}?after={HUGE}"), None).await;
    assert_eq!(status, 200);
    assert!(parse_sse(&body).is_empty(), "{body}");
    let (status, body) = get(&server, &events, Some(HUGE)).await;
    assert_eq!(status, 200);
    assert!(parse_sse(&body).is_empty(), "{body}");
    for bad in ["-1", "abc", "1e3", "18446744073709551616", " 5x"] {
        let (status, body) = get(&server, &format!("{events}?after={bad}"), None).await;
        assert_eq!(
            (status, code_of(&body)),
            (400, json!("INVALID_MESSAGE")),
            "?after={bad}"
        );
        let (status, body) = get(&server, &events, Some(bad)).await;
        assert_eq!(
            (status, code_of(&body)),
            (400, json!("INVALID_MESSAGE")),
            "Last-Event-ID: {bad}"
        );
    }
    // Empty means "no position" (what an EventSource that saw no id would
    // mean): the whole stream from the start, as with neither.
    for (path, header) in [
        (format!("{events}?after="), None),
        (events.clone(), Some("")),
        (events.clone(), None),
    ] {
        let (status, body) = get(&server, &path, header).await;
        assert_eq!(status, 200, "{path} {header:?}: {body}");
        assert_eq!(parse_sse(&body).last().unwrap().data["type"], "complete");
    }
}

#[tokio::test]
async fn long_poll_after_and_wait_take_only_whole_numbers() {
    let server = start().await;
    let id = finished_stream(&server).await;
    let poll = format!("/api/v1/streams/{id}/poll");
    let (status, body) = get(&server, &format!("{poll}?after={HUGE}&wait_ms=10"), None).await;
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, body) = get(&server, &format!("{poll}?wait_ms={HUGE}&after=0"), None).await;
    assert_eq!(
        status, 200,
        "a huge wait is capped, and events are there: {body}"
    );
    for bad in [
        "after=-1",
        "after=x",
        "after=18446744073709551616",
        "wait_ms=-5",
        "wait_ms=soon",
    ] {
        let (status, body) = get(&server, &format!("{poll}?{bad}"), None).await;
        assert_eq!(
            (status, code_of(&body)),
            (400, json!("INVALID_MESSAGE")),
            "{bad}"
        );
    }
    let (status, body) = get(&server, &format!("{poll}?after=0"), None).await;
    assert_eq!(status, 200);
    let events: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(events.last().unwrap()["type"], "complete");
}
