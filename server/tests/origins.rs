//! Origins: a WebSocket upgrade from a foreign browser origin is refused before
//! the upgrade; the cookie counts only from this server's pages or a listed
//! origin; clients that send no `Origin` are unaffected.

mod common;

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Opens `/ws/chat` with this `Origin` (none if `None`): the HTTP status of a
/// refused upgrade and its body, or `None` when it upgraded (and answers).
async fn upgrade_from(server: &TestServer, origin: Option<&str>) -> Option<(u16, Value)> {
    let mut request = server.ws_url("/ws/chat").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match connect_async(request).await {
        Ok((mut ws, _)) => {
            assert_usable(&mut ws).await;
            None
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Some((status, body))
        }
        Err(other) => panic!("unexpected failure: {other}"),
    }
}

#[tokio::test]
async fn foreign_pages_cannot_open_a_websocket_and_others_can() {
    let server = start_with(|c| c.allow_origins = vec!["https://ui.example".into()]).await;
    let own = format!("http://{}", server.addr);
    for allowed in [
        None,
        Some(own.as_str()),
        Some("https://ui.example"),
        Some("https://UI.example/"),
    ] {
        assert_eq!(upgrade_from(&server, allowed).await, None, "{allowed:?}");
    }
    for foreign in [
        "https://evil.example",
        "null",
        "http://127.0.0.1:1",
        "https://ui.example.evil.example",
    ] {
        let (status, body) = upgrade_from(&server, Some(foreign)).await.expect("refused");
        assert_eq!(status, 403, "{foreign}");
        assert_eq!(body["code"], "FORBIDDEN", "{foreign}: {body}");
        assert!(body["error"].as_str().unwrap().contains(foreign), "{body}");
    }
    // A file:// page is allowed when `null` is listed.
    let files = start_with(|c| c.allow_origins = vec!["null".into()]).await;
    assert_eq!(upgrade_from(&files, Some("null")).await, None);
}

#[tokio::test]
async fn the_cookie_counts_only_from_own_or_listed_origins() {
    let server = start_with(|c| {
        c.allow_origins = vec!["https://ui.example".into(), "*".into()];
    })
    .await;
    let token = server.token("dora");
    let cookie = format!("rill_token={token}");
    let get = |origin: Option<&'static str>, cookie: Option<String>, bearer: bool| {
        let mut request = reqwest::Client::new().get(server.http("/api/v1/conversations"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        if bearer {
            request = request.bearer_auth(&token);
        }
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(get(None, Some(cookie.clone()), false).await.0, 200);
    assert_eq!(
        get(Some("https://ui.example"), Some(cookie.clone()), false)
            .await
            .0,
        200
    );
    // `*` opens the API to any origin with a token, never with the cookie.
    let (status, body) = get(Some("https://any.example"), Some(cookie.clone()), false).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{body}"
    );
    assert_eq!(get(Some("https://any.example"), None, true).await.0, 200);
    // And `*` lets any page open a socket (its token says who it is).
    assert_eq!(
        upgrade_from(&server, Some("https://any.example")).await,
        None
    );

    // With no origin listed, a foreign page's cookie is refused; without the
    // cookie its request is anonymous (CORS keeps browsers from reading answers
    // it does not allow).
    let strict = start().await;
    let response = reqwest::Client::new()
        .get(strict.http("/api/v1/conversations"))
        .header("origin", "https://evil.example")
        .header("cookie", format!("rill_token={}", strict.token("dora")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let response = reqwest::Client::new()
        .post(strict.http("/api/v1/chat"))
        .header("origin", "https://evil.example")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}
