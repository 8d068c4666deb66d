-- Search indexing leaves the commit a first token waits for (SQLite). The
-- triggers of 0005 indexed each question and each finished reply inside its
-- write: over 40 % of the writer's time (BENCHMARKS.md). Now they only note
-- the row in `search_pending`; the writer indexes what is noted after its
-- commits, when no write waits, and before every search, so a search still
-- finds what was just written. A row is in `messages_fts` or in
-- `search_pending`, never both; streaming replies are in neither.
CREATE TABLE IF NOT EXISTS search_pending (message_rowid INTEGER PRIMARY KEY);

DROP TRIGGER IF EXISTS messages_fts_insert;
DROP TRIGGER IF EXISTS messages_fts_delete;
DROP TRIGGER IF EXISTS messages_fts_update;

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
WHEN new.status <> 'streaming' BEGIN
    INSERT OR IGNORE INTO search_pending (message_rowid) VALUES (new.rowid);
END;

-- An indexed row leaves the index with the text it was indexed with; a
-- noted one leaves the queue.
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.status <> 'streaming' BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content)
        SELECT 'delete', old.rowid, old.content
        WHERE NOT EXISTS (SELECT 1 FROM search_pending WHERE message_rowid = old.rowid);
    DELETE FROM search_pending WHERE message_rowid = old.rowid;
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, status ON messages
WHEN old.status <> 'streaming' OR new.status <> 'streaming' BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content)
        SELECT 'delete', old.rowid, old.content
        WHERE old.status <> 'streaming'
          AND NOT EXISTS (SELECT 1 FROM search_pending WHERE message_rowid = old.rowid);
    DELETE FROM search_pending WHERE message_rowid = old.rowid;
    INSERT OR IGNORE INTO search_pending (message_rowid)
        SELECT new.rowid WHERE new.status <> 'streaming';
END;
