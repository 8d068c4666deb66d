//! Model providers: the [`Provider`] trait the engine drives, and its implementations.
//!
//! - [`demo`]: the embedded default — offline, deterministic, streamed word by word.
//! - [`openai`]: any OpenAI-compatible endpoint, through async-openai.

pub mod demo;
pub mod openai;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use rill_protocol::{FinishReason, Usage};

/// Who said a message of the conversation sent to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions (persona, system prompt).
    System,
    /// The person chatting.
    User,
    /// The model.
    Assistant,
}

/// One message of the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

/// What the engine asks a provider for: the prompt is already assembled.
#[derive(Debug, Clone)]
pub struct ProviderRequest {
    /// The model to use.
    pub model: String,
    /// The persona answering (providers may use it only through the messages).
    pub persona: String,
    /// The prompt: system instructions, history, and the question last.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Upper bound on the reply's tokens.
    pub max_tokens: Option<u32>,
    /// Tools for the model (OpenAI Responses API objects); only providers
    /// that [`Provider::offers_tools`] receive any.
    pub tools: Vec<serde_json::Value>,
    /// Whether to ask for the model's reasoning summary (same rule).
    pub include_reasoning: bool,
    /// The passages retrieved for the question, numbered from 1 in this
    /// order. They are already in the instructions (the first message); a
    /// provider that builds its reply itself (the demo) reads them here.
    pub sources: Vec<rill_protocol::documents::Source>,
}

impl ProviderRequest {
    /// The last user message: the question being answered.
    pub fn question(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default()
    }
}

/// What a provider's stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// A piece of the reply, as it arrived.
    Token(String),
    /// A piece of the model's reasoning summary (asked with
    /// `include_reasoning`); kept apart from the reply.
    Reasoning(String),
    /// The reply ended; nothing follows.
    Finished {
        /// Why it ended (`stop` or `length`).
        finish_reason: FinishReason,
        /// Token counts, when the provider knows them.
        usage: Option<Usage>,
    },
}

/// Why a provider failed. The text is shown to the user: no secrets in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The upstream refused or failed.
    #[error("{0}")]
    Upstream(String),
    /// The upstream rate limited us (after our bounded retries).
    #[error("{0}")]
    RateLimited(String),
}

/// A provider's choice of persona for a question (routing, `persona_id: "auto"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// The persona it chose.
    pub persona_id: String,
    /// How sure it says it is (0–1).
    pub confidence: f64,
}

/// A source of replies. Dropping the returned stream stops generation (and, for
/// remote providers, closes the upstream request): cancellation is structural.
pub trait Provider: Send + Sync + 'static {
    /// The provider's name (`demo`, `openai`).
    fn name(&self) -> &'static str;
    /// The model used when a request names none.
    fn default_model(&self) -> &str;
    /// The model that answers a request naming `requested` (default: that model,
    /// or [`Provider::default_model`] when none is named).
    fn model_for(&self, requested: Option<&str>) -> String {
        requested
            .filter(|m| !m.is_empty())
            .unwrap_or(self.default_model())
            .to_owned()
    }
    /// The models this provider offers (default: only the default model).
    fn models(&self) -> BoxFuture<'static, Result<Vec<String>, ProviderError>> {
        let models = vec![self.default_model().to_owned()];
        Box::pin(async move { Ok(models) })
    }
    /// Whether this provider passes `tools` and `include_reasoning` to a
    /// model (the OpenAI Responses API); others refuse questions with them.
    fn offers_tools(&self) -> bool {
        false
    }
    /// Chooses who answers `question` among `personas`, if this provider can
    /// (a classification call to a model); `None` leaves routing to the
    /// server's own keyword scorer.
    fn classify(
        &self,
        _question: &str,
        _personas: &[rill_protocol::PersonaInfo],
    ) -> Option<BoxFuture<'static, Result<Classified, ProviderError>>> {
        None
    }
    /// Streams the reply to `request`.
    fn stream(
        &self,
        request: ProviderRequest,
    ) -> BoxStream<'static, Result<ProviderEvent, ProviderError>>;
}
