//! A client of the native dialect: connecting (spread over loopback source
//! addresses so tens of thousands of connections do not exhaust one address's
//! ports) and reading the few fields a load test needs from each frame.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// A connected client.
pub type Ws = WebSocketStream<TcpStream>;

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// The WebSocket URL (its host and path go into the handshake).
    pub url: String,
}

impl Target {
    /// Parses `ws://host:port/path` (loopback addresses only: this tool loads
    /// servers on this machine).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: expected ws://127.0.0.1:PORT/path"))?;
        let host_port = rest.split('/').next().unwrap_or(rest);
        let addr: SocketAddr = host_port
            .parse()
            .map_err(|_| format!("{url}: expected an IP address and port"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{url}: only loopback servers are load-tested (127.0.0.0/8 or ::1)"
            ));
        }
        Ok(Target {
            addr,
            url: url.to_owned(),
        })
    }

    /// Connects as the `n`th client: from 127.0.0.(1 + n % 32) when the server is
    /// on IPv4 loopback. Returns the socket and the time the TCP and WebSocket
    /// handshakes took.
    pub async fn connect(&self, n: usize) -> Result<(Ws, Duration), String> {
        let began = Instant::now();
        let socket = match self.addr.ip() {
            IpAddr::V4(_) => {
                let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
                let source = Ipv4Addr::new(127, 0, 0, 1 + (n % 32) as u8);
                socket
                    .bind(SocketAddr::new(IpAddr::V4(source), 0))
                    .map_err(|e| format!("bind {source}: {e}"))?;
                socket
            }
            IpAddr::V6(_) => TcpSocket::new_v6().map_err(|e| e.to_string())?,
        };
        let stream = socket
            .connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        // Small buffers: the client holds many idle connections too.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = client_async_with_config(self.url.as_str(), stream, Some(config))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        Ok((ws, began.elapsed()))
    }
}

/// The fields of a server frame a load test reads.
#[derive(Debug, Deserialize)]
pub struct Frame<'a> {
    /// Its type.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Its stream.
    #[serde(default, borrow)]
    pub stream_id: Option<Cow<'a, str>>,
    /// Its position.
    #[serde(default)]
    pub seq: Option<u64>,
    /// A coalesced token frame's first position (`seq` is its last): the
    /// server sends one when this client fell behind.
    #[serde(default)]
    pub first_seq: Option<u64>,
    /// A token's text.
    #[serde(default, borrow)]
    pub token: Option<Cow<'a, str>>,
    /// A complete's whole reply.
    #[serde(default, borrow)]
    pub response: Option<Cow<'a, str>>,
    /// An error's code.
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
}

impl Frame<'_> {
    /// The seqs this frame covers: `seq` alone, or `first_seq..=seq` for
    /// tokens the server coalesced for a client that fell behind.
    pub fn seq_range(&self) -> Option<(u64, u64)> {
        let last = self.seq?;
        Some((
            self.first_seq
                .filter(|first| *first <= last)
                .unwrap_or(last),
            last,
        ))
    }
}

/// Sends a JSON text frame.
pub async fn send(ws: &mut Ws, frame: &serde_json::Value) -> Result<(), String> {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .map_err(|e| e.to_string())
}

/// The next text frame (pings and pongs skipped), waiting at most `timeout`.
pub async fn next_text(ws: &mut Ws, timeout: Duration) -> Result<Message, String> {
    loop {
        match tokio::time::timeout(timeout, ws.next()).await {
            Err(_) => return Err("timed out waiting for a frame".into()),
            Ok(None) => return Err("connection closed".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(message @ Message::Text(_)))) => return Ok(message),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(format!("closed by the server: {frame:?}"));
            }
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Raises this process's open-file limit to its hard limit (tens of thousands
/// of sockets need it); returns the limit in force.
pub fn raise_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(Target::parse("ws://127.0.0.1:3000/ws/chat").is_ok());
        assert!(Target::parse("ws://[::1]:3000/ws/chat").is_ok());
        assert!(Target::parse("ws://10.0.0.1:3000/ws/chat").is_err());
        assert!(Target::parse("http://127.0.0.1:3000/").is_err());
        assert!(Target::parse("ws://localhost:3000/").is_err());
    }

    #[test]
    fn frames_borrow_their_fields() {
        let frame: Frame<'_> = serde_json::from_str(
            r#"{"type":"token","stream_id":"s","seq":4,"token":"hi","extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(frame.kind, "token");
        assert_eq!(frame.seq, Some(4));
        assert_eq!(frame.token.as_deref(), Some("hi"));
        assert_eq!(frame.seq_range(), Some((4, 4)));
    }

    #[test]
    fn a_coalesced_frame_covers_its_seq_range() {
        let frame: Frame<'_> = serde_json::from_str(
            r#"{"type":"token","stream_id":"s","seq":9,"first_seq":5,"token":"abcde"}"#,
        )
        .unwrap();
        assert_eq!(frame.seq_range(), Some((5, 9)));
        let start: Frame<'_> = serde_json::from_str(r#"{"type":"hello"}"#).unwrap();
        assert_eq!(start.seq_range(), None);
    }
}
