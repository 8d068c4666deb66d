//! Syntax highlighting for code blocks: one small lexer, told per language
//! which words are keywords, how comments and strings look. It marks
//! keywords, strings, numbers, comments, literals (`true`, `None`…), called
//! functions and type names (and tags and attributes of markup, added and
//! removed lines of diffs) with `hl-*` classes; everything is escaped.
//!
//! Why not a general highlighter crate: the ones that cover many languages
//! carry either a regex engine and grammar dumps (syntect) or C parsers
//! (tree-sitter); either alone is larger than the UI's whole size budget
//! (`BENCHMARKS.md`). The cost of this one is a few kilobytes, and a code
//! block is highlighted in one pass over its text.

/// How one language looks to the lexer.
struct Spec {
    /// The label shown on the block.
    label: &'static str,
    keywords: &'static [&'static str],
    /// Words shown as constants (`true`, `null`, `None`…).
    literals: &'static [&'static str],
    line_comments: &'static [&'static str],
    block_comment: Option<(&'static str, &'static str)>,
    /// Characters that open a string closed by the same character.
    quotes: &'static [u8],
    /// Capitalised words are type names.
    capital_types: bool,
    /// `#` starts a comment only at the start of a line or after a space
    /// (shells: `$#` is not a comment).
    hash_after_space: bool,
    /// `'` opens a string only when it closes a character later (Rust's
    /// lifetimes `'a` are not strings).
    char_quote: bool,
    /// `"""` and `'''` open strings that span lines (Python).
    triple_quotes: bool,
}

const C_LIKE_LITERALS: &[&str] = &["true", "false", "null", "NULL", "nullptr"];

const RUST: Spec = Spec {
    label: "Rust",
    keywords: &[
        "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum",
        "extern", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
        "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait", "type",
        "unsafe", "use", "where", "while",
    ],
    literals: &["true", "false", "None", "Some", "Ok", "Err"],
    line_comments: &["//"],
    block_comment: Some(("/*", "*/")),
    quotes: b"\"'",
    capital_types: true,
    hash_after_space: false,
    char_quote: true,
    triple_quotes: false,
};

const PYTHON: Spec = Spec {
    label: "Python",
    keywords: &[
        "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
        "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is",
        "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with",
        "yield", "match", "case", "self",
    ],
    literals: &["True", "False", "None"],
    line_comments: &["#"],
    block_comment: None,
    quotes: b"\"'",
    capital_types: true,
    hash_after_space: false,
    char_quote: false,
    triple_quotes: true,
};

const JAVASCRIPT: Spec = Spec {
    label: "JavaScript",
    keywords: &[
        "async",
        "await",
        "break",
        "case",
        "catch",
        "class",
        "const",
        "continue",
        "debugger",
        "default",
        "delete",
        "do",
        "else",
        "export",
        "extends",
        "finally",
        "for",
        "from",
        "function",
        "if",
        "import",
        "in",
        "instanceof",
        "let",
        "new",
        "of",
        "return",
        "static",
        "super",
        "switch",
        "this",
        "throw",
        "try",
        "typeof",
        "var",
        "void",
        "while",
        "with",
        "yield",
        "interface",
        "type",
        "enum",
        "implements",
        "private",
        "public",
        "readonly",
    ],
    literals: &["true", "false", "null", "undefined", "NaN"],
    line_comments: &["//"],
    block_comment: Some(("/*", "*/")),
    quotes: b"\"'`",
    capital_types: true,
    hash_after_space: false,
    char_quote: false,
    triple_quotes: false,
};

