//! Streams outlive connections: disconnect is not cancel, the detach grace,
//! bounded replay, and the WebSocket heartbeat.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_disconnect_is_not_a_cancel_and_the_stream_can_be_resumed() {
    let server = start_with(|c| c.demo_delay = Duration::from_millis(5)).await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "keep going without me"}),
    )
    .await;
    let mut seen = vec![recv(&mut ws).await];
    let stream_id = seen[0]["stream_id"].as_str().unwrap().to_owned();
    while seen.len() < 6 {
        seen.push(recv(&mut ws).await);
    }
    drop(ws);
    let mut again = server.ws().await;
    let after = seen.last().unwrap()["seq"].as_u64().unwrap();
    send_resume(&mut again, &stream_id, after).await;
    seen.extend(recv_until_done(&mut again, 1).await);
    let (tokens, complete) = check_stream(&seen, &stream_id);
    assert_eq!(
        complete["metadata"]["finish_reason"], "stop",
        "it ran to its end"
    );
    assert_eq!(
        complete["response"], tokens,
        "no token lost or duplicated across the reconnect"
    );
}

#[tokio::test]
async fn resuming_twice_on_one_connection_does_not_duplicate() {
    let server = start_with(|c| c.demo_delay = Duration::from_millis(5)).await;
    let (ids, _) = start_stream(&server, json!({"message": "twice"})).await;
    let mut ws = server.ws().await;
    send_resume(&mut ws, &ids[0], 0).await;
    let first = recv(&mut ws).await;
    let mut frames = vec![first];
    send_resume(&mut ws, &ids[0], 1).await;
    frames.extend(recv_until_done(&mut ws, 1).await);
    // The second attachment replaced the first: frames the first one had already
    // queued may precede it, but from the second attachment's first frame on, the
    // seqs are exactly 2..=last, each once.
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    let restart = seqs.iter().rposition(|&s| s == 2).unwrap();
    let last = *seqs.last().unwrap();
    assert_eq!(
        seqs[restart..],
        (2..=last).collect::<Vec<_>>()[..],
        "{seqs:?}"
    );
    assert!(
        seqs[..restart].windows(2).all(|w| w[1] == w[0] + 1),
        "{seqs:?}"
    );
}

#[tokio::test]
async fn resume_before_the_replay_window_is_stream_not_found() {
    let server = start_with(|c| {
        c.replay = rill::hub::ReplayLimits {
            max_events: 16,
            max_bytes: 1 << 20,
        };
        c.demo_tokens = 100;
        c.demo_delay = Duration::ZERO;
    })
    .await;
    let (ids, _) = start_stream(&server, json!({"message": "too long to keep"})).await;
    wait_finished(&server, &ids[0]).await;
    let last = server
        .state
        .engine
        .status(&rill::auth::Identity::Anonymous, &ids[0])
        .unwrap()
        .last_seq;
    let mut ws = server.ws().await;
    send_resume(&mut ws, &ids[0], 0).await;
    let error = recv(&mut ws).await;
    assert_eq!(
        error["code"], "STREAM_NOT_FOUND",
        "never a partial replay: {error}"
    );
    send_resume(&mut ws, &ids[0], last - 16).await;
    let replay = recv_until_done(&mut ws, 1).await;
    assert_eq!(replay.len(), 16);
    assert_eq!(replay.last().unwrap()["type"], "complete");
}

