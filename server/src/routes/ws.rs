//! WebSocket transport: `GET /ws/chat` upgrades to the native dialect. The
//! connection loop ([`run`]) works for any [`Dialect`]: it decodes text frames
//! into commands for its [`Session`], encodes replies, and forwards followed
//! streams.
//!
//! Shape: a writer task owns the socket's sink and drains a bounded queue; the
//! reader loop decodes frames and hands them to the session; one forwarder task
//! per followed stream copies that stream's frames into the queue. When the
//! reader ends, the session ends, which stops the forwarders — the streams
//! themselves keep running in the hub.

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rill_protocol::close;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::dialect::{Dialect, Native};
use crate::error::Error;
use crate::events::StreamEvent;
use crate::hub::Sequenced;
use crate::session::{CloseReason, Following, Outcome, Reply, Session};
use crate::state::AppState;

/// WebSocket read buffer, allocated whole for every connection: chat frames
/// are small, and a larger frame makes the buffer grow to its length for that
/// read. 1 KiB instead of 8 saved 7 KiB per idle connection (BENCHMARKS.md).
const READ_BUFFER: usize = 1024;
/// Bytes buffered before a write is flushed.
const WRITE_BUFFER: usize = 8 * 1024;
/// Hard cap on unflushed output per connection; a peer that does not read is
/// disconnected past it.
const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;

/// Frames waiting to be written to one socket. Bounded: a slow reader makes its
/// forwarders wait (they read a larger batch from the stream afterwards); it
/// never slows the stream or other connections.
const OUTBOUND_QUEUE: usize = 64;

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/ws/chat", get(upgrade))
}

/// Query parameters of `/ws/chat`.
#[derive(Debug, Default, Deserialize)]
struct WsQuery {
    /// A JWT, instead of an `auth` frame.
    token: Option<String>,
    /// `1`/`true`: token events carry `partial_response`.
    partial: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Error> {
    // A bad token is refused before the upgrade (401 AUTH_FAILED), so a client
    // never believes it is authenticated when it is not.
    let identity = super::caller_identity(&state, &headers, query.token.as_deref())?;
    let partial = matches!(query.partial.as_deref(), Some("1" | "true" | "yes"));
    let hard_limit = state.config.ws_hard_limit();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| {
            let session = Session::new(&state, identity);
            run(socket, state, session, Native, partial)
        }))
}

/// The close frame for each way a connection ends: the one place that picks
/// WebSocket close codes.
fn close_frame(reason: CloseReason) -> Option<Message> {
    let (code, text) = match reason {
        CloseReason::ClientGone => return None,
        CloseReason::HeartbeatTimeout => (close::GOING_AWAY, "heartbeat timeout"),
        CloseReason::Restarting => (close::RESTARTING, "server restarting"),
        CloseReason::FrameTooBig => (close::TOO_BIG, "message too big"),
    };
    Some(Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(text),
    })))
}

/// Why reading the socket failed, from the WebSocket library's error type (not
/// its text).
fn read_failure(error: axum::Error) -> CloseReason {
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(error) if matches!(*error, tungstenite::Error::Capacity(_)) => CloseReason::FrameTooBig,
        _ => CloseReason::ClientGone,
    }
}

/// A frame for the socket. Dialects produce UTF-8 (checked, not trusted).
fn text_message(frame: Bytes) -> Option<Message> {
    match Utf8Bytes::try_from(frame) {
        Ok(text) => Some(Message::Text(text)),
        Err(error) => {
            tracing::error!(%error, "a dialect produced a frame that is not UTF-8");
            None
        }
    }
}

/// The connection is gone: stop reading.
struct Closed;

/// One connection's reader side.
struct Connection<D> {
    /// What the client may do and what it follows.
    session: Session,
    /// How its frames are read and written.
    dialect: D,
    /// Frames to write.
    outbound: mpsc::Sender<Message>,
    /// Whether token frames carry the reply so far (`?partial=1`).
    partial: bool,
    /// The server, for the text before a resumed stream's cursor (`partial`).
    state: AppState,
}

