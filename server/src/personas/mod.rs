//! Personas: who answers a question, with which instructions. Built-ins
//! (seed 002's `tech_enthusiast`, `creative_writer`, `data_scientist`, and a
//! plain `assistant`) plus those of `--personas FILE` (TOML, validated at
//! startup: a mistake names its line and field). [`route`] chooses one for
//! `persona_id: "auto"`.

mod file;
pub mod route;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rill_protocol::client::DEFAULT_PERSONA;
use rill_protocol::{AUTO_PERSONA, PersonaInfo, PersonaList};

pub use file::PersonaFileError;
pub use route::{Choice, Router};

/// One persona.
#[derive(Debug, Clone, PartialEq)]
pub struct Persona {
    /// What clients send as `persona_id`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it is good at; shown to users and read by the router.
    pub description: String,
    /// Its instructions, first in every prompt it answers.
    pub system_prompt: String,
    /// Its model when a request names none.
    pub model: Option<String>,
    /// Its temperature when a request names none.
    pub temperature: Option<f64>,
    /// Extra words the router matches questions against (besides the
    /// description and name).
    pub keywords: Vec<String>,
}

impl Persona {
    /// What clients may see of it.
    pub fn info(&self) -> PersonaInfo {
        PersonaInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            model: self.model.clone(),
            temperature: self.temperature,
        }
    }
}

/// Every persona this server offers, in a stable order (built-ins first,
/// then the file's in its order; a file entry with a built-in's id replaces it
/// in place).
///
/// Cheap to clone (one shared, immutable registry): every connection's
/// state holds a clone.
#[derive(Debug, Clone)]
pub struct Personas(Arc<Registry>);

/// What [`Personas`] shares.
#[derive(Debug)]
struct Registry {
    /// In order.
    list: Vec<Arc<Persona>>,
    /// Index into `list` by id.
    by_id: HashMap<String, usize>,
    /// The keyword scorer over `list`, built once.
    router: Router,
}

impl Personas {
    /// The built-in personas only.
    pub fn builtin() -> Self {
        Self::from_list(builtins())
    }

    /// The built-ins plus the personas of `file`, if given. Errors name the
    /// file, the line and the field.
    pub fn load(file: Option<&Path>) -> Result<Self, PersonaFileError> {
        let mut list = builtins();
        if let Some(path) = file {
            for persona in file::read(path)? {
                match list.iter_mut().find(|p| p.id == persona.id) {
                    Some(builtin) => *builtin = persona,
                    None => list.push(persona),
                }
            }
        }
        Ok(Self::from_list(list))
    }

    fn from_list(list: Vec<Persona>) -> Self {
        let list: Vec<Arc<Persona>> = list.into_iter().map(Arc::new).collect();
        let by_id = list
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        let router = Router::new(&list);
        Personas(Arc::new(Registry {
            list,
            by_id,
            router,
        }))
    }

    /// The persona `id`, if this server has it.
    pub fn get(&self, id: &str) -> Option<&Arc<Persona>> {
        self.0.by_id.get(id).map(|&i| &self.0.list[i])
    }

    /// The persona that answers when none is named, and when routing fails.
    pub fn default_persona(&self) -> &Arc<Persona> {
        // Always present: a file may redefine `assistant` but not remove it.
        self.get(DEFAULT_PERSONA).unwrap_or(&self.0.list[0])
    }

    /// Every persona, in order.
    pub fn all(&self) -> &[Arc<Persona>] {
        &self.0.list
    }

    /// The keyword scorer over these personas.
    pub fn router(&self) -> &Router {
        &self.0.router
    }

    /// What `GET /api/v1/personas` answers.
    pub fn list(&self) -> PersonaList {
        PersonaList {
            personas: self.0.list.iter().map(|p| p.info()).collect(),
            default: DEFAULT_PERSONA.to_owned(),
            auto: AUTO_PERSONA.to_owned(),
        }
    }

    /// Checks that every id names a persona (or `auto`): `Err` names the first
    /// unknown one.
    pub fn check<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        for id in ids {
            if id != AUTO_PERSONA && self.get(id).is_none() {
                let known: Vec<&str> = self.0.list.iter().map(|p| p.id.as_str()).collect();
                return Err(format!(
                    "unknown persona_id {:?}: this server has {} (or \"auto\" to let it choose)",
                    id.chars().take(64).collect::<String>(),
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// The built-in personas.
fn builtins() -> Vec<Persona> {
    let persona =
        |id: &str, name: &str, description: &str, prompt: &str, keywords: &[&str]| Persona {
            id: id.into(),
            name: name.into(),
            description: description.into(),
            system_prompt: prompt.into(),
            model: None,
            temperature: None,
            keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
        };
    vec![
        persona(
            DEFAULT_PERSONA,
            "Assistant",
            "A plain, helpful assistant for everyday questions: clear, neutral and to the point.",
            "You are a helpful assistant in a chat. Answer clearly and concisely in Markdown.",
            &["help", "explain", "how", "what", "advice", "general"],
        ),
        persona(
            "tech_enthusiast",
            "Tech Enthusiast",
            "Excited about technology: programming languages, software, gadgets, computers, the web and new tools.",
            "You are a tech enthusiast who loves programming, software, gadgets and new tools. \
             Answer with energy and concrete technical detail, in Markdown.",
            &[
                "code",
                "coding",
                "programming",
                "language",
                "rust",
                "python",
                "javascript",
                "software",
                "computer",
                "gadget",
                "app",
                "web",
                "framework",
                "api",
                "server",
                "linux",
                "ai",
                "tech",
                "technology",
                "developer",
                "database",
                "bug",
            ],
        ),
        persona(
            "creative_writer",
            "Creative Writer",
            "A storyteller: stories, poems, metaphors, characters, imagination and vivid language.",
            "You are a creative writer. Answer with imagery, metaphor and a storyteller's voice, in Markdown.",
            &[
                "story",
                "stories",
                "poem",
                "poetry",
                "write",
                "writing",
                "character",
                "novel",
                "imagine",
                "creative",
                "metaphor",
                "fiction",
                "plot",
                "dream",
                "art",
                "song",
                "lyrics",
                "fantasy",
            ],
        ),
        persona(
            "data_scientist",
            "Data Scientist",
            "Thinks in data: statistics, numbers, measurement, experiments, machine learning models and charts.",
            "You are a data scientist. Answer with evidence, numbers, measurement and caveats, in Markdown.",
            &[
                "data",
                "statistics",
                "statistic",
                "average",
                "mean",
                "median",
                "probability",
                "experiment",
                "measure",
                "metric",
                "model",
                "regression",
                "dataset",
                "chart",
                "graph",
                "trend",
                "percent",
                "sample",
                "analysis",
                "analyze",
                "correlation",
                "learning",
                "prediction",
                "number",
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_have_the_seed_ids_and_a_default() {
        let personas = Personas::builtin();
        for id in [
            "assistant",
            "tech_enthusiast",
            "creative_writer",
            "data_scientist",
        ] {
            assert!(personas.get(id).is_some(), "{id}");
        }
        assert_eq!(personas.default_persona().id, "assistant");
        let list = personas.list();
        assert_eq!(list.personas.len(), 4);
        assert_eq!(list.auto, "auto");
    }

    #[test]
    fn unknown_ids_are_named() {
        let personas = Personas::builtin();
        assert!(personas.check(["auto", "data_scientist"]).is_ok());
        let error = personas.check(["assistant", "pirate"]).unwrap_err();
        assert!(error.contains("\"pirate\""), "{error}");
        assert!(error.contains("tech_enthusiast"), "{error}");
    }
}
