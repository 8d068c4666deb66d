//! The connection badge: which transport carries the chat, and its state.

use leptos::prelude::*;

use crate::chat::ConnectionState;

/// Shows the connection state ("Live · WebSocket", "Reconnecting (3)…", …).
#[component]
pub fn StatusBadge(
    /// The state shown.
    state: RwSignal<ConnectionState>,
) -> impl IntoView {
    view! {
        <span class="badge" role="status" data-state=move || state.get().as_str()>
            {move || state.get().label()}
        </span>
    }
    .into_any()
}
