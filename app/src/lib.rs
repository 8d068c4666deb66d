//! # rill-app
//!
//! rill's chat UI in Leptos, shared by server-side rendering (`ssr`) and the
//! browser (`hydrate`).
//!
//! ## Layout
//! - [`shell`] is the HTML document; [`App`] the page inside it.
//! - [`components`]: one component per file (chat page, sidebar, message, composer,
//!   badge, notices, model picker).
//! - [`history`]: the conversations the server renders the page with (and embeds
//!   for hydration).
//! - [`chat`]: client state and how server events change it (transport-agnostic).
//! - [`markdown`]: sanitizing and incremental markdown rendering.
//! - `transport` (browser builds only): WebSocket with reconnect and resume, SSE and
//!   long-poll fallbacks.
//!
//! Features: `ssr` (the server renders), `hydrate` (the browser takes over the
//! server-rendered page), `csr` (the browser renders everything: the static build
//! for trunk).

pub mod chat;
pub mod components;
pub mod highlight;
pub mod history;
pub mod markdown;
pub mod math;
#[cfg(feature = "browser")]
pub mod transport;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};

use crate::components::chat_page::ChatPage;

/// The HTML document around the app, rendered by the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="icon" href="data:,"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
                <InitialData/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The page's starting data as JSON, for the browser to hydrate with (server only).
#[component]
fn InitialData() -> impl IntoView {
    let (json, earlier) = history::initial_chat().into_script_json();
    view! {
        <script type="application/json" id=history::INITIAL_ID inner_html=json></script>
        <script type="application/json" id=history::EARLIER_ID inner_html=earlier></script>
    }
}

/// The application: document metadata and the chat page. There is no
/// client-side router: the server renders this app only at `/` and `/c/{id}`
/// (its own routes answer every other path), every link in the UI is a real
/// navigation, and the static build is one page wherever it is hosted
/// (`?c=<id>` opens a conversation). Leaving Leptos's router out keeps its code
/// out of the wasm.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // The static (csr) build links its stylesheet from index.html.
    let stylesheet =
        (!cfg!(feature = "csr")).then(|| view! { <Stylesheet id="leptos" href="/pkg/rill.css"/> });
    view! {
        {stylesheet}
        <Title text="rill"/>
        <ChatPage/>
    }
}
