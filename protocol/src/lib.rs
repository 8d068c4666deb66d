//! # rill-protocol
//!
//! The wire contract of rill's native dialect (`docs/protocol.md`), as Rust types
//! shared by the server, the browser UI (wasm) and test clients. It knows nothing
//! about I/O: only serde.
//!
//! ## Layout
//! - [`client`]: the frames a client sends ([`ClientFrame`]) and the classified
//!   parser every transport uses ([`parse_client_frame`]).
//! - [`server`]: the events the server sends ([`ServerEvent`]) and their parts.
//! - [`error`]: the stable [`ErrorCode`]s and WebSocket [`close`] codes.
//! - [`personas`]: the persona list and what routing reports.
//! - [`documents`]: a project's documents and the sources retrieval finds.

pub mod client;
pub mod conversations;
pub mod documents;
pub mod error;
pub mod personas;
pub mod server;

pub use client::{ClientFrame, FrameError, MessageRequest, parse_client_frame};
pub use error::{ErrorCode, close};
pub use personas::{AUTO_PERSONA, PersonaInfo, PersonaList, Routing};
pub use server::{
    AuthUser, Context, Cost, FinishReason, Limits, Metadata, PresenceStatus, ProgressStep,
    ServerEvent, Timing, TurnReply, Usage,
};

/// The protocol version a server of this crate speaks (`hello.protocol`).
pub const PROTOCOL_VERSION: u32 = 1;
