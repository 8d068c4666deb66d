-- Branches: editing a question or regenerating a reply keeps what it
-- replaces as an earlier version instead of deleting it.
--
-- A question's parent is the question before it on its branch (NULL for a
-- conversation's first); a reply's parent is its question, and its slot is
-- its place among the side-by-side replies of that question (0, 1, …).
-- Messages with the same parent, role and slot are versions of one another;
-- the one shown is the one selected last (`selected_at`, milliseconds since
-- the Unix epoch). A conversation's `leaf_id` is the last question of the
-- branch it shows: a new question follows it.
ALTER TABLE messages ADD COLUMN parent_id TEXT;
ALTER TABLE messages ADD COLUMN slot BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN selected_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN leaf_id TEXT;

CREATE INDEX IF NOT EXISTS messages_by_parent ON messages (parent_id);

-- Conversations written before this migration are one branch, in the list
-- order (created_at, id): each message follows the latest question before it.
UPDATE messages SET selected_at = created_at;

UPDATE messages SET parent_id = (
    SELECT p.id FROM messages p
    WHERE p.conversation_id = messages.conversation_id AND p.role = 'user'
      AND (p.created_at < messages.created_at
           OR (p.created_at = messages.created_at AND p.id < messages.id))
    ORDER BY p.created_at DESC, p.id DESC LIMIT 1
);

UPDATE messages SET slot = (
    SELECT COUNT(*) FROM messages s
    WHERE s.parent_id = messages.parent_id AND s.role = 'assistant'
      AND (s.created_at < messages.created_at
           OR (s.created_at = messages.created_at AND s.id < messages.id))
) WHERE role = 'assistant' AND parent_id IS NOT NULL;

UPDATE conversations SET leaf_id = (
    SELECT m.id FROM messages m
    WHERE m.conversation_id = conversations.id AND m.role = 'user'
    ORDER BY m.created_at DESC, m.id DESC LIMIT 1
);
