//! The openai provider against a local OpenAI-compatible server: streaming,
//! leniency, every failure mode as a clear error, and cancellation that closes
//! the upstream request.

mod common;

use std::time::Duration;

use common::upstream::{API_KEY, UpstreamServer, start_upstream};
use common::*;
use rill::config::ProviderConfig;
use rill::provider::openai::OpenAiSettings;
use serde_json::{Value, json};

fn settings(upstream: &UpstreamServer, key: &str) -> OpenAiSettings {
    OpenAiSettings {
        base_url: upstream.base_url(),
        api_key: key.to_owned(),
        default_model: "gpt-ok".to_owned(),
        headers: vec![("x-gateway".to_owned(), "rill-test".to_owned())],
        first_token_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        retries: 2,
        retry_backoff: Duration::from_millis(10),
    }
}

async fn rill_for(upstream: &UpstreamServer) -> TestServer {
    let settings = settings(upstream, API_KEY);
    start_with(move |c| c.provider = ProviderConfig::OpenAi(settings)).await
}

/// Asks with `model` over WebSocket; returns every frame of the stream.
async fn ask_model(server: &TestServer, model: &str) -> Vec<Value> {
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "Say hello", "model": model, "temperature": 0.5, "max_tokens": 50}),
    )
    .await;
    recv_until_done(&mut ws, 1).await
}

fn tokens(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["token"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn tokens_stream_as_they_arrive_and_complete_carries_usage() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    let frames = ask_model(&server, "gpt-ok").await;
    let stream_id = frames[0]["stream_id"].as_str().unwrap();
    let (text, complete) = check_stream(&frames, stream_id);
    assert_eq!(text, "Hello world!");
    let token_frames: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "token")
        .map(|f| f["token"].as_str().unwrap())
        .collect();
    assert_eq!(
        token_frames,
        ["Hello", " world", "!"],
        "one token event per upstream delta"
    );
    assert_eq!(complete["response"], "Hello world!");
    assert_eq!(complete["metadata"]["model"], "gpt-ok");
    assert_eq!(complete["metadata"]["finish_reason"], "stop");
    assert_eq!(
        complete["metadata"]["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 3})
    );
    // What went upstream: the persona's instructions, the question, the options.
    let request = &upstream.requests()[0];
    assert_eq!(request["model"], "gpt-ok");
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"]["include_usage"], true);
    assert_eq!(request["temperature"], 0.5);
    assert_eq!(request["max_tokens"], 50);
    assert_eq!(request["messages"][0]["role"], "system");
    assert_eq!(
        request["messages"][1],
        json!({"role": "user", "content": "Say hello"})
    );
}

#[tokio::test]
async fn the_default_model_and_length_finish_are_reported() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "no model named"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    assert_eq!(frames[0]["model"], "gpt-ok", "--model is the default");
    let frames = ask_model(&server, "length").await;
    assert_eq!(
        frames.last().unwrap()["metadata"]["finish_reason"],
        "length"
    );
}

#[tokio::test]
async fn lenient_with_real_server_quirks() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    let frames = ask_model(&server, "quirky").await;
    let complete = frames.last().unwrap();
    assert_eq!(complete["type"], "complete", "{complete}");
    assert_eq!(
        complete["response"], "héllo 🌍 done",
        "UTF-8 split across writes survives"
    );
    assert_eq!(tokens(&frames), "héllo 🌍 done");
    assert_eq!(complete["metadata"]["finish_reason"], "stop");
    // No usage reported: an estimate, marked as one (about four characters
    // a token: "héllo 🌍 done" is 12 characters).
    let usage = &complete["metadata"]["usage"];
    assert_eq!(usage["estimated"], true, "{usage}");
    assert_eq!(usage["completion_tokens"], 3, "{usage}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 2, "{usage}");
}

