//! The engine: turns a `message` request into streams. It validates the request,
//! assembles the prompt (persona, later history), and drives the provider, writing
//! each reply into a hub stream. It never knows which transport asked.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rill_protocol::server::Context;
use rill_protocol::{
    ErrorCode, FinishReason, MessageRequest, Metadata, ProgressStep, ServerEvent, Usage,
};
use tokio_util::task::TaskTracker;

use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::hub::{Hub, Stream, StreamWriter};
use crate::provider::{ChatMessage, Provider, ProviderError, ProviderEvent, ProviderRequest, Role};

/// Longest accepted id (session, persona, model, client message) in characters.
const MAX_ID_CHARS: usize = 128;

/// Starts and drives generations.
#[derive(Clone)]
pub struct Engine {
    /// Where streams live.
    hub: Hub,
    /// Where replies come from.
    provider: Arc<dyn Provider>,
    /// Limits and timings.
    limits: EngineLimits,
    /// Every generation task, so shutdown can wait for them.
    tasks: TaskTracker,
    /// The provider's model list and when it was fetched (upstream lists change
    /// rarely; asking on every page load would be slow and rate-limited).
    models: Arc<tokio::sync::Mutex<Option<CachedModels>>>,
}

/// A model list and when it was fetched.
type CachedModels = (tokio::time::Instant, Vec<String>);

/// How long a fetched model list is served from memory.
const MODELS_TTL: Duration = Duration::from_secs(300);

/// The engine's limits and timings.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    /// Most personas per message (one stream each).
    pub max_personas: usize,
    /// Most streams generating at once on the whole server.
    pub max_streams: usize,
    /// How long a stream nobody is attached to keeps generating.
    pub detach_grace: std::time::Duration,
}

/// What [`Engine::start`] started.
#[derive(Clone)]
pub struct Started {
    /// The conversation the streams belong to.
    pub session_id: String,
    /// One stream per persona, in the order asked.
    pub streams: Vec<Arc<Stream>>,
}

/// Everything a generation task needs besides the provider.
struct Generation {
    writer: StreamWriter,
    session_id: String,
    message_id: String,
    persona: String,
    model: String,
    client_message_id: Option<String>,
    request: ProviderRequest,
}

