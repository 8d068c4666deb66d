//! The chat page: header with the connection badge, the sidebar of
//! conversations, the open conversation, the composer.

use leptos::prelude::*;

use crate::chat::ChatState;
use crate::components::composer::Composer;
use crate::components::message::MessageItem;
use crate::components::model_picker::ModelPicker;
use crate::components::notices::Notices;
use crate::components::sidebar::Sidebar;
use crate::components::status_badge::StatusBadge;

/// The chat page at `/` (a new chat) and `/c/{id}` (a conversation).
#[component]
pub fn ChatPage() -> impl IntoView {
    let state = ChatState::new();
    state.load(crate::history::initial_chat());
    provide_context(state);
    // Effects run only in the browser: the transport starts after hydration.
    Effect::new(move |_| {
        #[cfg(feature = "browser")]
        crate::transport::start(state);
    });
    view! {
        <div class="app">
            <header class="topbar">
                <h1 class="brand">"rill"</h1>
                <div class="topbar-end">
                    <ModelPicker/>
                    <StatusBadge state=state.connection/>
                </div>
            </header>
            <div class="body">
            <Sidebar/>
            <main class="chat">
                <section class="log" role="log" aria-live="polite" aria-label="Conversation">
                    <Show when=move || state.messages.with(Vec::is_empty)>
                        <p class="empty">"Ask anything. Replies stream in as they are written."</p>
                    </Show>
                    <For each=move || state.messages.get() key=|message| message.key let:message>
                        <MessageItem message/>
                    </For>
                </section>
                <Notices/>
                <Composer/>
            </main>
            </div>
        </div>
    }
}
