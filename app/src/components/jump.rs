//! "Jump to latest": shown while the end of the conversation is out of view
//! (the reader scrolled up while a reply streams, or opened a long
//! conversation at its top). One click brings the end into view; from there
//! the page follows the stream again.

use leptos::prelude::*;

use crate::chat::ChatState;

/// The button, floating above the composer while it is useful.
#[component]
pub fn JumpToLatest() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let away = RwSignal::new(false);
    // Effects run only in the browser: that is where the page scrolls.
    Effect::new(move |_| {
        #[cfg(feature = "browser")]
        {
            let measure = move || away.set(!crate::transport::at_end());
            measure();
            let scrolled = window_event_listener(leptos::ev::scroll, move |_| measure());
            let resized = window_event_listener(leptos::ev::resize, move |_| measure());
            on_cleanup(move || {
                scrolled.remove();
                resized.remove();
            });
        }
    });
    // A message added moves the end: measure again once it is laid out.
    Effect::new(move |_| {
        state.messages.track();
        #[cfg(feature = "browser")]
        request_animation_frame(move || away.set(!crate::transport::at_end()));
    });
    view! {
        <Show when=move || away.get()>
            <button
                type="button"
                class="jump-latest"
                on:click=move |_| {
                    #[cfg(feature = "browser")]
                    crate::transport::scroll_to_end();
                }
            >
                "↓ Jump to latest"
            </button>
        </Show>
    }
    .into_any()
}
