//! Authentication: the auth frame, ?token=, Authorization: Bearer, and --auth-required.

mod common;

use common::*;
use serde_json::json;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn a_valid_auth_frame_is_answered_with_the_user() {
    let server = start().await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "auth", "token": server.token("alice")}),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["type"], "auth_success", "{answer}");
    assert_eq!(answer["message"], "Authentication successful");
    assert_eq!(answer["user"]["id"], "alice");
    assert_eq!(answer["user"]["email"], "alice@example.com");
    assert_eq!(answer["user"]["name"], "alice");
    assert_eq!(answer["protocol"], 1);
}

#[tokio::test]
async fn a_bad_token_gets_auth_error_and_the_connection_stays() {
    let server = start().await;
    let mut ws = server.ws().await;
    let foreign =
        rill::auth::JwtKeys::from_secret(b"another secret").mint("mallory", None, None, 60);
    for token in ["your_jwt_token", "", foreign.as_str()] {
        send(&mut ws, json!({"type": "auth", "token": token})).await;
        let answer = recv(&mut ws).await;
        assert_eq!(answer["type"], "auth_error", "{answer}");
        assert_eq!(answer["code"], "AUTH_FAILED");
        assert!(answer["message"].as_str().unwrap().contains("token"));
    }
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn auth_required_refuses_anonymous_messages() {
    let server = start_with(|c| c.auth_required = true).await;
    let mut ws = server.ws().await;
    send(&mut ws, json!({"type": "message", "message": "hi"})).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["code"], "AUTH_REQUIRED", "{answer}");
    // Authenticating on the same connection then works.
    send(
        &mut ws,
        json!({"type": "auth", "token": server.token("bob")}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "auth_success");
    send(&mut ws, json!({"type": "message", "message": "hi"})).await;
    let frames = recv_until_done(&mut ws, 1).await;
    assert_eq!(frames.last().unwrap()["type"], "complete");
}

#[tokio::test]
async fn token_in_query_or_header_authenticates_the_connection() {
    let server = start_with(|c| c.auth_required = true).await;
    let token = server.token("carol");
    let mut by_query = server.ws_at(&format!("/ws/chat?token={token}")).await;
    send(&mut by_query, json!({"type": "message", "message": "hi"})).await;
    assert_eq!(
        recv_until_done(&mut by_query, 1).await.last().unwrap()["type"],
        "complete"
    );

    let mut request = server.ws_url("/ws/chat").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut by_header, _) = connect_async(request).await.unwrap();
    send(&mut by_header, json!({"type": "message", "message": "hi"})).await;
    assert_eq!(
        recv_until_done(&mut by_header, 1).await.last().unwrap()["type"],
        "complete"
    );
}

#[tokio::test]
async fn a_bad_token_in_the_url_is_refused_before_the_upgrade() {
    let server = start().await;
    let error = connect_async(server.ws_url("/ws/chat?token=garbage"))
        .await
        .unwrap_err();
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 401);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["code"], "AUTH_FAILED");
        }
        other => panic!("expected a 401, got {other:?}"),
    }
}

#[tokio::test]
async fn another_users_stream_is_forbidden() {
    let server = start().await;
    let mut alice = server
        .ws_at(&format!("/ws/chat?token={}", server.token("alice")))
        .await;
    send(&mut alice, json!({"type": "message", "message": "mine"})).await;
    let frames = recv_until_done(&mut alice, 1).await;
    let stream_id = frames[0]["stream_id"].as_str().unwrap();
    let mut bob = server
        .ws_at(&format!("/ws/chat?token={}", server.token("bob")))
        .await;
    send(
        &mut bob,
        json!({"type": "resume", "stream_id": stream_id, "after_seq": 0}),
    )
    .await;
    assert_eq!(recv(&mut bob).await["code"], "FORBIDDEN");
    let mut anonymous = server.ws().await;
    send(
        &mut anonymous,
        json!({"type": "cancel", "stream_id": stream_id}),
    )
    .await;
    assert_eq!(recv(&mut anonymous).await["code"], "FORBIDDEN");
}
