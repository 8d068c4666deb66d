//! Socket.IO at `/socket.io/` (socketioxide: Engine.IO v4 / Socket.IO v5, HTTP
//! long-polling and WebSocket with upgrade), speaking seed 004's events over
//! the same [`Session`] as every other dialect: the same auth, limits,
//! ownership and error codes (`docs/dialects.md`).
//!
//! - connect (auth `{token}`, or `?token=`/`Authorization`): `connection_status
//!   {status: "connected"}`; a refused token, or none with `--auth-required`,
//!   is a `connect_error` saying why.
//! - `join_project {project_id}` → `project_joined`; one project room at a time.
//! - `leave_project {project_id}` → `project_left`.
//! - `send_message {chat_id, message, model?, temperature?, include_history?}` →
//!   `message_received`, `message_sources`, `message_token` × n,
//!   `message_complete` (with rill's `stream_id` and `seq`).
//! - `resume_stream {stream_id, after_seq, chat_id?}`: the rest of a reply.
//! - `ping` → `pong {timestamp}` (server milliseconds).
//! - Room events arrive as events named as published (`document_status`,
//!   `project_update` …) and `presence`.
//! - Anything invalid: `error {message, code, chat_id?}`; the socket stays.
//!
//! Each socket keeps its session in its extensions; the tasks that forward
//! replies and room events stop when it disconnects. Sockets count in
//! `/health` like WebSockets, and are disconnected at shutdown.

use std::sync::Arc;

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderValue, Uri};
use rill_protocol::MessageRequest;
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::{Data, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{SendError, SocketError, SocketIo};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::events::StreamEvent;
use crate::limits::Slot;
use crate::rooms::{PROJECT_PREFIX, RoomEventKind};
use crate::session::{Command, Following, Outcome, Session};
use crate::state::AppState;

/// A socket's part of rill: its session, its connection slot, and the signal
/// that stops its tasks.
#[derive(Clone)]
struct Conn {
    session: Arc<Mutex<Session>>,
    /// Counted against the connection caps while the socket lives.
    _slot: Arc<Slot>,
    /// Counted in `/health` (and waited for at shutdown) while it lives.
    _counted: Arc<crate::state::ConnectionGuard>,
    /// Cancelled when the socket disconnects.
    gone: CancellationToken,
    /// Cancelled when the socket can be written to (see [`conn`]).
    connected: CancellationToken,
    /// Longest wait for room in the socket's queue (see [`emit_waiting`]).
    write_deadline: std::time::Duration,
    /// The project room it is in (one at a time).
    project: Arc<Mutex<Option<String>>>,
}

/// The Socket.IO layer for the app's router.
pub(crate) fn layer(state: &AppState) -> SocketIoLayer {
    let config = &state.config;
    let (layer, io) = SocketIo::builder()
        .with_state(state.clone())
        .req_path(PATH)
        .max_payload(config.max_frame_bytes as u64)
        .ws_max_message_size(config.max_frame_bytes)
        .ping_interval(config.heartbeat)
        .ping_timeout(config.heartbeat_timeout)
        // As small as the WebSocket route's: a socket reads small events.
        .ws_read_buffer_size(super::ws::READ_BUFFER)
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    // At shutdown every socket is told to go (its client reconnects, and can
    // finish a reply in flight with resume_stream).
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        if let Err(error) = io.disconnect().await {
            tracing::debug!(%error, "socket.io: disconnecting at shutdown");
        }
    });
    layer
}

/// Where socketioxide answers (and where `own_request_head` copies).
const PATH: &str = "/socket.io";