const C_FAMILY: &[&str] = &[
    "auto",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "extern",
    "for",
    "goto",
    "if",
    "inline",
    "namespace",
    "new",
    "operator",
    "private",
    "protected",
    "public",
    "return",
    "sizeof",
    "static",
    "struct",
    "switch",
    "template",
    "this",
    "throw",
    "try",
    "typedef",
    "typename",
    "union",
    "using",
    "virtual",
    "volatile",
    "while",
    "int",
    "char",
    "void",
    "float",
    "double",
    "long",
    "short",
    "unsigned",
    "signed",
    "bool",
    "#include",
    "#define",
    "#if",
    "#ifdef",
    "#ifndef",
    "#endif",
    "#else",
];

const C: Spec = Spec {
    label: "C/C++",
    keywords: C_FAMILY,
    literals: C_LIKE_LITERALS,
    line_comments: &["//"],
    block_comment: Some(("/*", "*/")),
    quotes: b"\"'",
    capital_types: false,
    hash_after_space: false,
    char_quote: false,
    triple_quotes: false,
};

const JAVA_LIKE: &[&str] = &[
    "abstract",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "default",
    "do",
    "else",
    "enum",
    "extends",
    "final",
    "finally",
    "for",
    "if",
    "implements",
    "import",
    "instanceof",
    "interface",
    "new",
    "package",
    "private",
    "protected",
    "public",
    "return",
    "static",
    "super",
    "switch",
    "this",
    "throw",
    "throws",
    "try",
    "var",
    "void",
    "while",
    "int",
    "long",
    "double",
    "float",
    "boolean",
    "char",
    "byte",
    "short",
    "fun",
    "val",
    "when",
    "object",
    "override",
    "namespace",
    "using",
    "async",
    "await",
    "func",
    "let",
    "guard",
    "struct",
    "protocol",
    "extension",
    "string",
    "in",
    "is",
    "as",
    "get",
    "set",
];

const JAVA: Spec = Spec {
    label: "Java",
    keywords: JAVA_LIKE,
    literals: C_LIKE_LITERALS,
    line_comments: &["//"],
    block_comment: Some(("/*", "*/")),
    quotes: b"\"'",
    capital_types: true,
    hash_after_space: false,
    char_quote: false,
    triple_quotes: false,
};

const GO: Spec = Spec {
    label: "Go",
    keywords: &[
        "break",
        "case",
        "chan",
        "const",
        "continue",
        "default",
        "defer",
        "else",
        "fallthrough",
        "for",
        "func",
        "go",
        "goto",
        "if",
        "import",
        "interface",
        "map",
        "package",
        "range",
        "return",
        "select",
        "struct",
        "switch",
        "type",
        "var",
    ],
    literals: &["true", "false", "nil", "iota"],
    line_comments: &["//"],
    block_comment: Some(("/*", "*/")),
    quotes: b"\"'`",
    capital_types: false,
    hash_after_space: false,
    char_quote: false,
    triple_quotes: false,
};

const SHELL: Spec = Spec {
    label: "Shell",
    keywords: &[
        "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
        "in", "function", "return", "export", "local", "readonly", "set", "unset", "echo", "cd",
        "exit", "source", "sudo",
    ],
    literals: &["true", "false"],
    line_comments: &["#"],
    block_comment: None,
    quotes: b"\"'",
    capital_types: false,
    hash_after_space: true,
    char_quote: false,
    triple_quotes: false,
};

const SQL: Spec = Spec {
    label: "SQL",
    keywords: &[
        "select",
        "from",
        "where",
        "insert",
        "into",
        "values",
        "update",
        "set",
        "delete",
        "create",
        "table",
        "index",
        "on",
        "drop",
        "alter",
        "add",
        "join",
        "left",
        "right",
        "inner",
        "outer",
        "group",
        "by",
        "order",
        "having",
        "limit",
        "offset",
        "as",
        "and",
        "or",
        "not",
        "in",
        "is",
        "primary",
        "key",
        "references",
        "distinct",
        "union",
        "with",
        "case",
        "when",
        "then",
        "else",
        "end",
        "returning",
        "begin",
        "commit",
        "asc",
        "desc",
        "exists",
    ],
    literals: &["null", "true", "false"],
    line_comments: &["--"],
    block_comment: Some(("/*", "*/")),
    quotes: b"'\"",
    capital_types: false,
    hash_after_space: false,
    char_quote: false,
    triple_quotes: false,
};