/// Serves one upgraded WebSocket in `dialect` until either side closes or the
/// server shuts down.
pub(crate) async fn run<D: Dialect + Clone>(
    socket: WebSocket,
    state: AppState,
    session: Session,
    dialect: D,
    partial: bool,
) {
    let _counted = state.connections.open();
    let (mut sink, mut source) = socket.split();
    let (outbound, mut queue) = mpsc::channel::<Message>(OUTBOUND_QUEUE);
    let writer_stop = tokio_util::sync::CancellationToken::new();

    let writer_cancel = writer_stop.clone();
    let mut writer = tokio::spawn(async move {
        'writing: loop {
            let message = tokio::select! {
                message = queue.recv() => message,
                () = writer_cancel.cancelled() => None,
            };
            let Some(mut message) = message else { break };
            // Everything already queued goes out in one write: feed it all,
            // then flush once. A lone frame is flushed at once (no waiting
            // for company).
            for _ in 0..OUTBOUND_QUEUE {
                let closing = matches!(message, Message::Close(_));
                if sink.feed(message).await.is_err() || closing {
                    let _ = sink.flush().await;
                    break 'writing;
                }
                match queue.try_recv() {
                    Ok(next) => message = next,
                    Err(_) => break,
                }
            }
            if sink.flush().await.is_err() {
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

    tracing::debug!(connection_id = %session.connection_id(), "websocket connected");
    let mut connection = Connection {
        session,
        dialect,
        outbound: outbound.clone(),
        partial,
        state: state.clone(),
    };

    let mut writer_done = false;
    // Any inbound frame (a pong included) proves the client alive; silence past a
    // due ping plus the timeout means it is gone (a dead Wi-Fi sends no FIN).
    let interval = state.config.heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = tokio::time::Instant::now();
    let reason = loop {
        let frame = tokio::select! {
            frame = source.next() => frame,
            _ = heartbeat.tick() => {
                if last_seen.elapsed() >= interval + state.config.heartbeat_timeout {
                    break CloseReason::HeartbeatTimeout;
                }
                // A full queue means the client is not reading: no point adding to it.
                let _ = outbound.try_send(Message::Ping(Bytes::new()));
                continue;
            }
            () = state.shutdown.cancelled() => break CloseReason::Restarting,
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break CloseReason::ClientGone;
            }
        };
        if let Some(Ok(_)) = frame {
            last_seen = tokio::time::Instant::now();
        }
        let handled = match frame {
            Some(Ok(Message::Text(text))) => connection.on_text(text.as_str()).await,
            Some(Ok(Message::Binary(_))) => {
                let refused = connection.dialect.decode_binary();
                connection.on_decoded(refused).await
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
            Some(Ok(Message::Close(_))) | None => break CloseReason::ClientGone,
            Some(Err(error)) => break read_failure(error),
        };
        if handled.is_err() {
            break CloseReason::ClientGone;
        }
    };
    tracing::debug!(connection_id = %connection.session.connection_id(), ?reason, "websocket closing");
    if let Some(close) = close_frame(reason) {
        let _ = outbound.try_send(close);
    }
    // Ending the session stops its forwarders; then the writer sends what is
    // queued up to the close frame.
    drop(connection);
    writer_stop.cancel();
    drop(outbound);
    if !writer_done {
        let _ = writer.await;
    }
}

impl<D: Dialect + Clone> Connection<D> {
    async fn send(&self, frame: Bytes) -> Result<(), Closed> {
        match text_message(frame) {
            Some(message) => self.outbound.send(message).await.map_err(|_| Closed),
            None => Ok(()),
        }
    }

    async fn reply(&self, reply: Reply) -> Result<(), Closed> {
        self.send(self.dialect.encode_reply(&reply)).await
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Closed> {
        let limit = self.state.config.max_frame_bytes;
        if text.len() > limit {
            return self
                .reply(Reply::Refused(Error::MessageTooLarge { limit }.into()))
                .await;
        }
        let command = self.dialect.decode(text);
        self.on_decoded(command).await
    }

    async fn on_decoded(
        &mut self,
        command: Result<crate::session::Command, Error>,
    ) -> Result<(), Closed> {
        let command = match command {
            Ok(command) => command,
            Err(error) => return self.reply(Reply::Refused(error.into())).await,
        };
        match self.session.handle(command).await {
            Ok(Outcome::Reply(reply)) => self.reply(reply).await,
            Ok(Outcome::Started { streams, .. }) => {
                for following in streams {
                    self.forward(following);
                }
                Ok(())
            }
            Ok(Outcome::Following(following)) => {
                self.forward(following);
                Ok(())
            }
            Ok(Outcome::Done) => Ok(()),
            Err(refusal) => self.reply(Reply::Refused(refusal)).await,
        }
    }

    /// Spawns the forwarder of a followed stream.
    fn forward(&self, following: Following) {
        let so_far = self.partial.then(|| {
            // If the start of the reply is no longer kept, the partial text cannot
            // be rebuilt; the events still are exact (partial_response is best effort).
            let subscription = &following.subscription;
            self.state
                .engine
                .reply_text_until(subscription.stream_id(), subscription.cursor())
        });
        tokio::spawn(forward(
            following,
            self.outbound.clone(),
            self.dialect.clone(),
            so_far,
        ));
    }
}

/// Copies a stream's frames into a connection's queue until the terminal event
/// (or until the session stops following it).
async fn forward<D: Dialect>(
    mut following: Following,
    outbound: mpsc::Sender<Message>,
    dialect: D,
    mut so_far: Option<String>,
) {
    // Reused for every batch: no allocation per event.
    let mut batch: Vec<Arc<Sequenced>> = Vec::new();
    loop {
        batch.clear();
        let read = tokio::select! {
            read = following.subscription.next_into(&mut batch) => read,
            () = following.stop.cancelled() => return,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return,
            Err(expired) => {
                // This reader fell behind the replay window: say so rather than
                // continue with a gap. The client can fetch the final text later.
                let stream_id = following.subscription.stream_id().clone();
                tracing::debug!(%stream_id, %expired, "reader fell behind the stream");
                if let Some(message) =
                    text_message(dialect.encode_reply(&Reply::FellBehind { stream_id }))
                {
                    let _ = outbound.send(message).await;
                }
                return;
            }
        }
        for event in &batch {
            let frame = match (&mut so_far, &event.event) {
                (Some(so_far), StreamEvent::Token(token)) => {
                    so_far.push_str(token);
                    dialect
                        .token_with_partial(event, so_far)
                        .unwrap_or_else(|| dialect.encoded(event))
                }
                _ => dialect.encoded(event),
            };
            let Some(message) = text_message(frame) else {
                continue;
            };
            if outbound.send(message).await.is_err() {
                return;
            }
        }
    }
}
