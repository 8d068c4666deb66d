//! A local OpenAI-compatible server for tests: `POST /v1/chat/completions`
//! streams `chat.completion.chunk` server-sent events the way the OpenAI API
//! does, and the requested model picks a behaviour, including every failure mode
//! rill must survive.
//!
//! | model | behaviour |
//! |---|---|
//! | `gpt-ok` | role chunk, "Hello", " world", "!", `finish_reason: stop`, usage chunk (when asked), `[DONE]` |
//! | `length` | as `gpt-ok` but `finish_reason: length` |
//! | `quirky` | `finish_reason: ""` on every chunk, extra fields, `: keepalive` comments, no usage, UTF-8 split mid-character across writes |
//! | `unknown-model` | 404 with an OpenAI error object |
//! | `boom` | 500 with a plain-text body |
//! | `rate-limited-once` | 429 the first time, then as `gpt-ok` |
//! | `rate-limited` | 429 always |
//! | `error-mid-stream` | two tokens, then an error object in the stream |
//! | `malformed` | a data line that is not JSON |
//! | `slow-first` | headers only after 5 s |
//! | `stall` | one token, then silence |
//! | `no-stream-options` | 400 naming `stream_options` when the request has it |
//! | `endless` | a token every 20 ms until the client goes away |
//!
//! A request with `"stream": false` is a routing classification: it answers a
//! `chat.completion` whose content is picked by the question (the last user
//! message): `route-data` → `{"persona_id": "data_scientist", "confidence":
//! 0.83}`, `route-unknown` → an unknown persona, `route-prose` → text that is
//! not JSON, `route-fail` → 500, `route-fenced` → the JSON inside a code fence.
//!
//! `POST /v1/responses` streams Responses API events: with `reasoning` asked, a
//! reasoning summary in two deltas; then the reply "Used " + the tools' types
//! (or "no tools") + " tools."; then `response.completed` with usage. Model
//! `responses-fail` sends `response.failed` instead.
//!
//! Any request without `Authorization: Bearer test-key` gets 401, and without the
//! gateway header `x-gateway: rill-test` 400.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// The key the upstream accepts.
pub const API_KEY: &str = "test-key";

/// What the upstream saw.
#[derive(Default)]
pub struct Upstream {
    /// Every request body, in order.
    pub requests: Mutex<Vec<Value>>,
    /// Streamed responses whose client went away before the end (a `watch`, so
    /// tests wait for a count instead of polling it).
    pub disconnects: tokio::sync::watch::Sender<usize>,
    /// 429s already answered to `rate-limited-once`.
    rate_limited: AtomicUsize,
    /// `GET /v1/models` requests.
    pub model_lists: AtomicUsize,
}

/// A running upstream.
pub struct UpstreamServer {
    pub addr: SocketAddr,
    pub state: Arc<Upstream>,
}

impl UpstreamServer {
    /// The API base to give rill.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }
}

pub async fn start_upstream() -> UpstreamServer {
    let state = Arc::new(Upstream::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/responses", post(responses))
        .route("/v1/models", axum::routing::get(models))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    UpstreamServer { addr, state }
}

/// 401 with an OpenAI error object unless the request carries the test key.
fn refuse_unauthorized(headers: &HeaderMap) -> Option<Response> {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {API_KEY}"));
    (!authorized).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            error_body(
                "Incorrect API key provided: wr***ey.",
                "invalid_request_error",
            ),
        )
            .into_response()
    })
}

/// `GET /v1/models`, as the API lists them (extra fields and all).
async fn models(State(state): State<Arc<Upstream>>, headers: HeaderMap) -> Response {
    state.model_lists.fetch_add(1, Ordering::SeqCst);
    if let Some(refusal) = refuse_unauthorized(&headers) {
        return refusal;
    }
    let data: Vec<Value> = ["quirky", "gpt-ok", "length"]
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1, "owned_by": "test"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

fn chunk(model: &str, delta: Value, finish_reason: Value) -> String {
    let chunk = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
    });
    format!("data: {chunk}\n\n")
}

fn error_body(message: &str, kind: &str) -> String {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}}).to_string()
}

/// One write of the response body, after a pause.
struct Step {
    pause: Duration,
    bytes: Vec<u8>,
}

