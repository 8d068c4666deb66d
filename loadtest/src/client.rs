//! A client of rill's dialects: connecting (spread over loopback source
//! addresses so tens of thousands of connections do not exhaust one address's
//! ports, and through Socket.IO's handshake when it speaks that), the frames a
//! load test sends, and the few fields it reads from each frame it receives.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// A connected client.
pub type Ws = WebSocketStream<TcpStream>;

/// The wire dialect a client speaks; rill serves each on its own path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// rill's own (`/ws/chat`): `message`, `start`, `token`, `complete`.
    #[default]
    Native,
    /// Seed 002's `{type, data}` (`/ws`): `chat`, `status`, `chunk`, `response`.
    Seed002,
    /// Socket.IO v5 over Engine.IO v4's WebSocket transport (`/socket.io/`):
    /// `send_message`, `message_token`, `message_complete`.
    Socketio,
}

impl Dialect {
    /// Every dialect, by its name on the command line.
    pub const ALL: [(&'static str, Dialect); 3] = [
        ("native", Dialect::Native),
        ("seed002", Dialect::Seed002),
        ("socketio", Dialect::Socketio),
    ];

    /// The dialect called `name`.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, dialect)| *dialect)
            .ok_or_else(|| format!("unknown dialect {name:?} (native, seed002, socketio)"))
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, dialect)| *dialect == self)
            .map_or("native", |(name, _)| name)
    }

    /// Where rill serves it (path and query).
    pub fn path(self) -> &'static str {
        match self {
            Dialect::Native => "/ws/chat",
            Dialect::Seed002 => "/ws",
            Dialect::Socketio => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// A question on conversation `conversation`.
    pub fn question(self, text: &str, conversation: &str) -> String {
        let conversation_key = match self {
            Dialect::Socketio => "chat_id",
            Dialect::Native | Dialect::Seed002 => "session_id",
        };
        self.command(
            ["message", "chat", "send_message"],
            json!({"message": text, conversation_key: conversation}),
        )
    }

    /// Asks for the rest of stream `stream_id` after `after_seq`.
    pub fn resume(self, stream_id: &str, after_seq: u64) -> String {
        self.command(
            ["resume", "resume", "resume_stream"],
            json!({"stream_id": stream_id, "after_seq": after_seq}),
        )
    }

    /// A ping the server answers with a pong.
    pub fn ping(self) -> String {
        self.command(["ping", "ping", "ping"], json!({"timestamp": 1}))
    }

    /// The command named `names` (native, seed 002, Socket.IO) carrying
    /// `fields`: beside the native `type`, under seed 002's `data`, or as a
    /// Socket.IO event's data.
    fn command(self, [native, seed002, event]: [&str; 3], fields: Value) -> String {
        match self {
            Dialect::Native => {
                let mut frame = fields;
                frame["type"] = json!(native);
                frame.to_string()
            }
            Dialect::Seed002 => json!({"type": seed002, "data": fields}).to_string(),
            Dialect::Socketio => socketio_event(event, &fields),
        }
    }

    /// Whether a frame of tokens coalesced for a client that fell behind
    /// names its first seq (`first_seq`: the native dialect and Socket.IO's
    /// `message_token`). Seed 002's names only the last, so a frame after a
    /// gap is taken to cover it; the reply's text, checked against the
    /// server's at the end, still catches a token lost.
    fn names_first_seq(self) -> bool {
        matches!(self, Dialect::Native | Dialect::Socketio)
    }

    /// What the server's text frame `text` says.
    pub fn read<'a>(self, text: &'a str) -> Result<Event<'a>, String> {
        let bad = |e: serde_json::Error| format!("bad frame: {e}");
        match self {
            Dialect::Native => {
                let frame: Frame<'a> = serde_json::from_str(text).map_err(bad)?;
                let range = frame.seq_range();
                let kind = Kind::named(
                    &frame.kind,
                    ["token", "complete"],
                    [frame.token, frame.response, frame.code],
                );
                Ok(Event {
                    kind,
                    stream_id: frame.stream_id,
                    range,
                })
            }
            Dialect::Seed002 => {
                let frame: Seed002Frame<'a> = serde_json::from_str(text).map_err(bad)?;
                // The last chunk is empty and ends the reply's seqs, not a token.
                let kind = if frame.is_final {
                    Kind::Other
                } else {
                    Kind::named(
                        &frame.kind,
                        ["chunk", "response"],
                        [
                            frame.chunk,
                            frame.data.and_then(|data| data.response),
                            frame.code,
                        ],
                    )
                };
                Ok(Event {
                    kind,
                    stream_id: frame.stream_id,
                    range: frame.seq.map(|seq| (seq, seq)),
                })
            }
            Dialect::Socketio => {
                // Engine.IO's ping ("2"); Socket.IO's packets ("4" + type).
                if text == "2" {
                    return Ok(Event::of(Kind::EnginePing));
                }
                let Some(packet) = text.strip_prefix("42") else {
                    // The open packet, the namespace's connect, a noop.
                    return Ok(Event::of(Kind::Other));
                };
                // Only the events read below are parsed: others (a room's
                // notifications) may carry any data.
                const READ: [&str; 4] = [
                    "[\"message_token\",",
                    "[\"message_complete\",",
                    "[\"error\",",
                    "[\"pong\",",
                ];
                if !READ.iter().any(|name| packet.starts_with(name)) {
                    return Ok(Event::of(Kind::Other));
                }
                let (name, data): (Cow<'a, str>, SocketioData<'a>) =
                    serde_json::from_str(packet).map_err(bad)?;
                let kind = Kind::named(
                    &name,
                    ["message_token", "message_complete"],
                    [data.token, data.response, data.code],
                );
                Ok(Event {
                    kind,
                    stream_id: data.stream_id,
                    range: data.seq.map(|seq| (data.first_seq.unwrap_or(seq), seq)),
                })
            }
        }
    }
}