/// Copies a Socket.IO request's URI and headers out of the connection's read
/// buffer. hyper parses them as slices of that buffer (axum's `OriginalUri`
/// too), and socketioxide keeps the request's head for the socket's whole
/// life: as slices, they kept the whole buffer (16 KiB) of every socket alive;
/// copied, a few hundred bytes.
pub(crate) fn own_request_head(mut request: Request) -> Request {
    if request.uri().path().starts_with(PATH) {
        *request.uri_mut() = owned_uri(request.uri());
        *request.headers_mut() = owned_headers(request.headers());
        if let Some(OriginalUri(original)) = request.extensions_mut().get_mut::<OriginalUri>() {
            *original = owned_uri(original);
        }
    }
    request
}

/// A copy of `uri` that shares no memory with it.
fn owned_uri(uri: &Uri) -> Uri {
    Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone())
}

/// A copy of `headers` that shares no memory with them (a header name is
/// never a slice of a buffer: `http` copies one made from bytes).
fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

/// Why a connection is refused (the `connect_error` message).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The token of the connect packet's auth (`io(url, {auth: {token}})`).
#[derive(Debug, Default, Deserialize)]
struct Auth {
    token: Option<String>,
}

/// Checks origin and token, applies the connection caps, and opens the
/// socket's session.
async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Auth>,
    State(state): State<AppState>,
) -> Result<(), Refused> {
    let parts = socket.req_parts();
    let query_token = parts
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")))
        .map(str::to_owned);
    let token = auth.ok().and_then(|a| a.token).or(query_token);
    let caller = super::socket_caller(&state, &parts.headers, token.as_deref())
        .map_err(|e| Refused(e.client_message()))?;
    if state.config.auth_required && !caller.identity.is_authenticated() {
        return Err(Refused(Error::AuthRequired.client_message()));
    }
    let ip = super::extract::peer_ip(&state, parts);
    let slot = state
        .limits
        .connect(ip, caller.identity.owner())
        .map_err(|e| Refused(e.client_message()))?;
    let session = Session::new(&state, caller).with_peer(ip);
    socket.extensions.insert(Conn {
        session: Arc::new(Mutex::new(session)),
        _slot: Arc::new(slot),
        _counted: Arc::new(state.connections.open()),
        gone: CancellationToken::new(),
        connected: CancellationToken::new(),
        write_deadline: state.config.heartbeat + state.config.heartbeat_timeout,
        project: Arc::new(Mutex::new(None)),
    });
    // Here, not in `on_connect`: socketioxide answers the connect after this
    // returns, then runs `on_connect` in a task of its own, so an event the
    // client sent as soon as its connect was answered could be read before
    // that task had registered the handlers, and was dropped.
    handle_events(&socket);
    Ok(())
}

/// Runs once socketioxide counts the socket connected: from here its emits
/// go out (see [`conn`]).
async fn on_connect(socket: SocketRef) {
    if let Some(conn) = socket.extensions.get::<Conn>() {
        conn.connected.cancel();
    }
    let _ = socket.emit("connection_status", &json!({"status": "connected"}));
}

/// Registers the socket's event handlers.
fn handle_events(socket: &SocketRef) {
    socket.on("join_project", join_project);
    socket.on("leave_project", leave_project);
    socket.on("send_message", send_message);
    socket.on("resume_stream", resume_stream);
    socket.on("ping", |socket: SocketRef| async move {
        if conn(&socket).await.is_some() {
            let timestamp = crate::session::unix_now_millis();
            let _ = socket.emit("pong", &json!({"timestamp": timestamp}));
        }
    });
    socket.on_disconnect(|socket: SocketRef| async move {
        // Ends the session (its streams keep running; its rooms are left).
        if let Some(conn) = socket.extensions.remove::<Conn>() {
            conn.gone.cancel();
        }
    });
}

