//! One client's session, whatever carries it (WebSocket, SSE, long-poll, REST)
//! and whatever dialect it speaks: its identity, its limits, the streams it
//! follows, ownership checks and the dispatch of [`Command`]s. Every policy
//! about what a client may do lives here, once.
//!
//! A transport decodes frames into commands (through its dialect), calls
//! [`Session::handle`], and turns the [`Outcome`] back into frames: a [`Reply`]
//! to encode, or [`Following`]s whose events it forwards however it forwards
//! (a WebSocket connection polls them in its own task, an SSE response merges
//! them).
//!
//! Policies that need more than the command (rates, per-IP caps) go into
//! [`Session::admit`], which sees every command before it runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use rill_protocol::{AuthUser, Limits, MessageRequest};
use tokio::sync::mpsc;

use crate::AppState;
use crate::auth::{Identity, TokenError, Verified, unix_now_secs};
use crate::error::Error;
use crate::hub::Subscription;
use crate::rooms::{Membership, RoomEvent, RoomEventKind};

/// Most streams one session may follow at once (its own and resumed ones).
const MAX_FOLLOWED: usize = 64;

/// What a client asks, in any dialect.
// A command lives for one dispatch and is never stored in bulk: boxing
// `Message` would cost an allocation per question to save stack bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Authenticate with a JWT.
    Auth {
        /// The token.
        token: String,
    },
    /// Ask a question: one stream per persona.
    Message(MessageRequest),
    /// A plain-text question (seed 000's raw chat): a `Message` with only
    /// its text, whose replies the transport encodes as raw-chat frames.
    RawQuestion(String),
    /// Say this text back (seed 000's echo socket).
    Echo(String),
    /// Stop a stream.
    Cancel {
        /// The stream.
        stream_id: String,
    },
    /// Follow a stream after a known position.
    Resume {
        /// The stream.
        stream_id: String,
        /// The last seq the client has.
        after_seq: u64,
    },
    /// Liveness check.
    Ping {
        /// The client's clock, echoed verbatim.
        timestamp: Option<serde_json::Number>,
    },
    /// What is this server?
    Hello,
    /// Join a room (reserved).
    Join {
        /// The room.
        room: String,
    },
    /// Leave a room (reserved).
    Leave {
        /// The room.
        room: String,
    },
    /// Send to a room (reserved).
    Broadcast {
        /// The room.
        room: String,
        /// The text.
        message: String,
    },
}

/// A session's answer that is not a stream event; each dialect encodes it.
#[derive(Debug)]
pub enum Reply {
    /// What this server is.
    Hello {
        /// The connection's id.
        connection_id: Arc<str>,
        /// `rill/<version>`.
        server: String,
        /// The server's ping interval.
        heartbeat_ms: u64,
        /// Whether questions need authentication.
        auth_required: bool,
        /// Sizes the server enforces.
        limits: Limits,
    },
    /// A token was accepted.
    Authenticated {
        /// Who it names.
        user: AuthUser,
        /// The connection's id.
        connection_id: Arc<str>,
        /// The server's ping interval.
        heartbeat_ms: u64,
    },
    /// A token was rejected; the session is as it was.
    AuthRejected(TokenError),
    /// A text said back (`Echo: …`).
    Echo(String),
    /// The connection joined a room.
    Joined {
        /// The room.
        room: String,
    },
    /// The connection left a room.
    Left {
        /// The room.
        room: String,
    },
    /// The connection lost room events (it read them too slowly).
    Dropped {
        /// How many.
        count: u64,
    },
    /// The answer to a ping.
    Pong {
        /// The client's clock, echoed.
        timestamp: Option<serde_json::Number>,
        /// The server's clock, milliseconds since the Unix epoch.
        server_time: u64,
    },
    /// A command was refused; the session stays usable.
    Refused(Refusal),
    /// A followed stream's events are no longer available to this reader (it
    /// fell behind the replay window).
    FellBehind {
        /// The stream.
        stream_id: Arc<str>,
    },
}

/// Why a command was refused, and the stream it named if any.
#[derive(Debug)]
pub struct Refusal {
    /// What went wrong (its code and text are the client's to see).
    pub error: Error,
    /// The stream the command named.
    pub stream_id: Option<String>,
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Refusal {
            error,
            stream_id: None,
        }
    }
}

impl Refusal {
    fn about(stream_id: String) -> impl FnOnce(Error) -> Refusal {
        move |error| Refusal {
            error,
            stream_id: Some(stream_id),
        }
    }
}

