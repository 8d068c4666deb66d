//! The chat's client-side state: messages, connection state and notices, and how
//! server events change them. Transport-agnostic: whatever carries the events,
//! [`ChatState::apply`] is the only way they reach the page.

use std::collections::HashMap;
use std::sync::Arc;

use leptos::prelude::*;
use rill_protocol::conversations::{ConversationMessage, ConversationSummary, title_from};
use rill_protocol::documents::{DocumentInfo, DocumentStatus, ProjectInfo, Source};
use rill_protocol::{
    AUTO_PERSONA, ClientFrame, Cost, ErrorCode, FinishReason, MessageRequest, PersonaInfo,
    ServerEvent, Timing, Usage,
};

use crate::history::InitialChat;
use crate::markdown::IncrementalMarkdown;

/// Commands queued for whatever transport carries the chat (WebSocket frames,
/// or their HTTP equivalents on the fallbacks).
pub type Outbox = futures::channel::mpsc::UnboundedSender<ClientFrame>;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The person chatting.
    User,
    /// The model.
    Assistant,
}

/// Where an assistant reply is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// Sent; no `start` yet.
    Waiting,
    /// Tokens are arriving.
    Streaming,
    /// Finished normally.
    Complete,
    /// Stopped by the user (`finish_reason: cancelled`).
    Stopped,
    /// Cut off: the server restarted, or the stream was gone when we came back.
    Interrupted,
    /// Failed; the message's `error` says why.
    Failed,
}

impl ReplyStatus {
    /// The `data-status` attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Waiting => "waiting",
            ReplyStatus::Streaming => "streaming",
            ReplyStatus::Complete => "complete",
            ReplyStatus::Stopped => "stopped",
            ReplyStatus::Interrupted => "interrupted",
            ReplyStatus::Failed => "failed",
        }
    }
}

/// The connection as the badge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// First attempt in progress (also what the server renders).
    Connecting,
    /// The WebSocket is open and the server answered.
    Live,
    /// Lost; reconnect attempt number n is pending.
    Reconnecting(u32),
    /// WebSocket unavailable; server-sent events carry the chat.
    FallbackSse,
    /// WebSocket and SSE unavailable; HTTP long-polling carries the chat.
    FallbackPolling,
    /// The server cannot be reached; retrying in the background.
    Offline,
}

impl ConnectionState {
    /// The badge's text.
    pub fn label(self) -> String {
        match self {
            ConnectionState::Connecting => "Connecting…".to_owned(),
            ConnectionState::Live => "Live · WebSocket".to_owned(),
            ConnectionState::Reconnecting(n) => format!("Reconnecting ({n})…"),
            ConnectionState::FallbackSse => "Fallback · SSE".to_owned(),
            ConnectionState::FallbackPolling => "Fallback · HTTP polling".to_owned(),
            ConnectionState::Offline => "Offline".to_owned(),
        }
    }

    /// Whether a question can be sent now.
    pub fn can_send(self) -> bool {
        matches!(
            self,
            ConnectionState::Live | ConnectionState::FallbackSse | ConnectionState::FallbackPolling
        )
    }

    /// The badge's `data-state`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Live => "live",
            ConnectionState::Reconnecting(_) => "reconnecting",
            ConnectionState::FallbackSse => "sse",
            ConnectionState::FallbackPolling => "polling",
            ConnectionState::Offline => "offline",
        }
    }
}

/// One message on the page. Every part is a signal, so a token updates only the
/// nodes of its own reply.
#[derive(Clone, Copy)]
pub struct MessageView {
    /// Stable key for the list.
    pub key: u64,
    /// Who wrote it.
    pub role: Role,
    /// A user message's text (assistant text lives in `blocks` and `tail`).
    pub text: StoredValue<String>,
    /// Rendered finished markdown blocks; each is added once.
    pub blocks: RwSignal<Vec<Arc<str>>>,
    /// Rendered unfinished block.
    pub tail: RwSignal<String>,
    /// Lifecycle.
    pub status: RwSignal<ReplyStatus>,
    /// The latest progress text (before the first token).
    pub progress: RwSignal<Option<String>>,
    /// Why it failed.
    pub error: RwSignal<Option<String>>,
    /// The whole reply text, set when it ends (for copy and tests).
    pub raw: RwSignal<Option<String>>,
    /// The stream this reply comes from, once started.
    pub stream_id: StoredValue<Option<String>>,
    /// The last seq applied: a resumed or duplicated event at or below it is ignored.
    pub last_seq: StoredValue<u64>,
    /// The stored message's id, once known (`replace_from` takes a question's).
    pub id: StoredValue<Option<String>>,
    /// A reply's persona: the one asked for, then (after routing) the one
    /// that answers.
    pub persona: RwSignal<Option<String>>,
    /// How sure routing was of `persona` (replies to `auto`).
    pub confidence: RwSignal<Option<f64>>,
    /// A finished reply's token counts, timing and cost.
    pub figures: RwSignal<Option<ReplyFigures>>,
    /// The stored ids of its versions, itself included, oldest first, when it
    /// has others (an edited question, a regenerated reply); else empty.
    pub versions: RwSignal<Vec<String>>,
    /// The passages a reply was given from its project's documents.
    pub sources: RwSignal<Vec<Source>>,
    /// A reply loaded from history while still streaming: it shows the saved
    /// text until the stream's replay from the start replaces it.
    replaying: StoredValue<bool>,
    /// The incremental renderer of this reply.
    renderer: StoredValue<IncrementalMarkdown>,
}

impl MessageView {
    fn new(key: u64, role: Role, text: String) -> Self {
        MessageView {
            key,
            role,
            text: StoredValue::new(text),
            blocks: RwSignal::new(Vec::new()),
            tail: RwSignal::new(String::new()),
            status: RwSignal::new(if role == Role::User {
                ReplyStatus::Complete
            } else {
                ReplyStatus::Waiting
            }),
            progress: RwSignal::new(None),
            error: RwSignal::new(None),
            raw: RwSignal::new(None),
            stream_id: StoredValue::new(None),
            last_seq: StoredValue::new(0),
            id: StoredValue::new(None),
            persona: RwSignal::new(None),
            confidence: RwSignal::new(None),
            figures: RwSignal::new(None),
            versions: RwSignal::new(Vec::new()),
            sources: RwSignal::new(Vec::new()),
            replaying: StoredValue::new(false),
            renderer: StoredValue::new(IncrementalMarkdown::new()),
        }
    }

    /// Learns its stored id; a new version (whose versions were copied from
    /// the one it replaces) counts itself among them.
    fn stored_as(&self, id: String) {
        // The id first: the switcher reads it when the versions change.
        self.id.set_value(Some(id.clone()));
        self.versions.update(|versions| {
            if !versions.is_empty() && !versions.contains(&id) {
                versions.push(id);
            }
        });
    }

    /// Which version it is, and of how many (`None` when it has no others).
    pub fn version_position(&self) -> Option<(usize, usize)> {
        let id = self.id.get_value()?;
        self.versions.with(|versions| {
            let at = versions.iter().position(|v| *v == id)?;
            (versions.len() > 1).then_some((at + 1, versions.len()))
        })
    }

    /// The id of the version `step` away from this one (-1: the previous).
    pub fn version_at(&self, step: isize) -> Option<String> {
        let (at, _) = self.version_position()?;
        let index = (at - 1).checked_add_signed(step)?;
        self.versions
            .with_untracked(|versions| versions.get(index).cloned())
    }

    /// The ids to carry to a new version of this message: its versions, or
    /// itself alone.
    fn lineage(&self) -> Vec<String> {
        let versions = self.versions.get_untracked();
        match (versions.is_empty(), self.id.get_value()) {
            (true, Some(id)) => vec![id],
            _ => versions,
        }
    }

    /// The text of the message (a reply's so far).
    pub fn text_now(&self) -> String {
        match self.role {
            Role::User => self.text.get_value(),
            Role::Assistant => self.renderer.with_value(|r| r.text().to_owned()),
        }
    }

    /// Shows a finished reply as one block, its whole text rendered at once
    /// (none if it is blank). A reply from history is shown so on the server
    /// and in the browser alike: hydration needs the same elements whatever
    /// the browser's renderer made of it (it may not have arrived yet, see
    /// `markdown::render`).
    fn show_whole(&self) {
        let html = self
            .renderer
            .with_value(|r| (!r.text().trim().is_empty()).then(|| Arc::from(r.render_all())));
        self.blocks.set(html.into_iter().collect());
        self.tail.set(String::new());
    }

    /// Empties a reply's rendering (before a replay from its start).
    fn clear(&self) {
        self.renderer.set_value(IncrementalMarkdown::new());
        self.blocks.set(Vec::new());
        self.tail.set(String::new());
    }
}

