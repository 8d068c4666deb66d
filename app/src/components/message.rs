//! One message. A reply renders as finished markdown blocks (each inserted once)
//! plus the block being written, so a token touches only the last block.

use leptos::prelude::*;
use std::sync::Arc;

use rill_protocol::AUTO_PERSONA;
use rill_protocol::client::DEFAULT_PERSONA;

use crate::chat::{ChatState, MessageView, ReplyFigures, ReplyStatus, Role};

/// A message of the conversation.
#[component]
pub fn MessageItem(
    /// The message shown.
    message: MessageView,
    /// Whether a reply names its persona even when it is the default one
    /// (replies side by side all do).
    #[prop(optional)]
    labelled: bool,
) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let copy = move |_| {
        #[cfg(feature = "browser")]
        crate::transport::copy_text(state, message.text_now());
    };
    if message.role == Role::User {
        let editing = RwSignal::new(false);
        let draft = RwSignal::new(String::new());
        let input = NodeRef::<leptos::html::Textarea>::new();
        // The Up arrow in an empty composer opens the last question here.
        Effect::new(move |_| {
            if state.edit_request.get() == Some(message.key) {
                state.edit_request.set(None);
                draft.set(message.text.get_value());
                editing.set(true);
            }
        });
        // An edit form that opens takes the focus, with the cursor at the end.
        Effect::new(move |_| {
            if let Some(textarea) = input.get() {
                let _ = textarea.focus();
                let end = textarea.value().encode_utf16().count() as u32;
                let _ = textarea.set_selection_range(end, end);
            }
        });
        let resend = move || {
            if state.edit(message, draft.get_untracked()) {
                editing.set(false);
            }
        };
        return view! {
            <article class="msg user" data-role="user" id=message.id.get_value().map(|id| format!("m-{id}"))>
                <Show
                    when=move || editing.get()
                    fallback=move || view! {
                        <div class="bubble"><p class="user-text">{message.text.get_value()}</p></div>
                        <div class="actions">
                            <button type="button" class="copy" on:click=copy>"Copy"</button>
                            <button type="button" class="edit" on:click=move |_| {
                                draft.set(message.text.get_value());
                                editing.set(true);
                            }>"Edit"</button>
                            <Versions message=message/>
                        </div>
                    }
                >
                    <form class="edit-form" on:submit=move |ev| {
                        ev.prevent_default();
                        resend();
                    }>
                        <label class="visually-hidden">"Edit your message"</label>
                        <textarea
                            node_ref=input
                            class="edit-input"
                            rows="3"
                            prop:value=move || draft.get()
                            on:input=move |ev| draft.set(event_target_value(&ev))
                        ></textarea>
                        <div class="actions">
                            <button type="submit" class="resend">"Send edited"</button>
                            <button type="button" class="cancel-edit" on:click=move |_| editing.set(false)>
                                "Cancel"
                            </button>
                        </div>
                        <p class="hint">"The edited question starts a new branch; ‹ › switches back to this one."</p>
                    </form>
                </Show>
            </article>
        }
        .into_any();
    }
    let status = message.status;
    let persona = message.persona;
    let named = move || {
        labelled
            || message.confidence.with(Option::is_some)
            || persona.with(|p| p.as_deref().is_some_and(|p| p != DEFAULT_PERSONA))
    };
    let label = move || {
        let id = persona.get()?;
        let name = state.persona_name(&id);
        Some(match message.confidence.get() {
            Some(confidence) => format!("{name} · auto, {:.0}% sure", confidence * 100.0),
            None if id == AUTO_PERSONA => "Auto · choosing who answers…".to_owned(),
            None => name,
        })
    };
    // Formulas met while rendering are asked of the server in a batch.
    Effect::new(move |_| {
        message.blocks.track();
        message.tail.track();
        #[cfg(feature = "browser")]
        crate::transport::typeset();
    });
    view! {
        <article
            class="msg assistant"
            data-role="assistant"
            id=message.id.get_value().map(|id| format!("m-{id}"))
            data-status=move || status.get().as_str()
            data-raw=move || message.raw.get()
            data-persona=move || persona.get()
            data-confidence=move || message.confidence.get().map(|c| c.to_string())
        >
            <div class="bubble">
                <Show when=named>
                    <p class="persona-name">{label}</p>
                </Show>
                <Show when=move || message.progress.with(Option::is_some)>
                    <p class="progress">{move || message.progress.get()}</p>
                </Show>
                <Show when=move || status.get() == ReplyStatus::Waiting && message.progress.with(Option::is_none)>
                    <p class="progress">"Waiting for the server…"</p>
                </Show>
                // A code block's copy button (in the rendered markdown) is
                // handled here, for every block of the reply.
                <div class="markdown" on:click=move |ev| {
                    #[cfg(feature = "browser")]
                    crate::transport::copy_code(state, &ev);
                    #[cfg(not(feature = "browser"))]
                    let _ = ev;
                }>
                    // Keyed by the block's allocation: a block is inserted once and never re-rendered.
                    <For
                        each=move || message.blocks.get()
                        key=|block| Arc::as_ptr(block) as *const u8 as usize
                        let:block
                    >
                        <div class="md-block" inner_html=block.to_string()></div>
                    </For>
                    <div class="md-tail" inner_html=move || message.tail.get()></div>
                </div>
                <Show when=move || message.sources.with(|s| !s.is_empty())>
                    <Sources message=message/>
                </Show>
                <Show when=move || status.get() == ReplyStatus::Stopped>
                    <p class="note stopped">"Stopped: this reply was cancelled."</p>
                </Show>
                <Show when=move || status.get() == ReplyStatus::Interrupted>
                    <p class="note interrupted" role="status">
                        "Interrupted: the server restarted before this reply finished. The text above is what arrived."
                    </p>
                </Show>
                <Show when=move || message.error.with(Option::is_some)>
                    <p class="note error" role="alert">{move || message.error.get()}</p>
                </Show>
                <Show
                    when=move || matches!(status.get(), ReplyStatus::Streaming | ReplyStatus::Waiting)
                    fallback=move || view! {
                        <div class="actions">
                            <button type="button" class="copy" on:click=copy>"Copy"</button>
                            <button type="button" class="regenerate" on:click=move |_| state.regenerate(message)>
                                "Regenerate"
                            </button>
                            <Versions message=message/>
                        </div>
                    }
                >
                    <div class="actions">
                        <button type="button" class="stop" on:click=move |_| state.stop(message)>
                            "Stop"
                        </button>
                    </div>
                </Show>
                <Show when=move || message.figures.with(Option::is_some)>
                    <p class="figures">
                        {move || message.figures.with(|f| f.as_ref().map(ReplyFigures::summary))}
                    </p>
                </Show>
            </div>
        </article>
    }
    .into_any()
}

