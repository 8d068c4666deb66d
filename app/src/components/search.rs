//! Search across the caller's conversations (Ctrl/Cmd+K, or the topbar's
//! button): results as you type, each with its conversation's title and the
//! best passage, matched words marked; choosing one opens the message in its
//! conversation. Up/Down move through the results, Enter opens, Esc closes.

use leptos::prelude::*;
use rill_protocol::conversations::SearchHit;

use crate::chat::ChatState;
use crate::components::modal::Modal;

/// What the dialog says under the box.
#[derive(Debug, Clone, PartialEq)]
// Only the browser searches: the server renders the dialog idle.
#[cfg_attr(not(feature = "browser"), allow(dead_code))]
enum Status {
    /// Nothing typed yet.
    Idle,
    /// A search is running.
    Searching,
    /// This many results shown (more may follow).
    Found(usize),
    /// It failed: why.
    Failed(String),
}

/// The link to a result: its conversation's page, at the message.
fn href(hit: &SearchHit) -> String {
    format!(
        "{}#m-{}",
        crate::components::sidebar::conversation_href(&hit.conversation_id),
        hit.message_id
    )
}

/// The search dialog; shown while `state.search_open`.
#[component]
pub fn SearchDialog() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let query = RwSignal::new(String::new());
    let results = RwSignal::new(Vec::<SearchHit>::new());
    let next = RwSignal::new(None::<String>);
    let status = RwSignal::new(Status::Idle);
    let selected = RwSignal::new(0usize);
    // Each search's number: an answer to an older one is dropped.
    let generation = StoredValue::new(0u64);
    let input = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if let Some(input) = input.get() {
            let _ = input.focus();
        }
    });
    let close = move || {
        state.search_open.set(false);
    };
    // Runs the search for the box's words (after a pause in typing), or the
    // next page of the current one.
    let run = move |more: bool| {
        let text = query.get_untracked();
        generation.update_value(|g| *g += 1);
        if text.trim().is_empty() {
            results.set(Vec::new());
            next.set(None);
            status.set(Status::Idle);
            return;
        }
        #[cfg(feature = "browser")]
        {
            let mine = generation.get_value();
            let cursor = if more { next.get_untracked() } else { None };
            status.set(Status::Searching);
            leptos::task::spawn_local(async move {
                if !more {
                    gloo_timers::future::TimeoutFuture::new(150).await;
                    if generation.try_get_value() != Some(mine) {
                        return;
                    }
                }
                let answer = crate::transport::search(&text, cursor.as_deref()).await;
                if generation.try_get_value() != Some(mine) {
                    return;
                }
                match answer {
                    Ok(page) => {
                        if more {
                            results.update(|r| r.extend(page.results));
                        } else {
                            results.set(page.results);
                            selected.set(0);
                        }
                        next.set(page.next);
                        status.set(Status::Found(results.with_untracked(Vec::len)));
                    }
                    Err(why) => status.set(Status::Failed(why)),
                }
            });
        }
        #[cfg(not(feature = "browser"))]
        let _ = more;
    };
    let open_selected = move || {
        let chosen = results.with_untracked(|r| {
            r.get(selected.get_untracked()).map(|hit| {
                (
                    hit.conversation_id.clone(),
                    hit.message_id.clone(),
                    href(hit),
                )
            })
        });
        if let Some((conversation, message, link)) = chosen {
            close();
            // The message may be on a branch its conversation does not show:
            // show that branch first.
            #[cfg(feature = "browser")]
            crate::transport::open_found(conversation, message, link);
            #[cfg(not(feature = "browser"))]
            let _ = (conversation, message, link);
        }
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        let count = results.with_untracked(Vec::len);
        match ev.key().as_str() {
            "ArrowDown" if count > 0 => {
                ev.prevent_default();
                selected.update(|s| *s = (*s + 1) % count);
            }
            "ArrowUp" if count > 0 => {
                ev.prevent_default();
                selected.update(|s| *s = (*s + count - 1) % count);
            }
            "Enter" => {
                ev.prevent_default();
                open_selected();
            }
            _ => {}
        }
    };
    let status_text = move || match status.get() {
        Status::Idle => "Type words to find them in your conversations.".to_owned(),
        Status::Searching => "Searching…".to_owned(),
        Status::Found(0) => "No messages match.".to_owned(),
        Status::Found(1) => "1 message found.".to_owned(),
        Status::Found(n) if next.with(Option::is_some) => {
            format!("{n} messages shown, more below.")
        }
        Status::Found(n) => format!("{n} messages found."),
        Status::Failed(why) => format!("Search failed: {why}"),
    };
    view! {
        <Modal backdrop="search-backdrop" class="search" labelled_by="search-title" on_close=move |()| close()>
            <h2 id="search-title">"Search your conversations"</h2>
            <input
                node_ref=input
                type="search"
                class="search-input"
                role="combobox"
                aria-label="Words to search for"
                aria-expanded=move || if results.with(Vec::is_empty) { "false" } else { "true" }
                aria-controls="search-results"
                aria-autocomplete="list"
                aria-activedescendant=move || {
                    (!results.with(Vec::is_empty)).then(|| format!("search-hit-{}", selected.get()))
                }
                placeholder="Search messages…"
                autocomplete="off"
                prop:value=move || query.get()
                on:input=move |ev| {
                    query.set(event_target_value(&ev));
                    run(false);
                }
                on:keydown=on_key
            />
            <p class="search-status" role="status" aria-live="polite">{status_text}</p>
            <ul id="search-results" class="search-results" role="listbox" aria-label="Results">
                <For
                    each=move || results.get().into_iter().enumerate()
                    key=|(index, hit)| (*index, hit.message_id.clone())
                    let:item
                >
                    {
                        let (index, hit) = item;
                        let link = href(&hit);
                        let who = if hit.role == "user" { "You" } else { "Reply" };
                        let title = if hit.conversation_title.trim().is_empty() {
                            "Untitled conversation".to_owned()
                        } else {
                            hit.conversation_title.clone()
                        };
                        view! {
                            <li
                                id=format!("search-hit-{index}")
                                role="option"
                                class="search-hit"
                                aria-selected=move || if selected.get() == index { "true" } else { "false" }
                                data-href=link
                                on:mouseenter=move |_| selected.set(index)
                                on:click=move |_| {
                                    selected.set(index);
                                    open_selected();
                                }
                            >
                                // Options hold no links (nothing interactive inside an
                                // option): the combobox's Enter or a click opens it.
                                <div class="search-hit-body">
                                    <span class="search-hit-title">{title}</span>
                                    <span class="search-hit-who">{who}</span>
                                    // The server escapes the text and adds only <mark>.
                                    <span class="search-hit-snippet" inner_html=hit.snippet_html.clone()></span>
                                </div>
                            </li>
                        }
                    }
                </For>
            </ul>
            <div class="search-actions">
                <Show when=move || next.with(Option::is_some)>
                    <button type="button" class="search-more" on:click=move |_| run(true)>
                        "More results"
                    </button>
                </Show>
                <button type="button" class="close" on:click=move |_| close()>"Close"</button>
            </div>
        </Modal>
    }
    .into_any()
}