/// This socket's part of rill, once the socket can be written to (`None`
/// once it disconnected).
///
/// socketioxide sends the connect's answer before it marks the socket
/// connected, and an emit before that mark fails: a client that sent an
/// event as soon as the answer came could have it handled in between, and
/// the event's reply was lost (a resumed reply never came, and the client
/// waited for it). So a handler first waits for the connect handler, which
/// runs after the mark.
async fn conn(socket: &SocketRef) -> Option<Conn> {
    let conn = socket.extensions.get::<Conn>()?;
    if !conn.connected.is_cancelled() {
        tokio::select! {
            () = conn.connected.cancelled() => {}
            () = conn.gone.cancelled() => return None,
            // Never marked connected: socketioxide gave up on the socket.
            () = tokio::time::sleep(CONNECTED_WAIT) => return None,
        }
    }
    Some(conn)
}

/// Longest wait for a socket's connect to be marked done (it is a few
/// instructions after the answer is queued, unless the thread was preempted).
const CONNECTED_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Tells the client what went wrong; the socket stays.
fn refuse(socket: &SocketRef, error: &Error, chat_id: Option<&Value>) {
    let mut data = json!({"message": error.client_message(), "code": error.code()});
    if let Some(chat_id) = chat_id {
        data["chat_id"] = chat_id.clone();
    }
    if let Some(ms) = error.retry_after_ms() {
        data["retry_after_ms"] = json!(ms);
    }
    let _ = socket.emit("error", &data);
}

/// An id sent as a number or a string, as text.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The socket's part of rill and the project `data.project_id` names (as
/// sent, and its room); `None` after telling the client what is missing.
async fn project_request(
    socket: &SocketRef,
    data: Option<Value>,
    event: &str,
) -> Option<(Conn, Value, String)> {
    let conn = conn(socket).await?;
    let sent = data.map(|d| d["project_id"].clone()).unwrap_or_default();
    let Some(project_id) = id_text(&sent) else {
        let error = Error::InvalidMessage(format!("{event} needs project_id"));
        refuse(socket, &error, None);
        return None;
    };
    Some((conn, sent, format!("{PROJECT_PREFIX}{project_id}")))
}

async fn join_project(socket: SocketRef, TryData(data): TryData<Value>) {
    let Some((conn, project_id, room)) = project_request(&socket, data.ok(), "join_project").await
    else {
        return;
    };
    let mut session = conn.session.lock().await;
    if let Err(refusal) = session.handle(Command::Join { room: room.clone() }).await {
        refuse(&socket, &refusal.error, None);
        return;
    }
    // One project room at a time: joining another leaves the previous.
    let mut current = conn.project.lock().await;
    if let Some(previous) = current.replace(room.clone())
        && previous != room
    {
        let _ = session.handle(Command::Leave { room: previous }).await;
    }
    if let Some(inbox) = session.take_room_inbox() {
        tokio::spawn(forward_room_events(socket.clone(), conn.clone(), inbox));
    }
    let _ = socket.emit("project_joined", &json!({"project_id": project_id}));
}

async fn leave_project(socket: SocketRef, TryData(data): TryData<Value>) {
    let Some((conn, project_id, room)) = project_request(&socket, data.ok(), "leave_project").await
    else {
        return;
    };
    let mut session = conn.session.lock().await;
    let _ = session.handle(Command::Leave { room: room.clone() }).await;
    let mut current = conn.project.lock().await;
    if current.as_deref() == Some(room.as_str()) {
        *current = None;
    }
    let _ = socket.emit("project_left", &json!({"project_id": project_id}));
}

/// `send_message`'s data (unknown fields ignored).
#[derive(Debug, Deserialize)]
struct SendMessage {
    chat_id: Option<Value>,
    message: Option<Value>,
    model: Option<String>,
    temperature: Option<f64>,
    include_history: Option<bool>,
    persona_id: Option<String>,
    max_tokens: Option<u32>,
    project_id: Option<Value>,
}

