//! The `demo` provider: an offline, deterministic markdown reply that refers to the
//! question (paragraphs, a list, a fenced code block), streamed word by word, in
//! the voice of the persona answering (each built-in persona sounds different).
//!
//! The same question always gives the same reply, so tests and benchmarks can
//! compare runs; different questions give different replies.

use std::fmt::Write as _;
use std::pin::Pin;
use std::time::Duration;

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
        let instructions = request
            .messages
            .first()
            .filter(|m| m.role == super::Role::System)
            .map(|m| m.content.as_str());
        // With sources, the reply opens with the best one's key sentence, cited.
        let cited = cited(&question, &request.sources).unwrap_or_default();
        // The cited sentence ends in whitespace and the reply starts with a
        // word, so their tokens add up.
        let cited_tokens = count_tokens(&cited);
        let (reply, reply_tokens) =
            persona_reply(&request.persona, instructions, &question, self.tokens);
        let mut text = cited;
        text.push_str(&reply);
        // About `tokens` words, ending where a sentence ends; cut exactly only when
        // the structured part alone is longer, or at the request's max_tokens.
        let structured = cited_tokens + reply_tokens.structured;
        let natural = if structured >= self.tokens {
            self.tokens
        } else {
            cited_tokens + reply_tokens.all
        };
        let limit = request
            .max_tokens
            .map_or(natural, |max| (max as usize).min(natural));
        let cut_by_max_tokens = limit < natural;
        let usage = Usage {
            prompt_tokens: count_u32(count_tokens(&question)),
            completion_tokens: count_u32(limit),
            estimated: false,
        };
        let finish_reason = if cut_by_max_tokens {
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        // The reply is kept whole and each token cut from it as it goes out:
        // a stream holds its text once, not one string per token.
        Box::pin(Words {
            text,
            at: 0,
            end: None,
            sent: 0,
            limit,
            delay: self.delay,
            pause: None,
            finish: Some((finish_reason, usage)),
        })
    }
}

/// A demo reply's stream: its tokens, each `delay` after the one before
/// (the first at once), then `Finished`. Written out rather than as an
/// `unfold` of an async block, which built and moved a new future for
/// every token (callgrind: about 70 instructions a token more, of some 950
/// the demo's stream costs, most of them its timer).
struct Words {
    /// The whole reply.
    text: String,
    /// Where the next token starts.
    at: usize,
    /// Where it ends, once found: found at the token's first poll, kept
    /// through its pause (or its turn given up), cleared when it is sent.
    end: Option<usize>,
    /// Tokens sent so far.
    sent: usize,
    /// Tokens to send in all.
    limit: usize,
    /// The pause between tokens.
    delay: Duration,
    /// One timer a reply, reset for each pause: a new one per token cost
    /// its registration with the runtime and its removal.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The end, until it is sent.
    finish: Option<(FinishReason, Usage)>,
}

