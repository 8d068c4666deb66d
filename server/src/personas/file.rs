//! The `--personas` file: TOML, one `[[persona]]` table per persona. Read
//! once at startup; every mistake stops startup with the file, line and field.
//!
//! ```toml
//! [[persona]]
//! id = "pirate"                 # required: a-z, 0-9, _ and -, at most 64
//! name = "Captain"              # optional: defaults to the id
//! description = "Sailing, ships and the sea"   # required
//! system_prompt = "You are a pirate. Answer in Markdown."  # required
//! model = "gpt-4o-mini"         # optional
//! temperature = 0.9             # optional, 0 to 2
//! keywords = ["ship", "sea"]    # optional: more words for routing
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::Persona;
use rill_protocol::AUTO_PERSONA;

/// Longest persona id, in characters.
const MAX_ID_CHARS: usize = 64;
/// Longest name or model, in characters.
const MAX_NAME_CHARS: usize = 128;
/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 1_000;
/// Longest system prompt, in characters.
const MAX_PROMPT_CHARS: usize = 16_000;
/// Largest file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why the personas file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("personas file {}{}{}: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default(), field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
pub struct PersonaFileError {
    /// The file.
    pub path: PathBuf,
    /// Where the mistake is (1-based), when known.
    pub line: Option<usize>,
    /// The field at fault, when one is.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    persona: Vec<Spanned<Entry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: Spanned<String>,
    name: Option<Spanned<String>>,
    description: Spanned<String>,
    system_prompt: Spanned<String>,
    model: Option<Spanned<String>>,
    temperature: Option<Spanned<f64>>,
    keywords: Option<Spanned<Vec<String>>>,
}

