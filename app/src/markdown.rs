//! Markdown for replies: a sanitizing renderer, and an incremental renderer that
//! keeps streaming cost proportional to the block being written, not the reply.
//!
//! Sanitizing by construction: raw HTML in the markdown is rendered as escaped
//! text, and link/image URLs with a scheme other than http, https or mailto are
//! replaced. No HTML from a reply ever reaches the DOM as markup. Links open in
//! a new tab with `rel="noopener noreferrer nofollow"`: the page they lead to
//! gets no handle on this one, no referrer, and no ranking from it.

use pulldown_cmark::{CodeBlockKind, CowStr, Event, Options, Parser, Tag, TagEnd, html};
use pulldown_cmark_escape::{escape_href, escape_html};

use crate::highlight;

fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_MATH
}

/// Renders markdown to safe HTML. Code blocks come with a language label,
/// a copy button and highlighting (`highlight`); formulas are MathML
/// (`math`).
///
/// In the hydrate build the renderer (the parser, the highlighter, the
/// formulas' placeholders) is a chunk of its own, fetched right after the
/// page starts ([`load`]): the first page needs none of it, since the server
/// rendered every finished reply. Until it is here this returns the text
/// escaped, as plain paragraphs, and the page renders its replies again when
/// it arrives ([`crate::chat::ChatState::render_again`]).
pub fn render(markdown: &str) -> String {
    #[cfg(feature = "hydrate")]
    {
        deferred::render(markdown)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        render_now(markdown)
    }
}

/// Whether [`render`] renders markdown yet (always, outside the hydrate build).
pub fn ready() -> bool {
    #[cfg(feature = "hydrate")]
    {
        deferred::ready()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        true
    }
}

/// Fetches the renderer's chunk, trying again with growing pauses while the
/// network is down; true once [`render`] renders markdown. Immediate outside
/// the hydrate build.
pub async fn load() -> bool {
    #[cfg(feature = "hydrate")]
    {
        deferred::load().await
    }
    #[cfg(not(feature = "hydrate"))]
    {
        true
    }
}

/// Text shown until the renderer is here: escaped, line breaks kept.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
fn plain(markdown: &str) -> String {
    let text = markdown.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut out = String::with_capacity(markdown.len() + 32);
    out.push_str("<p class=\"md-plain\">");
    let _ = escape_html(&mut out, text);
    out.push_str("</p>");
    out
}

#[cfg(feature = "hydrate")]
mod deferred {
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::FutureExt;

    use crate::components::deferred::NotLoaded;

    /// The chunk is loaded: calls into it complete at once.
    static READY: AtomicBool = AtomicBool::new(false);

    #[leptos::wasm_split::wasm_split(
        markdown_renderer,
        wasm_split_path = ::leptos::wasm_split,
        fallible,
        preload(prefetch)
    )]
    fn render_split(markdown: &str) -> Result<String, NotLoaded> {
        Ok(super::render_now(markdown))
    }

    pub(super) fn ready() -> bool {
        READY.load(Ordering::Relaxed)
    }

    pub(super) fn render(markdown: &str) -> String {
        if ready() {
            // Loaded: the call completes in its first poll.
            if let Some(Ok(html)) = render_split(markdown).now_or_never() {
                return html;
            }
        }
        super::plain(markdown)
    }

    pub(super) async fn load() -> bool {
        let mut pause_ms = 2_000;
        for _ in 0..8 {
            if prefetch().await.is_ok() {
                READY.store(true, Ordering::Relaxed);
                return true;
            }
            gloo_timers::future::TimeoutFuture::new(pause_ms).await;
            pause_ms = (pause_ms * 2).min(60_000);
        }
        false
    }
}

