//! The `openai` provider: any OpenAI-compatible chat completions endpoint (OpenAI,
//! Ollama, vLLM, llama.cpp's server, LiteLLM) through async-openai. Questions
//! with `tools` or `include_reasoning` go to the Responses API (`/responses`)
//! instead, whose stream events are read the same lenient way.
//!
//! Real servers deviate from the spec in small ways that strict types reject:
//! `finish_reason: ""`, missing `usage`, extra fields, keepalive comments, error
//! objects in the middle of a stream. So chunks are read with async-openai's
//! bring-your-own-types API as plain JSON and interpreted leniently here.
//!
//! Dropping the stream this provider returns drops the HTTP response, which
//! closes the upstream connection: that is how cancel, the detach grace and
//! shutdown stop generation upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use rill_protocol::{FinishReason, Usage};
use serde_json::{Value, json};

use super::{
    ChatMessage, Classified, Provider, ProviderError, ProviderEvent, ProviderRequest, Role,
};

/// How to reach the upstream and how patient to be with it.
#[derive(Clone)]
pub struct OpenAiSettings {
    /// The API base, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// The API key (may be empty for local servers). Never logged, never sent to clients.
    pub api_key: String,
    /// The model used when a request names none.
    pub default_model: String,
    /// Extra headers for gateways (`K=V`).
    pub headers: Vec<(String, String)>,
    /// Longest wait for the first token (including connecting and queueing upstream).
    pub first_token_timeout: Duration,
    /// Longest silence between chunks once tokens flow.
    pub idle_timeout: Duration,
    /// Retries after an upstream 429 before the first token.
    pub retries: u32,
    /// First retry delay, doubled each time.
    pub retry_backoff: Duration,
}

impl std::fmt::Debug for OpenAiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiSettings")
            .field("base_url", &self.base_url)
            .field(
                "api_key",
                &if self.api_key.is_empty() {
                    "(none)"
                } else {
                    "(set)"
                },
            )
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

/// The OpenAI-compatible provider.
pub struct OpenAiProvider {
    /// The async-openai client (cheap to clone: it shares its HTTP client).
    client: Client<OpenAIConfig>,
    /// Settings, for timeouts, retries and error texts.
    settings: Arc<OpenAiSettings>,
    /// Set once the upstream refused `stream_options` (older servers): later
    /// requests leave it out.
    no_stream_options: Arc<AtomicBool>,
}