/// The personas of the file at `path`, validated.
pub(super) fn read(path: &Path) -> Result<Vec<Persona>, PersonaFileError> {
    let fail = |line: Option<usize>, field: Option<&str>, message: String| PersonaFileError {
        path: path.to_owned(),
        line,
        field: field.map(str::to_owned),
        message,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| fail(None, None, format!("cannot read it: {e}")))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(fail(
            None,
            None,
            format!("{size} bytes is more than the {MAX_FILE_BYTES} allowed"),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(None, None, format!("cannot read it: {e}")))?;
    parse(&text).map_err(|(span, field, message)| {
        fail(span.map(|s| line_of(&text, s.start)), field, message)
    })
}

/// Where a mistake is, the field at fault, and what it is.
type Mistake = (Option<Range<usize>>, Option<&'static str>, String);

fn parse(text: &str) -> Result<Vec<Persona>, Mistake> {
    let document: Document = toml::from_str(text).map_err(|e| {
        let field = unknown_field(e.message());
        (e.span(), field, e.message().trim().to_owned())
    })?;
    if document.persona.is_empty() {
        return Err((
            None,
            None,
            "it defines no persona: add [[persona]] tables".into(),
        ));
    }
    let mut personas: Vec<(Persona, Range<usize>)> = Vec::new();
    for entry in document.persona {
        let table = entry.span();
        let entry = entry.into_inner();
        let id = check_id(&entry.id)?;
        if let Some((_, first)) = personas.iter().find(|(p, _)| p.id == id) {
            return Err((
                Some(entry.id.span()),
                Some("id"),
                format!(
                    "persona {id:?} is defined twice (first at line {})",
                    line_of(text, first.start)
                ),
            ));
        }
        let name = match &entry.name {
            Some(name) => text_field(name, "name", MAX_NAME_CHARS)?,
            None => id.clone(),
        };
        let description = text_field(&entry.description, "description", MAX_DESCRIPTION_CHARS)?;
        let system_prompt = text_field(&entry.system_prompt, "system_prompt", MAX_PROMPT_CHARS)?;
        let model = entry
            .model
            .as_ref()
            .map(|m| text_field(m, "model", MAX_NAME_CHARS))
            .transpose()?;
        let temperature = match &entry.temperature {
            Some(t) if !(0.0..=2.0).contains(t.get_ref()) => {
                return Err((
                    Some(t.span()),
                    Some("temperature"),
                    format!("{} is not between 0 and 2", t.get_ref()),
                ));
            }
            Some(t) => Some(*t.get_ref()),
            None => None,
        };
        let keywords = match &entry.keywords {
            Some(words) if words.get_ref().iter().any(|w| w.trim().is_empty()) => {
                return Err((
                    Some(words.span()),
                    Some("keywords"),
                    "a keyword is empty".into(),
                ));
            }
            Some(words) => words.get_ref().clone(),
            None => Vec::new(),
        };
        personas.push((
            Persona {
                id,
                name,
                description,
                system_prompt,
                model,
                temperature,
                keywords,
            },
            table,
        ));
    }
    Ok(personas.into_iter().map(|(p, _)| p).collect())
}

fn check_id(id: &Spanned<String>) -> Result<String, Mistake> {
    let value = id.get_ref();
    let problem = if value.is_empty() {
        Some("is empty".to_owned())
    } else if value.chars().count() > MAX_ID_CHARS {
        Some(format!("is longer than {MAX_ID_CHARS} characters"))
    } else if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        Some("may only hold a-z, 0-9, _ and -".to_owned())
    } else if value == AUTO_PERSONA {
        Some("\"auto\" is reserved: it asks the server to choose".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => Err((Some(id.span()), Some("id"), format!("{value:?} {problem}"))),
        None => Ok(value.clone()),
    }
}

fn text_field(value: &Spanned<String>, field: &'static str, max: usize) -> Result<String, Mistake> {
    let text = value.get_ref().trim();
    if text.is_empty() {
        return Err((Some(value.span()), Some(field), "is empty".into()));
    }
    if text.chars().count() > max {
        return Err((
            Some(value.span()),
            Some(field),
            format!("is longer than {max} characters"),
        ));
    }
    Ok(text.to_owned())
}

/// The field serde named in an "unknown field" message, when it did.
fn unknown_field(message: &str) -> Option<&'static str> {
    // Only the fields this file has: a static name for the error's field.
    let known = [
        "id",
        "name",
        "description",
        "system_prompt",
        "model",
        "temperature",
        "keywords",
    ];
    let missing = message.strip_prefix("missing field `")?;
    let field = missing.split('`').next()?;
    known.into_iter().find(|k| *k == field)
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> (Option<usize>, Option<&'static str>, String) {
        let (span, field, message) = parse(text).expect_err("an error");
        (span.map(|s| line_of(text, s.start)), field, message)
    }

    const GOOD: &str = r#"
[[persona]]
id = "pirate"
description = "Sailing, ships and the sea"
system_prompt = "You are a pirate."
temperature = 0.9
keywords = ["ship"]

[[persona]]
id = "assistant"
name = "Helper"
description = "Plain"
system_prompt = "Be plain."
model = "small"
"#;

    #[test]
    fn a_good_file_reads_in_order_with_defaults() {
        let personas = parse(GOOD).unwrap();
        assert_eq!(personas.len(), 2);
        assert_eq!(personas[0].id, "pirate");
        assert_eq!(personas[0].name, "pirate");
        assert_eq!(personas[0].temperature, Some(0.9));
        assert_eq!(personas[0].keywords, vec!["ship".to_owned()]);
        assert_eq!(personas[1].model.as_deref(), Some("small"));
    }

    #[test]
    fn mistakes_name_their_line_and_field() {
        let bad_temperature = GOOD.replace("temperature = 0.9", "temperature = 3.5");
        assert_eq!(
            error(&bad_temperature),
            (
                Some(6),
                Some("temperature"),
                "3.5 is not between 0 and 2".into()
            )
        );
        let bad_id = GOOD.replace("\"pirate\"", "\"Pirate Captain\"");
        let (line, field, message) = error(&bad_id);
        assert_eq!((line, field), (Some(3), Some("id")));
        assert!(message.contains("a-z"), "{message}");
        let twice = GOOD.replace("\"assistant\"", "\"pirate\"");
        let (line, field, message) = error(&twice);
        assert_eq!((line, field), (Some(10), Some("id")));
        assert!(message.contains("first at line 2"), "{message}");
        let empty_prompt = GOOD.replace("\"Be plain.\"", "\"  \"");
        assert_eq!(
            error(&empty_prompt),
            (Some(13), Some("system_prompt"), "is empty".into())
        );
        let (line, _, message) = error(&GOOD.replace("model = ", "modle = "));
        assert_eq!(line, Some(14));
        assert!(message.contains("modle"), "{message}");
        let (_, field, message) = error(&GOOD.replace("description = \"Plain\"\n", ""));
        assert_eq!(field, Some("description"));
        assert!(message.contains("description"), "{message}");
        let (line, _, _) = error("[[persona]]\nid = \"x\"\ndescription = \n");
        assert_eq!(line, Some(3), "a syntax error has its line");
        let (_, _, message) = error("# nothing\n");
        assert!(message.contains("no persona"), "{message}");
        let (_, field, message) = error(&GOOD.replace("\"pirate\"", "\"auto\""));
        assert_eq!(field, Some("id"));
        assert!(message.contains("reserved"), "{message}");
    }

    #[test]
    fn the_error_text_says_file_line_and_field() {
        let error = PersonaFileError {
            path: "p.toml".into(),
            line: Some(6),
            field: Some("temperature".into()),
            message: "3.5 is not between 0 and 2".into(),
        };
        assert_eq!(
            error.to_string(),
            "personas file p.toml, line 6, field `temperature`: 3.5 is not between 0 and 2"
        );
    }
}
