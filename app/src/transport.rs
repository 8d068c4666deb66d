//! The browser's transport (hydrate only): one state machine that carries the
//! chat over whatever works, shown by the badge.
//!
//! ```text
//! connecting → WebSocket (live) → reconnecting(n) ─(3 failed attempts)→ SSE
//!      ↑                                                                   │ (SSE refused)
//!      └──────────── probe succeeds (every ~10 s) ←── HTTP polling ←───────┘
//!                        any mode, server unreachable → offline (retrying)
//! ```
//!
//! Whatever carries them, events reach the page only through [`ChatState::apply`],
//! which ignores a seq it already has; on every switch the controller resumes each
//! streaming reply after its last applied seq, so a reply continues word-perfect.
//!
//! Liveness is measured, not assumed: gloo-net does not fail `send` on a dead
//! socket and reports every close as an error, so the WebSocket counts as live
//! only once the server answered `hello`, and as dead after 25 s without any
//! inbound frame (the client sends `ping` every 10 s; the server pings too) or
//! as soon as the browser says the network is gone (`offline` event).

use std::cell::Cell;

use futures::channel::mpsc;
use futures::future::{AbortHandle, Abortable, Either};
use futures::{FutureExt, SinkExt, StreamExt};
use gloo_net::http::Request;
use gloo_net::websocket::Message;
use gloo_net::websocket::futures::WebSocket;
use gloo_timers::future::TimeoutFuture;
use leptos::prelude::*;
use leptos::task::spawn_local;
use rill_protocol::{ClientFrame, ErrorCode, MessageRequest, PROTOCOL_VERSION, ServerEvent};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

use crate::chat::{ChatState, ConnectionState};

/// First reconnect delay, doubled per failed attempt up to [`MAX_BACKOFF_MS`].
const BASE_BACKOFF_MS: f64 = 500.0;
/// Longest delay between reconnect attempts.
const MAX_BACKOFF_MS: f64 = 10_000.0;
/// Failed WebSocket attempts in a row before falling back to SSE.
const FALLBACK_AFTER: u32 = 3;
/// How long the server has to answer `hello` on a new WebSocket.
const HELLO_TIMEOUT_MS: f64 = 5_000.0;
/// The client's own `ping` interval on a live WebSocket.
const PING_EVERY_MS: f64 = 10_000.0;
/// Silence after which a WebSocket counts as dead.
const DEAD_AFTER_MS: f64 = 25_000.0;
/// How often a fallback transport checks whether the WebSocket works again.
const PROBE_EVERY_MS: f64 = 10_000.0;
/// How long a long-poll is held by the server.
const POLL_WAIT_MS: u32 = 25_000;

/// The transport in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    WebSocket,
    Sse,
    Polling,
}

fn now() -> f64 {
    js_sys::Date::now()
}

/// A delay with full jitter below the exponential ceiling for `attempt`.
fn backoff_ms(attempt: u32) -> u32 {
    let ceiling =
        (BASE_BACKOFF_MS * 2f64.powi(attempt.saturating_sub(1).min(16) as i32)).min(MAX_BACKOFF_MS);
    // Full jitter spreads clients out after a server restart.
    (js_sys::Math::random() * ceiling).max(100.0) as u32
}

/// Where the API is: the page's `<meta name="rill-api-base" content="…">` when
/// the UI is hosted elsewhere (static files), else the page's own origin.
fn api_base() -> String {
    let window = leptos::prelude::window();
    let configured = window
        .document()
        .and_then(|d| d.query_selector("meta[name=rill-api-base]").ok().flatten())
        .and_then(|meta| meta.get_attribute("content"))
        .map(|base| base.trim().trim_end_matches('/').to_owned())
        .filter(|base| !base.is_empty());
    configured.unwrap_or_else(|| window.location().origin().unwrap_or_default())
}

/// Where the static build keeps its guest token (local storage).
#[cfg(feature = "csr")]
const TOKEN_KEY: &str = "rill_token";

/// The static build's guest token (local storage, made by
/// [`ensure_guest`]): it goes with every request, as the page's cookie does
/// for the server-rendered UI (which has no token here).
fn bearer() -> Option<String> {
    #[cfg(feature = "csr")]
    {
        leptos::prelude::window()
            .local_storage()
            .ok()
            .flatten()
            .and_then(|storage| storage.get_item(TOKEN_KEY).ok().flatten())
            .filter(|token| !token.is_empty())
    }
    #[cfg(not(feature = "csr"))]
    {
        None
    }
}

/// `request` with the static build's token, if it has one.
fn authorized(request: gloo_net::http::RequestBuilder) -> gloo_net::http::RequestBuilder {
    match bearer() {
        Some(token) => request.header("authorization", &format!("Bearer {token}")),
        None => request,
    }
}

/// `url` with the static build's token as `token=` (for what cannot send
/// headers: an EventSource, a download link).
pub fn with_token(url: String) -> String {
    match bearer() {
        Some(token) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!(
                "{url}{separator}token={}",
                js_sys::encode_uri_component(&token)
            )
        }
        None => url,
    }
}

fn ws_url() -> String {
    let base = api_base();
    let base = match base.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", base.trim_start_matches("http://")),
    };
    format!("{base}/ws/chat")
}

/// The browser's `online`/`offline` events: `false` when the network is gone
/// (a pulled cable: the socket would otherwise look alive until the silence
/// timeout), `true` when it is back (reconnect now, not after the backoff).
type NetworkEvents = mpsc::UnboundedReceiver<bool>;

fn network_events() -> NetworkEvents {
    let (tx, rx) = mpsc::unbounded::<bool>();
    let window = leptos::prelude::window();
    for (name, online) in [("online", true), ("offline", false)] {
        let tx = tx.clone();
        let listener = Closure::<dyn FnMut(web_sys::Event)>::new(move |_: web_sys::Event| {
            let _ = tx.unbounded_send(online);
        });
        let _ = window.add_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
        // Lives as long as the page, like the transport.
        listener.forget();
    }
    rx
}

/// Waits `ms`, or less if the network comes back.
async fn pause(ms: u32, network: &mut NetworkEvents) {
    let timer = TimeoutFuture::new(ms).fuse();
    futures::pin_mut!(timer);
    loop {
        futures::select! {
            () = timer => return,
            online = network.next() => if online != Some(false) { return },
        }
    }
}

