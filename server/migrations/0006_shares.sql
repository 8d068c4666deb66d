-- Public read-only links to conversations (`/s/<token>`). A link shows the
-- conversation as it was at `shared_upto` (sharing again moves it to now and
-- keeps the token); `revoked_at` and `expires_at` end it; the row stays so the
-- page can say which.
CREATE TABLE IF NOT EXISTS shares (
    token TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    shared_upto BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

CREATE INDEX IF NOT EXISTS shares_by_conversation ON shares (conversation_id);
