//! The baseline: the least a server speaking the native dialect can do. It
//! answers `message` by writing frames built once at startup (start, two
//! progress, the tokens, complete) with the same pacing as rill's demo, and
//! `hello`/`ping` with fixed answers. No store, no history, no replay, no
//! auth: what it costs is this machine's ceiling for the same traffic, and
//! every report measures it in the same run as rill.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::client::Frame;

/// The frames of one reply, shared by every connection.
pub struct Reply {
    /// `start` and the two `progress` frames.
    head: Vec<Utf8Bytes>,
    /// One frame per token.
    tokens: Vec<Utf8Bytes>,
    /// `complete`.
    tail: Utf8Bytes,
}

impl Reply {
    /// A reply of `tokens` words (of the demo's sizes).
    pub fn new(tokens: usize) -> Self {
        let id = "baseline0000000000000000000000000";
        let words: Vec<String> = (0..tokens.max(1))
            .map(|i| {
                let word = ["stream", "token", "reply", "server", "rill", "fast"][i % 6];
                if i == 0 {
                    word.to_owned()
                } else {
                    format!(" {word}")
                }
            })
            .collect();
        let frame = |value: serde_json::Value| Utf8Bytes::from(value.to_string());
        let head = vec![
            frame(
                serde_json::json!({"type": "start", "stream_id": id, "seq": 1,
                "session_id": "baseline", "message_id": "m", "persona_id": "assistant", "model": "demo"}),
            ),
            frame(
                serde_json::json!({"type": "progress", "stream_id": id, "seq": 2,
                "step": "starting", "message": "Processing started"}),
            ),
            frame(
                serde_json::json!({"type": "progress", "stream_id": id, "seq": 3,
                "step": "generating", "message": "Generating response..."}),
            ),
        ];
        let tokens_frames = words
            .iter()
            .enumerate()
            .map(|(i, word)| {
                frame(serde_json::json!({"type": "token", "stream_id": id, "seq": 4 + i, "token": word}))
            })
            .collect();
        let tail = frame(serde_json::json!({"type": "complete", "stream_id": id,
            "seq": 4 + words.len(), "response": words.concat(), "session_id": "baseline",
            "metadata": {"agent": "assistant", "model": "demo", "finish_reason": "stop",
                "sources": [], "context": {"sources": []}}}));
        Reply {
            head,
            tokens: tokens_frames,
            tail,
        }
    }
}

/// A listener on `addr` with the accept queue rill's has (4096; tokio's
/// default is 1024). With the default, a burst of 1,000 clients overflowed
/// the queue and the kernel's SYN retries spread their arrivals over a
/// second, so the baseline never met the burst the other servers meet.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves the baseline on `listener` forever.
pub async fn serve(listener: TcpListener, reply: Reply, delay: Duration) {
    let reply = Arc::new(reply);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let reply = reply.clone();
        tokio::spawn(async move {
            let _ = connection(stream, reply, delay).await;
        });
    }
}

async fn connection(
    stream: TcpStream,
    reply: Arc<Reply>,
    delay: Duration,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    stream.set_nodelay(true)?;
    // The same buffer sizes as rill's WebSocket route.
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024);
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let (mut sink, mut source) = ws.split();
    let hello = Utf8Bytes::from_static(
        r#"{"type":"hello","connection_id":"baseline","protocol":1,"server":"baseline","heartbeat_ms":30000,"auth_required":false,"limits":{"max_frame_bytes":65536,"max_personas":8}}"#,
    );
    let pong = Utf8Bytes::from_static(r#"{"type":"pong","timestamp":1,"server_time":0}"#);
    while let Some(message) = source.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
            continue;
        };
        match frame.kind.as_ref() {
            "message" => {
                for head in &reply.head {
                    sink.feed(Message::Text(head.clone())).await?;
                }
                for (i, token) in reply.tokens.iter().enumerate() {
                    if i > 0 && !delay.is_zero() {
                        sink.flush().await?;
                        tokio::time::sleep(delay).await;
                    }
                    sink.feed(Message::Text(token.clone())).await?;
                }
                sink.feed(Message::Text(reply.tail.clone())).await?;
                sink.flush().await?;
            }
            "hello" => sink.send(Message::Text(hello.clone())).await?,
            "ping" => sink.send(Message::Text(pong.clone())).await?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_adds_up_and_is_numbered() {
        let reply = Reply::new(5);
        let tokens: String = reply
            .tokens
            .iter()
            .map(|t| {
                serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap()["token"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let tail: serde_json::Value = serde_json::from_str(reply.tail.as_str()).unwrap();
        assert_eq!(tail["response"], tokens);
        assert_eq!(tail["seq"], 9);
    }
}
