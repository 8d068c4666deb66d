//! What the page starts with: the caller's conversations and the open one. The
//! server loads it, provides it as context for rendering, and embeds it in the
//! page as JSON (`<script id="rill-initial">`), which the browser reads before
//! hydrating, so both render the same history.

use rill_protocol::conversations::{ConversationDetail, ConversationSummary};
use serde::{Deserialize, Serialize};

/// The id of the `<script type="application/json">` holding [`InitialChat`].
pub const INITIAL_ID: &str = "rill-initial";

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
    /// The JSON for the page, safe inside `<script>` (no `</` sequence).
    pub fn to_script_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| "{}".to_owned())
            .replace("</", "<\\/")
    }
}

/// The starting data: from the rendering context on the server, from the page
/// in the browser (none in the static build).
pub fn initial_chat() -> InitialChat {
    #[cfg(feature = "browser")]
    {
        leptos::prelude::document()
            .get_element_by_id(INITIAL_ID)
            .and_then(|script| script.text_content())
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default()
    }
    #[cfg(not(feature = "browser"))]
    {
        leptos::prelude::use_context::<InitialChat>().unwrap_or_default()
    }
}