const JSON: Spec = Spec {
    label: "JSON",
    keywords: &[],
    literals: &["true", "false", "null"],
    line_comments: &[],
    block_comment: None,
    quotes: b"\"",
    capital_types: false,
    hash_after_space: false,
    char_quote: false,
    triple_quotes: false,
};

const CONFIG: Spec = Spec {
    label: "Config",
    keywords: &[],
    literals: &["true", "false", "null", "yes", "no", "on", "off"],
    line_comments: &["#"],
    block_comment: None,
    quotes: b"\"'",
    capital_types: false,
    hash_after_space: true,
    char_quote: false,
    triple_quotes: false,
};

const CSS: Spec = Spec {
    label: "CSS",
    keywords: &[
        "@media",
        "@import",
        "@keyframes",
        "!important",
        "@supports",
        "@font-face",
    ],
    literals: &[],
    line_comments: &[],
    block_comment: Some(("/*", "*/")),
    quotes: b"\"'",
    capital_types: false,
    hash_after_space: false,
    char_quote: false,
    triple_quotes: false,
};

const RUBY: Spec = Spec {
    label: "Ruby",
    keywords: &[
        "def",
        "end",
        "class",
        "module",
        "if",
        "elsif",
        "else",
        "unless",
        "while",
        "until",
        "for",
        "in",
        "do",
        "return",
        "yield",
        "begin",
        "rescue",
        "ensure",
        "require",
        "self",
        "then",
        "case",
        "when",
        "and",
        "or",
        "not",
        "attr_accessor",
        "puts",
    ],
    literals: &["true", "false", "nil"],
    line_comments: &["#"],
    block_comment: None,
    quotes: b"\"'",
    capital_types: true,
    hash_after_space: false,
    char_quote: false,
    triple_quotes: false,
};

const PHP: Spec = Spec {
    label: "PHP",
    keywords: &[
        "function",
        "class",
        "public",
        "private",
        "protected",
        "static",
        "return",
        "if",
        "else",
        "elseif",
        "foreach",
        "as",
        "for",
        "while",
        "new",
        "echo",
        "namespace",
        "use",
        "extends",
        "implements",
        "try",
        "catch",
        "throw",
        "fn",
        "match",
        "array",
    ],
    literals: &["true", "false", "null", "TRUE", "FALSE", "NULL"],
    line_comments: &["//", "#"],
    block_comment: Some(("/*", "*/")),
    quotes: b"\"'",
    capital_types: true,
    hash_after_space: false,
    char_quote: false,
    triple_quotes: false,
};

