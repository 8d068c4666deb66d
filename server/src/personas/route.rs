//! Routing for `persona_id: "auto"`: the server's own scorer, BM25 over each
//! persona's name, description and keywords. Deterministic and offline (the
//! demo provider and any provider without a classifier use it).
//!
//! Confidence is the softmax of the personas' scores: the chosen persona's
//! share, so it is high when one persona clearly matches and near `1/n` when
//! several match alike. A question that matches no persona at all goes to the
//! default persona with the reason, and confidence 0.

use std::collections::HashMap;
use std::sync::Arc;

use super::Persona;

/// BM25 term-frequency saturation.
const K1: f64 = 1.2;
/// BM25 length normalisation.
const B: f64 = 0.75;

/// Words too common to say anything about who should answer.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "do", "does", "for",
    "from", "had", "has", "have", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of",
    "on", "or", "our", "so", "that", "the", "their", "them", "then", "there", "these", "they",
    "this", "to", "us", "was", "we", "were", "which", "who", "will", "with", "would", "you",
    "your", "about", "tell", "please", "some", "any", "all", "i'm", "im", "should", "than", "just",
    "like", "get", "make", "give", "want", "know",
];

/// The persona routing chose, and how sure it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The persona that answers.
    pub persona_id: String,
    /// How sure the router is (0–1).
    pub confidence: f64,
    /// Who chose (`keywords`, `model`).
    pub method: &'static str,
    /// Why the default persona answers, when routing could not choose.
    pub fallback_reason: Option<String>,
}

/// One persona's text, as term counts.
#[derive(Debug)]
struct Document {
    /// The persona.
    id: String,
    /// Term counts.
    terms: HashMap<String, u32>,
    /// Terms in all.
    length: usize,
}

/// The keyword scorer over a set of personas.
#[derive(Debug)]
pub struct Router {
    /// One per persona, in the personas' order.
    documents: Vec<Document>,
    /// In how many documents each term appears.
    document_frequency: HashMap<String, usize>,
    /// Mean document length.
    average_length: f64,
}

impl Router {
    /// A scorer over `personas`.
    pub fn new(personas: &[Arc<Persona>]) -> Self {
        let documents: Vec<Document> = personas
            .iter()
            .map(|persona| {
                let mut terms = HashMap::new();
                let text = format!(
                    "{} {} {}",
                    persona.name,
                    persona.description,
                    persona.keywords.join(" ")
                );
                let words = terms_of(&text);
                let length = words.len();
                for word in words {
                    *terms.entry(word).or_insert(0) += 1;
                }
                Document {
                    id: persona.id.clone(),
                    terms,
                    length,
                }
            })
            .collect();
        let mut document_frequency: HashMap<String, usize> = HashMap::new();
        for document in &documents {
            for term in document.terms.keys() {
                *document_frequency.entry(term.clone()).or_insert(0) += 1;
            }
        }
        let total: usize = documents.iter().map(|d| d.length).sum();
        let average_length = total as f64 / documents.len().max(1) as f64;
        Router {
            documents,
            document_frequency,
            average_length: average_length.max(1.0),
        }
    }

    /// Each persona's BM25 score for `question`, in the personas' order.
    pub fn scores(&self, question: &str) -> Vec<(String, f64)> {
        let mut query = terms_of(question);
        query.sort_unstable();
        query.dedup();
        let n = self.documents.len() as f64;
        self.documents
            .iter()
            .map(|document| {
                let score = query
                    .iter()
                    .filter_map(|term| {
                        let tf = f64::from(*document.terms.get(term)?);
                        let df = *self.document_frequency.get(term)? as f64;
                        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                        let norm =
                            K1 * (1.0 - B + B * document.length as f64 / self.average_length);
                        Some(idf * tf * (K1 + 1.0) / (tf + norm))
                    })
                    .sum();
                (document.id.clone(), score)
            })
            .collect()
    }

