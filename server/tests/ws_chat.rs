//! The native dialect's happy paths over a real WebSocket.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn a_message_streams_start_progress_tokens_complete() {
    let server = start().await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "What is the engine power?"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    let stream_id = frames[0]["stream_id"].as_str().unwrap().to_owned();
    let (tokens, complete) = check_stream(&frames, &stream_id);
    assert_eq!(
        complete["response"], tokens,
        "tokens concatenate to the response"
    );
    assert!(tokens.contains("What is the engine power?"));
    assert_eq!(complete["metadata"]["agent"], "assistant");
    assert_eq!(complete["metadata"]["finish_reason"], "stop");
    assert_eq!(complete["metadata"]["model"], "demo");
    let steps: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "progress")
        .map(|f| f["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["starting", "generating"]);
    let session = frames[0]["session_id"].as_str().unwrap();
    assert_eq!(complete["session_id"], session);
    assert!(frames.iter().filter(|f| f["type"] == "token").count() > 10);
}

#[tokio::test]
async fn the_client_session_id_is_kept() {
    let server = start().await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "hi", "session_id": "python-session-1", "client_message_id": "m-7"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    assert_eq!(frames[0]["session_id"], "python-session-1");
    assert_eq!(frames[0]["client_message_id"], "m-7");
    assert_eq!(frames.last().unwrap()["session_id"], "python-session-1");
}

#[tokio::test]
async fn two_concurrent_streams_on_one_socket_stay_separate() {
    let server = start_with(|c| c.demo_delay = std::time::Duration::from_millis(3)).await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "first question"}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "message", "message": "second, different question"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 2).await;
    let starts: Vec<String> = frames
        .iter()
        .filter(|f| f["type"] == "start")
        .map(|f| f["stream_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(starts.len(), 2);
    assert_ne!(starts[0], starts[1]);
    let (a, complete_a) = check_stream(&frames, &starts[0]);
    let (b, complete_b) = check_stream(&frames, &starts[1]);
    assert_eq!(complete_a["response"], a);
    assert_eq!(complete_b["response"], b);
    assert!(a.contains("first question"));
    assert!(b.contains("second, different question"));
    // They really interleaved rather than running one after the other.
    let first_complete = frames.iter().position(|f| f["type"] == "complete").unwrap();
    let tokens_before: std::collections::HashSet<&str> = frames[..first_complete]
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        tokens_before.len(),
        2,
        "both streams produced tokens before either completed"
    );
}

#[tokio::test]
async fn several_personas_get_one_stream_each() {
    let server = start().await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "hi", "persona_ids": ["tech_enthusiast", "creative_writer"]}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 2).await;
    let mut agents: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "complete")
        .map(|f| f["metadata"]["agent"].as_str().unwrap())
        .collect();
    agents.sort();
    assert_eq!(agents, ["creative_writer", "tech_enthusiast"]);
    let turn = recv(&mut ws).await;
    assert_eq!(turn["type"], "turn_complete");
    assert_eq!(turn["replies"][0]["persona_id"], "tech_enthusiast");
}

#[tokio::test]
async fn hello_and_ping_are_answered() {
    let server = start().await;
    let mut ws = server.ws().await;
    send(&mut ws, json!({"type": "hello", "protocol": 1})).await;
    let hello = recv(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["auth_required"], false);
    assert_eq!(hello["limits"]["max_frame_bytes"], 65536);
    assert!(hello["server"].as_str().unwrap().starts_with("rill/"));
    send(
        &mut ws,
        json!({"type": "ping", "timestamp": 1700000000123u64}),
    )
    .await;
    let pong = recv(&mut ws).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["timestamp"], 1700000000123u64);
    assert!(pong["server_time"].as_u64().unwrap() > 1_700_000_000_000);
}

#[tokio::test]
async fn the_server_sends_nothing_before_the_first_frame() {
    let server = start().await;
    let mut ws = server.ws().await;
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), ws.next()).await;
    assert!(early.is_err(), "no unsolicited frame: {early:?}");
}

/// Asks `question` and reads up to its first token: the frames read and the
/// stream's id.
async fn ask_until_first_token(ws: &mut Ws, question: &str) -> (Vec<Value>, String) {
    send(ws, json!({"type": "message", "message": question})).await;
    let mut frames = vec![recv(ws).await];
    let stream_id = frames[0]["stream_id"].as_str().unwrap().to_owned();
    while frames.last().unwrap()["type"] != "token" {
        frames.push(recv(ws).await);
    }
    (frames, stream_id)
}

