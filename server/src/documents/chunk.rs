//! Splitting a document's text into the passages retrieval returns.
//!
//! text-splitter chooses the cuts: the largest whole units (sections,
//! paragraphs, sentences, then words) that fit [`MAX_CHARS`], Markdown by
//! its structure (a heading starts a new chunk when it can). A chunk cut
//! inside a paragraph starts with up to [`OVERLAP_CHARS`] of the one before
//! (its last whole sentences or words), so what the cut separates is
//! together in one of them; chunks cut between paragraphs need no overlap. A PDF is split page by page, so
//! every chunk has one page. A Markdown chunk remembers the heading it falls
//! under; the index searches it with the chunk's text.

use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};

use super::extract::{Extracted, Kind};

/// The longest chunk, in characters (about 250 tokens).
pub const MAX_CHARS: usize = 1000;
/// The shortest chunk the splitter aims for where the text allows.
pub const MIN_CHARS: usize = 400;
/// What a chunk repeats of the one before, in characters.
pub const OVERLAP_CHARS: usize = 150;

/// One passage of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its place in the document, from 1.
    pub seq: u64,
    /// Its page (PDFs).
    pub page: Option<u64>,
    /// The heading it falls under (Markdown), without its `#`s.
    pub heading: Option<String>,
    /// Its text.
    pub content: String,
}

/// Splits `extracted` (read as `kind`) into chunks, in order.
pub fn chunks(kind: Kind, extracted: &Extracted) -> Vec<Chunk> {
    let config = || {
        ChunkConfig::new(MIN_CHARS..MAX_CHARS)
            .with_overlap(OVERLAP_CHARS)
            .expect("the overlap is smaller than the chunks")
            .with_trim(true)
    };
    let mut out = Vec::new();
    let mut seq = 0;
    for page in &extracted.pages {
        let markdown = MarkdownSplitter::new(config());
        let text = TextSplitter::new(config());
        let pieces: Vec<(usize, &str)> = segments(&page.text)
            .into_iter()
            .flat_map(|(base, segment)| {
                let found: Vec<(usize, &str)> = if kind == Kind::Markdown {
                    markdown.chunk_indices(segment).collect()
                } else {
                    text.chunk_indices(segment).collect()
                };
                found.into_iter().map(move |(at, piece)| (base + at, piece))
            })
            .collect();
        let headings = if kind == Kind::Markdown {
            headings(&page.text)
        } else {
            Vec::new()
        };
        for (offset, piece) in pieces {
            if piece.trim().is_empty() {
                continue;
            }
            seq += 1;
            out.push(Chunk {
                seq,
                page: page.number,
                heading: heading_at(&headings, offset, piece),
                content: piece.to_owned(),
            });
        }
    }
    out
}

/// The most bytes the splitter is given at once. Its cost grows faster than
/// the length of a unit it has to break up (measured: one 2 MB paragraph took
/// 38 s, a 20 MB word minutes), so a page reaches it in segments: cut at the
/// last paragraph break before this size, else the last line break, else the
/// last space, else anywhere (a character boundary). Chunks do not span
/// segments; most cuts fall where a chunk would end anyway.
const SEGMENT_BYTES: usize = 8192;

/// `text` in segments of at most [`SEGMENT_BYTES`], each with its offset.
fn segments(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let rest = &text[start..];
        if rest.len() <= SEGMENT_BYTES {
            out.push((start, rest));
            break;
        }
        let mut limit = SEGMENT_BYTES;
        while !rest.is_char_boundary(limit) {
            limit -= 1;
        }
        let window = &rest[..limit];
        // A cut in the first quarter would make tiny segments: look further.
        let usable = |at: usize| at > SEGMENT_BYTES / 4;
        let cut = window
            .rfind("\n\n")
            .map(|i| i + 2)
            .filter(|&i| usable(i))
            .or_else(|| window.rfind('\n').map(|i| i + 1).filter(|&i| usable(i)))
            .or_else(|| window.rfind(' ').map(|i| i + 1).filter(|&i| usable(i)))
            .unwrap_or(limit);
        out.push((start, &rest[..cut]));
        start += cut;
    }
    out
}

/// The ATX headings of a Markdown text: where each starts, and its text.
fn headings(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut offset = 0;
    let mut fenced = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced && let Some(rest) = trimmed.strip_prefix('#') {
            let title = rest.trim_start_matches('#');
            let level_ok = trimmed.len() - title.len() <= 6;
            if level_ok && (title.is_empty() || title.starts_with(' ')) {
                let title = title.trim().trim_end_matches('#').trim();
                if !title.is_empty() {
                    found.push((offset, title.to_owned()));
                }
            }
        }
        offset += line.len();
    }
    found
}