impl futures::Stream for Words {
    type Item = Result<ProviderEvent, ProviderError>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        // Found once a token, not again at each poll of its pause.
        let first_poll = this.end.is_none();
        let end = match this.end {
            Some(end) => Some(end),
            None if this.sent < this.limit => Tokens {
                text: &this.text,
                at: this.at,
            }
            .next_end()
            .inspect(|&end| this.end = Some(end)),
            None => None,
        };
        let Some(end) = end else {
            return Poll::Ready(this.finish.take().map(|(finish_reason, usage)| {
                Ok(ProviderEvent::Finished {
                    finish_reason,
                    usage: Some(usage),
                })
            }));
        };
        if this.sent > 0 {
            if this.delay.is_zero() {
                // Let other tasks run on busy benchmarks: the task is woken
                // again at once, behind the tasks already ready.
                if this.sent.is_multiple_of(64) && first_poll {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            } else {
                if first_poll {
                    // The pause starts when the next token is asked for.
                    let until = tokio::time::Instant::now() + this.delay;
                    match &mut this.pause {
                        Some(pause) => pause.as_mut().reset(until),
                        None => this.pause = Some(Box::pin(tokio::time::sleep_until(until))),
                    }
                }
                if let Some(pause) = &mut this.pause
                    && pause.as_mut().poll(cx).is_pending()
                {
                    return Poll::Pending;
                }
            }
        }
        this.end = None;
        let token = this.text[this.at..end].to_owned();
        this.at = end;
        this.sent += 1;
        Poll::Ready(Some(Ok(ProviderEvent::Token(token))))
    }
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Splits text into word tokens, each carrying the whitespace before it, so the
/// concatenation of the tokens is exactly the text.
pub fn split_tokens(text: &str) -> Vec<String> {
    Tokens { text, at: 0 }.map(str::to_owned).collect()
}

/// How many tokens [`split_tokens`] makes of `text`, without making them:
/// one per word (a run without whitespace), and one for a text of whitespace
/// alone. Every reply's structured part is counted whole, so this is a pass
/// over bytes that the compiler vectorizes (a text with whitespace outside
/// ASCII, which is rare, goes by chars); finding each token's end, as
/// [`Tokens`] does, cost several times as much.
fn count_tokens(text: &str) -> usize {
    let bytes = text.as_bytes();
    let words = if has_unicode_space(bytes) {
        let mut words = 0;
        let mut in_word = false;
        for ch in text.chars() {
            let word = !ch.is_whitespace();
            words += usize::from(word && !in_word);
            in_word = word;
        }
        words
    } else {
        // Every byte of a char outside ASCII is then a word's. A word starts
        // at a byte that is not a space, after one that is (or at the start).
        let space = |byte: u8| byte == b' ' || byte.wrapping_sub(b'\t') <= b'\r' - b'\t';
        // Counted in bytes, a block at a time: a byte-wide count vectorizes
        // sixteen or more to an instruction, a usize-wide one did not.
        let first = bytes.first().map_or(0, |&byte| usize::from(!space(byte)));
        let after: &[u8] = bytes.get(1..).unwrap_or_default();
        let starts = |(before, now): (&[u8], &[u8])| {
            let found = before
                .iter()
                .zip(now)
                .fold(0_u8, |count, (&before, &byte)| {
                    count + u8::from(space(before) & !space(byte))
                });
            usize::from(found)
        };
        first
            + bytes
                .chunks(255)
                .zip(after.chunks(255))
                .map(starts)
                .sum::<usize>()
    };
    if words == 0 && !text.is_empty() {
        1
    } else {
        words
    }
}

/// Whether `bytes` (UTF-8) hold whitespace outside ASCII: U+0085, U+00A0,
/// U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F or U+3000, which
/// is all of it that [`char::is_whitespace`] knows.
fn has_unicode_space(bytes: &[u8]) -> bool {
    // Folds of bytes without a short cut, over the text zipped with itself
    // moved by one and by two: the compiler vectorizes them.
    let next: &[u8] = bytes.get(1..).unwrap_or_default();
    let third: &[u8] = bytes.get(2..).unwrap_or_default();
    let two = bytes.iter().zip(next).fold(0_u8, |found, (&lead, &byte)| {
        found | u8::from((lead == 0xC2) & ((byte == 0x85) | (byte == 0xA0)))
    });
    let three = bytes
        .iter()
        .zip(next)
        .zip(third)
        .fold(0_u8, |found, ((&lead, &second), &last)| {
            let e2 = lead == 0xE2;
            let space = ((lead == 0xE1) & (second == 0x9A) & (last == 0x80))
                | ((lead == 0xE3) & (second == 0x80) & (last == 0x80))
                | (e2 & (second == 0x81) & (last == 0x9F))
                | (e2
                    & (second == 0x80)
                    & ((last <= 0x8A) | (last == 0xA8) | (last == 0xA9) | (last == 0xAF)));
            found | u8::from(space)
        });
    (two | three) != 0
}

/// The tokens of `text` from byte `at` on, as slices: a token ends where
/// whitespace follows a word, and trailing whitespace belongs to the last.
struct Tokens<'a> {
    text: &'a str,
    at: usize,
}