/// A reply's sources: one chip per passage, numbered as the reply cites
/// them, each opening to the passage itself.
#[component]
fn Sources(
    /// The reply whose sources are shown.
    message: MessageView,
) -> impl IntoView {
    view! {
        <div class="sources" role="group" aria-label="Sources">
            {move || {
                message
                    .sources
                    .get()
                    .into_iter()
                    .enumerate()
                    .map(|(n, source)| {
                        let page = source
                            .metadata
                            .page
                            .map(|p| format!(" · p. {p}"))
                            .unwrap_or_default();
                        view! {
                            <details class="source" data-document=source.metadata.document_id.clone()>
                                <summary>
                                    <span class="source-number">{format!("[{}]", n + 1)}</span>
                                    " "
                                    {format!("{}{page}", source.metadata.filename)}
                                </summary>
                                <blockquote class="source-text">{source.content}</blockquote>
                            </details>
                        }
                    })
                    .collect_view()
            }}
        </div>
    }
}

/// `‹ 2/3 ›` on a message that has other versions: which one this is, and
/// buttons to the previous and next (the page then shows that branch).
#[component]
fn Versions(
    /// The message whose versions are offered.
    message: MessageView,
) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let position = move || {
        message.versions.track();
        message.version_position()
    };
    let go = move |step: isize| {
        if let Some(id) = message.version_at(step) {
            state.select_version(id);
        }
    };
    view! {
        <Show when=move || position().is_some()>
            <span class="versions" role="group" aria-label="Versions">
                <button
                    type="button"
                    class="version-prev"
                    aria-label="Previous version"
                    disabled=move || position().is_none_or(|(at, _)| at <= 1)
                    on:click=move |_| go(-1)
                >
                    "‹"
                </button>
                <span class="version-label">
                    {move || position().map(|(at, of)| format!("{at}/{of}"))}
                </span>
                <button
                    type="button"
                    class="version-next"
                    aria-label="Next version"
                    disabled=move || position().is_none_or(|(at, of)| at >= of)
                    on:click=move |_| go(1)
                >
                    "›"
                </button>
            </span>
        </Show>
    }
}
