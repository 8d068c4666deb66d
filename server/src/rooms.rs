//! Rooms: named groups of connections that receive the same events — a
//! project's notifications (`project_<id>`), what the publish API sends, who
//! joined and left (presence), and seed 000's broadcast socket. Dialect-free:
//! an event is a name and JSON data, encoded once per dialect like stream
//! events.
//!
//! Each member connection has one bounded inbox ([`INBOX`] events). A
//! publish never waits: an inbox that is full (its client stopped reading)
//! loses that event, and the connection is told how many it lost with the
//! next one it gets (`dropped`). A member leaves when it asks, or when its
//! [`Membership`] is dropped (the connection ended).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::hub::ENCODING_SLOTS;

/// Events one connection's inbox holds before newer ones are dropped.
pub const INBOX: usize = 256;
/// Rooms one connection may be in at once.
pub const MAX_ROOMS_PER_CONNECTION: usize = 16;
/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 128;

/// What a room event is about.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEventKind {
    /// A named event with data (the publish API, a member's broadcast).
    Event {
        /// Its name (`document_status`, `project_update`, `message` …).
        event: String,
        /// Its data.
        data: Value,
    },
    /// Someone's connection joined or left the room.
    Presence {
        /// `true`: joined; `false`: left.
        joined: bool,
        /// Who (an owner key: `user:…`, `guest:…`, `public`).
        user: String,
    },
}

/// One event delivered to a room's members.
#[derive(Debug)]
pub struct RoomEvent {
    /// The room.
    pub room: Arc<str>,
    /// What happened.
    pub kind: RoomEventKind,
    /// Encodings, one per dialect, made once however many members read it.
    encodings: [OnceLock<Bytes>; ENCODING_SLOTS],
}

