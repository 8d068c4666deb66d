//! Slow readers: a client that reads slowly gets consecutive tokens coalesced
//! into one frame (text and seq intact); clients that stop reading are closed
//! as too slow without the server's memory growing with what they do not read.
//! In a file of its own: it reads the test process's memory (the two tests run
//! one after the other: see the lock below).

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, client_async};

/// The two tests take turns: one measures the process's memory.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A WebSocket whose socket receive buffer is tiny, so the server's writes
/// back up as soon as this client stops reading.
async fn narrow_ws(server: &TestServer) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (ws, _) = client_async(server.ws_url("/ws/chat"), MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    ws
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_coalesced_tokens_with_text_and_seq_intact() {
    let _turn = SERIAL.lock().await;
    let server = start_with(|c| {
        c.demo_delay = Duration::ZERO;
        // More than the kernel's socket buffers hold, so the server's writes
        // really wait for this client; all of it kept for replay, so this
        // reader never falls out of the window.
        c.demo_tokens = 200_000;
        c.replay.max_events = 1 << 20;
        c.replay.max_bytes = 1 << 30;
    })
    .await;
    let mut ws = narrow_ws(&server).await;
    send(
        &mut ws,
        json!({"type": "message", "message": "a long one, slowly"}),
    )
    .await;
    let mut text = String::new();
    let mut last_seq = None::<u64>;
    let mut coalesced = 0;
    let mut frames = 0;
    let complete = loop {
        let frame = recv(&mut ws).await;
        frames += 1;
        // Read slowly for a while: the server falls behind this client.
        if frames < 50 {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        match frame["type"].as_str() {
            Some("token") => {
                let seq = frame["seq"].as_u64().unwrap();
                let first = frame["first_seq"].as_u64().unwrap_or(seq);
                if first != seq {
                    coalesced += 1;
                }
                assert!(first <= seq, "{frame}");
                if let Some(last) = last_seq {
                    assert_eq!(first, last + 1, "no gap, no overlap: {frame}");
                }
                last_seq = Some(seq);
                text.push_str(frame["token"].as_str().unwrap());
            }
            Some("complete") => break frame,
            Some("start" | "progress") => {
                last_seq = frame["seq"].as_u64();
            }
            other => panic!("unexpected {other:?}: {frame}"),
        }
        assert!(frames < 400_000);
    };
    assert!(coalesced > 0, "a client this slow gets coalesced frames");
    assert!(frames < 200_000, "fewer frames than tokens: {frames}");
    assert_eq!(text, complete["response"].as_str().unwrap());
    assert_eq!(complete["seq"].as_u64(), last_seq.map(|s| s + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_stop_reading_are_closed_as_too_slow_and_memory_stays_bounded() {
    let _turn = SERIAL.lock().await;
    let server = start_with(|c| {
        c.demo_delay = Duration::ZERO;
        // About 1.8 MB of text; as frames about 21 MB per reader.
        c.demo_tokens = 300_000;
        c.replay.max_events = 1 << 20;
        c.replay.max_bytes = 1 << 30;
        c.heartbeat = Duration::from_secs(1);
        c.heartbeat_timeout = Duration::from_secs(1);
    })
    .await;
    // One reader asks and stops reading after `start`; nineteen more attach to
    // the same stream and never read at all. Kept whole, their frames would
    // come to some 400 MB.
    let mut asker = narrow_ws(&server).await;
    let before = rss();
    send(
        &mut asker,
        json!({"type": "message", "message": "everything, please"}),
    )
    .await;
    let start = recv(&mut asker).await;
    let stream_id = start["stream_id"].as_str().unwrap().to_owned();
    let mut stuck = vec![asker];
    for _ in 0..19 {
        let mut ws = narrow_ws(&server).await;
        send(
            &mut ws,
            json!({"type": "resume", "stream_id": stream_id, "after_seq": 0}),
        )
        .await;
        stuck.push(ws);
    }
    let mut peak = before;
    let mut closed = false;
    for _ in 0..600 {
        peak = peak.max(rss());
        if server.state.connections.count() == 0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the server kept clients that read nothing");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "peak memory growth with twenty stuck readers: {} MiB",
        growth >> 20
    );
    assert!(
        growth < 100 << 20,
        "memory grew by {} MiB while twenty clients read nothing",
        growth >> 20
    );
    // What the socket still held comes first; then the connection ends. A
    // client whose socket is full may not get the close frame (it could only
    // queue behind what it does not read); if it does, it says why.
    let mut ws = stuck.pop().unwrap();
    let mut ended = false;
    while let Ok(frame) = tokio::time::timeout(FRAME_TIMEOUT, ws.next()).await {
        match frame {
            Some(Ok(Message::Close(close))) => {
                let close = close.expect("a close code");
                assert!(
                    (close.code == CloseCode::Again && close.reason.contains("too slow"))
                        || close.code == CloseCode::Away,
                    "{close:?}"
                );
                ended = true;
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "the connection was ended");
    // The server serves the next client.
    let mut next = server.ws().await;
    send(&mut next, json!({"type": "ping", "timestamp": 7})).await;
    let pong: Value = recv(&mut next).await;
    assert_eq!(pong["type"], "pong");
}
