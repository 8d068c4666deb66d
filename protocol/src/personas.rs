//! Personas as clients see them (`GET /api/v1/personas`), and what routing
//! reports about the persona it chose.

use serde::{Deserialize, Serialize};

/// The persona id that asks the server to choose who answers.
pub const AUTO_PERSONA: &str = "auto";

/// One persona a client may ask for. Its system prompt stays on the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaInfo {
    /// What clients send as `persona_id`.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// What it is good at (routing reads it too).
    pub description: String,
    /// The model it answers with when a request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Its sampling temperature when a request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

/// The answer of `GET /api/v1/personas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaList {
    /// Every persona, built-ins first, in a stable order.
    pub personas: Vec<PersonaInfo>,
    /// The persona that answers when a request names none.
    pub default: String,
    /// The id that lets the server choose (`"auto"`).
    pub auto: String,
}

/// How the persona of a `persona_id: "auto"` question was chosen
/// (`complete.metadata.routing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    /// Who chose: `keywords` (the server's own scorer over the personas'
    /// descriptions) or `model` (a classification call to the provider).
    pub method: String,
    /// Why the default persona answers instead of a chosen one, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}