/// A Socket.IO event on the default namespace: `42["name",data]`.
fn socketio_event(name: &str, data: &Value) -> String {
    format!("42{}", json!([name, data]))
}

/// What one server frame says, in any dialect.
#[derive(Debug, PartialEq)]
pub struct Event<'a> {
    /// What it is.
    pub kind: Kind<'a>,
    /// The stream it belongs to, if it names one.
    pub stream_id: Option<Cow<'a, str>>,
    /// The seqs it covers, if it has one (see [`Frame::seq_range`]).
    pub range: Option<(u64, u64)>,
}

impl Event<'_> {
    fn of(kind: Kind<'static>) -> Event<'static> {
        Event {
            kind,
            stream_id: None,
            range: None,
        }
    }

    /// Where this frame stands after `last_seq`, the last seq seen.
    pub fn place(&self, dialect: Dialect, last_seq: u64) -> Place {
        let Some((first, last)) = self.range else {
            return Place::Unnumbered;
        };
        // A dialect that names only a coalesced frame's last seq: the
        // frame covers everything since the last one seen.
        let first = if dialect.names_first_seq() || last_seq == 0 || last <= last_seq {
            first
        } else {
            last_seq + 1
        };
        if first <= last_seq {
            return Place::Duplicate;
        }
        Place::Next {
            first,
            last,
            lost: if last_seq > 0 {
                first - last_seq - 1
            } else {
                0
            },
        }
    }
}

/// Where a frame stands in its stream's seqs ([`Event::place`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    /// It has no seq.
    Unnumbered,
    /// It repeats a seq already seen.
    Duplicate,
    /// It covers `first..=last`, `lost` seqs after the last one seen.
    Next {
        /// Its first seq.
        first: u64,
        /// Its last seq.
        last: u64,
        /// Seqs skipped before it.
        lost: u64,
    },
}

