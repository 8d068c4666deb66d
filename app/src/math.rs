//! Math in replies: `$…$`, `$$…$$`, `\(…\)` and `\[…\]` shown as MathML,
//! which browsers render natively.
//!
//! TeX becomes MathML on the server (pulldown-latex): a TeX renderer in the
//! browser's bundle would cost more than the whole UI's size budget left
//! (`BENCHMARKS.md`). Server-rendered pages (history, shared links) carry the
//! MathML already; while a reply streams, the browser shows a formula as its
//! TeX in a `.math-pending` placeholder, asks the server for a batch
//! (`POST /api/v1/math`), keeps the answers, and replaces the placeholders.
//! A formula is only ever a formula once its closing delimiter arrived, so a
//! half-streamed one is plain text, never a broken render. TeX that does not
//! parse is shown as code with the reason in its title.

use serde::{Deserialize, Serialize};

/// Longest formula rendered, in characters (longer ones stay as code).
pub const MAX_TEX_CHARS: usize = 4_000;

/// Most formulas one request may carry.
pub const MAX_FORMULAS: usize = 64;

/// Deepest nesting of braces rendered.
#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
const MAX_DEPTH: usize = 64;

/// One formula to render.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Formula {
    /// Its TeX, without delimiters.
    pub tex: String,
    /// Whether it is a display (block) formula.
    #[serde(default)]
    pub display: bool,
}

/// `POST /api/v1/math`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MathRequest {
    /// The formulas, at most [`MAX_FORMULAS`].
    pub formulas: Vec<Formula>,
}

/// What one formula became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rendered {
    /// Its MathML (`<math>…</math>`).
    Mathml(String),
    /// Why it is not math (it is shown as code).
    Error(String),
}

/// `POST /api/v1/math`'s answer: one result per formula, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MathResponse {
    /// The results.
    pub results: Vec<Rendered>,
}

/// Whether `tex` may be rendered at all (length and nesting bounded, so a
/// hostile formula costs little). Only the server renders.
#[cfg_attr(not(feature = "ssr"), allow(dead_code))]
fn check(tex: &str) -> Result<(), String> {
    if tex.chars().count() > MAX_TEX_CHARS {
        return Err(format!("a formula is at most {MAX_TEX_CHARS} characters"));
    }
    let mut depth = 0usize;
    for c in tex.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("braces nest deeper than {MAX_DEPTH}"));
                }
            }
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Renders one formula to MathML (server side).
#[cfg(feature = "ssr")]
pub fn render(formula: &Formula) -> Rendered {
    use pulldown_latex::config::DisplayMode;
    use pulldown_latex::{Parser, RenderConfig, Storage, push_mathml};
    if let Err(why) = check(&formula.tex) {
        return Rendered::Error(why);
    }
    let storage = Storage::new();
    let events: Vec<_> = Parser::new(&formula.tex, &storage).collect();
    if let Some(Err(error)) = events.iter().find(|event| event.is_err()) {
        // The first line says what; the rest is a drawing of where.
        let text = error.to_string();
        return Rendered::Error(text.lines().next().unwrap_or("not TeX").trim().to_owned());
    }
    let config = RenderConfig {
        display_mode: if formula.display {
            DisplayMode::Block
        } else {
            DisplayMode::Inline
        },
        ..RenderConfig::default()
    };
    let mut mathml = String::new();
    match push_mathml(&mut mathml, events.into_iter(), config) {
        Ok(()) => Rendered::Mathml(mathml),
        Err(error) => Rendered::Error(error.to_string()),
    }
}

/// A formula's HTML in rendered markdown: its MathML when known (the
/// server renders; the browser keeps what the server answered), else its TeX
/// as a placeholder the page replaces, or as code when it is not math.
pub fn html(tex: &str, display: bool) -> String {
    let formula = Formula {
        tex: tex.to_owned(),
        display,
    };
    #[cfg(feature = "ssr")]
    let known = Some(render(&formula));
    #[cfg(not(feature = "ssr"))]
    let known = cache::get(&formula);
    let class = if display { "math math-display" } else { "math" };
    match known {
        Some(Rendered::Mathml(mathml)) => format!("<span class=\"{class}\">{mathml}</span>"),
        Some(Rendered::Error(why)) => format!(
            "<code class=\"math-error\" title=\"{}\">{}</code>",
            escape(&format!("Not shown as math: {why}")),
            escape(&delimited(&formula))
        ),
        None => {
            #[cfg(not(feature = "ssr"))]
            cache::want(&formula);
            format!(
                "<span class=\"{class} math-pending\" data-tex=\"{}\"><code>{}</code></span>",
                escape(tex),
                escape(&delimited(&formula))
            )
        }
    }
}

/// The formula as written, with its delimiters.
fn delimited(formula: &Formula) -> String {
    if formula.display {
        format!("$${}$$", formula.tex)
    } else {
        format!("${}$", formula.tex)
    }
}

/// `text` escaped for HTML text and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Writing to a String cannot fail.
    let _ = pulldown_cmark_escape::escape_html(&mut out, text);
    out
}

