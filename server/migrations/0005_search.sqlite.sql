-- Full-text search over messages (SQLite): an FTS5 index whose text is read
-- from `messages` itself (external content, nothing stored twice), kept in
-- step by triggers. Replies are indexed once they stop streaming: a reply
-- being written changes at every checkpoint and is not searchable yet.
-- unicode61 with diacritics removed: words split on Unicode rules, "café"
-- matches "cafe"; no stemming (PostgreSQL's `simple` configuration agrees).
-- The index follows messages by rowid: rill never runs VACUUM, which may
-- renumber the rowids of a table without an INTEGER PRIMARY KEY (after a
-- manual VACUUM, rebuild it as migrations/README.md says).
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(
    content,
    content = 'messages',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);

INSERT INTO messages_fts (rowid, content)
    SELECT rowid, content FROM messages WHERE status <> 'streaming';

CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages
WHEN new.status <> 'streaming' BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;

CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages
WHEN old.status <> 'streaming' BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;

CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF content, status ON messages
WHEN old.status <> 'streaming' OR new.status <> 'streaming' BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content)
        SELECT 'delete', old.rowid, old.content WHERE old.status <> 'streaming';
    INSERT INTO messages_fts (rowid, content)
        SELECT new.rowid, new.content WHERE new.status <> 'streaming';
END;