impl<'a> Kind<'a> {
    /// The kind of a frame or event called `name`, in a dialect that calls
    /// a token and the end `[token, end]` (errors and pongs are `error` and
    /// `pong` in all): `[token text, whole reply, error code]` are its
    /// fields.
    fn named(name: &str, [token, end]: [&str; 2], fields: [Option<Cow<'a, str>>; 3]) -> Self {
        let [text, reply, code] = fields;
        match name {
            _ if name == token => Kind::Token(text.unwrap_or_default()),
            _ if name == end => Kind::Complete(reply.unwrap_or_default()),
            "error" => Kind::Error(code.unwrap_or(Cow::Borrowed("?"))),
            "pong" => Kind::Pong,
            _ => Kind::Other,
        }
    }
}

/// The kinds of frame a load test tells apart.
#[derive(Debug, PartialEq)]
pub enum Kind<'a> {
    /// A token's text.
    Token(Cow<'a, str>),
    /// The reply is complete: its whole text.
    Complete(Cow<'a, str>),
    /// An error, by its code.
    Error(Cow<'a, str>),
    /// The answer to a ping.
    Pong,
    /// Engine.IO's ping: the client must answer (`3`) or be dropped.
    EnginePing,
    /// Anything else (start, progress, status, sources…).
    Other,
}

/// The fields of a seed 002 frame a load test reads.
#[derive(Debug, Deserialize)]
struct Seed002Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    stream_id: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    chunk: Option<Cow<'a, str>>,
    #[serde(default)]
    is_final: bool,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<Seed002Data<'a>>,
}

/// A seed 002 `response`'s data.
#[derive(Debug, Deserialize)]
struct Seed002Data<'a> {
    #[serde(default, borrow)]
    response: Option<Cow<'a, str>>,
}

/// The fields of a Socket.IO event's data a load test reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SocketioData<'a> {
    #[serde(borrow)]
    stream_id: Option<Cow<'a, str>>,
    seq: Option<u64>,
    /// A coalesced `message_token`'s first seq.
    first_seq: Option<u64>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    response: Option<Cow<'a, str>>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// The WebSocket URL (its host and path go into the handshake).
    pub url: String,
    /// What the clients speak.
    pub dialect: Dialect,
}

impl Target {
    /// Parses `ws://host:port/path` (loopback addresses only: this tool loads
    /// servers on this machine), for the native dialect.
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
            dialect: Dialect::Native,
        })
    }

    /// The same server, speaking `dialect`.
    pub fn speaking(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
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
        let (mut ws, _) = client_async_with_config(self.url.as_str(), stream, Some(config))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        if self.dialect == Dialect::Socketio {
            socketio_connect(&mut ws).await?;
        }
        Ok((ws, began.elapsed()))
    }
}

