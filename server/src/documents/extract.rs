//! What a file is and the text in it: Markdown and plain text as they are,
//! HTML rendered to text (html2text), PDF page by page (pdf-extract).
//!
//! [`detect`] runs while the upload is answered, so a file rill cannot read
//! is refused at once (`UNSUPPORTED_DOCUMENT`), before anything is stored;
//! [`extract`] runs in the background, and its failure (a PDF that cannot be
//! parsed, one with no text) marks the document `failed` with the reason.

/// The kinds of file rill reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Markdown (`.md`, `.markdown`, `text/markdown`).
    Markdown,
    /// Plain text (`.txt`, `.text`, `text/plain`).
    Text,
    /// HTML (`.html`, `.htm`, `text/html`).
    Html,
    /// PDF (`.pdf`, `application/pdf`, or a file starting `%PDF-`).
    Pdf,
}

impl Kind {
    /// The media type stored and shown for this kind.
    pub fn media_type(self) -> &'static str {
        match self {
            Kind::Markdown => "text/markdown",
            Kind::Text => "text/plain",
            Kind::Html => "text/html",
            Kind::Pdf => "application/pdf",
        }
    }

    /// The kind stored as `media_type`.
    pub fn from_media_type(media_type: &str) -> Option<Kind> {
        [Kind::Markdown, Kind::Text, Kind::Html, Kind::Pdf]
            .into_iter()
            .find(|kind| kind.media_type() == media_type)
    }
}

/// Why a file is refused at upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Nothing in it.
    #[error("the file is empty")]
    Empty,
    /// Neither its name, its declared type nor its content is one rill reads.
    #[error(
        "rill reads Markdown (.md), plain text (.txt), HTML (.html) and PDF (.pdf) files; \
         {0:?} is none of these"
    )]
    UnknownType(String),
    /// Named or declared as text, but binary or not UTF-8.
    #[error("{0:?} is not UTF-8 text")]
    NotText(String),
    /// Named or declared as PDF, but does not start like one.
    #[error("{0:?} is not a PDF (it does not start with %PDF-)")]
    NotPdf(String),
}

/// Decides what `bytes`, uploaded as `filename` with the declared
/// `content_type`, is: content first (`%PDF-` is a PDF whatever its name),
/// then the name's extension, then the declared type.
pub fn detect(filename: &str, content_type: Option<&str>, bytes: &[u8]) -> Result<Kind, Refused> {
    if bytes.is_empty() {
        return Err(Refused::Empty);
    }
    if looks_like_pdf(bytes) {
        return Ok(Kind::Pdf);
    }
    let extension = filename
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    let declared = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let kind = match extension.as_str() {
        "md" | "markdown" | "mdown" | "mkd" => Some(Kind::Markdown),
        "txt" | "text" => Some(Kind::Text),
        "html" | "htm" | "xhtml" => Some(Kind::Html),
        "pdf" => Some(Kind::Pdf),
        _ => match declared.as_str() {
            "text/markdown" | "text/x-markdown" => Some(Kind::Markdown),
            "text/plain" => Some(Kind::Text),
            "text/html" | "application/xhtml+xml" => Some(Kind::Html),
            "application/pdf" => Some(Kind::Pdf),
            _ => None,
        },
    };
    match kind {
        None => Err(Refused::UnknownType(filename.to_owned())),
        Some(Kind::Pdf) => Err(Refused::NotPdf(filename.to_owned())),
        Some(_) if text_of(bytes).is_none() => Err(Refused::NotText(filename.to_owned())),
        Some(kind) => Ok(kind),
    }
}

/// Whether `bytes` starts like a PDF (the header may follow a little junk,
/// which readers tolerate within the first kilobyte).
fn looks_like_pdf(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(1024)]
        .windows(5)
        .any(|w| w == b"%PDF-")
}

/// `bytes` as text, if it is UTF-8 (a byte-order mark is dropped) without NUL
/// bytes (binary files named `.txt`).
fn text_of(bytes: &[u8]) -> Option<&str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).ok()?;
    (!text.contains('\0')).then_some(text)
}

/// One page of text (a PDF's page; the whole text of other kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Its number from 1, for documents with pages.
    pub number: Option<u64>,
    /// Its text.
    pub text: String,
}

/// The text of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// Its pages, in order (one page without a number for kinds without pages).
    pub pages: Vec<Page>,
    /// How many pages a PDF has (pages without text included).
    pub page_count: Option<u64>,
}

/// Why a document's text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// The PDF parser refused it.
    #[error("the PDF could not be read: {0}")]
    Pdf(String),
    /// Readable, but without any text (a scanned PDF, an empty page).
    #[error("no text was found in it (a scanned PDF needs OCR, which rill does not do)")]
    NoText,
    /// Named as text, but not UTF-8 after all.
    #[error("it is not UTF-8 text")]
    NotText,
}

/// The text of `bytes` read as `kind`. Blocking and CPU-bound: run it off the
/// async workers. A parser that panics on a hostile file is caught here.
pub fn extract(kind: Kind, bytes: &[u8]) -> Result<Extracted, Unreadable> {
    let extracted = match kind {
        Kind::Markdown | Kind::Text => {
            let text = text_of(bytes).ok_or(Unreadable::NotText)?;
            single(normalize(text))
        }
        Kind::Html => {
            let text = text_of(bytes).ok_or(Unreadable::NotText)?;
            single(normalize(&html_text(text)))
        }
        Kind::Pdf => pdf(bytes)?,
    };
    if extracted.pages.iter().all(|p| p.text.trim().is_empty()) {
        return Err(Unreadable::NoText);
    }
    Ok(extracted)
}