/// A finished reply's figures, as the page shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyFigures {
    /// Token counts (maybe estimated).
    pub usage: Option<Usage>,
    /// How long it took.
    pub timing: Option<Timing>,
    /// What it cost.
    pub cost: Option<Cost>,
}

impl ReplyFigures {
    /// The figures of a reply, if it has any.
    pub fn of(usage: Option<Usage>, timing: Option<Timing>, cost: Option<Cost>) -> Option<Self> {
        (usage.is_some() || timing.is_some()).then_some(ReplyFigures {
            usage,
            timing,
            cost,
        })
    }

    /// One line: "12 in · 230 out tokens · first token 0.42 s · 48 tokens/s · $0.0003"
    /// (counts rill estimated are marked with ≈).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(usage) = &self.usage {
            let about = if usage.estimated { "≈" } else { "" };
            parts.push(format!(
                "{about}{} in · {about}{} out tokens",
                grouped(u64::from(usage.prompt_tokens)),
                grouped(u64::from(usage.completion_tokens))
            ));
        }
        if let Some(timing) = &self.timing {
            parts.push(format!(
                "first token {:.2} s",
                timing.first_token_ms as f64 / 1000.0
            ));
            let rate = self
                .usage
                .and_then(|u| timing.tokens_per_second(u.completion_tokens));
            if let Some(rate) = rate {
                parts.push(format!("{rate:.0} tokens/s"));
            }
        }
        if let Some(cost) = &self.cost {
            parts.push(money(cost.amount, &cost.currency));
        }
        parts.join(" · ")
    }
}

/// A conversation's totals over its replies' figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Prompt tokens.
    pub prompt: u64,
    /// Reply tokens.
    pub completion: u64,
    /// Whether any count was estimated.
    pub estimated: bool,
    /// The summed cost and its currency, when every priced reply agrees on one.
    pub cost: Option<(f64, String)>,
}

impl Totals {
    /// The totals of `figures`; `None` when no reply has counts.
    pub fn of<'a>(figures: impl IntoIterator<Item = &'a ReplyFigures>) -> Option<Self> {
        let mut totals = Totals::default();
        let mut counted = false;
        for figures in figures {
            if let Some(usage) = figures.usage {
                counted = true;
                totals.prompt += u64::from(usage.prompt_tokens);
                totals.completion += u64::from(usage.completion_tokens);
                totals.estimated |= usage.estimated;
            }
            if let Some(cost) = &figures.cost {
                totals.cost = match totals.cost.take() {
                    None => Some((cost.amount, cost.currency.clone())),
                    Some((sum, currency)) if currency == cost.currency => {
                        Some((sum + cost.amount, currency))
                    }
                    Some(other) => Some(other),
                };
            }
        }
        counted.then_some(totals)
    }

    /// One line: "1,234 tokens in · 5,678 out · $0.0120".
    pub fn summary(&self) -> String {
        let about = if self.estimated { "≈" } else { "" };
        let mut text = format!(
            "{about}{} tokens in · {about}{} out",
            grouped(self.prompt),
            grouped(self.completion)
        );
        if let Some((amount, currency)) = &self.cost {
            text.push_str(" · ");
            text.push_str(&money(*amount, currency));
        }
        text
    }
}

/// `1234567` as "1,234,567".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An amount of money: "$0.0003" for dollars, "0.0003 EUR" otherwise; four
/// decimals below one cent, two above.
fn money(amount: f64, currency: &str) -> String {
    let number = if amount < 0.01 {
        format!("{amount:.4}")
    } else {
        format!("{amount:.2}")
    };
    if currency == "USD" {
        format!("${number}")
    } else {
        format!("{number} {currency}")
    }
}

/// Shows the conversation's address (`/c/{id}`; the static build's
/// `?c={id}`) in the address bar once a new chat has its id, so a reload
/// opens it again.
#[cfg(feature = "browser")]
fn show_conversation_url(id: &str) {
    let path = crate::components::sidebar::conversation_href(id);
    if let Ok(history) = leptos::prelude::window().history() {
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&path));
    }
}

/// How many messages a conversation opens with (its newest, whole turns):
/// each costs the browser its markdown and its part of hydration (about two
/// milliseconds here), and a thousand of them took a main-thread task of
/// 0.67 s (BENCHMARKS.md).
pub const WINDOW: usize = 20;

/// How many earlier messages join the page at a time (a task of about 35 ms
/// here).
pub const CHUNK: usize = 16;

/// Where the window of `messages` a page opens with starts.
pub fn window_start(messages: &[ConversationMessage]) -> usize {
    turn_start(messages, WINDOW)
}

/// Where the newest `at_most` messages of `messages` start, moved back to
/// the question of their first turn (a turn is never split); 0 when all fit.
fn turn_start(messages: &[ConversationMessage], at_most: usize) -> usize {
    let mut start = messages.len().saturating_sub(at_most);
    while start > 0 && messages[start].role != "user" {
        start -= 1;
    }
    start
}

/// A question sent whose replies have not all started.
#[derive(Clone)]
struct Waiting {
    /// The question.
    question: MessageView,
    /// Replies not started yet, with the persona each was asked of.
    replies: Vec<(String, MessageView)>,
}

/// The whole client state, provided as context.
#[derive(Clone, Copy)]
pub struct ChatState {
    /// The conversation, in order.
    pub messages: RwSignal<Vec<MessageView>>,
    /// The badge.
    pub connection: RwSignal<ConnectionState>,
    /// Errors shown to the user that belong to no message.
    pub notices: RwSignal<Vec<(u64, String)>>,
    /// The conversation id the server assigned (sent with later messages).
    pub session_id: RwSignal<Option<String>>,
    /// Where frames go; `None` while no transport is connected.
    pub outbox: StoredValue<Option<Outbox>>,
    /// The models the server offers (`GET /api/v1/models`); empty until known.
    pub models: RwSignal<Vec<String>>,
    /// The model chosen for new questions (`None`: the server's default).
    pub model: RwSignal<Option<String>>,
    /// The caller's conversations for the sidebar, newest first.
    pub conversations: RwSignal<Vec<ConversationSummary>>,
    /// The personas the server offers (`GET /api/v1/personas`); empty until known.
    pub personas: RwSignal<Vec<PersonaInfo>>,
    /// Who answers new questions: one persona, several (side by side), or
    /// `auto`. Never empty.
    pub chosen: RwSignal<Vec<String>>,
    /// A question to open for editing (its key): the Up arrow in an empty
    /// composer asks for the last one; the message takes it and clears it.
    pub edit_request: RwSignal<Option<u64>>,
    /// Whether the search dialog is open (Ctrl/Cmd+K, the topbar's button).
    pub search_open: RwSignal<bool>,
    /// The cursor of the sidebar's next (older) page of conversations.
    pub conversations_next: RwSignal<Option<String>>,
    /// The open conversation's messages older than those on the page, oldest
    /// first: a long conversation opens with its newest [`WINDOW`] messages,
    /// and earlier ones join the page [`CHUNK`] at a time as the reader scrolls
    /// up ([`ChatState::show_earlier`]).
    pub earlier: RwSignal<Vec<ConversationMessage>>,
    /// The project new questions are asked in (its documents answer them);
    /// `None`: no project.
    pub project: RwSignal<Option<String>>,
    /// The caller's projects (`GET /api/v1/projects`), and any named here
    /// before its first upload.
    pub projects: RwSignal<Vec<ProjectInfo>>,
    /// The chosen project's documents, newest first.
    pub documents: RwSignal<Vec<DocumentInfo>>,
    /// Processing progress (0–100) of documents, from `document_status`.
    pub progress: RwSignal<HashMap<String, u8>>,
    /// Whether the documents panel is open.
    pub documents_open: RwSignal<bool>,
    by_stream: StoredValue<HashMap<String, MessageView>>,
    /// Streams started over HTTP whose `start` has not arrived yet: followed from
    /// seq 0 by whichever transport comes next.
    pending_streams: StoredValue<Vec<String>>,
    /// The page's reactive owner: messages are created under it, not under the
    /// component whose button was clicked (removing that component must not
    /// dispose the messages it created).
    owner: StoredValue<Option<Owner>>,
    /// Questions whose replies wait for their `start`, by client message id.
    by_client_id: StoredValue<HashMap<String, Waiting>>,
    next_key: StoredValue<u64>,
}

impl Default for ChatState {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatState {
    /// The open conversation's totals over its replies' figures.
    pub fn totals(&self) -> Option<Totals> {
        let mut figures: Vec<ReplyFigures> = self.earlier.with(|earlier| {
            earlier
                .iter()
                .filter_map(|m| ReplyFigures::of(m.usage, m.timing, m.cost.clone()))
                .collect()
        });
        self.messages
            .with(|messages| figures.extend(messages.iter().filter_map(|m| m.figures.get())));
        Totals::of(&figures)
    }