/// The renderer itself (see [`render`]).
fn render_now(markdown: &str) -> String {
    let markdown = &*crate::math::normalize_delimiters(markdown);
    let mut events = Vec::new();
    // The code block being read: its fence's info string and its text.
    let mut code: Option<(String, String)> = None;
    for event in Parser::new_ext(markdown, options()) {
        match event {
            Event::Start(Tag::CodeBlock(kind)) => {
                let info = match kind {
                    CodeBlockKind::Fenced(info) => info.into_string(),
                    CodeBlockKind::Indented => String::new(),
                };
                code = Some((info, String::new()));
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((info, text)) = code.take() {
                    events.push(Event::Html(code_block(&info, &text).into()));
                }
            }
            Event::Text(text) if code.is_some() => {
                if let Some((_, code)) = code.as_mut() {
                    code.push_str(&text);
                }
            }
            Event::InlineMath(tex) => {
                events.push(Event::InlineHtml(crate::math::html(&tex, false).into()));
            }
            Event::DisplayMath(tex) => {
                events.push(Event::InlineHtml(crate::math::html(&tex, true).into()));
            }
            other => events.push(safe_event(other)),
        }
    }
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, events.into_iter());
    out
}

/// An event of the parser, made safe: raw HTML becomes text, links get a
/// new tab and no referrer, URLs only safe schemes.
fn safe_event(event: Event<'_>) -> Event<'_> {
    match event {
        // Raw HTML is shown, never interpreted.
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link {
            dest_url, title, ..
        }) => Event::InlineHtml(link_start(&safe_url(dest_url), &title).into()),
        Event::End(TagEnd::Link) => Event::InlineHtml(CowStr::Borrowed("</a>")),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        other => other,
    }
}

/// A code block: a head with the language's label and a copy button (the
/// page handles its clicks), then the code, highlighted.
fn code_block(info: &str, text: &str) -> String {
    let mut html = String::with_capacity(text.len() * 2 + 200);
    html.push_str("<div class=\"code-block\"><div class=\"code-head\"><span class=\"code-lang\">");
    let _ = escape_html(
        &mut html,
        &highlight::label(info).unwrap_or_else(|| "Code".to_owned()),
    );
    html.push_str(
        "</span><button type=\"button\" class=\"code-copy\" aria-label=\"Copy the code\">Copy</button></div><pre><code",
    );
    // The language as a class, as other renderers write it (letters, digits, + # - _ only).
    let class: String = info
        .split_whitespace()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '#' | '-' | '_'))
        .take(32)
        .collect();
    if !class.is_empty() {
        html.push_str(" class=\"language-");
        html.push_str(&class);
        html.push('"');
    }
    html.push('>');
    highlight::highlight(info, text, &mut html);
    html.push_str("</code></pre></div>\n");
    html
}

/// The opening tag of a link, every value escaped (this is the one place markup
/// is written by hand, so it is built from escaped parts only).
fn link_start(url: &str, title: &str) -> String {
    let mut tag = String::from("<a href=\"");
    // Writing to a String cannot fail.
    let _ = escape_href(&mut tag, url);
    tag.push('"');
    if !title.is_empty() {
        tag.push_str(" title=\"");
        let _ = escape_html(&mut tag, title);
        tag.push('"');
    }
    tag.push_str(" rel=\"noopener noreferrer nofollow\" target=\"_blank\">");
    tag
}

/// Keeps relative URLs and http, https and mailto ones; anything else becomes `#`.
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    // Browsers ignore ASCII whitespace and control characters inside a scheme
    // ("java\tscript:"), so look at the URL the way they do.
    let cleaned: String = url
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_ascii_control())
        .collect::<String>()
        .to_ascii_lowercase();
    let scheme_end = cleaned.find(':');
    let path_start = cleaned.find(['/', '?', '#']);
    let has_scheme = match (scheme_end, path_start) {
        (Some(colon), Some(path)) => colon < path,
        (Some(_), None) => true,
        _ => false,
    };
    if !has_scheme {
        return url;
    }
    if ["http:", "https:", "mailto:"]
        .iter()
        .any(|allowed| cleaned.starts_with(allowed))
    {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

/// Renders a reply while it streams. Finished blocks (separated by a blank line
/// outside a code fence) are rendered once and handed out as they complete; only
/// the block being written is rendered again on each token.
#[derive(Debug, Default, Clone)]
pub struct IncrementalMarkdown {
    /// The whole text so far.
    text: String,
    /// Byte offset where the unfinished block starts.
    block_start: usize,
    /// Byte offset up to which complete lines have been examined.
    scanned: usize,
    /// The open code fence, if inside one: its character and length.
    fence: Option<(char, usize)>,
    /// Rendered HTML of every finished block, in order.
    blocks: Vec<String>,
}

/// What changed after [`IncrementalMarkdown::push`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Update {
    /// Blocks that were finished by this push, rendered, in order.
    pub finished: Vec<String>,
    /// The unfinished block, rendered (empty if there is none).
    pub tail: String,
}

