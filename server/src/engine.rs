//! The engine: turns a `message` request into streams. It validates the request,
//! resolves and stores the conversation (the question is stored before anything
//! is generated), assembles the prompt (persona, history within a budget), and
//! drives the provider, writing each reply into a hub stream and checkpointing it
//! into the store. It never knows which transport or dialect asked: it speaks in
//! [`StreamEvent`]s, and callers reach streams only through its commands
//! ([`Engine::start`], [`Engine::attach`], [`Engine::cancel`]).

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use rill_protocol::client::DEFAULT_PERSONA;
use rill_protocol::documents::Source;
use rill_protocol::server::Context;
use rill_protocol::{
    AUTO_PERSONA, FinishReason, MessageRequest, Metadata, ProgressStep, Routing, Timing, Usage,
};
use tokio_util::task::TaskTracker;

use crate::auth::Identity;
use crate::documents::Documents;
use crate::error::{Error, Result};
use crate::events::{Failure, StreamEvent};
use crate::hub::{Hub, HubError, NewStream, StopReason, StreamInfo, StreamWriter, Subscription};
use crate::personas::{Choice, Persona, Personas};
use crate::prices::Prices;
use crate::provider::{ChatMessage, Provider, ProviderError, ProviderEvent, ProviderRequest, Role};
use crate::store::{
    Figures, HistoryMessage, MessageStatus, NewReply, Regenerate, Store, StoreError, Turn,
    title_from,
};

/// Longest accepted id (session, persona, model, client message) in characters.
const MAX_ID_CHARS: usize = 128;

/// Starts and drives generations.
#[derive(Clone)]
pub struct Engine {
    /// Where streams live.
    hub: Arc<dyn Hub>,
    /// Where replies come from.
    provider: Arc<dyn Provider>,
    /// Where conversations are kept.
    store: Arc<dyn Store>,
    /// Who may answer, and the router for `auto`.
    personas: Personas,
    /// Limits and timings.
    limits: EngineLimits,
    /// Every generation task, so shutdown can wait for them.
    tasks: TaskTracker,
    /// The provider's model list and when it was fetched (upstream lists change
    /// rarely; asking on every page load would be slow and rate-limited).
    models: Arc<tokio::sync::Mutex<Option<CachedModels>>>,
    /// What each model costs (`complete.metadata.cost`).
    prices: Arc<Prices>,
    /// Projects' documents, for questions that name a project.
    documents: Option<Documents>,
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
    /// Most earlier messages sent to the provider as history.
    pub history_max_messages: usize,
    /// Most characters of earlier messages sent as history.
    pub history_max_chars: usize,
    /// Least time between two checkpoints of a reply being generated.
    pub checkpoint_interval: std::time::Duration,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_personas: 8,
            max_streams: 4096,
            detach_grace: Duration::from_secs(60),
            history_max_messages: 40,
            history_max_chars: 32_000,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// What [`Engine::start`] started.
#[derive(Debug, Clone)]
pub struct Started {
    /// The conversation the streams belong to.
    pub session_id: String,
    /// One stream per persona, in the order asked.
    pub stream_ids: Vec<Arc<str>>,
}

/// A stream about to start: the persona id asked for, that persona (`None`
/// for `auto`: routing chooses), and the stream's writer.
type PersonaStream = (String, Option<Arc<Persona>>, Box<dyn StreamWriter>);

/// How long routing may take before the default persona answers.
const ROUTING_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a generation task needs besides the provider.
struct Generation {
    writer: Box<dyn StreamWriter>,
    store: Arc<dyn Store>,
    checkpoint_interval: Duration,
    session_id: String,
    message_id: String,
    user_message_id: String,
    /// The persona asked for (`auto` until routing chose).
    persona: String,
    model: String,
    client_message_id: Option<String>,
    request: ProviderRequest,
    /// For `auto`: what routing needs, and what the client asked for itself
    /// (the chosen persona's model and temperature apply only where it did not).
    routing: Option<RoutingJob>,
    /// What each model costs.
    prices: Arc<Prices>,
    /// Retrieval to do before generating: the documents service and the project.
    retrieval: Option<(Documents, String)>,
}

/// Routing to do before generating.
struct RoutingJob {
    personas: Personas,
    requested_model: Option<String>,
    requested_temperature: Option<f64>,
}

impl Engine {
    /// An engine writing to `hub` and `store` with replies from `provider`.
    pub fn new(
        hub: Arc<dyn Hub>,
        provider: Arc<dyn Provider>,
        store: Arc<dyn Store>,
        personas: Personas,
        limits: EngineLimits,
    ) -> Self {
        Engine {
            hub,
            provider,
            store,
            personas,
            limits,
            tasks: TaskTracker::new(),
            models: Arc::new(tokio::sync::Mutex::new(None)),
            prices: Arc::new(Prices::none()),
            documents: None,
        }
    }

    /// The same engine answering questions in a project from its documents.
    pub fn with_documents(mut self, documents: Documents) -> Self {
        self.documents = Some(documents);
        self
    }

