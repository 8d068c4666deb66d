//! Dialects: codecs between a transport's frames and the core. A dialect decodes
//! a client frame into a [`Command`] (or a documented error) and encodes the
//! core's [`Reply`]s and stream events into frames. It holds every human text a
//! client reads (progress messages, error texts) and no chat logic.
//!
//! - [`native`]: rill's own JSON dialect (`/ws/chat`, and the data of SSE and
//!   long-poll).
//! - [`seed002`]: seed 002's `{type, data}` dialect (`/ws`), with seed 000's
//!   echo of non-JSON frames.
//! - [`raw`]: seed 000's raw-text chat (a plain-text question on `/ws/chat`,
//!   answered `start`, `token`s, `end`).
//!
//! Adding a dialect: implement [`Dialect`] with an unused [`Dialect::slot`]
//! (below [`crate::hub::ENCODING_SLOTS`]), and give it a route that feeds its
//! frames to a [`crate::session::Session`] (see `docs/architecture.md`).
//!
//! An encoding is usually one frame. It may be several, joined by `\n` (JSON
//! text never holds a raw newline), or none (empty): a dialect without a
//! frame for some event sends nothing for it.

pub mod native;
pub mod raw;
pub mod seed002;

use std::sync::Arc;

use bytes::Bytes;
use rill_protocol::FinishReason;

use crate::error::Error;
use crate::events::StreamEvent;
use crate::hub::Sequenced;
use crate::rooms::RoomEvent;
use crate::session::{Command, Reply};

pub use native::Native;
pub use raw::Raw;
pub use seed002::Seed002;

/// Where a stream stands among the streams one question started, for
/// dialects whose frames say so (seed 002's `persona_response.index`).
#[derive(Debug, Clone, Default)]
pub struct Place {
    /// Its position among the question's personas, from 0.
    pub index: usize,
    /// Whether the question named several personas (`persona_ids`).
    pub several: bool,
    /// The persona answering, once known (from `start`, then routing).
    pub persona_id: Option<Arc<str>>,
}

/// One reply of a question whose streams all ended.
#[derive(Debug, Clone)]
pub struct TurnReply {
    /// Its stream.
    pub stream_id: Arc<str>,
    /// Its position among the question's personas.
    pub index: usize,
    /// The persona that answered.
    pub persona_id: String,
    /// The id the reply is stored under.
    pub message_id: String,
    /// Its whole text.
    pub response: String,
    /// How it ended; `None` if it failed before any text.
    pub finish_reason: Option<FinishReason>,
}

/// A question whose every stream ended.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The conversation.
    pub session_id: String,
    /// Whether it named several personas.
    pub several: bool,
    /// One per persona, in the order asked.
    pub replies: Vec<TurnReply>,
}

/// Collects the replies of a question that named several personas as its
/// streams' events go by (on whichever transport carries them), and says
/// when the last one ended. Stream `i` is the `i`-th persona asked.
#[derive(Debug)]
pub struct TurnRecorder {
    /// The conversation (from the question, or the streams' first `start`).
    session_id: String,
    /// Each stream's place: its index and the persona answering, once known.
    places: Vec<Place>,
    /// Each stream's stored reply id, from its `start`.
    message_ids: Vec<String>,
    /// Each stream's reply, once it ended.
    replies: Vec<Option<TurnReply>>,
}

impl TurnRecorder {
    /// A question of `count` streams in conversation `session_id` (empty:
    /// learnt from the first `start`).
    pub fn new(session_id: String, count: usize) -> Self {
        TurnRecorder {
            session_id,
            places: (0..count)
                .map(|index| Place {
                    index,
                    several: true,
                    persona_id: None,
                })
                .collect(),
            message_ids: vec![String::new(); count],
            replies: vec![None; count],
        }
    }

    /// Where stream `index` stands (`None` past the question's streams).
    pub fn place(&self, index: usize) -> Option<&Place> {
        self.places.get(index)
    }

    /// Follows what stream `index` says about itself, and records its reply
    /// when it ends.
    pub fn observe(&mut self, index: usize, event: &Sequenced) {
        let (Some(place), Some(message_id)) =
            (self.places.get_mut(index), self.message_ids.get_mut(index))
        else {
            return;
        };
        match &event.event {
            StreamEvent::Started(started) => {
                let crate::events::Started {
                    persona_id,
                    message_id: id,
                    session_id,
                    ..
                } = &**started;
                place.persona_id = Some(Arc::from(persona_id.as_str()));
                message_id.clone_from(id);
                if self.session_id.is_empty() {
                    self.session_id.clone_from(session_id);
                }
            }
            StreamEvent::Routed { persona_id, .. } => {
                place.persona_id = Some(Arc::from(persona_id.as_str()));
            }
            StreamEvent::Completed {
                response,
                metadata,
                message_id: id,
                session_id,
            } => {
                message_id.clone_from(id);
                if self.session_id.is_empty() {
                    self.session_id.clone_from(session_id);
                }
                place.persona_id = Some(Arc::from(metadata.agent.as_str()));
                let finish = Some(metadata.finish_reason);
                self.record(index, &event.stream_id, response.clone(), finish);
            }
            StreamEvent::Failed(_) => self.record(index, &event.stream_id, String::new(), None),
            StreamEvent::Progress(_) | StreamEvent::Sources(_) | StreamEvent::Token(_) => {}
        }
    }