impl OpenAiProvider {
    /// A provider for `settings`; fails on an invalid header or base URL.
    pub fn new(settings: OpenAiSettings) -> Result<Self, String> {
        let mut config = OpenAIConfig::new()
            .with_api_base(settings.base_url.trim_end_matches('/'))
            .with_api_key(settings.api_key.clone());
        for (key, value) in &settings.headers {
            let name = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                .map_err(|e| format!("invalid --openai-header name {key}: {e}"))?;
            config = config
                .with_header(name, value.as_str())
                .map_err(|e| format!("invalid --openai-header {key}: {e}"))?;
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        // The plain transport, without async-openai's default retry layer (which
        // retries 429, 5xx and connect errors on its own schedule): retries are
        // decided here, bounded, and only before the first token.
        let client = Client::with_config(config)
            .with_http_service(async_openai::middleware::ReqwestService::new(http));
        Ok(OpenAiProvider {
            client,
            settings: Arc::new(settings),
            no_stream_options: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn default_model(&self) -> &str {
        &self.settings.default_model
    }

    /// `GET {base}/models`, read leniently (`data[].id`).
    fn models(&self) -> futures::future::BoxFuture<'static, Result<Vec<String>, ProviderError>> {
        let client = self.client.clone();
        let settings = self.settings.clone();
        Box::pin(async move {
            let listed = tokio::time::timeout(
                settings.first_token_timeout,
                client.models().list_byot::<Value>(),
            )
            .await
            .map_err(|_| {
                ProviderError::Upstream(
                    "The model provider did not answer the model list in time".into(),
                )
            })?
            .map_err(|e| map_error(&e, &settings))?;
            let mut ids: Vec<String> = listed
                .get("data")
                .and_then(Value::as_array)
                .map(|models| {
                    models
                        .iter()
                        .filter_map(|m| m.get("id").and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            ids.sort();
            ids.dedup();
            Ok(ids)
        })
    }

    /// A small chat completion (not streamed) asking the default model for
    /// JSON naming the persona and its confidence.
    fn classify(
        &self,
        question: &str,
        personas: &[rill_protocol::PersonaInfo],
    ) -> Option<futures::future::BoxFuture<'static, Result<Classified, ProviderError>>> {
        let client = self.client.clone();
        let settings = self.settings.clone();
        let body = classify_body(&settings.default_model, question, personas);
        Some(Box::pin(async move {
            let answer = tokio::time::timeout(
                settings.first_token_timeout,
                client.chat().create_byot::<Value, Value>(body),
            )
            .await
            .map_err(|_| {
                ProviderError::Upstream("The model provider did not classify in time".into())
            })?
            .map_err(|e| map_error(&e, &settings))?;
            parse_classification(&answer)
        }))
    }

    /// Tools and reasoning summaries go through the Responses API.
    fn offers_tools(&self) -> bool {
        true
    }

    fn stream(
        &self,
        request: ProviderRequest,
    ) -> BoxStream<'static, Result<ProviderEvent, ProviderError>> {
        let settings = self.settings.clone();
        // A question with tools or asking for reasoning goes to the Responses
        // API; everything else to chat completions (which every
        // OpenAI-compatible server has).
        if !request.tools.is_empty() || request.include_reasoning {
            let opening = open_responses(self.client.clone(), settings.clone(), request);
            return futures::stream::once(opening)
                .flat_map(move |opened| match opened {
                    Ok(chunks) => {
                        read_chunks(chunks, settings.clone(), parse_response_event).boxed()
                    }
                    Err(error) => futures::stream::once(async move { Err(error) }).boxed(),
                })
                .boxed();
        }
        let opening = open(
            self.client.clone(),
            self.settings.clone(),
            self.no_stream_options.clone(),
            request,
        );
        futures::stream::once(opening)
            .flat_map(move |opened| match opened {
                Ok(chunks) => read_chunks(chunks, settings.clone(), parse_chat_chunk).boxed(),
                Err(error) => futures::stream::once(async move { Err(error) }).boxed(),
            })
            .boxed()
    }
}

/// Longest part of a question sent to the classifier, in characters: the
/// start of a question says what it is about.
const CLASSIFY_QUESTION_CHARS: usize = 2_000;

/// The classification request: the personas, the question, JSON out.
fn classify_body(model: &str, question: &str, personas: &[rill_protocol::PersonaInfo]) -> Value {
    let list: String = personas
        .iter()
        .map(|p| format!("- {}: {}\n", p.id, p.description))
        .collect();
    let question: String = question.chars().take(CLASSIFY_QUESTION_CHARS).collect();
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": format!(
                "Choose the persona best suited to answer the user's question.\n\
                 Personas:\n{list}\
                 Answer with JSON only: {{\"persona_id\": \"<one of the ids above>\", \
                 \"confidence\": <how sure you are, 0 to 1>}}"
            )},
            {"role": "user", "content": question},
        ],
        "stream": false,
        "temperature": 0,
        "max_tokens": 60,
        "response_format": {"type": "json_object"},
    })
}

