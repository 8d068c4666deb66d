//! WebSocket transport: `GET /ws/chat` upgrades to the native dialect (and
//! seed 000's raw-text chat), `GET /ws` to seed 002's. The connection loop
//! ([`run`]) works for any [`Dialect`]: it decodes text frames into commands
//! for its [`Session`], encodes replies, and forwards followed streams. For a
//! question that named several personas it also sends the dialect's turn
//! frame once all of them ended.
//!
//! Shape: one task per connection, no channel. It waits on the socket, on every
//! stream it follows (a publish wakes it directly) and on its heartbeat; when
//! streams have events it encodes them all (each event once per dialect, shared
//! by every connection), feeds them to the socket and flushes once. When it
//! ends, the session ends — the streams themselves keep running in the hub.
//!
//! A client that takes no bytes for the heartbeat interval plus its timeout is
//! disconnected (it can reconnect and resume); until then its streams wait for
//! it in their replay logs, never slowing anyone else.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use rill_protocol::close;
use serde::Deserialize;

use crate::dialect::{Dialect, Native, Raw, Seed002, TurnRecorder, frames};
use crate::error::Error;
use crate::events::StreamEvent;
use crate::hub::Sequenced;
use crate::limits::Slot;
use crate::rooms::RoomEvent;
use crate::session::{CloseReason, Command, Following, Outcome, Reply, Session};
use crate::state::AppState;

use super::extract::Peer;

/// WebSocket read buffer, allocated whole for every connection: chat frames
/// are small, and a larger frame makes the buffer grow to its length for that
/// read. 1 KiB instead of 8 saved 7 KiB per idle connection (BENCHMARKS.md).
pub(super) const READ_BUFFER: usize = 1024;
/// Bytes buffered before a write is flushed.
const WRITE_BUFFER: usize = 8 * 1024;
/// Hard cap on output a connection's client has not taken yet (beyond what the
/// kernel holds). Writes wait once [`WRITE_BUFFER`] is queued, so in practice a
/// connection holds at most that plus one frame; the cap only stops a frame
/// larger than it (a `complete` carries the whole reply). A client that takes
/// nothing for the heartbeat interval plus its timeout is closed as too slow
/// (1013) and can resume. Documented in docs/protocol.md § Slow readers.
const MAX_WRITE_BUFFER: usize = 16 * 1024 * 1024;
/// How long the close frame may take to go out when a connection ends.
const CLOSE_DEADLINE: Duration = Duration::from_secs(1);
/// Writes of forwarded events before the connection's loop polls its other
/// sources again (see [`StreamsFirst`]).
const STREAMS_IN_A_ROW: u32 = 16;

/// Whether some of the connection's sources may be ready: the loop polls
/// a source only after its mark's waker fired. Each token of a paced stream
/// wakes the connection, and polls that find nothing are not free: a poll of
/// the socket cost about 870 instructions (tokio-tungstenite registers its
/// wakers and tries a read), 8 % of the server's work per token; the room's
/// inbox, the heartbeat, the auth deadline and the shutdown together about
/// 500 more (callgrind). So the socket is polled with a waker of its own, and
/// the other sources with another: only their own wakes (data, the peer
/// closing, a write the read needed, a spent budget; a room event, a timer,
/// the shutdown) mark them. Every source polled here keeps its waker
/// registered until it fires, whatever happens to the future that polled it.
#[derive(Debug)]
struct Mark {
    /// Set by the sources' wakes, after a source was ready (more may be), and
    /// by the loop when a command may have changed them; taken by the poll.
    ready: AtomicBool,
    /// The connection's task, woken with the mark.
    task: futures::task::AtomicWaker,
}

impl Mark {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            // Polled once at the start, so the sources register the mark's waker.
            ready: AtomicBool::new(true),
            task: futures::task::AtomicWaker::new(),
        })
    }

    /// `poll` with the mark's waker `own`, if the mark is set (see above).
    fn poll<T>(
        &self,
        own: &std::task::Waker,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // The task's waker first: a wake between the two lines still wakes it.
        self.task.register(cx.waker());
        if !self.ready.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        let polled = poll(&mut Context::from_waker(own));
        if polled.is_ready() {
            self.set();
        }
        polled
    }

    /// Has the next poll reach the sources (something besides their wakes
    /// may have changed them).
    fn set(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

impl std::task::Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set();
        self.task.wake();
    }
}

/// A source of the connection's loop besides its streams and its socket.
enum Other {
    /// An event of a room the session is in, and how many it lost before it.
    Room(Arc<RoomEvent>, u64),
    /// The heartbeat's tick.
    Heartbeat,
    /// The auth deadline passed.
    AuthDeadline,
    /// The server is shutting down.
    Shutdown,
}