impl Tokens<'_> {
    /// Where the next token ends (`None`: no text is left), without moving on.
    fn next_end(&self) -> Option<usize> {
        let rest = self.text.get(self.at..).filter(|rest| !rest.is_empty())?;
        let mut in_word = false;
        let mut i = 0;
        while i < rest.len() {
            // Bytes, not chars: nearly all text is ASCII; a multi-byte char
            // is decoded where it starts.
            let (whitespace, width) = match rest.as_bytes()[i] {
                b' ' | b'\t'..=b'\r' => (true, 1),
                byte if byte.is_ascii() => (false, 1),
                _ => rest[i..]
                    .chars()
                    .next()
                    .map_or((false, 1), |ch| (ch.is_whitespace(), ch.len_utf8())),
            };
            if !whitespace {
                in_word = true;
            } else if in_word {
                let end = self.at + i;
                let whitespace_only = self.text[end..].trim_start().is_empty();
                return Some(if whitespace_only {
                    self.text.len()
                } else {
                    end
                });
            }
            i += width;
        }
        Some(self.text.len())
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let end = self.next_end()?;
        let token = &self.text[self.at..end];
        self.at = end;
        Some(token)
    }
}

/// FNV-1a: a stable hash (the same on every platform and run).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How a persona sounds in the demo: its own openings, list, example and
/// closing sentences, so several personas answering one question are told
/// apart at a glance.
struct Voice {
    /// The first sentence (one picked per question).
    openings: &'static [&'static str],
    /// The line before the list; `{topic}` is the question's start.
    list_intro: &'static str,
    /// List items (three picked per question).
    points: &'static [&'static str],
    /// Sentences that lengthen the reply to the configured size.
    filler: &'static [&'static str],
    /// The persona's example after the list.
    example: fn(out: &mut String, topic: &str, words: usize, question: &str),
}

const ASSISTANT: Voice = Voice {
    openings: &[
        "Good question.",
        "Happy to help with that.",
        "Let's look at this together.",
        "Here is a short answer.",
    ],
    list_intro: "Three things worth keeping in mind about *{topic}*:",
    points: &[
        "Start from a small, concrete example and grow it step by step.",
        "Write down what you expect before you measure what happens.",
        "Keep the moving parts few: each one is something to debug later.",
        "Prefer the boring, well-documented tool over the clever one.",
        "Check the edge cases first: empty input, huge input, and bad input.",
        "Make it work, make it right, then make it fast — in that order.",
        "Automate the check you just did by hand, so it stays true.",
        "Read the error message twice; it usually says what is wrong.",
    ],
    filler: &[
        "Streaming matters because people read as fast as the words arrive, and a reply that appears word by word feels alive instead of stuck.",
        "Every event in this reply carries a sequence number, so a client that loses its connection can ask for exactly what it missed.",
        "This text comes from rill's offline demo provider: point rill at an OpenAI-compatible endpoint to get answers from a real model.",
        "A good chat server keeps the stream in the server, not in the socket, so a dropped connection never loses a reply.",
        "Markdown keeps replies readable: paragraphs, lists and code blocks render the same in every client that speaks it.",
        "Bounded queues and clear error codes are what keep a server standing when clients misbehave.",
    ],
    example: rust_example,
};

