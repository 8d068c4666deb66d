//! Conversations through the server: the question and the reply are stored,
//! history reaches the model within its budget, every conversation id form
//! resolves, ownership holds on every route, and the HTTP conversation routes.

mod common;

use std::time::Duration;

use common::upstream::{API_KEY, start_upstream};
use common::*;
use rill::config::ProviderConfig;
use rill::provider::openai::OpenAiSettings;
use serde_json::{Value, json};

/// A request to `path` with an optional bearer token: (status, JSON body or Null).
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, server.http(path));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `GET path` with an optional bearer token: (status, JSON body or Null).
async fn get_as(server: &TestServer, path: &str, bearer: Option<&str>) -> (u16, Value) {
    call(server, reqwest::Method::GET, path, bearer, None).await
}

/// `GET path` as a browser sends it: with its `Cookie` and `Origin`, if any.
async fn get_with_cookie(
    server: &TestServer,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(server.http(path));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap()
}

/// Sends `frame` on a fresh WebSocket authenticated with `token` (if any) and
/// returns every frame up to the terminal one.
async fn ask(server: &TestServer, token: Option<&str>, frame: Value) -> Vec<Value> {
    let mut ws = server.ws().await;
    if let Some(token) = token {
        send(&mut ws, json!({"type": "auth", "token": token})).await;
        assert_eq!(recv(&mut ws).await["type"], "auth_success");
    }
    send(&mut ws, frame).await;
    let first = recv(&mut ws).await;
    if first["type"] == "error" {
        return vec![first];
    }
    let mut frames = vec![first];
    frames.extend(recv_until_done(&mut ws, 1).await);
    frames
}

#[tokio::test]
async fn question_and_reply_are_stored_in_the_named_conversation() {
    let server = start().await;
    let alice = server.token("alice");
    let frames = ask(
        &server,
        Some(&alice),
        json!({"type": "message", "message": "Hello there\nsecond line", "session_id": "python-session-1", "customer_id": "cust-9"}),
    )
    .await;
    let start = &frames[0];
    assert_eq!(start["type"], "start");
    assert_eq!(start["session_id"], "python-session-1");
    let (text, complete) = check_stream(&frames, start["stream_id"].as_str().unwrap());
    assert_eq!(complete["session_id"], "python-session-1");

    let (status, conversation) = get_as(
        &server,
        "/api/v1/conversations/python-session-1",
        Some(&alice),
    )
    .await;
    assert_eq!(status, 200, "{conversation}");
    assert_eq!(conversation["title"], "Hello there");
    assert_eq!(conversation["customer_id"], "cust-9");
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "Hello there\nsecond line");
    assert_eq!(messages[0]["id"], start["user_message_id"]);
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["id"], start["message_id"]);
    assert_eq!(messages[1]["content"], text.as_str());
    assert_eq!(messages[1]["status"], "complete");
    assert_eq!(messages[1]["stream_id"], start["stream_id"]);
    assert_eq!(messages[1]["persona_id"], "assistant");

    // Without a session id the server makes one, and it is listed.
    let frames = ask(
        &server,
        Some(&alice),
        json!({"type": "message", "message": "Another"}),
    )
    .await;
    let new_id = frames[0]["session_id"].as_str().unwrap().to_owned();
    let (_, list) = get_as(&server, "/api/v1/conversations", Some(&alice)).await;
    let ids: Vec<&str> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [new_id.as_str(), "python-session-1"], "newest first");
}

