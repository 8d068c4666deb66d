//! The `demo` provider: an offline, deterministic markdown reply that refers to the
//! question (paragraphs, a list, a fenced code block), streamed word by word.
//!
//! The same question always gives the same reply, so tests and benchmarks can
//! compare runs; different questions give different replies.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rill_protocol::{FinishReason, Usage};

use super::{Provider, ProviderError, ProviderEvent, ProviderRequest};

/// The offline demo provider.
#[derive(Debug, Clone)]
pub struct DemoProvider {
    /// Pause between tokens (0: as fast as the consumer reads).
    delay: Duration,
    /// Reply length in tokens.
    tokens: usize,
}

impl DemoProvider {
    /// A demo provider that streams `tokens` tokens with `delay` between them.
    pub fn new(delay: Duration, tokens: usize) -> Self {
        DemoProvider {
            delay,
            tokens: tokens.max(1),
        }
    }
}

impl Provider for DemoProvider {
    fn name(&self) -> &'static str {
        "demo"
    }

    fn default_model(&self) -> &str {
        "demo"
    }

    /// The demo answers whatever model a client names, and says so honestly.
    fn model_for(&self, _requested: Option<&str>) -> String {
        "demo".to_owned()
    }

    fn stream(
        &self,
        request: ProviderRequest,
    ) -> BoxStream<'static, Result<ProviderEvent, ProviderError>> {
        let question = request.question().to_owned();
        // About `tokens` words, ending where a sentence ends; cut exactly only when
        // the structured part alone is longer, or at the request's max_tokens.
        let all = split_tokens(&reply_text(&question, self.tokens));
        let structured = split_tokens(&reply_text(&question, 0)).len();
        let natural = if structured >= self.tokens {
            self.tokens
        } else {
            all.len()
        };
        let limit = request
            .max_tokens
            .map_or(natural, |max| (max as usize).min(natural));
        let cut_by_max_tokens = limit < natural;
        let tokens: Vec<String> = all.into_iter().take(limit).collect();
        let usage = Usage {
            prompt_tokens: count_u32(split_tokens(&question).len()),
            completion_tokens: count_u32(tokens.len()),
        };
        let finish_reason = if cut_by_max_tokens {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        let delay = self.delay;
        let words = futures::stream::iter(tokens.into_iter().enumerate()).then(
            move |(i, token)| async move {
                if i > 0 {
                    if delay.is_zero() {
                        // Let other tasks run on busy benchmarks.
                        if i % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    } else {
                        tokio::time::sleep(delay).await;
                    }
                }
                Ok(ProviderEvent::Token(token))
            },
        );
        let end = futures::stream::once(async move {
            Ok(ProviderEvent::Finished {
                finish_reason,
                usage: Some(usage),
            })
        });
        words.chain(end).boxed()
    }
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Splits text into word tokens, each carrying the whitespace before it, so the
/// concatenation of the tokens is exactly the text.
pub fn split_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for ch in text.chars() {
        if ch.is_whitespace() {
            if in_word {
                tokens.push(std::mem::take(&mut current));
                in_word = false;
            }
        } else {
            in_word = true;
        }
        current.push(ch);
    }
    if !current.is_empty() {
        match (in_word, tokens.last_mut()) {
            // Trailing whitespace belongs to the last word.
            (false, Some(last)) => last.push_str(&current),
            _ => tokens.push(current),
        }
    }
    tokens
}

/// FNV-1a: a stable hash (the same on every platform and run).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

const OPENINGS: [&str; 4] = [
    "Good question.",
    "Happy to help with that.",
    "Let's look at this together.",
    "Here is a short answer.",
];

const POINTS: [&str; 8] = [
    "Start from a small, concrete example and grow it step by step.",
    "Write down what you expect before you measure what happens.",
    "Keep the moving parts few: each one is something to debug later.",
    "Prefer the boring, well-documented tool over the clever one.",
    "Check the edge cases first: empty input, huge input, and bad input.",
    "Make it work, make it right, then make it fast — in that order.",
    "Automate the check you just did by hand, so it stays true.",
    "Read the error message twice; it usually says what is wrong.",
];

const FILLER: [&str; 6] = [
    "Streaming matters because people read as fast as the words arrive, and a reply that appears word by word feels alive instead of stuck.",
    "Every event in this reply carries a sequence number, so a client that loses its connection can ask for exactly what it missed.",
    "This text comes from rill's offline demo provider: point rill at an OpenAI-compatible endpoint to get answers from a real model.",
    "A good chat server keeps the stream in the server, not in the socket, so a dropped connection never loses a reply.",
    "Markdown keeps replies readable: paragraphs, lists and code blocks render the same in every client that speaks it.",
    "Bounded queues and clear error codes are what keep a server standing when clients misbehave.",
];