/// One unnumbered page.
fn single(text: String) -> Extracted {
    Extracted {
        pages: vec![Page { number: None, text }],
        page_count: None,
    }
}

/// Line ends as `\n`, no trailing spaces, at most one blank line in a row.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_owned()
}

/// An HTML page's text: what a reader sees (no scripts or styles), links as
/// their text, without wrapping long lines.
fn html_text(html: &str) -> String {
    html2text::config::plain_no_decorate()
        .no_link_wrapping()
        .string_from_read(html.as_bytes(), usize::MAX / 4)
        .unwrap_or_default()
}

/// A PDF's pages. pdf-extract may panic on a malformed file: that is a file
/// it cannot read, not a crash of rill.
fn pdf(bytes: &[u8]) -> Result<Extracted, Unreadable> {
    let read = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes));
    let pages = match read {
        Ok(Ok(pages)) => pages,
        Ok(Err(error)) => return Err(Unreadable::Pdf(error.to_string())),
        Err(_) => return Err(Unreadable::Pdf("its structure is malformed".into())),
    };
    let page_count = u64::try_from(pages.len()).unwrap_or(u64::MAX);
    Ok(Extracted {
        pages: pages
            .into_iter()
            .zip(1..)
            .map(|(text, number)| Page {
                number: Some(number),
                text: normalize(&text),
            })
            .filter(|p| !p.text.is_empty())
            .collect(),
        page_count: Some(page_count),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_content_then_name_then_declared_type() {
        assert_eq!(detect("a.md", None, b"# Hi"), Ok(Kind::Markdown));
        assert_eq!(detect("a.TXT", None, b"hi"), Ok(Kind::Text));
        assert_eq!(detect("a.htm", None, b"<p>hi</p>"), Ok(Kind::Html));
        assert_eq!(
            detect("notes", Some("text/markdown; charset=utf-8"), b"x"),
            Ok(Kind::Markdown)
        );
        assert_eq!(detect("upload.bin", None, b"%PDF-1.4 ..."), Ok(Kind::Pdf));
        // A PDF named .txt is read as the PDF it is.
        assert_eq!(detect("a.txt", None, b"%PDF-1.7\n"), Ok(Kind::Pdf));
    }

    #[test]
    fn files_rill_cannot_read_are_refused_with_the_reason() {
        assert_eq!(detect("a.md", None, b""), Err(Refused::Empty));
        assert!(matches!(
            detect("photo.png", Some("image/png"), b"\x89PNG\r\n"),
            Err(Refused::UnknownType(_))
        ));
        assert!(matches!(
            detect("a.txt", None, b"MZ\0\0\x90binary"),
            Err(Refused::NotText(_))
        ));
        assert!(matches!(
            detect("a.txt", None, b"\xff\xfe\x00latin"),
            Err(Refused::NotText(_))
        ));
        assert!(matches!(
            detect("report.pdf", None, b"not a pdf at all"),
            Err(Refused::NotPdf(_))
        ));
    }

    #[test]
    fn text_is_normalized_and_a_bom_dropped() {
        let got = extract(Kind::Text, b"\xEF\xBB\xBFone  \r\n\r\n\r\n\r\ntwo\n").unwrap();
        assert_eq!(
            got.pages,
            vec![Page {
                number: None,
                text: "one\n\ntwo".into()
            }]
        );
        assert_eq!(extract(Kind::Markdown, b" \n\n "), Err(Unreadable::NoText));
    }

    #[test]
    fn html_is_read_as_what_a_reader_sees() {
        let html = b"<html><head><title>T</title><style>p{color:red}</style>\
            <script>var secret = 1;</script></head><body><h1>Refunds</h1>\
            <p>Refunds take <b>14 days</b>.</p><ul><li>one</li><li>two</li></ul></body></html>";
        let text = &extract(Kind::Html, html).unwrap().pages[0].text;
        assert!(text.contains("Refunds take 14 days."), "{text}");
        assert!(text.contains("one") && text.contains("two"), "{text}");
        assert!(
            !text.contains("secret") && !text.contains("color"),
            "{text}"
        );
    }

    #[test]
    fn a_pdf_is_read_page_by_page() {
        let pdf = crate::documents::testpdf::pdf(&[
            &["Page one talks about onboarding."],
            &["Page two: refunds take 14 days."],
        ]);
        let got = extract(Kind::Pdf, &pdf).unwrap();
        assert_eq!(got.page_count, Some(2));
        assert_eq!(got.pages.len(), 2);
        assert_eq!(got.pages[1].number, Some(2));
        assert!(
            got.pages[1].text.contains("refunds take 14 days"),
            "{:?}",
            got.pages
        );
        assert!(got.pages[0].text.contains("onboarding"), "{:?}", got.pages);
    }

    #[test]
    fn a_corrupt_pdf_is_unreadable_not_a_crash() {
        let mut pdf = crate::documents::testpdf::pdf(&[&["Some text here."]]);
        // Keep the header, break everything after it.
        let len = pdf.len();
        for byte in &mut pdf[20..len] {
            *byte = b'#';
        }
        assert!(matches!(extract(Kind::Pdf, &pdf), Err(Unreadable::Pdf(_))));
        assert!(matches!(
            extract(Kind::Pdf, b"%PDF-1.4\n%%EOF\n"),
            Err(Unreadable::Pdf(_))
        ));
    }
}