impl RoomEvent {
    /// An event for `room`.
    pub fn new(room: Arc<str>, kind: RoomEventKind) -> Self {
        RoomEvent {
            room,
            kind,
            encodings: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// The event's encoding in `slot`, made by `encode` the first time.
    ///
    /// # Panics
    /// If `slot` is not below [`ENCODING_SLOTS`] (a dialect's fixed constant).
    pub fn encoded(&self, slot: usize, encode: impl FnOnce(&RoomEvent) -> Bytes) -> Bytes {
        self.encodings[slot].get_or_init(|| encode(self)).clone()
    }
}

/// A member's inbox as the room registry holds it.
#[derive(Debug, Clone)]
struct Inbox {
    /// Where its events go.
    tx: mpsc::Sender<Arc<RoomEvent>>,
    /// Events it lost to a full inbox since it last read.
    dropped: Arc<AtomicU64>,
}

impl Inbox {
    fn deliver(&self, event: &Arc<RoomEvent>) -> bool {
        match self.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// A room's members, by member id.
#[derive(Debug, Default)]
struct Room {
    members: HashMap<u64, (Arc<str>, Inbox)>,
}

/// Every room with at least one member.
#[derive(Debug, Default)]
pub struct Rooms {
    /// Rooms by name; a room with no member is removed.
    rooms: Mutex<HashMap<Arc<str>, Room>>,
    /// The next member id.
    next_member: AtomicU64,
}

/// One user's presence in a room.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Present {
    /// Who (an owner key).
    pub user: String,
    /// How many of their connections are in the room.
    pub connections: usize,
}

impl Rooms {
    /// A membership for a connection of `user`, and the inbox it reads.
    pub fn member(self: &Arc<Self>, user: &str) -> (Membership, mpsc::Receiver<Arc<RoomEvent>>) {
        let (tx, rx) = mpsc::channel(INBOX);
        let membership = Membership {
            rooms: self.clone(),
            id: self.next_member.fetch_add(1, Ordering::Relaxed),
            user: Arc::from(user),
            inbox: Inbox {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            joined: Vec::new(),
        };
        (membership, rx)
    }

    /// Sends `kind` to every member of `room`; how many it reached.
    pub fn publish(&self, room: &str, kind: RoomEventKind) -> usize {
        let inboxes: Vec<Inbox> = {
            let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            match rooms.get(room) {
                Some(members) => members.members.values().map(|(_, i)| i.clone()).collect(),
                None => return 0,
            }
        };
        let event = Arc::new(RoomEvent::new(Arc::from(room), kind));
        inboxes.iter().filter(|inbox| inbox.deliver(&event)).count()
    }

    /// Who is in `room`: each user once, with their connection count, sorted.
    pub fn presence(&self, room: &str) -> Vec<Present> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts: HashMap<&str, usize> = HashMap::new();
        if let Some(members) = rooms.get(room) {
            for (user, _) in members.members.values() {
                *counts.entry(user).or_insert(0) += 1;
            }
        }
        let mut present: Vec<Present> = counts
            .into_iter()
            .map(|(user, connections)| Present {
                user: user.to_owned(),
                connections,
            })
            .collect();
        present.sort_by(|a, b| a.user.cmp(&b.user));
        present
    }

    fn add(&self, room: &Arc<str>, id: u64, user: &Arc<str>, inbox: &Inbox) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(room.clone())
            .or_default()
            .members
            .insert(id, (user.clone(), inbox.clone()));
    }

    fn remove(&self, room: &str, id: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(members) = rooms.get_mut(room) {
            members.members.remove(&id);
            if members.members.is_empty() {
                rooms.remove(room);
            }
        }
    }
}

/// Why a connection cannot join a room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// It is in as many rooms as allowed.
    #[error("a connection may be in at most {MAX_ROOMS_PER_CONNECTION} rooms: leave one first")]
    TooMany,
}

/// One connection's place in the rooms: the rooms it joined and its inbox.
/// Dropping it leaves them all (announcing it).
#[derive(Debug)]
pub struct Membership {
    rooms: Arc<Rooms>,
    /// This member's id.
    id: u64,
    /// Whose connection (presence shows it).
    user: Arc<str>,
    /// Where its events go.
    inbox: Inbox,
    /// The rooms it is in, in the order joined.
    joined: Vec<Arc<str>>,
}

impl Membership {
    /// Joins `room` (announced to its members, this one included); joining
    /// a room it is in already does nothing. Returns whether it was new.
    pub fn join(&mut self, room: &str) -> Result<bool, JoinError> {
        if self.is_in(room) {
            return Ok(false);
        }
        if self.joined.len() >= MAX_ROOMS_PER_CONNECTION {
            return Err(JoinError::TooMany);
        }
        let room: Arc<str> = Arc::from(room);
        self.rooms.add(&room, self.id, &self.user, &self.inbox);
        self.joined.push(room.clone());
        self.announce(&room, true);
        Ok(true)
    }

    /// Leaves `room` (announced to those who stay); whether it was in it.
    pub fn leave(&mut self, room: &str) -> bool {
        let Some(at) = self.joined.iter().position(|r| &**r == room) else {
            return false;
        };
        let room = self.joined.remove(at);
        self.rooms.remove(&room, self.id);
        self.announce(&room, false);
        true
    }

    /// Whether it is in `room`.
    pub fn is_in(&self, room: &str) -> bool {
        self.joined.iter().any(|r| &**r == room)
    }

    /// The rooms it is in.
    pub fn rooms(&self) -> &[Arc<str>] {
        &self.joined
    }

    /// Who this member is.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// How many events its inbox lost since the last call (and resets it).
    pub fn take_dropped(&self) -> u64 {
        self.inbox.dropped.swap(0, Ordering::Relaxed)
    }