/// The heading a chunk at `offset` falls under: the last heading before it,
/// unless the chunk starts with that heading itself.
fn heading_at(headings: &[(usize, String)], offset: usize, piece: &str) -> Option<String> {
    let (_, title) = headings.iter().rev().find(|(at, _)| *at <= offset)?;
    let first_line = piece.lines().next().unwrap_or_default();
    (!first_line.trim_start_matches('#').trim().eq(title.as_str())).then(|| title.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::extract::Page;

    fn one_page(text: &str) -> Extracted {
        Extracted {
            pages: vec![Page {
                number: None,
                text: text.into(),
            }],
            page_count: None,
        }
    }

    /// A Markdown handbook: sections of numbered sentences.
    fn handbook(sections: usize, sentences: usize) -> String {
        let mut text = String::from("# Handbook\n\n");
        for s in 1..=sections {
            text.push_str(&format!("## Section {s}\n\n"));
            for n in 1..=sentences {
                text.push_str(&format!(
                    "Sentence {n} of section {s} says something useful. "
                ));
                if n % 4 == 0 {
                    text.push_str("\n\n");
                }
            }
            text.push_str("\n\n");
        }
        text
    }

    #[test]
    fn chunks_fit_and_cover_the_text() {
        let text = handbook(6, 30);
        let chunks = chunks(Kind::Markdown, &one_page(&text));
        assert!(chunks.len() > 6, "{} chunks", chunks.len());
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.seq, i as u64 + 1);
            assert!(
                chunk.content.chars().count() <= MAX_CHARS,
                "{}",
                chunk.content
            );
        }
        // Every sentence of the text is whole in some chunk.
        for s in 1..=6 {
            for n in 1..=30 {
                let sentence = format!("Sentence {n} of section {s} says something useful.");
                assert!(
                    chunks.iter().any(|c| c.content.contains(&sentence)),
                    "{sentence} is in no chunk"
                );
            }
        }
    }

    #[test]
    fn a_chunk_cut_inside_a_paragraph_repeats_the_end_of_the_one_before() {
        // One long paragraph: the cuts fall between sentences, and each
        // chunk starts with the last whole sentences of the one before.
        let text: String = (1..=60)
            .map(|n| format!("Sentence number {n} says one thing. "))
            .collect();
        let chunks = chunks(Kind::Text, &one_page(&text));
        assert!(chunks.len() >= 3, "{chunks:?}");
        for pair in chunks.windows(2) {
            let last = pair[0].content.trim_end().rsplit(". ").next().unwrap();
            assert!(
                pair[1].content.contains(last.trim_end_matches('.')),
                "{:?} does not repeat {last:?}",
                &pair[1].content[..60]
            );
        }
    }

    #[test]
    fn markdown_chunks_know_their_heading() {
        let text = handbook(3, 40);
        let chunks = chunks(Kind::Markdown, &one_page(&text));
        let mut named = 0;
        for chunk in &chunks {
            if chunk.content.starts_with('#') {
                // A chunk that opens with its heading needs no other.
                assert_eq!(chunk.heading, None, "{:?}", chunk.content);
                continue;
            }
            let heading = chunk.heading.as_deref().expect("a chunk inside a section");
            // Its first sentence is of the section its heading names.
            let first = chunk.content.split("of section ").nth(1).unwrap();
            let section: String = first.chars().take_while(char::is_ascii_digit).collect();
            assert_eq!(heading, format!("Section {section}"), "{:?}", chunk.content);
            named += 1;
        }
        assert!(named > 0);
    }

    #[test]
    fn huge_units_are_split_in_segments_and_cover_the_text() {
        // One long "word", and words without a sentence or paragraph break:
        // the splitter sees them in segments (whole, a 2 MB one took it 38 s).
        for text in ["x".repeat(200_000), "refund policy ".repeat(15_000)] {
            let chunks = chunks(Kind::Text, &one_page(&text));
            assert!(
                chunks
                    .iter()
                    .all(|c| c.content.chars().count() <= MAX_CHARS)
            );
            let covered: usize = chunks.iter().map(|c| c.content.trim().len()).sum();
            assert!(
                covered + chunks.len() * 2 >= text.trim().len(),
                "{covered} of {}",
                text.len()
            );
        }
    }

    #[test]
    fn segments_are_bounded_cut_at_breaks_and_cover_the_text() {
        let text = format!("{}\n\n{}", "a b ".repeat(1500), "é".repeat(9000));
        let parts = segments(&text);
        let mut expected = 0;
        for (at, part) in &parts {
            assert_eq!(*at, expected);
            assert!(part.len() <= SEGMENT_BYTES);
            expected += part.len();
        }
        assert_eq!(expected, text.len());
        // The first cut falls on the paragraph break.
        assert!(
            parts[0].1.ends_with("\n\n"),
            "{:?}",
            &parts[0].1[parts[0].1.len() - 10..]
        );
        assert_eq!(segments("short"), vec![(0, "short")]);
        assert!(segments("").is_empty());
    }

    #[test]
    fn headings_inside_code_fences_are_not_headings() {
        let found = headings("# Real\n```\n# not a heading\n```\n## Also real ##\n#nospace\n");
        let titles: Vec<&str> = found.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(titles, ["Real", "Also real"]);
    }

    #[test]
    fn pdf_chunks_keep_their_page() {
        let extracted = Extracted {
            pages: vec![
                Page {
                    number: Some(1),
                    text: "Alpha page.".into(),
                },
                Page {
                    number: Some(3),
                    text: "Gamma page.".into(),
                },
            ],
            page_count: Some(3),
        };
        let chunks = chunks(Kind::Pdf, &extracted);
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[0].page, chunks[1].page), (Some(1), Some(3)));
        assert_eq!(chunks[1].seq, 2);
    }

    #[test]
    fn a_long_unbroken_text_is_still_cut_to_size() {
        let text = "word ".repeat(5000);
        let chunks = chunks(Kind::Text, &one_page(&text));
        assert!(chunks.len() >= 5);
        assert!(
            chunks
                .iter()
                .all(|c| c.content.chars().count() <= MAX_CHARS)
        );
    }
}
