//! One WebSocket connection speaking the native dialect: authentication state,
//! limits, dispatch of client frames, and forwarding of the streams it follows.
//!
//! Shape: a writer task owns the socket's sink and drains a bounded queue; the
//! reader loop decodes frames and dispatches them; one forwarder task per followed
//! stream copies that stream's events into the queue. When the reader ends, the
//! connection's token stops the writer and the forwarders — the streams themselves
//! keep running in the hub.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use rill_protocol::{
    ClientFrame, ErrorCode, Limits, PROTOCOL_VERSION, ServerEvent, close, parse_client_frame,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::auth::Identity;
use crate::error::Error;
use crate::hub::{AttachError, Subscription};
use rill_protocol::AuthUser;

/// Frames waiting to be written to one socket. Bounded: a slow reader makes its
/// forwarders wait (they read a larger batch from the stream's log afterwards);
/// it never slows the stream or other connections.
const OUTBOUND_QUEUE: usize = 64;

/// Most streams one connection may follow at once (its own and resumed ones).
const MAX_FOLLOWED: usize = 64;

/// How a connection was opened.
pub struct SessionParams {
    /// The identity from `?token=` or `Authorization`, if one was verified.
    pub identity: Identity,
    /// Whether `token` events carry `partial_response` (`?partial=1`).
    pub partial: bool,
}

/// Keeps the server's connection count true however the session ends.
struct ConnectionGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A followed stream's forwarder.
struct Follower {
    /// Stops the forwarder (replaced by a resume, or the connection ends).
    stop: CancellationToken,
    /// Finished once the stream's terminal event was forwarded.
    task: JoinHandle<()>,
}

/// The per-connection state the reader loop mutates.
struct Session {
    state: AppState,
    connection_id: String,
    identity: Identity,
    partial: bool,
    outbound: mpsc::Sender<Message>,
    /// Cancelled when the connection ends; parent of every forwarder's token.
    cancel: CancellationToken,
    followed: HashMap<String, Follower>,
}

/// Serves one upgraded WebSocket until either side closes or the server shuts down.
pub async fn run(socket: WebSocket, state: AppState, params: SessionParams) {
    state.connections.fetch_add(1, Ordering::Relaxed);
    let _guard = ConnectionGuard(state.connections.clone());
    let connection_id = uuid::Uuid::new_v4().simple().to_string();
    let (mut sink, mut source) = socket.split();
    let (outbound, mut queue) = mpsc::channel::<Message>(OUTBOUND_QUEUE);
    // Not a child of the server's shutdown token: on shutdown the reader first
    // queues the 1012 close frame, then cancels this, so the writer sends it.
    let cancel = CancellationToken::new();

    let writer_cancel = cancel.clone();
    let mut writer = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = queue.recv() => message,
                () = writer_cancel.cancelled() => None,
            };
            let Some(message) = message else { break };
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        // Drain a close frame queued just before cancellation.
        while let Ok(message) = queue.try_recv() {
            if matches!(message, Message::Close(_)) {
                let _ = sink.send(message).await;
                break;
            }
        }
        let _ = sink.close().await;
    });

    let mut session = Session {
        state: state.clone(),
        connection_id,
        identity: params.identity,
        partial: params.partial,
        outbound: outbound.clone(),
        cancel: cancel.clone(),
        followed: HashMap::new(),
    };
    tracing::debug!(connection_id = %session.connection_id, "websocket connected");

    let mut writer_done = false;
    // Any inbound frame (a pong included) proves the client alive; silence past a
    // due ping plus the timeout means it is gone (a dead Wi-Fi sends no FIN).
    let interval = state.config.heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = tokio::time::Instant::now();
    loop {
        let frame = tokio::select! {
            frame = source.next() => frame,
            _ = heartbeat.tick() => {
                if last_seen.elapsed() >= interval + state.config.heartbeat_timeout {
                    tracing::debug!(connection_id = %session.connection_id, "heartbeat timeout");
                    let _ = outbound.try_send(close_message(close::GOING_AWAY, "heartbeat timeout"));
                    break;
                }
                // A full queue means the client is not reading: no point adding to it.
                let _ = outbound.try_send(Message::Ping(bytes::Bytes::new()));
                continue;
            }
            () = state.shutdown.cancelled() => {
                let _ = outbound.try_send(close_message(close::RESTARTING, "server restarting"));
                break;
            }
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break;
            }
        };
        if let Some(Ok(_)) = frame {
            last_seen = tokio::time::Instant::now();
        }
        match frame {
            Some(Ok(Message::Text(text))) => {
                if session.on_text(text).await.is_err() {
                    break;
                }
            }
            Some(Ok(Message::Binary(_))) => {
                let error =
                    Error::Unsupported("Binary frames are not supported: send JSON text frames");
                if session.send_error(&error).await.is_err() {
                    break;
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(error)) => {
                // Past the hard size cap tungstenite refuses the message: say why.
                let text = error.to_string();
                tracing::debug!(connection_id = %session.connection_id, %text, "websocket read failed");
                if text.contains("too long") || text.contains("too big") {
                    let _ = outbound.try_send(close_message(close::TOO_BIG, "message too big"));
                }
                break;
            }
        }
    }

    cancel.cancel();
    drop(session);
    drop(outbound);
    if !writer_done {
        let _ = writer.await;
    }
    tracing::debug!("websocket closed");
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// The connection is gone: stop reading.
struct Closed;

