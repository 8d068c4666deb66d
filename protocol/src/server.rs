//! Server → client events.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// One event the server sends, tagged by `"type"`.
///
/// Stream events (`start`, `progress`, `token`, `complete`, and `error` when it
/// belongs to a stream) carry `stream_id` and `seq`: 1, 2, 3 … per stream, no gaps.
/// A stream ends with exactly one terminal event: `complete` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// The answer to `hello`: what this server is and its limits.
    Hello {
        /// This connection's id (for logs and support).
        connection_id: String,
        /// The protocol version ([`crate::PROTOCOL_VERSION`]).
        protocol: u32,
        /// `rill/<version>`.
        server: String,
        /// How often the server pings; a client may treat twice this without traffic as dead.
        heartbeat_ms: u64,
        /// Whether `message` needs authentication.
        auth_required: bool,
        /// Sizes the server enforces.
        limits: Limits,
    },
    /// The answer to a good `auth` frame.
    AuthSuccess {
        /// Human text.
        message: String,
        /// Who the token names.
        user: AuthUser,
        /// This connection's id.
        connection_id: String,
        /// The protocol version.
        protocol: u32,
        /// The server's ping interval.
        heartbeat_ms: u64,
    },
    /// The answer to a rejected `auth` frame.
    AuthError {
        /// Human text.
        message: String,
        /// `AUTH_FAILED`.
        code: ErrorCode,
    },
    /// The answer to `ping`.
    Pong {
        /// The client's timestamp, echoed verbatim.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<serde_json::Number>,
        /// The server's clock, milliseconds since the Unix epoch.
        server_time: u64,
    },
    /// A stream began.
    Start {
        /// The stream.
        stream_id: String,
        /// Always 1.
        seq: u64,
        /// The conversation.
        session_id: String,
        /// The id of the assistant message this stream produces.
        message_id: String,
        /// The id the question was stored under (for `replace_from`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_message_id: Option<String>,
        /// The persona answering.
        persona_id: String,
        /// The model answering.
        model: String,
        /// The client's `client_message_id`, echoed when it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_message_id: Option<String>,
    },
    /// What the stream is doing before and between tokens.
    Progress {
        /// The stream.
        stream_id: String,
        /// Position in the stream.
        seq: u64,
        /// The step.
        step: ProgressStep,
        /// Human text.
        message: String,
        /// `agent_routing`, once chosen: the persona that will answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// `agent_routing`, once chosen: how sure the router is (0–1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        confidence: Option<f64>,
    },
    /// The passages retrieval found in the question's project (`project_id`),
    /// numbered from 1 in the order the model was given them; before the
    /// first token. Empty when the project's documents hold nothing relevant.
    Sources {
        /// The stream.
        stream_id: String,
        /// Position in the stream.
        seq: u64,
        /// Best first.
        sources: Vec<crate::documents::Source>,
    },
    /// A piece of the reply.
    Token {
        /// The stream.
        stream_id: String,
        /// Position in the stream.
        seq: u64,
        /// The delta text (several tokens' text when coalesced).
        token: String,
        /// When several tokens were coalesced into this frame (the client was
        /// behind): the first of their seqs; `seq` is the last.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_seq: Option<u64>,
        /// The reply so far; only for clients that asked with `?partial=1`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partial_response: Option<String>,
    },
    /// The stream ended; `response` is the whole reply.
    Complete {
        /// The stream.
        stream_id: String,
        /// Position in the stream (the last).
        seq: u64,
        /// The whole reply: the concatenation of every `token`.
        response: String,
        /// The conversation.
        session_id: String,
        /// Who answered and how it ended.
        metadata: Metadata,
    },
    /// Something failed. With `stream_id`/`seq` it ends that stream.
    Error {
        /// Human text.
        error: String,
        /// The stable code.
        code: ErrorCode,
        /// The stream it ends, if it belongs to one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream_id: Option<String>,
        /// Its position in that stream.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// With `RATE_LIMITED` for going too fast: how long to wait, in ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// The connection is in `room` now (the answer to `join`).
    Joined {
        /// The room.
        room: String,
    },
    /// The connection left `room` (the answer to `leave`).
    Left {
        /// The room.
        room: String,
    },
    /// An event published to a room this connection is in (the publish API,
    /// a member's `broadcast`).
    RoomEvent {
        /// The room.
        room: String,
        /// The event's name.
        event: String,
        /// Its data, as published.
        data: serde_json::Value,
    },
    /// Someone's connection joined or left a room this connection is in.
    Presence {
        /// The room.
        room: String,
        /// `joined` or `left`.
        status: PresenceStatus,
        /// Who: `user:<sub>`, `guest:<id>`, or `public` (no token).
        user: String,
    },
    /// This connection read room events too slowly and lost `count` of them.
    Dropped {
        /// How many were lost since it was last told.
        count: u64,
    },
    /// Every stream of a question that named several personas ended (sent
    /// after the last one's terminal event, on the connection that asked).
    TurnComplete {
        /// The conversation.
        session_id: String,
        /// One per persona, in the order asked.
        replies: Vec<TurnReply>,
    },
}

/// `presence.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// The connection joined.
    Joined,
    /// The connection left (or ended).
    Left,
}

/// One reply of `turn_complete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnReply {
    /// Its stream.
    pub stream_id: String,
    /// The persona that answered.
    pub persona_id: String,
    /// The id it is stored under.
    pub message_id: String,
    /// How it ended; absent if it failed before any text (its stream ended
    /// with `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
}

