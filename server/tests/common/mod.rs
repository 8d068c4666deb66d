//! Shared helpers: start the real router on an ephemeral port, and a WebSocket
//! client that reads JSON frames with a hang guard.
#![allow(dead_code, unreachable_pub)]

pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rill::auth::Identity;
use rill::dialect::{Dialect, Native};
use rill::{AppState, Config};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// Longest wait for one frame: a guard against hangs, not a performance check.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub data_dir: PathBuf,
    /// Whether dropping the server leaves its data directory (for restarts).
    pub keep_data: bool,
}

impl TestServer {
    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub async fn ws(&self) -> Ws {
        self.ws_at("/ws/chat").await
    }

    pub async fn ws_at(&self, path: &str) -> Ws {
        let (ws, _) = connect_async(self.ws_url(path))
            .await
            .expect("websocket connects");
        ws
    }

    pub fn token(&self, sub: &str) -> String {
        self.state
            .keys
            .mint(sub, Some(&format!("{sub}@example.com")), Some(sub), 600)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        if !self.keep_data {
            remove_data_dir(&self.data_dir);
        }
    }
}

/// Removes a server's data directory. The server may still be shutting
/// down, its SQLite threads creating and deleting files while the
/// directory is walked (which then fails, leaving it behind): tries again
/// for up to a second while it is there.
pub fn remove_data_dir(dir: &std::path::Path) {
    for _ in 0..100 {
        match std::fs::remove_dir_all(dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

/// A fresh temporary directory.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rill-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the real server with the test configuration, changed by `adjust`.
pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    start_in(temp_dir(), false, adjust).await
}

/// Starts the real server on `data_dir` (kept after the server if
/// `keep_data`: a later server starts on the same data, as after a restart).
pub async fn start_in(
    data_dir: PathBuf,
    keep_data: bool,
    adjust: impl FnOnce(&mut Config),
) -> TestServer {
    let mut config = Config::for_tests(data_dir.clone());
    adjust(&mut config);
    let state = AppState::new(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rill::serve(listener, state.clone(), std::future::pending()));
    TestServer {
        addr,
        state,
        data_dir,
        keep_data,
    }
}

/// Opens a Socket.IO session over Engine.IO polling: its sid.
pub async fn sio_handshake(server: &TestServer, query: &str) -> String {
    let body = reqwest::get(server.http(&format!("/socket.io/?EIO=4&transport=polling{query}")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // "0{...}": the open packet.
    let open: Value =
        serde_json::from_str(body.strip_prefix('0').expect("an open packet")).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

/// Sends one Socket.IO packet over polling (none if empty), then polls until
/// `wanted` Socket.IO packets came back (Engine.IO's pings skipped).
pub async fn sio_exchange(
    server: &TestServer,
    sid: &str,
    packet: &str,
    wanted: usize,
) -> Vec<String> {
    let url = server.http(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let client = reqwest::Client::new();
    if !packet.is_empty() {
        let sent = client
            .post(&url)
            .body(packet.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200);
    }
    let mut packets = Vec::new();
    while packets.len() < wanted {
        let body = tokio::time::timeout(FRAME_TIMEOUT, async {
            client.get(&url).send().await.unwrap().text().await.unwrap()
        })
        .await
        .expect("packets arrive");
        // Packets are separated by the record separator; "2" is a ping.
        packets.extend(
            body.split('\u{1e}')
                .filter(|p| !p.is_empty() && *p != "2")
                .map(str::to_owned),
        );
    }
    packets
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

/// One parsed server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Value,
}

/// Parses a whole SSE body (comments skipped).
pub fn parse_sse(body: &str) -> Vec<SseEvent> {
    body.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut event, mut data) = (None, None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            (!data.is_empty()).then(|| SseEvent {
                id,
                event,
                data: serde_json::from_str(&data).expect("SSE data is JSON"),
            })
        })
        .collect()
}

/// `POST /api/v1/streams`: (stream ids, session id).
pub async fn start_stream(server: &TestServer, body: Value) -> (Vec<String>, String) {
    let response = reqwest::Client::new()
        .post(server.http("/api/v1/streams"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let ids = body["stream_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    (ids, body["session_id"].as_str().unwrap().to_owned())
}

/// Waits until a (token-less) stream has finished: an observer placed after
/// every possible seq wakes when the stream ends (no polling, bounded by a
/// timeout; an observer does not keep the stream alive).
pub async fn wait_finished(server: &TestServer, stream_id: &str) {
    let mut reader = server
        .state
        .engine
        .observe(&Identity::Anonymous, stream_id, u64::MAX)
        .expect("the stream exists");
    let end = tokio::time::timeout(FRAME_TIMEOUT, reader.next_batch())
        .await
        .unwrap_or_else(|_| panic!("stream {stream_id} did not finish"));
    assert!(
        matches!(end, Ok(None)),
        "{stream_id}: nothing after u64::MAX"
    );
}

/// The terminal event of a finished (token-less) stream, as the native dialect
/// sends it.
pub async fn terminal_event(server: &TestServer, stream_id: &str) -> Value {
    let status = server
        .state
        .engine
        .status(&Identity::Anonymous, stream_id)
        .unwrap();
    assert!(status.finished);
    let mut last = Vec::new();
    let mut reader = server
        .state
        .engine
        .observe(&Identity::Anonymous, stream_id, status.last_seq - 1)
        .unwrap();
    reader.next_into(&mut last).await.unwrap();
    serde_json::from_slice(&Native.encoded(&last[0])).unwrap()
}

/// `GET path` as JSON (any status).
pub async fn get_json(server: &TestServer, path: &str) -> Value {
    reqwest::get(server.http(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET path` as JSON with `Authorization: Bearer <bearer>` (any status).
pub async fn get_json_as(server: &TestServer, path: &str, bearer: &str) -> Value {
    reqwest::Client::new()
        .get(server.http(path))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `POST /api/v1/chat` with a raw body and an optional bearer token: (status, JSON body).
pub async fn post_chat(
    server: &TestServer,
    body: impl Into<reqwest::Body>,
    bearer: Option<&str>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(server.http("/api/v1/chat"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

pub async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// Asks to follow stream `stream_id` from after seq `after` (native dialect).
pub async fn send_resume(ws: &mut Ws, stream_id: &str, after: u64) {
    send(
        ws,
        serde_json::json!({"type": "resume", "stream_id": stream_id, "after_seq": after}),
    )
    .await;
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.unwrap();
}

/// The next text frame as JSON (pings and pongs skipped).
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(FRAME_TIMEOUT, ws.next())
            .await
            .expect("a frame arrives")
            .expect("the socket is open")
            .expect("the frame is valid");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("frames are JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame: {other:?}"),
        }
    }
}

/// Frames until (and including) the terminal event of every stream in `streams`.
pub async fn recv_until_done(ws: &mut Ws, streams: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    let mut done = 0;
    while done < streams {
        let frame = recv(ws).await;
        if frame["type"] == "complete"
            || (frame["type"] == "error" && frame["stream_id"].is_string())
        {
            done += 1;
        }
        frames.push(frame);
    }
    frames
}

/// Asserts the connection still answers: ping → pong.
pub async fn assert_usable(ws: &mut Ws) {
    send(ws, serde_json::json!({"type": "ping", "timestamp": 7})).await;
    let pong = recv(ws).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["timestamp"], 7);
}

/// The frames of one stream, checked: start, progress…, tokens, complete; seq 1..n.
/// Returns (concatenated tokens, complete frame).
pub fn check_stream(frames: &[Value], stream_id: &str) -> (String, Value) {
    let mine: Vec<&Value> = frames
        .iter()
        .filter(|f| f["stream_id"] == stream_id)
        .collect();
    assert!(!mine.is_empty());
    for (i, frame) in mine.iter().enumerate() {
        assert_eq!(
            frame["seq"],
            (i + 1) as u64,
            "seq is contiguous from 1: {frame}"
        );
    }
    assert_eq!(mine[0]["type"], "start");
    let last = mine.last().unwrap();
    assert_eq!(last["type"], "complete", "{last}");
    let mut seen_token = false;
    let mut text = String::new();
    for frame in &mine[1..mine.len() - 1] {
        match frame["type"].as_str().unwrap() {
            "progress" | "sources" => assert!(!seen_token, "{frame} comes before tokens"),
            "token" => {
                seen_token = true;
                text.push_str(frame["token"].as_str().unwrap());
            }
            other => panic!("unexpected {other} inside a stream"),
        }
    }
    (text, (*last).clone())
}

/// Waits until a spawned `rill` binary says it is listening (it logs the line
/// on stdout once the socket is bound): a signal, not a polling loop. The
/// child's stdout must be piped; it is drained afterwards so the child never
/// blocks on a full pipe.
pub fn wait_listening(child: &mut std::process::Child) {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (ready, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("listening on") {
                let _ = ready.send(());
            }
        }
    });
    listening
        .recv_timeout(FRAME_TIMEOUT)
        .expect("rill logs that it is listening");
}

/// The next close frame on `ws` (skipping other frames), with the error frame
/// that came before it.
pub async fn close_of(ws: &mut Ws) -> (Option<Value>, CloseCode, String) {
    let mut last_error = None;
    loop {
        let frame = tokio::time::timeout(FRAME_TIMEOUT, ws.next())
            .await
            .expect("closed in time");
        match frame {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "error" {
                    last_error = Some(value);
                }
            }
            Some(Ok(Message::Close(Some(close)))) => {
                return (last_error, close.code, close.reason.to_string());
            }
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}
