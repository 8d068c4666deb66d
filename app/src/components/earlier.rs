//! The top of a long conversation: it opens with its newest messages, and the
//! earlier ones join the page as the reader scrolls up to them (or asks with
//! the button), so opening a conversation of a thousand messages costs the
//! browser what opening sixty does.

use leptos::prelude::*;

use crate::chat::ChatState;

/// How close to the top of the page (pixels) earlier messages are loaded.
#[cfg(feature = "browser")]
const NEAR_TOP_PX: f64 = 1200.0;

/// "Show earlier messages (n)", above the first message shown, while the
/// conversation has messages not on the page.
#[component]
pub fn EarlierMessages() -> impl IntoView {
    let state = expect_context::<ChatState>();
    // The browser reads them from the page here, in this part's own task
    // (chat_page puts it in a `Later`), not while the page first hydrates.
    state.load_earlier_from_page();
    let count = move || state.earlier.with(Vec::len);
    let any = move || count() > 0;
    // One load at a time: the page keeps its place once the new messages
    // are laid out, and only then may the next load start. A load runs in
    // two tasks: its messages' markdown first, then the page's change and
    // its layout (together up to 84 ms in one task, BENCHMARKS.md).
    let loading = StoredValue::new(false);
    let more = move || {
        #[cfg(feature = "browser")]
        if !loading.get_value() {
            loading.set_value(true);
            let views = state.take_earlier();
            set_timeout(
                move || {
                    crate::transport::keep_position(
                        move || state.put_earlier(views),
                        move || loading.set_value(false),
                    );
                },
                std::time::Duration::ZERO,
            );
        }
        #[cfg(not(feature = "browser"))]
        let _ = (state, loading);
    };
    // Effects run only in the browser: that is where the page scrolls.
    Effect::new(move |_| {
        #[cfg(feature = "browser")]
        {
            // A long conversation opens at its end, or at the message in
            // the address (`#m-<id>`, a search result's link).
            crate::transport::open_at_place(state);
            let scrolled = window_event_listener(leptos::ev::scroll, move |_| {
                if state.earlier.with_untracked(|e| !e.is_empty())
                    && crate::transport::scroll_top() < NEAR_TOP_PX
                {
                    more();
                }
            });
            on_cleanup(move || scrolled.remove());
        }
    });
    view! {
        <Show when=any>
            <button type="button" class="earlier" on:click=move |_| more()>
                {move || format!("Show earlier messages ({})", count())}
            </button>
        </Show>
    }
}