#[tokio::test]
async fn replies_carry_their_timing_and_cost_from_the_price_table_and_keep_them() {
    let upstream = start_upstream().await;
    let dir = temp_dir();
    let prices = dir.join("prices.toml");
    std::fs::write(
        &prices,
        "currency = \"EUR\"\n[[price]]\nmodel = \"gpt-ok\"\ninput_per_million = 2.0\noutput_per_million = 10.0\n",
    )
    .unwrap();
    let settings = settings(&upstream, API_KEY);
    let server = start_with(move |c| {
        c.provider = ProviderConfig::OpenAi(settings);
        c.prices = Some(prices);
    })
    .await;
    let token = server.token("pricey");
    let mut ws = server.ws_at(&format!("/ws/chat?token={token}")).await;
    for (session, model) in [("priced", "gpt-ok"), ("unpriced", "length")] {
        send(
            &mut ws,
            json!({"type": "message", "message": "Say hello", "model": model, "session_id": session}),
        )
        .await;
        let frames = recv_until_done(&mut ws, 1).await;
        let complete = frames.last().unwrap();
        let metadata = &complete["metadata"];
        let timing = &metadata["timing"];
        let first = timing["first_token_ms"].as_u64().expect("timing");
        assert!(first <= timing["total_ms"].as_u64().unwrap(), "{timing}");
        if model == "gpt-ok" {
            // 12 prompt tokens at 2.0 and 3 reply tokens at 10.0 per million.
            let cost = &metadata["cost"];
            assert_eq!(cost["currency"], "EUR");
            let amount = cost["amount"].as_f64().unwrap();
            assert!((amount - 54e-6).abs() < 1e-12, "{cost}");
        } else {
            assert!(
                metadata.get("cost").is_none(),
                "a model without a price: {metadata}"
            );
        }
        // The same figures come back with the conversation.
        let read = get_json_as(&server, &format!("/api/v1/conversations/{session}"), &token).await;
        let reply = &read["messages"][1];
        assert_eq!(reply["timing"], *timing, "{read}");
        assert_eq!(reply["usage"], metadata["usage"]);
        assert_eq!(reply.get("cost"), metadata.get("cost"));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_server_that_rejects_stream_options_is_retried_without_it() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    let frames = ask_model(&server, "no-stream-options").await;
    assert_eq!(frames.last().unwrap()["response"], "Hello world!");
    let requests = upstream.requests();
    assert!(requests[0].get("stream_options").is_some());
    assert!(requests[1].get("stream_options").is_none());
    // Remembered: the next request leaves it out at once.
    ask_model(&server, "no-stream-options").await;
    assert_eq!(upstream.requests().len(), 3);
}

/// The terminal error of a stream that failed before any token.
async fn failure(server: &TestServer, model: &str) -> Value {
    let frames = ask_model(server, model).await;
    let last = frames.last().unwrap().clone();
    assert_eq!(last["type"], "error", "{last}");
    assert!(last["stream_id"].is_string());
    assert_eq!(tokens(&frames), "");
    last
}

#[tokio::test]
async fn upstream_failures_are_clear_errors_and_the_server_stays_up() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    for (model, code, needle) in [
        ("unknown-model", "PROVIDER_ERROR", "does not exist"),
        ("boom", "PROVIDER_ERROR", "HTTP 500"),
        ("malformed", "PROVIDER_ERROR", "malformed"),
        (
            "slow-first",
            "PROVIDER_ERROR",
            "did not start answering within 1 s",
        ),
        ("rate-limited", "RATE_LIMITED", "rate limiting"),
    ] {
        let error = failure(&server, model).await;
        assert_eq!(error["code"], code, "{model}: {error}");
        assert!(
            error["error"].as_str().unwrap().contains(needle),
            "{model}: {error}"
        );
    }
    // 429 was retried (2 retries) before giving up; other failures were not.
    let attempts = |model: &str| {
        upstream
            .requests()
            .iter()
            .filter(|r| r["model"] == model)
            .count()
    };
    assert_eq!(attempts("rate-limited"), 3);
    assert_eq!(attempts("boom"), 1);
    assert_eq!(attempts("unknown-model"), 1);
    let health = get_json(&server, "/health").await;
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn a_single_429_is_retried_transparently() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    let frames = ask_model(&server, "rate-limited-once").await;
    assert_eq!(frames.last().unwrap()["response"], "Hello world!");
}

#[tokio::test]
async fn a_bad_key_is_reported_without_leaking_any_key() {
    let upstream = start_upstream().await;
    let settings = settings(&upstream, "sk-wrong-but-secret-key");
    let server = start_with(move |c| c.provider = ProviderConfig::OpenAi(settings)).await;
    let error = failure(&server, "gpt-ok").await;
    assert_eq!(error["code"], "PROVIDER_ERROR");
    let text = error["error"].as_str().unwrap();
    assert!(text.contains("API key"), "{text}");
    assert!(
        !text.contains("sk-wrong") && !text.contains("wr***ey"),
        "{text}"
    );
    // Over HTTP the same failure is a 502 with the same code.
    let (status, body) = post_chat(&server, json!({"message": "hi"}).to_string(), None).await;
    assert_eq!(
        (status, body["code"].as_str().unwrap()),
        (502, "PROVIDER_ERROR")
    );
}