    /// Records stream `index` as ended without a reply this reader saw (it
    /// fell behind the replay window).
    pub fn lost(&mut self, index: usize, stream_id: &Arc<str>) {
        self.record(index, stream_id, String::new(), None);
    }

    fn record(
        &mut self,
        index: usize,
        stream_id: &Arc<str>,
        response: String,
        finish_reason: Option<FinishReason>,
    ) {
        let persona_id = self.places[index]
            .persona_id
            .as_deref()
            .unwrap_or_default()
            .to_owned();
        self.replies[index] = Some(TurnReply {
            stream_id: stream_id.clone(),
            index,
            persona_id,
            message_id: self.message_ids[index].clone(),
            response,
            finish_reason,
        });
    }

    /// Whether every stream ended.
    pub fn is_finished(&self) -> bool {
        self.replies.iter().all(Option::is_some)
    }

    /// The turn (complete once [`TurnRecorder::is_finished`]).
    pub fn into_turn(self) -> Turn {
        Turn {
            session_id: self.session_id,
            several: true,
            replies: self.replies.into_iter().flatten().collect(),
        }
    }
}

/// The frames of an encoding (see the module doc): zero, one or several.
pub fn frames(encoded: Bytes) -> impl Iterator<Item = Bytes> {
    let mut rest = Some(encoded).filter(|b| !b.is_empty());
    std::iter::from_fn(move || {
        let bytes = rest.take()?;
        // Nearly every encoding is one frame (JSON escapes a newline):
        // memchr looks a vector at a time, where `position` went byte by
        // byte through every token frame.
        match memchr::memchr(b'\n', &bytes) {
            Some(at) => {
                let tail = bytes.slice(at + 1..);
                rest = Some(tail).filter(|b| !b.is_empty());
                Some(bytes.slice(..at))
            }
            None => Some(bytes),
        }
    })
}

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

    /// A stream event for a stream at `place` on this connection, when this
    /// dialect's frame depends on it; `None` uses the shared encoding.
    fn encode_placed(&self, _event: &Sequenced, _place: &Place) -> Option<Bytes> {
        None
    }

    /// What this dialect sends when every stream of a question ended, if
    /// anything.
    fn encode_turn(&self, _turn: &Turn) -> Option<Bytes> {
        None
    }

    /// A room's event as a frame; by default the native dialect's
    /// `room_event` and `presence` frames.
    fn encode_room_event(&self, event: &RoomEvent) -> Bytes {
        native::room_event_frame(event)
    }

    /// A room event's frame, encoded once and shared by every member.
    fn encoded_room_event(&self, event: &RoomEvent) -> Bytes {
        event.encoded(self.slot(), |event| self.encode_room_event(event))
    }

    /// The event's frame, encoded once and shared by every reader.
    fn encoded(&self, event: &Sequenced) -> Bytes {
        event.encoded(self.slot(), |event| self.encode_event(event))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    fn split(encoded: &'static str) -> Vec<Bytes> {
        super::frames(Bytes::from_static(encoded.as_bytes())).collect()
    }

    #[test]
    fn an_encoding_is_split_into_its_frames_at_newlines() {
        assert!(split("").is_empty());
        let long = r#"{"type":"token","stream_id":"a-stream-id-longer-than-a-vector","seq":12,"token":" word"}"#;
        assert_eq!(split(long), vec![Bytes::from_static(long.as_bytes())]);
        assert_eq!(split("42[\"a\"]\n42[\"b\"]"), ["42[\"a\"]", "42[\"b\"]"]);
        assert_eq!(split("one\n"), ["one"]);
        // A newline anywhere in a frame longer than a vector is found.
        for at in 0..long.len() {
            let mut text = long.to_owned();
            text.replace_range(at..=at, "\n");
            let frames: Vec<Bytes> = super::frames(Bytes::from(text.clone())).collect();
            let (head, tail) = text.split_at(at);
            let mut want = vec![head.as_bytes().to_vec()];
            if tail.len() > 1 {
                want.push(tail.as_bytes()[1..].to_vec());
            }
            assert_eq!(frames, want, "newline at {at}");
        }
    }
}