/// Polls the loop's other sources in this order: the room, the heartbeat,
/// the auth deadline (if there is one), the shutdown.
fn poll_others(
    cx: &mut Context<'_>,
    session: &mut Session,
    heartbeat: &mut tokio::time::Interval,
    auth_timer: Option<std::pin::Pin<&mut tokio::time::Sleep>>,
    shutdown: std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFutureOwned>,
) -> Poll<Other> {
    if let Poll::Ready((event, dropped)) = session.poll_room_event(cx) {
        return Poll::Ready(Other::Room(event, dropped));
    }
    if heartbeat.poll_tick(cx).is_ready() {
        return Poll::Ready(Other::Heartbeat);
    }
    if let Some(timer) = auth_timer
        && timer.poll(cx).is_ready()
    {
        return Poll::Ready(Other::AuthDeadline);
    }
    if shutdown.poll(cx).is_ready() {
        return Poll::Ready(Other::Shutdown);
    }
    Poll::Pending
}

/// Whether the connection's loop may write its streams' events before
/// polling the socket, the room, the timers and the shutdown: a streaming
/// connection wakes mostly for its streams, and a select that polled every
/// source in random order on each wake cost a few percent of the server's
/// CPU per token. So the loop's select polls the streams first; after
/// [`STREAMS_IN_A_ROW`] writes in a row it polls them last once, so a reply
/// at full speed cannot starve the client's frames, the heartbeat or the
/// deadlines. Every round that reaches the other sources starts the count
/// again. (Atomics only because the connection's future must be `Send`:
/// one task uses them.)
#[derive(Debug, Default)]
struct StreamsFirst {
    /// Writes since the loop last polled every source.
    in_a_row: AtomicU32,
}

impl StreamsFirst {
    fn allowed(&self) -> bool {
        self.in_a_row.load(Relaxed) < STREAMS_IN_A_ROW
    }

    fn wrote(&self) {
        self.in_a_row.fetch_add(1, Relaxed);
    }

    fn polled_all(&self) {
        self.in_a_row.store(0, Relaxed);
    }

    /// The first branch of the loop's select, given what polling the
    /// streams found: ready when they have events and may go first. When
    /// they have events but may not, it notes them in `deferred` (the last
    /// branch, [`Self::deferred`], takes them) and the round goes on to the
    /// other sources.
    fn poll_first(&self, streams: Poll<()>, deferred: &AtomicBool) -> Poll<()> {
        match streams {
            Poll::Ready(()) if self.allowed() => return Poll::Ready(()),
            Poll::Ready(()) => deferred.store(true, Relaxed),
            Poll::Pending => {}
        }
        // The select polls every other source this round.
        self.polled_all();
        Poll::Pending
    }

