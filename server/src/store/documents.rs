//! Documents in the store: [`DocumentStore`], implemented by [`SqlStore`].
//!
//! Unlike chat writes, these do not queue for the store's writer: they are
//! rare, and one holds a whole file (up to `--max-document-bytes`), which
//! must not sit in a group commit beside the chat's small writes. Each runs
//! in its own transaction on a pooled connection; on an SQLite file the
//! database itself takes turns between it and the writer (`busy_timeout`),
//! and every transaction here writes before it reads, so it waits for its
//! turn rather than failing.

use rill_protocol::documents::{DocumentInfo, DocumentStatus, ProjectInfo};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::sql::SqlStore;
use super::{StoreError, now_ms};
use crate::documents::chunk::Chunk;

/// A document to store, file included.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// Its id.
    pub id: String,
    /// Its project (which must exist).
    pub project_id: String,
    /// The uploaded file's name.
    pub filename: String,
    /// What it was read as.
    pub media_type: String,
    /// The file.
    pub content: Vec<u8>,
}

/// Documents of projects, their files and chunks.
#[async_trait::async_trait]
pub trait DocumentStore: Send + Sync {
    /// Stores a new document as `processing`, with its file, in one write.
    async fn add_document(&self, document: NewDocument) -> Result<DocumentInfo, StoreError>;

    /// Document `id` of project `project_id`, if there is one.
    async fn document(
        &self,
        project_id: &str,
        id: &str,
    ) -> Result<Option<DocumentInfo>, StoreError>;

    /// A project's documents, newest first.
    async fn documents(&self, project_id: &str) -> Result<Vec<DocumentInfo>, StoreError>;

    /// The file of document `id`.
    async fn document_file(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a `processing` document's chunks and marks it `completed`, in one
    /// transaction. `false` (nothing written) if it is gone or not processing.
    async fn complete_document(
        &self,
        id: &str,
        pages: Option<u64>,
        chunks: &[Chunk],
    ) -> Result<bool, StoreError>;

    /// Marks a `processing` document `failed` with `error`, dropping any
    /// chunks. `false` if it is gone or not processing.
    async fn fail_document(&self, id: &str, error: &str) -> Result<bool, StoreError>;

    /// Deletes a document with its file and chunks; `false` if there was none.
    async fn delete_document(&self, project_id: &str, id: &str) -> Result<bool, StoreError>;

    /// The stored chunks of document `id`, in order.
    async fn document_chunks(&self, id: &str) -> Result<Vec<Chunk>, StoreError>;

    /// A project's `completed` documents: id and file name.
    async fn completed_documents(
        &self,
        project_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Every document still `processing` (after a restart: to be processed again).
    async fn unfinished_documents(&self) -> Result<Vec<DocumentInfo>, StoreError>;

    /// Every project that has a `completed` document.
    async fn projects_with_documents(&self) -> Result<Vec<String>, StoreError>;

    /// `owner`'s projects, newest first, with how many documents each holds.
    async fn projects_of(&self, owner: &str) -> Result<Vec<ProjectInfo>, StoreError>;
}

/// The columns of a document, in [`document_from_row`]'s order.
const DOCUMENT_COLUMNS: &str = "id, project_id, filename, media_type, size, status, error, \
     chunk_count, pages, created_at, updated_at";

/// How many chunks one INSERT statement writes.
const CHUNKS_PER_INSERT: usize = 100;

fn document_from_row(row: &AnyRow) -> Result<DocumentInfo, sqlx::Error> {
    let size: i64 = row.try_get("size")?;
    let chunks: i64 = row.try_get("chunk_count")?;
    let pages: Option<i64> = row.try_get("pages")?;
    Ok(DocumentInfo {
        document_id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        filename: row.try_get("filename")?,
        media_type: row.try_get("media_type")?,
        size: u64::try_from(size).unwrap_or_default(),
        status: DocumentStatus::parse(&row.try_get::<String, _>("status")?),
        chunks: u64::try_from(chunks).unwrap_or_default(),
        pages: pages.and_then(|p| u64::try_from(p).ok()),
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SqlStore {
    /// The documents matching `condition` (SQL after `WHERE`, its one
    /// parameter `$1` bound to `value`).
    async fn documents_where(
        &self,
        condition: &str,
        value: &str,
    ) -> Result<Vec<DocumentInfo>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE {condition}"
        ))
        .bind(value)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(document_from_row)
            .collect::<Result<_, _>>()?)
    }
}

#[async_trait::async_trait]
impl DocumentStore for SqlStore {
    async fn add_document(&self, document: NewDocument) -> Result<DocumentInfo, StoreError> {
        let now = now_ms();
        let size = u64::try_from(document.content.len()).unwrap_or(u64::MAX);
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO documents (id, project_id, filename, media_type, size, status, \
             chunk_count, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7)",
        )
        .bind(document.id.as_str())
        .bind(document.project_id.as_str())
        .bind(document.filename.as_str())
        .bind(document.media_type.as_str())
        .bind(to_i64(size))
        .bind(DocumentStatus::Processing.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO document_files (document_id, content) VALUES ($1, $2)")
            .bind(document.id.as_str())
            .bind(document.content)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DocumentInfo {
            document_id: document.id,
            project_id: document.project_id,
            filename: document.filename,
            media_type: document.media_type,
            size,
            status: DocumentStatus::Processing,
            chunks: 0,
            pages: None,
            error: None,
            created_at: now,
            updated_at: now,
        })
    }