impl Session {
    async fn send(&self, event: &ServerEvent) -> Result<(), Closed> {
        self.outbound
            .send(Message::Text(event.to_json().into()))
            .await
            .map_err(|_| Closed)
    }

    async fn send_error(&self, error: &Error) -> Result<(), Closed> {
        self.send(&error.to_event()).await
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Result<(), Closed> {
        let limit = self.state.config.max_frame_bytes;
        if text.len() > limit {
            return self.send_error(&Error::MessageTooLarge { limit }).await;
        }
        match parse_client_frame(text.as_str()) {
            Ok(frame) => self.dispatch(frame).await,
            Err(error) => self.send_error(&Error::from(error)).await,
        }
    }

    async fn dispatch(&mut self, frame: ClientFrame) -> Result<(), Closed> {
        match frame {
            ClientFrame::Auth { token } => self.on_auth(&token).await,
            ClientFrame::Message(request) => {
                if self.state.config.auth_required && !self.identity.is_authenticated() {
                    return self.send_error(&Error::AuthRequired).await;
                }
                // Checked before anything starts, so a refused message costs nothing.
                let cap = self.state.config.max_streams_per_connection;
                if self.active_streams() + request.personas().len() > cap {
                    return self
                        .send_error(&Error::RateLimited(format!(
                            "Too many replies in progress on this connection (at most {cap}): wait for one to finish"
                        )))
                        .await;
                }
                match self.state.engine.start(&self.identity, request).await {
                    Ok(started) => {
                        for stream in started.streams {
                            // A fresh stream always attaches from the start.
                            if let Ok(subscription) = stream.attach(0) {
                                self.follow(subscription).await?;
                            }
                        }
                        Ok(())
                    }
                    Err(error) => self.send_error(&error).await,
                }
            }
            ClientFrame::Cancel { stream_id } => {
                match self.state.engine.stream_for(&self.identity, &stream_id) {
                    Ok(stream) => {
                        stream.cancel();
                        Ok(())
                    }
                    Err(error) => self.send_stream_error(&stream_id, &error).await,
                }
            }
            ClientFrame::Resume {
                stream_id,
                after_seq,
            } => {
                let attached = self
                    .state
                    .engine
                    .stream_for(&self.identity, &stream_id)
                    .and_then(|stream| {
                        stream
                            .attach(after_seq)
                            .map_err(|AttachError::Expired(_)| Error::StreamNotFound)
                    });
                match attached {
                    Ok(subscription) => self.follow(subscription).await,
                    Err(error) => self.send_stream_error(&stream_id, &error).await,
                }
            }
            ClientFrame::Ping { timestamp } => {
                self.send(&ServerEvent::Pong {
                    timestamp,
                    server_time: unix_now_millis(),
                })
                .await
            }
            ClientFrame::Hello { .. } => {
                let config = &self.state.config;
                self.send(&ServerEvent::Hello {
                    connection_id: self.connection_id.clone(),
                    protocol: PROTOCOL_VERSION,
                    server: crate::server_name(),
                    heartbeat_ms: millis(config.heartbeat),
                    auth_required: config.auth_required,
                    limits: Limits {
                        max_frame_bytes: config.max_frame_bytes,
                        max_personas: config.max_personas,
                    },
                })
                .await
            }
            ClientFrame::Join { .. }
            | ClientFrame::Leave { .. }
            | ClientFrame::Broadcast { .. } => {
                self.send_error(&Error::Unsupported(
                    "Rooms are not available on this server yet",
                ))
                .await
            }
        }
    }

    async fn on_auth(&mut self, token: &str) -> Result<(), Closed> {
        match self.state.keys.identity(token) {
            Ok(identity) => {
                let user = match &identity {
                    Identity::User(user) => user.clone(),
                    // A guest token names an anonymous identity, not a person.
                    _ => AuthUser {
                        id: identity.conversation_owner(),
                        email: None,
                        name: Some("Guest".into()),
                    },
                };
                self.identity = identity;
                self.send(&ServerEvent::AuthSuccess {
                    message: "Authentication successful".into(),
                    user,
                    connection_id: self.connection_id.clone(),
                    protocol: PROTOCOL_VERSION,
                    heartbeat_ms: millis(self.state.config.heartbeat),
                })
                .await
            }
            // A failed attempt leaves the connection as it was (usable, same identity).
            Err(error) => {
                self.send(&ServerEvent::AuthError {
                    message: error.to_string(),
                    code: ErrorCode::AuthFailed,
                })
                .await
            }
        }
    }

    /// Followed streams still generating (forwarders of finished ones end by themselves).
    fn active_streams(&mut self) -> usize {
        self.followed.retain(|_, f| !f.task.is_finished());
        self.followed.len()
    }

    /// An error about a stream this client named (no `seq`: it is not one of the
    /// stream's events).
    async fn send_stream_error(&self, stream_id: &str, error: &Error) -> Result<(), Closed> {
        self.send(&ServerEvent::Error {
            error: error.client_message(),
            code: error.code(),
            stream_id: Some(stream_id.chars().take(128).collect()),
            seq: None,
        })
        .await
    }

    /// Starts forwarding a stream to this connection, replacing an earlier
    /// forwarder of the same stream (a resume must not duplicate events).
    async fn follow(&mut self, subscription: Subscription) -> Result<(), Closed> {
        self.active_streams();
        let stream_id = subscription.stream().id().to_owned();
        if let Some(previous) = self.followed.remove(&stream_id) {
            previous.stop.cancel();
        }
        if self.followed.len() >= MAX_FOLLOWED {
            return self
                .send_error(&Error::RateLimited(format!(
                    "This connection already follows {MAX_FOLLOWED} streams: wait for one to finish"
                )))
                .await;
        }
        let stop = self.cancel.child_token();
        let task = tokio::spawn(forward(
            subscription,
            self.outbound.clone(),
            self.partial,
            stop.clone(),
        ));
        self.followed.insert(stream_id, Follower { stop, task });
        Ok(())
    }
}

/// Copies a stream's events into a connection's queue until the terminal event.
async fn forward(
    mut subscription: Subscription,
    outbound: mpsc::Sender<Message>,
    partial: bool,
    stop: CancellationToken,
) {
    // With `?partial=1` every token carries the reply so far; that needs the text
    // before the cursor too (a resume starts in the middle).
    let mut so_far = String::new();
    if partial {
        // If the start of the reply is no longer kept, the partial text cannot be
        // rebuilt; the events still are exact (partial_response is best effort).
        let before = subscription
            .stream()
            .events_after(
                0,
                usize::try_from(subscription.cursor()).unwrap_or(usize::MAX),
            )
            .map(|(events, _)| events)
            .unwrap_or_default();
        for published in before {
            if let Ok(ServerEvent::Token { token, .. }) =
                serde_json::from_str::<ServerEvent>(published.text.as_str())
            {
                so_far.push_str(&token);
            }
        }
    }
    loop {
        let batch = tokio::select! {
            batch = subscription.next_batch() => batch,
            () = stop.cancelled() => return,
        };
        let batch = match batch {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(expired) => {
                // This reader fell behind the replay window: say so rather than
                // continue with a gap. The client can fetch the final text later.
                let stream_id = subscription.stream().id().to_owned();
                tracing::debug!(%stream_id, %expired, "reader fell behind the replay log");
                let event = ServerEvent::Error {
                    error: "This connection fell too far behind the stream; its events are no longer available".into(),
                    code: ErrorCode::StreamNotFound,
                    stream_id: Some(stream_id),
                    seq: None,
                };
                let _ = outbound.send(Message::Text(event.to_json().into())).await;
                return;
            }
        };
        for published in batch {
            let text = if partial && published.kind == "token" {
                with_partial(&published.text, &mut so_far)
            } else {
                published.text
            };
            if outbound.send(Message::Text(text)).await.is_err() {
                return;
            }
        }
    }
}

/// Re-encodes a token event with `partial_response` (the opt-in, quadratic form).
fn with_partial(text: &Utf8Bytes, so_far: &mut String) -> Utf8Bytes {
    match serde_json::from_str::<ServerEvent>(text.as_str()) {
        Ok(ServerEvent::Token {
            stream_id,
            seq,
            token,
            ..
        }) => {
            so_far.push_str(&token);
            ServerEvent::Token {
                stream_id,
                seq,
                token,
                partial_response: Some(so_far.clone()),
            }
            .to_json()
            .into()
        }
        _ => text.clone(),
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}