#[tokio::test]
async fn cancelled_replies_are_stored_as_cancelled_with_their_text() {
    let server = start_with(|c| {
        c.demo_delay = Duration::from_millis(20);
        c.demo_tokens = 5000;
    })
    .await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "long", "session_id": "s-cancel"}),
    )
    .await;
    let start = recv(&mut ws).await;
    let stream_id = start["stream_id"].as_str().unwrap().to_owned();
    loop {
        if recv(&mut ws).await["type"] == "token" {
            break;
        }
    }
    send(&mut ws, json!({"type": "cancel", "stream_id": stream_id})).await;
    let frames = recv_until_done(&mut ws, 1).await;
    let complete = frames.last().unwrap();
    assert_eq!(complete["metadata"]["finish_reason"], "cancelled");
    // No token: the conversation is public (reachable by id without a token).
    let conversation = get_json(&server, "/api/v1/conversations/s-cancel").await;
    let reply = &conversation["messages"][1];
    assert_eq!(reply["status"], "cancelled");
    assert_eq!(reply["content"], complete["response"]);
    assert!(!reply["content"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn ownership_holds_on_every_route() {
    let server = start().await;
    let alice = server.token("alice");
    let bob = server.token("bob");
    let guest = call(
        &server,
        reqwest::Method::POST,
        "/api/v1/auth/guest",
        None,
        None,
    )
    .await
    .1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let frames = ask(
        &server,
        Some(&alice),
        json!({"type": "message", "message": "secret", "session_id": "alice-1"}),
    )
    .await;
    let stream_id = frames[0]["stream_id"].as_str().unwrap().to_owned();
    let reply_id = frames[0]["message_id"].as_str().unwrap().to_owned();

    // Continuing someone else's conversation, under each of its names.
    for (who, token) in [
        ("bob", Some(bob.as_str())),
        ("guest", Some(guest.as_str())),
        ("nobody", None),
    ] {
        for frame in [
            json!({"type": "message", "message": "hi", "session_id": "alice-1"}),
            json!({"type": "message", "message": "hi", "chat_id": "alice-1"}),
            json!({"type": "message", "message": "hi", "previous_response_id": reply_id}),
        ] {
            let answer = ask(&server, token, frame.clone()).await;
            assert_eq!(answer[0]["type"], "error", "{who}: {frame}");
            assert_eq!(answer[0]["code"], "FORBIDDEN", "{who}: {frame}");
        }
        let (status, body) = post_chat(
            &server,
            json!({"message": "hi", "session_id": "alice-1"}).to_string(),
            token,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{who}"
        );
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let (status, body) = call(
                &server,
                method.clone(),
                "/api/v1/conversations/alice-1",
                token,
                None,
            )
            .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (403, Some("FORBIDDEN")),
                "{who} {method}"
            );
        }
        let (status, _) = call(
            &server,
            reqwest::Method::PATCH,
            "/api/v1/conversations/alice-1",
            token,
            Some(json!({"title": "mine now"})),
        )
        .await;
        assert_eq!(status, 403, "{who}");
        // Someone else's stream cannot be resumed either.
        let mut ws = server.ws().await;
        if let Some(token) = token {
            send(&mut ws, json!({"type": "auth", "token": token})).await;
            recv(&mut ws).await;
        }
        send(
            &mut ws,
            json!({"type": "resume", "stream_id": stream_id, "after_seq": 0}),
        )
        .await;
        assert_eq!(recv(&mut ws).await["code"], "FORBIDDEN", "{who}");
    }
    // Nobody else lists it; without any token there is no list at all.
    for token in [&bob, &guest] {
        let (_, list) = get_as(&server, "/api/v1/conversations", Some(token)).await;
        assert_eq!(list["conversations"], json!([]));
    }
    let (status, body) = get_as(&server, "/api/v1/conversations", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("AUTH_REQUIRED"))
    );
    // Alice's conversation is intact, and hers to delete.
    let (_, mine) = get_as(&server, "/api/v1/conversations/alice-1", Some(&alice)).await;
    assert_eq!(mine["messages"].as_array().unwrap().len(), 2, "{mine}");
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        "/api/v1/conversations/alice-1",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = get_as(&server, "/api/v1/conversations/alice-1", Some(&alice)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));
}