    async fn document(
        &self,
        project_id: &str,
        id: &str,
    ) -> Result<Option<DocumentInfo>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE id = $1 AND project_id = $2"
        ))
        .bind(id)
        .bind(project_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| document_from_row(&r)).transpose()?)
    }

    async fn documents(&self, project_id: &str) -> Result<Vec<DocumentInfo>, StoreError> {
        self.documents_where(
            "project_id = $1 ORDER BY created_at DESC, id DESC",
            project_id,
        )
        .await
    }

    async fn document_file(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT content FROM document_files WHERE document_id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    async fn complete_document(
        &self,
        id: &str,
        pages: Option<u64>,
        chunks: &[Chunk],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE documents SET status = $1, chunk_count = $2, pages = $3, error = NULL, \
             updated_at = $4 WHERE id = $5 AND status = $6",
        )
        .bind(DocumentStatus::Completed.as_str())
        .bind(to_i64(chunks.len() as u64))
        .bind(pages.map(to_i64))
        .bind(now_ms())
        .bind(id)
        .bind(DocumentStatus::Processing.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM document_chunks WHERE document_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for batch in chunks.chunks(CHUNKS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO document_chunks (document_id, seq, page, heading, content) VALUES ",
            );
            for i in 0..batch.len() {
                let p = i * 5;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5
                ));
            }
            let mut query = sqlx::query(&sql);
            for chunk in batch {
                query = query
                    .bind(id)
                    .bind(to_i64(chunk.seq))
                    .bind(chunk.page.map(to_i64))
                    .bind(chunk.heading.as_deref())
                    .bind(chunk.content.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn fail_document(&self, id: &str, error: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let updated = sqlx::query(
            "UPDATE documents SET status = $1, error = $2, chunk_count = 0, updated_at = $3 \
             WHERE id = $4 AND status = $5",
        )
        .bind(DocumentStatus::Failed.as_str())
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .bind(DocumentStatus::Processing.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM document_chunks WHERE document_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(updated > 0)
    }

    async fn delete_document(&self, project_id: &str, id: &str) -> Result<bool, StoreError> {
        // The file and chunks go with it (ON DELETE CASCADE); said explicitly
        // too, for a connection where foreign keys were not switched on.
        let mut tx = self.pool().begin().await?;
        let deleted = sqlx::query("DELETE FROM documents WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(project_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted > 0 {
            for table in ["document_chunks", "document_files"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE document_id = $1"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn document_chunks(&self, id: &str) -> Result<Vec<Chunk>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, page, heading, content FROM document_chunks \
             WHERE document_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq")?;
                let page: Option<i64> = row.try_get("page")?;
                Ok(Chunk {
                    seq: u64::try_from(seq).unwrap_or_default(),
                    page: page.and_then(|p| u64::try_from(p).ok()),
                    heading: row.try_get("heading")?,
                    content: row.try_get("content")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn completed_documents(
        &self,
        project_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT id, filename FROM documents WHERE project_id = $1 AND status = $2")
                .bind(project_id)
                .bind(DocumentStatus::Completed.as_str())
                .fetch_all(self.pool())
                .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("filename")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn unfinished_documents(&self) -> Result<Vec<DocumentInfo>, StoreError> {
        self.documents_where(
            "status = $1 ORDER BY created_at",
            DocumentStatus::Processing.as_str(),
        )
        .await
    }

    async fn projects_with_documents(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT project_id FROM documents WHERE status = $1")
                .bind(DocumentStatus::Completed.as_str())
                .fetch_all(self.pool())
                .await?,
        )
    }

    async fn projects_of(&self, owner: &str) -> Result<Vec<ProjectInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id, p.created_at, COUNT(d.id) AS documents FROM projects p \
             LEFT JOIN documents d ON d.project_id = p.id WHERE p.owner = $1 \
             GROUP BY p.id, p.created_at ORDER BY p.created_at DESC, p.id LIMIT 500",
        )
        .bind(owner)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let documents: i64 = row.try_get("documents")?;
                Ok(ProjectInfo {
                    project_id: row.try_get("id")?,
                    created_at: row.try_get("created_at")?,
                    documents: u64::try_from(documents).unwrap_or_default(),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