impl IncrementalMarkdown {
    /// An empty renderer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A renderer holding a finished text and nothing rendered yet: what a
    /// reply from history needs ([`Self::render_all`] renders it; a later
    /// [`Self::push`] would render its blocks from the start).
    pub fn with_text(text: &str) -> Self {
        IncrementalMarkdown {
            text: text.to_owned(),
            ..Self::default()
        }
    }

    /// The whole text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The rendered finished blocks so far.
    pub fn blocks(&self) -> &[String] {
        &self.blocks
    }

    /// Appends a token and returns what to add to the page.
    pub fn push(&mut self, token: &str) -> Update {
        self.text.push_str(token);
        let mut finished = Vec::new();
        // Examine only complete lines not yet examined.
        while let Some(newline) = self.text[self.scanned..].find('\n') {
            let line_start = self.scanned;
            let line_end = line_start + newline + 1;
            let line = &self.text[line_start..line_end];
            self.scanned = line_end;
            if let Some(marker) = fence_marker(line) {
                self.fence = match self.fence {
                    None => Some(marker),
                    Some((ch, len)) if marker.0 == ch && marker.1 >= len && is_bare_fence(line) => {
                        None
                    }
                    open => open,
                };
                continue;
            }
            if self.fence.is_none() && line.trim().is_empty() {
                let block = &self.text[self.block_start..line_start];
                if !block.trim().is_empty() {
                    let html = render(block);
                    self.blocks.push(html.clone());
                    finished.push(html);
                }
                self.block_start = line_end;
            }
        }
        let tail = &self.text[self.block_start..];
        Update {
            finished,
            tail: if tail.trim().is_empty() {
                String::new()
            } else {
                render(tail)
            },
        }
    }

    /// The rendering of the whole text at once: what the incremental blocks plus
    /// tail approximate. Used once when a reply completes (references and loose
    /// lists that span blocks render exactly).
    pub fn render_all(&self) -> String {
        render(&self.text)
    }
}

/// A code fence line's marker (```` ``` ```` or `~~~`, three or more), if it is one.
fn fence_marker(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next()?;
    if ch != '`' && ch != '~' {
        return None;
    }
    let len = rest.chars().take_while(|&c| c == ch).count();
    (len >= 3).then_some((ch, len))
}