#[tokio::test]
async fn failures_after_some_text_keep_the_text() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    for (model, expected) in [("error-mid-stream", "Partial text"), ("stall", "Only")] {
        let frames = ask_model(&server, model).await;
        let complete = frames.last().unwrap();
        assert_eq!(complete["type"], "complete", "{model}: {complete}");
        assert_eq!(complete["metadata"]["finish_reason"], "error", "{model}");
        assert_eq!(complete["response"], expected, "{model}");
    }
}

#[tokio::test]
async fn cancel_closes_the_upstream_request() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "go on forever", "model": "endless"}),
    )
    .await;
    let mut frames = vec![recv(&mut ws).await];
    let stream_id = frames[0]["stream_id"].as_str().unwrap().to_owned();
    while frames.iter().filter(|f| f["type"] == "token").count() < 5 {
        frames.push(recv(&mut ws).await);
    }
    assert_eq!(*upstream.state.disconnects.borrow(), 0);
    send(&mut ws, json!({"type": "cancel", "stream_id": stream_id})).await;
    frames.extend(recv_until_done(&mut ws, 1).await);
    let (text, complete) = check_stream(&frames, &stream_id);
    assert_eq!(complete["metadata"]["finish_reason"], "cancelled");
    assert_eq!(complete["response"], text);
    wait_disconnects(&upstream, 1).await;
}

#[tokio::test]
async fn the_binary_streams_from_an_openai_compatible_server() {
    let upstream = start_upstream().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data_dir = temp_dir();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data_dir)
        .args([
            "--provider",
            "openai",
            "--openai-base-url",
            &upstream.base_url(),
        ])
        .args(["--openai-header", "x-gateway=rill-test"])
        .env("OPENAI_API_KEY", API_KEY)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&mut child);
    let result = async {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/chat"))
                .await
                .unwrap();
        send(
            &mut ws,
            json!({"type": "message", "message": "hi", "model": "gpt-ok"}),
        )
        .await;
        let frames = recv_until_done(&mut ws, 1).await;
        assert_eq!(frames.last().unwrap()["response"], "Hello world!");
        assert_eq!(upstream.requests()[0]["messages"][1]["content"], "hi");
    };
    let outcome = tokio::time::timeout(FRAME_TIMEOUT, result).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(data_dir);
    outcome.expect("the chat completed");
}

#[tokio::test]
async fn models_come_from_the_upstream_and_are_cached() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    for _ in 0..3 {
        let models = get_json(&server, "/api/v1/models").await;
        assert_eq!(models["provider"], "openai");
        assert_eq!(models["default"], "gpt-ok");
        let ids: Vec<&str> = models["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-ok", "length", "quirky"]);
    }
    assert_eq!(
        upstream
            .state
            .model_lists
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "cached"
    );
}

#[tokio::test]
async fn a_failing_model_list_is_a_clear_provider_error() {
    let upstream = start_upstream().await;
    let settings = settings(&upstream, "sk-wrong-key-for-models");
    let server = start_with(move |c| c.provider = ProviderConfig::OpenAi(settings)).await;
    let response = reqwest::get(server.http("/api/v1/models")).await.unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "PROVIDER_ERROR");
    assert!(body["error"].as_str().unwrap().contains("API key"));
}

/// Waits (bounded) for the upstream to see `n` closed requests.
async fn wait_disconnects(upstream: &UpstreamServer, n: usize) {
    let mut disconnects = upstream.state.disconnects.subscribe();
    tokio::time::timeout(FRAME_TIMEOUT, disconnects.wait_for(|count| *count == n))
        .await
        .expect("the upstream request was closed")
        .unwrap();
}

#[tokio::test]
async fn the_detach_grace_closes_the_upstream_request() {
    let upstream = start_upstream().await;
    let settings = settings(&upstream, API_KEY);
    let server = start_with(move |c| {
        c.provider = ProviderConfig::OpenAi(settings);
        c.detach_grace = Duration::from_millis(300);
    })
    .await;
    let (ids, _) = start_stream(
        &server,
        json!({"message": "nobody listens", "model": "endless"}),
    )
    .await;
    wait_finished(&server, &ids[0]).await;
    assert_eq!(
        terminal_event(&server, &ids[0]).await["metadata"]["finish_reason"],
        "cancelled"
    );
    wait_disconnects(&upstream, 1).await;
}