const TECH_ENTHUSIAST: Voice = Voice {
    openings: &[
        "Oh, I love this one! 🚀",
        "Great question — this is exactly the kind of thing I geek out about!",
        "Ooh, let's dig into the tech here!",
        "Yes! Time to nerd out a little.",
    ],
    list_intro: "Three things I would try right away for *{topic}*:",
    points: &[
        "Spin up a tiny prototype tonight: fifty lines of code beat a week of planning.",
        "Check the latest release notes — the newest version may already solve it.",
        "Profile before you optimise; the bottleneck is never where you think.",
        "Wire it into CI so the machine does the boring checks for you.",
        "Read the source: the best documentation is the code itself.",
        "Pick the tool with the liveliest community, so you are never stuck alone.",
        "Use a typed language for the core; the compiler is a free reviewer.",
        "Benchmark on real hardware, not on a hunch.",
    ],
    filler: &[
        "Honestly, the tooling around this keeps getting better every month, and that is what makes it so exciting to build with.",
        "Streaming tokens over a WebSocket is one of my favourite tricks: the reply feels instant even when the model is still thinking.",
        "If you try it, share a benchmark — numbers make every tech discussion better.",
        "This is the offline demo speaking, but plug in a real model and the same pipeline lights up.",
    ],
    example: rust_example,
};

const CREATIVE_WRITER: Voice = Voice {
    openings: &[
        "Picture this:",
        "Ah, a question to turn over in the hand like a smooth stone.",
        "Every question is the first line of a story.",
        "Once upon a time, someone asked exactly this.",
    ],
    list_intro: "Three threads to weave through *{topic}*:",
    points: &[
        "Begin with a single image, sharp enough to touch.",
        "Let the quiet moments speak louder than the loud ones.",
        "Give every character a secret, even the minor ones.",
        "Trust the reader to carry half of the story.",
        "End where the feeling is strongest, not where the plot runs out.",
        "Read it aloud: the ear catches what the eye forgives.",
        "Cut the sentence you love most, and see if the page breathes better.",
        "Find the metaphor hiding in the ordinary.",
    ],
    filler: &[
        "Words arrive one by one, like footsteps on a wooden stair, and the story builds with every step.",
        "Somewhere between the question and the answer there is a door, and this reply is only the light under it.",
        "This voice is the offline demo's daydream; a real model would write you a whole chapter.",
        "A reply that streams feels like a letter being written while you watch over the writer's shoulder.",
    ],
    example: verse_example,
};

const DATA_SCIENTIST: Voice = Voice {
    openings: &[
        "Let's look at the evidence.",
        "Short answer: it depends on the data, so here is how to find out.",
        "Good question; let's put numbers on it.",
        "Before we conclude anything, let's measure.",
    ],
    list_intro: "Three measurements worth taking about *{topic}*:",
    points: &[
        "Establish a baseline before you change anything.",
        "Look at the distribution, not only the mean: outliers hide in averages.",
        "Report an interval, not just a point estimate.",
        "Check the sample size; small samples make loud claims.",
        "Plot the raw data before fitting any model.",
        "Separate correlation from causation with a controlled experiment.",
        "Hold out a test set you never tune against.",
        "Write down the hypothesis before you look at the results.",
    ],
    filler: &[
        "In my experience, most surprising results turn out to be measurement errors, so verify the pipeline first.",
        "A dashboard is only as good as the question behind it: decide what decision the number will change.",
        "These figures come from the offline demo provider, computed from your question's words; a real model would reason about your data.",
        "Variance is information: when results disagree, the disagreement is often the most interesting finding.",
    ],
    example: statistics_example,
};

/// The voice of `persona` (the assistant's for personas without their own).
fn voice(persona: &str) -> &'static Voice {
    match persona {
        "tech_enthusiast" => &TECH_ENTHUSIAST,
        "creative_writer" => &CREATIVE_WRITER,
        "data_scientist" => &DATA_SCIENTIST,
        _ => &ASSISTANT,
    }
}

