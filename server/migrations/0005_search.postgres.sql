-- Full-text search over messages (PostgreSQL): a GIN index on the words of
-- each message that has stopped streaming (a reply being written changes at
-- every checkpoint and is not searchable yet; its updates touch no index).
-- The `simple` configuration: words lower-cased, no stemming, no stop words
-- (SQLite's unicode61 tokenizer agrees). Queries must use the same
-- expression and condition for the index to serve them.
CREATE INDEX IF NOT EXISTS messages_search ON messages
    USING GIN (to_tsvector('simple', content)) WHERE status <> 'streaming';