/// Starts the transport; it runs for the page's lifetime. The static build
/// first gets its identity and the page's conversations.
pub fn start(state: ChatState) {
    let (outbox, commands) = mpsc::unbounded::<ClientFrame>();
    state.outbox.set_value(Some(outbox));
    let network = network_events();
    spawn_local(async move {
        #[cfg(feature = "csr")]
        open_static(state).await;
        controller(state, commands, network).await;
    });
    spawn_local(load_models(state));
    spawn_local(load_personas(state));
    spawn_local(load_projects(state));
}

/// Where this browser remembers the project it last chose.
const PROJECT_KEY: &str = "rill_project";

/// Fills the project picker (`GET /api/v1/projects`) and chooses again the
/// project this browser chose last.
async fn load_projects(state: ChatState) {
    #[cfg(feature = "csr")]
    {
        // The static build's identity comes first (`open_static`).
        for _ in 0..50 {
            if bearer().is_some() {
                break;
            }
            gloo_timers::future::TimeoutFuture::new(100).await;
        }
    }
    let url = format!("{}/api/v1/projects", api_base());
    if let Ok(list) = get_json::<rill_protocol::documents::ProjectList>(&url).await {
        state.projects.set(list.projects);
    }
    let remembered = leptos::prelude::window()
        .local_storage()
        .ok()
        .flatten()
        .and_then(|storage| storage.get_item(PROJECT_KEY).ok().flatten())
        .filter(|p| !p.is_empty());
    if remembered.is_some() {
        choose_project(state, remembered);
    }
}

/// Chooses the project new questions are asked in, remembers it in this
/// browser, and loads its documents.
pub fn choose_project(state: ChatState, project: Option<String>) {
    state.choose_project(project.clone());
    if let Some(storage) = leptos::prelude::window().local_storage().ok().flatten() {
        let _ = match &project {
            Some(project) => storage.set_item(PROJECT_KEY, project),
            None => storage.remove_item(PROJECT_KEY),
        };
    }
    if project.is_some() {
        spawn_local(load_documents(state));
    }
}

/// The chosen project's documents path.
fn documents_url(project: &str) -> String {
    format!(
        "{}/api/v1/projects/{}/documents",
        api_base(),
        js_sys::encode_uri_component(project)
    )
}

/// Reads the chosen project's documents (a project not made yet has none).
async fn load_documents(state: ChatState) {
    let Some(project) = state.project.get_untracked() else {
        return;
    };
    let list = get_json::<rill_protocol::documents::DocumentList>(&documents_url(&project)).await;
    if state.project.get_untracked().as_deref() != Some(project.as_str()) {
        return;
    }
    match list {
        Ok(list) => state.documents.set(list.documents),
        Err(_) => state.documents.set(Vec::new()),
    }
}

/// Uploads `files` to the chosen project, one after another; each appears in
/// the list at once and its progress follows (the room's `document_status`
/// on the WebSocket; polling on the fallbacks).
pub fn upload_documents(state: ChatState, files: Vec<web_sys::File>) {
    let Some(project) = state.project.get_untracked() else {
        state.notify("Choose a project first: documents belong to a project.");
        return;
    };
    spawn_local(async move {
        for file in files {
            let Ok(form) = web_sys::FormData::new() else {
                return;
            };
            if form
                .append_with_blob_and_filename("file", &file, &file.name())
                .is_err()
            {
                continue;
            }
            let request = match authorized(Request::post(&documents_url(&project))).body(form) {
                Ok(request) => request,
                Err(_) => continue,
            };
            match request.send().await {
                Ok(response) if response.status() == 202 => {
                    if let Ok(document) = response
                        .json::<rill_protocol::documents::DocumentInfo>()
                        .await
                    {
                        state.documents.update(|documents| {
                            if !documents
                                .iter()
                                .any(|d| d.document_id == document.document_id)
                            {
                                documents.insert(0, document);
                            }
                        });
                        state.projects.update(|projects| {
                            if let Some(p) = projects.iter_mut().find(|p| p.project_id == project) {
                                p.documents += 1;
                            }
                        });
                    }
                }
                Ok(response) => {
                    let problem = error_text(response).await;
                    state.notify(format!("{} was not added: {problem}", file.name()));
                }
                Err(_) => state.notify(format!(
                    "{} was not added: the server cannot be reached",
                    file.name()
                )),
            }
        }
        watch_processing(state, project).await;
    });
}

/// While documents of `project` are processing and no WebSocket brings their
/// progress, reads the list again every second (at most ten minutes).
async fn watch_processing(state: ChatState, project: String) {
    for _ in 0..600 {
        let processing = state.documents.with_untracked(|documents| {
            documents
                .iter()
                .any(|d| d.status == rill_protocol::documents::DocumentStatus::Processing)
        });
        if !processing || state.project.get_untracked().as_deref() != Some(project.as_str()) {
            return;
        }
        gloo_timers::future::TimeoutFuture::new(1000).await;
        if state.connection.get_untracked() != ConnectionState::Live {
            load_documents(state).await;
        }
    }
}

/// Deletes a document of the chosen project.
pub fn delete_document(state: ChatState, document_id: String) {
    let Some(project) = state.project.get_untracked() else {
        return;
    };
    spawn_local(async move {
        let url = format!(
            "{}/{}",
            documents_url(&project),
            js_sys::encode_uri_component(&document_id)
        );
        match authorized(Request::delete(&url)).send().await {
            Ok(response) if response.status() == 204 || response.status() == 404 => {
                state
                    .documents
                    .update(|d| d.retain(|d| d.document_id != document_id));
            }
            Ok(response) => {
                let problem = error_text(response).await;
                state.notify(format!("The document was not deleted: {problem}"));
            }
            Err(_) => state.notify("The document was not deleted: the server cannot be reached."),
        }
    });
}

