-- Documents of a project, for retrieval: the file as uploaded (so the index
-- can be rebuilt: `rill reindex`), its status, and the chunks it was split
-- into. A document is `processing` until its chunks are stored (in the same
-- transaction as `completed`); the search index under the data directory is
-- derived from these rows and brought back in step with them when it is not
-- (docs/documents.md). The file's bytes live apart so listing never reads them.
-- Only the file column's type differs between SQLite (BLOB) and PostgreSQL (BYTEA).
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    chunk_count BIGINT NOT NULL DEFAULT 0,
    pages BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS documents_by_project ON documents (project_id, created_at);

CREATE TABLE IF NOT EXISTS document_files (
    document_id TEXT PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    content BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS document_chunks (
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    page BIGINT,
    heading TEXT,
    content TEXT NOT NULL,
    PRIMARY KEY (document_id, seq)
);

-- The sources a reply drew on (JSON: the `sources` event's list), shown with
-- it after a reload.
ALTER TABLE messages ADD COLUMN sources TEXT;