#[tokio::test]
async fn shutdown_closes_the_upstream_request() {
    let upstream = start_upstream().await;
    let settings = settings(&upstream, API_KEY);
    let server = start_with(move |c| {
        c.provider = ProviderConfig::OpenAi(settings);
        c.shutdown_grace = Duration::from_millis(200);
    })
    .await;
    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "long", "model": "endless"}),
    )
    .await;
    let start = recv(&mut ws).await;
    let stream_id = start["stream_id"].as_str().unwrap().to_owned();
    server.state.shutdown.cancel();
    wait_finished(&server, &stream_id).await;
    assert_eq!(
        terminal_event(&server, &stream_id).await["metadata"]["finish_reason"],
        "interrupted"
    );
    wait_disconnects(&upstream, 1).await;
}

#[tokio::test]
async fn auto_routing_asks_the_model_and_falls_back_with_the_reason() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    let mut ws = server.ws().await;
    let mut ask = async |question: &str| {
        send(
            &mut ws,
            json!({"type": "message", "message": question, "persona_id": "auto"}),
        )
        .await;
        recv_until_done(&mut ws, 1).await
    };
    let frames = ask("route-data: what is the variance?").await;
    let routed = frames
        .iter()
        .find(|f| f["type"] == "progress" && f.get("agent").is_some())
        .unwrap();
    assert_eq!(routed["agent"], "data_scientist");
    assert_eq!(routed["confidence"], 0.83);
    let metadata = &frames.last().unwrap()["metadata"];
    assert_eq!(metadata["agent"], "data_scientist");
    assert_eq!(metadata["confidence"], 0.83);
    assert_eq!(metadata["routing"]["method"], "model");
    // The classification went upstream, not streamed, with every persona; the
    // reply then went with the chosen persona's instructions.
    let requests = upstream.requests();
    let classification = requests.iter().find(|r| r["stream"] == false).unwrap();
    let system = classification["messages"][0]["content"].as_str().unwrap();
    for id in [
        "assistant",
        "tech_enthusiast",
        "creative_writer",
        "data_scientist",
    ] {
        assert!(system.contains(id), "{system}");
    }
    assert_eq!(classification["response_format"]["type"], "json_object");
    let reply = requests.iter().rfind(|r| r["stream"] == true).unwrap();
    assert!(
        reply["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("data scientist"),
        "{reply}"
    );
    let frames = ask("route-fenced please").await;
    assert_eq!(
        frames.last().unwrap()["metadata"]["agent"],
        "creative_writer"
    );

    for (question, reason) in [
        ("route-unknown", "unknown persona"),
        ("route-prose", "JSON"),
        ("route-fail", "classifier failed"),
    ] {
        let frames = ask(question).await;
        let metadata = &frames.last().unwrap()["metadata"];
        assert_eq!(metadata["agent"], "assistant", "{question}");
        assert_eq!(metadata["confidence"], 0.0);
        let fallback = metadata["routing"]["fallback_reason"].as_str().unwrap();
        assert!(fallback.contains(reason), "{question}: {fallback}");
        assert_eq!(
            frames.last().unwrap()["type"],
            "complete",
            "the reply still comes"
        );
    }
}

