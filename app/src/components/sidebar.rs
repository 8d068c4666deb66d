//! The conversation list: new chat, switch (a full page load of `/c/{id}`, which
//! the server renders with its history), rename, delete with confirmation.

use leptos::prelude::*;
use rill_protocol::conversations::ConversationSummary;

use crate::chat::ChatState;

/// The sidebar.
#[component]
pub fn Sidebar() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let loading = RwSignal::new(false);
    let older = NodeRef::<leptos::html::Button>::new();
    // The next page of older conversations, added to the end of the list.
    let load_older = move || {
        if loading.get_untracked() {
            return;
        }
        let Some(after) = state.conversations_next.get_untracked() else {
            return;
        };
        loading.set(true);
        #[cfg(feature = "browser")]
        leptos::task::spawn_local(async move {
            match crate::transport::older_conversations(&after).await {
                Ok(page) => {
                    state.conversations.update(|list| {
                        for conversation in page.conversations {
                            if !list.iter().any(|c| c.id == conversation.id) {
                                list.push(conversation);
                            }
                        }
                    });
                    state.conversations_next.set(page.next);
                }
                Err(why) => state.notify(format!("Could not load older conversations: {why}")),
            }
            loading.set(false);
        });
        #[cfg(not(feature = "browser"))]
        let _ = after;
    };
    // Scrolling near the end of the list loads the next page by itself.
    Effect::new(move |_| {
        #[cfg(feature = "browser")]
        {
            let handle = window_event_listener(leptos::ev::scroll, move |_| {
                let Some(button) = older.get_untracked() else {
                    return;
                };
                let near = window()
                    .inner_height()
                    .ok()
                    .and_then(|h| h.as_f64())
                    .is_some_and(|height| button.get_bounding_client_rect().top() < height + 200.0);
                if near {
                    load_older();
                }
            });
            on_cleanup(move || handle.remove());
        }
    });
    view! {
        <nav class="sidebar" aria-label="Conversations">
            // rel=external: a real navigation, so the server renders the history.
            <a class="new-chat" href=NEW_CHAT_HREF rel="external">"+ New chat"</a>
            <ul class="conversations">
                <For
                    each=move || state.conversations.get()
                    key=|c| (c.id.clone(), c.title.clone())
                    let:conversation
                >
                    <ConversationEntry conversation/>
                </For>
            </ul>
            <Show when=move || state.conversations.with(Vec::is_empty)>
                <p class="sidebar-empty">"Your conversations appear here."</p>
            </Show>
            <Show when=move || state.conversations_next.with(Option::is_some)>
                <button
                    type="button"
                    class="load-older"
                    node_ref=older
                    disabled=move || loading.get()
                    on:click=move |_| load_older()
                >
                    {move || if loading.get() { "Loading…" } else { "Older conversations" }}
                </button>
            </Show>
        </nav>
    }
    .into_any()
}

/// The address of conversation `id`: `/c/<id>`, which the server renders
/// with its history; in the static build `?c=<id>`, whose page loads it (a
/// static host serves one page).
pub fn conversation_href(id: &str) -> String {
    if cfg!(feature = "csr") {
        format!("?c={}", urlencoding(id))
    } else {
        format!("/c/{}", urlencoding(id))
    }
}

/// The address of a new chat (the static build: its own page, no query).
pub const NEW_CHAT_HREF: &str = if cfg!(feature = "csr") { "?" } else { "/" };

/// One conversation of the list.
#[component]
fn ConversationEntry(conversation: ConversationSummary) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let id = StoredValue::new(conversation.id.clone());
    let title = conversation.title.clone();
    let href = conversation_href(&conversation.id);
    let current = move || {
        state
            .session_id
            .with(|s| s.as_deref() == Some(id.get_value().as_str()))
    };
    let editing = RwSignal::new(false);
    let draft = RwSignal::new(title.clone());
    let save = move || {
        let title = draft.get_untracked().trim().to_owned();
        editing.set(false);
        if title.is_empty() {
            return;
        }
        #[cfg(feature = "browser")]
        crate::transport::rename_conversation(state, id.get_value(), title);
        #[cfg(not(feature = "browser"))]
        let _ = (title, state);
    };
    let remove = move |_| {
        #[cfg(feature = "browser")]
        {
            let sure = window()
                .confirm_with_message("Delete this conversation? This cannot be undone.")
                .unwrap_or(false);
            if sure {
                crate::transport::delete_conversation(state, id.get_value());
            }
        }
    };
    view! {
        <li class="conversation" class:current=current data-id=id.get_value()>
            <Show
                when=move || editing.get()
                fallback=move || {
                    let href = href.clone();
                    let title = title.clone();
                    view! {
                        <a class="conversation-link" href=href rel="external"
                           aria-current=move || current().then_some("page")>{title}</a>
                        <button type="button" class="icon rename" title="Rename"
                            aria-label="Rename" on:click=move |_| editing.set(true)>"✎"</button>
                        <button type="button" class="icon delete" title="Delete"
                            aria-label="Delete" on:click=remove>"×"</button>
                    }
                }
            >
                <input
                    class="rename-input"
                    aria-label="New title"
                    maxlength="200"
                    prop:value=move || draft.get()
                    on:input=move |ev| draft.set(event_target_value(&ev))
                    on:keydown=move |ev: leptos::ev::KeyboardEvent| match ev.key().as_str() {
                        "Enter" => save(),
                        "Escape" => editing.set(false),
                        _ => {}
                    }
                    on:blur=move |_| if editing.get_untracked() { save() }
                />
            </Show>
        </li>
    }
    .into_any()
}

/// Percent-encodes an id for a path segment.
pub(crate) fn urlencoding(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
