-- Conversations and their messages. Portable SQL: the same file runs on SQLite
-- and PostgreSQL (TEXT ids, BIGINT milliseconds since the Unix epoch).
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    customer_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner, updated_at);

CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    persona TEXT,
    model TEXT,
    content TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    stream_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, created_at);
