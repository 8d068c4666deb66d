//! Identity providers' keys (PEM, JWKS), claims rules (`aud`, `iss`, `nbf`,
//! `exp`), forged tokens, `--auth-required` on every entry point, the auth
//! timeout and tokens that expire mid-connection. The keys are in
//! `tests/fixtures` (made for these tests only).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> u64 {
    rill::auth::unix_now_secs()
}

/// A token with these claims, signed for `alg` with `key`, naming `kid`.
fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// Unpadded base64url, as JWTs use.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn rsa_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(fixture("ec-private.pem")).unwrap()).unwrap()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "iat": now()})
}

/// `GET /api/v1/conversations` with a bearer token: its status and code.
async fn list_with(server: &TestServer, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(server.http("/api/v1/conversations"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asks one question over a WebSocket authenticated by `?token=` and returns
/// the last frame.
async fn ask_with(server: &TestServer, token: &str) -> Value {
    let mut ws = server.ws_at(&format!("/ws/chat?token={token}")).await;
    send(&mut ws, json!({"type": "message", "message": "hi"})).await;
    recv_until_done(&mut ws, 1).await.pop().unwrap()
}

#[tokio::test]
async fn tokens_signed_with_an_identity_providers_pem_key_are_accepted() {
    let server = start_with(|c| {
        c.auth_required = true;
        c.jwt_public_key = Some(fixture("rsa-public.pem"));
    })
    .await;
    let token = sign(
        Algorithm::RS256,
        None,
        &rsa_key("rsa-private.pem"),
        claims("idp-user"),
    );
    assert_eq!(ask_with(&server, &token).await["type"], "complete");
    assert_eq!(list_with(&server, &token).await.0, 200);
    // rill's own HS256 tokens still work beside it.
    assert_eq!(list_with(&server, &server.token("local")).await.0, 200);
    // Another RSA key's signature does not.
    let stranger = sign(
        Algorithm::RS256,
        None,
        &rsa_key("rsa2-private.pem"),
        claims("x"),
    );
    let (status, body) = list_with(&server, &stranger).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("AUTH_FAILED")),
        "{body}"
    );
}

#[tokio::test]
async fn jwks_keys_are_matched_by_kid_and_encryption_keys_are_skipped() {
    let server = start_with(|c| c.jwks_file = Some(fixture("jwks.json"))).await;
    let rsa = sign(
        Algorithm::RS256,
        Some("rsa-2"),
        &rsa_key("rsa2-private.pem"),
        claims("r"),
    );
    let ec = sign(Algorithm::ES256, Some("ec-1"), &ec_key(), claims("e"));
    let no_kid = sign(Algorithm::ES256, None, &ec_key(), claims("e"));
    for token in [&rsa, &ec, &no_kid] {
        assert_eq!(list_with(&server, token).await.0, 200);
    }
    // The encryption key of the set verifies nothing; a kid names one key only;
    // the RS256-only key does not verify PS256.
    let enc = sign(
        Algorithm::RS256,
        Some("enc-1"),
        &rsa_key("rsa-private.pem"),
        claims("x"),
    );
    let wrong_kid = sign(
        Algorithm::RS256,
        Some("ec-1"),
        &rsa_key("rsa2-private.pem"),
        claims("x"),
    );
    let other_alg = sign(
        Algorithm::PS256,
        Some("rsa-2"),
        &rsa_key("rsa2-private.pem"),
        claims("x"),
    );
    for token in [&enc, &wrong_kid, &other_alg] {
        let (status, body) = list_with(&server, token).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("AUTH_FAILED")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn unusable_key_files_stop_the_server_with_the_reason() {
    let dir = temp_dir();
    for (adjust, expected) in [
        (
            Box::new(|c: &mut rill::Config| c.jwt_public_key = Some(fixture("rsa-private.pem")))
                as Box<dyn FnOnce(&mut rill::Config)>,
            "private key",
        ),
        (
            Box::new(|c: &mut rill::Config| c.jwt_public_key = Some(fixture("README.md"))),
            "not a PEM public key",
        ),
        (
            Box::new(|c: &mut rill::Config| c.jwks_file = Some(fixture("missing.json"))),
            "cannot read it",
        ),
        (
            Box::new(|c: &mut rill::Config| c.jwks_file = Some(fixture("rsa-public.pem"))),
            "not a JWKS document",
        ),
    ] {
        let mut config = rill::Config::for_tests(dir.clone());
        adjust(&mut config);
        let error = match rill::AppState::new(config).await {
            Ok(_) => panic!("started with a bad key file"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(expected), "{error}");
    }
    common::remove_data_dir(&dir);
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let server = start_with(|c| c.jwt_public_key = Some(fixture("rsa-public.pem"))).await;
    let b64 = |v: Value| base64url(v.to_string().as_bytes());
    // alg none, with and without a signature.
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims("mallory"))
    );
    let none_signed = format!("{none}c2ln");
    // The public key used as an HMAC secret (algorithm confusion).
    let public_pem = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let confused = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(&public_pem),
        claims("mallory"),
    );
    // The right secret, but an algorithm the server does not take.
    let hs512 = sign(
        Algorithm::HS512,
        None,
        &EncodingKey::from_secret(b"test-secret"),
        claims("mallory"),
    );
    // A payload changed after signing.
    let good = server.token("alice");
    let mut parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = b64(json!({"sub": "admin", "exp": now() + 600}));
    parts[1] = &tampered_payload;
    let tampered = parts.join(".");
    for token in [
        &none,
        &none_signed,
        &confused,
        &hs512,
        &tampered,
        &"a.b.c".to_owned(),
    ] {
        let (status, body) = list_with(&server, token).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("AUTH_FAILED")),
            "{token}: {body}"
        );
        assert_eq!(body["error"], "Invalid token");
    }
    // Refused before the upgrade too.
    let refused =
        tokio_tungstenite::connect_async(server.ws_url(&format!("/ws/chat?token={none}"))).await;
    assert!(refused.is_err());
    // And in an auth frame, leaving the connection usable.
    let mut ws = server.ws().await;
    send(&mut ws, json!({"type": "auth", "token": confused})).await;
    assert_eq!(recv(&mut ws).await["code"], "AUTH_FAILED");
    assert_usable(&mut ws).await;
}

