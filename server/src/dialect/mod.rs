//! Dialects: codecs between a transport's frames and the core. A dialect decodes
//! a client frame into a [`Command`] (or a documented error) and encodes the
//! core's [`Reply`]s and stream events into frames. It holds every human text a
//! client reads (progress messages, error texts) and no chat logic.
//!
//! - [`native`]: rill's own JSON dialect (`/ws/chat`, and the data of SSE and
//!   long-poll).
//!
//! Adding a dialect: implement [`Dialect`] with an unused [`Dialect::slot`]
//! (below [`crate::hub::ENCODING_SLOTS`]), and give it a route that feeds its
//! frames to a [`crate::session::Session`] (see `docs/architecture.md`).

pub mod native;

use bytes::Bytes;

use crate::error::Error;
use crate::events::StreamEvent;
use crate::hub::Sequenced;
use crate::session::{Command, Reply};

pub use native::Native;

/// A wire dialect.
pub trait Dialect: Send + Sync + 'static {
    /// This dialect's slot in each event's encoding cache: unique per dialect,
    /// below [`crate::hub::ENCODING_SLOTS`].
    fn slot(&self) -> usize;

    /// A client's text frame as a command, or why it is not one.
    fn decode(&self, frame: &str) -> Result<Command, Error>;

    /// A client's binary frame as a command; by default binary frames are
    /// refused (`UNSUPPORTED`), the connection staying usable.
    fn decode_binary(&self) -> Result<Command, Error> {
        Err(Error::Unsupported(
            "Binary frames are not supported: send JSON text frames",
        ))
    }

    /// One stream event as a frame. Called at most once per event per dialect:
    /// use [`Dialect::encoded`].
    fn encode_event(&self, event: &Sequenced) -> Bytes;

    /// One reply to a command (or a notice about the connection) as a frame.
    fn encode_reply(&self, reply: &Reply) -> Bytes;

    /// The event's name, for transports that label events (SSE `event:`).
    fn event_name(&self, event: &StreamEvent) -> &'static str;

    /// A token event as a frame that also carries the reply so far, for clients
    /// that asked for it; `None` if this dialect has no such form.
    fn token_with_partial(&self, _event: &Sequenced, _so_far: &str) -> Option<Bytes> {
        None
    }

    /// Consecutive tokens of one stream (seqs `seqs`, their texts joined in
    /// `text`) as one frame, for a client that is behind; `so_far` is the reply
    /// up to the last of them when the client asked for it. The default sends
    /// the text as one token frame numbered with the last seq.
    fn coalesced_tokens(
        &self,
        stream_id: &str,
        seqs: std::ops::RangeInclusive<u64>,
        text: &str,
        so_far: Option<&str>,
    ) -> Bytes {
        let _ = so_far;
        let event = Sequenced::new(
            stream_id.into(),
            *seqs.end(),
            StreamEvent::Token(text.to_owned()),
        );
        self.encode_event(&event)
    }

    /// The event's frame, encoded once and shared by every reader.
    fn encoded(&self, event: &Sequenced) -> Bytes {
        event.encoded(self.slot(), |event| self.encode_event(event))
    }
}
