//! Errors that belong to no message, shown until dismissed.

use leptos::prelude::*;

use crate::chat::ChatState;

/// The list of notices.
#[component]
pub fn Notices() -> impl IntoView {
    let state = expect_context::<ChatState>();
    view! {
        <div class="notices" role="alert">
            <For each=move || state.notices.get() key=|(key, _)| *key let:notice>
                <p class="notice">
                    <span>{notice.1.clone()}</span>
                    <button type="button" class="dismiss" aria-label="Dismiss"
                        on:click=move |_| state.dismiss(notice.0)>"×"</button>
                </p>
            </For>
        </div>
    }
    .into_any()
}