    /// An empty chat, connecting.
    pub fn new() -> Self {
        ChatState {
            messages: RwSignal::new(Vec::new()),
            connection: RwSignal::new(ConnectionState::Connecting),
            notices: RwSignal::new(Vec::new()),
            session_id: RwSignal::new(None),
            outbox: StoredValue::new(None),
            models: RwSignal::new(Vec::new()),
            model: RwSignal::new(None),
            conversations: RwSignal::new(Vec::new()),
            personas: RwSignal::new(Vec::new()),
            chosen: RwSignal::new(vec![rill_protocol::client::DEFAULT_PERSONA.to_owned()]),
            edit_request: RwSignal::new(None),
            search_open: RwSignal::new(false),
            conversations_next: RwSignal::new(None),
            earlier: RwSignal::new(Vec::new()),
            project: RwSignal::new(None),
            projects: RwSignal::new(Vec::new()),
            documents: RwSignal::new(Vec::new()),
            progress: RwSignal::new(HashMap::new()),
            documents_open: RwSignal::new(false),
            owner: StoredValue::new(Owner::current()),
            by_stream: StoredValue::new(HashMap::new()),
            pending_streams: StoredValue::new(Vec::new()),
            by_client_id: StoredValue::new(HashMap::new()),
            next_key: StoredValue::new(1),
        }
    }

    /// A new message, owned by the page.
    fn new_view(&self, role: Role, text: String) -> MessageView {
        let key = self.key();
        match self.owner.get_value() {
            Some(owner) => owner.with(|| MessageView::new(key, role, text)),
            None => MessageView::new(key, role, text),
        }
    }

    fn key(&self) -> u64 {
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        key
    }

    /// Shows an error that belongs to no message.
    pub fn notify(&self, text: impl Into<String>) {
        let key = self.key();
        self.notices.update(|n| {
            n.push((key, text.into()));
            // Keep the last few only.
            if n.len() > 3 {
                n.remove(0);
            }
        });
    }

    /// Dismisses a notice.
    pub fn dismiss(&self, key: u64) {
        self.notices.update(|n| n.retain(|(k, _)| *k != key));
    }

    /// Queues a command for the transport; false if there is none.
    pub fn send_frame(&self, frame: &ClientFrame) -> bool {
        self.outbox.with_value(|outbox| {
            outbox
                .as_ref()
                .is_some_and(|tx| tx.unbounded_send(frame.clone()).is_ok())
        })
    }

    /// The last seq applied for a stream (0 if unknown).
    pub fn last_seq(&self, stream_id: &str) -> u64 {
        self.by_stream
            .with_value(|m| m.get(stream_id).map(|m| m.last_seq.get_value()))
            .unwrap_or(0)
    }

    /// Starts from what the server rendered: the sidebar and the open conversation.
    pub fn load(&self, initial: InitialChat) {
        self.conversations.set(initial.conversations);
        self.conversations_next.set(initial.next);
        if let Some(problem) = initial.problem {
            self.notify(problem);
        }
        let Some(current) = initial.current else {
            return;
        };
        self.session_id.set(Some(current.conversation.id.clone()));
        let mut recent = current.messages;
        let earlier = recent.drain(..window_start(&recent)).collect();
        self.earlier.set(earlier);
        let views: Vec<MessageView> = recent
            .into_iter()
            .map(|stored| self.stored_view(stored))
            .collect();
        self.messages.set(views);
    }

    /// The open conversation's messages before its window, which the
    /// browser reads from the page apart from the rest ([`crate::history`]):
    /// called where they are first needed, once.
    pub fn load_earlier_from_page(&self) {
        let earlier = crate::history::earlier_from_page();
        if !earlier.is_empty() {
            self.earlier.set(earlier);
        }
    }

    /// Puts up to [`CHUNK`] earlier messages (whole turns) on the page, before
    /// those there; a reply among them still being written is followed.
    /// Returns how many.
    pub fn show_earlier(&self) -> usize {
        let views = self.take_earlier();
        let added = views.len();
        self.put_earlier(views);
        added
    }

    /// The next [`CHUNK`] of earlier messages (whole turns) made ready to
    /// show, their markdown rendered, without touching the page:
    /// [`ChatState::put_earlier`] shows them. Apart, the two halves of a load
    /// run in two tasks of the browser's main thread instead of one.
    pub fn take_earlier(&self) -> Vec<MessageView> {
        let chunk = self
            .earlier
            .try_update(|earlier| earlier.split_off(turn_start(earlier, CHUNK)))
            .unwrap_or_default();
        chunk
            .into_iter()
            .map(|stored| self.stored_view(stored))
            .collect()
    }

    /// Puts `views` (from [`ChatState::take_earlier`]) on the page before
    /// the messages there; a reply among them still being written is followed.
    pub fn put_earlier(&self, views: Vec<MessageView>) {
        if views.is_empty() {
            return;
        }
        self.follow_replays(&views);
        self.messages.update(|messages| {
            let later = std::mem::replace(messages, views);
            messages.extend(later);
        });
    }

    /// Puts earlier messages on the page until message `id` is there; whether
    /// it is (false if the conversation has no such message).
    pub fn reveal(&self, id: &str) -> bool {
        loop {
            if self
                .messages
                .with_untracked(|m| m.iter().any(|v| v.id.get_value().as_deref() == Some(id)))
            {
                return true;
            }
            if !self
                .earlier
                .with_untracked(|e| e.iter().any(|m| m.id == id))
                || self.show_earlier() == 0
            {
                return false;
            }
        }
    }

    /// Follows the replies among `views` that are still being written (loaded
    /// from the store, they replay from their start).
    fn follow_replays(&self, views: &[MessageView]) {
        for view in views {
            if view.replaying.get_value()
                && let Some(stream_id) = view.stream_id.get_value()
            {
                self.send_frame(&ClientFrame::Resume {
                    stream_id,
                    after_seq: 0,
                });
            }
        }
    }

    /// Shows the conversation as the server now shows it (after switching to
    /// another version): messages already on the page stay as they are,
    /// others are added from the store, and a reply among them that is still
    /// being written is followed from its start.
    pub fn show_branch(&self, detail: rill_protocol::conversations::ConversationDetail) {
        if self.session_id.get_untracked().as_deref() != Some(detail.conversation.id.as_str()) {
            return;
        }
        let on_page: HashMap<String, MessageView> = self.messages.with_untracked(|messages| {
            messages
                .iter()
                .filter_map(|view| Some((view.id.get_value()?, *view)))
                .collect()
        });
        // As many as were on the page (at least a window), whole turns.
        let mut recent = detail.messages;
        let shown = self.messages.with_untracked(Vec::len).max(WINDOW);
        let earlier = recent.drain(..turn_start(&recent, shown)).collect();
        self.earlier.set(earlier);
        let mut added = Vec::new();
        let views: Vec<MessageView> = recent
            .into_iter()
            .map(|stored| match on_page.get(&stored.id) {
                Some(view) => {
                    view.versions.set(stored.versions);
                    *view
                }
                None => {
                    let view = self.stored_view(stored);
                    added.push(view);
                    view
                }
            })
            .collect();
        self.messages.set(views);
        self.follow_replays(&added);
    }

    /// A message of the history as the page shows it.
    fn stored_view(&self, stored: ConversationMessage) -> MessageView {
        let role = if stored.role == "user" {
            Role::User
        } else {
            Role::Assistant
        };
        let view = self.new_view(role, stored.content.clone());
        view.id.set_value(Some(stored.id));
        view.versions.set(stored.versions);
        view.sources.set(stored.sources);
        if role == Role::User {
            return view;
        }
        view.persona.set(stored.persona_id);
        view.confidence.set(stored.confidence);
        view.figures
            .set(ReplyFigures::of(stored.usage, stored.timing, stored.cost));
        view.renderer
            .set_value(IncrementalMarkdown::with_text(&stored.content));
        view.show_whole();
        view.raw.set(Some(stored.content.clone()));
        view.status.set(match stored.status.as_str() {
            "streaming" => ReplyStatus::Streaming,
            "cancelled" => ReplyStatus::Stopped,
            "interrupted" => ReplyStatus::Interrupted,
            "error" => {
                view.error.set(Some(if stored.content.is_empty() {
                    "This reply failed.".into()
                } else {
                    "The reply ended early because of an error.".into()
                }));
                ReplyStatus::Failed
            }
            _ => ReplyStatus::Complete,
        });
        if let Some(stream_id) = stored.stream_id {
            if stored.status == "streaming" {
                // Still generating: follow it (resume replays it from the start).
                view.raw.set(None);
                view.replaying.set_value(true);
                self.by_stream.update_value(|m| {
                    m.insert(stream_id.clone(), view);
                });
            }
            view.stream_id.set_value(Some(stream_id));
        }
        view
    }

