//! The UI's components, one per file.

pub mod chat_page;
pub mod composer;
pub mod deferred;
pub mod documents;
pub mod earlier;
pub mod jump;
pub mod later;
pub mod message;
pub mod modal;
pub mod model_picker;
pub mod notices;
pub mod persona_picker;
pub mod search;
pub mod share;
pub mod shortcuts;
pub mod sidebar;
pub mod status_badge;