#[tokio::test]
async fn tools_and_reasoning_go_to_the_responses_api() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    // Seed 002's openai_chat, as its clients send it.
    let mut ws = server.ws_at("/ws").await;
    send(
        &mut ws,
        json!({"type": "openai_chat", "data": {"input_text": "Search the web", "model": "gpt-ok",
            "tools": [{"type": "web_search"}], "include_reasoning": true}}),
    )
    .await;
    let mut chunks = String::new();
    let response = loop {
        let frame = recv(&mut ws).await;
        match frame["type"].as_str().unwrap() {
            "chunk" => chunks.push_str(frame["chunk"].as_str().unwrap()),
            "response" => break frame,
            "error" => panic!("{frame}"),
            _ => {}
        }
    };
    assert_eq!(chunks, "Used web_search tools.");
    assert_eq!(response["data"]["output_text"], chunks);
    assert_eq!(response["data"]["reasoning"], "Thinking about the tools.");
    assert_eq!(
        response["data"]["usage"],
        json!({"prompt_tokens": 20, "completion_tokens": 4})
    );
    let request = upstream
        .requests()
        .into_iter()
        .find(|r| r.get("input").is_some())
        .expect("a Responses API request");
    assert_eq!(request["tools"], json!([{"type": "web_search"}]));
    assert_eq!(request["reasoning"], json!({"summary": "auto"}));
    assert_eq!(request["stream"], true);
    assert!(
        request["instructions"]
            .as_str()
            .unwrap()
            .contains("assistant")
    );
    assert_eq!(
        request["input"].as_array().unwrap().last().unwrap(),
        &json!({"role": "user", "content": "Search the web"})
    );

    // The native dialect: the reasoning is in the metadata; a failure upstream
    // is a clear provider error.
    let mut native = server.ws().await;
    send(
        &mut native,
        json!({"type": "message", "message": "Think", "include_reasoning": true}),
    )
    .await;
    let frames = recv_until_done(&mut native, 1).await;
    let complete = frames.last().unwrap();
    assert_eq!(complete["response"], "Used no tools.");
    assert_eq!(
        complete["metadata"]["reasoning"],
        "Thinking about the tools."
    );
    send(
        &mut native,
        json!({"type": "message", "message": "Fail", "model": "responses-fail", "tools": [{"type": "web_search"}]}),
    )
    .await;
    let frames = recv_until_done(&mut native, 1).await;
    let error = frames.last().unwrap();
    assert_eq!(error["code"], "PROVIDER_ERROR", "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("The tool broke"),
        "{error}"
    );
}

#[tokio::test]
async fn a_bad_prices_file_stops_startup_naming_the_file_and_the_mistake() {
    let dir = temp_dir();
    let file = dir.join("prices.toml");
    for (text, expected) in [
        (
            "[[price]]\nmodel = \"m\"\ninput_per_million = -2\noutput_per_million = 1\n",
            "at least 0",
        ),
        (
            "[[price]]\nmodel = \"m\"\ninput_per_milion = 2\n",
            "unknown field",
        ),
        ("[[price]\n", "line 1"),
    ] {
        std::fs::write(&file, text).unwrap();
        // Its data directory inside `dir`, removed with it.
        let mut config = rill::Config::for_tests(dir.join("data"));
        config.prices = Some(file.clone());
        let error = match rill::AppState::new(config).await {
            Ok(_) => panic!("started with a bad prices file: {text}"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(expected), "{error}");
        assert!(error.contains(&file.display().to_string()), "{error}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_question_in_a_project_sends_the_passages_as_numbered_sources() {
    let upstream = start_upstream().await;
    let server = rill_for(&upstream).await;
    // An anonymous socket's project is the anonymous owner's ("public").
    let documents = &server.state.documents;
    let identity = rill::auth::Identity::Anonymous;
    let handbook = "# Expenses\n\nExpense refunds are paid within 14 days of a complete claim.\n";
    let added = documents
        .upload(
            &identity,
            "p",
            "handbook.md",
            Some("text/markdown"),
            handbook.as_bytes().to_vec(),
        )
        .await
        .unwrap();
    documents.idle().await;
    let done = documents
        .get(&identity, "p", &added.document_id)
        .await
        .unwrap();
    assert_eq!(done.status.as_str(), "completed");

    let mut ws = server.ws().await;
    send(
        &mut ws,
        json!({"type": "message", "message": "How fast are expense refunds paid?", "project_id": "p"}),
    )
    .await;
    let frames = recv_until_done(&mut ws, 1).await;
    let stream_id = frames[0]["stream_id"].as_str().unwrap();
    let (_, complete) = check_stream(&frames, stream_id);
    assert_eq!(complete["metadata"]["sources"], json!(["handbook.md"]));
    // The model was given the passage as source [1], asked to cite it.
    let request = &upstream.requests()[0];
    let instructions = request["messages"][0]["content"].as_str().unwrap();
    assert!(
        instructions
            .contains("[1] handbook.md:\n# Expenses\n\nExpense refunds are paid within 14 days"),
        "{instructions}"
    );
    assert!(instructions.contains("cite"), "{instructions}");
    assert_eq!(
        request["messages"][1],
        json!({"role": "user", "content": "How fast are expense refunds paid?"})
    );
}
