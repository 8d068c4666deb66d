//! The composer: Enter sends, Shift+Enter adds a line, disabled while empty.

use leptos::prelude::*;

use crate::chat::ChatState;

/// The message input and send button.
#[component]
pub fn Composer() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let draft = RwSignal::new(String::new());
    let submit = move || {
        let text = draft.get_untracked();
        if text.trim().is_empty() {
            return;
        }
        // Keep the draft when it could not be sent.
        if state.ask(text) {
            draft.set(String::new());
            #[cfg(feature = "browser")]
            crate::transport::scroll_to_end();
        }
    };
    view! {
        <form class="composer" on:submit=move |ev| {
            ev.prevent_default();
            submit();
        }>
            <label for="composer-input" class="visually-hidden">"Message"</label>
            <textarea
                id="composer-input"
                rows="2"
                placeholder="Ask something… (Enter sends, Shift+Enter adds a line, ? lists shortcuts)"
                prop:value=move || draft.get()
                on:input=move |ev| draft.set(event_target_value(&ev))
                on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                    if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                        ev.prevent_default();
                        submit();
                    } else if ev.key() == "ArrowUp"
                        && draft.with(|d| d.is_empty())
                        && state.edit_last_question()
                    {
                        ev.prevent_default();
                    }
                }
            ></textarea>
            <button type="submit" class="send" disabled=move || draft.with(|d| d.trim().is_empty())>
                "Send"
            </button>
        </form>
    }
    .into_any()
}