fn step(text: impl Into<Vec<u8>>) -> Step {
    Step {
        pause: Duration::from_millis(5),
        bytes: text.into(),
    }
}

/// Counts a disconnect if the body is dropped before its last write.
struct DisconnectGuard {
    state: Arc<Upstream>,
    finished: bool,
}

impl DisconnectGuard {
    /// The body was written to its end: not a disconnect.
    fn complete(mut self) {
        self.finished = true;
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.state.disconnects.send_modify(|n| *n += 1);
        }
    }
}

fn sse(state: Arc<Upstream>, steps: Vec<Step>, endless: Option<String>) -> Response {
    let guard = DisconnectGuard {
        state,
        finished: false,
    };
    let body = futures::stream::unfold(
        (steps.into_iter(), guard, endless, 0u64),
        |(mut steps, guard, endless, n)| async move {
            if let Some(step) = steps.next() {
                tokio::time::sleep(step.pause).await;
                return Some((
                    Ok::<_, Infallible>(Bytes::from(step.bytes)),
                    (steps, guard, endless, n),
                ));
            }
            match endless {
                Some(model) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let text = chunk(&model, json!({"content": format!(" w{n}")}), Value::Null);
                    Some((Ok(Bytes::from(text)), (steps, guard, Some(model), n + 1)))
                }
                None => {
                    guard.complete();
                    None
                }
            }
        },
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap()
}

fn ok_steps(model: &str, finish: &str, include_usage: bool) -> Vec<Step> {
    let mut steps = vec![step(chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ))];
    for token in ["Hello", " world", "!"] {
        steps.push(step(chunk(model, json!({"content": token}), Value::Null)));
    }
    steps.push(step(chunk(model, json!({}), json!(finish))));
    if include_usage {
        let usage = json!({
            "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        });
        steps.push(step(format!("data: {usage}\n\n")));
    }
    steps.push(step("data: [DONE]\n\n"));
    steps
}

/// Records a request's body and checks its key: the body as JSON, or the 401.
fn received(state: &Upstream, headers: &HeaderMap, body: &str) -> Result<Value, Box<Response>> {
    let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(request.clone());
    match refuse_unauthorized(headers) {
        Some(refusal) => Err(Box::new(refusal)),
        None => Ok(request),
    }
}

async fn completions(
    State(state): State<Arc<Upstream>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let request = match received(&state, &headers, &body) {
        Ok(request) => request,
        Err(refusal) => return *refusal,
    };
    if headers.get("x-gateway").and_then(|v| v.to_str().ok()) != Some("rill-test") {
        return (
            StatusCode::BAD_REQUEST,
            error_body("missing the x-gateway header", "invalid_request_error"),
        )
            .into_response();
    }
    if request["stream"] == json!(false) {
        return classify(&request);
    }
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    let include_usage = request["stream_options"]["include_usage"] == json!(true);
    match model.as_str() {
        "gpt-ok" => sse(state, ok_steps(&model, "stop", include_usage), None),
        "length" => sse(state, ok_steps(&model, "length", include_usage), None),
        "quirky" => {
            let text = "héllo 🌍";
            let first = chunk(
                &model,
                json!({"content": text, "extra": {"x": 1}}),
                json!(""),
            );
            // Split the write inside the 4-byte emoji.
            let cut = first.find('🌍').unwrap() + 2;
            let bytes = first.into_bytes();
            let steps = vec![
                step(": keepalive\n\n"),
                step(bytes[..cut].to_vec()),
                step(bytes[cut..].to_vec()),
                step(": keepalive\n\n"),
                step(chunk(&model, json!({"content": " done"}), json!(""))),
                step(chunk(&model, json!({}), json!("stop"))),
                step("data: [DONE]\n\n"),
            ];
            sse(state, steps, None)
        }
        "unknown-model" => (
            StatusCode::NOT_FOUND,
            error_body(
                "The model `unknown-model` does not exist",
                "invalid_request_error",
            ),
        )
            .into_response(),
        "boom" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        "rate-limited-once" if state.rate_limited.fetch_add(1, Ordering::SeqCst) == 0 => (
            StatusCode::TOO_MANY_REQUESTS,
            error_body("Rate limit reached", "rate_limit_error"),
        )
            .into_response(),
        "rate-limited-once" => sse(state, ok_steps(&model, "stop", include_usage), None),
        "rate-limited" => (
            StatusCode::TOO_MANY_REQUESTS,
            error_body("Rate limit reached", "rate_limit_error"),
        )
            .into_response(),
        "error-mid-stream" => {
            let steps = vec![
                step(chunk(&model, json!({"content": "Partial"}), Value::Null)),
                step(chunk(&model, json!({"content": " text"}), Value::Null)),
                step(format!(
                    "data: {}\n\n",
                    error_body("The server is overloaded", "server_error")
                )),
            ];
            sse(state, steps, None)
        }
        "malformed" => sse(state, vec![step("data: {not json\n\n")], None),
        "slow-first" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            sse(state, ok_steps(&model, "stop", include_usage), None)
        }
        "stall" => {
            let steps = vec![
                step(chunk(&model, json!({"content": "Only"}), Value::Null)),
                Step {
                    pause: Duration::from_secs(3600),
                    bytes: Vec::new(),
                },
            ];
            sse(state, steps, None)
        }
        "no-stream-options" if request.get("stream_options").is_some() => (
            StatusCode::BAD_REQUEST,
            error_body(
                "Unrecognized request argument supplied: stream_options",
                "invalid_request_error",
            ),
        )
            .into_response(),
        "no-stream-options" => sse(state, ok_steps(&model, "stop", false), None),
        "endless" => sse(
            state,
            vec![step(chunk(
                &model,
                json!({"content": "Start"}),
                Value::Null,
            ))],
            Some(model),
        ),
        other => (
            StatusCode::NOT_FOUND,
            error_body(
                &format!("The model `{other}` does not exist"),
                "invalid_request_error",
            ),
        )
            .into_response(),
    }
}

