//! What the page starts with: the caller's conversations and the open one. The
//! server loads it, provides it as context for rendering, and embeds it in the
//! page as JSON, which the browser reads before hydrating, so both render the
//! same history.
//!
//! The page shows a long conversation's newest messages only (a window, see
//! [`crate::chat::WINDOW`]), so the JSON comes in two parts: what the page
//! hydrates with (`<script id="rill-initial">`: the conversations and the
//! window), read first, and the messages before the window
//! (`<script id="rill-earlier">`), read when the part of the page that shows
//! them hydrates ([`earlier_from_page`]): a conversation of a thousand
//! messages costs the page's first task what one of twenty does.

use rill_protocol::conversations::{ConversationDetail, ConversationMessage, ConversationSummary};
use serde::{Deserialize, Serialize};

/// The id of the `<script type="application/json">` holding [`InitialChat`]
/// (the open conversation's window of messages only).
pub const INITIAL_ID: &str = "rill-initial";

/// The id of the `<script type="application/json">` holding the open
/// conversation's messages before its window (a JSON array).
pub const EARLIER_ID: &str = "rill-earlier";

/// The page's starting data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InitialChat {
    /// The caller's conversations, newest first (first page).
    pub conversations: Vec<ConversationSummary>,
    /// The cursor of the next (older) page, if there is one.
    #[serde(default)]
    pub next: Option<String>,
    /// The conversation in the URL (`/c/{id}`), with its messages.
    pub current: Option<ConversationDetail>,
    /// Why the conversation in the URL could not be opened.
    pub problem: Option<String>,
}

impl InitialChat {
    /// The JSON for the page: this with the open conversation's window of
    /// messages only, and the messages before it; both safe inside
    /// `<script>` (no `</` sequence). Takes the data: the page renders from
    /// its own copy, and a long conversation is not copied again to split it.
    pub fn into_script_json(self) -> (String, String) {
        let mut window = self;
        let earlier: Vec<ConversationMessage> = match window.current.as_mut() {
            Some(current) => {
                let start = crate::chat::window_start(&current.messages);
                current.messages.drain(..start).collect()
            }
            None => Vec::new(),
        };
        (script_json(&window, "{}"), script_json(&earlier, "[]"))
    }
}

/// `value` as JSON safe inside `<script>`, `otherwise` if it cannot be.
fn script_json<T: Serialize>(value: &T, otherwise: &str) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| otherwise.to_owned())
        .replace("</", "<\\/")
}

/// The starting data: from the rendering context on the server (the whole
/// conversation), from the page in the browser (its window of messages; none
/// in the static build).
pub fn initial_chat() -> InitialChat {
    #[cfg(feature = "browser")]
    {
        from_page(INITIAL_ID).unwrap_or_default()
    }
    #[cfg(not(feature = "browser"))]
    {
        leptos::prelude::use_context::<InitialChat>().unwrap_or_default()
    }
}

/// The open conversation's messages before its window, embedded in the page
/// (none on the server, where [`initial_chat`] has them all, and in the
/// static build).
pub fn earlier_from_page() -> Vec<ConversationMessage> {
    #[cfg(feature = "browser")]
    {
        from_page(EARLIER_ID).unwrap_or_default()
    }
    #[cfg(not(feature = "browser"))]
    {
        Vec::new()
    }
}

/// The JSON in the page's `<script id=…>`, if there is one and it parses.
#[cfg(feature = "browser")]
fn from_page<T: serde::de::DeserializeOwned>(id: &str) -> Option<T> {
    let script = leptos::prelude::document().get_element_by_id(id)?;
    let json = script.text_content()?;
    // Read once: its text is no longer needed on the page.
    script.remove();
    serde_json::from_str(&json).ok()
}
