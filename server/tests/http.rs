//! Plain HTTP: the chat endpoint, its errors, health, pages.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn chat_returns_the_whole_reply() {
    let server = start().await;
    let (status, body) = post_chat(
        &server,
        json!({"message": "What is the engine power?", "session_id": "s-1"}).to_string(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["response"]
            .as_str()
            .unwrap()
            .contains("What is the engine power?")
    );
    assert_eq!(body["session_id"], "s-1");
    assert!(body["stream_id"].is_string());
    assert_eq!(body["metadata"]["agent"], "assistant");
    assert_eq!(body["metadata"]["finish_reason"], "stop");
    // The same reply the WebSocket gives for the same question (demo is deterministic).
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "What is the engine power?"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    assert_eq!(frames.last().unwrap()["response"], body["response"]);
}

#[tokio::test]
async fn chat_errors_have_codes_and_statuses() {
    let server = start_with(|c| c.max_frame_bytes = 512).await;
    for (body, status, code) in [
        (json!({"message": ""}).to_string(), 400, "EMPTY_MESSAGE"),
        (json!({}).to_string(), 400, "EMPTY_MESSAGE"),
        ("{oops".to_owned(), 400, "INVALID_MESSAGE"),
        ("[]".to_owned(), 400, "INVALID_MESSAGE"),
        (json!({"message": 5}).to_string(), 400, "INVALID_MESSAGE"),
        (
            json!({"message": "x".repeat(600)}).to_string(),
            413,
            "MESSAGE_TOO_LARGE",
        ),
    ] {
        let (got_status, got) = post_chat(&server, body.clone(), None).await;
        assert_eq!(
            (got_status, got["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
        assert!(got["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
}

#[tokio::test]
async fn chat_honours_auth() {
    let server = start_with(|c| c.auth_required = true).await;
    let (status, body) = post_chat(&server, json!({"message": "hi"}).to_string(), None).await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (401, "AUTH_REQUIRED")
    );
    let (status, body) = post_chat(
        &server,
        json!({"message": "hi"}).to_string(),
        Some("garbage"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (401, "AUTH_FAILED")
    );
    let token = server.token("dora");
    let (status, body) =
        post_chat(&server, json!({"message": "hi"}).to_string(), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn health_reports_status_connections_and_streams() {
    let server = start().await;
    let _ws = server.ws().await;
    // The upgrade completes on the server after the client sees it: wait for
    // the count, not for a while.
    tokio::time::timeout(
        FRAME_TIMEOUT,
        server.state.connections.wait_until(|open| *open == 1),
    )
    .await
    .expect("the connection is counted");
    let health = get_json(&server, "/health").await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["connections"], 1);
    assert!(health["uptime_s"].is_u64());
    assert!(health["streams"].is_u64());
}

#[tokio::test]
async fn the_test_page_and_the_chat_page_are_served() {
    let server = start().await;
    let test_page = reqwest::get(server.http("/ws/test")).await.unwrap();
    assert_eq!(test_page.status(), 200);
    let html = test_page.text().await.unwrap();
    assert!(html.contains("/ws/chat") && html.contains("auth"));

    let index = reqwest::get(server.http("/")).await.unwrap();
    assert_eq!(index.status(), 200);
    let html = index.text().await.unwrap();
    assert!(
        html.contains("<textarea"),
        "the composer is server-rendered"
    );
    assert!(html.contains("/pkg/rill.js"), "hydration script is linked");
    assert!(html.contains("data-state=\"connecting\""));

    let missing = reqwest::get(server.http("/no/such/page")).await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn pages_carry_a_nonce_policy_and_every_response_the_safety_headers() {
    let server = start().await;
    let page = reqwest::get(server.http("/")).await.unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let nonce = policy
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the policy names a nonce");
    assert!(nonce.len() >= 16, "{policy}");
    // Every script the page runs carries the policy's nonce (one per page).
    let scripts = html.matches("<script").count();
    let data_scripts = html.matches("<script type=\"application/json\"").count();
    assert_eq!(
        html.matches(&format!("nonce=\"{nonce}\"")).count(),
        scripts - data_scripts,
        "{html}"
    );
    for directive in [
        "script-src 'self' 'nonce-",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    let again = reqwest::get(server.http("/")).await.unwrap();
    assert!(
        !again.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains(nonce)
    );

    for path in [
        "/",
        "/ws/test",
        "/health",
        "/api/v1/conversations",
        "/no/such/page",
    ] {
        let response = reqwest::get(server.http(path)).await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    }
    let test_page = reqwest::get(server.http("/ws/test")).await.unwrap();
    assert!(
        test_page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let server = start_with(|c| c.allow_origins = vec!["http://ui.example".into()]).await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, server.http("/api/v1/streams"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("http://ui.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://ui.example"
    );
    let refused = preflight("http://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // Without --allow-origin nothing is allowed cross-origin.
    let closed = start().await;
    let response = client
        .get(closed.http("/health"))
        .header("origin", "http://ui.example")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn the_demo_lists_its_one_model() {
    let server = start().await;
    let models = get_json(&server, "/api/v1/models").await;
    assert_eq!(
        models,
        json!({"provider": "demo", "default": "demo", "models": [{"id": "demo"}]})
    );
}

#[tokio::test]
async fn formulas_become_mathml_and_bad_ones_say_why() {
    let server = start().await;
    let client = reqwest::Client::new();
    let post =
        |body: serde_json::Value| client.post(server.http("/api/v1/math")).json(&body).send();
    let answer = post(json!({"formulas": [
        {"tex": "\\frac{a}{b}", "display": true},
        {"tex": "x^2"},
        {"tex": "\\frac{1}{"},
        {"tex": "\\text{<script>alert(1)</script>}"},
        {"tex": "{".repeat(100)},
    ]}))
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    let block = results[0]["mathml"].as_str().unwrap();
    assert!(
        block.starts_with("<math") && block.contains("<mfrac>"),
        "{block}"
    );
    assert!(block.contains("display=\"block\""), "{block}");
    assert!(results[1]["mathml"].as_str().unwrap().contains("<msup>"));
    assert!(results[2]["error"].is_string(), "{body}");
    let text = results[3]["mathml"].as_str().unwrap();
    assert!(!text.contains("<script"), "{text}");
    assert!(
        results[4]["error"].as_str().unwrap().contains("nest"),
        "{body}"
    );

    // Bad requests: clear errors, the server stays up.
    for bad in [
        json!({"formulas": "x"}),
        json!({"formula": []}),
        json!({"formulas": vec![json!({"tex": "x"}); 65]}),
    ] {
        let answer = post(bad.clone()).await.unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["code"], "INVALID_MESSAGE", "{bad}: {body}");
    }
    let huge = post(json!({"formulas": [{"tex": "x".repeat(200_000)}]}))
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(post(json!({"formulas": []})).await.unwrap().status(), 200);
}