#[tokio::test]
async fn exp_nbf_aud_and_iss_are_checked() {
    let server = start_with(|c| {
        c.token_rules.audience = Some("rill-test".into());
        c.token_rules.issuer = Some("https://idp.example".into());
        c.token_rules.leeway_secs = 5;
    })
    .await;
    let key = EncodingKey::from_secret(b"test-secret");
    let token = |extra: Value| {
        let mut claims = json!({"sub": "u", "exp": now() + 600, "aud": "rill-test", "iss": "https://idp.example"});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign(Algorithm::HS256, None, &key, claims)
    };
    let ok = [
        token(json!({})),
        token(json!({"aud": ["other", "rill-test"]})),
        // Within the leeway.
        token(json!({"exp": now() - 2})),
        token(json!({"nbf": now() + 2})),
    ];
    for t in &ok {
        assert_eq!(list_with(&server, t).await.0, 200, "{t}");
    }
    // rill's own tokens carry the configured aud and iss.
    assert_eq!(list_with(&server, &server.token("me")).await.0, 200);
    for (t, message) in [
        (token(json!({"aud": "someone-else"})), "Invalid token"),
        (
            token(json!({"iss": "https://evil.example"})),
            "Invalid token",
        ),
        (token(json!({"exp": now() - 60})), "Token has expired"),
        (token(json!({"nbf": now() + 60})), "Token is not valid yet"),
        (token(json!({"sub": ""})), "Invalid token"),
    ] {
        let (status, body) = list_with(&server, &t).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], message, "{body}");
    }
    let missing = sign(
        Algorithm::HS256,
        None,
        &key,
        json!({"sub": "u", "exp": now() + 60}),
    );
    assert_eq!(list_with(&server, &missing).await.0, 401);
}

/// Every route that reaches a provider, a stream or a conversation, with a body
/// where it takes one.
fn guarded_routes() -> Vec<(reqwest::Method, &'static str, Option<Value>)> {
    use reqwest::Method;
    let message = Some(json!({"message": "hi"}));
    vec![
        (Method::POST, "/api/v1/chat", message.clone()),
        (Method::POST, "/api/v1/streams", message.clone()),
        (Method::POST, "/api/v1/chat/stream", message),
        (Method::GET, "/api/v1/streams/s1/events", None),
        (Method::GET, "/api/v1/streams/s1/poll", None),
        (Method::POST, "/api/v1/streams/s1/cancel", None),
        (Method::GET, "/api/v1/models", None),
        (Method::GET, "/api/v1/conversations", None),
        (Method::GET, "/api/v1/conversations/c1", None),
        (
            Method::PATCH,
            "/api/v1/conversations/c1",
            Some(json!({"title": "t"})),
        ),
        (Method::DELETE, "/api/v1/conversations/c1", None),
        (Method::POST, "/api/v1/auth/guest", None),
    ]
}

