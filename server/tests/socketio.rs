//! Socket.IO's wire at `/socket.io/`, spoken by hand over Engine.IO polling
//! against the real router: the handshake, seed 004's `connection_status`,
//! and a refused token as a `connect_error` that says why. (Seed 004's real
//! clients — socket.io-client v4, python-socketio — run in
//! `end2end/tests/socketio.spec.ts`.)

mod common;

use common::*;
use serde_json::Value;

async fn handshake(server: &TestServer) -> String {
    sio_handshake(server, "").await
}

async fn exchange(server: &TestServer, sid: &str, packet: &str, wanted: usize) -> Vec<String> {
    sio_exchange(server, sid, packet, wanted).await
}

#[tokio::test]
async fn a_connect_is_answered_with_connection_status() {
    let server = start().await;
    let sid = handshake(&server).await;
    let packets = exchange(&server, &sid, "40", 2).await;
    // The namespace's connect packet, then seed 004's status event.
    assert!(packets[0].starts_with("40{"), "{packets:?}");
    assert_eq!(
        packets[1],
        r#"42["connection_status",{"status":"connected"}]"#
    );
    // Counted like a WebSocket.
    assert_eq!(get_json(&server, "/health").await["connections"], 1);
}

#[tokio::test]
async fn a_bad_token_is_a_connect_error_that_says_why() {
    let server = start_with(|c| c.auth_required = true).await;
    for (packet, reason) in [
        (r#"40{"token":"forged"}"#, "Invalid token"),
        ("40", "Authentication required"),
    ] {
        let sid = handshake(&server).await;
        let packets = exchange(&server, &sid, packet, 1).await;
        let error: Value =
            serde_json::from_str(packets[0].strip_prefix("44").expect("a connect_error")).unwrap();
        assert!(
            error["message"].as_str().unwrap().contains(reason),
            "{packets:?}"
        );
    }
    let sid = handshake(&server).await;
    let token = server.token("alice");
    let packets = exchange(&server, &sid, &format!(r#"40{{"token":"{token}"}}"#), 1).await;
    assert!(
        packets[0].starts_with("40{"),
        "a good token connects: {packets:?}"
    );
}

#[tokio::test]
async fn invalid_data_is_an_error_event_and_the_socket_stays_usable() {
    let server = start().await;
    let sid = handshake(&server).await;
    exchange(&server, &sid, "40", 2).await;
    for (packet, needle) in [
        (r#"42["send_message",{"message":"no chat"}]"#, "chat_id"),
        (r#"42["send_message",{"chat_id":1}]"#, "message"),
        (
            r#"42["send_message",{"chat_id":1,"message":"  "}]"#,
            "empty",
        ),
        (r#"42["join_project",{}]"#, "project_id"),
        (r#"42["resume_stream",{"stream_id":"nope"}]"#, "not found"),
    ] {
        let packets = exchange(&server, &sid, packet, 1).await;
        let event: Value = serde_json::from_str(packets[0].strip_prefix("42").unwrap()).unwrap();
        assert_eq!(event[0], "error", "{packet} → {packets:?}");
        assert!(
            event[1]["message"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(needle),
            "{packet} → {event}"
        );
    }
    let packets = exchange(&server, &sid, r#"42["ping"]"#, 1).await;
    let pong: Value = serde_json::from_str(packets[0].strip_prefix("42").unwrap()).unwrap();
    assert_eq!(pong[0], "pong");
    assert!(pong[1]["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
}

/// A client may emit as soon as its connect is answered (socket.io-client
/// does, on `connect`): the event is handled. socketioxide answers the
/// connect, then runs an async connect handler in a task of its own, so the
/// handlers must exist before the answer; registered in that task, an event
/// that came first was dropped (one socket in a few hundred opened at once
/// waited for a pong that never came). socketioxide also marks the socket
/// connected only after the answer went, and an emit before the mark fails:
/// the handlers wait for it (a gap of a few instructions, open only when the
/// connecting thread loses its core right there; the load tool's smoke test
/// under a busy machine met it in about one run in twenty: a resumed reply
/// that never came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_as_soon_as_the_connect_is_answered_is_handled() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = start_with(|c| {
        c.limits.max_connections_per_ip = 0;
        c.limits.max_connections = 0;
    })
    .await;
    let url = server.ws_url("/socket.io/?EIO=4&transport=websocket");
    let sockets = (0..400).map(|n| {
        let url = url.clone();
        tokio::spawn(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap();
            let open = ws.next().await.unwrap().unwrap();
            assert!(open.to_text().unwrap().starts_with('0'), "{open}");
            ws.send(Message::Text("40".into())).await.unwrap();
            let mut answered = false;
            let pong = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                while let Some(Ok(frame)) = ws.next().await {
                    let text = frame.to_text().unwrap_or_default().to_owned();
                    if !answered && text.starts_with("40") {
                        answered = true;
                        ws.send(Message::Text(r#"42["ping",{"timestamp":1}]"#.into()))
                            .await
                            .unwrap();
                    } else if text.starts_with(r#"42["pong""#) {
                        return true;
                    }
                }
                false
            })
            .await;
            assert!(
                matches!(pong, Ok(true)),
                "socket {n}: no pong for the ping sent on connect"
            );
        })
    });
    for socket in futures::future::join_all(sockets).await {
        socket.unwrap();
    }
}

/// A long reply at full speed arrives whole over Socket.IO. socketioxide
/// queues at most 128 packets a socket and refuses the next, and the reply's
/// events come faster than the socket's writer sends them: the reply must
/// wait for room, not stop (it stopped after a couple of thousand tokens,
/// without a `message_complete` or an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reply_at_full_speed_arrives_whole() {
    let events = read_a_reply_at_full_speed(5000).await;
    assert!(events > 0);
}

/// A reply longer than its replay window (20,000 events by default), at
/// full speed, reaches a client that reads at once: the tokens that queued
/// while the socket's queue was full go out as one `message_token`
/// (`first_seq`..=`seq`). One event per token outran the socket until the
/// reader fell behind the window and was cut off (an error after a couple of
/// thousand tokens). Not many times the window: at full speed the demo,
/// on a core of its own, fills a window in a few milliseconds, and a reader
/// whose thread the kernel sets aside that long falls behind on any route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_longer_than_the_replay_window_at_full_speed_arrives_whole() {
    let events = read_a_reply_at_full_speed(50_000).await;
    assert!(events > 0);
}

/// Asks for a demo reply of `tokens` tokens with no delay over Socket.IO on
/// a WebSocket and reads it as fast as it comes; checks that its
/// `message_token`s cover consecutive seqs up to the `message_complete`'s,
/// with no gap or overlap, and that their text is its response. Returns how many
/// `message_token` events came.
async fn read_a_reply_at_full_speed(tokens: usize) -> usize {
    use futures::StreamExt;
    let server = start_with(|c| {
        c.demo_tokens = tokens;
        c.demo_delay = std::time::Duration::ZERO;
    })
    .await;
    let url = server.ws_url("/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let (mut events, mut last_seq, mut text) = (0, None, String::new());
    let complete = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(Ok(frame)) = ws.next().await {
            let frame = frame.to_text().unwrap_or_default().to_owned();
            let ask = r#"42["send_message",{"chat_id":"long","message":"a long one"}]"#;
            if let Turn::Event(event) = engine_io_turn(&mut ws, &frame, ask).await {
                let data = &event[1];
                match event[0].as_str().unwrap() {
                    "message_token" => {
                        events += 1;
                        let seq = data["seq"].as_u64().unwrap();
                        let first = data.get("first_seq").map_or(seq, |f| f.as_u64().unwrap());
                        if let Some(last) = last_seq {
                            assert_eq!(first, last + 1, "after seq {last}: {data}");
                        }
                        assert!(seq >= first, "{data}");
                        last_seq = Some(seq);
                        text.push_str(data["token"].as_str().unwrap());
                    }
                    "message_complete" => return Some(data.clone()),
                    "error" => panic!("an error event after {events} token events: {event}"),
                    _ => {}
                }
            }
        }
        None
    })
    .await;
    let complete = complete
        .unwrap_or_else(|_| panic!("no message_complete within 60 s ({events} token events came)"))
        .expect("the socket stayed open");
    assert_eq!(complete["response"].as_str().unwrap(), text);
    let last_seq = last_seq.expect("a token");
    assert_eq!(
        last_seq + 1,
        complete["seq"].as_u64().unwrap(),
        "{complete}"
    );
    events
}

/// A client that reads slower than a reply is generated falls behind the
/// stream's replay window: it is told so, as on every route (the code
/// `STREAM_NOT_FOUND`, the stream's id, and why; it said "Stream not found
/// or expired", with no stream id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_the_replay_window_is_told_why() {
    use futures::StreamExt;
    let server = start_with(|c| {
        c.demo_tokens = 100_000;
        c.demo_delay = std::time::Duration::ZERO;
        c.replay.max_events = 64;
    })
    .await;
    // A small receive buffer: the server's writes wait for this client.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let url = server.ws_url("/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .unwrap();
    let mut tokens = 0;
    let error = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(Ok(frame)) = ws.next().await {
            let frame = frame.to_text().unwrap_or_default().to_owned();
            let ask = r#"42["send_message",{"chat_id":7,"message":"everything"}]"#;
            match engine_io_turn(&mut ws, &frame, ask).await {
                // Read nothing while the reply runs ahead.
                Turn::Asked => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
                Turn::Event(event) => match event[0].as_str().unwrap() {
                    "message_token" => tokens += 1,
                    "error" => return event[1].clone(),
                    "message_complete" => panic!("kept up after {tokens} tokens"),
                    _ => {}
                },
                Turn::Other => {}
            }
        }
        panic!("the socket closed after {tokens} tokens, with no error");
    })
    .await
    .expect("an error within 60 s");
    assert_eq!(error["code"], "STREAM_NOT_FOUND", "{error}");
    assert_eq!(error["chat_id"], 7);
    assert_eq!(error["stream_id"].as_str().unwrap().len(), 32, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("fell too far behind"),
        "{error}"
    );
}

/// What [`engine_io_turn`] did with a frame.
enum Turn {
    /// Answered the namespace's connect with the question.
    Asked,
    /// An event on the default namespace: `[name, data]`.
    Event(Value),
    /// Answered the open or a ping, or nothing to do.
    Other,
}

/// A Socket.IO client's turn on a raw WebSocket, for the server's `frame`:
/// joins the default namespace on Engine.IO's open, sends `ask` once the
/// join is answered, answers pings, and gives back events.
async fn engine_io_turn<S>(ws: &mut S, frame: &str, ask: &str) -> Turn
where
    S: futures::Sink<tokio_tungstenite::tungstenite::Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    if frame.starts_with("40") {
        ws.send(Message::Text(ask.into())).await.unwrap();
        Turn::Asked
    } else if frame.starts_with('0') {
        ws.send(Message::Text("40".into())).await.unwrap();
        Turn::Other
    } else if frame == "2" {
        ws.send(Message::Text("3".into())).await.unwrap();
        Turn::Other
    } else if let Some(event) = frame.strip_prefix("42") {
        Turn::Event(serde_json::from_str(event).unwrap())
    } else {
        Turn::Other
    }
}