    /// Sends a question: adds it and a waiting reply to the page. False (and a
    /// notice) when no transport is connected, so the composer keeps the draft.
    pub fn ask(&self, text: String) -> bool {
        self.send_question(text, None)
    }

    /// Shows another version of a message (`message_id`, one of its
    /// versions): the page then shows the branch the server shows.
    pub fn select_version(&self, message_id: String) {
        let Some(conversation) = self.session_id.get_untracked() else {
            return;
        };
        #[cfg(feature = "browser")]
        crate::transport::select_version(*self, conversation, message_id);
        #[cfg(not(feature = "browser"))]
        let _ = (conversation, message_id);
    }

    /// Answers `reply`'s question again, by the same persona (routing again
    /// for a routed reply): the new answer takes the reply's place and the old
    /// one stays as an earlier version. Only this reply of a side-by-side turn
    /// is answered again; what follows it stays.
    pub fn regenerate(&self, reply: MessageView) {
        let Some(reply_id) = reply.id.get_value() else {
            self.notify("This reply is not saved yet: try again in a moment.");
            return;
        };
        if !self.connection.get_untracked().can_send() {
            self.notify("Not connected: try again once the badge says Live.");
            return;
        }
        let question = self.messages.with_untracked(|m| {
            let at = m.iter().position(|v| v.key == reply.key)?;
            let start = m[..at].iter().rposition(|v| v.role == Role::User)?;
            Some(m[start])
        });
        let Some(question) = question else {
            self.notify("There is no question to answer again.");
            return;
        };
        let persona = match reply.confidence.get_untracked() {
            Some(_) => AUTO_PERSONA.to_owned(),
            None => reply
                .persona
                .get_untracked()
                .unwrap_or_else(|| rill_protocol::client::DEFAULT_PERSONA.to_owned()),
        };
        let fresh = self.new_view(Role::Assistant, String::new());
        fresh.persona.set(Some(persona.clone()));
        fresh.versions.set(reply.lineage());
        self.messages.update(|m| {
            if let Some(slot) = m.iter_mut().find(|v| v.key == reply.key) {
                *slot = fresh;
            }
        });
        let client_id = format!("c{}", fresh.key);
        self.by_client_id.update_value(|m| {
            m.insert(
                client_id.clone(),
                Waiting {
                    question,
                    replies: vec![(persona, fresh)],
                },
            );
        });
        let frame = ClientFrame::Message(MessageRequest {
            model: self.model.get_untracked(),
            session_id: self.session_id.get_untracked(),
            client_message_id: Some(client_id),
            regenerate: Some(reply_id),
            project_id: self.project.get_untracked(),
            ..Default::default()
        });
        if !self.send_frame(&frame) {
            fresh.status.set(ReplyStatus::Failed);
            fresh.error.set(Some("Not connected".into()));
        }
    }

    /// Sends `text` as a new version of the question `question`: on the page
    /// it takes the question's place and what followed goes; in the store the
    /// old version and its branch are kept (the switcher shows them again).
    pub fn edit(&self, question: MessageView, text: String) -> bool {
        if text.trim().is_empty() {
            return false;
        }
        let Some(id) = question.id.get_value() else {
            self.notify("This message is not saved yet: try again in a moment.");
            return false;
        };
        if !self.connection.get_untracked().can_send() {
            self.notify("Not connected: try again once the badge says Live.");
            return false;
        }
        // Stop what is still generating after it: it is being replaced.
        let dropped = self.messages.with_untracked(|m| {
            m.iter()
                .skip_while(|v| v.key != question.key)
                .copied()
                .collect::<Vec<_>>()
        });
        for view in &dropped {
            if matches!(
                view.status.get_untracked(),
                ReplyStatus::Streaming | ReplyStatus::Waiting
            ) {
                self.stop(*view);
            }
        }
        self.messages
            .update(|m| m.retain(|v| !dropped.iter().any(|d| d.key == v.key)));
        self.send_question(text, Some((id, question.lineage())))
    }

    /// Sends a question, answered by the personas chosen; `replacing` names
    /// the stored question it is a new version of, with that one's versions.
    fn send_question(&self, text: String, replacing: Option<(String, Vec<String>)>) -> bool {
        if !self.connection.get_untracked().can_send() {
            self.notify(
                "Not connected: your message is kept; send it again once the badge says Live.",
            );
            return false;
        }
        let chosen = self.chosen.get_untracked();
        let user = self.new_view(Role::User, text.clone());
        let replace_from = replacing.map(|(id, versions)| {
            user.versions.set(versions);
            id
        });
        let replies: Vec<(String, MessageView)> = chosen
            .iter()
            .map(|persona| {
                let reply = self.new_view(Role::Assistant, String::new());
                reply.persona.set(Some(persona.clone()));
                (persona.clone(), reply)
            })
            .collect();
        let client_id = format!("c{}", user.key);
        self.by_client_id.update_value(|m| {
            m.insert(
                client_id.clone(),
                Waiting {
                    question: user,
                    replies: replies.clone(),
                },
            );
        });
        self.note_activity(self.session_id.get_untracked().as_deref(), &text);
        self.messages.update(|m| {
            m.push(user);
            m.extend(replies.iter().map(|(_, reply)| *reply));
        });
        let (persona_id, persona_ids) = match chosen.as_slice() {
            [one] => (Some(one.clone()), None),
            several => (None, Some(several.to_vec())),
        };
        let frame = ClientFrame::Message(MessageRequest {
            message: Some(text),
            model: self.model.get_untracked(),
            session_id: self.session_id.get_untracked(),
            client_message_id: Some(client_id),
            persona_id,
            persona_ids,
            replace_from,
            project_id: self.project.get_untracked(),
            ..Default::default()
        });
        if !self.send_frame(&frame) {
            for (_, reply) in &replies {
                reply.status.set(ReplyStatus::Failed);
                reply.error.set(Some("Not connected".into()));
            }
        }
        true
    }

    /// Who answers new questions: toggles `persona` in the choice. `auto` is
    /// exclusive; the last persona chosen cannot be removed (one must answer).
    pub fn toggle_persona(&self, persona: &str) {
        self.chosen.update(|chosen| {
            let has = chosen.iter().any(|p| p == persona);
            if persona == AUTO_PERSONA || chosen.iter().any(|p| p == AUTO_PERSONA) {
                *chosen = vec![persona.to_owned()];
            } else if has && chosen.len() > 1 {
                chosen.retain(|p| p != persona);
            } else if !has {
                chosen.push(persona.to_owned());
            }
        });
    }

    /// A persona's display name (its id when unknown).
    pub fn persona_name(&self, id: &str) -> String {
        if id == AUTO_PERSONA {
            return "Auto".to_owned();
        }
        self.personas.with(|personas| {
            personas
                .iter()
                .find(|p| p.id == id)
                .map_or_else(|| id.to_owned(), |p| p.name.clone())
        })
    }

    /// Stops every reply still streaming or waiting (Esc); whether there was one.
    pub fn stop_streaming(&self) -> bool {
        let running: Vec<MessageView> = self.messages.with_untracked(|m| {
            m.iter()
                .filter(|v| {
                    v.role == Role::Assistant
                        && matches!(
                            v.status.get_untracked(),
                            ReplyStatus::Streaming | ReplyStatus::Waiting
                        )
                })
                .copied()
                .collect()
        });
        for reply in &running {
            self.stop(*reply);
        }
        !running.is_empty()
    }

    /// Opens the last question for editing (Up arrow in an empty composer);
    /// whether there is one.
    pub fn edit_last_question(&self) -> bool {
        let last = self
            .messages
            .with_untracked(|m| m.iter().rev().find(|v| v.role == Role::User).map(|v| v.key));
        self.edit_request.set(last);
        last.is_some()
    }

    /// Asks the server to stop a streaming reply.
    pub fn stop(&self, message: MessageView) {
        if let Some(stream_id) = message.stream_id.get_value() {
            self.send_frame(&ClientFrame::Cancel { stream_id });
        }
    }

    /// Records a stream started over HTTP, so it is followed even before its
    /// `start` arrives.
    pub fn track_stream(&self, stream_id: &str) {
        self.pending_streams.update_value(|pending| {
            if !pending.iter().any(|id| id == stream_id) {
                pending.push(stream_id.to_owned());
            }
        });
    }

    /// Frames to send after (re)connecting: resume every reply still streaming.
    /// The room of the chosen project, whose document events the page hears.
    pub fn project_room(&self) -> Option<String> {
        self.project
            .get_untracked()
            .map(|project| format!("project_{project}"))
    }