    /// The last branch: the streams' events held back by [`Self::poll_first`].
    fn deferred(deferred: &AtomicBool) -> Poll<()> {
        if deferred.load(Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// How a raw-text question's replies are encoded (seed 000's frames).
static RAW: Raw = Raw;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/ws/chat", get(upgrade::<Native>))
        .route("/ws", get(upgrade::<Seed002>))
}

/// Query parameters of `/ws/chat`.
#[derive(Debug, Default, Deserialize)]
struct WsQuery {
    /// A JWT, instead of an `auth` frame.
    token: Option<String>,
    /// `1`/`true`: token events carry `partial_response`.
    partial: Option<String>,
}

async fn upgrade<D: Dialect + Clone + Default>(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    Peer(ip): Peer,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Error> {
    let identity = super::socket_caller(&state, &headers, query.token.as_deref())?;
    let partial = matches!(query.partial.as_deref(), Some("1" | "true" | "yes"));
    let hard_limit = state.config.ws_hard_limit();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| async move {
            // Over a cap, the client still gets a WebSocket: browsers cannot
            // read a refused upgrade's status, but they see a close code.
            let owner = identity.identity.owner();
            match state.limits.connect(ip, owner) {
                Ok(slot) => {
                    let session = Session::new(&state, identity).with_peer(ip);
                    // Not boxed: boxed, the copies of this large future as the
                    // upgrade's task is spawned were gone (1,500 instructions a
                    // connection), but an idle connection held 1.2 KiB more (the
                    // upgrade's state and the connection's, no longer sharing
                    // one allocation).
                    run(socket, state, session, D::default(), partial, slot).await;
                }
                Err(error) => refuse(socket, &D::default(), error).await,
            }
        }))
}

/// Tells a client why it cannot stay, then closes with 1013 (try again later).
pub(crate) async fn refuse<D: Dialect>(mut socket: WebSocket, dialect: &D, error: Error) {
    let frame = dialect.encode_reply(&Reply::Refused(error.into()));
    if let Some(message) = text_message(frame) {
        let _ = tokio::time::timeout(CLOSE_DEADLINE, socket.send(message)).await;
    }
    if let Some(close) = close_frame(CloseReason::OverCapacity) {
        let _ = tokio::time::timeout(CLOSE_DEADLINE, socket.send(close)).await;
    }
    let _ = tokio::time::timeout(CLOSE_DEADLINE, socket.close()).await;
}

/// The close frame for each way a connection ends: the one place that picks
/// WebSocket close codes.
fn close_frame(reason: CloseReason) -> Option<Message> {
    let (code, text) = match reason {
        CloseReason::ClientGone => return None,
        CloseReason::HeartbeatTimeout => (close::GOING_AWAY, "heartbeat timeout"),
        CloseReason::Restarting => (close::RESTARTING, "server restarting"),
        CloseReason::FrameTooBig => (close::TOO_BIG, "message too big"),
        CloseReason::AuthTimeout => (close::POLICY, "authentication timeout"),
        CloseReason::TokenExpired => (close::POLICY, "token expired"),
        CloseReason::OverCapacity => (close::TRY_AGAIN_LATER, "try again later"),
        CloseReason::InvalidUtf8 => (close::INVALID_PAYLOAD, "text frame is not UTF-8"),
        CloseReason::TooSlow => (close::TRY_AGAIN_LATER, "too slow: reconnect and resume"),
        CloseReason::Idle => (close::NORMAL, "idle timeout"),
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
        Ok(error) if matches!(*error, tungstenite::Error::Utf8(_)) => CloseReason::InvalidUtf8,
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

/// The connection is gone, or too slow to keep: stop, for this reason.
#[derive(Debug)]
struct Closed(CloseReason);

/// One connection: its session and the streams it forwards. The socket is kept
/// apart so the connection loop can wait on both at once.
struct Connection<D> {
    /// What the client may do and what it follows.
    session: Session,
    /// How its frames are read and written.
    dialect: D,
    /// Whether token frames carry the reply so far (`?partial=1`).
    partial: bool,
    /// The server, for the text before a resumed stream's cursor (`partial`).
    state: AppState,
    /// The streams whose events go to this socket.
    streams: Vec<Forwarded>,
    /// How long a write may wait for the client to take bytes.
    write_deadline: Duration,
    /// The last writes had to wait: the client is behind, so consecutive
    /// tokens of a stream go out as one frame until it catches up.
    behind: bool,
    /// Questions that named several personas and have streams still running
    /// (bounded by the session's cap on followed streams).
    turns: Vec<OpenTurn>,
    /// The id of the next such question.
    next_turn: u64,
}

/// A multi-persona question being answered.
struct OpenTurn {
    /// Its id on this connection.
    id: u64,
    /// Its streams' places and replies so far.
    recorder: TurnRecorder,
}

/// A stream's membership in a multi-persona question.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// The question ([`OpenTurn::id`]).
    turn: u64,
    /// The stream's position among the question's personas.
    index: usize,
}

/// A stream forwarded to this socket.
struct Forwarded {
    /// Its events, and the session's signal to stop.
    following: Following,
    /// Events read and not yet written (reused: no allocation per batch).
    batch: Vec<Arc<Sequenced>>,
    /// The reply so far, when token frames carry it.
    so_far: Option<String>,
    /// What the last read found beyond `batch`.
    end: Option<End>,
    /// Its encoding when not the connection's dialect (a raw question's).
    codec: Option<&'static dyn Dialect>,
    /// Its place in a multi-persona question, if it has one.
    member: Option<Member>,
    /// Whether a token of it was written (a later lone token is a paced
    /// reply's next one: [`Connection::holds_a_paced_token`]).
    wrote_a_token: bool,
}

/// How forwarding a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its terminal event was written, or the session stopped following it.
    Done,
    /// This reader fell behind the replay window.
    FellBehind,
}

/// Serves one upgraded WebSocket in `dialect` until either side closes or the
/// server shuts down.
pub(crate) async fn run<D: Dialect + Clone>(
    mut socket: WebSocket,
    state: AppState,
    session: Session,
    dialect: D,
    partial: bool,
    mut slot: Slot,
) {
    let _counted = state.connections.open();
    tracing::debug!(connection_id = %session.connection_id(), "websocket connected");
    let interval = state.config.heartbeat;
    let mut connection = Connection {
        session,
        dialect,
        partial,
        state: state.clone(),
        streams: Vec::new(),
        write_deadline: interval + state.config.heartbeat_timeout,
        behind: false,
        turns: Vec::new(),
        next_turn: 0,
    };
    // Any inbound frame (a pong included) proves the client alive; silence past a
    // due ping plus the timeout means it is gone (a dead Wi-Fi sends no FIN).
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = tokio::time::Instant::now();
    // The last command that was not a ping (`--connection-idle-secs`).
    let mut last_active = last_seen;
    // When the session must end for want of a (valid) token, and why.
    let connected = tokio::time::Instant::now();
    let mut auth_end = auth_deadline(&connection.session, connected, state.config.auth_timeout);
    let auth_timer = tokio::time::sleep_until(auth_end.map_or(connected, |(at, _)| at));
    let mut auth_timer = std::pin::pin!(auth_timer);
    // Made once: a future made in each turn of the loop would join and
    // leave the token's list of waiters (under its lock) on every wake.
    let shutdown = state.shutdown.clone().cancelled_owned();
    let mut shutdown = std::pin::pin!(shutdown);
    let streams_first = StreamsFirst::default();
    let socket_mark = Mark::new();
    let socket_waker = std::task::Waker::from(socket_mark.clone());
    let others_mark = Mark::new();
    let others_waker = std::task::Waker::from(others_mark.clone());
    let reason = loop {
        let deferred = AtomicBool::new(false);
        let frame = tokio::select! {
            // In this order: the streams first (see `StreamsFirst`).
            biased;
            () = std::future::poll_fn(|cx| {
                streams_first.poll_first(poll_streams(&mut connection.streams, cx), &deferred)
            }) => {
                streams_first.wrote();
                let paced = connection.holds_a_paced_token();
                match connection.write_streams(&mut socket, paced).await {
                    Ok(()) => continue,
                    Err(Closed(reason)) => break reason,
                }
            }
            frame = std::future::poll_fn(|cx| {
                socket_mark.poll(&socket_waker, cx, |cx| socket.poll_next_unpin(cx))
            }) => frame,
            other = std::future::poll_fn(|cx| {
                others_mark.poll(&others_waker, cx, |cx| {
                    let auth_timer = auth_end.is_some().then_some(auth_timer.as_mut());
                    poll_others(cx, &mut connection.session, &mut heartbeat, auth_timer, shutdown.as_mut())
                })
            }) => match other {
                Other::Room(event, dropped) => {
                    match connection.write_room_event(&mut socket, &event, dropped).await {
                        Ok(()) => continue,
                        Err(Closed(reason)) => break reason,
                    }
                }
                Other::Heartbeat => {
                    if last_seen.elapsed() >= interval + state.config.heartbeat_timeout {
                        break CloseReason::HeartbeatTimeout;
                    }
                    let idle = state.config.connection_idle;
                    if !idle.is_zero()
                        && connection.streams.is_empty()
                        && !connection.session.in_rooms()
                        && last_active.elapsed() >= idle
                    {
                        break CloseReason::Idle;
                    }
                    match connection.write(&mut socket, Message::Ping(Bytes::new())).await {
                        Ok(()) => continue,
                        Err(Closed(reason)) => break reason,
                    }
                }
                Other::AuthDeadline => {
                    let Some((_, reason)) = auth_end else { continue };
                    // Say why before closing; a client that re-authenticated in the
                    // meantime moved the deadline (see below).
                    let error = match reason {
                        CloseReason::AuthTimeout => Error::AuthRequired,
                        _ => Error::AuthFailed(crate::auth::TokenError::Expired),
                    };
                    let _ = connection.reply(&mut socket, Reply::Refused(error.into())).await;
                    break reason;
                }
                Other::Shutdown => break CloseReason::Restarting,
            },
            () = std::future::poll_fn(|_| StreamsFirst::deferred(&deferred)) => {
                match connection.write_streams(&mut socket, false).await {
                    Ok(()) => continue,
                    Err(Closed(reason)) => break reason,
                }
            }
        };
        if let Some(Ok(_)) = frame {
            last_seen = tokio::time::Instant::now();
        }
        let command = match frame {
            Some(Ok(Message::Text(text))) => connection.decode(text.as_str()),
            Some(Ok(Message::Binary(_))) => connection.dialect.decode_binary(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break CloseReason::ClientGone,
            Some(Err(error)) => break read_failure(error),
        };
        if !matches!(command, Ok(Command::Ping { .. })) {
            last_active = tokio::time::Instant::now();
        }
        // Only `auth` changes who this is and until when.
        let authenticating = matches!(command, Ok(Command::Auth { .. }));
        // Boxed: the future of a command (a question waits for the store) is
        // large, and an idle connection should not carry its space.
        if let Err(Closed(reason)) = Box::pin(connection.on_command(&mut socket, command)).await {
            break reason;
        }
        // A command may have changed the other sources (a room joined: its
        // inbox has no waker yet; a new auth deadline, set below).
        others_mark.set();
        if !authenticating {
            continue;
        }
        // Whose connection cap this counts against, and when it must end.
        if let Err(error) = slot.change_user(connection.session.identity().owner()) {
            let _ = connection
                .reply(&mut socket, Reply::Refused(error.into()))
                .await;
            break CloseReason::OverCapacity;
        }
        auth_end = auth_deadline(&connection.session, connected, state.config.auth_timeout);
        if let Some((at, _)) = auth_end {
            auth_timer.as_mut().reset(at);
        }
    };
    tracing::debug!(connection_id = %connection.session.connection_id(), ?reason, "websocket closing");
    // Ending the session stops following its streams (they keep running).
    drop(connection);
    if let Some(close) = close_frame(reason) {
        let _ = tokio::time::timeout(CLOSE_DEADLINE, socket.send(close)).await;
    }
    let _ = tokio::time::timeout(CLOSE_DEADLINE, socket.close()).await;
}

/// When a connection must end for want of authentication, and why: with
/// `--auth-required`, `--auth-timeout-secs` after it opened unless it
/// authenticated; otherwise when its token expires, if it has one.
fn auth_deadline(
    session: &Session,
    connected: tokio::time::Instant,
    timeout: Duration,
) -> Option<(tokio::time::Instant, CloseReason)> {
    if !session.is_authorized() {
        return Some((connected + timeout, CloseReason::AuthTimeout));
    }
    let expires_at = session.expires_at()?;
    let left = expires_at.saturating_sub(crate::auth::unix_now_secs());
    // Far-off expiries are capped to what a timer holds comfortably.
    let left = Duration::from_secs(left.min(365 * 86_400));
    Some((
        tokio::time::Instant::now() + left,
        CloseReason::TokenExpired,
    ))
}

/// What one forwarded stream's read holds, for [`is_a_paced_token`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Read {
    /// Events read and not yet written.
    pub(super) events: usize,
    /// Whether the stream has ended.
    pub(super) ended: bool,
    /// Whether the first of them is a token following one already written.
    pub(super) next_token: bool,
}

/// Whether the streams' reads hold one event in all, no stream has ended,
/// and that event is a token after one already written: a paced reply's next
/// token ([`Connection::holds_a_paced_token`]).
pub(super) fn is_a_paced_token(reads: impl IntoIterator<Item = Read>) -> bool {
    let mut events = 0;
    let mut next_token = false;
    for read in reads {
        if read.ended {
            return false;
        }
        events += read.events;
        next_token |= read.events > 0 && read.next_token;
    }
    events == 1 && next_token
}

/// Returns once the tasks the runtime already had ready have run: no timer,
/// one round of the runtime (tokio wakes a yielded task after what was
/// ready, or after its periodic check of the I/O and timers).
pub(super) async fn after_the_ready_tasks() {
    tokio::task::yield_now().await;
}

/// Reads every forwarded stream that has something new (waking this task at
/// the next publish of the others); ready when at least one has events or has
/// ended.
fn poll_streams(streams: &mut [Forwarded], cx: &mut Context<'_>) -> Poll<()> {
    let mut ready = false;
    for stream in streams.iter_mut() {
        if stream.end.is_some() {
            ready = true;
            continue;
        }
        if stream.following.is_stopped() {
            stream.end = Some(End::Done);
            ready = true;
            continue;
        }
        match stream
            .following
            .subscription
            .poll_next_into(cx, &mut stream.batch)
        {
            Poll::Ready(Ok(true)) => ready = true,
            Poll::Ready(Ok(false)) => {
                stream.end = Some(End::Done);
                ready = true;
            }
            Poll::Ready(Err(_)) => {
                stream.end = Some(End::FellBehind);
                ready = true;
            }
            Poll::Pending => {}
        }
    }
    if ready {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

/// Runs a write, giving up if the client takes no bytes within `deadline`;
/// says whether it had to wait (the client is behind). The timer is only armed
/// when the write has to wait (almost never: the kernel's socket buffer
/// usually has room).
async fn within<F: Future<Output = Result<(), axum::Error>>>(
    deadline: Duration,
    write: F,
) -> Result<bool, Closed> {
    let mut write = std::pin::pin!(write);
    let (result, waited) = match write.as_mut().now_or_never() {
        Some(result) => (result, false),
        None => (
            tokio::time::timeout(deadline, write)
                .await
                .map_err(|_| Closed(CloseReason::TooSlow))?,
            true,
        ),
    };
    result.map_err(write_failure)?;
    Ok(waited)
}

/// Why a write failed: more unsent frames than the hard bound
/// ([`MAX_WRITE_BUFFER`]) means the client is too slow; anything else, gone.
fn write_failure(error: axum::Error) -> Closed {
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(error) if matches!(*error, tungstenite::Error::WriteBufferFull(_)) => {
            Closed(CloseReason::TooSlow)
        }
        _ => Closed(CloseReason::ClientGone),
    }
}

impl<D: Dialect + Clone> Connection<D> {
    /// Sends one frame now.
    async fn write(&self, socket: &mut WebSocket, message: Message) -> Result<(), Closed> {
        within(self.write_deadline, socket.send(message))
            .await
            .map(drop)
    }

    async fn reply(&self, socket: &mut WebSocket, reply: Reply) -> Result<(), Closed> {
        match text_message(self.dialect.encode_reply(&reply)) {
            Some(message) => self.write(socket, message).await,
            None => Ok(()),
        }
    }

    /// A room event, after telling how many were lost before it.
    async fn write_room_event(
        &self,
        socket: &mut WebSocket,
        event: &RoomEvent,
        dropped: u64,
    ) -> Result<(), Closed> {
        if dropped > 0 {
            self.reply(socket, Reply::Dropped { count: dropped })
                .await?;
        }
        match text_message(self.dialect.encoded_room_event(event)) {
            Some(message) => self.write(socket, message).await,
            None => Ok(()),
        }
    }

    /// A text frame as a command (or the error to answer it with).
    fn decode(&self, text: &str) -> Result<Command, Error> {
        let limit = self.state.config.max_frame_bytes;
        if text.len() > limit {
            return Err(Error::MessageTooLarge { limit });
        }
        crate::limits::check_depth(text.as_bytes(), self.state.config.max_json_depth)?;
        self.dialect.decode(text)
    }

    async fn on_command(
        &mut self,
        socket: &mut WebSocket,
        command: Result<Command, Error>,
    ) -> Result<(), Closed> {
        let command = match command {
            Ok(command) => command,
            Err(error) => return self.reply(socket, Reply::Refused(error.into())).await,
        };
        let codec: Option<&'static dyn Dialect> =
            matches!(command, Command::RawQuestion(_)).then_some(&RAW as &dyn Dialect);
        let several = matches!(&command, Command::Message(r) if r.persona_ids.is_some());
        match self.session.handle(command).await {
            Ok(Outcome::Reply(reply)) => self.reply(socket, reply).await,
            Ok(Outcome::Started {
                session_id,
                streams,
            }) => {
                let turn = several.then(|| {
                    let id = self.next_turn;
                    self.next_turn += 1;
                    self.turns.push(OpenTurn {
                        id,
                        recorder: TurnRecorder::new(session_id, streams.len()),
                    });
                    id
                });
                for (index, following) in streams.into_iter().enumerate() {
                    let member = turn.map(|turn| Member { turn, index });
                    self.forward(following, codec, member);
                }
                Ok(())
            }
            Ok(Outcome::Following(following)) => {
                // A resumed stream keeps its place in its question, if this
                // connection asked it.
                let stream_id = following.subscription.stream_id().clone();
                let previous = self
                    .streams
                    .iter_mut()
                    .find(|s| *s.following.subscription.stream_id() == stream_id);
                let (codec, member) = match previous {
                    Some(previous) => (previous.codec, previous.member.take()),
                    None => (None, None),
                };
                self.forward(following, codec, member);
                Ok(())
            }
            Ok(Outcome::Done) => Ok(()),
            Err(refusal) => self.reply(socket, Reply::Refused(refusal)).await,
        }
    }

    /// Starts forwarding a followed stream (the next loop turn reads it).
    fn forward(
        &mut self,
        following: Following,
        codec: Option<&'static dyn Dialect>,
        member: Option<Member>,
    ) {
        let so_far = self.partial.then(|| {
            // If the start of the reply is no longer kept, the partial text cannot
            // be rebuilt; the events still are exact (partial_response is best effort).
            let subscription = &following.subscription;
            self.state
                .engine
                .reply_text_until(subscription.stream_id(), subscription.cursor())
        });
        // A resume of a stream already forwarded replaced its reader: the
        // session has stopped the old one, which the next read drops.
        self.streams.push(Forwarded {
            following,
            batch: Vec::new(),
            so_far,
            end: None,
            codec,
            member,
            wrote_a_token: false,
        });
    }

    /// Whether the streams' events read for writing are one token after one
    /// already written, and no stream has ended: a paced reply's next token.
    /// Its frame is encoded at once, but sent after the tasks the runtime
    /// already has ready (`yield_now` before the flush: one round of the
    /// runtime, no timer, and nothing waits for more events). When many
    /// streams' tokens come due on the same timer tick, their frames are
    /// then encoded each right after its generation (the token still in
    /// the cache) and sent back to back at the end of the round, instead of
    /// one generation, one send, the next generation. Sends that close
    /// together find the reader on the other end still awake: each wake is
    /// paid inside the server's send. With 1,000 paced streams over
    /// loopback, the yield before the send (not before the encoding, as
    /// first) woke the load generator a third less often and lowered the
    /// first token p99 in every pair of runs (BENCHMARKS.md, What changed).
    /// A stream's first events (its start, its first token) and a burst of
    /// events (a reply at full speed, already many to a send) are sent at
    /// once: a question's first token never waits for a round.
    fn holds_a_paced_token(&self) -> bool {
        is_a_paced_token(self.streams.iter().map(|stream| Read {
            events: stream.batch.len(),
            ended: stream.end.is_some(),
            next_token: stream.wrote_a_token
                && stream.batch.first().is_some_and(|event| event.is_token()),
        }))
    }

    /// Writes every event read from the forwarded streams in one flush, then
    /// lets go of the streams that ended (and sends the turn frame of a
    /// multi-persona question whose last stream ended). A `paced` token's
    /// flush waits for the tasks already ready ([`Self::holds_a_paced_token`]).
    async fn write_streams(&mut self, socket: &mut WebSocket, paced: bool) -> Result<(), Closed> {
        let deadline = self.write_deadline;
        let coalesce = self.behind;
        let mut fed = false;
        let mut waited = false;
        for stream in &mut self.streams {
            let codec: &dyn Dialect = match stream.codec {
                Some(codec) => codec,
                None => &self.dialect,
            };
            // The stream's question, if it belongs to a multi-persona one.
            let mut turn = stream.member.and_then(|member| {
                self.turns
                    .iter_mut()
                    .find(|t| t.id == member.turn)
                    .map(|t| (&mut t.recorder, member.index))
            });
            // Looked for only until the first token: a reply at full speed
            // brings many events a write, and this is on every write.
            if !stream.wrote_a_token {
                stream.wrote_a_token = stream.batch.iter().any(|event| event.is_token());
            }
            let mut events = stream.batch.drain(..).peekable();
            while let Some(event) = events.next() {
                if let Some((recorder, index)) = turn.as_mut() {
                    recorder.observe(*index, &event);
                }
                let place = turn.as_ref().and_then(|(r, index)| r.place(*index));
                let frame = match (&mut stream.so_far, &event.event) {
                    // Behind: this token and the ones right after it, as one frame.
                    (so_far, StreamEvent::Token(token))
                        if coalesce && events.peek().is_some_and(|next| next.is_token()) =>
                    {
                        let (text, last) = Sequenced::join_tokens(token, event.seq, &mut events);
                        if let Some(so_far) = so_far.as_mut() {
                            so_far.push_str(&text);
                        }
                        let placed = place.and_then(|place| {
                            let joined = Sequenced::new(
                                event.stream_id.clone(),
                                last,
                                StreamEvent::Token(text.clone()),
                            );
                            codec.encode_placed(&joined, place)
                        });
                        placed.unwrap_or_else(|| {
                            codec.coalesced_tokens(
                                &event.stream_id,
                                event.seq..=last,
                                &text,
                                so_far.as_deref(),
                            )
                        })
                    }
                    (Some(so_far), StreamEvent::Token(token)) => {
                        so_far.push_str(token);
                        codec
                            .token_with_partial(&event, so_far)
                            .unwrap_or_else(|| codec.encoded(&event))
                    }
                    _ => place
                        .and_then(|place| codec.encode_placed(&event, place))
                        .unwrap_or_else(|| codec.encoded(&event)),
                };
                for frame in frames(frame) {
                    if let Some(message) = text_message(frame) {
                        waited |= within(deadline, socket.feed(message)).await?;
                        fed = true;
                    }
                }
            }
            drop(events);
            if stream.end == Some(End::FellBehind) {
                // This reader fell behind the replay window: say so rather than
                // continue with a gap. The client can fetch the final text later.
                let stream_id = stream.following.subscription.stream_id().clone();
                tracing::debug!(%stream_id, "reader fell behind the stream");
                if let Some((recorder, index)) = turn.as_mut() {
                    recorder.lost(*index, &stream_id);
                }
                let reply = codec.encode_reply(&Reply::FellBehind { stream_id });
                if let Some(message) = text_message(reply) {
                    waited |= within(deadline, socket.feed(message)).await?;
                    fed = true;
                }
            }
        }
        // Dropping a stream's `Following` tells the session it is no longer followed.
        self.streams.retain(|stream| stream.end.is_none());
        // Questions whose every stream ended: their turn frame, once.
        while let Some(at) = self
            .turns
            .iter()
            .position(|open| open.recorder.is_finished())
        {
            let turn = self.turns.swap_remove(at).recorder.into_turn();
            if let Some(frame) = self.dialect.encode_turn(&turn) {
                for frame in frames(frame) {
                    if let Some(message) = text_message(frame) {
                        waited |= within(deadline, socket.feed(message)).await?;
                        fed = true;
                    }
                }
            }
        }
        if fed {
            if paced {
                after_the_ready_tasks().await;
            }
            waited |= within(deadline, socket.flush()).await?;
        }
        // Caught up once a whole round went out without waiting.
        self.behind = waited;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_token_after_one_written_is_paced() {
        // Each stream's read as (events, ended, next token).
        let paced = |reads: &[(usize, bool, bool)]| {
            is_a_paced_token(reads.iter().map(|&(events, ended, next_token)| Read {
                events,
                ended,
                next_token,
            }))
        };
        assert!(paced(&[(1, false, true)]), "a paced reply's next token");
        assert!(
            paced(&[(0, false, false), (1, false, true)]),
            "beside an idle stream"
        );
        assert!(!paced(&[]), "nothing to write");
        assert!(
            !paced(&[(1, false, false)]),
            "a start, or a first token, goes at once"
        );
        assert!(
            !paced(&[(1, false, false), (0, false, true)]),
            "not the paced stream's"
        );
        assert!(!paced(&[(2, false, true)]), "a burst is written at once");
        assert!(
            !paced(&[(1, false, true), (1, false, true)]),
            "two streams' tokens"
        );
        assert!(
            !paced(&[(1, true, true)]),
            "an ended stream is let go at once"
        );
        assert!(
            !paced(&[(0, true, false), (1, false, true)]),
            "another stream ended"
        );
    }

    /// A paced token's send waits for the tasks already ready, on the
    /// runtime rill runs (multi-threaded; one worker, as when pinned to a
    /// core), so the sends of tokens due together go out back to back.
    #[test]
    fn a_paced_send_goes_after_the_tasks_already_ready() {
        for paced in [true, false] {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .unwrap();
            let order = Arc::new(std::sync::Mutex::new(Vec::new()));
            runtime.block_on(async {
                // The worker waits until every task below is queued, so they
                // are ready together, as tokens due on one tick are.
                let (go, gate) = std::sync::mpsc::channel::<()>();
                let held = tokio::spawn(async move { gate.recv().unwrap() });
                let writer = {
                    let order = order.clone();
                    tokio::spawn(async move {
                        if paced {
                            after_the_ready_tasks().await;
                        }
                        order.lock().unwrap().push("send");
                    })
                };
                let generations: Vec<_> = (0..3)
                    .map(|_| {
                        let order = order.clone();
                        tokio::spawn(async move { order.lock().unwrap().push("generation") })
                    })
                    .collect();
                go.send(()).unwrap();
                held.await.unwrap();
                writer.await.unwrap();
                for generation in generations {
                    generation.await.unwrap();
                }
            });
            let order = order.lock().unwrap().clone();
            let expected = if paced {
                ["generation", "generation", "generation", "send"]
            } else {
                ["send", "generation", "generation", "generation"]
            };
            assert_eq!(order, expected, "paced: {paced}");
        }
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(AtomicU32);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    /// A stream that counts its polls.
    struct Polls<S> {
        inner: S,
        polls: u32,
    }

    impl<S: futures::Stream + Unpin> futures::Stream for Polls<S> {
        type Item = S::Item;

        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<S::Item>> {
            self.polls += 1;
            self.inner.poll_next_unpin(cx)
        }
    }

    #[test]
    fn the_socket_is_polled_only_after_it_woke_or_gave_a_frame() {
        let (sender, receiver) = futures::channel::mpsc::unbounded::<u32>();
        let mut socket = Polls {
            inner: receiver,
            polls: 0,
        };
        let mark = Mark::new();
        let own = std::task::Waker::from(mark.clone());
        let task = Arc::new(Count::default());
        let task_waker = std::task::Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        // The first poll reaches the socket, which registers the mark's waker.
        assert!(
            mark.poll(&own, &mut cx, |cx| socket.poll_next_unpin(cx))
                .is_pending()
        );
        assert_eq!(socket.polls, 1);
        // Woken for something else (a token): the socket is not polled.
        for _ in 0..3 {
            assert!(
                mark.poll(&own, &mut cx, |cx| socket.poll_next_unpin(cx))
                    .is_pending()
            );
        }
        assert_eq!(socket.polls, 1);
        // Data wakes the task through the mark, and is read.
        sender.unbounded_send(7).unwrap();
        sender.unbounded_send(8).unwrap();
        assert_eq!(
            task.0.load(Relaxed),
            1,
            "the socket's wake reaches the task"
        );
        assert_eq!(
            mark.poll(&own, &mut cx, |cx| socket.poll_next_unpin(cx)),
            Poll::Ready(Some(7))
        );
        // After a frame the socket is polled again: more may be buffered.
        assert_eq!(
            mark.poll(&own, &mut cx, |cx| socket.poll_next_unpin(cx)),
            Poll::Ready(Some(8))
        );
        assert!(
            mark.poll(&own, &mut cx, |cx| socket.poll_next_unpin(cx))
                .is_pending()
        );
        let polls = socket.polls;
        assert!(
            mark.poll(&own, &mut cx, |cx| socket.poll_next_unpin(cx))
                .is_pending()
        );
        assert_eq!(socket.polls, polls, "nothing new: not polled");
        // The end of the socket is a wake too.
        drop(sender);
        assert_eq!(
            mark.poll(&own, &mut cx, |cx| socket.poll_next_unpin(cx)),
            Poll::Ready(None)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_other_sources_are_polled_after_their_own_wakes_or_a_command() {
        let mark = Mark::new();
        let own = std::task::Waker::from(mark.clone());
        let task = Arc::new(Count::default());
        let task_waker = std::task::Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
        let mut polls = 0;
        let mut poll = |mark: &Mark, cx: &mut Context<'_>| {
            mark.poll(&own, cx, |cx| {
                polls += 1;
                heartbeat.poll_tick(cx).map(drop)
            })
        };
        // An interval's first tick is at once; then it waits, holding the mark's waker.
        assert!(poll(&mark, &mut cx).is_ready());
        assert!(poll(&mark, &mut cx).is_pending());
        for _ in 0..3 {
            assert!(
                poll(&mark, &mut cx).is_pending(),
                "woken for something else"
            );
        }
        // A command may have changed them: polled once more.
        mark.set();
        assert!(poll(&mark, &mut cx).is_pending());
        assert!(poll(&mark, &mut cx).is_pending());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(task.0.load(Relaxed), 1, "the timer's wake reaches the task");
        assert!(poll(&mark, &mut cx).is_ready());
        drop(poll);
        assert_eq!(
            polls, 4,
            "polled at the start, after a tick, a command and the timer"
        );
    }

    #[test]
    fn the_streams_go_first_only_so_many_times_in_a_row() {
        let first = StreamsFirst::default();
        for _ in 0..STREAMS_IN_A_ROW {
            assert!(first.allowed());
            first.wrote();
        }
        assert!(!first.allowed(), "the other sources get their turn");
        first.polled_all();
        assert!(first.allowed());
    }

    #[test]
    fn streams_held_back_are_taken_last_and_start_the_count_again() {
        let first = StreamsFirst::default();
        let deferred = AtomicBool::new(false);
        assert!(first.poll_first(Poll::Ready(()), &deferred).is_ready());
        assert!(first.poll_first(Poll::Pending, &deferred).is_pending());
        assert!(
            StreamsFirst::deferred(&deferred).is_pending(),
            "nothing held back"
        );
        for _ in 0..STREAMS_IN_A_ROW {
            first.wrote();
        }
        // Ready, but not allowed: held back for the last branch, and the
        // round reaches every other source, so the count starts again.
        assert!(first.poll_first(Poll::Ready(()), &deferred).is_pending());
        assert!(StreamsFirst::deferred(&deferred).is_ready());
        assert!(first.allowed());
        // Not ready at all: every source is polled too.
        for _ in 0..STREAMS_IN_A_ROW {
            first.wrote();
        }
        let deferred = AtomicBool::new(false);
        assert!(first.poll_first(Poll::Pending, &deferred).is_pending());
        assert!(StreamsFirst::deferred(&deferred).is_pending());
        assert!(first.allowed());
    }
}