/// A closing fence has nothing after its marker.
fn is_bare_fence(line: &str) -> bool {
    line.trim().chars().all(|c| c == '`' || c == '~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_get_rel_and_a_new_tab_and_stay_escaped() {
        let html = render(r#"see [the docs](https://example.com/a?b=1&c="x" "T <i>") now"#);
        assert!(
            html.contains(r#"<a href="https://example.com/a?b=1&amp;c=%22x%22" title="T &lt;i&gt;" rel="noopener noreferrer nofollow" target="_blank">the docs</a>"#),
            "{html}"
        );
        let autolink = render("<https://example.com>");
        assert!(
            autolink.contains(r#"rel="noopener noreferrer nofollow""#),
            "{autolink}"
        );
        let script = render("[x](javascript:alert(1))");
        assert!(script.contains(r##"href="#""##), "{script}");
    }

    #[test]
    fn raw_html_is_escaped_not_interpreted() {
        let html = render("Hi <img src=x onerror=alert(1)> there\n\n<script>alert(2)</script>\n");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
    }

    #[test]
    fn dangerous_urls_are_neutralized() {
        for md in [
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](java\tscript:alert(1))",
            "![x](data:text/html;base64,PHNjcmlwdD4=)",
            "[x](vbscript:msgbox)",
        ] {
            let html = render(md);
            // Either neutralized to "#", or not a link at all (plain text).
            for attribute in ["href=\"", "src=\""] {
                if let Some(at) = html.find(attribute) {
                    assert!(
                        html[at + attribute.len()..].starts_with('#'),
                        "{md} → {html}"
                    );
                }
            }
        }
        for md in [
            "[x](https://e.com/a?b=1#c)",
            "[x](/relative/path)",
            "[x](mailto:a@b.c)",
            "[x](#frag)",
        ] {
            assert!(!render(md).contains("\"#\""), "{md}");
        }
    }

    #[test]
    fn attribute_injection_through_urls_is_escaped() {
        let html = render("![a](x\"onerror=\"alert(1))");
        assert!(!html.contains("\"onerror"), "{html}");
    }

    #[test]
    fn code_blocks_render_as_code() {
        let html = render("```rust\nfn main() {}\n```\n");
        assert!(
            html.contains("<pre><code class=\"language-rust\"><span class=\"hl-kw\">fn</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"code-lang\">Rust</span>"),
            "{html}"
        );
        assert!(html.contains("class=\"code-copy\""), "{html}");
        // A fence's info string cannot break out of the class attribute.
        let hostile = render("```x\"onload=alert(1)\n<b>\n```\n");
        assert!(!hostile.contains("\"onload"), "{hostile}");
        assert!(hostile.contains("&lt;b&gt;"), "{hostile}");
        // A half-written block (still streaming) is highlighted as far as it goes.
        let half = render("```python\ndef f(");
        assert!(half.contains("<span class=\"hl-kw\">def</span>"), "{half}");
    }

    #[test]
    fn every_prefix_of_a_tricky_reply_renders() {
        // What a reply looks like at every point while it streams: cut inside
        // characters of several bytes, delimiters, fences and formulas.
        let text = concat!(
            "é — \\(x^2\\) ü `\\[code\\]` $$\\sqrt{ü}$$ — $a_1$ 🌍\n\n",
            "```rust\nlet s = \"é — 🌍\"; // ü\nfn f<'a>() -> char { 'é' }\n```\n\n",
            "```html\n<a href=\"é\">—</a><!-- ü\n```\n\n",
            "```py\n'''é\n```\n\n| a | b |\n|---|---|\n| é | — |\n"
        );
        let mut cuts = 0;
        for (at, _) in text.char_indices().chain([(text.len(), ' ')]) {
            let html = render(&text[..at]);
            assert!(!html.contains("<script"), "{html}");
            cuts += 1;
        }
        assert!(cuts > 100);
    }

    fn stream_in(text: &str, chunk: usize) -> IncrementalMarkdown {
        let mut renderer = IncrementalMarkdown::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(chunk) {
            renderer.push(&piece.iter().collect::<String>());
        }
        renderer
    }

    #[test]
    fn finished_blocks_plus_tail_match_a_full_render_for_typical_replies() {
        let text = "Intro paragraph with **bold**.\n\nThree things:\n\n- one\n- two\n- three\n\n```rust\nfn main() {\n\n    println!(\"blank line above\");\n}\n```\n\nClosing words.";
        for chunk in [1, 3, 7, 1000] {
            let mut renderer = stream_in(text, chunk);
            let tail = renderer.push("").tail;
            let incremental = format!("{}{}", renderer.blocks().concat(), tail);
            assert_eq!(incremental, render(text), "chunk {chunk}");
            assert_eq!(renderer.text(), text);
        }
    }

    #[test]
    fn a_blank_line_inside_a_fence_does_not_split_the_block() {
        let mut renderer = IncrementalMarkdown::new();
        renderer.push("```\na\n\nb\n");
        assert!(renderer.blocks().is_empty(), "still inside the fence");
        renderer.push("```\n\n");
        assert_eq!(renderer.blocks().len(), 1);
        assert!(renderer.blocks()[0].contains("a\n\nb"));
    }

    #[test]
    fn work_per_token_is_bounded_by_the_current_block() {
        // A long reply of many paragraphs: the tail never holds more than one.
        let mut renderer = IncrementalMarkdown::new();
        let mut longest_tail = 0;
        for i in 0..2000 {
            let update = renderer.push(&format!("word{i} "));
            if i % 10 == 9 {
                renderer.push("\n\n");
            }
            longest_tail = longest_tail.max(update.tail.len());
        }
        assert!(renderer.blocks().len() >= 199);
        assert!(
            longest_tail < 200,
            "tail stayed one paragraph: {longest_tail}"
        );
    }
}
