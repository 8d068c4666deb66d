//! Documents of a project and the sources retrieval finds in them: the
//! documents API (`/api/v1/projects/{project_id}/documents`), a reply's
//! `sources` event (and Socket.IO's `message_sources`), and the room events
//! that report a document's processing.

use serde::{Deserialize, Serialize};

/// Where a document is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentStatus {
    /// Stored; its text is being extracted, split and indexed.
    Processing,
    /// Indexed: questions in its project retrieve from it.
    Completed,
    /// Could not be read (`error` says why); nothing of it is indexed.
    Failed,
}

impl DocumentStatus {
    /// The stored (and wire) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentStatus::Processing => "processing",
            DocumentStatus::Completed => "completed",
            DocumentStatus::Failed => "failed",
        }
    }

    /// Reads a stored spelling (anything unknown reads as `failed`).
    pub fn parse(text: &str) -> Self {
        match text {
            "processing" => DocumentStatus::Processing,
            "completed" => DocumentStatus::Completed,
            _ => DocumentStatus::Failed,
        }
    }
}

/// One document of a project (`GET …/documents/{document_id}`, each item of
/// the list, and the answer to an upload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentInfo {
    /// Its id.
    pub document_id: String,
    /// The project it belongs to.
    pub project_id: String,
    /// The uploaded file's name.
    pub filename: String,
    /// What rill read it as: `text/markdown`, `text/plain`, `text/html` or
    /// `application/pdf`.
    pub media_type: String,
    /// The file's size in bytes.
    pub size: u64,
    /// Where it is in its life.
    pub status: DocumentStatus,
    /// How many chunks it was split into (0 until `completed`).
    pub chunks: u64,
    /// A PDF's page count, once read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<u64>,
    /// Why it `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch: the last change of status.
    pub updated_at: i64,
}

/// `GET /api/v1/projects/{project_id}/documents`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentList {
    /// The project.
    pub project_id: String,
    /// Its documents, newest first.
    pub documents: Vec<DocumentInfo>,
}

/// One of the caller's projects (`GET /api/v1/projects`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectInfo {
    /// Its id.
    pub project_id: String,
    /// How many documents it holds (any status).
    pub documents: u64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// `GET /api/v1/projects`: the caller's projects, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectList {
    /// The projects.
    pub projects: Vec<ProjectInfo>,
}

/// Where a source's text comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMetadata {
    /// The document.
    pub document_id: String,
    /// The document's file name.
    pub filename: String,
    /// The page (PDFs, from 1), when the document has pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
}

/// A passage retrieval found for a question: what the model was given as
/// `[n]`, n being its place in the list from 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The chunk's id: `<document_id>:<chunk number>`.
    pub id: String,
    /// The passage.
    pub content: String,
    /// Where it comes from.
    pub metadata: SourceMetadata,
    /// Its BM25 relevance to the question: higher is better, not bounded
    /// (only comparable within one question).
    pub score: f64,
}

impl Source {
    /// The distinct file names of `sources`, in order (what `metadata.sources`
    /// and seed 003's `metadata.context.sources` list).
    pub fn filenames(sources: &[Source]) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for source in sources {
            if !names.contains(&source.metadata.filename) {
                names.push(source.metadata.filename.clone());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str, filename: &str) -> Source {
        Source {
            id: id.into(),
            content: "text".into(),
            metadata: SourceMetadata {
                document_id: "d".into(),
                filename: filename.into(),
                page: None,
            },
            score: 1.0,
        }
    }

    #[test]
    fn filenames_are_distinct_in_order() {
        let sources = [
            source("a:1", "b.md"),
            source("a:2", "b.md"),
            source("c:1", "a.pdf"),
        ];
        assert_eq!(Source::filenames(&sources), ["b.md", "a.pdf"]);
    }

    #[test]
    fn a_source_has_seed_004s_shape() {
        let mut with_page = source("doc:3", "handbook.pdf");
        with_page.metadata.page = Some(2);
        let json = serde_json::to_value(&with_page).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "doc:3",
                "content": "text",
                "metadata": {"document_id": "d", "filename": "handbook.pdf", "page": 2},
                "score": 1.0
            })
        );
    }

    #[test]
    fn statuses_read_back_their_spelling() {
        for status in [
            DocumentStatus::Processing,
            DocumentStatus::Completed,
            DocumentStatus::Failed,
        ] {
            assert_eq!(DocumentStatus::parse(status.as_str()), status);
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
    }
}