/// A non-streamed completion answering a routing classification.
fn classify(request: &Value) -> Response {
    let question = request["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    let content = if question.contains("route-data") {
        json!({"persona_id": "data_scientist", "confidence": 0.83}).to_string()
    } else if question.contains("route-unknown") {
        json!({"persona_id": "astrologer", "confidence": 0.99}).to_string()
    } else if question.contains("route-prose") {
        "I think the data scientist should answer.".to_owned()
    } else if question.contains("route-fenced") {
        "```json\n{\"persona_id\": \"creative_writer\", \"confidence\": 0.6}\n```".to_owned()
    } else if question.contains("route-fail") {
        return (StatusCode::INTERNAL_SERVER_ERROR, "classifier exploded").into_response();
    } else {
        json!({"persona_id": "assistant", "confidence": 0.5}).to_string()
    };
    axum::Json(json!({
        "id": "chatcmpl-route",
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 12},
    }))
    .into_response()
}

/// One Responses API stream event, as the API writes it (`event:` and `data:`).
fn response_event(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or_default()
    )
}

async fn responses(
    State(state): State<Arc<Upstream>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let request = match received(&state, &headers, &body) {
        Ok(request) => request,
        Err(refusal) => return *refusal,
    };
    let created =
        json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}});
    let mut steps = vec![step(response_event(created))];
    if request["model"] == "responses-fail" {
        let failed = json!({"type": "response.failed", "response": {"id": "resp_1", "status": "failed",
            "error": {"code": "server_error", "message": "The tool broke"}}});
        steps.push(step(response_event(failed)));
        return sse(state, steps, None);
    }
    if request["reasoning"]["summary"].is_string() {
        for delta in ["Thinking about", " the tools."] {
            steps.push(step(response_event(
                json!({"type": "response.reasoning_summary_text.delta", "delta": delta}),
            )));
        }
    }
    let tools: Vec<&str> = request["tools"]
        .as_array()
        .map(|tools| tools.iter().filter_map(|t| t["type"].as_str()).collect())
        .unwrap_or_default();
    let used = if tools.is_empty() {
        "no".to_owned()
    } else {
        tools.join(", ")
    };
    for delta in ["Used ".to_owned(), used, " tools.".to_owned()] {
        steps.push(step(response_event(
            json!({"type": "response.output_text.delta", "delta": delta}),
        )));
    }
    let completed = json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed",
        "usage": {"input_tokens": 20, "output_tokens": 4, "total_tokens": 24}}});
    steps.push(step(response_event(completed)));
    sse(state, steps, None)
}