async fn send_message(socket: SocketRef, TryData(data): TryData<Value>) {
    let Some(conn) = conn(&socket).await else {
        return;
    };
    let data = data.unwrap_or(Value::Null);
    let chat_id = data.get("chat_id").cloned().filter(|v| !v.is_null());
    let parsed: Result<SendMessage, _> = serde_json::from_value(data);
    let request = match parsed {
        Ok(SendMessage {
            chat_id: Some(chat),
            message: Some(Value::String(message)),
            model,
            temperature,
            include_history,
            persona_id,
            max_tokens,
            project_id,
        }) => match id_text(&chat) {
            Some(id) => MessageRequest {
                message: Some(message),
                chat_id: Some(id),
                model,
                temperature,
                include_history,
                persona_id,
                max_tokens,
                // The project named, else the one the socket joined: its
                // documents answer (seed 004's retrieval).
                project_id: match project_id.as_ref().filter(|p| !p.is_null()) {
                    Some(sent) => id_text(sent),
                    None => conn
                        .project
                        .lock()
                        .await
                        .as_deref()
                        .and_then(crate::rooms::project_of)
                        .map(str::to_owned),
                },
                ..MessageRequest::default()
            },
            None => {
                let error = Error::InvalidMessage("chat_id must be a number or a string".into());
                refuse(&socket, &error, chat_id.as_ref());
                return;
            }
        },
        Ok(_) => {
            let error =
                Error::InvalidMessage("send_message needs chat_id and message (a string)".into());
            refuse(&socket, &error, chat_id.as_ref());
            return;
        }
        Err(e) => {
            let error = Error::InvalidMessage(format!("invalid send_message data: {e}"));
            refuse(&socket, &error, chat_id.as_ref());
            return;
        }
    };
    let chat_id = chat_id.unwrap_or(Value::Null);
    let outcome = conn
        .session
        .lock()
        .await
        .handle(Command::Message(request))
        .await;
    match outcome {
        Ok(Outcome::Started { streams, .. }) => {
            let _ = socket.emit("message_received", &json!({"chat_id": chat_id}));
            for following in streams {
                tokio::spawn(forward_reply(
                    socket.clone(),
                    conn.gone.clone(),
                    conn.write_deadline,
                    following,
                    chat_id.clone(),
                ));
            }
        }
        Ok(_) => {}
        Err(refusal) => refuse(&socket, &refusal.error, Some(&chat_id)),
    }
}

/// `resume_stream`'s data.
#[derive(Debug, Deserialize)]
struct ResumeStream {
    stream_id: String,
    #[serde(default)]
    after_seq: u64,
    #[serde(default)]
    chat_id: Value,
}

async fn resume_stream(socket: SocketRef, Data(data): Data<Value>) {
    let Some(conn) = conn(&socket).await else {
        return;
    };
    let ResumeStream {
        stream_id,
        after_seq,
        chat_id,
    } = match serde_json::from_value(data) {
        Ok(resume) => resume,
        Err(e) => {
            let error = Error::InvalidMessage(format!("resume_stream needs stream_id: {e}"));
            refuse(&socket, &error, None);
            return;
        }
    };
    let outcome = conn
        .session
        .lock()
        .await
        .handle(Command::Resume {
            stream_id,
            after_seq,
        })
        .await;
    match outcome {
        Ok(Outcome::Following(following)) => {
            tokio::spawn(forward_reply(
                socket,
                conn.gone.clone(),
                conn.write_deadline,
                following,
                chat_id,
            ));
        }
        Ok(_) => {}
        Err(refusal) => refuse(&socket, &refusal.error, Some(&chat_id)),
    }
}

/// A `message_token`'s data, borrowed (a `json!` value per token copied
/// every field): one token, or several joined (`first_seq`..=`seq`).
#[derive(serde::Serialize)]
struct TokenData<'a> {
    chat_id: &'a Value,
    token: &'a str,
    stream_id: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seq: Option<u64>,
}