/// The persona and confidence of a classification answer; an error says what
/// was wrong with it.
fn parse_classification(answer: &Value) -> Result<Classified, ProviderError> {
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| ProviderError::Upstream("the classifier's answer has no text".into()))?;
    // Models sometimes wrap JSON in a code fence.
    let json = content
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```");
    let parsed: Value = serde_json::from_str(json.trim())
        .map_err(|_| ProviderError::Upstream("the classifier did not answer with JSON".into()))?;
    let persona_id = parsed["persona_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ProviderError::Upstream("the classifier named no persona_id".into()))?;
    let confidence = parsed["confidence"]
        .as_f64()
        .filter(|c| c.is_finite())
        .ok_or_else(|| ProviderError::Upstream("the classifier gave no confidence".into()))?;
    Ok(Classified {
        persona_id: persona_id.chars().take(64).collect(),
        confidence: confidence.clamp(0.0, 1.0),
    })
}

type Chunks = std::pin::Pin<Box<dyn Stream<Item = Result<Value, OpenAIError>> + Send>>;

fn role(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn body(request: &ProviderRequest, include_usage: bool) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|ChatMessage { role: r, content }| json!({"role": role(*r), "content": content}))
        .collect();
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "stream": true,
    });
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(max_tokens) = request.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    body
}

/// Opens the stream: retries 429 with backoff, and drops `stream_options` once
/// if the server rejects it.
async fn open(
    client: Client<OpenAIConfig>,
    settings: Arc<OpenAiSettings>,
    no_stream_options: Arc<AtomicBool>,
    request: ProviderRequest,
) -> Result<Chunks, ProviderError> {
    let deadline = tokio::time::Instant::now() + settings.first_token_timeout;
    let mut attempt = 0;
    loop {
        let include_usage = !no_stream_options.load(Ordering::Relaxed);
        let opened = tokio::time::timeout_at(
            deadline,
            client
                .chat()
                .create_stream_byot::<Value, Value>(body(&request, include_usage)),
        )
        .await;
        let error = match opened {
            Err(_) => return Err(first_token_timeout(&settings)),
            Ok(Ok(chunks)) => return Ok(chunks),
            Ok(Err(error)) => error,
        };
        if status(&error) == Some(400) && include_usage && mentions_stream_options(&error) {
            tracing::info!("upstream rejects stream_options: leaving it out from now on");
            no_stream_options.store(true, Ordering::Relaxed);
            continue;
        }
        retry_or_fail(&error, &mut attempt, &settings).await?;
    }
}

/// After a failed open: waits and returns `Ok` when the upstream rate limited
/// us and retries remain; the error as a provider error otherwise.
async fn retry_or_fail(
    error: &OpenAIError,
    attempt: &mut u32,
    settings: &OpenAiSettings,
) -> Result<(), ProviderError> {
    if status(error) == Some(429) && *attempt < settings.retries {
        let delay = settings.retry_backoff * 2u32.saturating_pow(*attempt);
        tracing::info!(attempt, ?delay, "upstream rate limited: retrying");
        tokio::time::sleep(delay).await;
        *attempt += 1;
        return Ok(());
    }
    Err(map_error(error, settings))
}

/// The Responses API request: the system prompt as `instructions`, the rest
/// of the prompt as `input`, the tools, and a reasoning summary when asked.
fn responses_body(request: &ProviderRequest) -> Value {
    let instructions: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let input: Vec<Value> = request
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|ChatMessage { role: r, content }| json!({"role": role(*r), "content": content}))
        .collect();
    let mut body = json!({
        "model": request.model,
        "input": input,
        "stream": true,
    });
    if !instructions.is_empty() {
        body["instructions"] = json!(instructions.join("\n\n"));
    }
    if !request.tools.is_empty() {
        body["tools"] = json!(request.tools);
    }
    if request.include_reasoning {
        body["reasoning"] = json!({"summary": "auto"});
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(max_tokens) = request.max_tokens {
        body["max_output_tokens"] = json!(max_tokens);
    }
    body
}

/// Opens a Responses API stream (`POST {base}/responses`), retrying 429.
async fn open_responses(
    client: Client<OpenAIConfig>,
    settings: Arc<OpenAiSettings>,
    request: ProviderRequest,
) -> Result<Chunks, ProviderError> {
    let deadline = tokio::time::Instant::now() + settings.first_token_timeout;
    let body = responses_body(&request);
    let mut attempt = 0;
    loop {
        let opened = tokio::time::timeout_at(
            deadline,
            client
                .responses()
                .create_stream_byot::<Value, Value>(body.clone()),
        )
        .await;
        match opened {
            Err(_) => return Err(first_token_timeout(&settings)),
            Ok(Ok(chunks)) => return Ok(chunks),
            Ok(Err(error)) => retry_or_fail(&error, &mut attempt, &settings).await?,
        }
    }
}

/// What one upstream event says.
#[derive(Debug, Default, PartialEq)]
struct Parsed {
    /// Reply text.
    token: Option<String>,
    /// Reasoning summary text.
    reasoning: Option<String>,
    /// How the reply ends, once said.
    finish_reason: Option<FinishReason>,
    /// Token counts, once said.
    usage: Option<Usage>,
    /// The upstream's failure message.
    error: Option<String>,
    /// Nothing follows (the Responses API's terminal events).
    done: bool,
}

/// A chat completion chunk.
fn parse_chat_chunk(chunk: &Value) -> Parsed {
    if let Some(error) = chunk.get("error") {
        return Parsed {
            error: Some(error_message(error)),
            ..Parsed::default()
        };
    }
    let choice = chunk.get("choices").and_then(|c| c.get(0));
    Parsed {
        token: choice
            .and_then(|c| c.get("delta"))
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        finish_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .map(|reason| match reason {
                "length" => FinishReason::Length,
                _ => FinishReason::Stop,
            }),
        usage: parse_usage(chunk, "prompt_tokens", "completion_tokens"),
        ..Parsed::default()
    }
}

/// A Responses API stream event (its `type` says which).
fn parse_response_event(event: &Value) -> Parsed {
    let text = || {
        event["delta"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    let response = &event["response"];
    match event["type"].as_str().unwrap_or_default() {
        "response.output_text.delta" => Parsed {
            token: text(),
            ..Parsed::default()
        },
        "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => Parsed {
            reasoning: text(),
            ..Parsed::default()
        },
        "response.completed" => Parsed {
            finish_reason: Some(FinishReason::Stop),
            usage: parse_usage(response, "input_tokens", "output_tokens"),
            done: true,
            ..Parsed::default()
        },
        "response.incomplete" => Parsed {
            finish_reason: Some(FinishReason::Length),
            usage: parse_usage(response, "input_tokens", "output_tokens"),
            done: true,
            ..Parsed::default()
        },
        "response.failed" => Parsed {
            error: Some(error_message(&response["error"])),
            ..Parsed::default()
        },
        "error" => Parsed {
            error: Some(error_message(event)),
            ..Parsed::default()
        },
        _ => Parsed::default(),
    }
}

/// An upstream error object's message.
fn error_message(error: &Value) -> String {
    error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("unknown error")
        .to_owned()
}

/// Reads upstream events (chunks, as `parse` reads them) into provider
/// events, with the first-token and idle timeouts.
fn read_chunks(
    chunks: Chunks,
    settings: Arc<OpenAiSettings>,
    parse: fn(&Value) -> Parsed,
) -> impl Stream<Item = Result<ProviderEvent, ProviderError>> {
    struct Reading {
        chunks: Chunks,
        settings: Arc<OpenAiSettings>,
        got_token: bool,
        finish_reason: Option<FinishReason>,
        usage: Option<Usage>,
        done: bool,
    }
    let state = Reading {
        chunks,
        settings,
        got_token: false,
        finish_reason: None,
        usage: None,
        done: false,
    };
    futures::stream::unfold(state, move |mut state| async move {
        if state.done {
            return None;
        }
        let finished = |state: &mut Reading| {
            state.done = true;
            ProviderEvent::Finished {
                finish_reason: state.finish_reason.unwrap_or(FinishReason::Stop),
                usage: state.usage,
            }
        };
        loop {
            let limit = if state.got_token {
                state.settings.idle_timeout
            } else {
                state.settings.first_token_timeout
            };
            let next = match tokio::time::timeout(limit, state.chunks.next()).await {
                Err(_) => {
                    state.done = true;
                    let error = if state.got_token {
                        ProviderError::Upstream(format!(
                            "The model provider stopped sending for {} s",
                            limit.as_secs()
                        ))
                    } else {
                        first_token_timeout(&state.settings)
                    };
                    return Some((Err(error), state));
                }
                Ok(next) => next,
            };
            let chunk = match next {
                None => return Some((Ok(finished(&mut state)), state)),
                Some(Err(error)) => {
                    state.done = true;
                    return Some((Err(map_error(&error, &state.settings)), state));
                }
                Some(Ok(chunk)) => chunk,
            };
            let parsed = parse(&chunk);
            if let Some(message) = parsed.error {
                state.done = true;
                return Some((
                    Err(ProviderError::Upstream(format!(
                        "The model provider failed mid-stream: {}",
                        redact(&message, &state.settings)
                    ))),
                    state,
                ));
            }
            if parsed.usage.is_some() {
                state.usage = parsed.usage;
            }
            if parsed.finish_reason.is_some() {
                state.finish_reason = parsed.finish_reason;
            }
            if let Some(token) = parsed.token {
                state.got_token = true;
                return Some((Ok(ProviderEvent::Token(token)), state));
            }
            if let Some(reasoning) = parsed.reasoning {
                // Reasoning comes before the reply: it counts as the model answering.
                state.got_token = true;
                return Some((Ok(ProviderEvent::Reasoning(reasoning)), state));
            }
            if parsed.done {
                return Some((Ok(finished(&mut state)), state));
            }
        }
    })
}

/// Token counts under `prompt`/`completion` keys of the object's `usage`.
fn parse_usage(object: &Value, prompt: &str, completion: &str) -> Option<Usage> {
    let usage = object.get("usage")?;
    let count = |key: &str| {
        usage
            .get(key)
            .and_then(Value::as_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    Some(Usage {
        prompt_tokens: count(prompt)?,
        completion_tokens: count(completion)?,
        estimated: false,
    })
}

fn status(error: &OpenAIError) -> Option<u16> {
    match error {
        OpenAIError::ApiError(api) => Some(api.status_code.as_u16()),
        OpenAIError::Reqwest(e) => e.status().map(|s| s.as_u16()),
        _ => None,
    }
}

fn mentions_stream_options(error: &OpenAIError) -> bool {
    matches!(error, OpenAIError::ApiError(api) if api.api_error.message.contains("stream_options"))
}

fn first_token_timeout(settings: &OpenAiSettings) -> ProviderError {
    ProviderError::Upstream(format!(
        "The model provider did not start answering within {} s",
        settings.first_token_timeout.as_secs()
    ))
}

/// Never let the key reach a client or a log, even if an upstream echoes it.
fn redact(text: &str, settings: &OpenAiSettings) -> String {
    if settings.api_key.len() >= 8 {
        text.replace(&settings.api_key, "[redacted]")
    } else {
        text.to_owned()
    }
}

/// A clear, safe message for an upstream failure.
fn map_error(error: &OpenAIError, settings: &OpenAiSettings) -> ProviderError {
    let detail = match error {
        OpenAIError::ApiError(api) => redact(&api.api_error.message, settings),
        _ => String::new(),
    };
    let message = match (status(error), error) {
        (Some(401 | 403), _) => {
            "The model provider rejected the API key (check OPENAI_API_KEY)".to_owned()
        }
        (Some(404), _) => {
            format!("The model provider does not know this model or endpoint: {detail}")
        }
        (Some(429), _) => {
            return ProviderError::RateLimited(
                "The model provider is rate limiting requests; try again shortly".to_owned(),
            );
        }
        (Some(code), _) if code >= 500 => format!("The model provider failed (HTTP {code})"),
        (Some(code), _) => {
            format!("The model provider refused the request (HTTP {code}): {detail}")
        }
        (None, OpenAIError::Reqwest(e)) if e.is_connect() || e.is_timeout() => format!(
            "Could not reach the model provider at {}",
            settings.base_url
        ),
        (None, OpenAIError::JSONDeserialize(..) | OpenAIError::StreamError(_)) => {
            "The model provider sent a malformed stream".to_owned()
        }
        (None, _) => "The model provider failed".to_owned(),
    };
    tracing::warn!(error = %redact(&error.to_string(), settings), "upstream error");
    ProviderError::Upstream(message)
}