/// What a fence's info string names.
enum Language {
    Code(&'static Spec),
    Markup,
    Diff,
}

/// The language of a fence's info string (its first word, any case).
fn language(info: &str) -> Option<Language> {
    let name = info
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    Some(match name.as_str() {
        "rust" | "rs" => Language::Code(&RUST),
        "python" | "py" | "python3" => Language::Code(&PYTHON),
        "javascript" | "js" | "jsx" | "mjs" | "cjs" | "typescript" | "ts" | "tsx" => {
            Language::Code(&JAVASCRIPT)
        }
        "c" | "h" | "cpp" | "c++" | "cc" | "hpp" | "cxx" => Language::Code(&C),
        "java" | "kotlin" | "kt" | "csharp" | "cs" | "c#" | "swift" | "scala" | "dart" => {
            Language::Code(&JAVA)
        }
        "go" | "golang" => Language::Code(&GO),
        "bash" | "sh" | "shell" | "zsh" | "console" | "shellsession" | "fish" => {
            Language::Code(&SHELL)
        }
        "sql" | "postgres" | "postgresql" | "sqlite" | "mysql" => Language::Code(&SQL),
        "json" | "jsonc" | "json5" => Language::Code(&JSON),
        "yaml" | "yml" | "toml" | "ini" | "conf" | "dockerfile" | "properties" | "env" => {
            Language::Code(&CONFIG)
        }
        "css" | "scss" | "less" => Language::Code(&CSS),
        "ruby" | "rb" => Language::Code(&RUBY),
        "php" => Language::Code(&PHP),
        "html" | "xml" | "svg" | "xhtml" | "vue" | "svelte" => Language::Markup,
        "diff" | "patch" => Language::Diff,
        _ => return None,
    })
}

/// The label of a fence's info string: the language's name when known, else
/// the info string's first word (at most 20 characters), else `None`.
pub fn label(info: &str) -> Option<String> {
    match language(info) {
        Some(Language::Code(spec)) => Some(spec.label.to_owned()),
        Some(Language::Markup) => Some("HTML/XML".to_owned()),
        Some(Language::Diff) => Some("Diff".to_owned()),
        None => {
            let word: String = info
                .split_whitespace()
                .next()
                .unwrap_or("")
                .chars()
                .take(20)
                .collect();
            (!word.is_empty()).then_some(word)
        }
    }
}

/// Appends `code` to `out` as HTML, highlighted for the fence's `info`
/// string (escaped only, for a language it does not know).
pub fn highlight(info: &str, code: &str, out: &mut String) {
    match language(info) {
        Some(Language::Code(spec)) => lex(spec, code, out),
        Some(Language::Markup) => markup(code, out),
        Some(Language::Diff) => diff(code, out),
        None => escape(code, out),
    }
}

/// Appends `text` escaped.
fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// Appends `text` escaped inside a span of `class`.
fn span(class: &str, text: &str, out: &mut String) {
    out.push_str("<span class=\"hl-");
    out.push_str(class);
    out.push_str("\">");
    escape(text, out);
    out.push_str("</span>");
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$' || b == b'@' || b == b'#' || b == b'!'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// The end (exclusive) of the string opened at `start` by `quote`.
fn string_end(bytes: &[u8], start: usize, quote: u8, spans_lines: bool) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            b'\n' if !spans_lines => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The generic lexer. Indexes move over ASCII bytes only: every multi-byte
/// UTF-8 character is copied whole as plain text, so slices stay on
/// character boundaries.
fn lex(spec: &Spec, code: &str, out: &mut String) {
    let bytes = code.as_bytes();
    let mut i = 0;
    let mut plain = 0;
    let flush = |from: usize, to: usize, out: &mut String| {
        if from < to {
            escape(&code[from..to], out);
        }
    };
    while i < bytes.len() {
        let rest = &code[i..];
        let b = bytes[i];
        // Comments.
        let line_comment = spec
            .line_comments
            .iter()
            .any(|start| rest.starts_with(start))
            && !(b == b'#'
                && spec.hash_after_space
                && i > 0
                && !bytes[i - 1].is_ascii_whitespace());
        if line_comment {
            flush(plain, i, out);
            let end = rest.find('\n').map_or(bytes.len(), |n| i + n);
            span("com", &code[i..end], out);
            i = end;
            plain = i;
            continue;
        }
        if let Some((open, close)) = spec.block_comment
            && rest.starts_with(open)
        {
            flush(plain, i, out);
            let end = rest[open.len()..]
                .find(close)
                .map_or(bytes.len(), |n| i + open.len() + n + close.len());
            span("com", &code[i..end], out);
            i = end;
            plain = i;
            continue;
        }
        // Strings.
        if spec.quotes.contains(&b) {
            if spec.triple_quotes && (rest.starts_with("\"\"\"") || rest.starts_with("'''")) {
                flush(plain, i, out);
                let end = rest[3..]
                    .find(&rest[..3])
                    .map_or(bytes.len(), |n| i + 3 + n + 3);
                span("str", &code[i..end], out);
                i = end;
                plain = i;
                continue;
            }
            let is_char = !spec.char_quote
                || b != b'\''
                || bytes.get(i + 1) == Some(&b'\\')
                || (bytes.get(i + 2) == Some(&b'\'') && bytes.get(i + 1).is_some_and(u8::is_ascii));
            if is_char {
                flush(plain, i, out);
                let end = string_end(bytes, i, b, b == b'`');
                span("str", &code[i..end], out);
                i = end;
                plain = i;
                continue;
            }
        }
        // Numbers (not the digits inside a word).
        let word_before = i > 0 && is_ident(bytes[i - 1]);
        if b.is_ascii_digit() && !word_before {
            flush(plain, i, out);
            let mut end = i + 1;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b'.')
            {
                end += 1;
            }
            span("num", &code[i..end], out);
            i = end;
            plain = i;
            continue;
        }
        // Words.
        if is_ident_start(b) && !word_before {
            let mut end = i + 1;
            // Words of CSS, shells and configuration may hold dashes.
            let dashes = matches!(spec.label, "CSS" | "Shell" | "Config");
            while end < bytes.len() && (is_ident(bytes[end]) || (dashes && bytes[end] == b'-')) {
                end += 1;
            }
            let word = &code[i..end];
            let compare = |list: &[&str]| {
                if spec.label == "SQL" {
                    list.iter().any(|k| k.eq_ignore_ascii_case(word))
                } else {
                    list.contains(&word)
                }
            };
            let class = if compare(spec.keywords) {
                Some("kw")
            } else if compare(spec.literals) {
                Some("lit")
            } else if code[end..].trim_start_matches([' ', '\t']).starts_with('(')
                && b.is_ascii_alphabetic()
            {
                Some("fn")
            } else if spec.capital_types && b.is_ascii_uppercase() {
                Some("ty")
            } else {
                None
            };
            if let Some(class) = class {
                flush(plain, i, out);
                span(class, word, out);
                plain = end;
            }
            i = end;
            continue;
        }
        // Anything else, a whole character at a time.
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    flush(plain, bytes.len(), out);
}

/// HTML and XML: comments, tags, attribute names and values.
fn markup(code: &str, out: &mut String) {
    let mut rest = code;
    while let Some(open) = rest.find('<') {
        escape(&rest[..open], out);
        rest = &rest[open..];
        if rest.starts_with("<!--") {
            let end = rest.find("-->").map_or(rest.len(), |n| n + 3);
            span("com", &rest[..end], out);
            rest = &rest[end..];
            continue;
        }
        // The tag's name, then its attributes up to `>`.
        let name_end = rest[1..]
            .find(|c: char| c.is_whitespace() || c == '>')
            .map_or(rest.len(), |n| n + 1);
        span("tag", &rest[..name_end], out);
        rest = &rest[name_end..];
        while let Some(c) = rest.chars().next() {
            if c == '>' || rest.starts_with("/>") {
                let end = if c == '>' { 1 } else { 2 };
                span("tag", &rest[..end], out);
                rest = &rest[end..];
                break;
            }
            if c == '"' || c == '\'' {
                let end = rest[1..].find(c).map_or(rest.len(), |n| n + 2);
                span("str", &rest[..end], out);
                rest = &rest[end..];
            } else if c.is_alphabetic() {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == ':' || c == '_'))
                    .unwrap_or(rest.len());
                span("attr", &rest[..end], out);
                rest = &rest[end..];
            } else if c == '<' {
                // A new tag before this one closed (half-written code).
                break;
            } else {
                escape(&rest[..c.len_utf8()], out);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    escape(rest, out);
}

/// Diffs: added and removed lines, hunk headers.
fn diff(code: &str, out: &mut String) {
    for line in code.split_inclusive('\n') {
        let class = if line.starts_with("+++") || line.starts_with("---") || line.starts_with("@@")
        {
            Some("meta")
        } else if line.starts_with('+') {
            Some("ins")
        } else if line.starts_with('-') {
            Some("del")
        } else {
            None
        };
        match class {
            Some(class) => span(class, line, out),
            None => escape(line, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(info: &str, code: &str) -> String {
        let mut out = String::new();
        highlight(info, code, &mut out);
        out
    }

    /// The text of highlighted HTML: tags removed, entities decoded.
    fn text(html: &str) -> String {
        let mut out = String::new();
        let mut in_tag = false;
        for c in html.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
    }

    #[test]
    fn rust_keywords_strings_comments_numbers_and_types_are_marked() {
        let code = "fn main() {\n    // say hi\n    let x: Vec<u8> = vec![1, 2];\n    println!(\"hi {}\", x.len());\n}\n";
        let out = html("rust", code);
        assert!(out.contains("<span class=\"hl-kw\">fn</span>"), "{out}");
        assert!(out.contains("<span class=\"hl-fn\">main</span>"), "{out}");
        assert!(
            out.contains("<span class=\"hl-com\">// say hi</span>"),
            "{out}"
        );
        assert!(
            out.contains("<span class=\"hl-ty\">Vec</span>&lt;u8&gt;"),
            "{out}"
        );
        assert!(out.contains("<span class=\"hl-num\">1</span>"), "{out}");
        assert!(
            out.contains("<span class=\"hl-str\">&quot;hi {}&quot;</span>"),
            "{out}"
        );
        assert_eq!(text(&out), code, "the text is kept exactly");
    }

    #[test]
    fn rust_lifetimes_are_not_strings_but_chars_are() {
        let out = html("rs", "fn f<'a>(s: &'a str) -> char { 'x' }");
        assert!(!out.contains("hl-str\">'a"), "{out}");
        assert!(out.contains("<span class=\"hl-str\">'x'</span>"), "{out}");
    }

    #[test]
    fn every_language_keeps_the_text_and_escapes_it() {
        let samples = [
            (
                "python",
                "def f(x):\n    \"\"\"Doc <b>.\"\"\"\n    return x # é\n",
            ),
            ("js", "const a = `t ${b}`; // <script>\nif (a) { f(null) }"),
            ("sql", "SELECT name FROM users WHERE id = 1 -- why\n"),
            ("bash", "echo \"$#\" # count\nexport A=1\n"),
            ("json", "{\"a\": [1, true, null], \"b\": \"x\\\"y\"}"),
            ("html", "<a href=\"x\" data-y='1'>link</a><!-- c --><br/>"),
            ("diff", "--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n same\n"),
            ("yaml", "key: value # note\nlist: [1, 2]\n"),
            ("go", "func main() { fmt.Println(`raw`) }"),
            ("unknown-lang", "<x> & \"y\""),
            ("", "plain <text>"),
            ("rust", "let s = \"unterminated <"),
            ("html", "<div class=\"half"),
            ("c", "/* open comment <"),
            ("py", "'''never closed\nstill <open>"),
        ];
        for (lang, code) in samples {
            let out = html(lang, code);
            assert_eq!(text(&out), code, "{lang}: {out}");
            let outside_tags: String = out
                .split('<')
                .skip(1)
                .map(|piece| piece.split_once('>').map_or("", |(tag, _)| tag))
                .filter(|tag| !tag.starts_with("span class=\"hl-") && *tag != "/span")
                .collect();
            assert!(
                outside_tags.is_empty(),
                "{lang}: only spans are markup: {out}"
            );
        }
    }

    #[test]
    fn languages_get_their_label() {
        assert_eq!(label("rust").as_deref(), Some("Rust"));
        assert_eq!(label("TS").as_deref(), Some("JavaScript"));
        assert_eq!(label("python {linenos}").as_deref(), Some("Python"));
        assert_eq!(label("brainfuck").as_deref(), Some("brainfuck"));
        assert_eq!(label(""), None);
    }
}
