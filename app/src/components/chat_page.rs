//! The chat page: header with the connection badge, the sidebar of
//! conversations, the open conversation, the composer.

use leptos::prelude::*;

use crate::chat::{ChatState, MessageView, Role};
use crate::components::composer::Composer;
use crate::components::deferred::{Deferred, documents_panel, search_dialog};
use crate::components::documents::ProjectPicker;
use crate::components::earlier::EarlierMessages;
use crate::components::jump::JumpToLatest;
use crate::components::later::Later;
use crate::components::message::MessageItem;
use crate::components::model_picker::ModelPicker;
use crate::components::notices::Notices;
use crate::components::persona_picker::PersonaPicker;
use crate::components::share::ShareButton;
use crate::components::shortcuts::Shortcuts;
use crate::components::sidebar::Sidebar;
use crate::components::status_badge::StatusBadge;

/// The chat page at `/` (a new chat) and `/c/{id}` (a conversation).
#[component]
pub fn ChatPage() -> impl IntoView {
    let state = ChatState::new();
    state.load(crate::history::initial_chat());
    provide_context(state);
    // Effects run only in the browser: the transport starts once the page
    // has hydrated, in a task of its own (hydrating is already the page's
    // longest task); the markdown renderer's code is fetched at once (its
    // replies rendered again once the page has hydrated), the dialogs' a
    // moment later, in the background.
    Effect::new(move |_| {
        #[cfg(feature = "browser")]
        {
            crate::components::later::when_hydrated(move || crate::transport::start(state));
            if !crate::markdown::ready() {
                leptos::task::spawn_local(async move {
                    if crate::markdown::load().await {
                        crate::components::later::when_hydrated(move || state.render_again());
                    }
                });
            }
            set_timeout(
                || leptos::task::spawn_local(crate::components::deferred::prefetch()),
                std::time::Duration::from_secs(1),
            );
        }
    });
    view! {
        <div class="app">
            <header class="topbar">
                <h1 class="brand">"rill"</h1>
                <div class="topbar-end">
                    <Later>
                    <button
                        type="button"
                        class="search-open"
                        aria-haspopup="dialog"
                        aria-keyshortcuts="Control+K Meta+K"
                        on:click=move |_| state.search_open.set(true)
                    >
                        "Search"
                    </button>
                    <Show when=move || state.session_id.with(Option::is_some)>
                        <ShareButton/>
                        <nav class="export" aria-label="Export this conversation">
                            <a href=move || export_href(state, "markdown") download rel="external">
                                "Export .md"
                            </a>
                            <a href=move || export_href(state, "json") download rel="external">
                                ".json"
                            </a>
                        </nav>
                    </Show>
                    <ProjectPicker/>
                    <ModelPicker/>
                    <StatusBadge state=state.connection/>
                    </Later>
                </div>
            </header>
            <div class="body">
            <Later><Sidebar/></Later>
            <main class="chat">
                <Show when=move || state.documents_open.get() && state.project.with(Option::is_some)>
                    <Deferred load=documents_panel on_close=move |()| state.documents_open.set(false)/>
                </Show>
                <section class="log" role="log" aria-live="polite" aria-label="Conversation">
                    <Later><EarlierMessages/></Later>
                    <Later>
                    <Show when=move || state.messages.with(Vec::is_empty)>
                        <p class="empty">"Ask anything. Replies stream in as they are written."</p>
                    </Show>
                    <For each=move || state.messages.with(|m| rows(m)) key=|row| row.key let:row>
                        {if row.messages.len() == 1 {
                            view! { <MessageItem message=row.messages[0]/> }.into_any()
                        } else {
                            let columns = row.messages.len();
                            view! {
                                <div class="turn-group" role="group" aria-label="Replies side by side" data-columns=columns>
                                    {row
                                        .messages
                                        .into_iter()
                                        .map(|message| view! { <MessageItem message labelled=true/> })
                                        .collect_view()}
                                </div>
                            }
                            .into_any()
                        }}
                    </For>
                    </Later>
                </section>
                <Later>
                <Show when=move || state.totals().is_some()>
                    <p class="totals">
                        "This conversation: "
                        {move || state.totals().map(|t| t.summary())}
                    </p>
                </Show>
                <Notices/>
                <PersonaPicker/>
                <JumpToLatest/>
                <Composer/>
                <Shortcuts/>
                <Show when=move || state.search_open.get()>
                    <Deferred load=search_dialog on_close=move |()| state.search_open.set(false)/>
                </Show>
                </Later>
            </main>
            </div>
        </div>
    }
}

/// The open conversation's export link: on the server-rendered page the
/// page's cookie authenticates the download; the static build's link goes
/// to the API's server with its token.
fn export_href(state: ChatState, format: &str) -> String {
    let id = state.session_id.get().unwrap_or_default();
    let path = format!(
        "/api/v1/conversations/{}/export?format={format}",
        crate::components::sidebar::urlencoding(&id)
    );
    #[cfg(feature = "csr")]
    {
        crate::transport::with_token(crate::transport::absolute(&path))
    }
    #[cfg(not(feature = "csr"))]
    {
        path
    }
}

/// A row of the conversation: one message, or the replies to one question that
/// asked several personas (shown side by side).
#[derive(Clone)]
struct Row {
    /// The first message's key and how many: a row that gains a message is a
    /// new row.
    key: (u64, usize),
    /// Its messages, in order.
    messages: Vec<MessageView>,
}

/// The conversation as rows: consecutive replies (to one question) together.
fn rows(messages: &[MessageView]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut at = 0;
    while at < messages.len() {
        let end = if messages[at].role == Role::Assistant {
            at + messages[at..]
                .iter()
                .take_while(|m| m.role == Role::Assistant)
                .count()
        } else {
            at + 1
        };
        rows.push(Row {
            key: (messages[at].key, end - at),
            messages: messages[at..end].to_vec(),
        });
        at = end;
    }
    rows
}