/// The question on one line, bounded, for quoting.
fn one_line(question: &str, max_chars: usize) -> String {
    let flat = question.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// The whole reply, long enough to cut `min_tokens` tokens from.
pub fn reply_text(question: &str, min_tokens: usize) -> String {
    let hash = fnv1a(question);
    let pick = |salt: u64, len: usize| {
        ((hash.rotate_left((salt * 13) as u32) ^ salt) % len as u64) as usize
    };
    // Backticks would let the question open or close code spans and fences.
    let quoted = one_line(question, 200).replace('`', "'");
    let topic = one_line(question, 48).replace('`', "'");
    let words = question.split_whitespace().count();
    let mut text = format!(
        "{} You asked: \"{quoted}\". This reply comes from the offline **demo** provider, so it is about your words rather than their meaning.\n\n",
        OPENINGS[pick(1, OPENINGS.len())]
    );
    text.push_str(&format!(
        "Three things worth keeping in mind about *{topic}*:\n\n"
    ));
    let first = pick(2, POINTS.len());
    for i in 0..3 {
        text.push_str(&format!("- {}\n", POINTS[(first + i * 3) % POINTS.len()]));
    }
    let code_topic = format!("{topic:?}");
    text.push_str(&format!(
        "\nA tiny example that counts the words of your question:\n\n```rust\nfn main() {{\n    let question = {code_topic};\n    let words = question.split_whitespace().count();\n    println!(\"{{words}} words\"); // {words}\n}}\n```\n"
    ));
    // Count as we go: re-splitting the whole text per sentence would be quadratic.
    let mut filler = pick(3, FILLER.len());
    let mut count = split_tokens(&text).len();
    while count < min_tokens {
        let sentence = FILLER[filler % FILLER.len()];
        text.push('\n');
        text.push_str(sentence);
        text.push('\n');
        count += sentence.split_whitespace().count();
        filler += 1;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ChatMessage, Role};

    fn request(question: &str, max_tokens: Option<u32>) -> ProviderRequest {
        ProviderRequest {
            model: "demo".into(),
            persona: "assistant".into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: question.into(),
            }],
            temperature: None,
            max_tokens,
        }
    }

    async fn collect(
        provider: &DemoProvider,
        request: ProviderRequest,
    ) -> (String, Vec<ProviderEvent>) {
        let events: Vec<_> = provider.stream(request).map(|e| e.unwrap()).collect().await;
        let text = events
            .iter()
            .filter_map(|e| match e {
                ProviderEvent::Token(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        (text, events)
    }

    #[test]
    fn tokens_concatenate_to_the_text() {
        for text in [
            "",
            "a",
            "  lead",
            "a b\n\nc  ",
            "x\ty\n- z\n```\ncode\n```\n",
        ] {
            assert_eq!(split_tokens(text).concat(), text);
        }
        assert_eq!(
            split_tokens("Hi there\n\n- a"),
            vec!["Hi", " there", "\n\n-", " a"]
        );
    }

    #[tokio::test]
    async fn reply_is_deterministic_refers_to_question_and_has_markdown() {
        let provider = DemoProvider::new(Duration::ZERO, 120);
        let (a, events) = collect(&provider, request("What is the engine power?", None)).await;
        let (b, _) = collect(&provider, request("What is the engine power?", None)).await;
        let (c, _) = collect(&provider, request("How do I bake bread?", None)).await;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.contains("What is the engine power?"));
        assert!(a.contains("\n- "), "a list");
        assert!(a.contains("```rust\n"), "a code block");
        assert!(a.contains("\n\n"), "paragraphs");
        let words = events.len() - 1;
        assert!((120..160).contains(&words), "about 120 words: {words}");
        assert!(
            a.trim_end().ends_with('.'),
            "ends where a sentence ends: {a}"
        );
        assert_eq!(
            events.last(),
            Some(&ProviderEvent::Finished {
                finish_reason: FinishReason::Stop,
                usage: Some(Usage {
                    prompt_tokens: 5,
                    completion_tokens: words as u32
                })
            })
        );
    }

    #[tokio::test]
    async fn reply_length_follows_configuration_and_max_tokens() {
        let provider = DemoProvider::new(Duration::ZERO, 2000);
        let (_, events) = collect(&provider, request("long", None)).await;
        assert!((2001..2040).contains(&events.len()));
        let short = DemoProvider::new(Duration::ZERO, 7);
        let (_, events) = collect(&short, request("long", None)).await;
        assert_eq!(
            events.len(),
            8,
            "shorter than the structured part: cut exactly"
        );
        let (_, events) = collect(&provider, request("long", Some(10))).await;
        assert_eq!(events.len(), 11);
        assert!(matches!(
            events.last(),
            Some(ProviderEvent::Finished {
                finish_reason: FinishReason::Length,
                ..
            })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_paced_by_the_delay() {
        let provider = DemoProvider::new(Duration::from_millis(25), 11);
        let started = tokio::time::Instant::now();
        // 11 words (cut inside the structured part): 10 pauses.
        collect(&provider, request("q", None)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }

    #[test]
    fn hostile_question_cannot_break_the_code_fence() {
        let text = reply_text("```\n<script>alert(1)</script>\"\\", 10);
        let fences = text.lines().filter(|l| l.starts_with("```")).count();
        assert_eq!(fences, 2, "{text}");
        assert_eq!(text.matches("```").count(), 2, "{text}");
    }
}