/// Sends one reply's events as seed 004's `message_token` and
/// `message_complete` (an `error` if it failed) until it ends, the session
/// stops following it, or the socket goes (`gone`). Holds nothing else of
/// the socket's: its session and connection slot go when it does.
///
/// While it is behind (the last batch had to wait for room in the socket's
/// queue, or a read brings as many events as a read gives), the tokens read
/// together go out as one `message_token` (`first_seq`..=`seq`, their texts
/// joined), as on the WebSocket route: one event per token let a reply at
/// full speed outrun even a client that reads at once, until it fell behind
/// the replay window and was cut off. A reply that keeps up still goes one
/// token an event.
async fn forward_reply(
    socket: SocketRef,
    gone: CancellationToken,
    deadline: std::time::Duration,
    mut following: Following,
    chat_id: Value,
) {
    let mut batch = Vec::new();
    // Seed 004 announces the sources before the first token, empty when
    // nothing was retrieved; how many the reply had.
    let mut sources_sent: Option<usize> = None;
    // Whether a token went out already (the next lone one is paced).
    let mut wrote_a_token = false;
    // The last batch had to wait for room in the socket's queue.
    let mut behind = false;
    // Made once: a future made in each turn would join and leave the
    // token's list of waiters (under its lock) on every wake.
    let mut gone = std::pin::pin!(gone.cancelled_owned());
    loop {
        batch.clear();
        let read = tokio::select! {
            biased;
            () = &mut gone => return,
            read = following.subscription.next_into(&mut batch) => read,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                // Fell behind the replay window: said as on every route,
                // with the stream's id (the client can fetch the final text).
                let stream_id = following.subscription.stream_id().to_string();
                let data = json!({
                    "message": crate::dialect::native::FELL_BEHIND,
                    "code": Error::StreamNotFound.code(),
                    "chat_id": chat_id,
                    "stream_id": stream_id,
                });
                emit_waiting(&socket, deadline, "error", &data).await;
                return;
            }
        }
        if following.is_stopped() {
            return;
        }
        // A paced reply's next token, alone: emitted after the tasks the
        // runtime already has ready, as on the WebSocket route (see
        // `Connection::holds_a_paced_token`), so the tokens due on one timer
        // tick leave back to back. A reply's first token and a burst go at
        // once.
        let read = super::ws::Read {
            events: batch.len(),
            ended: false,
            next_token: wrote_a_token && batch.first().is_some_and(|event| event.is_token()),
        };
        if super::ws::is_a_paced_token([read]) {
            super::ws::after_the_ready_tasks().await;
        }
        // Behind: the last batch waited for room, or this one is as long as
        // a read gives (more are waiting in the log).
        let coalesce = std::mem::take(&mut behind) || batch.len() >= crate::hub::MAX_BATCH;
        let mut events = batch.iter().peekable();
        while let Some(event) = events.next() {
            let (stream_id, seq) = (event.stream_id.as_ref(), event.seq);
            let announce_none = match &event.event {
                StreamEvent::Token(_) | StreamEvent::Completed { .. } | StreamEvent::Failed(_) => {
                    sources_sent.is_none()
                }
                _ => false,
            };
            if announce_none {
                sources_sent = Some(0);
                let sources = json!({"chat_id": chat_id, "sources": [], "stream_id": stream_id});
                match emit_waiting(&socket, deadline, "message_sources", &sources).await {
                    Sent::Now => {}
                    Sent::AfterWaiting => behind = true,
                    Sent::Not => return,
                }
            }
            let sent = match &event.event {
                StreamEvent::Sources(sources) => {
                    sources_sent = Some(sources.len());
                    let data = json!({"chat_id": chat_id, "sources": sources, "stream_id": stream_id, "seq": seq});
                    emit_waiting(&socket, deadline, "message_sources", &data).await
                }
                StreamEvent::Token(token)
                    if coalesce && events.peek().is_some_and(|next| next.is_token()) =>
                {
                    wrote_a_token = true;
                    let (text, last) = crate::hub::Sequenced::join_tokens(token, seq, &mut events);
                    let data = TokenData {
                        chat_id: &chat_id,
                        token: &text,
                        stream_id,
                        seq: last,
                        first_seq: Some(seq),
                    };
                    emit_waiting(&socket, deadline, "message_token", &data).await
                }
                StreamEvent::Token(token) => {
                    wrote_a_token = true;
                    let data = TokenData {
                        chat_id: &chat_id,
                        token,
                        stream_id,
                        seq,
                        first_seq: None,
                    };
                    emit_waiting(&socket, deadline, "message_token", &data).await
                }
                StreamEvent::Completed {
                    response,
                    metadata,
                    message_id,
                    ..
                } => {
                    emit_waiting(
                        &socket,
                        deadline,
                        "message_complete",
                        &json!({
                            "chat_id": chat_id,
                            "metadata": {
                                "model": metadata.model,
                                "sources_count": sources_sent.unwrap_or(0),
                                "sources": metadata.sources,
                                "agent": metadata.agent,
                                "finish_reason": metadata.finish_reason,
                                "usage": metadata.usage,
                            },
                            "response": response,
                            "message_id": message_id,
                            "stream_id": stream_id,
                            "seq": seq,
                        }),
                    )
                    .await
                }
                StreamEvent::Failed(_) => {
                    let encoded = crate::dialect::Native::server_event(event);
                    let message = match &encoded {
                        rill_protocol::ServerEvent::Error { error, .. } => error.clone(),
                        _ => "The reply failed".to_owned(),
                    };
                    let data = json!({"message": message, "chat_id": chat_id, "stream_id": stream_id, "seq": seq});
                    emit_waiting(&socket, deadline, "error", &data).await
                }
                _ => Sent::Now,
            };
            match sent {
                Sent::Now => {}
                Sent::AfterWaiting => behind = true,
                Sent::Not => return,
            }
        }
    }
}