    fn announce(&self, room: &str, joined: bool) {
        self.rooms.publish(
            room,
            RoomEventKind::Presence {
                joined,
                user: self.user.to_string(),
            },
        );
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        for room in std::mem::take(&mut self.joined) {
            self.rooms.remove(&room, self.id);
            self.announce(&room, false);
        }
    }
}

/// The room a project's notifications go to: `project_<id>`.
pub const PROJECT_PREFIX: &str = "project_";

/// The project a room belongs to (`project_<id>` → `<id>`).
pub fn project_of(room: &str) -> Option<&str> {
    room.strip_prefix(PROJECT_PREFIX)
        .filter(|id| !id.is_empty())
}

/// Checks a room name a client or service gave: 1 to [`MAX_ROOM_CHARS`]
/// characters, no control characters or blanks around it.
pub fn check_room_name(room: &str) -> Result<(), String> {
    if room.is_empty()
        || room.chars().count() > MAX_ROOM_CHARS
        || room.chars().any(char::is_control)
        || room.trim() != room
    {
        return Err(format!(
            "a room name is 1 to {MAX_ROOM_CHARS} characters, without control characters or surrounding blanks"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> RoomEventKind {
        RoomEventKind::Event {
            event: name.into(),
            data: Value::Null,
        }
    }

    #[tokio::test]
    async fn members_get_their_rooms_events_and_nobody_else_does() {
        let rooms = Arc::new(Rooms::default());
        let (mut alice, mut alice_rx) = rooms.member("user:alice");
        let (mut bob, mut bob_rx) = rooms.member("user:bob");
        alice.join("project_1").unwrap();
        // Alice sees herself join.
        let joined = alice_rx.recv().await.unwrap();
        assert_eq!(
            joined.kind,
            RoomEventKind::Presence {
                joined: true,
                user: "user:alice".into()
            }
        );
        bob.join("project_2").unwrap();
        bob_rx.recv().await.unwrap();
        assert_eq!(rooms.publish("project_1", event("hello")), 1);
        assert_eq!(alice_rx.recv().await.unwrap().kind, event("hello"));
        assert!(
            bob_rx.try_recv().is_err(),
            "another room's member got nothing"
        );
        assert_eq!(rooms.publish("project_3", event("nobody")), 0);

        bob.join("project_1").unwrap();
        assert_eq!(
            rooms.presence("project_1"),
            vec![
                Present {
                    user: "user:alice".into(),
                    connections: 1
                },
                Present {
                    user: "user:bob".into(),
                    connections: 1
                }
            ]
        );
        drop(bob);
        // Alice: bob joined, then left when his connection ended.
        let kinds: Vec<RoomEventKind> = vec![
            alice_rx.recv().await.unwrap().kind.clone(),
            alice_rx.recv().await.unwrap().kind.clone(),
        ];
        assert_eq!(
            kinds,
            vec![
                RoomEventKind::Presence {
                    joined: true,
                    user: "user:bob".into()
                },
                RoomEventKind::Presence {
                    joined: false,
                    user: "user:bob".into()
                }
            ]
        );
        assert!(alice.leave("project_1"));
        assert!(!alice.leave("project_1"));
        assert!(rooms.presence("project_1").is_empty());
        assert!(
            rooms.rooms.lock().unwrap().is_empty(),
            "empty rooms are removed"
        );
    }

    #[tokio::test]
    async fn a_full_inbox_drops_and_counts_and_the_room_cap_holds() {
        let rooms = Arc::new(Rooms::default());
        let (mut member, mut rx) = rooms.member("public");
        member.join("r").unwrap();
        for _ in 0..INBOX + 10 {
            rooms.publish("r", event("e"));
        }
        // One presence event and INBOX - 1 events fit; the rest were dropped.
        assert_eq!(member.take_dropped(), 11);
        assert_eq!(member.take_dropped(), 0);
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, INBOX);
        for i in 1..MAX_ROOMS_PER_CONNECTION {
            member.join(&format!("r{i}")).unwrap();
        }
        assert_eq!(member.join("one-more"), Err(JoinError::TooMany));
        assert_eq!(member.join("r"), Ok(false), "already in");
    }

    #[test]
    fn room_names_are_checked() {
        assert!(check_room_name("project_42").is_ok());
        for bad in ["", " x", "a\u{7}b", &"x".repeat(200)] {
            assert!(check_room_name(bad).is_err(), "{bad:?}");
        }
    }
}