impl Engine {
    /// An engine writing to `hub` with replies from `provider`.
    pub fn new(hub: Hub, provider: Arc<dyn Provider>, limits: EngineLimits) -> Self {
        Engine {
            hub,
            provider,
            limits,
            tasks: TaskTracker::new(),
            models: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// The models on offer, cached for five minutes. If the provider fails, a
    /// stale list is better than none; with no list at all the error stands.
    pub async fn models(&self) -> Result<Vec<String>> {
        // Held across the fetch on purpose: concurrent page loads share one request.
        let mut cache = self.models.lock().await;
        if let Some((fetched, models)) = cache.as_ref()
            && fetched.elapsed() < MODELS_TTL
        {
            return Ok(models.clone());
        }
        match self.provider.models().await {
            Ok(models) => {
                *cache = Some((tokio::time::Instant::now(), models.clone()));
                Ok(models)
            }
            Err(error) => match cache.as_ref() {
                Some((_, stale)) => {
                    tracing::warn!(%error, "model list: serving the cached list");
                    Ok(stale.clone())
                }
                None => Err(match error {
                    ProviderError::RateLimited(message) => Error::RateLimited(message),
                    ProviderError::Upstream(message) => Error::Provider(message),
                }),
            },
        }
    }

    /// The model used when a request names none.
    pub fn default_model(&self) -> String {
        self.provider.model_for(None)
    }

    /// The provider's name (`demo`, `openai`).
    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    /// The hub streams are written to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The generation tasks (closed and awaited on shutdown).
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Validates `request` and starts one stream per persona. The streams run in
    /// the server whatever happens to the caller.
    pub fn start(&self, identity: &Identity, request: MessageRequest) -> Result<Started> {
        let question = request.text().ok_or(Error::EmptyMessage)?.to_owned();
        let personas = request.personas();
        if personas.len() > self.limits.max_personas {
            return Err(Error::InvalidMessage(format!(
                "too many personas: at most {} per message",
                self.limits.max_personas
            )));
        }
        for (field, value) in [
            ("session_id", request.conversation_id()),
            ("model", request.model.as_deref()),
            ("client_message_id", request.client_message_id.as_deref()),
        ]
        .into_iter()
        .chain(personas.iter().map(|p| ("persona_id", Some(p.as_str()))))
        {
            if let Some(value) = value {
                check_id(field, value)?;
            }
        }
        if self.hub.running() + personas.len() > self.limits.max_streams {
            return Err(Error::Overloaded);
        }
        if let Some(t) = request.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(Error::InvalidMessage(
                "temperature must be between 0 and 2".into(),
            ));
        }
        let session_id = request
            .conversation_id()
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let model = self.provider.model_for(request.model.as_deref());

        let mut streams = Vec::with_capacity(personas.len());
        for persona in personas {
            let (stream, writer) = self.hub.create(identity.owner().map(str::to_owned));
            let generation = Generation {
                writer,
                session_id: session_id.clone(),
                message_id: uuid::Uuid::now_v7().to_string(),
                request: ProviderRequest {
                    model: model.clone(),
                    persona: persona.clone(),
                    messages: prompt(&persona, &question),
                    temperature: request.temperature,
                    max_tokens: request.max_tokens,
                },
                persona,
                model: model.clone(),
                client_message_id: request.client_message_id.clone(),
            };
            self.tasks.spawn(drive(
                self.provider.clone(),
                generation,
                self.limits.detach_grace,
            ));
            streams.push(stream);
        }
        Ok(Started {
            session_id,
            streams,
        })
    }
}

impl Engine {
    /// The stream `stream_id` if `identity` may attach to or cancel it:
    /// `STREAM_NOT_FOUND` if unknown or expired, `FORBIDDEN` if someone else's.
    pub fn stream_for(&self, identity: &Identity, stream_id: &str) -> Result<Arc<Stream>> {
        let stream = self.hub.get(stream_id).ok_or(Error::StreamNotFound)?;
        if !stream.is_accessible_by(identity.owner()) {
            return Err(Error::Forbidden);
        }
        Ok(stream)
    }
}

fn check_id(field: &str, value: &str) -> Result<()> {
    if value.chars().count() > MAX_ID_CHARS || value.chars().any(char::is_control) {
        return Err(Error::InvalidMessage(format!(
            "{field} must be at most {MAX_ID_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

/// The messages sent to the provider: the persona's instructions, then the question.
fn prompt(persona: &str, question: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage {
            role: Role::System,
            content: format!(
                "You are {persona}, a helpful assistant in a chat. Answer in Markdown."
            ),
        },
        ChatMessage {
            role: Role::User,
            content: question.to_owned(),
        },
    ]
}

/// Runs one generation to its terminal event. Dropping the provider stream (on
/// cancel, detach grace or shutdown) is what stops the provider.
async fn drive(provider: Arc<dyn Provider>, generation: Generation, detach_grace: Duration) {
    let Generation {
        mut writer,
        session_id,
        message_id,
        persona,
        model,
        client_message_id,
        request,
    } = generation;
    let id = writer.id().to_owned();
    let stream = writer.stream().clone();
    let cancel = stream.cancellation().clone();
    let detached = stream.detached_for(detach_grace);
    tokio::pin!(detached);
    writer.publish(|seq| ServerEvent::Start {
        stream_id: id.clone(),
        seq,
        session_id: session_id.clone(),
        message_id,
        persona_id: persona.clone(),
        model: model.clone(),
        client_message_id,
    });
    writer.publish(|seq| ServerEvent::Progress {
        stream_id: id.clone(),
        seq,
        step: ProgressStep::Starting,
        message: "Processing started".into(),
    });
    writer.publish(|seq| ServerEvent::Progress {
        stream_id: id.clone(),
        seq,
        step: ProgressStep::Generating,
        message: "Generating response...".into(),
    });

    let mut reply = String::new();
    let mut tokens = provider.stream(request);
    let (finish_reason, usage) = loop {
        let item = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                let reason = if stream.is_interrupted() {
                    FinishReason::Interrupted
                } else {
                    FinishReason::Cancelled
                };
                break (reason, None);
            }
            () = &mut detached => {
                tracing::info!(stream_id = %id, "nobody attached for the detach grace: cancelling");
                break (FinishReason::Cancelled, None);
            }
            item = tokens.next() => item,
        };
        match item {
            Some(Ok(ProviderEvent::Token(token))) => {
                if token.is_empty() {
                    continue;
                }
                reply.push_str(&token);
                writer.publish(|seq| ServerEvent::Token {
                    stream_id: id.clone(),
                    seq,
                    token,
                    partial_response: None,
                });
            }
            Some(Ok(ProviderEvent::Finished {
                finish_reason,
                usage,
            })) => break (finish_reason, usage),
            None => break (FinishReason::Stop, None),
            Some(Err(error)) => {
                tracing::warn!(stream_id = %id, %error, "provider failed");
                if reply.is_empty() {
                    let (error, code) = match error {
                        ProviderError::RateLimited(message) => (message, ErrorCode::RateLimited),
                        ProviderError::Upstream(message) => (message, ErrorCode::ProviderError),
                    };
                    writer.finish(|seq| ServerEvent::Error {
                        error,
                        code,
                        stream_id: Some(id.clone()),
                        seq: Some(seq),
                    });
                    return;
                }
                break (FinishReason::Error, None);
            }
        }
    };
    // Stop the provider before announcing the end.
    drop(tokens);
    writer.finish(|seq| ServerEvent::Complete {
        stream_id: id.clone(),
        seq,
        response: reply,
        session_id,
        metadata: metadata(persona, model, finish_reason, usage),
    });
}

fn metadata(
    agent: String,
    model: String,
    finish_reason: FinishReason,
    usage: Option<Usage>,
) -> Metadata {
    Metadata {
        agent,
        model,
        finish_reason,
        usage,
        sources: Vec::new(),
        context: Context::default(),
        confidence: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::demo::DemoProvider;
    use futures::stream::BoxStream;
    use std::time::Duration;

    fn engine(provider: Arc<dyn Provider>) -> Engine {
        Engine::new(
            Hub::new(Duration::from_secs(60), crate::hub::ReplayLimits::default()),
            provider,
            EngineLimits {
                max_personas: 2,
                max_streams: 3,
                detach_grace: Duration::from_secs(60),
            },
        )
    }

    fn ask(text: &str) -> MessageRequest {
        MessageRequest {
            message: Some(text.into()),
            ..Default::default()
        }
    }

    async fn events(stream: &Arc<Stream>) -> Vec<ServerEvent> {
        let mut sub = stream.attach(0).unwrap();
        let mut out = Vec::new();
        while let Some(batch) = sub.next_batch().await.unwrap() {
            out.extend(
                batch
                    .iter()
                    .map(|p| serde_json::from_str::<ServerEvent>(p.text.as_str()).unwrap()),
            );
        }
        out
    }

    /// The response and metadata of a stream's final `complete`.
    fn completed(events: &[ServerEvent]) -> (&str, &Metadata) {
        match events.last() {
            Some(ServerEvent::Complete {
                response, metadata, ..
            }) => (response, metadata),
            other => panic!("the stream did not complete: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stream_is_start_progress_tokens_complete_with_contiguous_seq() {
        let engine = engine(Arc::new(DemoProvider::new(Duration::ZERO, 30)));
        let started = engine.start(&Identity::Anonymous, ask("hello")).unwrap();
        let events = events(&started.streams[0]).await;
        let kinds: Vec<_> = events.iter().map(ServerEvent::kind).collect();
        assert_eq!(kinds[..3], ["start", "progress", "progress"]);
        assert_eq!(kinds.len(), 3 + 30 + 1);
        assert_eq!(kinds.last(), Some(&"complete"));
        let seqs: Vec<u64> = events
            .iter()
            .map(|e| e.stream_position().unwrap().1)
            .collect();
        assert_eq!(seqs, (1..=34).collect::<Vec<_>>());
        let tokens: String = events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::Token { token, .. } => Some(token.as_str()),
                _ => None,
            })
            .collect();
        let ServerEvent::Complete {
            response, metadata, ..
        } = events.last().unwrap()
        else {
            panic!()
        };
        assert_eq!(&tokens, response);
        assert_eq!(metadata.agent, "assistant");
    }

    #[tokio::test]
    async fn bad_requests_are_refused_with_their_codes() {
        let engine = engine(Arc::new(DemoProvider::new(Duration::ZERO, 3)));
        let anon = Identity::Anonymous;
        assert!(matches!(
            engine.start(&anon, ask("  ")),
            Err(Error::EmptyMessage)
        ));
        let three = MessageRequest {
            persona_ids: Some(vec!["a".into(), "b".into(), "c".into()]),
            ..ask("q")
        };
        assert!(matches!(
            engine.start(&anon, three),
            Err(Error::InvalidMessage(_))
        ));
        let long_id = MessageRequest {
            session_id: Some("x".repeat(500)),
            ..ask("q")
        };
        assert!(matches!(
            engine.start(&anon, long_id),
            Err(Error::InvalidMessage(_))
        ));
        let hot = MessageRequest {
            temperature: Some(9.0),
            ..ask("q")
        };
        assert!(matches!(
            engine.start(&anon, hot),
            Err(Error::InvalidMessage(_))
        ));
    }

    #[tokio::test]
    async fn a_full_server_is_overloaded_until_streams_finish() {
        let engine = engine(Arc::new(DemoProvider::new(Duration::from_millis(5), 20)));
        let anon = Identity::Anonymous;
        let mut running = Vec::new();
        for _ in 0..3 {
            running.push(engine.start(&anon, ask("q")).unwrap());
        }
        assert!(matches!(
            engine.start(&anon, ask("q")),
            Err(Error::Overloaded)
        ));
        for started in &running {
            events(&started.streams[0]).await;
        }
        assert!(engine.start(&anon, ask("q")).is_ok(), "capacity is back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_nobody_watches_is_cancelled_after_the_grace() {
        let engine = engine(Arc::new(DemoProvider::new(Duration::from_secs(1), 100_000)));
        let started = engine.start(&Identity::Anonymous, ask("q")).unwrap();
        let stream = started.streams[0].clone();
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(
            !stream.is_finished(),
            "inside the grace it keeps generating"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(stream.is_finished());
        let events = events(&stream).await;
        let (response, metadata) = completed(&events);
        assert_eq!(metadata.finish_reason, FinishReason::Cancelled);
        assert!(
            !response.is_empty(),
            "what was produced is kept for attachers"
        );
    }

    #[tokio::test]
    async fn shutdown_interrupts_streams_keeping_their_text() {
        let engine = engine(Arc::new(DemoProvider::new(
            Duration::from_millis(10),
            100_000,
        )));
        let started = engine.start(&Identity::Anonymous, ask("q")).unwrap();
        let stream = started.streams[0].clone();
        let mut sub = stream.attach(0).unwrap();
        while !sub
            .next_batch()
            .await
            .unwrap()
            .unwrap()
            .iter()
            .any(|p| p.kind == "token")
        {}
        assert_eq!(engine.hub().interrupt_all(), 1);
        let events = events(&stream).await;
        let (_, metadata) = completed(&events);
        assert_eq!(metadata.finish_reason, FinishReason::Interrupted);
    }

    struct Failing {
        after: usize,
    }

    impl Provider for Failing {
        fn name(&self) -> &'static str {
            "failing"
        }
        fn default_model(&self) -> &str {
            "f"
        }
        fn stream(
            &self,
            _: ProviderRequest,
        ) -> BoxStream<'static, std::result::Result<ProviderEvent, ProviderError>> {
            let tokens = (0..self.after).map(|i| Ok(ProviderEvent::Token(format!("t{i} "))));
            futures::stream::iter(tokens)
                .chain(futures::stream::once(async {
                    Err(ProviderError::Upstream("boom".into()))
                }))
                .boxed()
        }
    }

    #[tokio::test]
    async fn provider_failure_before_text_is_a_provider_error() {
        let engine = engine(Arc::new(Failing { after: 0 }));
        let started = engine.start(&Identity::Anonymous, ask("q")).unwrap();
        let events = events(&started.streams[0]).await;
        assert!(matches!(
            events.last(),
            Some(ServerEvent::Error {
                code: ErrorCode::ProviderError,
                stream_id: Some(_),
                ..
            })
        ));
    }

    #[tokio::test]
    async fn provider_failure_after_text_keeps_the_text() {
        let engine = engine(Arc::new(Failing { after: 2 }));
        let started = engine.start(&Identity::Anonymous, ask("q")).unwrap();
        let events = events(&started.streams[0]).await;
        let (response, metadata) = completed(&events);
        assert_eq!(response, "t0 t1 ");
        assert_eq!(metadata.finish_reason, FinishReason::Error);
    }

    #[tokio::test]
    async fn cancel_ends_the_stream_as_cancelled_keeping_its_text() {
        let engine = engine(Arc::new(DemoProvider::new(Duration::from_millis(20), 1000)));
        let started = engine.start(&Identity::Anonymous, ask("q")).unwrap();
        let stream = started.streams[0].clone();
        let mut sub = stream.attach(0).unwrap();
        // Wait for a token, then cancel.
        loop {
            let batch = sub.next_batch().await.unwrap().unwrap();
            if batch.iter().any(|p| p.kind == "token") {
                break;
            }
        }
        stream.cancel();
        let events = events(&stream).await;
        let (response, metadata) = completed(&events);
        assert_eq!(metadata.finish_reason, FinishReason::Cancelled);
        assert!(!response.is_empty());
        assert!(events.len() < 100, "stopped long before 1000 tokens");
    }
}
