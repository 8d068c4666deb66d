//! A small, real PDF for tests: pages of lines in Helvetica, with a correct
//! cross-reference table, as any PDF writer would make it. (The repository
//! also ships one made by this, `server/tests/fixtures/handbook.pdf`.)

/// A PDF whose page `i` shows the lines `pages[i]`.
pub(crate) fn pdf(pages: &[&[&str]]) -> Vec<u8> {
    let mut objects: Vec<String> = Vec::new();
    let page_ids: Vec<usize> = (0..pages.len()).map(|i| 4 + 2 * i).collect();
    objects.push("<< /Type /Catalog /Pages 2 0 R >>".into());
    objects.push(format!(
        "<< /Type /Pages /Kids [{}] /Count {} >>",
        page_ids
            .iter()
            .map(|id| format!("{id} 0 R"))
            .collect::<Vec<_>>()
            .join(" "),
        pages.len()
    ));
    objects.push(
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into(),
    );
    for (i, lines) in pages.iter().enumerate() {
        let mut content = String::from("BT\n/F1 12 Tf\n72 720 Td\n16 TL\n");
        for line in lines.iter() {
            let escaped = line
                .replace('\\', "\\\\")
                .replace('(', "\\(")
                .replace(')', "\\)");
            content.push_str(&format!("({escaped}) Tj T*\n"));
        }
        content.push_str("ET");
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
             /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ));
    }
    let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (n, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", n + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// The handbook the integration tests and the browser test upload.
pub(crate) fn handbook() -> Vec<u8> {
    pdf(&[
        &[
            "Acme Handbook",
            "Page one is about onboarding and the first week at Acme.",
            "Your manager introduces the team on the first morning.",
        ],
        &[
            "Expenses",
            "Expense refunds are paid within 14 days of a complete claim.",
            "Attach every receipt to the claim.",
        ],
    ])
}

#[cfg(test)]
mod tests {
    /// `server/tests/fixtures/handbook.pdf` is what [`super::handbook`] makes
    /// (`RILL_WRITE_FIXTURES=1` writes it again).
    #[test]
    fn the_shipped_pdf_is_made_by_this_writer() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/handbook.pdf");
        let made = super::handbook();
        if std::env::var_os("RILL_WRITE_FIXTURES").is_some() {
            std::fs::write(path, &made).unwrap();
        }
        assert_eq!(std::fs::read(path).unwrap(), made);
    }
}