/// Emits `event`, waiting for room in the socket's queue: socketioxide
/// queues at most `max_buffer_size` packets a socket (128) and refuses the
/// next, and a reply at full speed outruns the socket's writer (a 5,000-token
/// reply stopped after about 2,000 tokens, the rest never sent). First the
/// socket's writer, a task of this runtime, gets a turn to drain the queue;
/// if that was not enough (the client is reading slowly), a millisecond at
/// a time. [`Sent::Not`] when the socket went, or its queue stayed full for
/// `deadline` (a client that stopped reading: it is then disconnected, and
/// can resume the reply on a new socket).
async fn emit_waiting<T: serde::Serialize + ?Sized>(
    socket: &SocketRef,
    deadline: std::time::Duration,
    event: &str,
    data: &T,
) -> Sent {
    let mut waited: Option<tokio::time::Instant> = None;
    loop {
        match socket.emit(event, data) {
            Ok(()) if waited.is_some() => return Sent::AfterWaiting,
            Ok(()) => return Sent::Now,
            Err(SendError::Socket(SocketError::InternalChannelFull)) => match waited {
                None => {
                    waited = Some(tokio::time::Instant::now());
                    tokio::task::yield_now().await;
                }
                Some(since) if since.elapsed() < deadline => {
                    tokio::time::sleep(FULL_QUEUE_RETRY).await;
                }
                Some(_) => {
                    tracing::debug!(sid = %socket.id, "socket.io: the client reads too slowly");
                    // Fails while the queue is full; Engine.IO's heartbeat,
                    // unanswered by a client that reads nothing, closes it then.
                    let _ = socket.clone().disconnect();
                    return Sent::Not;
                }
            },
            Err(_) => return Sent::Not,
        }
    }
}

/// Whether [`emit_waiting`] queued its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// At once.
    Now,
    /// After waiting for room: the client is behind.
    AfterWaiting,
    /// Not at all: the socket is gone (or was disconnected for reading too
    /// slowly).
    Not,
}

/// How long a reply waits before it tries a full socket queue again.
const FULL_QUEUE_RETRY: std::time::Duration = std::time::Duration::from_millis(1);