    /// A project room's event: a document's progress, or the list changed.
    fn room_event(&self, room: &str, event: &str, data: serde_json::Value) {
        if self.project_room().as_deref() != Some(room) {
            return;
        }
        match event {
            "document_status" => {
                let (Some(id), Some(status)) =
                    (data["document_id"].as_str(), data["status"].as_str())
                else {
                    return;
                };
                let progress = data["progress"].as_u64().unwrap_or(0).min(100) as u8;
                self.progress.update(|p| {
                    p.insert(id.to_owned(), progress);
                });
                let status = DocumentStatus::parse(status);
                self.documents.update(|documents| {
                    if let Some(document) = documents.iter_mut().find(|d| d.document_id == id) {
                        document.status = status;
                        if let Some(chunks) = data["chunks"].as_u64() {
                            document.chunks = chunks;
                        }
                        if let Some(pages) = data["pages"].as_u64() {
                            document.pages = Some(pages);
                        }
                        document.error = data["error"].as_str().map(str::to_owned);
                    }
                });
            }
            "project_update" => {
                let document: Option<DocumentInfo> = match data["type"].as_str() {
                    Some("document_added") => serde_json::from_value(data["data"].clone()).ok(),
                    _ => None,
                };
                match (data["type"].as_str(), document) {
                    (Some("document_added"), Some(document)) => {
                        self.documents.update(|documents| {
                            if !documents
                                .iter()
                                .any(|d| d.document_id == document.document_id)
                            {
                                documents.insert(0, document);
                            }
                        })
                    }
                    (Some("document_deleted"), _) => {
                        if let Some(id) = data["data"]["document_id"].as_str() {
                            self.documents.update(|d| d.retain(|d| d.document_id != id));
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Chooses the project new questions are asked in (its documents show in
    /// the panel); the socket leaves the old project's room and joins the new.
    pub fn choose_project(&self, project: Option<String>) {
        let project = project.filter(|p| !p.trim().is_empty());
        if self.project.get_untracked() == project {
            return;
        }
        if let Some(room) = self.project_room() {
            self.send_frame(&ClientFrame::Leave { room });
        }
        self.project.set(project.clone());
        self.documents.set(Vec::new());
        self.progress.set(HashMap::new());
        if let Some(project) = project {
            self.projects.update(|projects| {
                if !projects.iter().any(|p| p.project_id == project) {
                    projects.insert(
                        0,
                        ProjectInfo {
                            project_id: project.clone(),
                            documents: 0,
                            created_at: 0,
                        },
                    );
                }
            });
            if let Some(room) = self.project_room() {
                self.send_frame(&ClientFrame::Join { room });
            }
        }
    }

    pub fn resume_frames(&self) -> Vec<ClientFrame> {
        let pending = self.pending_streams.with_value(|pending| {
            pending
                .iter()
                .map(|id| ClientFrame::Resume {
                    stream_id: id.clone(),
                    after_seq: 0,
                })
                .collect::<Vec<_>>()
        });
        pending
            .into_iter()
            .chain(self.by_stream.with_value(|streams| {
                streams
                    .iter()
                    .filter(|(_, m)| {
                        matches!(
                            m.status.get_untracked(),
                            ReplyStatus::Streaming | ReplyStatus::Waiting
                        )
                    })
                    .map(|(id, m)| ClientFrame::Resume {
                        stream_id: id.clone(),
                        after_seq: m.last_seq.get_value(),
                    })
                    .collect::<Vec<_>>()
            }))
            // A new connection is in no room: the chosen project's again.
            .chain(self.project_room().map(|room| ClientFrame::Join { room }))
            .collect()
    }

    /// Applies one server event to the page.
    pub fn apply(&self, event: ServerEvent) {
        if let Some((stream_id, seq)) = event.stream_position() {
            let message = self.by_stream.with_value(|m| m.get(stream_id).copied());
            if let Some(message) = message
                && seq <= message.last_seq.get_value()
            {
                // Already applied (a resume overlapped what we had).
                return;
            }
        }
        match event {
            ServerEvent::Start {
                stream_id,
                seq,
                session_id,
                message_id,
                user_message_id,
                client_message_id,
                persona_id,
                ..
            } => {
                let first_of_conversation = self.session_id.get_untracked().is_none();
                self.session_id.set(Some(session_id.clone()));
                self.pending_streams
                    .update_value(|pending| pending.retain(|id| *id != stream_id));
                let waiting = client_message_id.and_then(|id| {
                    self.by_client_id
                        .try_update_value(|m| {
                            let entry = m.get_mut(&id)?;
                            let at = entry
                                .replies
                                .iter()
                                .position(|(persona, _)| *persona == persona_id)
                                .unwrap_or(0);
                            if entry.replies.is_empty() {
                                return None;
                            }
                            let (_, reply) = entry.replies.remove(at);
                            let question = entry.question;
                            if entry.replies.is_empty() {
                                m.remove(&id);
                            }
                            Some((reply, question))
                        })
                        .flatten()
                });
                if let Some((_, question)) = waiting {
                    if let Some(id) = user_message_id {
                        question.stored_as(id);
                    }
                    if first_of_conversation {
                        self.note_activity(Some(&session_id), &question.text.get_value());
                        #[cfg(feature = "browser")]
                        show_conversation_url(&session_id);
                    }
                }
                // A stream followed from history replays from its start.
                let known = self.by_stream.with_value(|m| m.get(&stream_id).copied());
                if let Some(known) = known
                    && known.replaying.get_value()
                {
                    known.replaying.set_value(false);
                    known.clear();
                }
                let message = known
                    .or(waiting.map(|(reply, _)| reply))
                    .unwrap_or_else(|| {
                        let message = self.new_view(Role::Assistant, String::new());
                        self.messages.update(|m| m.push(message));
                        message
                    });
                message.stored_as(message_id);
                message.persona.set(Some(persona_id));
                message.stream_id.set_value(Some(stream_id.clone()));
                message.last_seq.set_value(seq);
                message.status.set(ReplyStatus::Streaming);
                self.by_stream.update_value(|m| {
                    m.insert(stream_id, message);
                });
            }
            ServerEvent::Progress {
                stream_id,
                seq,
                message: text,
                agent,
                confidence,
                ..
            } => {
                if let Some(message) = self.stream_message(&stream_id, seq) {
                    message.progress.set(Some(text));
                    if agent.is_some() {
                        message.persona.set(agent);
                        message.confidence.set(confidence);
                    }
                }
            }
            ServerEvent::Token {
                stream_id,
                seq,
                token,
                ..
            } => {
                if let Some(message) = self.stream_message(&stream_id, seq) {
                    let update = message
                        .renderer
                        .try_update_value(|r| r.push(&token))
                        .unwrap_or_default();
                    if !update.finished.is_empty() {
                        message
                            .blocks
                            .update(|b| b.extend(update.finished.into_iter().map(Arc::from)));
                    }
                    message.tail.set(update.tail);
                    if message.progress.get_untracked().is_some() {
                        message.progress.set(None);
                    }
                }
            }
            ServerEvent::Complete {
                stream_id,
                seq,
                metadata,
                ..
            } => {
                if let Some(message) = self.stream_message(&stream_id, seq) {
                    self.finish(message);
                    message.figures.set(ReplyFigures::of(
                        metadata.usage,
                        metadata.timing,
                        metadata.cost.clone(),
                    ));
                    message.persona.set(Some(metadata.agent.clone()));
                    if metadata.confidence.is_some() {
                        message.confidence.set(metadata.confidence);
                    }
                    message.status.set(match metadata.finish_reason {
                        FinishReason::Cancelled => ReplyStatus::Stopped,
                        FinishReason::Error => {
                            message
                                .error
                                .set(Some("The reply ended early because of an error.".into()));
                            ReplyStatus::Failed
                        }
                        FinishReason::Interrupted => ReplyStatus::Interrupted,
                        FinishReason::Stop | FinishReason::Length => ReplyStatus::Complete,
                    });
                }
            }
            ServerEvent::Error {
                error,
                code,
                stream_id,
                seq,
                ..
            } => {
                let text = format!("{error} ({code})");
                let message = match (&stream_id, seq) {
                    (Some(id), Some(seq)) => self.stream_message(id, seq),
                    (Some(id), None) => self.by_stream.with_value(|m| m.get(id).copied()),
                    // A rejected `message`: the oldest question still waiting
                    // for its replies' start; all of them failed.
                    _ => {
                        let mut rest = self.oldest_waiting();
                        let first = rest.pop();
                        for other in rest {
                            self.finish(other);
                            other.status.set(ReplyStatus::Failed);
                            other.error.set(Some(text.clone()));
                        }
                        first
                    }
                };
                match message {
                    // Coming back to a stream that no longer exists (the server
                    // restarted, or it expired): keep what arrived and say so.
                    Some(message)
                        if code == ErrorCode::StreamNotFound
                            && seq.is_none()
                            && message.status.get_untracked() == ReplyStatus::Streaming =>
                    {
                        self.finish(message);
                        message.status.set(ReplyStatus::Interrupted);
                    }
                    Some(message) => {
                        self.finish(message);
                        message.status.set(ReplyStatus::Failed);
                        message.error.set(Some(text));
                    }
                    None => self.notify(text),
                }
            }
            ServerEvent::Sources {
                stream_id,
                seq,
                sources,
            } => {
                if let Some(message) = self.stream_message(&stream_id, seq) {
                    message.sources.set(sources);
                }
            }
            ServerEvent::RoomEvent { room, event, data } => self.room_event(&room, &event, data),
            // Each reply's own `complete` already finished it.
            ServerEvent::Hello { .. }
            | ServerEvent::Pong { .. }
            | ServerEvent::TurnComplete { .. } => {}
            // The UI joins no room (projects come with documents).
            ServerEvent::Joined { .. }
            | ServerEvent::Left { .. }
            | ServerEvent::Presence { .. }
            | ServerEvent::Dropped { .. } => {}
            ServerEvent::AuthSuccess { .. } => {}
            ServerEvent::AuthError { message, code } => self.notify(format!("{message} ({code})")),
        }
    }

    /// The message of a stream, recording `seq` as applied.
    fn stream_message(&self, stream_id: &str, seq: u64) -> Option<MessageView> {
        let message = self.by_stream.with_value(|m| m.get(stream_id).copied())?;
        message.last_seq.set_value(seq);
        Some(message)
    }

    /// The replies of the oldest question still waiting for a `start`,
    /// forgotten as waiting (its last reply last).
    fn oldest_waiting(&self) -> Vec<MessageView> {
        let Some(found) = self.messages.with_untracked(|m| {
            m.iter()
                .find(|m| {
                    m.role == Role::Assistant && m.status.get_untracked() == ReplyStatus::Waiting
                })
                .copied()
        }) else {
            return Vec::new();
        };
        let mut replies = vec![found];
        self.by_client_id.update_value(|m| {
            m.retain(|_, waiting| {
                let mine = waiting.replies.iter().any(|(_, v)| v.key == found.key);
                if mine {
                    replies = waiting.replies.iter().map(|(_, v)| *v).collect();
                }
                !mine
            });
        });
        replies
    }

    /// Moves a conversation to the top of the sidebar (adding it if new, titled
    /// from its first question as the server titles it).
    fn note_activity(&self, session_id: Option<&str>, question: &str) {
        let Some(id) = session_id else {
            return;
        };
        self.conversations.update(|list| {
            let existing = list.iter().position(|c| c.id == id);
            let entry = match existing {
                Some(at) => list.remove(at),
                None => ConversationSummary {
                    id: id.to_owned(),
                    title: title_from(question),
                    customer_id: None,
                    created_at: 0,
                    updated_at: 0,
                },
            };
            list.insert(0, entry);
        });
    }

    /// Removes a conversation from the sidebar.
    pub fn forget_conversation(&self, id: &str) {
        self.conversations
            .update(|list| list.retain(|c| c.id != id));
    }

    /// Renders every reply again: the markdown renderer arrived after they
    /// were shown (as plain text, or as the server rendered them).
    pub fn render_again(&self) {
        for message in self.messages.get_untracked() {
            if message.role != Role::Assistant {
                continue;
            }
            let text = message.renderer.with_value(|r| r.text().to_owned());
            if text.trim().is_empty() {
                continue;
            }
            match message.status.get_untracked() {
                ReplyStatus::Waiting | ReplyStatus::Streaming => {
                    let mut fresh = IncrementalMarkdown::new();
                    let update = fresh.push(&text);
                    message.blocks.set(
                        fresh
                            .blocks()
                            .iter()
                            .map(|b| Arc::from(b.as_str()))
                            .collect(),
                    );
                    message.tail.set(update.tail);
                    message.renderer.set_value(fresh);
                }
                _ => message.show_whole(),
            }
        }
    }

    /// Renders the whole reply once, exactly, and records its text.
    fn finish(&self, message: MessageView) {
        let (text, full) = message
            .renderer
            .with_value(|r| (r.text().to_owned(), r.render_all()));
        let incremental = {
            let mut html = message.blocks.with_untracked(|b| b.concat());
            html.push_str(&message.tail.get_untracked());
            html
        };
        // Only touch the DOM when the block-by-block rendering differs.
        if incremental != full {
            message.blocks.set(vec![Arc::from(full)]);
            message.tail.set(String::new());
        }
        message.progress.set(None);
        message.raw.set(Some(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_one_line_and_sum_per_conversation() {
        let usage = |prompt, completion, estimated| Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            estimated,
        };
        let priced = ReplyFigures::of(
            Some(usage(1_234, 201, false)),
            Some(Timing {
                first_token_ms: 420,
                total_ms: 4_420,
            }),
            Some(Cost {
                amount: 0.00031,
                currency: "USD".into(),
            }),
        )
        .unwrap();
        assert_eq!(
            priced.summary(),
            "1,234 in · 201 out tokens · first token 0.42 s · 50 tokens/s · $0.0003"
        );
        let estimated = ReplyFigures::of(Some(usage(10, 1_000_000, true)), None, None).unwrap();
        assert_eq!(estimated.summary(), "≈10 in · ≈1,000,000 out tokens");
        assert_eq!(ReplyFigures::of(None, None, None), None);
        let totals = Totals::of([&priced, &estimated, &priced]).unwrap();
        assert_eq!(
            totals.summary(),
            "≈2,478 tokens in · ≈1,000,402 out · $0.0006"
        );
        let euros = ReplyFigures {
            cost: Some(Cost {
                amount: 12.5,
                currency: "EUR".into(),
            }),
            ..priced.clone()
        };
        assert_eq!(
            Totals::of([&euros]).unwrap().summary(),
            "1,234 tokens in · 201 out · 12.50 EUR"
        );
        assert_eq!(Totals::of(std::iter::empty()), None);
    }
    use futures::channel::mpsc;
    use rill_protocol::Metadata;

    /// Runs a test under a reactive owner (signals need one when the server's
    /// features, which sandbox reactive arenas, are unified into this build).
    fn reactive(test: impl FnOnce()) {
        Owner::new().with(test);
    }

    /// A chat that is live, with its outbox.
    fn live_chat() -> (ChatState, mpsc::UnboundedReceiver<ClientFrame>) {
        let chat = ChatState::new();
        let (outbox, frames) = mpsc::unbounded();
        chat.outbox.set_value(Some(outbox));
        chat.connection.set(ConnectionState::Live);
        (chat, frames)
    }

    /// The `client_message_id` of the question the chat just sent.
    fn sent_client_id(frames: &mut mpsc::UnboundedReceiver<ClientFrame>) -> String {
        match frames.try_recv() {
            Ok(ClientFrame::Message(request)) => request.client_message_id.unwrap(),
            other => panic!("expected a message frame, got {other:?}"),
        }
    }

    fn start(stream_id: &str, client_id: Option<&str>) -> ServerEvent {
        ServerEvent::Start {
            stream_id: stream_id.into(),
            seq: 1,
            session_id: "conv-1".into(),
            message_id: "reply-1".into(),
            user_message_id: Some("question-1".into()),
            persona_id: "assistant".into(),
            model: "demo".into(),
            client_message_id: client_id.map(str::to_owned),
        }
    }

    fn token(stream_id: &str, seq: u64, text: &str) -> ServerEvent {
        ServerEvent::Token {
            stream_id: stream_id.into(),
            seq,
            token: text.into(),
            first_seq: None,
            partial_response: None,
        }
    }

    fn complete(stream_id: &str, seq: u64, response: &str, reason: FinishReason) -> ServerEvent {
        ServerEvent::Complete {
            stream_id: stream_id.into(),
            seq,
            response: response.into(),
            session_id: "conv-1".into(),
            metadata: Metadata {
                agent: "assistant".into(),
                model: "demo".into(),
                finish_reason: reason,
                usage: None,
                sources: Vec::new(),
                context: Default::default(),
                confidence: None,
                routing: None,
                reasoning: None,
                timing: None,
                cost: None,
            },
        }
    }

    /// The reply (the last message).
    fn reply(chat: &ChatState) -> MessageView {
        *chat.messages.get_untracked().last().unwrap()
    }

    #[test]
    fn a_streamed_reply_is_applied_in_order_and_completes_with_its_text() {
        reactive(|| {
            let (chat, mut frames) = live_chat();
            assert!(chat.ask("What is rill?".into()));
            let client_id = sent_client_id(&mut frames);
            assert_eq!(reply(&chat).status.get_untracked(), ReplyStatus::Waiting);
            chat.apply(start("s1", Some(&client_id)));
            chat.apply(ServerEvent::Progress {
                stream_id: "s1".into(),
                seq: 2,
                step: rill_protocol::ProgressStep::Starting,
                message: "Processing started".into(),
                agent: None,
                confidence: None,
            });
            assert_eq!(
                reply(&chat).progress.get_untracked().as_deref(),
                Some("Processing started")
            );
            chat.apply(token("s1", 3, "Hello "));
            assert_eq!(
                reply(&chat).progress.get_untracked(),
                None,
                "tokens replace progress"
            );
            chat.apply(token("s1", 4, "world"));
            chat.apply(complete("s1", 5, "Hello world", FinishReason::Stop));
            let reply = reply(&chat);
            assert_eq!(reply.status.get_untracked(), ReplyStatus::Complete);
            assert_eq!(reply.raw.get_untracked().as_deref(), Some("Hello world"));
            assert_eq!(reply.id.get_value().as_deref(), Some("reply-1"));
            assert_eq!(chat.session_id.get_untracked().as_deref(), Some("conv-1"));
            let question = chat.messages.get_untracked()[0];
            assert_eq!(question.id.get_value().as_deref(), Some("question-1"));
            assert_eq!(chat.conversations.get_untracked()[0].id, "conv-1");
        });
    }

    #[test]
    fn events_a_resume_replays_again_are_applied_once() {
        reactive(|| {
            let (chat, mut frames) = live_chat();
            chat.ask("q".into());
            let client_id = sent_client_id(&mut frames);
            chat.apply(start("s1", Some(&client_id)));
            chat.apply(token("s1", 2, "a"));
            chat.apply(token("s1", 3, "b"));
            // A reconnect resumes after seq 2 but the server's replay overlaps.
            chat.apply(token("s1", 2, "a"));
            chat.apply(token("s1", 3, "b"));
            chat.apply(token("s1", 4, "c"));
            assert_eq!(chat.last_seq("s1"), 4);
            assert_eq!(reply(&chat).text_now(), "abc");
            assert_eq!(
                chat.resume_frames(),
                vec![ClientFrame::Resume {
                    stream_id: "s1".into(),
                    after_seq: 4
                }],
                "a streaming reply resumes after the last seq applied"
            );
            chat.apply(complete("s1", 5, "abc", FinishReason::Stop));
            assert!(chat.resume_frames().is_empty(), "nothing left to resume");
        });
    }

    #[test]
    fn how_a_reply_ends_is_how_it_is_shown() {
        reactive(|| {
            for (reason, status) in [
                (FinishReason::Cancelled, ReplyStatus::Stopped),
                (FinishReason::Interrupted, ReplyStatus::Interrupted),
                (FinishReason::Error, ReplyStatus::Failed),
                (FinishReason::Length, ReplyStatus::Complete),
            ] {
                let (chat, mut frames) = live_chat();
                chat.ask("q".into());
                let client_id = sent_client_id(&mut frames);
                chat.apply(start("s1", Some(&client_id)));
                chat.apply(token("s1", 2, "partial"));
                chat.apply(complete("s1", 3, "partial", reason));
                let reply = reply(&chat);
                assert_eq!(reply.status.get_untracked(), status, "{reason:?}");
                assert_eq!(
                    reply.raw.get_untracked().as_deref(),
                    Some("partial"),
                    "{reason:?}"
                );
            }
        });
    }

    #[test]
    fn a_lost_stream_keeps_its_text_and_a_refused_question_says_why() {
        reactive(|| {
            let (chat, mut frames) = live_chat();
            chat.ask("first".into());
            let client_id = sent_client_id(&mut frames);
            chat.apply(start("s1", Some(&client_id)));
            chat.apply(token("s1", 2, "kept"));
            // Coming back after a server restart: the stream is gone.
            chat.apply(ServerEvent::Error {
                error: "Stream not found or expired".into(),
                code: ErrorCode::StreamNotFound,
                stream_id: Some("s1".into()),
                seq: None,
                retry_after_ms: None,
            });
            let lost = reply(&chat);
            assert_eq!(lost.status.get_untracked(), ReplyStatus::Interrupted);
            assert_eq!(lost.raw.get_untracked().as_deref(), Some("kept"));

            chat.ask("second".into());
            sent_client_id(&mut frames);
            chat.apply(ServerEvent::error(ErrorCode::RateLimited, "Too many"));
            let refused = reply(&chat);
            assert_eq!(refused.status.get_untracked(), ReplyStatus::Failed);
            assert_eq!(
                refused.error.get_untracked().as_deref(),
                Some("Too many (RATE_LIMITED)")
            );
            // An error nobody waits for is a notice.
            chat.apply(ServerEvent::error(ErrorCode::InvalidMessage, "odd frame"));
            assert_eq!(chat.notices.get_untracked().len(), 1);
        });
    }

    #[test]
    fn a_question_is_not_sent_while_offline() {
        reactive(|| {
            let chat = ChatState::new();
            chat.connection.set(ConnectionState::Offline);
            assert!(!chat.ask("hello?".into()));
            assert!(chat.messages.get_untracked().is_empty());
            assert_eq!(chat.notices.get_untracked().len(), 1);
        });
    }

    #[test]
    fn a_reply_from_history_still_streaming_is_followed_and_replayed_from_its_start() {
        reactive(|| {
            let (chat, _frames) = live_chat();
            let stored =
                |id: &str, role: &str, content: &str, status: &str, stream: Option<&str>| {
                    ConversationMessage {
                        id: id.into(),
                        role: role.into(),
                        persona_id: None,
                        model: None,
                        content: content.into(),
                        status: status.into(),
                        usage: None,
                        stream_id: stream.map(str::to_owned),
                        created_at: 0,
                        confidence: None,
                        timing: None,
                        cost: None,
                        parent_id: None,
                        versions: Vec::new(),
                        sources: Vec::new(),
                    }
                };
            chat.load(InitialChat {
                current: Some(rill_protocol::conversations::ConversationDetail {
                    conversation: ConversationSummary {
                        id: "conv-1".into(),
                        title: "t".into(),
                        customer_id: None,
                        created_at: 0,
                        updated_at: 0,
                    },
                    messages: vec![
                        stored("q", "user", "question", "complete", None),
                        stored("r", "assistant", "saved so", "streaming", Some("s9")),
                    ],
                }),
                ..Default::default()
            });
            assert_eq!(reply(&chat).status.get_untracked(), ReplyStatus::Streaming);
            assert_eq!(
                chat.resume_frames(),
                vec![ClientFrame::Resume {
                    stream_id: "s9".into(),
                    after_seq: 0
                }]
            );
            // The replay from the start replaces the saved text rather than adding to it.
            chat.apply(start("s9", None));
            chat.apply(token("s9", 2, "saved so far"));
            chat.apply(complete("s9", 3, "saved so far", FinishReason::Stop));
            assert_eq!(chat.messages.get_untracked().len(), 2);
            assert_eq!(
                reply(&chat).raw.get_untracked().as_deref(),
                Some("saved so far")
            );
        });
    }

    /// A stored message for [`ChatState::load`] and [`ChatState::show_branch`].
    fn stored(id: &str, role: &str, content: &str, versions: &[&str]) -> ConversationMessage {
        ConversationMessage {
            id: id.into(),
            role: role.into(),
            persona_id: (role == "assistant").then(|| "assistant".to_owned()),
            model: None,
            content: content.into(),
            status: "complete".into(),
            usage: None,
            stream_id: None,
            created_at: 0,
            confidence: None,
            timing: None,
            cost: None,
            parent_id: None,
            versions: versions.iter().map(|v| (*v).to_owned()).collect(),
            sources: Vec::new(),
        }
    }

    fn detail(
        messages: Vec<ConversationMessage>,
    ) -> rill_protocol::conversations::ConversationDetail {
        rill_protocol::conversations::ConversationDetail {
            conversation: ConversationSummary {
                id: "conv-1".into(),
                title: "t".into(),
                customer_id: None,
                created_at: 0,
                updated_at: 0,
            },
            messages,
        }
    }

    #[test]
    fn regenerating_a_reply_asks_for_a_new_version_in_its_place() {
        reactive(|| {
            let (chat, mut frames) = live_chat();
            chat.load(InitialChat {
                current: Some(detail(vec![
                    stored("q", "user", "question", &[]),
                    stored("old", "assistant", "old answer", &[]),
                ])),
                ..Default::default()
            });
            let old = reply(&chat);
            assert_eq!(old.version_position(), None);
            chat.regenerate(old);
            let request = match frames.try_recv() {
                Ok(ClientFrame::Message(request)) => request,
                other => panic!("expected a message frame, got {other:?}"),
            };
            assert_eq!(request.regenerate.as_deref(), Some("old"));
            assert_eq!(request.session_id.as_deref(), Some("conv-1"));
            assert_eq!(
                request.message, None,
                "the server answers the stored question"
            );
            // The new version stands where the old one stood, waiting.
            let fresh = reply(&chat);
            assert_eq!(chat.messages.get_untracked().len(), 2);
            assert_ne!(fresh.key, old.key);
            assert_eq!(fresh.status.get_untracked(), ReplyStatus::Waiting);
            // Its start names it: it is version 2 of 2, the old one 1 of 2.
            chat.apply(start("s1", request.client_message_id.as_deref()));
            assert_eq!(fresh.version_position(), Some((2, 2)));
            assert_eq!(fresh.version_at(-1).as_deref(), Some("old"));
            assert_eq!(fresh.version_at(1), None);
        });
    }

    #[test]
    fn another_branch_replaces_the_page_keeping_the_messages_it_shares() {
        reactive(|| {
            let (chat, mut frames) = live_chat();
            chat.load(InitialChat {
                current: Some(detail(vec![
                    stored("q1", "user", "first", &[]),
                    stored("a1", "assistant", "one", &[]),
                    stored("q2b", "user", "second, edited", &["q2", "q2b"]),
                    stored("a2b", "assistant", "two b", &[]),
                ])),
                ..Default::default()
            });
            let kept = chat.messages.get_untracked()[1];
            let mut streaming = stored("a2", "assistant", "two so", &[]);
            streaming.status = "streaming".into();
            streaming.stream_id = Some("s2".into());
            chat.show_branch(detail(vec![
                stored("q1", "user", "first", &[]),
                stored("a1", "assistant", "one", &[]),
                stored("q2", "user", "second", &["q2", "q2b"]),
                streaming,
            ]));
            let shown = chat.messages.get_untracked();
            assert_eq!(shown.len(), 4);
            assert_eq!(shown[1].key, kept.key, "a shared message is not rebuilt");
            assert_eq!(shown[2].text.get_value(), "second");
            assert_eq!(shown[2].version_position(), Some((1, 2)));
            assert_eq!(shown[2].version_at(1).as_deref(), Some("q2b"));
            // The reply still being written is followed from its start.
            assert_eq!(
                frames.try_recv().ok(),
                Some(ClientFrame::Resume {
                    stream_id: "s2".into(),
                    after_seq: 0
                })
            );
            // Another conversation's answer (the user moved on) changes nothing.
            let mut other = detail(vec![stored("x", "user", "elsewhere", &[])]);
            other.conversation.id = "conv-2".into();
            chat.show_branch(other);
            assert_eq!(chat.messages.get_untracked().len(), 4);
        });
    }

    #[test]
    fn a_stored_reply_is_one_block_whatever_its_markdown_and_renders_again_the_same() {
        reactive(|| {
            let (chat, _frames) = live_chat();
            chat.load(InitialChat {
                current: Some(detail(vec![
                    stored("q1", "user", "first", &[]),
                    // Several paragraphs: still one block (the server and the
                    // browser must make the same elements to hydrate).
                    stored("a1", "assistant", "One *a*.\n\nTwo **b**.\n\n- three", &[]),
                    stored("q2", "user", "second", &[]),
                    // Renders to nothing: a block all the same.
                    stored("a2", "assistant", "[ref]: https://example.com", &[]),
                    stored("q3", "user", "third", &[]),
                    stored("a3", "assistant", "  \n", &[]),
                ])),
                ..Default::default()
            });
            let shown = chat.messages.get_untracked();
            let blocks = |at: usize| shown[at].blocks.get_untracked();
            assert_eq!(blocks(1).len(), 1);
            assert!(
                blocks(1)[0].contains("<strong>b</strong>"),
                "{:?}",
                blocks(1)
            );
            assert!(blocks(1)[0].contains("<li>three</li>"));
            assert_eq!(blocks(3).len(), 1);
            assert_eq!(&*blocks(3)[0], "");
            assert!(blocks(5).is_empty(), "an empty reply has no block");
            assert_eq!(
                shown[1].raw.get_untracked().as_deref(),
                Some("One *a*.\n\nTwo **b**.\n\n- three")
            );
            // Rendering again (the browser's renderer arrived) gives the same HTML.
            let before: Vec<_> = (0..shown.len()).map(blocks).collect();
            chat.render_again();
            let after: Vec<_> = (0..shown.len()).map(blocks).collect();
            assert_eq!(before, after);
        });
    }

    #[test]
    fn the_page_embeds_a_long_conversation_in_two_parts_that_load_to_the_same_chat() {
        reactive(|| {
            let mut messages = Vec::new();
            for turn in 0..30 {
                messages.push(stored(
                    &format!("q{turn}"),
                    "user",
                    "question </script>",
                    &[],
                ));
                messages.push(stored(&format!("a{turn}"), "assistant", "answer", &[]));
            }
            let initial = InitialChat {
                current: Some(detail(messages)),
                ..Default::default()
            };
            let (first, rest) = initial.clone().into_script_json();
            assert!(
                !first.contains("</") && !rest.contains("</"),
                "safe inside <script>"
            );
            // What the page hydrates with: the window only.
            let window: InitialChat = serde_json::from_str(&first).unwrap();
            let shown = &window.current.as_ref().unwrap().messages;
            assert_eq!(shown.len(), WINDOW);
            assert_eq!(shown[0].id, "q20");
            let earlier: Vec<ConversationMessage> = serde_json::from_str(&rest).unwrap();
            assert_eq!(earlier.len(), 40);
            assert_eq!(earlier[39].id, "a19");
            // The browser loads the window, then the rest: the server's chat.
            let (server, _frames) = live_chat();
            server.load(initial);
            let (browser, _frames) = live_chat();
            browser.load(window);
            assert!(browser.earlier.get_untracked().is_empty());
            browser.earlier.set(earlier);
            assert_eq!(
                browser.earlier.get_untracked(),
                server.earlier.get_untracked()
            );
            let ids = |chat: &ChatState| -> Vec<_> {
                chat.messages
                    .get_untracked()
                    .iter()
                    .map(|m| m.id.get_value())
                    .collect()
            };
            assert_eq!(ids(&browser), ids(&server));
            // Without a conversation the second part is empty.
            let (_, none) = InitialChat::default().into_script_json();
            assert_eq!(none, "[]");
        });
    }

    #[test]
    fn a_long_conversation_opens_with_its_newest_turns_and_earlier_ones_come_on_demand() {
        reactive(|| {
            let (chat, _frames) = live_chat();
            // 100 turns of a question and two side-by-side replies: 300 messages.
            let mut messages = Vec::new();
            for turn in 0..100 {
                messages.push(stored(&format!("q{turn}"), "user", "question", &[]));
                for side in 0..2 {
                    let mut reply = stored(&format!("a{turn}-{side}"), "assistant", "answer", &[]);
                    reply.usage = Some(Usage {
                        prompt_tokens: 1,
                        completion_tokens: 2,
                        estimated: false,
                    });
                    messages.push(reply);
                }
            }
            chat.load(InitialChat {
                current: Some(detail(messages)),
                ..Default::default()
            });
            let on_page = chat.messages.get_untracked();
            assert_eq!(
                on_page.len(),
                21,
                "7 whole turns: the window, grown to a turn"
            );
            assert_eq!(on_page[0].role, Role::User, "a turn is never split");
            assert_eq!(on_page[0].id.get_value().as_deref(), Some("q93"));
            assert_eq!(chat.earlier.get_untracked().len(), 279);
            // The totals count every reply, shown or not.
            assert_eq!(chat.totals().map(|t| t.completion), Some(400));
            // Scrolling up: the previous chunk is made ready first, and
            // leaves the page as it is until it is put before the messages.
            let ready = chat.take_earlier();
            assert_eq!(ready.len(), 18, "6 whole turns");
            assert_eq!(chat.earlier.get_untracked().len(), 261);
            assert_eq!(chat.messages.get_untracked().len(), 21);
            chat.put_earlier(ready);
            let on_page = chat.messages.get_untracked();
            assert_eq!(on_page.len(), 39);
            assert_eq!(on_page[0].id.get_value().as_deref(), Some("q87"));
            assert_eq!(on_page[18].id.get_value().as_deref(), Some("q93"));
            // A search result's message far up: loaded until it is there.
            assert!(chat.reveal("a3-1"));
            assert!(
                chat.messages
                    .get_untracked()
                    .iter()
                    .any(|m| m.id.get_value().as_deref() == Some("a3-1"))
            );
            while chat.show_earlier() > 0 {}
            assert!(chat.earlier.get_untracked().is_empty());
            assert_eq!(chat.messages.get_untracked().len(), 300);
            assert!(!chat.reveal("nowhere"));
            assert_eq!(chat.show_earlier(), 0);
        });
    }
}