/// The static build's start: a guest identity (kept in local storage, like
/// the server-rendered UI's cookie), then the sidebar's conversations and the
/// conversation in the address (`?c=<id>`), as the server renders them for
/// its own pages.
#[cfg(feature = "csr")]
async fn open_static(state: ChatState) {
    use rill_protocol::conversations::{ConversationDetail, ConversationList};
    let list_url = format!("{}/api/v1/conversations?limit=50", api_base());
    let mut list = None;
    for _ in 0..2 {
        if bearer().is_none() {
            mint_guest().await;
        }
        match authorized(Request::get(&list_url)).send().await {
            Ok(response) if response.status() == 401 && bearer().is_some() => {
                // Expired, or signed by a key the server no longer has.
                forget_token();
            }
            Ok(response) if response.ok() => {
                list = response.json::<ConversationList>().await.ok();
                break;
            }
            _ => break,
        }
    }
    let mut initial = crate::history::InitialChat::default();
    if let Some(list) = list {
        initial.conversations = list.conversations;
        initial.next = list.next;
    }
    let open = web_sys::UrlSearchParams::new_with_str(
        &leptos::prelude::window()
            .location()
            .search()
            .unwrap_or_default(),
    )
    .ok()
    .and_then(|params| params.get("c"))
    .filter(|id| !id.is_empty());
    if let Some(id) = open {
        let url = format!(
            "{}/api/v1/conversations/{}",
            api_base(),
            js_sys::encode_uri_component(&id)
        );
        // The same words as the server-rendered page's.
        initial.problem = match authorized(Request::get(&url)).send().await {
            Ok(response) if response.ok() => match response.json::<ConversationDetail>().await {
                Ok(detail) => {
                    initial.current = Some(detail);
                    None
                }
                Err(_) => Some("This conversation could not be read.".to_owned()),
            },
            Ok(response) if response.status() == 403 => {
                Some("This conversation belongs to someone else.".to_owned())
            }
            Ok(response) if response.status() == 404 => {
                Some("This conversation does not exist (it may have been deleted).".to_owned())
            }
            Ok(response) => Some(format!(
                "This conversation cannot be opened: {}",
                error_text(response).await
            )),
            Err(_) => {
                Some("This conversation cannot be opened: the server cannot be reached.".to_owned())
            }
        };
    }
    state.load(initial);
    open_at_place(state);
}

/// Asks the server for a guest identity and keeps its token; without one
/// (the server requires sign-in) the page chats anonymously.
#[cfg(feature = "csr")]
async fn mint_guest() {
    let url = format!("{}/api/v1/auth/guest", api_base());
    let Ok(response) = Request::post(&url).send().await else {
        return;
    };
    if !response.ok() {
        return;
    }
    let Ok(guest) = response
        .json::<rill_protocol::conversations::GuestToken>()
        .await
    else {
        return;
    };
    if let Some(storage) = leptos::prelude::window().local_storage().ok().flatten() {
        let _ = storage.set_item(TOKEN_KEY, &guest.token);
    }
}

#[cfg(feature = "csr")]
fn forget_token() {
    if let Some(storage) = leptos::prelude::window().local_storage().ok().flatten() {
        let _ = storage.remove_item(TOKEN_KEY);
    }
}

/// Fills the persona picker from `GET /api/v1/personas`; without it the
/// default persona answers.
async fn load_personas(state: ChatState) {
    let url = format!("{}/api/v1/personas", api_base());
    let Ok(response) = authorized(Request::get(&url)).send().await else {
        return;
    };
    if !response.ok() {
        return;
    }
    if let Ok(listed) = response.json::<rill_protocol::PersonaList>().await {
        state.personas.set(listed.personas);
    }
}

/// Fills the model picker from `GET /api/v1/models`; without it the server's
/// default model answers.
async fn load_models(state: ChatState) {
    #[derive(serde::Deserialize)]
    struct Entry {
        id: String,
    }
    #[derive(serde::Deserialize)]
    struct Models {
        default: String,
        models: Vec<Entry>,
    }
    let url = format!("{}/api/v1/models", api_base());
    let Ok(response) = authorized(Request::get(&url)).send().await else {
        return;
    };
    if !response.ok() {
        return;
    }
    if let Ok(listed) = response.json::<Models>().await {
        state.model.set(Some(listed.default));
        state
            .models
            .set(listed.models.into_iter().map(|m| m.id).collect());
    }
}

async fn controller(
    state: ChatState,
    mut commands: mpsc::UnboundedReceiver<ClientFrame>,
    mut network: NetworkEvents,
) {
    let mut mode = Mode::WebSocket;
    let mut failures: u32 = 0;
    loop {
        match mode {
            Mode::WebSocket => {
                state.connection.set(if failures == 0 {
                    ConnectionState::Connecting
                } else {
                    ConnectionState::Reconnecting(failures)
                });
                if run_websocket(state, &mut commands, &mut network).await {
                    // It was live and dropped: try again soon, counting from 1.
                    failures = 1;
                } else {
                    failures += 1;
                    if failures >= FALLBACK_AFTER {
                        mode = Mode::Sse;
                        continue;
                    }
                }
                state
                    .connection
                    .set(ConnectionState::Reconnecting(failures));
                TimeoutFuture::new(backoff_ms(failures)).await;
            }
            Mode::Sse | Mode::Polling => {
                match run_http(state, &mut commands, &mut network, mode).await {
                    HttpEnd::WebSocketBack => {
                        mode = Mode::WebSocket;
                        failures = 0;
                    }
                    HttpEnd::SseRefused => mode = Mode::Polling,
                    HttpEnd::Unreachable => {
                        state.connection.set(ConnectionState::Offline);
                        failures = failures.saturating_add(1);
                        pause(backoff_ms(failures), &mut network).await;
                        // One WebSocket try, then back to the HTTP check.
                        mode = Mode::WebSocket;
                        failures = failures.max(FALLBACK_AFTER - 1);
                    }
                }
            }
        }
    }
}

fn to_text(frame: &ClientFrame) -> String {
    serde_json::to_string(frame).unwrap_or_default()
}