#[tokio::test]
async fn guests_own_their_conversations_by_token_or_cookie() {
    let server = start().await;
    let response = reqwest::Client::new()
        .post(server.http("/api/v1/auth/guest"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with("rill_token=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    // A guest token is not a user: auth_success names the guest.
    let frames = ask(
        &server,
        Some(token),
        json!({"type": "message", "message": "guest question"}),
    )
    .await;
    let session = frames[0]["session_id"].as_str().unwrap();
    // The cookie alone identifies the guest (same-origin or no Origin).
    let cookie_pair = cookie.split(';').next().unwrap();
    let list: Value = get_with_cookie(&server, "/api/v1/conversations", Some(cookie_pair), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["conversations"][0]["id"], session);
    // …but another site's page that sends it is refused.
    let foreign = get_with_cookie(
        &server,
        "/api/v1/conversations",
        Some(cookie_pair),
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(foreign.status().as_u16(), 403);
    let refusal: Value = foreign.json().await.unwrap();
    assert_eq!(refusal["code"], "FORBIDDEN");
    assert!(
        refusal["error"]
            .as_str()
            .unwrap()
            .contains("https://evil.example")
    );
    // A stale or forged cookie is ignored, not an error.
    let stale: Value = get_with_cookie(
        &server,
        &format!("/api/v1/conversations/{session}"),
        Some("rill_token=garbage"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(stale["code"], "FORBIDDEN");

    let strict = start_with(|c| c.auth_required = true).await;
    let (status, body) = call(
        &strict,
        reqwest::Method::POST,
        "/api/v1/auth/guest",
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("AUTH_REQUIRED"))
    );
}

#[tokio::test]
async fn conversation_ids_resolve_under_every_name() {
    let server = start().await;
    let token = server.token("carol");
    let first = ask(
        &server,
        Some(&token),
        json!({"type": "message", "message": "one", "chat_id": 7}),
    )
    .await;
    assert_eq!(
        first[0]["session_id"], "7",
        "seed 004 sends numeric chat ids"
    );
    let reply_id = first[0]["message_id"].as_str().unwrap();
    let second = ask(
        &server,
        Some(&token),
        json!({"type": "message", "message": "two", "previous_response_id": reply_id}),
    )
    .await;
    assert_eq!(
        second[0]["session_id"], "7",
        "a reply id continues its conversation"
    );
    let third = ask(
        &server,
        Some(&token),
        json!({"type": "message", "message": "three", "previous_response_id": "fresh-conv"}),
    )
    .await;
    assert_eq!(
        third[0]["session_id"], "fresh-conv",
        "an unknown id names a new conversation"
    );
    let (_, seven) = get_as(&server, "/api/v1/conversations/7", Some(&token)).await;
    assert_eq!(seven["messages"].as_array().unwrap().len(), 4);
    // Bad ids are refused with their codes and nothing is stored.
    for (frame, code) in [
        (
            json!({"type": "message", "message": "x", "session_id": "a\u{0}b"}),
            "INVALID_MESSAGE",
        ),
        (
            json!({"type": "message", "message": "x", "session_id": "s".repeat(500)}),
            "INVALID_MESSAGE",
        ),
        (
            json!({"type": "message", "message": "x", "chat_id": [1]}),
            "INVALID_MESSAGE",
        ),
        (
            json!({"type": "message", "message": "x", "session_id": "7", "replace_from": "no-such-message"}),
            "NOT_FOUND",
        ),
    ] {
        let answer = ask(&server, Some(&token), frame.clone()).await;
        assert_eq!(answer[0]["code"], code, "{frame}");
    }
    let (_, seven) = get_as(&server, "/api/v1/conversations/7", Some(&token)).await;
    assert_eq!(
        seven["messages"].as_array().unwrap().len(),
        4,
        "a refused replace_from deletes nothing"
    );
}

/// The openai provider against the local upstream.
fn upstream_settings(upstream: &common::upstream::UpstreamServer) -> OpenAiSettings {
    OpenAiSettings {
        base_url: upstream.base_url(),
        api_key: API_KEY.to_owned(),
        default_model: "gpt-ok".to_owned(),
        // The local upstream insists on the header a gateway would.
        headers: vec![("x-gateway".to_owned(), "rill-test".to_owned())],
        first_token_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        retries: 0,
        retry_backoff: Duration::from_millis(10),
    }
}

/// The messages a conversation shows: (role, content, versions).
fn shown(detail: &Value) -> Vec<(String, String, usize)> {
    detail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
                m["versions"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

#[tokio::test]
async fn edits_and_regenerations_are_versions_and_history_follows_the_one_shown() {
    let upstream = start_upstream().await;
    let settings = upstream_settings(&upstream);
    let server = start_with(move |c| c.provider = ProviderConfig::OpenAi(settings)).await;
    let token = server.token("dave");
    let question = |text: &str| json!({"type": "message", "message": text, "session_id": "d"});
    let first = ask(&server, Some(&token), question("first")).await;
    let second = ask(&server, Some(&token), question("second")).await;
    let first_question = first[0]["user_message_id"].as_str().unwrap().to_owned();
    let second_reply = second[0]["message_id"].as_str().unwrap().to_owned();

    // Regenerate the second reply: a new version in its place, the question
    // not stored again, the old reply kept.
    let again = ask(
        &server,
        Some(&token),
        json!({"type": "message", "session_id": "d", "regenerate": second_reply}),
    )
    .await;
    assert_eq!(again[0]["type"], "start", "{again:?}");
    assert_eq!(
        again[0]["user_message_id"], second[0]["user_message_id"],
        "the same question is answered again"
    );
    let (_, d) = get_as(&server, "/api/v1/conversations/d", Some(&token)).await;
    assert_eq!(
        shown(&d),
        [
            ("user".into(), "first".into(), 0),
            ("assistant".into(), "Hello world!".into(), 0),
            ("user".into(), "second".into(), 0),
            ("assistant".into(), "Hello world!".into(), 2),
        ]
    );
    assert_eq!(d["messages"][3]["versions"][0], second_reply.as_str());
    assert_eq!(d["messages"][3]["id"], again[0]["message_id"]);
    // The model was asked the same question with the same history.
    let requests = upstream.requests();
    assert_eq!(requests[2]["messages"], requests[1]["messages"]);

    // Edit the first question: a new branch from the start.
    ask(
        &server,
        Some(&token),
        json!({"type": "message", "message": "first, edited", "session_id": "d", "replace_from": first_question}),
    )
    .await;
    let (_, d) = get_as(&server, "/api/v1/conversations/d", Some(&token)).await;
    assert_eq!(
        shown(&d),
        [
            ("user".into(), "first, edited".into(), 2),
            ("assistant".into(), "Hello world!".into(), 0),
        ]
    );
    // The next question's history is the edited branch only.
    ask(&server, Some(&token), question("third")).await;
    let contents = |request: &Value| -> Vec<String> {
        request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        contents(&upstream.requests()[4]),
        ["first, edited", "Hello world!", "third"]
    );

    // Switch back to the first version: its branch returns as it was left.
    let (status, d) = call(
        &server,
        reqwest::Method::POST,
        "/api/v1/conversations/d/select",
        Some(&token),
        Some(json!({"message_id": first_question})),
    )
    .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(
        shown(&d)
            .iter()
            .map(|(_, c, _)| c.as_str())
            .collect::<Vec<_>>(),
        ["first", "Hello world!", "second", "Hello world!"]
    );
    ask(&server, Some(&token), question("fourth")).await;
    assert_eq!(
        contents(&upstream.requests()[5]),
        ["first", "Hello world!", "second", "Hello world!", "fourth"]
    );
    // The export follows the branch shown too.
    let (_, exported) = get_as(
        &server,
        "/api/v1/conversations/d/export?format=json",
        Some(&token),
    )
    .await;
    assert_eq!(exported["messages"].as_array().unwrap().len(), 6);

    // Refusals: each with its code, nothing changed.
    let mallory = server.token("mallory");
    for (who, body, status, code) in [
        (&token, json!({"message_id": "no-such"}), 404, "NOT_FOUND"),
        (&token, json!({"id": "x"}), 400, "INVALID_MESSAGE"),
        (
            &mallory,
            json!({"message_id": first_question}),
            403,
            "FORBIDDEN",
        ),
    ] {
        let (got, answer) = call(
            &server,
            reqwest::Method::POST,
            "/api/v1/conversations/d/select",
            Some(who),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    for (who, frame, code) in [
        (
            &token,
            json!({"type": "message", "session_id": "d", "regenerate": "no-such-reply"}),
            "NOT_FOUND",
        ),
        (
            &token,
            json!({"type": "message", "session_id": "d", "regenerate": first_question}),
            "NOT_FOUND",
        ),
        (
            &token,
            json!({"type": "message", "session_id": "other", "regenerate": second_reply}),
            "NOT_FOUND",
        ),
        (
            &token,
            json!({"type": "message", "session_id": "d", "regenerate": second_reply, "replace_from": first_question}),
            "INVALID_MESSAGE",
        ),
        (
            &token,
            json!({"type": "message", "session_id": "d", "regenerate": second_reply, "persona_ids": ["assistant", "data_scientist"]}),
            "INVALID_MESSAGE",
        ),
        (
            &mallory,
            json!({"type": "message", "regenerate": second_reply}),
            "NOT_FOUND",
        ),
    ] {
        let answer = ask(&server, Some(who), frame.clone()).await;
        assert_eq!(answer[0]["code"], code, "{frame}");
    }
    let (_, d) = get_as(&server, "/api/v1/conversations/d", Some(&token)).await;
    assert_eq!(d["messages"].as_array().unwrap().len(), 6, "nothing stored");
}

#[tokio::test]
async fn history_reaches_the_model_within_its_budget() {
    let upstream = start_upstream().await;
    let settings = upstream_settings(&upstream);
    let server = start_with(move |c| {
        c.provider = ProviderConfig::OpenAi(settings);
        c.history_max_messages = 3;
    })
    .await;
    let token = server.token("erin");
    for question in ["q1", "q2", "q3"] {
        ask(
            &server,
            Some(&token),
            json!({"type": "message", "message": question, "session_id": "h"}),
        )
        .await;
    }
    let contents = |request: &Value| -> Vec<(String, String)> {
        request["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let requests = upstream.requests();
    let second = contents(&requests[1]);
    assert_eq!(second[0].0, "system");
    assert_eq!(
        second[1..],
        [
            ("user".to_owned(), "q1".to_owned()),
            ("assistant".to_owned(), "Hello world!".to_owned()),
            ("user".to_owned(), "q2".to_owned()),
        ]
    );
    // The third question: only the newest 3 earlier messages fit the budget.
    let third = contents(&requests[2]);
    assert_eq!(
        third[1..]
            .iter()
            .map(|(_, c)| c.as_str())
            .collect::<Vec<_>>(),
        ["Hello world!", "q2", "Hello world!", "q3"]
    );
    // include_history: false sends the question alone.
    ask(
        &server,
        Some(&token),
        json!({"type": "message", "message": "q4", "session_id": "h", "include_history": false}),
    )
    .await;
    let fourth = contents(&upstream.requests()[3]);
    assert_eq!(fourth.len(), 2);
    assert_eq!(fourth[1].1, "q4");
}

#[tokio::test]
async fn bad_requests_to_the_conversation_routes_get_their_codes() {
    let server = start().await;
    let token = server.token("fay");
    ask(
        &server,
        Some(&token),
        json!({"type": "message", "message": "x", "session_id": "f"}),
    )
    .await;
    for (body, code) in [
        (json!({"title": ""}), "INVALID_MESSAGE"),
        (json!({"title": "x".repeat(201)}), "INVALID_MESSAGE"),
        (json!({"title": "a\nb"}), "INVALID_MESSAGE"),
        (json!({"name": "no title"}), "INVALID_MESSAGE"),
        (json!(["not", "an", "object"]), "INVALID_MESSAGE"),
    ] {
        let (status, answer) = call(
            &server,
            reqwest::Method::PATCH,
            "/api/v1/conversations/f",
            Some(&token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let (status, answer) = call(
        &server,
        reqwest::Method::PATCH,
        "/api/v1/conversations/f",
        Some(&token),
        Some(json!({"title": "x".repeat(100_000)})),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (413, Some("MESSAGE_TOO_LARGE"))
    );
    let (status, renamed) = call(
        &server,
        reqwest::Method::PATCH,
        "/api/v1/conversations/f",
        Some(&token),
        Some(json!({"title": "  Trip plans  "})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(renamed["title"], "Trip plans");
    let (status, _) = call(
        &server,
        reqwest::Method::PATCH,
        "/api/v1/conversations/nope",
        Some(&token),
        Some(json!({"title": "x"})),
    )
    .await;
    assert_eq!(status, 404);
    for path in [
        "/api/v1/conversations?limit=0",
        "/api/v1/conversations?limit=abc",
        "/api/v1/conversations?limit=100000",
    ] {
        let (status, _) = get_as(&server, path, Some(&token)).await;
        assert_eq!(status, 400, "{path}");
    }
    let (status, answer) = get_as(&server, "/api/v1/conversations", Some("not-a-token")).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (401, Some("AUTH_FAILED"))
    );
}

#[tokio::test]
async fn conversations_live_in_postgresql_when_database_url_points_there() {
    sqlx::any::install_default_drivers();
    let base = std::env::var("RILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
    let admin = sqlx::AnyPool::connect(&base)
        .await
        .expect("PostgreSQL is reachable (start it: see the env notes)");
    let schema = format!("rill_it_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    let database = rill::config::DatabaseUrl(url);
    let first = {
        let database = database.clone();
        start_with(move |c| c.database_url = Some(database)).await
    };
    let token = first.token("gus");
    let frames = ask(
        &first,
        Some(&token),
        json!({"type": "message", "message": "kept in postgres", "session_id": "pg-1"}),
    )
    .await;
    let (text, _) = check_stream(&frames, frames[0]["stream_id"].as_str().unwrap());
    drop(first);
    // Another server on the same database (the SQLite file is elsewhere).
    let second = start_with(move |c| c.database_url = Some(database)).await;
    let token = second.token("gus");
    let (status, conversation) = call(
        &second,
        reqwest::Method::GET,
        "/api/v1/conversations/pg-1",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{conversation}");
    assert_eq!(conversation["messages"][0]["content"], "kept in postgres");
    assert_eq!(conversation["messages"][1]["content"], text.as_str());
    assert!(
        !second.data_dir.join("rill.db").exists(),
        "SQLite was not used"
    );
    drop(second);
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

/// The HTML of a page, sent with `cookie` if given.
async fn page_html(server: &TestServer, path: &str, cookie: Option<&str>) -> String {
    get_with_cookie(server, path, cookie, None)
        .await
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn pages_give_a_guest_identity_and_render_its_history() {
    let server = start().await;
    let home = get_with_cookie(&server, "/", None, None).await;
    assert_eq!(home.status().as_u16(), 200);
    let cookie = home.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("rill_token="), "{cookie}");
    assert!(
        home.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let token = cookie.trim_start_matches("rill_token=").to_owned();
    ask(&server, Some(&token), json!({"type": "message", "message": "Rendered <b>on</b> the server", "session_id": "page-1"})).await;

    let page = get_with_cookie(&server, "/c/page-1", Some(&cookie), None).await;
    assert!(
        page.headers().get("set-cookie").is_none(),
        "a valid cookie is kept"
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Rendered &lt;b&gt;on&lt;/b&gt; the server"),
        "the history is in the first paint"
    );
    assert!(!html.contains("<b>on</b>"), "user text is escaped");
    assert!(html.contains(r#"id="rill-initial""#));
    assert!(
        html.contains(r#"class="conversation current""#),
        "the sidebar marks it"
    );

    // Someone else's browser gets a notice, not the history.
    let stranger = page_html(&server, "/c/page-1", None).await;
    assert!(!stranger.contains("Rendered"), "no leak through the page");
    assert!(stranger.contains("belongs to someone else"));
    let missing = page_html(&server, "/c/nothing-here", Some(&cookie)).await;
    assert!(missing.contains("does not exist"));
}

#[tokio::test]
async fn deleting_a_conversation_cancels_its_running_reply() {
    let server = start_with(|c| {
        c.demo_delay = Duration::from_millis(20);
        c.demo_tokens = 5000;
    })
    .await;
    let token = server.token("hal");
    let mut ws = server.ws().await;
    send(&mut ws, json!({"type": "auth", "token": token})).await;
    recv(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "message", "message": "long", "session_id": "doomed"}),
    )
    .await;
    while recv(&mut ws).await["type"] != "token" {}
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        "/api/v1/conversations/doomed",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let frames = recv_until_done(&mut ws, 1).await;
    let complete = frames.last().unwrap();
    assert_eq!(
        complete["metadata"]["finish_reason"], "cancelled",
        "{complete}"
    );
    let (status, _) = get_as(&server, "/api/v1/conversations/doomed", Some(&token)).await;
    assert_eq!(status, 404, "nothing is written back after the delete");
}

#[tokio::test]
async fn a_conversation_exports_as_markdown_and_json_for_its_owner_only() {
    let server = start().await;
    let alice = server.token("alice");
    let mut ws = server.ws_at(&format!("/ws/chat?token={alice}")).await;
    send(
        &mut ws,
        json!({"type": "message", "message": "Export me, please", "session_id": "export-1",
               "persona_ids": ["tech_enthusiast", "creative_writer"]}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 2).await;
    let replies: Vec<String> = frames
        .iter()
        .filter(|f| f["type"] == "complete")
        .map(|f| f["response"].as_str().unwrap().to_owned())
        .collect();
    let client = reqwest::Client::new();
    let get = |format: &str, token: &str| {
        client
            .get(server.http(&format!(
                "/api/v1/conversations/export-1/export?format={format}"
            )))
            .bearer_auth(token.to_owned())
            .send()
    };
    let markdown = get("markdown", &alice).await.unwrap();
    assert_eq!(markdown.status(), 200);
    assert_eq!(
        markdown.headers()["content-type"],
        "text/markdown; charset=utf-8"
    );
    assert_eq!(
        markdown.headers()["content-disposition"],
        "attachment; filename=\"rill-export-me-please.md\""
    );
    let text = markdown.text().await.unwrap();
    assert!(text.starts_with("# Export me, please\n"), "{text}");
    assert!(text.contains("### You · "), "{text}");
    assert!(text.contains("### Tech Enthusiast · demo · "), "{text}");
    assert!(text.contains("### Creative Writer · demo · "), "{text}");
    for reply in &replies {
        assert!(text.contains(reply.trim_end()), "every reply, whole");
    }

    let json = get("json", &alice).await.unwrap();
    assert_eq!(json.status(), 200);
    assert!(
        json.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with(".json\"")
    );
    let exported: Value = json.json().await.unwrap();
    let read = get_json_as(&server, "/api/v1/conversations/export-1", &alice).await;
    assert_eq!(
        exported, read,
        "the JSON export is the conversation as the API reads it"
    );

    let bob = server.token("bob");
    assert_eq!(get("markdown", &bob).await.unwrap().status(), 403);
    assert_eq!(get("pdf", &alice).await.unwrap().status(), 400);
    let missing = client
        .get(server.http("/api/v1/conversations/nope/export"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn search_finds_the_callers_words_with_escaped_marked_snippets_and_refuses_bad_queries() {
    let server = start().await;
    let alice = server.token("alice");
    let bob = server.token("bob");
    for (token, session, text) in [
        (
            &alice,
            "find-1",
            "Where did <b>Grandma</b> keep the zanzibar spices?",
        ),
        (&alice, "find-2", "Plan a trip: zanzibar in March"),
        (&bob, "find-3", "Bob also asks about zanzibar"),
    ] {
        let frames = ask(
            &server,
            Some(token),
            json!({"type": "message", "message": text, "session_id": session}),
        )
        .await;
        assert_eq!(frames.last().unwrap()["type"], "complete", "{frames:?}");
    }
    let (status, found) = get_as(&server, "/api/v1/search?q=Zanzibar", Some(&alice)).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["terms"], json!(["zanzibar"]));
    // Alice's two questions and the demo's two replies (they quote the
    // question); never Bob's.
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{found}");
    let sessions: Vec<&str> = results
        .iter()
        .map(|r| r["conversation_id"].as_str().unwrap())
        .collect();
    assert!(sessions.contains(&"find-1") && sessions.contains(&"find-2"));
    assert!(!sessions.contains(&"find-3"), "{sessions:?}");
    let grandma = results
        .iter()
        .find(|r| r["conversation_id"] == "find-1" && r["role"] == "user")
        .unwrap();
    assert_eq!(grandma["role"], "user");
    let html = grandma["snippet_html"].as_str().unwrap();
    assert!(
        html.contains("&lt;b&gt;Grandma&lt;/b&gt;"),
        "escaped: {html}"
    );
    assert!(html.contains("<mark>zanzibar</mark>"), "marked: {html}");
    assert!(!grandma["snippet"].as_str().unwrap().contains("<mark>"));
    // Two words: both must be there. Paging with a cursor.
    let (_, both) = get_as(&server, "/api/v1/search?q=zanzibar%20march", Some(&alice)).await;
    let both = both["results"].as_array().unwrap();
    assert_eq!(both.len(), 2, "the March question and its reply");
    assert!(both.iter().all(|r| r["conversation_id"] == "find-2"));
    let (_, first) = get_as(&server, "/api/v1/search?q=zanzibar&limit=3", Some(&alice)).await;
    assert_eq!(first["results"].as_array().unwrap().len(), 3);
    let cursor = first["next"].as_str().expect("a next page").to_owned();
    let (_, second) = get_as(
        &server,
        &format!("/api/v1/search?q=zanzibar&limit=3&cursor={cursor}"),
        Some(&alice),
    )
    .await;
    assert_eq!(second["results"].as_array().unwrap().len(), 1);
    assert!(second.get("next").is_none(), "{second}");
    assert_ne!(
        first["results"][0]["message_id"],
        second["results"][0]["message_id"]
    );

    // Bad queries: clear errors, never a server error.
    for (path, code) in [
        ("/api/v1/search", "INVALID_MESSAGE"),
        ("/api/v1/search?q=", "INVALID_MESSAGE"),
        ("/api/v1/search?q=%22%20*%20:%20%26", "INVALID_MESSAGE"),
        ("/api/v1/search?q=a&limit=0", "INVALID_MESSAGE"),
        ("/api/v1/search?q=a&limit=abc", "INVALID_MESSAGE"),
        ("/api/v1/search?q=a&limit=51", "INVALID_MESSAGE"),
        ("/api/v1/search?q=a&cursor=-1", "INVALID_MESSAGE"),
        ("/api/v1/search?q=a&cursor=zz", "INVALID_MESSAGE"),
    ] {
        let (status, body) = get_as(&server, path, Some(&alice)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some(code)),
            "{path}: {body}"
        );
    }
    let long = format!("/api/v1/search?q={}", "a".repeat(501));
    let (status, body) = get_as(&server, &long, Some(&alice)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_MESSAGE"))
    );
    // Query syntax of either database is only words to rill.
    for hostile in [
        "NEAR(zanzibar",
        "zanzibar%20OR%20x",
        "zanzibar:*%20%7C%20!x",
        "%27zanzibar%27",
    ] {
        let (status, body) = get_as(
            &server,
            &format!("/api/v1/search?q={hostile}"),
            Some(&alice),
        )
        .await;
        assert_eq!(status, 200, "{hostile}: {body}");
    }
    let (status, body) = get_as(&server, "/api/v1/search?q=zanzibar", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("AUTH_REQUIRED")),
        "{body}"
    );
}

#[tokio::test]
async fn a_shared_link_shows_the_conversation_read_only_until_revoked() {
    let server = start().await;
    let alice = server.token("alice");
    let frames = ask(
        &server,
        Some(&alice),
        json!({"type": "message", "message": "Share <i>this</i> please", "session_id": "shared-1",
               "customer_id": "customer-secret-42"}),
    )
    .await;
    let reply = frames.last().unwrap()["response"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = "/api/v1/conversations/shared-1/share";
    let (status, body) = get_as(&server, path, Some(&alice)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "not shared yet"
    );
    let bob = server.token("bob");
    let (status, _) = call(&server, reqwest::Method::POST, path, Some(&bob), None).await;
    assert_eq!(status, 403, "only the owner shares");
    for bad in [
        json!({"expires_in": 0}),
        json!({"expires_in": -5}),
        json!({"expiry": 5}),
    ] {
        let (status, body) = call(
            &server,
            reqwest::Method::POST,
            path,
            Some(&alice),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("INVALID_MESSAGE")),
            "{bad}: {body}"
        );
    }
    let (status, link) = call(&server, reqwest::Method::POST, path, Some(&alice), None).await;
    assert_eq!(status, 200, "{link}");
    let page_path = link["path"].as_str().unwrap().to_owned();
    assert_eq!(page_path, format!("/s/{}", link["token"].as_str().unwrap()));
    assert!(link.get("expires_at").is_none());
    let (_, again) = call(
        &server,
        reqwest::Method::POST,
        path,
        Some(&alice),
        Some(json!({})),
    )
    .await;
    assert_eq!(
        again["token"], link["token"],
        "one live link per conversation"
    );
    let (_, live) = get_as(&server, path, Some(&alice)).await;
    assert_eq!(live["token"], link["token"]);

    // Anyone with the link, no identity at all: the conversation, read-only.
    let page = reqwest::get(server.http(&page_path)).await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("default-src 'none'") && !policy.contains("script-src"),
        "{policy}"
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Share &lt;i&gt;this&lt;/i&gt; please"),
        "question escaped: {html}"
    );
    let first_words: String = reply
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        html.contains(&first_words),
        "the reply is there: {first_words}"
    );
    assert!(!html.contains("<script"), "no script on the page");
    assert!(
        !html.contains("alice") && !html.contains("customer-secret-42"),
        "no owner identity"
    );
    assert!(!html.contains("sidebar"), "no sidebar");

    // Revoked: the page says so (410), the API has no live link.
    let (status, _) = call(&server, reqwest::Method::DELETE, path, Some(&alice), None).await;
    assert_eq!(status, 204);
    let gone = reqwest::get(server.http(&page_path)).await.unwrap();
    assert_eq!(gone.status(), 410);
    assert!(gone.text().await.unwrap().contains("This link was revoked"));
    let (status, _) = get_as(&server, path, Some(&alice)).await;
    assert_eq!(status, 404);

    // An expiring link stops working when it expires.
    let (_, short) = call(
        &server,
        reqwest::Method::POST,
        path,
        Some(&alice),
        Some(json!({"expires_in": 1})),
    )
    .await;
    assert_ne!(short["token"], link["token"], "a new link after a revoke");
    let short_path = short["path"].as_str().unwrap().to_owned();
    assert_eq!(
        reqwest::get(server.http(&short_path))
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = reqwest::get(server.http(&short_path)).await.unwrap();
    assert_eq!(expired.status(), 410);
    assert!(
        expired
            .text()
            .await
            .unwrap()
            .contains("This link has expired")
    );

    // Unknown and malformed tokens.
    for token in [
        "0123456789abcdef0123456789abcdef",
        "nope",
        "%3Cscript%3E",
        &"A".repeat(32),
    ] {
        let missing = reqwest::get(server.http(&format!("/s/{token}")))
            .await
            .unwrap();
        assert_eq!(missing.status(), 404, "{token}");
        assert!(!missing.text().await.unwrap().contains("<script>"));
    }
}
