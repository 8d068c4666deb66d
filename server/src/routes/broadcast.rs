//! Seed 000's broadcast socket, `GET /ws/broadcast`: every text frame any
//! client sends reaches every connected client as `Someone said: <text>`.
//! Its clients are members of the room [`BROADCAST_ROOM`], so the publish API
//! reaches them too (an event `message` with `{"text": …}` shows as that
//! text; any other event as its JSON). Senders are held to the question
//! rates (`--rate-limit-user`, `--rate-limit-ip`): a refused message is
//! answered `Error: …` to its sender only. Connection caps, origins and
//! `--auth-required` apply as on `/ws/chat`.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;

use super::extract::Peer;
use crate::error::Error;
use crate::rooms::{RoomEvent, RoomEventKind};
use crate::state::AppState;

/// The room every `/ws/broadcast` client is in.
pub const BROADCAST_ROOM: &str = "broadcast";

/// How long a write may wait for a client before it is dropped as too slow.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/ws/broadcast", get(upgrade))
}

#[derive(Debug, Default, Deserialize)]
struct BroadcastQuery {
    token: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    Query(query): Query<BroadcastQuery>,
    Peer(ip): Peer,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Error> {
    let caller = super::socket_caller(&state, &headers, query.token.as_deref())?;
    if state.config.auth_required && !caller.identity.is_authenticated() {
        return Err(Error::AuthRequired);
    }
    let limit = state.config.max_frame_bytes;
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            let owner = caller.identity.owner();
            match state.limits.connect(ip, owner.clone()) {
                Ok(_slot) => run(socket, state, owner, ip).await,
                Err(error) => super::ws::refuse(socket, &crate::dialect::Native, error).await,
            }
        }))
}

/// What a broadcast client sees of a room event.
fn text_of(event: &RoomEvent) -> Option<String> {
    match &event.kind {
        RoomEventKind::Event { event, data } if event == "message" => match data["text"].as_str() {
            Some(text) => Some(format!("Someone said: {text}")),
            None => Some(data.to_string()),
        },
        RoomEventKind::Event { event, data } => {
            Some(serde_json::json!({"event": event, "data": data}).to_string())
        }
        // Seed 000's page shows every frame as a line: joins and leaves would
        // be noise.
        RoomEventKind::Presence { .. } => None,
    }
}

async fn run(
    mut socket: WebSocket,
    state: AppState,
    owner: Option<String>,
    ip: Option<std::net::IpAddr>,
) {
    let _counted = state.connections.open();
    let user = owner
        .clone()
        .unwrap_or_else(|| crate::auth::PUBLIC_OWNER.to_owned());
    let (mut membership, mut inbox) = state.rooms.member(&user);
    // A fresh membership has room for this one.
    let _ = membership.join(BROADCAST_ROOM);
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let reply = match state.limits.check_message(owner.clone(), ip) {
                        Ok(()) => {
                            state.rooms.publish(
                                BROADCAST_ROOM,
                                RoomEventKind::Event {
                                    event: "message".into(),
                                    data: serde_json::json!({"text": text.as_str(), "from": user}),
                                },
                            );
                            continue;
                        }
                        Err(error) => format!("Error: {}", error.client_message()),
                    };
                    if send(&mut socket, reply).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            Some(event) = inbox.recv() => {
                let dropped = membership.take_dropped();
                if dropped > 0
                    && send(&mut socket, format!("Error: {dropped} messages were dropped: this client read too slowly")).await.is_err()
                {
                    break;
                }
                if let Some(text) = text_of(&event)
                    && send(&mut socket, text).await.is_err()
                {
                    break;
                }
            }
            () = state.shutdown.cancelled() => break,
        }
    }
    drop(membership);
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
}

/// Sends one text frame, giving up on a client that takes nothing for
/// [`WRITE_DEADLINE`].
async fn send(socket: &mut WebSocket, text: String) -> Result<(), ()> {
    match tokio::time::timeout(
        WRITE_DEADLINE,
        socket.send(Message::Text(Utf8Bytes::from(text))),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