/// A tiny Rust program that counts the question's words.
fn rust_example(out: &mut String, topic: &str, words: usize, _question: &str) {
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "\nA tiny example that counts the words of your question:\n\n```rust\nfn main() {{\n    let question = {topic:?};\n    let words = question.split_whitespace().count();\n    println!(\"{{words}} words\"); // {words}\n}}\n```\n"
    );
}

/// A short verse about the question.
fn verse_example(out: &mut String, topic: &str, words: usize, _question: &str) {
    let _ = write!(
        out,
        "\nA small verse for you:\n\n> *{topic}*, you ask —\n> {words} words like lanterns on a string,\n> each one lit, then the next,\n> until the whole night reads.\n"
    );
}

/// Statistics of the question's words, as a table and the Python that computes them.
fn statistics_example(out: &mut String, topic: &str, words: usize, question: &str) {
    let (count, sum, longest) = question
        .split_whitespace()
        .map(|w| w.chars().count())
        .fold((0usize, 0usize, 0usize), |(n, sum, max), len| {
            (n + 1, sum + len, max.max(len))
        });
    let mean = if count == 0 {
        0.0
    } else {
        sum as f64 / count as f64
    };
    let _ = write!(
        out,
        "\nThe data we have is your question itself:\n\n| statistic | value |\n|---|---|\n| words | {words} |\n| mean word length | {mean:.2} |\n| longest word | {longest} |\n\n```python\nwords = {topic:?}.split()\nprint(len(words), sum(map(len, words)) / len(words))\n```\n"
    );
}

/// Appends `text` on one line for quoting: runs of whitespace as one space,
/// at most `max_chars` chars of that and then `…` if it was longer, and
/// backticks as quotes (they would open or close code spans and fences).
fn push_one_line(out: &mut String, text: &str, max_chars: usize) {
    let mut left = max_chars;
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            if left == 0 {
                out.push('…');
                return;
            }
            out.push(' ');
            left -= 1;
        }
        // A word that fits whole (bytes bound chars) is copied at once.
        if word.len() <= left && !word.contains('`') {
            out.push_str(word);
            left -= word.chars().count();
            continue;
        }
        for ch in word.chars() {
            if left == 0 {
                out.push('…');
                return;
            }
            out.push(if ch == '`' { '\'' } else { ch });
            left -= 1;
        }
    }
}

/// How a reply with sources opens: the sentence of the best source that
/// shares most words with the question, quoted, with the source's name and
/// its citation `[1]` (what the model is asked to do with real sources).
fn cited(question: &str, sources: &[rill_protocol::documents::Source]) -> Option<String> {
    let best = sources.first()?;
    let sentence = key_sentence(question, &best.content).replace('`', "'");
    let page = best
        .metadata
        .page
        .map(|p| format!(", page {p}"))
        .unwrap_or_default();
    Some(format!(
        "According to **{}**{page} [1]: \"{sentence}\"\n\n",
        best.metadata.filename.replace(['*', '`'], "")
    ))
}

/// The words of `text` that say something: lower case, three letters or
/// more, a plural's `s` dropped.
fn significant_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(|w| {
            let lower = w.to_lowercase();
            match lower.strip_suffix('s') {
                Some(stem) if stem.chars().count() >= 3 => stem.to_owned(),
                _ => lower,
            }
        })
        .collect()
}

/// The sentence of `passage` sharing most words with `question` (the first
/// of equals), on one line, at most 300 characters.
pub fn key_sentence(question: &str, passage: &str) -> String {
    let asked = significant_words(question);
    let mut sentences = Vec::new();
    let mut current = String::new();
    let mut chars = passage.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            sentences.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
        if matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|n| n.is_whitespace()) {
            sentences.push(std::mem::take(&mut current));
        }
    }
    sentences.push(current);
    let clean = |s: &str| {
        s.trim()
            .trim_start_matches(['#', '-', '*', '>', ' '])
            .trim()
            .to_owned()
    };
    let best = sentences
        .iter()
        .map(|s| clean(s))
        .filter(|s| !s.is_empty())
        .enumerate()
        .max_by_key(|(i, s)| {
            let words = significant_words(s);
            let shared = asked.iter().filter(|w| words.contains(w)).count();
            // A heading alone says less than a sentence sharing as much.
            let sentence = s.split_whitespace().count() >= 4;
            (shared, sentence, std::cmp::Reverse(*i))
        })
        .map(|(_, s)| s)
        .unwrap_or_default();
    if best.chars().count() > 300 {
        let cut: String = best.chars().take(299).collect();
        format!("{}…", cut.trim_end())
    } else {
        best
    }
}

