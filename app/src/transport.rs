//! The browser's transport (hydrate only): a WebSocket to `/ws/chat` that
//! reconnects with exponential backoff and full jitter, and resumes every reply
//! that was streaming when the connection dropped.
//!
//! The connection counts as live only once the server has answered our `hello`:
//! gloo-net does not report a failed open as an error on `send`.

use futures::channel::mpsc;
use futures::{FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::Message;
use gloo_net::websocket::futures::WebSocket;
use leptos::prelude::*;
use leptos::task::spawn_local;
use rill_protocol::{ClientFrame, PROTOCOL_VERSION, ServerEvent};

use crate::chat::{ChatState, ConnectionState};

/// First reconnect delay, doubled per failed attempt up to [`MAX_BACKOFF_MS`].
const BASE_BACKOFF_MS: f64 = 500.0;
/// Longest delay between reconnect attempts.
const MAX_BACKOFF_MS: f64 = 10_000.0;

/// The WebSocket URL of the page's own server.
fn chat_url() -> Option<String> {
    let location = web_sys::window()?.location();
    let scheme = if location.protocol().ok()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    Some(format!("{scheme}://{}/ws/chat", location.host().ok()?))
}

/// Starts the transport; it runs for the page's lifetime.
pub fn start(state: ChatState) {
    spawn_local(async move {
        let Some(url) = chat_url() else {
            state.connection.set(ConnectionState::Offline);
            return;
        };
        let mut attempt: u32 = 0;
        loop {
            if attempt > 0 {
                state.connection.set(ConnectionState::Reconnecting(attempt));
                let ceiling = (BASE_BACKOFF_MS * 2f64.powi(attempt as i32 - 1)).min(MAX_BACKOFF_MS);
                // Full jitter: spread reconnecting clients out after a server restart.
                let delay = (js_sys::Math::random() * ceiling).max(100.0);
                gloo_timers::future::TimeoutFuture::new(delay as u32).await;
            }
            let went_live = run_connection(&url, state).await;
            state.outbox.set_value(None);
            attempt = if went_live {
                1
            } else {
                attempt.saturating_add(1)
            };
        }
    });
}

/// One connection's life. Returns whether it ever went live.
async fn run_connection(url: &str, state: ChatState) -> bool {
    let Ok(socket) = WebSocket::open(url) else {
        return false;
    };
    let (mut sink, mut source) = socket.split();
    let (outbox, mut queue) = mpsc::unbounded::<String>();
    let hello = ClientFrame::Hello {
        protocol: Some(PROTOCOL_VERSION),
    };
    let _ = outbox.unbounded_send(serde_json::to_string(&hello).unwrap_or_default());

    let writer = async move {
        while let Some(text) = queue.next().await {
            if sink.send(Message::Text(text)).await.is_err() {
                break;
            }
        }
    }
    .fuse();
    let live = std::cell::Cell::new(false);
    let reader = async {
        while let Some(message) = source.next().await {
            let Ok(Message::Text(text)) = message else {
                if message.is_err() {
                    break;
                }
                continue;
            };
            let Ok(event) = serde_json::from_str::<ServerEvent>(&text) else {
                continue;
            };
            if !live.get() && matches!(event, ServerEvent::Hello { .. }) {
                live.set(true);
                state.outbox.set_value(Some(outbox.clone()));
                state.connection.set(ConnectionState::Live);
                for frame in state.resume_frames() {
                    state.send_frame(&frame);
                }
            }
            let follow = matches!(event, ServerEvent::Token { .. } | ServerEvent::Start { .. })
                && reader_is_at_bottom();
            state.apply(event);
            if follow {
                scroll_to_bottom();
            }
        }
    }
    .fuse();
    futures::pin_mut!(writer, reader);
    futures::select! {
        () = writer => {},
        () = reader => {},
    }
    live.get()
}

/// How close to the end counts as "reading the end" (pixels).
const FOLLOW_SLACK_PX: f64 = 120.0;

/// Whether the reader is at the end of the page: then a growing reply is followed;
/// someone who scrolled up to read is left where they are.
fn reader_is_at_bottom() -> bool {
    let window = leptos::prelude::window();
    let Some(root) = window.document().and_then(|d| d.document_element()) else {
        return false;
    };
    let seen = window.scroll_y().unwrap_or(0.0)
        + window
            .inner_height()
            .ok()
            .and_then(|h| h.as_f64())
            .unwrap_or(0.0);
    f64::from(root.scroll_height()) - seen <= FOLLOW_SLACK_PX
}

/// Scrolls to the end after the next layout (at most once per frame).
fn scroll_to_bottom() {
    thread_local! {
        static PENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if PENDING.with(|p| p.replace(true)) {
        return;
    }
    leptos::prelude::request_animation_frame(|| {
        PENDING.with(|p| p.set(false));
        let window = leptos::prelude::window();
        if let Some(root) = window.document().and_then(|d| d.document_element()) {
            window.scroll_to_with_x_and_y(0.0, f64::from(root.scroll_height()));
        }
    });
}
