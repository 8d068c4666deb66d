//! Keyboard shortcuts, and the dialog that lists them (`?`):
//! Esc stops the streaming reply, Ctrl/Cmd+Shift+O starts a new chat,
//! Ctrl/Cmd+K opens the search, the Up
//! arrow in an empty composer edits the last question (in the composer),
//! Enter sends and Shift+Enter adds a line (in the composer).

use leptos::prelude::*;

use crate::chat::ChatState;
use crate::components::deferred::{Deferred, shortcuts_dialog};
use crate::components::modal::Modal;

/// The shortcuts, as the dialog lists them.
const SHORTCUTS: [(&str, &str); 7] = [
    ("Enter", "Send the message"),
    ("Shift + Enter", "New line in the message"),
    ("Esc", "Stop the reply being written"),
    ("Ctrl/⌘ + Shift + O", "New chat"),
    ("Ctrl/⌘ + K", "Search your conversations"),
    ("↑ (empty message box)", "Edit your last question"),
    ("?", "Show these shortcuts"),
];

/// Listens for the page's shortcuts; shows their list on `?` (its code is
/// loaded when first shown).
#[component]
pub fn Shortcuts() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let open = RwSignal::new(false);
    // Effects run only in the browser: that is where the keys are.
    Effect::new(move |_| {
        #[cfg(feature = "browser")]
        {
            let handle = window_event_listener(leptos::ev::keydown, move |ev| {
                on_key(state, open, &ev);
            });
            on_cleanup(move || handle.remove());
        }
        #[cfg(not(feature = "browser"))]
        let _ = state;
    });
    view! {
        <Show when=move || open.get()>
            <Deferred load=move || shortcuts_dialog(open) on_close=move |()| open.set(false)/>
        </Show>
    }
    .into_any()
}

/// The list of shortcuts, shown while `open`.
#[component]
pub fn ShortcutsDialog(open: RwSignal<bool>) -> impl IntoView {
    view! {
        <Modal backdrop="shortcuts-backdrop" class="shortcuts" labelled_by="shortcuts-title" on_close=move |()| open.set(false)>
            <h2 id="shortcuts-title">"Keyboard shortcuts"</h2>
            <dl>
                {SHORTCUTS
                    .iter()
                    .map(|(keys, what)| view! { <dt><kbd>{*keys}</kbd></dt><dd>{*what}</dd> })
                    .collect_view()}
            </dl>
            <button type="button" class="close" on:click=move |_| open.set(false)>
                "Close"
            </button>
        </Modal>
    }
    .into_any()
}

/// One key press anywhere on the page.
#[cfg(feature = "browser")]
fn on_key(state: ChatState, open: RwSignal<bool>, ev: &web_sys::KeyboardEvent) {
    use wasm_bindgen::JsCast;
    let key = ev.key();
    if key == "Escape" {
        if open.get_untracked() {
            open.set(false);
            ev.prevent_default();
        } else if state.search_open.get_untracked() {
            // The dialog handles its own Esc; this is the notice shown when
            // its code could not be fetched.
            state.search_open.set(false);
            ev.prevent_default();
        } else if state.stop_streaming() {
            ev.prevent_default();
        }
        return;
    }
    if (ev.ctrl_key() || ev.meta_key()) && !ev.shift_key() && key.eq_ignore_ascii_case("k") {
        ev.prevent_default();
        open.set(false);
        state.search_open.set(true);
        return;
    }
    if (ev.ctrl_key() || ev.meta_key()) && ev.shift_key() && key.eq_ignore_ascii_case("o") {
        ev.prevent_default();
        let _ = window()
            .location()
            .set_href(crate::components::sidebar::NEW_CHAT_HREF);
        return;
    }
    // `?` is text while typing: only outside inputs.
    let typing = ev
        .target()
        .and_then(|t| t.dyn_into::<web_sys::HtmlElement>().ok())
        .is_some_and(|el| {
            matches!(el.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT")
                || el.is_content_editable()
        });
    if key == "?" && !typing {
        ev.prevent_default();
        open.set(true);
    }
}