    /// The same engine pricing replies with `prices`.
    pub fn with_prices(mut self, prices: Arc<Prices>) -> Self {
        self.prices = prices;
        self
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

    /// The personas on offer.
    pub fn personas(&self) -> &Personas {
        &self.personas
    }

    /// The provider's name (`demo`, `openai`).
    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    /// How many replies are generating.
    pub fn running(&self) -> usize {
        self.hub.running()
    }

    /// Cuts every running reply (the server is shutting down): each ends as
    /// interrupted, keeping its text. Returns how many.
    pub fn interrupt_all(&self) -> usize {
        self.hub.interrupt_all()
    }

    /// Shutdown: accepts no new generation, waits up to `grace` for the running
    /// ones to finish, then cuts the rest and waits (briefly) for them to be
    /// stored as interrupted.
    pub async fn drain(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            let cut = self.interrupt_all();
            if cut > 0 {
                tracing::warn!("shutdown deadline: interrupted {cut} running replies");
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
        }
    }

    /// Validates `request`, stores the question in its conversation (created for
    /// the caller if new; `FORBIDDEN` if another owner's), and starts one stream
    /// per persona. The streams run in the server whatever happens to the caller.
    pub async fn start(&self, identity: &Identity, request: MessageRequest) -> Result<Started> {
        let owner = identity.conversation_owner();
        let regenerate = self.regenerate_target(&owner, &request).await?;
        let question = match &regenerate {
            Some(target) => target.question.clone(),
            None => request.text().ok_or(Error::EmptyMessage)?.to_owned(),
        };
        let personas = match &regenerate {
            // The same persona as the reply it replaces (routing again for a
            // routed one), unless the request names one.
            Some(target) if request.persona_ids.is_none() && request.persona_id.is_none() => {
                vec![if target.routed {
                    AUTO_PERSONA.to_owned()
                } else {
                    target
                        .persona
                        .clone()
                        .unwrap_or_else(|| DEFAULT_PERSONA.to_owned())
                }]
            }
            Some(_) if request.personas().len() != 1 => {
                return Err(Error::InvalidMessage(
                    "regenerate answers with one persona: name one persona_id, or none".into(),
                ));
            }
            _ => request.personas(),
        };
        if personas.len() > self.limits.max_personas {
            return Err(Error::InvalidMessage(format!(
                "too many personas: at most {} per message",
                self.limits.max_personas
            )));
        }
        for (field, value) in [
            ("session_id", request.conversation_id()),
            (
                "previous_response_id",
                request.previous_response_id.as_deref(),
            ),
            ("replace_from", request.replace_from.as_deref()),
            ("customer_id", request.customer_id.as_deref()),
            ("project_id", request.project_id.as_deref()),
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
        self.personas
            .check(personas.iter().map(String::as_str))
            .map_err(Error::InvalidMessage)?;
        if let Some(twice) = personas
            .iter()
            .enumerate()
            .find_map(|(i, p)| personas[..i].contains(p).then_some(p))
        {
            return Err(Error::InvalidMessage(format!(
                "persona_ids names {twice:?} twice"
            )));
        }
        let wants_tools = request.tools.as_ref().is_some_and(|t| !t.is_empty())
            || request.include_reasoning == Some(true);
        if wants_tools && !self.provider.offers_tools() {
            return Err(Error::Unsupported(
                "tools and include_reasoning need the OpenAI Responses API, which this \
                 server's provider does not offer: run rill with --provider openai \
                 against an endpoint that has /responses",
            ));
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
        // A project of the caller's is searched before answering; an unknown
        // one has nothing to search; another user's is refused.
        let retrieval = match (&self.documents, request.project_id.as_deref()) {
            (Some(documents), Some(project)) if !project.is_empty() => documents
                .may_retrieve(identity, project)
                .await?
                .then(|| (documents.clone(), project.to_owned())),
            _ => None,
        };
        let session_id = match &regenerate {
            Some(target) => target.conversation_id.clone(),
            None => self.resolve_conversation(&owner, &request).await?,
        };
        // One stream per persona (`None`: routing chooses); if storing fails
        // below, dropping their writers ends them unseen.
        let writers: Vec<PersonaStream> = personas
            .into_iter()
            .map(|id| {
                let persona = self.personas.get(&id).cloned();
                let writer = self.hub.create(NewStream {
                    owner: identity.owner(),
                    detach_grace: self.limits.detach_grace,
                });
                (id, persona, writer)
            })
            .collect();
        // A persona's own model and temperature apply where the request names none.
        let model_of = |persona: Option<&Arc<Persona>>| {
            let requested = request
                .model
                .as_deref()
                .or_else(|| persona.and_then(|p| p.model.as_deref()));
            self.provider.model_for(requested)
        };
        // The question and its empty `streaming` replies are stored, in one
        // write, before anything is generated: a crash at any later point
        // leaves the replies to be marked interrupted.
        let user_message_id = match &regenerate {
            Some(target) => target.question_id.clone(),
            None => uuid::Uuid::now_v7().to_string(),
        };
        let replies: Vec<NewReply> = writers
            .iter()
            .map(|(id, persona, writer)| NewReply {
                id: uuid::Uuid::now_v7().to_string(),
                persona: id.clone(),
                model: model_of(persona.as_ref()),
                stream_id: writer.id().to_string(),
            })
            .collect();
        let replace_from = request.replace_from.is_some();
        let earlier = self
            .store
            .start_turn(Turn {
                conversation_id: session_id.clone(),
                owner,
                customer_id: request.customer_id.clone(),
                title: title_from(&question),
                replace_from: request.replace_from.clone(),
                regenerate,
                include_history: request.include_history.unwrap_or(true),
                history_limit: self.limits.history_max_messages,
                question_id: user_message_id.clone(),
                question: question.clone(),
                replies: replies.clone(),
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound if replace_from => {
                    Error::NotFound("replace_from: no such message in this conversation")
                }
                other => other.into(),
            })?;
        let history = trim_history(
            &earlier,
            self.limits.history_max_messages,
            self.limits.history_max_chars,
        );

        let mut stream_ids = Vec::with_capacity(writers.len());
        let mut generations = Vec::with_capacity(writers.len());
        for ((id, persona, writer), reply) in writers.into_iter().zip(replies) {
            let message_id = reply.id;
            let model = reply.model;
            // Until routing chooses, the default persona's instructions.
            let speaker = persona
                .clone()
                .unwrap_or_else(|| self.personas.default_persona().clone());
            let mut messages = vec![system_prompt(&speaker)];
            messages.extend(history.iter().cloned());
            messages.push(ChatMessage {
                role: Role::User,
                content: question.clone(),
            });
            generations.push((
                writer.id().clone(),
                Generation {
                    writer,
                    prices: self.prices.clone(),
                    store: self.store.clone(),
                    checkpoint_interval: self.limits.checkpoint_interval,
                    session_id: session_id.clone(),
                    message_id,
                    user_message_id: user_message_id.clone(),
                    request: ProviderRequest {
                        model: model.clone(),
                        persona: speaker.id.clone(),
                        messages,
                        temperature: request
                            .temperature
                            .or_else(|| persona.as_ref().and_then(|p| p.temperature)),
                        max_tokens: request.max_tokens,
                        tools: request.tools.clone().unwrap_or_default(),
                        include_reasoning: request.include_reasoning == Some(true),
                        sources: Vec::new(),
                    },
                    retrieval: retrieval.clone(),
                    routing: persona.is_none().then(|| RoutingJob {
                        personas: self.personas.clone(),
                        requested_model: request.model.clone(),
                        requested_temperature: request.temperature,
                    }),
                    persona: id,
                    model,
                    client_message_id: request.client_message_id.clone(),
                },
            ));
        }
        for (stream_id, generation) in generations {
            // Boxed: a generation's state is large, and inline it would be
            // copied into the task as it is spawned.
            self.tasks
                .spawn(Box::pin(drive(self.provider.clone(), generation)));
            stream_ids.push(stream_id);
        }
        Ok(Started {
            session_id,
            stream_ids,
        })
    }

    /// The reply a request asks to `regenerate`, if it does: `NOT_FOUND` if
    /// the caller has no such reply (in the conversation it names, if any),
    /// `INVALID_MESSAGE` beside `replace_from`.
    async fn regenerate_target(
        &self,
        owner: &str,
        request: &MessageRequest,
    ) -> Result<Option<Regenerate>> {
        let Some(reply) = request.regenerate.as_deref() else {
            return Ok(None);
        };
        check_id("regenerate", reply)?;
        if request.replace_from.is_some() {
            return Err(Error::InvalidMessage(
                "regenerate and replace_from cannot be combined: regenerate answers a stored \
                 question again, replace_from stores a new version of it"
                    .into(),
            ));
        }
        let not_found = || Error::NotFound("regenerate: no such reply in this conversation");
        let target = match self.store.regenerate_target(owner, reply).await {
            Ok(target) => target,
            Err(StoreError::NotFound | StoreError::Forbidden) => return Err(not_found()),
            Err(other) => return Err(other.into()),
        };
        if request
            .conversation_id()
            .is_some_and(|id| id != target.conversation_id)
        {
            return Err(not_found());
        }
        Ok(Some(target))
    }

    /// The conversation a request continues: `session_id`/`chat_id`; else the
    /// conversation of the reply `previous_response_id` names (or that id as a
    /// conversation id); else a new one.
    async fn resolve_conversation(&self, owner: &str, request: &MessageRequest) -> Result<String> {
        if let Some(id) = request.conversation_id() {
            return Ok(id.to_owned());
        }
        let Some(previous) = request
            .previous_response_id
            .as_deref()
            .filter(|id| !id.is_empty())
        else {
            return Ok(uuid::Uuid::now_v7().to_string());
        };
        match self.store.conversation_of_message(owner, previous).await {
            Ok(conversation) => Ok(conversation.id),
            Err(StoreError::NotFound) => Ok(previous.to_owned()),
            Err(error) => Err(error.into()),
        }
    }
}

impl Engine {
    /// Checks that `identity` may attach to or cancel `stream_id`:
    /// `STREAM_NOT_FOUND` if unknown or expired, `FORBIDDEN` if someone else's.
    fn check_access(&self, identity: &Identity, stream_id: &str) -> Result<()> {
        let info = self.hub.info(stream_id).ok_or(Error::StreamNotFound)?;
        if !info.is_accessible_by(identity.owner().as_deref()) {
            return Err(Error::Forbidden);
        }
        Ok(())
    }

    /// What stream `stream_id` is (owner, finished, last seq), if `identity`
    /// may read it.
    pub fn status(&self, identity: &Identity, stream_id: &str) -> Result<StreamInfo> {
        self.check_access(identity, stream_id)?;
        self.hub.info(stream_id).ok_or(Error::StreamNotFound)
    }

    /// A reader of stream `stream_id` from after `after_seq`, if `identity` may
    /// read it; `STREAM_NOT_FOUND` if it (or the replay asked for) is gone.
    pub fn attach(
        &self,
        identity: &Identity,
        stream_id: &str,
        after_seq: u64,
    ) -> Result<Subscription> {
        self.check_access(identity, stream_id)?;
        self.hub.attach(stream_id, after_seq).map_err(gone)
    }

    /// The reply text a stream had produced up to `until_seq` (best effort: empty
    /// if its start is no longer kept). For clients that asked for the text so
    /// far with every token; callers have checked access already.
    pub fn reply_text_until(&self, stream_id: &str, until_seq: u64) -> String {
        let mut events = Vec::new();
        let max = usize::try_from(until_seq).unwrap_or(usize::MAX);
        let _ = self.hub.events_after(stream_id, 0, max, &mut events);
        events
            .iter()
            .filter_map(|e| match &e.event {
                StreamEvent::Token(token) => Some(token.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Like [`Engine::attach`], without keeping the stream alive (the reader does
    /// not count against the detach grace).
    pub fn observe(
        &self,
        identity: &Identity,
        stream_id: &str,
        after_seq: u64,
    ) -> Result<Subscription> {
        self.check_access(identity, stream_id)?;
        self.hub.observe(stream_id, after_seq).map_err(gone)
    }

    /// Stops stream `stream_id` if `identity` may: it ends as cancelled.
    pub fn cancel(&self, identity: &Identity, stream_id: &str) -> Result<()> {
        self.check_access(identity, stream_id)?;
        self.hub.cancel(stream_id);
        Ok(())
    }
}

/// A stream that cannot be read (unknown, expired, or its replay dropped) is
/// `STREAM_NOT_FOUND` to clients: recovery is all or nothing.
fn gone(_: HubError) -> Error {
    Error::StreamNotFound
}

fn check_id(field: &str, value: &str) -> Result<()> {
    if value.chars().count() > MAX_ID_CHARS || value.chars().any(char::is_control) {
        return Err(Error::InvalidMessage(format!(
            "{field} must be at most {MAX_ID_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

/// The persona's instructions, first in every prompt.
fn system_prompt(persona: &Persona) -> ChatMessage {
    ChatMessage {
        role: Role::System,
        content: persona.system_prompt.clone(),
    }
}

/// The history sent with a question: the newest earlier messages that fit both
/// budgets, oldest first. Empty replies (failed before any text) are skipped; a
/// message is never cut in the middle.
fn trim_history(
    messages: &[HistoryMessage],
    max_messages: usize,
    max_chars: usize,
) -> Vec<ChatMessage> {
    let mut kept = Vec::new();
    let mut chars = 0;
    for message in messages.iter().rev() {
        if kept.len() >= max_messages {
            break;
        }
        if message.content.trim().is_empty() {
            continue;
        }
        let length = message.content.chars().count();
        if chars + length > max_chars {
            break;
        }
        chars += length;
        kept.push(ChatMessage {
            role: if message.role == "user" {
                Role::User
            } else {
                Role::Assistant
            },
            content: message.content.clone(),
        });
    }
    kept.reverse();
    kept
}

/// How a finished reply is stored.
fn stored_status(reason: FinishReason) -> MessageStatus {
    match reason {
        FinishReason::Stop | FinishReason::Length => MessageStatus::Complete,
        FinishReason::Cancelled => MessageStatus::Cancelled,
        FinishReason::Interrupted => MessageStatus::Interrupted,
        FinishReason::Error => MessageStatus::Error,
    }
}

/// Runs one generation to its terminal event. Dropping the provider stream (on
/// cancel, detach grace or shutdown) is what stops the provider.
async fn drive(provider: Arc<dyn Provider>, generation: Generation) {
    let Generation {
        mut writer,
        store,
        checkpoint_interval,
        session_id,
        message_id,
        user_message_id,
        mut persona,
        mut model,
        client_message_id,
        mut request,
        routing,
        prices,
        retrieval,
    } = generation;
    let started = tokio::time::Instant::now();
    let id = writer.id().clone();
    writer.publish(StreamEvent::Started(Box::new(crate::events::Started {
        session_id: session_id.clone(),
        message_id: message_id.clone(),
        user_message_id: Some(user_message_id),
        persona_id: persona.clone(),
        model: model.clone(),
        client_message_id,
    })));
    writer.publish(StreamEvent::Progress(ProgressStep::Starting));

    let mut choice = None;
    let mut stopped_early = None;
    if let Some(job) = routing {
        writer.publish(StreamEvent::Progress(ProgressStep::AgentRouting));
        let routed = unless_stopped(
            &mut *writer,
            route(&*provider, &job.personas, request.question()),
        )
        .await;
        match routed {
            Err(reason) => stopped_early = Some(finish_reason_of(reason, &id)),
            Ok(chosen) => {
                let speaker = job
                    .personas
                    .get(&chosen.persona_id)
                    .unwrap_or_else(|| job.personas.default_persona())
                    .clone();
                model =
                    provider.model_for(job.requested_model.as_deref().or(speaker.model.as_deref()));
                request.model = model.clone();
                request.persona = speaker.id.clone();
                request.temperature = job.requested_temperature.or(speaker.temperature);
                if let Some(first) = request.messages.first_mut() {
                    *first = system_prompt(&speaker);
                }
                if let Err(error) = store
                    .set_persona(&message_id, &speaker.id, &model, chosen.confidence)
                    .await
                {
                    tracing::warn!(stream_id = %id, %error, "could not store the routed persona");
                }
                writer.publish(StreamEvent::Routed {
                    persona_id: speaker.id.clone(),
                    name: speaker.name.clone(),
                    confidence: chosen.confidence,
                });
                persona = speaker.id.clone();
                choice = Some(chosen);
            }
        }
    }

    // The project's best passages, numbered, join the instructions.
    let mut sources = Vec::new();
    if stopped_early.is_none()
        && let Some((documents, project)) = retrieval
    {
        match retrieve(&documents, &project, request.question(), &mut *writer).await {
            Err(reason) => stopped_early = Some(finish_reason_of(reason, &id)),
            Ok(Some(found)) => {
                if !found.is_empty() {
                    if let Some(first) = request.messages.first_mut() {
                        first
                            .content
                            .push_str(&crate::documents::prompt_context(&found));
                    }
                    if let Err(error) = store.set_sources(&message_id, &found).await {
                        tracing::warn!(stream_id = %id, %error, "could not store the reply's sources");
                    }
                }
                request.sources = found.clone();
                sources = found;
            }
            Ok(None) => {}
        }
    }

    // What an estimate of the prompt's tokens counts: every message sent.
    let prompt_chars: usize = request
        .messages
        .iter()
        .map(|m| m.content.chars().count())
        .sum();
    let mut out = Produced::default();
    let (finish_reason, usage) = match stopped_early {
        Some(reason) => (reason, None),
        None => {
            writer.publish(StreamEvent::Progress(ProgressStep::Generating));
            match generate(
                &*provider,
                request,
                &mut *writer,
                &mut out,
                &*store,
                &message_id,
                checkpoint_interval,
            )
            .await
            {
                Ok(end) => end,
                Err(failure) => {
                    finish_stored(
                        &*store,
                        &message_id,
                        "",
                        MessageStatus::Error,
                        Figures::default(),
                    )
                    .await;
                    writer.publish(StreamEvent::Failed(failure));
                    return;
                }
            }
        }
    };
    // A reply with text has figures: the provider's counts or an estimate,
    // and its timing.
    let usage = usage.or_else(|| {
        (!out.reply.is_empty()).then(|| Usage {
            prompt_tokens: estimate_tokens(prompt_chars),
            completion_tokens: estimate_tokens(out.reply.chars().count()),
            estimated: true,
        })
    });
    let timing = out.first_token_at.map(|first| Timing {
        first_token_ms: millis(first - started),
        total_ms: millis(started.elapsed()),
    });
    // Stop the provider, and store the reply, before announcing the end: a
    // client that reloads on `complete` finds it final.
    finish_stored(
        &*store,
        &message_id,
        &out.reply,
        stored_status(finish_reason),
        Figures {
            usage: usage.map(|u| (i64::from(u.prompt_tokens), i64::from(u.completion_tokens))),
            usage_estimated: usage.is_some_and(|u| u.estimated),
            first_token_ms: timing.map(|t| i64::try_from(t.first_token_ms).unwrap_or(i64::MAX)),
            total_ms: timing.map(|t| i64::try_from(t.total_ms).unwrap_or(i64::MAX)),
        },
    )
    .await;
    let cost = usage.as_ref().and_then(|u| prices.cost(&model, u));
    let mut metadata = metadata(persona, model, finish_reason, usage, choice);
    metadata.sources = Source::filenames(&sources);
    metadata.context.sources = metadata.sources.clone();
    metadata.reasoning = Some(out.reasoning).filter(|r| !r.is_empty());
    metadata.timing = timing;
    metadata.cost = cost;
    writer.publish(StreamEvent::Completed {
        response: out.reply,
        message_id,
        session_id,
        metadata: Box::new(metadata),
    });
}

/// Runs `work` unless the stream is asked to stop first: the stop is
/// checked first at every wake, as a biased `select!` would, through the
/// writer's own poll (no future of its own to fetch per token).
async fn unless_stopped<T>(
    writer: &mut dyn StreamWriter,
    work: impl Future<Output = T>,
) -> std::result::Result<T, StopReason> {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(reason) = writer.poll_stopped(cx) {
            return Poll::Ready(Err(reason));
        }
        work.as_mut().poll(cx).map(Ok)
    })
    .await
}

/// Retrieves the project's best passages for `question`, announcing it
/// (`rag_retrieval`, then `sources`): `None` when the project has no
/// document to search (skipped quietly), or when retrieval failed (logged:
/// the question is answered without sources rather than not at all); the
/// reason if the stream was asked to stop meanwhile.
async fn retrieve(
    documents: &Documents,
    project: &str,
    question: &str,
    writer: &mut dyn StreamWriter,
) -> std::result::Result<Option<Vec<Source>>, StopReason> {
    let ready = match unless_stopped(writer, documents.ready(project)).await? {
        Ok(Some(ready)) => ready,
        Ok(None) => return Ok(None),
        Err(error) => {
            tracing::error!(%project, %error, "retrieval failed: answering without sources");
            return Ok(None);
        }
    };
    writer.publish(StreamEvent::Progress(ProgressStep::RagRetrieval));
    let found = unless_stopped(writer, documents.search(&ready, question))
        .await?
        .unwrap_or_else(|error| {
            tracing::error!(%project, %error, "retrieval failed: answering without sources");
            Vec::new()
        });
    writer.publish(StreamEvent::Sources(found.clone()));
    Ok(Some(found))
}

/// What a generation produced so far.
#[derive(Debug, Default)]
struct Produced {
    /// The reply.
    reply: String,
    /// The model's reasoning summary, if it was asked for and given.
    reasoning: String,
    /// When the first token arrived.
    first_token_at: Option<tokio::time::Instant>,
}

/// About how many tokens `chars` characters make (OpenAI's rule of thumb for
/// English: four characters a token), at least one.
fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4).max(1)).unwrap_or(u32::MAX)
}

/// A duration in whole milliseconds.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Streams the provider's reply into `writer` (and `reply`), checkpointing it,
/// until it ends or is stopped: how it ended, or the failure if it failed
/// before any text. Returning drops the provider's stream, which stops it.
#[allow(clippy::too_many_arguments)]
async fn generate(
    provider: &dyn Provider,
    request: ProviderRequest,
    writer: &mut dyn StreamWriter,
    out: &mut Produced,
    store: &dyn Store,
    message_id: &str,
    checkpoint_interval: Duration,
) -> std::result::Result<(FinishReason, Option<Usage>), Failure> {
    let id = writer.id().clone();
    // What the store holds of the reply, and when it was written.
    let mut checkpointed = 0;
    // When the next one is due: comparing instants is cheaper, per token,
    // than measuring the time since the last one.
    let mut next_checkpoint = tokio::time::Instant::now() + checkpoint_interval;
    let mut tokens = provider.stream(request);
    loop {
        let item = match unless_stopped(&mut *writer, tokens.next()).await {
            Ok(item) => item,
            Err(reason) => return Ok((finish_reason_of(reason, &id), None)),
        };
        match item {
            Some(Ok(ProviderEvent::Token(token))) => {
                if token.is_empty() {
                    continue;
                }
                if out.first_token_at.is_none() {
                    out.first_token_at = Some(tokio::time::Instant::now());
                }
                out.reply.push_str(&token);
                writer.publish(StreamEvent::Token(token));
                // A provider that is always ready (the demo at full speed, a
                // fast local model) must not keep this worker from sending
                // what it produced: give way when the task's budget is spent.
                tokio::task::consume_budget().await;
                // At most one write per interval, whatever the token rate: a crash
                // loses at most the text since the last checkpoint. Queued, not
                // waited for: the next token does not wait for the commit.
                if out.reply.len() > checkpointed && tokio::time::Instant::now() >= next_checkpoint
                {
                    if let Err(error) = store.checkpoint(message_id, &out.reply).await {
                        tracing::warn!(stream_id = %id, %error, "checkpoint failed");
                    }
                    checkpointed = out.reply.len();
                    next_checkpoint = tokio::time::Instant::now() + checkpoint_interval;
                }
            }
            Some(Ok(ProviderEvent::Reasoning(text))) => out.reasoning.push_str(&text),
            Some(Ok(ProviderEvent::Finished {
                finish_reason,
                usage,
            })) => return Ok((finish_reason, usage)),
            None => return Ok((FinishReason::Stop, None)),
            Some(Err(error)) => {
                tracing::warn!(stream_id = %id, %error, "provider failed");
                if out.reply.is_empty() {
                    return Err(match error {
                        ProviderError::RateLimited(message) => Failure::RateLimited(message),
                        ProviderError::Upstream(message) => Failure::Provider(message),
                    });
                }
                return Ok((FinishReason::Error, None));
            }
        }
    }
}

/// How a stream stopped from outside ends.
fn finish_reason_of(reason: StopReason, stream_id: &str) -> FinishReason {
    match reason {
        StopReason::Interrupted => FinishReason::Interrupted,
        StopReason::Cancelled => FinishReason::Cancelled,
        StopReason::Detached => {
            tracing::info!(%stream_id, "nobody attached for the detach grace: cancelling");
            FinishReason::Cancelled
        }
    }
}

/// Chooses who answers `question`: the provider's classifier if it has one
/// (bounded by [`ROUTING_TIMEOUT`]), else the keyword scorer. A classifier
/// that fails, is late or names an unknown persona leaves the default persona
/// to answer, with the reason.
async fn route(provider: &dyn Provider, personas: &Personas, question: &str) -> Choice {
    let default = personas.default_persona().id.clone();
    let infos: Vec<_> = personas.all().iter().map(|p| p.info()).collect();
    let Some(classifying) = provider.classify(question, &infos) else {
        return personas.router().choose(question, &default);
    };
    let fallback = |reason: String| Choice {
        persona_id: default.clone(),
        confidence: 0.0,
        method: "model",
        fallback_reason: Some(reason),
    };
    match tokio::time::timeout(ROUTING_TIMEOUT, classifying).await {
        Ok(Ok(classified)) if personas.get(&classified.persona_id).is_some() => Choice {
            persona_id: classified.persona_id,
            confidence: classified.confidence,
            method: "model",
            fallback_reason: None,
        },
        Ok(Ok(classified)) => fallback(format!(
            "the classifier chose an unknown persona ({:?})",
            classified.persona_id
        )),
        Ok(Err(error)) => fallback(format!("the classifier failed: {error}")),
        Err(_) => fallback(format!(
            "the classifier did not answer within {} s",
            ROUTING_TIMEOUT.as_secs()
        )),
    }
}

/// Finalizes a stored reply; a failure is logged (the stream still ends, and the
/// message keeps its last checkpoint, marked interrupted at the next start).
async fn finish_stored(
    store: &dyn Store,
    message_id: &str,
    content: &str,
    status: MessageStatus,
    figures: Figures,
) {
    if let Err(error) = store
        .finish_message(message_id, content, status, figures)
        .await
    {
        tracing::error!(%message_id, %error, "could not store the finished reply");
    }
}

fn metadata(
    agent: String,
    model: String,
    finish_reason: FinishReason,
    usage: Option<Usage>,
    choice: Option<Choice>,
) -> Metadata {
    Metadata {
        agent,
        model,
        finish_reason,
        usage,
        sources: Vec::new(),
        context: Context::default(),
        confidence: choice.as_ref().map(|c| c.confidence),
        routing: choice.map(|c| Routing {
            method: c.method.to_owned(),
            fallback_reason: c.fallback_reason,
        }),
        reasoning: None,
        timing: None,
        cost: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{MemoryHub, ReplayLimits};
    use crate::provider::demo::DemoProvider;
    use futures::stream::BoxStream;
    use std::time::Duration;

    /// A test's data directory, removed when the test ends.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn engine(provider: Arc<dyn Provider>) -> (Engine, Scratch) {
        let dir = std::env::temp_dir().join(format!("rill-engine-{}", uuid::Uuid::new_v4()));
        let store = crate::store::SqlStore::open(None, &dir).await.unwrap();
        let engine = Engine::new(
            Arc::new(MemoryHub::new(
                Duration::from_secs(60),
                ReplayLimits::default(),
            )),
            provider,
            Arc::new(store),
            Personas::builtin(),
            EngineLimits {
                max_personas: 2,
                max_streams: 3,
                ..EngineLimits::default()
            },
        );
        (engine, Scratch(dir))
    }

    fn ask(text: &str) -> MessageRequest {
        MessageRequest {
            message: Some(text.into()),
            ..Default::default()
        }
    }

    fn attach(engine: &Engine, stream_id: &str) -> Subscription {
        engine.attach(&Identity::Anonymous, stream_id, 0).unwrap()
    }

    /// Every event of a stream, with its seq, waiting for the end.
    async fn events(engine: &Engine, stream_id: &str) -> Vec<(u64, StreamEvent)> {
        let mut sub = attach(engine, stream_id);
        let mut out = Vec::new();
        while let Some(batch) = sub.next_batch().await.unwrap() {
            out.extend(batch.iter().map(|e| (e.seq, e.event.clone())));
        }
        out
    }

    /// Waits for the first token of a stream.
    async fn first_token(sub: &mut Subscription) {
        loop {
            let batch = sub.next_batch().await.unwrap().unwrap();
            if batch
                .iter()
                .any(|e| matches!(e.event, StreamEvent::Token(_)))
            {
                return;
            }
        }
    }

    /// The response and metadata of a stream's final `Completed`.
    fn completed(events: &[(u64, StreamEvent)]) -> (&str, &Metadata) {
        match events.last() {
            Some((
                _,
                StreamEvent::Completed {
                    response, metadata, ..
                },
            )) => (response, metadata),
            other => panic!("the stream did not complete: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stream_is_start_progress_tokens_complete_with_contiguous_seq() {
        let (engine, _scratch) = engine(Arc::new(DemoProvider::new(Duration::ZERO, 30))).await;
        let started = engine
            .start(&Identity::Anonymous, ask("hello"))
            .await
            .unwrap();
        let events = events(&engine, &started.stream_ids[0]).await;
        assert!(matches!(events[0].1, StreamEvent::Started { .. }));
        assert_eq!(events[1].1, StreamEvent::Progress(ProgressStep::Starting));
        assert_eq!(events[2].1, StreamEvent::Progress(ProgressStep::Generating));
        assert_eq!(events.len(), 3 + 30 + 1);
        let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=34).collect::<Vec<_>>());
        let tokens: String = events
            .iter()
            .filter_map(|(_, e)| match e {
                StreamEvent::Token(token) => Some(token.as_str()),
                _ => None,
            })
            .collect();
        let (response, metadata) = completed(&events);
        assert_eq!(tokens, response);
        assert_eq!(metadata.agent, "assistant");
    }

    #[tokio::test]
    async fn auto_routes_then_answers_in_the_chosen_voice_and_stores_who() {
        let (engine, _scratch) = engine(Arc::new(DemoProvider::new(Duration::ZERO, 30))).await;
        let request = MessageRequest {
            persona_id: Some("auto".into()),
            ..ask("Write a poem and a short story about the sea")
        };
        let started = engine.start(&Identity::Anonymous, request).await.unwrap();
        let routed = events(&engine, &started.stream_ids[0]).await;
        assert!(
            matches!(&routed[0].1, StreamEvent::Started(started) if started.persona_id == "auto")
        );
        assert_eq!(
            routed[2].1,
            StreamEvent::Progress(ProgressStep::AgentRouting)
        );
        let StreamEvent::Routed {
            persona_id,
            confidence,
            ..
        } = &routed[3].1
        else {
            panic!("no routing event: {routed:?}");
        };
        assert_eq!(persona_id, "creative_writer");
        assert_eq!(routed[4].1, StreamEvent::Progress(ProgressStep::Generating));
        let (response, metadata) = completed(&routed);
        assert_eq!(metadata.agent, "creative_writer");
        assert_eq!(metadata.confidence, Some(*confidence));
        assert!(*confidence > 0.25 && *confidence <= 1.0);
        assert_eq!(metadata.routing.as_ref().unwrap().method, "keywords");
        let voice = crate::provider::demo::persona_reply_text(
            "creative_writer",
            None,
            "Write a poem and a short story about the sea",
            30,
        );
        assert!(voice.starts_with(response), "{response}");
        let stored = engine
            .store
            .messages(
                &Identity::Anonymous.conversation_owner(),
                &started.session_id,
            )
            .await
            .unwrap();
        assert_eq!(stored[1].persona.as_deref(), Some("creative_writer"));
        // Nothing to go on: the default persona, with the reason.
        let vague = MessageRequest {
            persona_id: Some("auto".into()),
            ..ask("zzz")
        };
        let started = engine.start(&Identity::Anonymous, vague).await.unwrap();
        let vague_events = events(&engine, &started.stream_ids[0]).await;
        let (_, metadata) = completed(&vague_events);
        assert_eq!(metadata.agent, "assistant");
        assert_eq!(metadata.confidence, Some(0.0));
        assert!(metadata.routing.as_ref().unwrap().fallback_reason.is_some());
    }

    /// A provider whose classifier never answers.
    struct SlowClassifier;

    impl Provider for SlowClassifier {
        fn name(&self) -> &'static str {
            "slow-classifier"
        }
        fn default_model(&self) -> &str {
            "s"
        }
        fn classify(
            &self,
            _: &str,
            _: &[rill_protocol::PersonaInfo],
        ) -> Option<
            futures::future::BoxFuture<
                'static,
                std::result::Result<crate::provider::Classified, ProviderError>,
            >,
        > {
            Some(Box::pin(futures::future::pending()))
        }
        fn stream(
            &self,
            _: ProviderRequest,
        ) -> BoxStream<'static, std::result::Result<ProviderEvent, ProviderError>> {
            futures::stream::iter([Ok(ProviderEvent::Token("never".into()))]).boxed()
        }
    }

    #[tokio::test]
    async fn a_cancel_while_routing_ends_the_stream_without_waiting_for_the_classifier() {
        let (engine, _scratch) = engine(Arc::new(SlowClassifier)).await;
        let request = MessageRequest {
            persona_id: Some("auto".into()),
            ..ask("q")
        };
        let started = engine.start(&Identity::Anonymous, request).await.unwrap();
        let id = started.stream_ids[0].clone();
        let mut sub = attach(&engine, &id);
        loop {
            let batch = sub.next_batch().await.unwrap().unwrap();
            if batch
                .iter()
                .any(|e| e.event == StreamEvent::Progress(ProgressStep::AgentRouting))
            {
                break;
            }
        }
        engine.cancel(&Identity::Anonymous, &id).unwrap();
        // Well before the routing timeout (10 s) would let the default answer.
        let events = tokio::time::timeout(Duration::from_secs(5), events(&engine, &id))
            .await
            .expect("the cancel ends the stream while the classifier still waits");
        let (response, metadata) = completed(&events);
        assert_eq!(metadata.finish_reason, FinishReason::Cancelled);
        assert_eq!(response, "", "nothing was generated");
    }

    #[tokio::test]
    async fn bad_requests_are_refused_with_their_codes() {
        let (engine, _scratch) = engine(Arc::new(DemoProvider::new(Duration::ZERO, 3))).await;
        let anon = Identity::Anonymous;
        assert!(matches!(
            engine.start(&anon, ask("  ")).await,
            Err(Error::EmptyMessage)
        ));
        let three = MessageRequest {
            persona_ids: Some(vec![
                "assistant".into(),
                "tech_enthusiast".into(),
                "data_scientist".into(),
            ]),
            ..ask("q")
        };
        assert!(matches!(
            engine.start(&anon, three).await,
            Err(Error::InvalidMessage(_))
        ));
        let unknown = MessageRequest {
            persona_id: Some("pirate".into()),
            ..ask("q")
        };
        match engine.start(&anon, unknown).await {
            Err(Error::InvalidMessage(text)) => assert!(text.contains("pirate"), "{text}"),
            other => panic!("{other:?}"),
        }
        let twice = MessageRequest {
            persona_ids: Some(vec!["assistant".into(), "assistant".into()]),
            ..ask("q")
        };
        match engine.start(&anon, twice).await {
            Err(Error::InvalidMessage(text)) => assert!(text.contains("twice"), "{text}"),
            other => panic!("{other:?}"),
        }
        let tools = MessageRequest {
            tools: Some(vec![serde_json::json!({"type": "web_search"})]),
            ..ask("q")
        };
        assert!(matches!(
            engine.start(&anon, tools).await,
            Err(Error::Unsupported(_))
        ));
        let long_id = MessageRequest {
            session_id: Some("x".repeat(500)),
            ..ask("q")
        };
        assert!(matches!(
            engine.start(&anon, long_id).await,
            Err(Error::InvalidMessage(_))
        ));
        let hot = MessageRequest {
            temperature: Some(9.0),
            ..ask("q")
        };
        assert!(matches!(
            engine.start(&anon, hot).await,
            Err(Error::InvalidMessage(_))
        ));
    }

    #[tokio::test]
    async fn a_full_server_is_overloaded_until_streams_finish() {
        let (engine, _scratch) =
            engine(Arc::new(DemoProvider::new(Duration::from_millis(5), 20))).await;
        let anon = Identity::Anonymous;
        let mut running = Vec::new();
        for _ in 0..3 {
            running.push(engine.start(&anon, ask("q")).await.unwrap());
        }
        assert!(matches!(
            engine.start(&anon, ask("q")).await,
            Err(Error::Overloaded)
        ));
        for started in &running {
            events(&engine, &started.stream_ids[0]).await;
        }
        assert!(
            engine.start(&anon, ask("q")).await.is_ok(),
            "capacity is back"
        );
    }

    #[tokio::test]
    async fn a_stream_nobody_watches_is_cancelled_after_the_grace() {
        let (mut engine, _scratch) = engine(Arc::new(DemoProvider::new(
            Duration::from_millis(20),
            100_000,
        )))
        .await;
        engine.limits.detach_grace = Duration::from_millis(300);
        let started = engine.start(&Identity::Anonymous, ask("q")).await.unwrap();
        let id = started.stream_ids[0].clone();
        // Nobody attaches: the stream stops by itself once the grace has passed,
        // which the engine's task tracker tells without polling.
        engine.tasks.close();
        tokio::time::timeout(Duration::from_secs(20), engine.tasks.wait())
            .await
            .expect("the generation ends after the grace");
        let events = events(&engine, &id).await;
        let (response, metadata) = completed(&events);
        assert_eq!(metadata.finish_reason, FinishReason::Cancelled);
        assert!(
            !response.is_empty(),
            "what was produced is kept for attachers"
        );
    }

    #[tokio::test]
    async fn shutdown_interrupts_streams_keeping_their_text() {
        let (engine, _scratch) = engine(Arc::new(DemoProvider::new(
            Duration::from_millis(10),
            100_000,
        )))
        .await;
        let started = engine.start(&Identity::Anonymous, ask("q")).await.unwrap();
        let mut sub = attach(&engine, &started.stream_ids[0]);
        first_token(&mut sub).await;
        assert_eq!(engine.interrupt_all(), 1);
        let events = events(&engine, &started.stream_ids[0]).await;
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

    /// A provider whose stream is never pending: every token is ready at once.
    struct AlwaysReady;

    impl Provider for AlwaysReady {
        fn name(&self) -> &'static str {
            "always-ready"
        }
        fn default_model(&self) -> &str {
            "r"
        }
        fn stream(
            &self,
            _: ProviderRequest,
        ) -> BoxStream<'static, std::result::Result<ProviderEvent, ProviderError>> {
            futures::stream::iter((0..50_000).map(|_| Ok(ProviderEvent::Token("x".into())))).boxed()
        }
    }

    #[tokio::test]
    async fn an_always_ready_provider_gives_way_to_other_tasks() {
        // One thread: another task runs during the generation only if the
        // generation gives way.
        let (engine, _scratch) = engine(Arc::new(AlwaysReady)).await;
        let started = engine.start(&Identity::Anonymous, ask("q")).await.unwrap();
        let id = started.stream_ids[0].clone();
        let seen = tokio::spawn({
            let engine = engine.clone();
            let id = id.clone();
            async move { engine.status(&Identity::Anonymous, &id).unwrap().last_seq }
        });
        let seen = seen.await.unwrap();
        assert!(
            seen < 1_000,
            "the other task ran after {seen} events, not after the whole reply"
        );
        events(&engine, &id).await;
    }

    #[tokio::test]
    async fn provider_failure_before_text_is_a_provider_error() {
        let (engine, _scratch) = engine(Arc::new(Failing { after: 0 })).await;
        let started = engine.start(&Identity::Anonymous, ask("q")).await.unwrap();
        let events = events(&engine, &started.stream_ids[0]).await;
        assert_eq!(
            events.last().map(|(_, e)| e),
            Some(&StreamEvent::Failed(Failure::Provider("boom".into())))
        );
    }

    #[tokio::test]
    async fn provider_failure_after_text_keeps_the_text() {
        let (engine, _scratch) = engine(Arc::new(Failing { after: 2 })).await;
        let started = engine.start(&Identity::Anonymous, ask("q")).await.unwrap();
        let events = events(&engine, &started.stream_ids[0]).await;
        let (response, metadata) = completed(&events);
        assert_eq!(response, "t0 t1 ");
        assert_eq!(metadata.finish_reason, FinishReason::Error);
    }

    #[tokio::test]
    async fn cancel_ends_the_stream_as_cancelled_keeping_its_text() {
        let (engine, _scratch) =
            engine(Arc::new(DemoProvider::new(Duration::from_millis(20), 1000))).await;
        let started = engine.start(&Identity::Anonymous, ask("q")).await.unwrap();
        let id = started.stream_ids[0].clone();
        let mut sub = attach(&engine, &id);
        first_token(&mut sub).await;
        engine.cancel(&Identity::Anonymous, &id).unwrap();
        let events = events(&engine, &id).await;
        let (response, metadata) = completed(&events);
        assert_eq!(metadata.finish_reason, FinishReason::Cancelled);
        assert!(!response.is_empty());
        assert!(events.len() < 100, "stopped long before 1000 tokens");
    }

    #[tokio::test]
    async fn another_owners_stream_is_forbidden_and_unknown_ones_not_found() {
        let (engine, _scratch) = engine(Arc::new(DemoProvider::new(Duration::ZERO, 3))).await;
        let alice = Identity::Guest("alice".into());
        let started = engine.start(&alice, ask("q")).await.unwrap();
        let id = &started.stream_ids[0];
        let bob = Identity::Guest("bob".into());
        assert!(matches!(engine.attach(&bob, id, 0), Err(Error::Forbidden)));
        assert!(matches!(engine.cancel(&bob, id), Err(Error::Forbidden)));
        assert!(matches!(
            engine.attach(&alice, "nope", 0),
            Err(Error::StreamNotFound)
        ));
        assert!(engine.attach(&alice, id, u64::MAX).is_ok());
    }
}