impl ServerEvent {
    /// Every `type` the server sends, in documentation order.
    pub const TYPES: [&'static str; 15] = [
        "hello",
        "auth_success",
        "auth_error",
        "pong",
        "start",
        "progress",
        "token",
        "complete",
        "error",
        "joined",
        "left",
        "room_event",
        "presence",
        "dropped",
        "turn_complete",
    ];

    /// An error that belongs to no stream.
    pub fn error(code: ErrorCode, error: impl Into<String>) -> Self {
        ServerEvent::Error {
            error: error.into(),
            code,
            stream_id: None,
            seq: None,
            retry_after_ms: None,
        }
    }

    /// The stream and position of a stream event.
    pub fn stream_position(&self) -> Option<(&str, u64)> {
        match self {
            ServerEvent::Start { stream_id, seq, .. }
            | ServerEvent::Progress { stream_id, seq, .. }
            | ServerEvent::Sources { stream_id, seq, .. }
            | ServerEvent::Token { stream_id, seq, .. }
            | ServerEvent::Complete { stream_id, seq, .. } => Some((stream_id, *seq)),
            ServerEvent::Error {
                stream_id: Some(stream_id),
                seq: Some(seq),
                ..
            } => Some((stream_id, *seq)),
            _ => None,
        }
    }

    /// Whether this event ends its stream.
    pub fn is_terminal(&self) -> bool {
        match self {
            ServerEvent::Complete { .. } => true,
            ServerEvent::Error { stream_id, .. } => stream_id.is_some(),
            _ => false,
        }
    }

    /// The wire `type` of this event.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerEvent::Hello { .. } => "hello",
            ServerEvent::AuthSuccess { .. } => "auth_success",
            ServerEvent::AuthError { .. } => "auth_error",
            ServerEvent::Pong { .. } => "pong",
            ServerEvent::Start { .. } => "start",
            ServerEvent::Progress { .. } => "progress",
            ServerEvent::Sources { .. } => "sources",
            ServerEvent::Token { .. } => "token",
            ServerEvent::Complete { .. } => "complete",
            ServerEvent::Error { .. } => "error",
            ServerEvent::Joined { .. } => "joined",
            ServerEvent::Left { .. } => "left",
            ServerEvent::RoomEvent { .. } => "room_event",
            ServerEvent::Presence { .. } => "presence",
            ServerEvent::Dropped { .. } => "dropped",
            ServerEvent::TurnComplete { .. } => "turn_complete",
        }
    }

    /// The JSON text of this event.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// The user a token names (`auth_success.user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthUser {
    /// The JWT `sub`.
    pub id: String,
    /// The JWT `email`, when present.
    pub email: Option<String>,
    /// The JWT `name`, when present.
    pub name: Option<String>,
}

/// Limits a server enforces (`hello.limits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The largest client text frame or HTTP body, in bytes.
    pub max_frame_bytes: usize,
    /// The most personas one `message` may name.
    pub max_personas: usize,
}

/// `progress.step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressStep {
    /// Processing started.
    Starting,
    /// Choosing the persona/agent.
    AgentRouting,
    /// Searching a knowledge base.
    RagRetrieval,
    /// The model is generating.
    Generating,
}

impl ProgressStep {
    /// The wire spelling (`progress.step`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProgressStep::Starting => "starting",
            ProgressStep::AgentRouting => "agent_routing",
            ProgressStep::RagRetrieval => "rag_retrieval",
            ProgressStep::Generating => "generating",
        }
    }
}

/// `complete.metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The persona that answered, or `"assistant"`. Always present (seed 003 reads it).
    pub agent: String,
    /// The model that answered.
    pub model: String,
    /// Why the stream ended.
    pub finish_reason: FinishReason,
    /// Token counts, when the provider reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Documents the answer drew on.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Seed 003's shape of the same sources (`metadata.context.sources`).
    #[serde(default)]
    pub context: Context,
    /// How sure the router was of `agent` (0–1), for `persona_id: "auto"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// How `agent` was chosen, for `persona_id: "auto"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<crate::Routing>,
    /// The model's reasoning summary, when the question asked for it
    /// (`include_reasoning`) and the model gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// How long the reply took, when it produced any text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    /// What it cost, when the model has a price (`--prices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

/// `complete.metadata.context` (seed 003).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Same as `metadata.sources`.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model finished.
    Stop,
    /// The length limit was reached.
    Length,
    /// A client cancelled it, or nobody was attached for the detach grace.
    Cancelled,
    /// The server shut down before it finished; `response` holds the text so far.
    Interrupted,
    /// It failed after some text; `response` holds the text so far.
    Error,
}

/// Token counts of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens in the reply.
    pub completion_tokens: u32,
    /// True when the provider reported no usage and rill estimated both
    /// counts (about four characters per token); absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

/// How long a reply took, measured by the server from the moment its stream
/// started (the question stored) — what a client sees, less the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Until the first token (routing and the provider's own wait included).
    pub first_token_ms: u64,
    /// Until the last token.
    pub total_ms: u64,
}

impl Timing {
    /// Reply tokens per second while they streamed (after the first one), if
    /// that can be told.
    pub fn tokens_per_second(&self, completion_tokens: u32) -> Option<f64> {
        let streaming_ms = self.total_ms.checked_sub(self.first_token_ms)?;
        (streaming_ms > 0 && completion_tokens > 1)
            .then(|| f64::from(completion_tokens - 1) * 1000.0 / streaming_ms as f64)
    }
}

/// What a reply cost, from the server's price table (`--prices`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// The amount, in `currency`.
    pub amount: f64,
    /// The price table's currency (`USD` unless it says otherwise).
    pub currency: String,
}
