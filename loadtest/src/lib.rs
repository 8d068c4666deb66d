//! # rill-loadtest
//!
//! rill's load generator: it speaks rill's dialects (the native one, seed
//! 002's `{type, data}`, Socket.IO over Engine.IO's WebSocket transport) over
//! real WebSockets, measures what clients see (connect time, time to first token, token gaps,
//! throughput, integrity, lost and duplicated tokens across resumes) and what
//! the server costs (CPU and memory from `/proc/<pid>`), and writes a report.
//!
//! ## Layout
//! - `client`: connecting (spread over loopback source addresses), the dialects' frames.
//! - [`scenarios`]: `stream`, `idle`, `churn`, `resume`, and their [`scenarios::Outcome`].
//! - `baseline`: a minimal server writing pre-built frames (this machine's ceiling).
//! - `suite`: every case against the baseline and rill, pinned, median of runs.
//! - `documents`: indexing throughput and retrieval latency of a project's documents.
//! - `report`: `results.json`, `summary.md`, `report.html` (SVG charts).
//! - `procstat`, `stats`: `/proc` readings and latency summaries.
//!
//! Only loopback targets are accepted, and every loop is bounded in count and time.

pub mod baseline;
pub mod client;
pub mod documents;
pub mod procstat;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod suite;