/// Socket.IO's handshake on a fresh WebSocket: Engine.IO's open packet
/// (`0{…}`), then the default namespace's connect (`40`) and its answer
/// (`40{"sid":…}`; `44{…}` is a refusal).
async fn socketio_connect(ws: &mut Ws) -> Result<(), String> {
    let open = next_text(ws, HANDSHAKE_TIMEOUT).await?;
    if !open.to_text().unwrap_or_default().starts_with('0') {
        return Err(format!("expected Engine.IO's open packet, got {open}"));
    }
    ws.send(Message::Text("40".into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let reply = next_text(ws, HANDSHAKE_TIMEOUT).await?;
        let text = reply.to_text().unwrap_or_default();
        if text.starts_with("40") {
            return Ok(());
        }
        if text.starts_with("44") {
            return Err(format!("Socket.IO refused the connection: {text}"));
        }
        if text == "2" {
            ws.send(Message::Text("3".into()))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
}

/// Longest wait for a handshake's answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

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
pub async fn send(ws: &mut Ws, frame: &Value) -> Result<(), String> {
    send_text(ws, frame.to_string()).await
}

/// Sends a text frame.
pub async fn send_text(ws: &mut Ws, text: String) -> Result<(), String> {
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())
}

/// Greets the server as a client of `dialect` does on opening: the native
/// `hello` (answered with the server's own), elsewhere a ping.
pub async fn greet(ws: &mut Ws, dialect: Dialect, timeout: Duration) -> Result<(), String> {
    if dialect == Dialect::Native {
        send_text(ws, json!({"type": "hello"}).to_string()).await?;
        return next_text(ws, timeout).await.map(drop);
    }
    ping(ws, dialect, timeout).await
}

/// Sends `dialect`'s ping and waits for its pong (other frames skipped; a
/// Socket.IO client answers Engine.IO's pings meanwhile): whether the
/// connection is alive.
pub async fn ping(ws: &mut Ws, dialect: Dialect, timeout: Duration) -> Result<(), String> {
    send_text(ws, dialect.ping()).await?;
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let message = next_text(ws, left).await?;
        let text = message.to_text().unwrap_or_default();
        match dialect.read(text)?.kind {
            Kind::Pong => return Ok(()),
            Kind::EnginePing => send_text(ws, "3".into()).await?,
            _ => {}
        }
    }
}

/// The next text frame (pings and pongs skipped), waiting at most `timeout`
/// in all (a skipped frame does not restart the wait).
pub async fn next_text(ws: &mut Ws, timeout: Duration) -> Result<Message, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
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
    fn each_dialect_reads_its_tokens_end_errors_and_pongs() {
        use Dialect::*;
        let read = |dialect: Dialect, text: &'static str| dialect.read(text).unwrap();
        // Native.
        let token = read(
            Native,
            r#"{"type":"token","stream_id":"s","seq":4,"token":"hi"}"#,
        );
        assert_eq!(token.kind, Kind::Token("hi".into()));
        assert_eq!(
            (token.stream_id.as_deref(), token.range),
            (Some("s"), Some((4, 4)))
        );
        assert_eq!(
            read(
                Native,
                r#"{"type":"complete","stream_id":"s","seq":9,"response":"a b"}"#
            )
            .kind,
            Kind::Complete("a b".into())
        );
        assert_eq!(
            read(Native, r#"{"type":"error","code":"RATE_LIMITED"}"#).kind,
            Kind::Error("RATE_LIMITED".into())
        );
        assert_eq!(
            read(Native, r#"{"type":"pong","timestamp":1}"#).kind,
            Kind::Pong
        );
        // Seed 002: the final chunk is empty and not a token; the response
        // carries the whole text in its data.
        let chunk = read(
            Seed002,
            r#"{"type":"chunk","chunk":"Oh,","is_final":false,"stream_id":"s","seq":4}"#,
        );
        assert_eq!(
            (chunk.kind, chunk.range),
            (Kind::Token("Oh,".into()), Some((4, 4)))
        );
        let last = read(
            Seed002,
            r#"{"type":"chunk","chunk":"","is_final":true,"stream_id":"s","seq":9}"#,
        );
        assert_eq!((last.kind, last.range), (Kind::Other, Some((9, 9))));
        assert_eq!(
            read(Seed002, r#"{"type":"response","status":"completed","data":{"response":"Oh, hi","usage":{}},"stream_id":"s"}"#).kind,
            Kind::Complete("Oh, hi".into())
        );
        assert_eq!(
            read(
                Seed002,
                r#"{"type":"status","status":"starting","stream_id":"s","seq":1}"#
            )
            .stream_id
            .as_deref(),
            Some("s")
        );
        assert_eq!(
            read(Seed002, r#"{"type":"pong","timestamp":1,"server_time":2}"#).kind,
            Kind::Pong
        );
        // Socket.IO: Engine.IO's ping, events on the default namespace, the
        // handshake's packets.
        assert_eq!(read(Socketio, "2").kind, Kind::EnginePing);
        let token = read(
            Socketio,
            r#"42["message_token",{"chat_id":"c","token":"hi","stream_id":"s","seq":5}]"#,
        );
        assert_eq!(
            (token.kind, token.range),
            (Kind::Token("hi".into()), Some((5, 5)))
        );
        let joined = read(
            Socketio,
            r#"42["message_token",{"chat_id":"c","token":"abc","stream_id":"s","seq":9,"first_seq":7}]"#,
        );
        assert_eq!(
            (joined.kind, joined.range),
            (Kind::Token("abc".into()), Some((7, 9)))
        );
        assert_eq!(
            read(Socketio, r#"42["message_complete",{"chat_id":1,"response":"hi","metadata":{},"stream_id":"s","seq":7}]"#).kind,
            Kind::Complete("hi".into())
        );
        assert_eq!(
            read(
                Socketio,
                r#"42["error",{"message":"m","code":"INVALID_REQUEST"}]"#
            )
            .kind,
            Kind::Error("INVALID_REQUEST".into())
        );
        assert_eq!(
            read(Socketio, r#"42["pong",{"timestamp":1}]"#).kind,
            Kind::Pong
        );
        assert_eq!(
            read(Socketio, r#"0{"sid":"x","pingInterval":25000}"#).kind,
            Kind::Other
        );
        assert_eq!(read(Socketio, r#"40{"sid":"y"}"#).kind, Kind::Other);
        // Not a frame of the dialect: a clear error, not a panic.
        assert!(Native.read("Echo: hi").is_err());
        assert!(Socketio.read(r#"42["message_token",{"token":"#).is_err());
        assert_eq!(
            read(Socketio, r#"42["project_update","any data"]"#).kind,
            Kind::Other
        );
    }

    #[test]
    fn the_questions_resumes_and_pings_are_each_dialects_own() {
        let question: Value = serde_json::from_str(&Dialect::Seed002.question("q", "c")).unwrap();
        assert_eq!(
            question,
            json!({"type": "chat", "data": {"message": "q", "session_id": "c"}})
        );
        assert_eq!(
            Dialect::Socketio.resume("s", 3),
            r#"42["resume_stream",{"after_seq":3,"stream_id":"s"}]"#
        );
        assert_eq!(Dialect::Socketio.ping(), r#"42["ping",{"timestamp":1}]"#);
        for (name, dialect) in Dialect::ALL {
            assert_eq!(Dialect::parse(name), Ok(dialect));
            assert_eq!(dialect.name(), name);
        }
        assert!(Dialect::parse("graphql").is_err());
    }

    #[test]
    fn a_frame_places_itself_after_the_last_seq_seen() {
        let at = |dialect: Dialect, text: &'static str, last_seq: u64| {
            dialect.read(text).unwrap().place(dialect, last_seq)
        };
        let next = |first, last, lost| Place::Next { first, last, lost };
        let native = r#"{"type":"token","stream_id":"s","seq":9,"first_seq":5,"token":"abcde"}"#;
        assert_eq!(at(Dialect::Native, native, 4), next(5, 9, 0));
        assert_eq!(at(Dialect::Native, native, 2), next(5, 9, 2));
        assert_eq!(at(Dialect::Native, native, 9), Place::Duplicate);
        // Seed 002 names only a coalesced frame's last seq: it covers the gap.
        let chunk = r#"{"type":"chunk","chunk":"abcde","is_final":false,"stream_id":"s","seq":9}"#;
        assert_eq!(at(Dialect::Seed002, chunk, 4), next(5, 9, 0));
        assert_eq!(at(Dialect::Seed002, chunk, 9), Place::Duplicate);
        assert_eq!(at(Dialect::Seed002, chunk, 0), next(9, 9, 0));
        assert_eq!(at(Dialect::Socketio, "2", 4), Place::Unnumbered);
        // Socket.IO names it, as the native dialect does.
        let joined =
            r#"42["message_token",{"token":"abcde","stream_id":"s","seq":9,"first_seq":5}]"#;
        assert_eq!(at(Dialect::Socketio, joined, 4), next(5, 9, 0));
        assert_eq!(at(Dialect::Socketio, joined, 2), next(5, 9, 2));
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

    /// A wait for a text frame is one deadline: WebSocket pings that keep
    /// coming do not restart it (a client whose reply never came, with the
    /// server's keep-alives still arriving, waited for the run's deadline).
    #[tokio::test]
    async fn pings_do_not_restart_the_wait_for_a_text_frame() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            // A ping every 20 ms, never a text frame.
            for _ in 0..500 {
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
            .await
            .unwrap();
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            next_text(&mut ws, Duration::from_millis(200)),
        )
        .await
        .expect("next_text gave up by itself, pings or not");
        assert_eq!(waited, Err("timed out waiting for a frame".to_owned()));
    }
}