/// Sends a project room's events to the socket: each published event under
/// its own name (`document_status`, `project_update` …) with its data, and
/// `presence {room, status, user}`.
async fn forward_room_events(
    socket: SocketRef,
    conn: Conn,
    mut inbox: tokio::sync::mpsc::Receiver<Arc<crate::rooms::RoomEvent>>,
) {
    loop {
        let event = tokio::select! {
            () = conn.gone.cancelled() => return,
            event = inbox.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let dropped = conn.session.lock().await.take_dropped();
        if dropped > 0 {
            let _ = socket.emit("dropped", &json!({"count": dropped}));
        }
        let sent = match &event.kind {
            RoomEventKind::Event { event: name, data } => socket.emit(name, data),
            RoomEventKind::Presence { joined, user } => socket.emit(
                "presence",
                &json!({"room": event.room.as_ref(), "status": if *joined { "joined" } else { "left" }, "user": user}),
            ),
        };
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;
    use axum::http::header::{AUTHORIZATION, HOST};
    use bytes::Bytes;

    /// A request as hyper and axum hand it over: its URI, its header values
    /// and axum's `OriginalUri` are slices of the connection's read buffer.
    fn request_in(buffer: &Bytes) -> Request {
        let slice = |from: usize, len: usize| buffer.slice(from..from + len);
        let uri = Uri::from_maybe_shared(slice(0, 37)).unwrap();
        let mut request = Request::new(axum::body::Body::empty());
        *request.uri_mut() = uri.clone();
        request.extensions_mut().insert(OriginalUri(uri));
        let headers = request.headers_mut();
        let mut auth = HeaderValue::from_maybe_shared(slice(38, 10)).unwrap();
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        let custom = HeaderName::from_static("x-forwarded-for");
        headers.append(
            &custom,
            HeaderValue::from_maybe_shared(slice(49, 5)).unwrap(),
        );
        headers.append(
            &custom,
            HeaderValue::from_maybe_shared(slice(55, 5)).unwrap(),
        );
        headers.insert(HOST, HeaderValue::from_maybe_shared(slice(61, 12)).unwrap());
        request
    }

    const HEAD: &[u8] =
        b"/socket.io/?EIO=4&transport=websocket Bearer abc x-a-1 x-a-2 chat.example";

    #[test]
    fn a_socket_io_request_keeps_nothing_of_the_read_buffer() {
        let buffer = Bytes::copy_from_slice(HEAD);
        let request = request_in(&buffer);
        let text = |request: &Request| {
            let headers: Vec<_> = request
                .headers()
                .iter()
                .map(|(n, v)| format!("{n}: {v:?}"))
                .collect();
            (request.uri().to_string(), headers)
        };
        let before = text(&request);
        assert!(!buffer.is_unique());

        let request = own_request_head(request);

        // Nothing in the request shares the buffer any more ...
        assert!(buffer.is_unique());
        // ... and it says the same.
        assert_eq!(text(&request), before);
        assert_eq!(request.uri().query(), Some("EIO=4&transport=websocket"));
        let forwarded: Vec<_> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .collect();
        assert_eq!(forwarded, ["x-a-1", "x-a-2"]);
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
        assert!(!request.headers()[HOST].is_sensitive());
        let OriginalUri(original) = request.extensions().get::<OriginalUri>().unwrap();
        assert_eq!(original.to_string(), before.0);
    }

    #[test]
    fn other_requests_are_left_as_they_are() {
        let buffer = Bytes::copy_from_slice(HEAD);
        let mut other = Request::new(axum::body::Body::empty());
        *other.uri_mut() = Uri::from_maybe_shared(buffer.slice(0..7)).unwrap();
        assert_eq!(other.uri().path(), "/socket");

        let other = own_request_head(other);

        assert!(
            !buffer.is_unique(),
            "a request outside /socket.io was copied"
        );
        drop(other);
        assert!(buffer.is_unique());
    }
}