/// One WebSocket's life. Returns whether it went live.
async fn run_websocket(
    state: ChatState,
    commands: &mut mpsc::UnboundedReceiver<ClientFrame>,
    network: &mut NetworkEvents,
) -> bool {
    let Ok(socket) = WebSocket::open(&ws_url()) else {
        return false;
    };
    let (mut sink, mut source) = socket.split();
    let opened = now();
    let hello = to_text(&ClientFrame::Hello {
        protocol: Some(PROTOCOL_VERSION),
    });
    // The static build authenticates with its token first (the server
    // answers in order, so `hello`'s answer comes after the auth's).
    let first = match bearer() {
        Some(token) => to_text(&ClientFrame::Auth { token }),
        None => hello.clone(),
    };
    if !send_first(&mut sink, &mut source, first.clone()).await {
        return false;
    }
    if first != hello && sink.send(Message::Text(hello)).await.is_err() {
        return false;
    }
    let mut live = false;
    let mut last_seen = now();
    let mut last_ping = now();
    loop {
        let wait = if live {
            (PING_EVERY_MS - (now() - last_ping)).min(DEAD_AFTER_MS - (now() - last_seen))
        } else {
            HELLO_TIMEOUT_MS - (now() - opened)
        };
        let timer = TimeoutFuture::new(wait.max(0.0) as u32).fuse();
        // Commands wait until the server has answered `hello`.
        let command = if live {
            Either::Left(commands.next())
        } else {
            Either::Right(futures::future::pending())
        }
        .fuse();
        futures::pin_mut!(timer, command);
        futures::select! {
            message = source.next().fuse() => match message {
                Some(Ok(Message::Text(text))) => {
                    last_seen = now();
                    let Ok(event) = serde_json::from_str::<ServerEvent>(&text) else {
                        continue;
                    };
                    if !live && matches!(event, ServerEvent::Hello { .. }) {
                        live = true;
                        state.connection.set(ConnectionState::Live);
                        for frame in state.resume_frames() {
                            if sink.send(Message::Text(to_text(&frame))).await.is_err() {
                                return true;
                            }
                        }
                    }
                    state.apply(event);
                    follow_bottom_if_reading();
                }
                Some(Ok(Message::Bytes(_))) => last_seen = now(),
                // Closed or failed (gloo-net reports both as errors).
                _ => break,
            },
            command = command => match command {
                Some(frame) => {
                    if sink.send(Message::Text(to_text(&frame))).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            online = network.next() => if online == Some(false) { break },
            () = timer => {
                if !live || now() - last_seen >= DEAD_AFTER_MS {
                    break;
                }
                if now() - last_ping >= PING_EVERY_MS {
                    last_ping = now();
                    let ping = ClientFrame::Ping { timestamp: Some(serde_json::Number::from(now() as u64)) };
                    if sink.send(Message::Text(to_text(&ping))).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    let _ = sink.close().await;
    live
}

/// Sends the first frame of a new socket. `send` waits while the socket is
/// connecting, and gloo-net does not wake it if the connection is refused: race
/// it against the socket's own close (the server sends nothing first, so anything
/// from `source` now is a failure) and a timeout.
async fn send_first(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    source: &mut futures::stream::SplitStream<WebSocket>,
    text: String,
) -> bool {
    futures::select! {
        result = sink.send(Message::Text(text)).fuse() => result.is_ok(),
        _ = source.next().fuse() => false,
        () = TimeoutFuture::new(HELLO_TIMEOUT_MS as u32).fuse() => false,
    }
}

/// Why an HTTP fallback mode ended.
enum HttpEnd {
    /// The WebSocket works again.
    WebSocketBack,
    /// SSE is refused on the way (proxy): use long-polling.
    SseRefused,
    /// The server cannot be reached.
    Unreachable,
}

async fn health_ok() -> bool {
    matches!(Request::get(&format!("{}/health", api_base())).send().await, Ok(r) if r.ok())
}

/// Opens a WebSocket, checks that the server answers `hello`, closes it.
async fn probe_websocket() -> bool {
    let Ok(socket) = WebSocket::open(&ws_url()) else {
        return false;
    };
    let (mut sink, mut source) = socket.split();
    let hello = to_text(&ClientFrame::Hello {
        protocol: Some(PROTOCOL_VERSION),
    });
    if !send_first(&mut sink, &mut source, hello).await {
        return false;
    }
    let answered = async {
        while let Some(Ok(message)) = source.next().await {
            if let Message::Text(text) = message
                && matches!(
                    serde_json::from_str::<ServerEvent>(&text),
                    Ok(ServerEvent::Hello { .. })
                )
            {
                return Some(());
            }
        }
        None
    };
    let ok = futures::select! {
        answer = answered.fuse() => answer.is_some(),
        () = TimeoutFuture::new(HELLO_TIMEOUT_MS as u32).fuse() => false,
    };
    let _ = sink.close().await;
    ok
}

/// The streams followed in an HTTP mode; aborted when the mode ends.
#[derive(Default)]
struct Followers(Vec<AbortHandle>);

impl Drop for Followers {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

async fn run_http(
    state: ChatState,
    commands: &mut mpsc::UnboundedReceiver<ClientFrame>,
    network: &mut NetworkEvents,
    mode: Mode,
) -> HttpEnd {
    if !health_ok().await {
        return HttpEnd::Unreachable;
    }
    state.connection.set(if mode == Mode::Sse {
        ConnectionState::FallbackSse
    } else {
        ConnectionState::FallbackPolling
    });
    let (refused_tx, mut refused) = mpsc::unbounded::<()>();
    let mut followers = Followers::default();
    let follow = |followers: &mut Followers, stream_id: String| {
        let (handle, registration) = AbortHandle::new_pair();
        let task = match mode {
            Mode::Sse => Either::Left(follow_sse(state, stream_id, refused_tx.clone())),
            _ => Either::Right(follow_polling(state, stream_id)),
        };
        spawn_local(Abortable::new(task, registration).map(|_| ()));
        followers.0.push(handle);
    };
    for frame in state.resume_frames() {
        if let ClientFrame::Resume { stream_id, .. } = frame {
            follow(&mut followers, stream_id);
        }
    }
    let mut next_probe = now() + PROBE_EVERY_MS * (0.5 + js_sys::Math::random());
    loop {
        let timer = TimeoutFuture::new((next_probe - now()).max(0.0) as u32).fuse();
        futures::pin_mut!(timer);
        futures::select! {
            command = commands.next().fuse() => match command {
                Some(ClientFrame::Message(request)) => match post_streams(&request).await {
                    Ok(stream_ids) => {
                        for stream_id in stream_ids {
                            state.track_stream(&stream_id);
                            follow(&mut followers, stream_id);
                        }
                    }
                    Err(Some(event)) => state.apply(*event),
                    Err(None) => {
                        state.apply(ServerEvent::error(
                            ErrorCode::ProcessingError,
                            "Could not reach the server",
                        ));
                        return HttpEnd::Unreachable;
                    }
                },
                Some(ClientFrame::Cancel { stream_id }) => {
                    let url = format!("{}/api/v1/streams/{stream_id}/cancel", api_base());
                    let _ = authorized(Request::post(&url)).send().await;
                }
                Some(ClientFrame::Resume { stream_id, .. }) => follow(&mut followers, stream_id),
                Some(_) => {}
                None => return HttpEnd::Unreachable,
            },
            _ = refused.next().fuse() => {
                if mode == Mode::Sse {
                    return HttpEnd::SseRefused;
                }
            },
            online = network.next() => if online == Some(false) { return HttpEnd::Unreachable },
            () = timer => {
                if probe_websocket().await {
                    return HttpEnd::WebSocketBack;
                }
                if !health_ok().await {
                    return HttpEnd::Unreachable;
                }
                next_probe = now() + PROBE_EVERY_MS * (0.5 + js_sys::Math::random());
            },
        }
    }
}

/// An error body `{error, code}` as an event (not tied to a stream unless given).
fn error_event(body: &str, stream_id: Option<&str>) -> ServerEvent {
    #[derive(serde::Deserialize)]
    struct Body {
        error: String,
        code: ErrorCode,
    }
    let (error, code) = match serde_json::from_str::<Body>(body) {
        Ok(body) => (body.error, body.code),
        Err(_) => (
            "The server refused the request".to_owned(),
            ErrorCode::ProcessingError,
        ),
    };
    ServerEvent::Error {
        error,
        code,
        stream_id: stream_id.map(str::to_owned),
        seq: None,
        retry_after_ms: None,
    }
}

/// `POST /api/v1/streams`: the stream ids, or the refusal as an event
/// (`Err(None)`: the server could not be reached).
async fn post_streams(request: &MessageRequest) -> Result<Vec<String>, Option<Box<ServerEvent>>> {
    #[derive(serde::Deserialize)]
    struct Started {
        stream_ids: Vec<String>,
    }
    let url = format!("{}/api/v1/streams", api_base());
    let request = authorized(Request::post(&url))
        .header("content-type", "application/json")
        .body(serde_json::to_string(request).unwrap_or_default())
        .map_err(|_| None)?;
    let response = request.send().await.map_err(|_| None)?;
    let body = response.text().await.map_err(|_| None)?;
    if !response.ok() {
        return Err(Some(Box::new(error_event(&body, None))));
    }
    serde_json::from_str::<Started>(&body)
        .map(|started| started.stream_ids)
        .map_err(|_| None)
}

/// What a stream's EventSource reports.
enum SseSignal {
    /// A protocol event's JSON.
    Data(String),
    /// The EventSource gave up (HTTP error, refused): it will not reconnect.
    Closed,
    /// A network error; the EventSource is reconnecting by itself.
    Retrying,
}

/// Network errors before any event after which SSE counts as refused (a proxy
/// that drops the connection makes an EventSource retry forever).
const SSE_ATTEMPTS: u32 = 3;

/// Closes the EventSource when the follower ends or is aborted.
struct EventSourceGuard {
    source: web_sys::EventSource,
    _listeners: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

impl Drop for EventSourceGuard {
    fn drop(&mut self) {
        self.source.close();
    }
}

/// Follows one stream over SSE until its terminal event. A browser EventSource
/// reconnects by itself with Last-Event-ID; we start after our last applied seq.
async fn follow_sse(state: ChatState, stream_id: String, refused: mpsc::UnboundedSender<()>) {
    let url = with_token(format!(
        "{}/api/v1/streams/{stream_id}/events?after={}",
        api_base(),
        state.last_seq(&stream_id)
    ));
    let Ok(source) = web_sys::EventSource::new(&url) else {
        let _ = refused.unbounded_send(());
        return;
    };
    let (tx, mut signals) = mpsc::unbounded::<SseSignal>();
    let mut listeners = Vec::new();
    for kind in ["start", "progress", "token", "complete", "error"] {
        let tx = tx.clone();
        let watched = source.clone();
        let listener = Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
            // Our `error` events are MessageEvents with data; the EventSource's own
            // connection errors on the same name are plain Events.
            match event
                .dyn_ref::<web_sys::MessageEvent>()
                .and_then(|m| m.data().as_string())
            {
                Some(data) => {
                    let _ = tx.unbounded_send(SseSignal::Data(data));
                }
                None if watched.ready_state() == web_sys::EventSource::CLOSED => {
                    let _ = tx.unbounded_send(SseSignal::Closed);
                }
                None => {
                    let _ = tx.unbounded_send(SseSignal::Retrying);
                }
            }
        });
        let _ = source.add_event_listener_with_callback(kind, listener.as_ref().unchecked_ref());
        listeners.push(listener);
    }
    let _guard = EventSourceGuard {
        source,
        _listeners: listeners,
    };
    let mut received = false;
    let mut retries = 0;
    while let Some(signal) = signals.next().await {
        let signal = match signal {
            SseSignal::Retrying if !received => {
                retries += 1;
                if retries < SSE_ATTEMPTS {
                    continue;
                }
                SseSignal::Closed
            }
            SseSignal::Retrying => continue,
            other => other,
        };
        match signal {
            SseSignal::Data(text) => {
                received = true;
                let Ok(event) = serde_json::from_str::<ServerEvent>(&text) else {
                    continue;
                };
                let terminal = event.is_terminal();
                state.apply(event);
                follow_bottom_if_reading();
                if terminal {
                    return;
                }
            }
            SseSignal::Closed => {
                // Is the stream gone (a restart), or is SSE refused on the way?
                match poll_once(&stream_id, state.last_seq(&stream_id), 0).await {
                    Some(Err(gone)) => state.apply(*gone),
                    _ if !received => {
                        let _ = refused.unbounded_send(());
                    }
                    _ => {}
                }
                return;
            }
            SseSignal::Retrying => {}
        }
    }
}

/// One long-poll: `Some(Ok(events))`, `Some(Err(error event))` when the server
/// refused (the stream is gone), `None` when it could not be reached.
async fn poll_once(
    stream_id: &str,
    after: u64,
    wait_ms: u32,
) -> Option<Result<Vec<ServerEvent>, Box<ServerEvent>>> {
    let url = format!(
        "{}/api/v1/streams/{stream_id}/poll?after={after}&wait_ms={wait_ms}",
        api_base()
    );
    let response = authorized(Request::get(&url)).send().await.ok()?;
    let body = response.text().await.ok()?;
    if !response.ok() {
        return Some(Err(Box::new(error_event(&body, Some(stream_id)))));
    }
    serde_json::from_str::<Vec<ServerEvent>>(&body).ok().map(Ok)
}

/// Follows one stream by long-polling until its terminal event.
async fn follow_polling(state: ChatState, stream_id: String) {
    let mut attempt = 0;
    loop {
        match poll_once(&stream_id, state.last_seq(&stream_id), POLL_WAIT_MS).await {
            Some(Ok(events)) => {
                attempt = 0;
                for event in events {
                    let terminal = event.is_terminal();
                    state.apply(event);
                    if terminal {
                        follow_bottom_if_reading();
                        return;
                    }
                }
                follow_bottom_if_reading();
            }
            Some(Err(gone)) => {
                state.apply(*gone);
                return;
            }
            None => {
                attempt += 1;
                TimeoutFuture::new(backoff_ms(attempt)).await;
            }
        }
    }
}

/// How close to the end counts as "reading the end" (pixels).
const FOLLOW_SLACK_PX: f64 = 160.0;

thread_local! {
    /// What the next frame does, once decided: whether to scroll to the end, and
    /// where the reader was when that was decided; `None` when nothing is scheduled.
    static SCROLL_PLAN: Cell<Option<(bool, f64)>> = const { Cell::new(None) };
}

/// Keeps a growing reply in view when the reader is at the end of the page;
/// someone who scrolled up to read is left where they are. Called right after an
/// event is applied: the DOM update lands later, so this measures the page as the
/// reader sees it, and scrolls once the new text is laid out.
///
/// Measuring forces a layout of the whole page, so it happens at most once per
/// frame: the first event of a frame decides for every event until the frame is
/// drawn (at full speed hundreds of tokens arrive per frame). A reader who
/// scrolls before that frame is left where they scrolled to.
fn follow_bottom_if_reading() {
    if SCROLL_PLAN.with(Cell::get).is_some() {
        return;
    }
    let window = leptos::prelude::window();
    let Some(root) = window.document().and_then(|d| d.document_element()) else {
        return;
    };
    let scrolled = window.scroll_y().unwrap_or(0.0);
    let seen = scrolled
        + window
            .inner_height()
            .ok()
            .and_then(|h| h.as_f64())
            .unwrap_or(0.0);
    let at_bottom = f64::from(root.scroll_height()) - seen <= FOLLOW_SLACK_PX;
    SCROLL_PLAN.with(|plan| plan.set(Some((at_bottom, scrolled))));
    leptos::prelude::request_animation_frame(|| {
        let Some((true, scrolled)) = SCROLL_PLAN.with(Cell::take) else {
            return;
        };
        let window = leptos::prelude::window();
        if window.scroll_y().unwrap_or(0.0) != scrolled {
            return;
        }
        if let Some(root) = window.document().and_then(|d| d.document_element()) {
            window.scroll_to_with_x_and_y(0.0, f64::from(root.scroll_height()));
        }
    });
}

/// Whether the end of the page is in view (within the follow slack).
pub fn at_end() -> bool {
    let window = leptos::prelude::window();
    let Some(root) = window.document().and_then(|d| d.document_element()) else {
        return true;
    };
    let seen = window.scroll_y().unwrap_or(0.0)
        + window
            .inner_height()
            .ok()
            .and_then(|h| h.as_f64())
            .unwrap_or(0.0);
    f64::from(root.scroll_height()) - seen <= FOLLOW_SLACK_PX
}

/// Brings the end of the page into view once the next frame is laid out (the
/// reader just sent a question: its replies are what they read next).
pub fn scroll_to_end() {
    scroll_to_end_within(4);
}

/// [`scroll_to_end`], again on the next frames (up to `tries`) while the end
/// is not in view: messages the browser skipped while far from the viewport
/// (`content-visibility`) take their real height as they come into it. A
/// reader who scrolls meanwhile is left where they went.
fn scroll_to_end_within(tries: u32) {
    leptos::prelude::request_animation_frame(move || {
        let window = leptos::prelude::window();
        let Some(root) = window.document().and_then(|d| d.document_element()) else {
            return;
        };
        window.scroll_to_with_x_and_y(0.0, f64::from(root.scroll_height()));
        let placed = scroll_top();
        // Judged a frame later, once what came into view is laid out.
        if tries > 1 {
            leptos::prelude::request_animation_frame(move || {
                if (scroll_top() - placed).abs() <= 2.0 && !at_end() {
                    scroll_to_end_within(tries - 1);
                }
            });
        }
    });
}

/// How far the page is scrolled from its top (pixels).
pub fn scroll_top() -> f64 {
    leptos::prelude::window().scroll_y().unwrap_or(0.0)
}

/// Runs `change` (which adds content above what the reader sees) and, once
/// the page is laid out again, makes sure it scrolled by what was added, so
/// that what the reader saw stays where it was (the browser's own scroll
/// anchoring may have done it already, except at the very top); then `done`.
pub fn keep_position(change: impl FnOnce(), done: impl FnOnce() + 'static) {
    let height = || {
        leptos::prelude::document()
            .document_element()
            .map_or(0.0, |root| f64::from(root.scroll_height()))
    };
    let (before, top) = (height(), scroll_top());
    change();
    leptos::prelude::request_animation_frame(move || {
        let wanted = top + (height() - before).max(0.0);
        if (scroll_top() - wanted).abs() > 1.0 {
            leptos::prelude::window().scroll_to_with_x_and_y(0.0, wanted);
        }
        done();
    });
}

/// The message named in the address (`#m-<id>`), if any.
pub fn message_in_address() -> Option<String> {
    let hash = leptos::prelude::window().location().hash().ok()?;
    let id = hash.strip_prefix("#m-")?;
    let id = js_sys::decode_uri_component(id).ok()?.as_string()?;
    (!id.is_empty()).then_some(id)
}

/// Where a long conversation opens: at the message in the address, else at
/// its end (it shows its newest messages; earlier ones are above them).
pub fn open_at_place(state: ChatState) {
    if state.earlier.with_untracked(Vec::is_empty) {
        return;
    }
    match message_in_address() {
        Some(id) if state.reveal(&id) => scroll_to_message(&id),
        _ => scroll_to_end(),
    }
}

/// Brings message `id` into view once the next frame is laid out.
pub fn scroll_to_message(id: &str) {
    let element_id = format!("m-{id}");
    leptos::prelude::request_animation_frame(move || {
        if let Some(element) = leptos::prelude::document().get_element_by_id(&element_id) {
            element.scroll_into_view();
        }
    });
}

/// Renames a conversation (`PATCH /api/v1/conversations/{id}`); the sidebar
/// shows the title the server kept.
pub fn rename_conversation(state: ChatState, id: String, title: String) {
    spawn_local(async move {
        let url = format!(
            "{}/api/v1/conversations/{}",
            api_base(),
            js_sys::encode_uri_component(&id)
        );
        let body = serde_json::json!({ "title": title }).to_string();
        let answer = send_json(Request::patch(&url), body).await;
        match answer {
            Ok(response) if response.ok() => {
                if let Ok(renamed) = response
                    .json::<rill_protocol::conversations::ConversationSummary>()
                    .await
                {
                    state.conversations.update(|list| {
                        if let Some(entry) = list.iter_mut().find(|c| c.id == renamed.id) {
                            entry.title = renamed.title;
                        }
                    });
                }
            }
            Ok(response) => {
                state.notify(format!("Could not rename: {}", error_text(response).await))
            }
            Err(_) => state.notify("Could not rename: the server cannot be reached."),
        }
    });
}

/// Deletes a conversation (`DELETE /api/v1/conversations/{id}`); deleting the
/// open one starts a new chat.
pub fn delete_conversation(state: ChatState, id: String) {
    spawn_local(async move {
        let url = format!(
            "{}/api/v1/conversations/{}",
            api_base(),
            js_sys::encode_uri_component(&id)
        );
        match authorized(Request::delete(&url)).send().await {
            Ok(response) if response.ok() => {
                state.forget_conversation(&id);
                if state.session_id.get_untracked().as_deref() == Some(id.as_str()) {
                    let _ = leptos::prelude::window()
                        .location()
                        .set_href(crate::components::sidebar::NEW_CHAT_HREF);
                }
            }
            Ok(response) => {
                state.notify(format!("Could not delete: {}", error_text(response).await))
            }
            Err(_) => state.notify("Could not delete: the server cannot be reached."),
        }
    });
}

/// `POST /api/v1/conversations/{id}/select` for `message_id`.
async fn post_select(
    id: &str,
    message_id: String,
) -> Result<gloo_net::http::Response, gloo_net::Error> {
    let url = format!(
        "{}/api/v1/conversations/{}/select",
        api_base(),
        js_sys::encode_uri_component(id)
    );
    let body = serde_json::to_string(&rill_protocol::conversations::SelectVersion { message_id })
        .unwrap_or_default();
    send_json(Request::post(&url), body).await
}

/// Shows version `message_id` of conversation `id`
/// (`POST /api/v1/conversations/{id}/select`), then the conversation as the
/// server now shows it.
pub fn select_version(state: ChatState, id: String, message_id: String) {
    spawn_local(async move {
        match post_select(&id, message_id).await {
            Ok(response) if response.ok() => match response
                .json::<rill_protocol::conversations::ConversationDetail>()
                .await
            {
                Ok(detail) => state.show_branch(detail),
                Err(_) => state
                    .notify("Could not switch versions: the server's answer was not understood."),
            },
            Ok(response) => state.notify(format!(
                "Could not switch versions: {}",
                error_text(response).await
            )),
            Err(_) => state.notify("Could not switch versions: the server cannot be reached."),
        }
    });
}

/// Sends `body` as JSON with the static build's token.
async fn send_json(
    request: gloo_net::http::RequestBuilder,
    body: String,
) -> Result<gloo_net::http::Response, gloo_net::Error> {
    authorized(request)
        .header("content-type", "application/json")
        .body(body)?
        .send()
        .await
}

/// The human text of an error response (`{"error": …, "code": …}`).
async fn error_text(response: gloo_net::http::Response) -> String {
    #[derive(serde::Deserialize)]
    struct Problem {
        error: String,
        code: String,
    }
    match response.json::<Problem>().await {
        Ok(problem) => format!("{} ({})", problem.error, problem.code),
        Err(_) => format!("HTTP {}", response.status()),
    }
}

/// Copies `text` to the clipboard (where the browser allows it).
pub fn copy_text(state: ChatState, text: String) {
    let clipboard = leptos::prelude::window().navigator().clipboard();
    let promise = clipboard.write_text(&text);
    spawn_local(async move {
        if wasm_bindgen_futures::JsFuture::from(promise).await.is_err() {
            state.notify("Copying was refused by the browser.");
        }
    });
}

/// One page of a search of the caller's conversations (`GET /api/v1/search`);
/// the error is the text to show.
pub async fn search(
    query: &str,
    cursor: Option<&str>,
) -> Result<rill_protocol::conversations::SearchResults, String> {
    let mut url = format!(
        "{}/api/v1/search?limit=20&q={}",
        api_base(),
        js_sys::encode_uri_component(query)
    );
    if let Some(cursor) = cursor {
        url.push_str("&cursor=");
        url.push_str(&String::from(js_sys::encode_uri_component(cursor)));
    }
    get_json(&url).await
}

/// What the share dialog asks of `/api/v1/conversations/{id}/share`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareAction {
    /// `GET`: the live link, if any.
    Read,
    /// `POST`: make the link (or move its snapshot to now), lasting the
    /// given seconds or until revoked.
    Share(Option<u64>),
    /// `DELETE`: revoke it.
    Revoke,
}

/// Runs `action` on conversation `id`'s link: the live link after it
/// (`None`: not shared); the error is the text to show.
pub async fn share(
    id: &str,
    action: ShareAction,
) -> Result<Option<rill_protocol::conversations::ShareLink>, String> {
    let url = format!(
        "{}/api/v1/conversations/{}/share",
        api_base(),
        js_sys::encode_uri_component(id)
    );
    let sent = match action {
        ShareAction::Read => authorized(Request::get(&url)).send().await,
        ShareAction::Revoke => authorized(Request::delete(&url)).send().await,
        ShareAction::Share(expires_in) => {
            let body =
                serde_json::to_string(&rill_protocol::conversations::ShareRequest { expires_in })
                    .unwrap_or_default();
            send_json(Request::post(&url), body).await
        }
    };
    match sent {
        Ok(response) if response.status() == 204 || response.status() == 404 => {
            if action == ShareAction::Read || response.status() == 204 {
                Ok(None)
            } else {
                Err(error_text(response).await)
            }
        }
        Ok(response) if response.ok() => response
            .json()
            .await
            .map(Some)
            .map_err(|_| "the server's answer was not understood".to_owned()),
        Ok(response) => Err(error_text(response).await),
        Err(_) => Err("the server cannot be reached".to_owned()),
    }
}

/// The address of a path of the API's server, as someone else would open it.
pub fn absolute(path: &str) -> String {
    format!("{}{path}", api_base())
}

/// Opens a search result: selects message `message_id`'s branch in its
/// conversation (`POST …/select`: a no-op for a message already shown), then
/// goes to it ([`open_message`]). A refused selection still goes there.
pub fn open_found(conversation_id: String, message_id: String, href: String) {
    spawn_local(async move {
        let _ = post_select(&conversation_id, message_id).await;
        open_message(&href);
    });
}

/// Goes to `href` (`/c/<id>#m-<message>`): in the open conversation, to the
/// message on this page when it is here; else loads that page.
pub fn open_message(href: &str) {
    let window = leptos::prelude::window();
    let location = window.location();
    let (path, fragment) = href.split_once('#').unwrap_or((href, ""));
    // The static build's links are queries (`?c=<id>`), the server's paths.
    let current = if path.starts_with('?') {
        location.search()
    } else {
        location.pathname()
    };
    let here = current.ok().as_deref() == Some(path);
    let found = window
        .document()
        .and_then(|d| d.get_element_by_id(fragment));
    if here && found.is_some() {
        let _ = location.set_hash(fragment);
        if let Some(element) = found {
            element.scroll_into_view();
        }
        return;
    }
    let _ = location.set_href(href);
    if here {
        // Only the fragment changed: the page does not load by itself.
        let _ = location.reload();
    }
}

/// A click in a reply's markdown: on a code block's copy button, copies that
/// block's code and says so on the button for a moment.
pub fn copy_code(state: ChatState, ev: &web_sys::MouseEvent) {
    let Some(button) = ev
        .target()
        .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        .and_then(|el| el.closest(".code-copy").ok().flatten())
    else {
        return;
    };
    let code = button
        .closest(".code-block")
        .ok()
        .flatten()
        .and_then(|block| block.query_selector("code").ok().flatten())
        .and_then(|code| code.text_content());
    let Some(code) = code else {
        return;
    };
    copy_text(state, code);
    button.set_text_content(Some("Copied"));
    spawn_local(async move {
        TimeoutFuture::new(1_500).await;
        button.set_text_content(Some("Copy"));
    });
}

/// Asks the server for the formulas rendering met unknown (one batch,
/// `POST /api/v1/math`), keeps the answers, and puts them in place of the
/// placeholders on the page. Nothing to do: returns at once.
pub fn typeset() {
    use crate::math::{Formula, MathRequest, MathResponse, cache};
    let formulas = cache::take_wanted();
    if formulas.is_empty() {
        return;
    }
    spawn_local(async move {
        let url = format!("{}/api/v1/math", api_base());
        let body = serde_json::to_string(&MathRequest {
            formulas: formulas.clone(),
        })
        .unwrap_or_default();
        let answer = send_json(Request::post(&url), body).await;
        // Without an answer the formulas stay shown as their TeX.
        let Ok(response) = answer else { return };
        if !response.ok() {
            return;
        }
        let Ok(MathResponse { results }) = response.json::<MathResponse>().await else {
            return;
        };
        cache::keep(formulas.into_iter().zip(results));
        let Some(document) = leptos::prelude::window().document() else {
            return;
        };
        let Ok(pending) = document.query_selector_all(".math-pending") else {
            return;
        };
        for index in 0..pending.length() {
            let Some(element) = pending
                .item(index)
                .and_then(|node| node.dyn_into::<web_sys::Element>().ok())
            else {
                continue;
            };
            let formula = Formula {
                tex: element.get_attribute("data-tex").unwrap_or_default(),
                display: element
                    .get_attribute("class")
                    .is_some_and(|class| class.contains("math-display")),
            };
            if cache::get(&formula).is_some() {
                element.set_outer_html(&crate::math::html(&formula.tex, formula.display));
            }
        }
    });
}

/// The page of the caller's conversations after cursor `after`
/// (`GET /api/v1/conversations?after=`); the error is the text to show.
pub async fn older_conversations(
    after: &str,
) -> Result<rill_protocol::conversations::ConversationList, String> {
    let url = format!(
        "{}/api/v1/conversations?limit=50&after={}",
        api_base(),
        js_sys::encode_uri_component(after)
    );
    get_json(&url).await
}

/// `GET url` read as JSON; the error is the text to show.
async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, String> {
    match authorized(Request::get(url)).send().await {
        Ok(response) if response.ok() => response
            .json()
            .await
            .map_err(|_| "the server's answer was not understood".to_owned()),
        Ok(response) => Err(error_text(response).await),
        Err(_) => Err("the server cannot be reached".to_owned()),
    }
}