/// What a command produced.
#[derive(Debug)]
pub enum Outcome {
    /// Something to tell the client.
    Reply(Reply),
    /// A question was accepted: its conversation and one followed stream per persona.
    Started {
        /// The conversation.
        session_id: String,
        /// The streams, in the order of the personas.
        streams: Vec<Following>,
    },
    /// A stream is followed (resume).
    Following(Following),
    /// Done; nothing to say (cancel).
    Done,
}

/// A stream this session follows: read its events from `subscription` until
/// the terminal one, or until [`Following::is_stopped`] (a resume of the same
/// stream replaced it, or the session ended). Dropping it tells the session
/// the stream is no longer followed.
pub struct Following {
    /// The events.
    pub subscription: Subscription,
    /// Shared with the session's record of it.
    state: Arc<FollowState>,
}

impl Following {
    /// Whether this reader must stop (an atomic load: cheap enough to ask
    /// before every read). The session stops a reader only while handling a
    /// command or when it ends, so a transport asks after those.
    pub fn is_stopped(&self) -> bool {
        self.state.stopped.load(Ordering::Relaxed)
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.state.done.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Following {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Following")
            .field("stream_id", self.subscription.stream_id())
            .field("cursor", &self.subscription.cursor())
            .finish_non_exhaustive()
    }
}

/// A followed stream's state, shared by the session and the reader.
#[derive(Default)]
struct FollowState {
    /// Set by the session: the reader must stop.
    stopped: AtomicBool,
    /// Set by the reader when it is gone.
    done: AtomicBool,
}

impl FollowState {
    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// One client's session.
pub struct Session {
    /// The server's parts and configuration.
    state: AppState,
    /// This connection's id (for logs and support).
    connection_id: Arc<str>,
    /// Who the client is (changed by `auth`).
    identity: Identity,
    /// When its token expires (seconds since the Unix epoch), if it has one.
    expires_at: Option<u64>,
    /// The client's address, when known (per-IP rates).
    ip: Option<std::net::IpAddr>,
    /// The streams it follows.
    follows: Follows,
    /// The rooms it is in; created at the first `join` (most connections
    /// never join one).
    rooms: Option<Membership>,
    /// The inbox of their events, until a transport takes it to read
    /// elsewhere ([`Session::take_room_inbox`]).
    inbox: Option<mpsc::Receiver<Arc<RoomEvent>>>,
}

/// The streams a session follows (apart from the rest of the session, so
/// following can borrow it while the engine is borrowed too).
#[derive(Default)]
struct Follows {
    /// Streams followed now, by id.
    followed: HashMap<Arc<str>, Arc<FollowState>>,
}

impl Session {
    /// A new session for a client known as `identity`.
    pub fn new(state: &AppState, identity: impl Into<Verified>) -> Self {
        let Verified {
            identity,
            expires_at,
        } = identity.into();
        Session {
            state: state.clone(),
            connection_id: uuid::Uuid::new_v4().simple().to_string().into(),
            identity,
            expires_at,
            ip: None,
            follows: Follows::default(),
            rooms: None,
            inbox: None,
        }
    }

    /// The same session, for a client at `ip`.
    pub fn with_peer(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.ip = ip;
        self
    }

    /// Whether this session may do more than authenticate: always in anonymous
    /// mode; with `--auth-required`, once a user token was verified.
    pub fn is_authorized(&self) -> bool {
        !self.state.config.auth_required || self.identity.is_authenticated()
    }

    /// When the session's token stops being valid (its `exp` plus the allowed
    /// clock skew, seconds since the Unix epoch); `None` without a token. A
    /// connection ends then unless a fresh `auth` came first.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
            .map(|exp| exp.saturating_add(self.state.config.token_rules.leeway_secs))
    }

    /// This connection's id.
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// Who the client is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether the session is in a room (a listener, not idle).
    pub fn in_rooms(&self) -> bool {
        self.rooms.as_ref().is_some_and(|m| !m.rooms().is_empty())
    }

    /// The inbox of the rooms' events, for a transport that reads it in its
    /// own task (after the first `join`); [`Session::poll_room_event`] then
    /// never returns. Events lost to a full inbox are counted in
    /// [`Session::take_dropped`].
    pub fn take_room_inbox(&mut self) -> Option<mpsc::Receiver<Arc<RoomEvent>>> {
        self.inbox.take()
    }

    /// How many room events were lost since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.rooms.as_ref().map_or(0, Membership::take_dropped)
    }