pub fn reply_text(question: &str, min_tokens: usize) -> String {
    persona_reply_text("assistant", None, question, min_tokens)
}

/// The whole reply of `persona` in its voice. A persona without a voice of its
/// own (from a `--personas` file) answers in the assistant's, introduced by
/// its id and instructions (`system_prompt`) so it is still told apart.
pub fn persona_reply_text(
    persona: &str,
    system_prompt: Option<&str>,
    question: &str,
    min_tokens: usize,
) -> String {
    persona_reply(persona, system_prompt, question, min_tokens).0
}

/// How many tokens a reply has: its structured part (before the filler
/// sentences) and all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReplyTokens {
    structured: usize,
    all: usize,
}

/// [`persona_reply_text`], with its token counts (counted as it is built,
/// not by splitting it again).
fn persona_reply(
    persona: &str,
    system_prompt: Option<&str>,
    question: &str,
    min_tokens: usize,
) -> (String, ReplyTokens) {
    let voice = voice(persona);
    let hash = fnv1a(question);
    let pick = |salt: u64, len: usize| {
        ((hash.rotate_left((salt * 13) as u32) ^ salt) % len as u64) as usize
    };
    let mut topic = String::new();
    push_one_line(&mut topic, question, 48);
    let words = question.split_whitespace().count();
    // Written in place, no piece built apart; about the size it grows to.
    let mut text = String::with_capacity(512 + 7 * min_tokens);
    if std::ptr::eq(voice, &ASSISTANT) && persona != "assistant" {
        text.push('*');
        text.push_str(persona);
        text.push_str("* — ");
        push_one_line(&mut text, system_prompt.unwrap_or_default(), 120);
        text.push_str("\n\n");
    }
    text.push_str(voice.openings[pick(1, voice.openings.len())]);
    text.push_str(" You asked: \"");
    push_one_line(&mut text, question, 200);
    text.push_str(
        "\". This reply comes from the offline **demo** provider, so it is about your words \
         rather than their meaning.\n\n",
    );
    let mut intro = voice.list_intro;
    while let Some((before, after)) = intro.split_once("{topic}") {
        text.push_str(before);
        text.push_str(&topic);
        intro = after;
    }
    text.push_str(intro);
    text.push_str("\n\n");
    let first = pick(2, voice.points.len());
    for i in 0..3 {
        text.push_str("- ");
        text.push_str(voice.points[(first + i * 3) % voice.points.len()]);
        text.push('\n');
    }
    (voice.example)(&mut text, &topic, words, question);
    // Count as we go: re-splitting the whole text per sentence would be quadratic.
    let mut filler = pick(3, voice.filler.len());
    let structured = count_tokens(&text);
    let mut count = structured;
    while count < min_tokens {
        let sentence = voice.filler[filler % voice.filler.len()];
        text.push('\n');
        text.push_str(sentence);
        text.push('\n');
        count += sentence.split_whitespace().count();
        filler += 1;
    }
    (
        text,
        ReplyTokens {
            structured,
            all: count,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ChatMessage, Role};
    use futures::StreamExt;

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
            tools: Vec::new(),
            include_reasoning: false,
            sources: Vec::new(),
        }
    }

    #[test]
    fn the_key_sentence_is_the_one_sharing_most_words() {
        let passage = "## Refunds\nOur shop is friendly. Refunds are paid within 14 days of a request! \
                       Shipping takes a week.";
        assert_eq!(
            key_sentence("How long do refunds take?", passage),
            "Refunds are paid within 14 days of a request!"
        );
        // Nothing shared: the first whole sentence.
        assert_eq!(key_sentence("zebra", passage), "Our shop is friendly.");
        assert!(key_sentence("x", &"long ".repeat(200)).chars().count() <= 300);
    }

    #[tokio::test]
    async fn with_sources_the_reply_quotes_and_cites_the_best() {
        let mut asked = request("When are refunds paid?", None);
        asked.sources = vec![rill_protocol::documents::Source {
            id: "d:2".into(),
            content: "Shipping is free. Refunds are paid within 14 days.".into(),
            metadata: rill_protocol::documents::SourceMetadata {
                document_id: "d".into(),
                filename: "handbook.pdf".into(),
                page: Some(2),
            },
            score: 3.2,
        }];
        let provider = DemoProvider::new(Duration::ZERO, 40);
        let text: String = provider
            .stream(asked)
            .filter_map(|e| async move {
                match e {
                    Ok(ProviderEvent::Token(t)) => Some(t),
                    _ => None,
                }
            })
            .collect()
            .await;
        assert!(
            text.starts_with(
                "According to **handbook.pdf**, page 2 [1]: \"Refunds are paid within 14 days.\""
            ),
            "{text}"
        );
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
    fn a_reply_counts_its_tokens_as_a_split_of_it_would() {
        let sources = vec![rill_protocol::documents::Source {
            id: "d:1".into(),
            content: "Refunds are paid within 14 days.".into(),
            metadata: rill_protocol::documents::SourceMetadata {
                document_id: "d".into(),
                filename: "handbook.pdf".into(),
                page: None,
            },
            score: 1.0,
        }];
        for persona in ["assistant", "data_scientist", "rust_expert", "pirate"] {
            for question in ["Why?", "  How do  I\nsort a `Vec`?  ", "ünïcødé ✓ question"] {
                for min_tokens in [0, 1, 40, 200, 1000] {
                    let (text, counted) =
                        persona_reply(persona, Some("Be brief."), question, min_tokens);
                    let structured = persona_reply(persona, Some("Be brief."), question, 0).0;
                    assert_eq!(
                        counted.all,
                        count_tokens(&text),
                        "{persona} {question:?} {min_tokens}"
                    );
                    assert_eq!(counted.structured, count_tokens(&structured));
                    assert!(counted.all >= min_tokens);
                    let cited = cited(question, &sources).unwrap();
                    assert_eq!(
                        count_tokens(&format!("{cited}{text}")),
                        count_tokens(&cited) + counted.all,
                        "a cited opening and the reply add up"
                    );
                }
            }
        }
    }

    #[test]
    fn tokens_concatenate_to_the_text() {
        for text in [
            "",
            "a",
            "  lead",
            "a b\n\nc  ",
            "x\ty\n- z\n```\ncode\n```\n",
            "\u{b}\u{c}a\u{85}b\u{3000}",
            "word",
            " \n",
        ] {
            assert_eq!(split_tokens(text).concat(), text);
        }
        assert_eq!(
            split_tokens("Hi there\n\n- a"),
            vec!["Hi", " there", "\n\n-", " a"]
        );
        assert_eq!(split_tokens("  lead"), vec!["  lead"]);
        assert_eq!(split_tokens("a b \n"), vec!["a", " b \n"]);
        assert_eq!(split_tokens("   "), vec!["   "]);
        // Whitespace is Unicode's, ASCII or not.
        assert_eq!(
            split_tokens("a\u{a0}b\x0bc\u{2003}\u{2003}dé f"),
            vec!["a", "\u{a0}b", "\x0bc", "\u{2003}\u{2003}dé", " f"]
        );
        assert!(split_tokens("").is_empty());
    }

    #[test]
    fn counting_tokens_agrees_with_splitting() {
        for text in [
            "",
            "   ",
            "a",
            "  lead",
            "a b\n\nc  ",
            "\u{a0}é ü\u{2003}x",
            "x\ty\n- z\n```\ncode\n```\n",
            "\u{b}\u{c}a\u{85}b\u{3000}",
            "word",
            " \n",
        ] {
            assert_eq!(count_tokens(text), split_tokens(text).len(), "{text:?}");
        }
        // Every char, whitespace or not, alone, between words and at the ends.
        for ch in (0..0x3100_u32).filter_map(char::from_u32) {
            for text in [
                format!("{ch}"),
                format!("a{ch}b"),
                format!("{ch} a"),
                format!("a {ch}"),
                format!("—{ch}é"),
            ] {
                assert_eq!(count_tokens(&text), split_tokens(&text).len(), "{text:?}");
            }
        }
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
        // Cut one by one as they go out, the tokens are the text's split.
        let streamed: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                ProviderEvent::Token(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(streamed, split_tokens(&a));
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
                    completion_tokens: words as u32,
                    estimated: false,
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

    #[test]
    fn a_quote_is_one_line_bounded_in_chars_without_backticks() {
        let quote = |text: &str, max: usize| {
            let mut out = String::from(">");
            push_one_line(&mut out, text, max);
            out
        };
        assert_eq!(quote("  two\n\twords  ", 20), ">two words");
        assert_eq!(quote("", 5), ">");
        // Exactly at the bound: whole; one char past it: cut, with `…`.
        assert_eq!(quote("abc de", 6), ">abc de");
        assert_eq!(quote("abc def", 6), ">abc de…");
        assert_eq!(quote("abc def", 3), ">abc…");
        assert_eq!(quote("ünï cødé", 6), ">ünï cø…");
        assert_eq!(quote("a `b` c", 20), ">a 'b' c");
        assert_eq!(quote("``````", 4), ">''''…");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_paced_by_the_delay() {
        let provider = DemoProvider::new(Duration::from_millis(25), 11);
        let started = tokio::time::Instant::now();
        // 11 words (cut inside the structured part): 10 pauses.
        collect(&provider, request("q", None)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test]
    async fn each_persona_has_its_own_voice() {
        let provider = DemoProvider::new(Duration::ZERO, 200);
        let ask = |persona: &str| {
            let mut request = request("Should I learn Rust this year?", None);
            request.persona = persona.into();
            request
        };
        let (assistant, _) = collect(&provider, ask("assistant")).await;
        let (tech, _) = collect(&provider, ask("tech_enthusiast")).await;
        let (writer, _) = collect(&provider, ask("creative_writer")).await;
        let (data, _) = collect(&provider, ask("data_scientist")).await;
        assert!(
            tech.contains("Three things I would try right away"),
            "{tech}"
        );
        assert!(writer.contains("A small verse for you"), "{writer}");
        assert!(data.contains("| mean word length | 4.17 |"), "{data}");
        let all = [&assistant, &tech, &writer, &data];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // A persona of the file speaks with the assistant's voice, introduced.
        let mut custom = ask("pirate");
        custom.messages.insert(
            0,
            ChatMessage {
                role: Role::System,
                content: "You are a pirate.".into(),
            },
        );
        let (pirate, _) = collect(&provider, custom).await;
        assert!(
            pirate.starts_with("*pirate* — You are a pirate."),
            "{pirate}"
        );
    }

    #[test]
    fn hostile_question_cannot_break_the_code_fence() {
        let text = reply_text("```\n<script>alert(1)</script>\"\\", 10);
        let fences = text.lines().filter(|l| l.starts_with("```")).count();
        assert_eq!(fences, 2, "{text}");
        assert_eq!(text.matches("```").count(), 2, "{text}");
    }
}