#[tokio::test]
async fn cancel_ends_the_stream_as_cancelled() {
    let server = start_with(|c| {
        c.demo_delay = std::time::Duration::from_millis(20);
        c.demo_tokens = 5000;
    })
    .await;
    let mut ws = server.ws().await;
    let (mut frames, stream_id) = ask_until_first_token(&mut ws, "long").await;
    send(&mut ws, json!({"type": "cancel", "stream_id": stream_id})).await;
    frames.extend(recv_until_done(&mut ws, 1).await);
    let (tokens, complete) = check_stream(&frames, &stream_id);
    assert_eq!(complete["metadata"]["finish_reason"], "cancelled");
    assert_eq!(
        complete["response"], tokens,
        "a stopped reply keeps its text"
    );
    assert!(frames.len() < 1000);
}

/// A reply streaming at full speed keeps the connection writing; the client's
/// frames are still read within a few writes (a ping is answered, a cancel
/// stops the reply) rather than after the whole reply.
#[tokio::test]
async fn a_reply_at_full_speed_does_not_starve_the_clients_frames() {
    let server = start_with(|c| {
        c.demo_delay = std::time::Duration::ZERO;
        c.demo_tokens = 200_000;
    })
    .await;
    let mut ws = server.ws().await;
    let (_, stream_id) = ask_until_first_token(&mut ws, "long").await;
    send(&mut ws, json!({"type": "ping"})).await;
    loop {
        let frame = recv(&mut ws).await;
        assert_ne!(
            frame["type"], "complete",
            "the ping waited for the whole reply"
        );
        if frame["type"] == "pong" {
            break;
        }
    }
    send(&mut ws, json!({"type": "cancel", "stream_id": stream_id})).await;
    // Tokens may arrive coalesced here (the client reads slower than the
    // server writes): only the end is checked.
    let rest = recv_until_done(&mut ws, 1).await;
    let complete = rest.last().unwrap();
    assert_eq!(complete["type"], "complete", "{complete}");
    assert_eq!(complete["metadata"]["finish_reason"], "cancelled");
    let words = complete["response"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .count();
    assert!(words < 200_000, "the cancel waited for the whole reply");
}

#[tokio::test]
async fn resume_after_a_seq_replays_exactly_the_rest() {
    let server = start().await;
    let mut ws = server.ws().await;
    send(&mut ws, json!({"type": "message", "message": "resume me"})).await;
    let frames = recv_until_done(&mut ws, 1).await;
    let stream_id = frames[0]["stream_id"].as_str().unwrap();
    let total = frames.len() as u64;
    for after in [0, 1, total / 2, total - 1, total] {
        let mut other = server.ws().await;
        send(
            &mut other,
            json!({"type": "resume", "stream_id": stream_id, "after_seq": after}),
        )
        .await;
        if after == total {
            // Nothing left to replay: the connection simply stays usable.
            assert_usable(&mut other).await;
            continue;
        }
        let replay = recv_until_done(&mut other, 1).await;
        let seqs: Vec<u64> = replay.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (after + 1..=total).collect::<Vec<_>>());
        assert_eq!(replay, frames[after as usize..].to_vec());
    }
}

#[tokio::test]
async fn partial_response_is_sent_only_when_asked() {
    let server = start().await;
    let mut plain = server.ws().await;
    send(&mut plain, json!({"type": "message", "message": "x"})).await;
    let frames = recv_until_done(&mut plain, 1).await;
    assert!(frames.iter().all(|f| f.get("partial_response").is_none()));

    let mut partial = server.ws_at("/ws/chat?partial=1").await;
    send(&mut partial, json!({"type": "message", "message": "x"})).await;
    let frames = recv_until_done(&mut partial, 1).await;
    let mut so_far = String::new();
    for frame in frames.iter().filter(|f| f["type"] == "token") {
        so_far.push_str(frame["token"].as_str().unwrap());
        assert_eq!(frame["partial_response"], so_far.as_str());
    }
    assert_eq!(frames.last().unwrap()["response"], so_far.as_str());
}

#[tokio::test]
async fn a_question_larger_than_the_read_buffer_is_read_whole() {
    // The socket's read buffer starts at 1 KiB; a 30 KB question (under the
    // frame limit) must still arrive whole.
    let server = start().await;
    let mut ws = server.ws().await;
    let question = format!("Long question {}", "word ".repeat(6_000));
    send(
        &mut ws,
        json!({"type": "message", "message": question, "session_id": "long-q"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    let stream_id = frames[0]["stream_id"].as_str().unwrap().to_owned();
    check_stream(&frames, &stream_id);
    let stored = get_json(&server, "/api/v1/conversations/long-q").await;
    assert_eq!(stored["messages"][0]["content"], question.as_str());
}