    /// The next event of the rooms this session is in, and how many it lost
    /// before it (its inbox was full); never ready while it is in no room.
    /// In a room, Pending leaves `cx`'s waker with the inbox until the next
    /// event, so a caller need not poll again before that waker fires; in
    /// none, no waker is kept: poll again after a `join`.
    pub fn poll_room_event(&mut self, cx: &mut Context<'_>) -> Poll<(Arc<RoomEvent>, u64)> {
        let (Some(membership), Some(inbox)) = (&self.rooms, &mut self.inbox) else {
            return Poll::Pending;
        };
        match inbox.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready((event, membership.take_dropped())),
            // The membership holds the sender: the inbox cannot close first.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// Runs one command.
    pub async fn handle(&mut self, command: Command) -> Result<Outcome, Refusal> {
        let command = match command {
            Command::RawQuestion(text) => Command::Message(MessageRequest {
                message: Some(text),
                ..MessageRequest::default()
            }),
            other => other,
        };
        self.admit(&command)?;
        let engine = &self.state.engine;
        match command {
            Command::Auth { token } => Ok(Outcome::Reply(self.authenticate(&token))),
            Command::Message(request) => {
                let started = engine.start(&self.identity, request).await?;
                let mut streams = Vec::with_capacity(started.stream_ids.len());
                for stream_id in &started.stream_ids {
                    // A fresh stream always attaches from the start.
                    let subscription = engine.attach(&self.identity, stream_id, 0)?;
                    streams.push(self.follows.follow(subscription));
                }
                Ok(Outcome::Started {
                    session_id: started.session_id,
                    streams,
                })
            }
            Command::Cancel { stream_id } => {
                engine
                    .cancel(&self.identity, &stream_id)
                    .map_err(Refusal::about(stream_id))?;
                Ok(Outcome::Done)
            }
            Command::Resume {
                stream_id,
                after_seq,
            } => {
                let subscription = engine
                    .attach(&self.identity, &stream_id, after_seq)
                    .map_err(Refusal::about(stream_id.clone()))?;
                // Resuming a stream already followed replaces its reader: a
                // resume must not duplicate events.
                if let Some(previous) = self.follows.followed.remove(subscription.stream_id()) {
                    previous.stop();
                }
                if self.follows.active() >= MAX_FOLLOWED {
                    return Err(Error::RateLimited(format!(
                        "This connection already follows {MAX_FOLLOWED} streams: wait for one to finish"
                    ))
                    .into());
                }
                Ok(Outcome::Following(self.follows.follow(subscription)))
            }
            Command::Echo(text) => Ok(Outcome::Reply(Reply::Echo(text))),
            // Turned into a `Message` above.
            Command::RawQuestion(_) => {
                Err(Error::Internal("raw question not converted".into()).into())
            }
            Command::Ping { timestamp } => Ok(Outcome::Reply(Reply::Pong {
                timestamp,
                server_time: unix_now_millis(),
            })),
            Command::Hello => {
                let config = &self.state.config;
                Ok(Outcome::Reply(Reply::Hello {
                    connection_id: self.connection_id.clone(),
                    server: crate::server_name(),
                    heartbeat_ms: millis(config.heartbeat),
                    auth_required: config.auth_required,
                    limits: Limits {
                        max_frame_bytes: config.max_frame_bytes,
                        max_personas: config.max_personas,
                    },
                }))
            }
            Command::Join { room } => {
                crate::rooms::check_room_name(&room).map_err(Error::InvalidMessage)?;
                let Some(project) = crate::rooms::project_of(&room) else {
                    return Err(Error::InvalidMessage(format!(
                        "a room is a project's: {}<id>",
                        crate::rooms::PROJECT_PREFIX
                    ))
                    .into());
                };
                self.state
                    .conversations
                    .open_project(&self.identity, project)
                    .await?;
                if self.rooms.is_none() {
                    let (membership, inbox) =
                        self.state.rooms.member(&self.identity.conversation_owner());
                    self.rooms = Some(membership);
                    self.inbox = Some(inbox);
                }
                let Some(membership) = self.rooms.as_mut() else {
                    return Err(Error::Internal("no membership after creating it".into()).into());
                };
                membership
                    .join(&room)
                    .map_err(|e| Error::RateLimited(e.to_string()))?;
                Ok(Outcome::Reply(Reply::Joined { room }))
            }
            Command::Leave { room } => {
                if let Some(membership) = &mut self.rooms {
                    membership.leave(&room);
                }
                Ok(Outcome::Reply(Reply::Left { room }))
            }
            Command::Broadcast { room, message } => {
                let Some(membership) = &self.rooms else {
                    return Err(Error::Forbidden.into());
                };
                if !membership.is_in(&room) {
                    return Err(Error::Forbidden.into());
                }
                let from = membership.user().to_owned();
                self.state.rooms.publish(
                    &room,
                    RoomEventKind::Event {
                        event: "message".into(),
                        data: serde_json::json!({"text": message, "from": from}),
                    },
                );
                Ok(Outcome::Done)
            }
        }
    }

    /// Whether the session may run `command` now: the one place for policies
    /// about who may do what, and how much.
    fn admit(&mut self, command: &Command) -> Result<(), Refusal> {
        // Authenticating, saying hello and pinging need no token; everything
        // else needs a valid one when authentication is required.
        if !matches!(
            command,
            Command::Auth { .. } | Command::Hello | Command::Ping { .. } | Command::Echo(_)
        ) {
            if !self.is_authorized() {
                return Err(Error::AuthRequired.into());
            }
            if self.expires_at().is_some_and(|at| unix_now_secs() >= at) {
                return Err(Error::AuthFailed(TokenError::Expired).into());
            }
        }
        if let Command::Broadcast { message, .. } = command {
            // A room message is a question's worth: the same length and rates.
            let config = &self.state.config;
            let chars = message.chars().count();
            if chars > config.max_message_chars {
                return Err(Error::QuestionTooLong {
                    chars,
                    limit: config.max_message_chars,
                }
                .into());
            }
            self.state
                .limits
                .check_message(self.identity.owner(), self.ip)?;
        }
        if let Command::Message(request) = command {
            // Checked before anything starts, so a refused message costs nothing.
            let config = &self.state.config;
            let chars = request.message.as_deref().map_or(0, |m| m.chars().count());
            if chars > config.max_message_chars {
                return Err(Error::QuestionTooLong {
                    chars,
                    limit: config.max_message_chars,
                }
                .into());
            }
            let cap = config.max_streams_per_connection;
            if self.follows.active() + request.personas().len() > cap {
                return Err(Error::RateLimited(format!(
                    "Too many replies in progress on this connection (at most {cap}): wait for one to finish"
                ))
                .into());
            }
            // Last: only a question that would run counts against the rate.
            self.state
                .limits
                .check_message(self.identity.owner(), self.ip)?;
        }
        Ok(())
    }

    /// Verifies a token; a failed attempt leaves the session as it was.
    fn authenticate(&mut self, token: &str) -> Reply {
        match self.state.keys.verify_token(token) {
            Ok(Verified {
                identity,
                expires_at,
            }) => {
                let user = match &identity {
                    Identity::User(user) => user.clone(),
                    // A guest token names an anonymous identity, not a person.
                    _ => AuthUser {
                        id: identity.conversation_owner(),
                        email: None,
                        name: Some("Guest".into()),
                    },
                };
                // Rooms were joined as someone else: leave them.
                if identity.conversation_owner() != self.identity.conversation_owner() {
                    self.rooms = None;
                    self.inbox = None;
                }
                self.identity = identity;
                self.expires_at = expires_at;
                Reply::Authenticated {
                    user,
                    connection_id: self.connection_id.clone(),
                    heartbeat_ms: millis(self.state.config.heartbeat),
                }
            }
            Err(error) => Reply::AuthRejected(error),
        }
    }
}

impl Follows {
    /// Streams followed and not yet done.
    fn active(&mut self) -> usize {
        self.followed
            .retain(|_, followed| !followed.done.load(Ordering::Relaxed));
        self.followed.len()
    }