    /// The persona for `question`: the best score, its softmax share as the
    /// confidence; `default_id` with the reason if nothing matches.
    pub fn choose(&self, question: &str, default_id: &str) -> Choice {
        let scores = self.scores(question);
        let best = scores
            .iter()
            .enumerate()
            // The first of equal scores: the personas' order breaks ties.
            .fold(None::<(usize, f64)>, |best, (i, (_, score))| match best {
                Some((_, top)) if top >= *score => best,
                _ => Some((i, *score)),
            });
        let softmax = |i: usize| {
            let top = scores.iter().map(|(_, s)| *s).fold(f64::MIN, f64::max);
            let total: f64 = scores.iter().map(|(_, s)| (s - top).exp()).sum();
            (scores[i].1 - top).exp() / total
        };
        match best {
            Some((i, score)) if score > 0.0 => Choice {
                persona_id: scores[i].0.clone(),
                confidence: round(softmax(i)),
                method: "keywords",
                fallback_reason: None,
            },
            _ => Choice {
                persona_id: default_id.to_owned(),
                // Not a choice: no confidence in it.
                confidence: 0.0,
                method: "keywords",
                fallback_reason: Some(
                    "no persona's description or keywords match the question".into(),
                ),
            },
        }
    }
}

/// Three decimals: enough to compare, stable to print.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The words of `text` that say something: lower case, without stopwords,
/// with plural and verb endings cut so "stories" meets "story".
fn terms_of(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

/// A light suffix cut (no dictionary): enough to match the forms of a word.
fn stem(word: &str) -> String {
    let cut = |suffix: &str, min: usize, replace: &str| {
        (word.len() >= min && word.ends_with(suffix))
            .then(|| format!("{}{replace}", &word[..word.len() - suffix.len()]))
    };
    cut("ies", 5, "y")
        .or_else(|| cut("ing", 6, ""))
        .or_else(|| cut("ed", 5, ""))
        .or_else(|| (!word.ends_with("ss")).then(|| cut("s", 4, "")).flatten())
        .unwrap_or_else(|| word.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personas::Personas;

    fn choose(question: &str) -> Choice {
        let personas = Personas::builtin();
        personas.router().choose(question, "assistant")
    }

    #[test]
    fn questions_go_to_the_persona_whose_description_they_match() {
        assert_eq!(
            choose("Which programming language should I learn for web servers?").persona_id,
            "tech_enthusiast"
        );
        assert_eq!(
            choose("Write me a short poem about the sea").persona_id,
            "creative_writer"
        );
        assert_eq!(
            choose("How do I compute the median and average of my dataset?").persona_id,
            "data_scientist"
        );
    }

    #[test]
    fn confidence_is_the_softmax_share_and_grows_with_evidence() {
        let weak = choose("a poem");
        let strong = choose("a poem, a story and a character for my fantasy novel");
        assert_eq!(weak.persona_id, "creative_writer");
        assert_eq!(strong.persona_id, "creative_writer");
        assert!(
            weak.confidence > 0.25 && weak.confidence < strong.confidence,
            "{weak:?} {strong:?}"
        );
        assert!(strong.confidence <= 1.0);
        // The same question, the same answer.
        assert_eq!(choose("a poem"), weak);
        let scores = Personas::builtin().router().scores("a poem");
        let top = scores.iter().map(|s| s.1).fold(f64::MIN, f64::max);
        let total: f64 = scores.iter().map(|s| (s.1 - top).exp()).sum();
        assert_eq!(weak.confidence, round(1.0 / total));
    }

    #[test]
    fn nothing_matching_falls_back_with_the_reason() {
        let choice = choose("zzz qqq");
        assert_eq!(choice.persona_id, "assistant");
        assert_eq!(choice.confidence, 0.0);
        assert!(choice.fallback_reason.unwrap().contains("match"));
        assert_eq!(choose("").persona_id, "assistant");
    }

    #[test]
    fn stems_meet() {
        assert_eq!(stem("stories"), "story");
        assert_eq!(stem("programming"), "programm");
        assert_eq!(stem("programs"), "program");
        assert_eq!(stem("class"), "class");
        assert_eq!(terms_of("The Stories, of AI!"), vec!["story", "ai"]);
    }
}