#[tokio::test]
async fn past_the_retention_budget_the_oldest_finished_stream_is_stream_not_found() {
    // Each finished 2,000-token stream counts about 20 KB: two fit.
    let server = start_with(|c| {
        c.stream_retention_budget = 50_000;
        c.demo_tokens = 2000;
        c.demo_delay = Duration::ZERO;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (started, _) = start_stream(&server, json!({"message": format!("question {i}")})).await;
        wait_finished(&server, &started[0]).await;
        ids.push(started[0].clone());
    }
    let mut ws = server.ws().await;
    send_resume(&mut ws, &ids[0], 0).await;
    let error = recv(&mut ws).await;
    assert_eq!(error["code"], "STREAM_NOT_FOUND", "{error}");
    // The newest is whole.
    send_resume(&mut ws, &ids[4], 0).await;
    let replay = recv_until_done(&mut ws, 1).await;
    assert_eq!(replay.first().unwrap()["seq"], 1);
    assert_eq!(replay.last().unwrap()["type"], "complete");
}

#[tokio::test]
async fn a_stream_nobody_attaches_to_is_cancelled_after_the_detach_grace() {
    let server = start_with(|c| {
        c.detach_grace = Duration::from_millis(300);
        c.demo_delay = Duration::from_millis(10);
        c.demo_tokens = 100_000;
    })
    .await;
    let (ids, _) = start_stream(&server, json!({"message": "nobody listens"})).await;
    wait_finished(&server, &ids[0]).await;
    let end = terminal_event(&server, &ids[0]).await;
    assert_eq!(end["metadata"]["finish_reason"], "cancelled");
    assert!(!end["response"].as_str().unwrap().is_empty());
    // The produced text stays available to attachers within retention.
    let mut ws = server.ws().await;
    send_resume(&mut ws, &ids[0], 0).await;
    assert_eq!(recv_until_done(&mut ws, 1).await.last().unwrap(), &end);
}

#[tokio::test]
async fn an_attached_stream_outlives_the_detach_grace() {
    let server = start_with(|c| {
        c.detach_grace = Duration::from_millis(100);
        c.demo_delay = Duration::from_millis(10);
        c.demo_tokens = 60;
    })
    .await;
    let mut ws = server.ws().await;
    send(&mut ws, json!({"type": "message", "message": "watched"})).await;
    let frames = recv_until_done(&mut ws, 1).await;
    assert_eq!(frames.last().unwrap()["metadata"]["finish_reason"], "stop");
}

#[tokio::test]
async fn the_server_pings_and_closes_a_silent_client() {
    let server = start_with(|c| {
        c.heartbeat = Duration::from_millis(200);
        c.heartbeat_timeout = Duration::from_millis(300);
    })
    .await;
    // A client that reads (and so answers pings) stays connected.
    let mut live = server.ws().await;
    let mut pings = 0;
    while pings < 3 {
        match tokio::time::timeout(FRAME_TIMEOUT, live.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_usable(&mut live).await;

    // A client that never answers (here: a raw socket that never writes after the
    // handshake, so no pong and no reset) is closed with 1001.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    silent
        .write_all(
            b"GET /ws/chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(FRAME_TIMEOUT, silent.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let end_of_headers = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(received.starts_with(b"HTTP/1.1 101"));
    // Server frames are unmasked; these are all short (length < 126).
    let mut frames = &received[end_of_headers..];
    let mut close = None;
    let mut pings = 0;
    while frames.len() >= 2 {
        let (opcode, len) = (frames[0] & 0x0f, usize::from(frames[1] & 0x7f));
        let payload = &frames[2..2 + len];
        match opcode {
            0x9 => pings += 1,
            0x8 => close = Some(u16::from_be_bytes([payload[0], payload[1]])),
            other => panic!("unexpected opcode {other}"),
        }
        frames = &frames[2 + len..];
    }
    assert!(pings >= 1, "it was pinged before being closed");
    assert_eq!(close, Some(1001));
}

#[tokio::test]
async fn following_too_many_streams_on_one_connection_is_rate_limited() {
    let server = start_with(|c| {
        c.demo_delay = Duration::from_millis(50);
        c.demo_tokens = 10_000;
        c.max_streams = 100;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..65 {
        let (started, _) = start_stream(&server, json!({"message": format!("stream {i}")})).await;
        ids.extend(started);
    }
    let mut ws = server.ws().await;
    for id in &ids {
        send_resume(&mut ws, id, 0).await;
    }
    // 64 are followed; the 65th is refused among their frames.
    loop {
        let frame = recv(&mut ws).await;
        if frame["type"] == "error" {
            assert_eq!(frame["code"], "RATE_LIMITED", "{frame}");
            break;
        }
    }
    for id in &ids {
        server
            .state
            .engine
            .cancel(&rill::auth::Identity::Anonymous, id)
            .unwrap();
    }
}