    fn follow(&mut self, subscription: Subscription) -> Following {
        let state = Arc::new(FollowState::default());
        self.followed
            .insert(subscription.stream_id().clone(), state.clone());
        Following {
            subscription,
            state,
        }
    }
}

impl Drop for Session {
    /// The session is over: its readers stop (the streams keep running).
    fn drop(&mut self) {
        for followed in self.follows.followed.values() {
            followed.stop();
        }
    }
}

/// Why a connection ends; each transport maps it to its own signal (a
/// WebSocket close code, the end of an SSE response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it, or its socket failed.
    ClientGone,
    /// The client was silent past the heartbeat timeout.
    HeartbeatTimeout,
    /// The server is shutting down: reconnect and resume.
    Restarting,
    /// A frame over the transport's hard size limit.
    FrameTooBig,
    /// Authentication is required and none came within `--auth-timeout-secs`.
    AuthTimeout,
    /// The session's token expired and no fresh `auth` came before.
    TokenExpired,
    /// Over a connection cap (in all, per address, per user).
    OverCapacity,
    /// A text frame that is not UTF-8.
    InvalidUtf8,
    /// The client took no bytes for the write deadline, or left more unsent
    /// output than the per-connection bound.
    TooSlow,
    /// Nothing but pings for `--connection-idle-secs`, with no reply running.
    Idle,
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
