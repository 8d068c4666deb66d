//! The `--prices` file: what each model costs, so every reply and every
//! conversation shows its cost. TOML, read once at startup; a mistake stops
//! startup with the file and the line.
//!
//! ```toml
//! currency = "USD"               # optional, USD by default: shown with costs
//!
//! [[price]]
//! model = "gpt-4o-mini"          # the model name as replies report it
//! input_per_million = 0.15       # per million prompt tokens
//! output_per_million = 0.60      # per million reply tokens
//! ```
//!
//! Models missing from the file have no cost shown (their tokens still are).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rill_protocol::{Cost, Usage};
use serde::Deserialize;

/// Largest file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why the prices file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("prices file {}: {message}", path.display())]
pub struct PriceFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (with the line, where the TOML parser knows it).
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    currency: Option<String>,
    #[serde(default)]
    price: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    model: String,
    input_per_million: f64,
    output_per_million: f64,
}

/// Prices per model (per million tokens in and out) and their currency.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices {
    currency: String,
    by_model: HashMap<String, (f64, f64)>,
}

impl Prices {
    /// No prices: no cost is ever shown.
    pub fn none() -> Self {
        Prices {
            currency: "USD".to_owned(),
            by_model: HashMap::new(),
        }
    }

    /// The prices of the file at `path`, or none without one.
    pub fn load(path: Option<&Path>) -> Result<Self, PriceFileError> {
        let Some(path) = path else {
            return Ok(Self::none());
        };
        let fail = |message: String| PriceFileError {
            path: path.to_owned(),
            message,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| fail(format!("cannot read it: {e}")))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(fail(format!(
                "it is {size} bytes; at most {MAX_FILE_BYTES} are read"
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        Self::parse(&text).map_err(fail)
    }

    /// The prices of a file's text; the error says what and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let document: Document = toml::from_str(text).map_err(|e| e.to_string())?;
        let currency = document.currency.unwrap_or_else(|| "USD".to_owned());
        if currency.trim().is_empty()
            || currency.chars().count() > 8
            || currency.chars().any(char::is_control)
        {
            return Err("`currency` must be 1 to 8 characters, such as \"USD\"".to_owned());
        }
        let mut by_model = HashMap::new();
        for (index, entry) in document.price.into_iter().enumerate() {
            let which = format!("price #{} ({:?})", index + 1, entry.model);
            if entry.model.trim().is_empty() {
                return Err(format!("price #{}: `model` is empty", index + 1));
            }
            for (field, value) in [
                ("input_per_million", entry.input_per_million),
                ("output_per_million", entry.output_per_million),
            ] {
                if !value.is_finite() || value < 0.0 {
                    return Err(format!(
                        "{which}: `{field}` must be a number of at least 0, not {value}"
                    ));
                }
            }
            if by_model
                .insert(
                    entry.model.clone(),
                    (entry.input_per_million, entry.output_per_million),
                )
                .is_some()
            {
                return Err(format!("{which}: this model is priced twice"));
            }
        }
        Ok(Prices { currency, by_model })
    }

    /// What `usage` of `model` costs, if the model has a price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<Cost> {
        let (input, output) = self.by_model.get(model)?;
        Some(Cost {
            amount: (f64::from(usage.prompt_tokens) * input
                + f64::from(usage.completion_tokens) * output)
                / 1_000_000.0,
            currency: self.currency.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(prompt: u32, completion: u32) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            estimated: false,
        }
    }

    #[test]
    fn a_reply_costs_its_tokens_at_its_models_price() {
        let prices = Prices::parse(
            "[[price]]\nmodel = \"m\"\ninput_per_million = 1.5\noutput_per_million = 6\n",
        )
        .unwrap();
        let cost = prices.cost("m", &usage(1_000, 500)).unwrap();
        assert_eq!(cost.currency, "USD");
        assert!((cost.amount - 0.0045).abs() < 1e-12, "{cost:?}");
        assert_eq!(prices.cost("other", &usage(1, 1)), None);
        assert_eq!(Prices::none().cost("m", &usage(1, 1)), None);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            (
                "[[price]]\nmodel = \"m\"\ninput_per_million = -1\noutput_per_million = 1\n",
                "at least 0",
            ),
            (
                "[[price]]\nmodel = \"\"\ninput_per_million = 1\noutput_per_million = 1\n",
                "`model` is empty",
            ),
            (
                "[[price]]\nmodel = \"m\"\ninput_per_million = 1\noutput_per_million = 1\n[[price]]\nmodel = \"m\"\ninput_per_million = 1\noutput_per_million = 1\n",
                "priced twice",
            ),
            ("[[price]]\nmodel = \"m\"\ninput = 1\n", "unknown field"),
            (
                "[[price]]\nmodel = \"m\"\ninput_per_million = 1\n",
                "output_per_million",
            ),
            ("currency = \"\"\n", "currency"),
            ("[[price]\n", "line 1"),
        ] {
            let error = Prices::parse(text).unwrap_err();
            assert!(error.contains(says), "{text:?} → {error}");
        }
    }

    #[test]
    fn an_unreadable_file_names_itself() {
        let error = Prices::load(Some(Path::new("/nonexistent/prices.toml"))).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("prices file /nonexistent/prices.toml: cannot read it"),
            "{error}"
        );
    }
}