/// `\(…\)` as `$…$` and `\[…\]` as `$$…$$` (what the markdown parser reads),
/// outside code: fenced blocks, indented lines and backtick spans keep their
/// text.
pub fn normalize_delimiters(markdown: &str) -> std::borrow::Cow<'_, str> {
    if !markdown.contains("\\(") && !markdown.contains("\\[") {
        return std::borrow::Cow::Borrowed(markdown);
    }
    let mut out = String::with_capacity(markdown.len());
    let mut fence: Option<&str> = None;
    for line in markdown.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(marker)) => {
                fence = Some(marker);
                out.push_str(line);
                continue;
            }
            (Some(open), Some(marker)) if open == marker => {
                fence = None;
                out.push_str(line);
                continue;
            }
            (Some(_), _) => {
                out.push_str(line);
                continue;
            }
            (None, None) => {}
        }
        if line.starts_with("    ") || line.starts_with('\t') {
            out.push_str(line);
            continue;
        }
        // Outside backtick spans, replace the four delimiters.
        let mut in_code = false;
        let mut rest = line;
        while !rest.is_empty() {
            if rest.starts_with('`') {
                in_code = !in_code;
                out.push('`');
                rest = &rest[1..];
                continue;
            }
            if !in_code {
                // `get`: the next two bytes may be half of a character.
                let replacement = match rest.get(..2) {
                    Some("\\(" | "\\)") => Some("$"),
                    Some("\\[" | "\\]") => Some("$$"),
                    _ => None,
                };
                if let Some(replacement) = replacement {
                    out.push_str(replacement);
                    rest = &rest[2..];
                    continue;
                }
            }
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The browser's memory of rendered formulas, and the ones to ask for.
#[cfg(not(feature = "ssr"))]
pub mod cache {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::{Formula, Rendered};

    /// Most formulas remembered (a page of replies holds far fewer).
    const MAX_KEPT: usize = 2_000;

    thread_local! {
        static KNOWN: RefCell<HashMap<Formula, Rendered>> = RefCell::new(HashMap::new());
        static WANTED: RefCell<Vec<Formula>> = const { RefCell::new(Vec::new()) };
    }

    /// What the server answered for `formula`, if it did.
    pub fn get(formula: &Formula) -> Option<Rendered> {
        KNOWN.with(|known| known.borrow().get(formula).cloned())
    }

    /// Notes that `formula` is wanted (rendering met it unknown).
    pub fn want(formula: &Formula) {
        WANTED.with(|wanted| {
            let mut wanted = wanted.borrow_mut();
            if !wanted.contains(formula) && wanted.len() < super::MAX_FORMULAS {
                wanted.push(formula.clone());
            }
        });
    }

    /// The formulas wanted since the last call.
    pub fn take_wanted() -> Vec<Formula> {
        WANTED.with(|wanted| std::mem::take(&mut *wanted.borrow_mut()))
    }

    /// Keeps the server's answers.
    pub fn keep(answers: impl IntoIterator<Item = (Formula, Rendered)>) {
        KNOWN.with(|known| {
            let mut known = known.borrow_mut();
            if known.len() > MAX_KEPT {
                known.clear();
            }
            known.extend(answers);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_delimiters_become_dollars_outside_code() {
        assert_eq!(
            normalize_delimiters(
                "a \\(x^2\\) b \\[y\\] `\\(code\\)`\n```\n\\(kept\\)\n```\n    \\[kept\\]\n"
            ),
            "a $x^2$ b $$y$$ `\\(code\\)`\n```\n\\(kept\\)\n```\n    \\[kept\\]\n"
        );
        assert_eq!(
            normalize_delimiters("é — \\(x\\) — ü\\"),
            "é — $x$ — ü\\",
            "characters of several bytes"
        );
        assert!(matches!(
            normalize_delimiters("no math here"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn hostile_formulas_are_bounded() {
        assert!(check(&"x".repeat(MAX_TEX_CHARS + 1)).is_err());
        assert!(check(&"{".repeat(MAX_DEPTH + 1)).is_err());
        assert!(check("\\frac{a}{b}").is_ok());
    }

    #[cfg(feature = "ssr")]
    #[test]
    fn tex_becomes_mathml_and_bad_tex_an_error() {
        let rendered = render(&Formula {
            tex: "\\frac{a}{b} + \\sqrt{x^2}".into(),
            display: true,
        });
        let Rendered::Mathml(mathml) = rendered else {
            panic!("{rendered:?}");
        };
        assert!(mathml.starts_with("<math"), "{mathml}");
        assert!(mathml.contains("<mfrac>"), "{mathml}");
        assert!(mathml.contains("display=\"block\""), "{mathml}");
        for bad in ["\\frac{a}{", "\\unknowncommand{x}", "x^^"] {
            assert!(
                matches!(
                    render(&Formula {
                        tex: bad.into(),
                        display: false
                    }),
                    Rendered::Error(_)
                ),
                "{bad}"
            );
        }
        for hostile in [
            "\\text{<script>alert(1)</script>}",
            "\\text{\" onmouseover=\"alert(1)}",
            "\\mathrm{<img src=x onerror=alert(1)>}",
            "\\color{red\" onclick=\"alert(1)}{x}",
            "\\textcolor{red\" onclick=\"alert(1)}{x}",
            "\\href{javascript:alert(1)}{x}",
        ] {
            let out = html(hostile, false);
            assert!(
                !out.contains("<script") && !out.contains("<img"),
                "{hostile} → {out}"
            );
            // No text of the formula ever becomes an attribute of a tag.
            for tag in out.split('<').skip(1).filter_map(|t| t.split_once('>')) {
                assert!(
                    !tag.0.contains("onclick=\"")
                        && !tag.0.contains("onmouseover=\"")
                        && !tag.0.contains("=\"javascript"),
                    "{hostile} → {out}"
                );
            }
        }
    }
}
