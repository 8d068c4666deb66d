//! # rill
//!
//! A real-time LLM chat server: an axum router that streams model output token by
//! token over WebSocket and HTTP, and serves the Leptos chat UI.
//!
//! ## Layout
//! The path of a question, outside in (`docs/architecture.md` tells it whole):
//! - [`routes`]: transports — WebSocket, SSE, long-poll, REST, pages. They only
//!   translate between their frames and a session.
//! - [`dialect`]: codecs — a client frame into a [`session::Command`], core
//!   events and replies into frames, with every human text a client reads.
//! - [`session`]: one client, whatever the transport: identity, limits,
//!   followed streams, ownership, dispatch.
//! - [`engine`]: validates a question, stores it, builds the prompt, drives a
//!   provider into a hub stream; exposes commands, not its parts.
//! - [`conversations`]: the callers' conversations (list, read, rename, delete).
//! - [`documents`]: projects' documents (extraction, chunks, a BM25 index per
//!   project) and the retrieval a question in a project starts with.
//! - [`events`]: what a stream says, free of any dialect.
//! - [`hub`]: where streams live (the [`hub::Hub`] trait; in memory by default).
//! - [`rooms`]: rooms of connections (projects' notifications, presence,
//!   broadcast), each event encoded once per dialect.
//! - [`personas`]: who answers (built-ins, `--personas` file) and the router
//!   for `persona_id: "auto"`.
//! - [`provider`]: where replies come from (`demo`, OpenAI-compatible).
//! - [`store`]: conversations and messages in SQLite or PostgreSQL.
//! - [`auth`]: JWTs and identities.
//! - [`error`]: the one error type and its mapping to codes and statuses.
//! - [`config`]: flags, `RILL_*` variables, the typed [`Config`].
//! - [`state`]: the parts every route shares ([`AppState`]), built at startup.
//! - [`server`]: [`serve`] — the listener and graceful shutdown.
//!
//! `main` is thin; tests start the same [`serve`] on port 0.

pub mod auth;
pub mod config;
pub mod conversations;
pub mod dialect;
pub mod documents;
pub mod engine;
pub mod error;
pub mod events;
pub mod hub;
pub mod limits;
pub mod personas;
pub mod prices;
pub mod provider;
pub mod rooms;
pub mod routes;
pub mod server;
pub mod session;
pub mod state;
pub mod store;

#[cfg(feature = "embed")]
mod assets;

pub use config::Config;
pub use server::serve;
pub use state::{AppState, StartupError};

/// `rill/<version>`, as announced in `hello`.
pub fn server_name() -> String {
    format!("rill/{}", env!("CARGO_PKG_VERSION"))
}