#[tokio::test]
async fn auth_required_guards_every_route_and_socket_command() {
    let server = start_with(|c| c.auth_required = true).await;
    let client = reqwest::Client::new();
    let (_, guest) = server.state.keys.mint_guest(600);
    for (method, path, body) in guarded_routes() {
        for token in [None, Some(guest.as_str())] {
            let mut request = client.request(method.clone(), server.http(path));
            if let Some(body) = &body {
                request = request.json(body);
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(
                (status, answer["code"].as_str()),
                (401, Some("AUTH_REQUIRED")),
                "{method} {path} with {token:?}: {answer}"
            );
        }
    }
    // Health and the page shell stay open; the page shows no history.
    assert_eq!(
        client
            .get(server.http("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let page = client.get(server.http("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers().get("set-cookie").is_none(),
        "no guest cookie"
    );

    // On a socket, everything but auth, hello and ping needs the token.
    let mut ws = server.ws().await;
    for frame in [
        json!({"type": "message", "message": "hi"}),
        json!({"type": "resume", "stream_id": "s1", "after_seq": 0}),
        json!({"type": "cancel", "stream_id": "s1"}),
    ] {
        send(&mut ws, frame.clone()).await;
        let answer = recv(&mut ws).await;
        assert_eq!(answer["code"], "AUTH_REQUIRED", "{frame}: {answer}");
    }
    send(&mut ws, json!({"type": "ping", "timestamp": 1})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    // A guest token authenticates nobody here.
    send(&mut ws, json!({"type": "auth", "token": guest})).await;
    recv(&mut ws).await;
    send(&mut ws, json!({"type": "message", "message": "hi"})).await;
    assert_eq!(recv(&mut ws).await["code"], "AUTH_REQUIRED");
    // Nothing reached the store.
    let user = server.token("auditor");
    let (status, listed) = list_with(&server, &user).await;
    assert_eq!(status, 200);
    assert_eq!(listed["conversations"], json!([]));
}

#[tokio::test]
async fn a_socket_that_does_not_authenticate_in_time_is_closed() {
    let server = start_with(|c| {
        c.auth_required = true;
        c.auth_timeout = Duration::from_millis(600);
    })
    .await;
    let mut silent = server.ws().await;
    let mut prompt = server.ws().await;
    send(
        &mut prompt,
        json!({"type": "auth", "token": server.token("quick")}),
    )
    .await;
    assert_eq!(recv(&mut prompt).await["type"], "auth_success");

    let (error, code, reason) = close_of(&mut silent).await;
    assert_eq!(error.unwrap()["code"], "AUTH_REQUIRED");
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy, "authentication timeout")
    );
    // The one that authenticated is still served after the deadline.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_usable(&mut prompt).await;
}

#[tokio::test]
async fn a_token_that_expires_ends_the_connection_unless_a_fresh_one_came() {
    let server = start_with(|c| c.token_rules.leeway_secs = 0).await;
    let key = EncodingKey::from_secret(b"test-secret");
    let short = sign(
        Algorithm::HS256,
        None,
        &key,
        json!({"sub": "brief", "exp": now() + 2}),
    );
    let mut expiring = server.ws_at(&format!("/ws/chat?token={short}")).await;
    let mut refreshed = server.ws_at(&format!("/ws/chat?token={short}")).await;
    send(
        &mut refreshed,
        json!({"type": "auth", "token": server.token("brief")}),
    )
    .await;
    assert_eq!(recv(&mut refreshed).await["type"], "auth_success");

    let (error, code, reason) = close_of(&mut expiring).await;
    let error = error.unwrap();
    assert_eq!(error["code"], "AUTH_FAILED");
    assert_eq!(error["error"], "Token has expired");
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy, "token expired")
    );
    assert_usable(&mut refreshed).await;
}
