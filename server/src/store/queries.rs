//! The SQL of the store's writes, shared by both writers (sqlx for PostgreSQL
//! and in-memory SQLite, rusqlite for an SQLite file) so that one set of
//! queries serves both. Placeholders are `$1`, `$2` …, numbered in order of
//! first use: PostgreSQL reads them as positions, SQLite as names whose
//! indexes follow that order.

/// The columns of a conversation, in the readers' order.
macro_rules! conversation_columns {
    () => {
        "id, owner, title, customer_id, created_at, updated_at, leaf_id"
    };
}

/// The columns of a message, in the readers' order.
macro_rules! message_columns {
    () => {
        "id, conversation_id, role, persona, model, content, status, \
         prompt_tokens, completion_tokens, stream_id, created_at, confidence, \
         usage_estimated, first_token_ms, total_ms, parent_id, slot, selected_at, sources"
    };
}

/// The columns of a conversation, in the readers' order.
pub(super) const CONVERSATION_COLUMNS: &str = conversation_columns!();
/// The columns of a message, in the readers' order.
pub(super) const MESSAGE_COLUMNS: &str = message_columns!();

/// One conversation by id.
pub(super) const CONVERSATION: &str = concat!(
    "SELECT ",
    conversation_columns!(),
    " FROM conversations WHERE id = $1"
);

/// Creates a conversation unless it exists.
pub(super) const ENSURE_CONVERSATION: &str = "INSERT INTO conversations \
     (id, owner, title, customer_id, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING";

/// Creates a conversation for its owner, or marks the owner's as just
/// updated; returns no row when someone else owns it.
pub(super) const CLAIM_CONVERSATION: &str = "INSERT INTO conversations \
     (id, owner, title, customer_id, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at \
     WHERE conversations.owner = excluded.owner RETURNING leaf_id";

/// [`CLAIM_CONVERSATION`] for the SQLite writer, which reads the owner and
/// the leaf first ([`CONVERSATION_OWNER_AND_LEAF`]): without `RETURNING`
/// (SQLite gathers such a statement's rows in a temporary table, which cost
/// more than the statement itself), and making question `$7` the last of
/// the branch the conversation shows unless `$7` is NULL (a regenerated
/// reply), one statement where it was the claim and then [`SET_LEAF`]. No
/// row changed means someone else owns the conversation.
pub(super) const CLAIM_CONVERSATION_AT_LEAF: &str = "INSERT INTO conversations \
     (id, owner, title, customer_id, created_at, updated_at, leaf_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at, \
     leaf_id = coalesce(excluded.leaf_id, conversations.leaf_id) \
     WHERE conversations.owner = excluded.owner";

/// A conversation's owner and the last question of the branch it shows.
pub(super) const CONVERSATION_OWNER_AND_LEAF: &str =
    "SELECT owner, leaf_id FROM conversations WHERE id = $1";

/// The conversation of a message.
pub(super) const MESSAGE_CONVERSATION: &str = "SELECT conversation_id FROM messages WHERE id = $1";

/// Makes a question the last of the branch its conversation shows.
pub(super) const SET_LEAF: &str = "UPDATE conversations SET leaf_id = $1 WHERE id = $2";

/// Selects a message among its versions.
pub(super) const SELECT_VERSION: &str = "UPDATE messages SET selected_at = $1 WHERE id = $2";

/// The parent of a question that replaces message `$1` of conversation `$2`:
/// that question's parent, or, for a reply, its question's parent. No row if
/// the message is not in the conversation; NULL for the first question.
pub(super) const REPLACED_PARENT: &str = "SELECT CASE WHEN m.role = 'user' THEN m.parent_id \
     ELSE q.parent_id END AS parent_id FROM messages m LEFT JOIN messages q ON q.id = m.parent_id \
     WHERE m.id = $1 AND m.conversation_id = $2";

/// A reply with its question, to generate it again.
pub(super) const REGENERATE_TARGET: &str = "SELECT r.conversation_id, r.persona, r.confidence, \
     r.slot, q.id AS question_id, q.content AS question, q.parent_id AS question_parent \
     FROM messages r JOIN messages q ON q.id = r.parent_id \
     WHERE r.id = $1 AND r.role = 'assistant' AND q.role = 'user'";

/// The branch query of [`BRANCH_MESSAGES`], selecting `$columns`.
macro_rules! branch_messages {
    ($($columns:tt)*) => {
        concat!(
            "WITH RECURSIVE path (id, depth) AS (SELECT CAST($1 AS TEXT), 1 \
             UNION ALL SELECT m.parent_id, path.depth + 1 FROM messages m JOIN path ON m.id = path.id \
             WHERE m.parent_id IS NOT NULL AND path.depth < $2) SELECT ",
            $($columns)*,
            " FROM messages WHERE id IN (SELECT id FROM path) \
             OR (role = 'assistant' AND parent_id IN (SELECT id FROM path))"
        )
    };
}

/// The branch that ends at question `$1`, at most `$2` questions back from
/// it, with every reply to those questions (the caller keeps the selected
/// version of each): the history a question on that branch is sent with.
pub(super) const BRANCH_MESSAGES: &str = branch_messages!(message_columns!());

/// [`BRANCH_MESSAGES`] with each row's rowid after its columns (SQLite).
pub(super) const BRANCH_MESSAGES_ROWIDS: &str = branch_messages!(message_columns!(), ", rowid");

/// What a history shows of the messages at the rowids of the JSON array `$1`
/// (SQLite) that are in conversation `$2`: each one's place in the array,
/// id, role and text. `CROSS JOIN` keeps the array the outer loop, so each
/// row is one primary-key lookup, in the array's order.
pub(super) const HISTORY_BY_ROWIDS: &str = "SELECT j.key, m.id, m.role, m.content \
     FROM json_each($1) AS j CROSS JOIN messages AS m ON m.rowid = j.value \
     WHERE m.conversation_id = $2";

/// Marks a conversation as just updated.
pub(super) const TOUCH_CONVERSATION: &str =
    "UPDATE conversations SET updated_at = $1 WHERE id = $2";

/// Renames a conversation.
pub(super) const RENAME: &str = "UPDATE conversations SET title = $1 WHERE id = $2";

/// Deletes a conversation's messages (explicitly, not by foreign key).
pub(super) const DELETE_MESSAGES: &str = "DELETE FROM messages WHERE conversation_id = $1";

/// Deletes a conversation.
pub(super) const DELETE_CONVERSATION: &str = "DELETE FROM conversations WHERE id = $1";

/// Appends one message to the branch its conversation shows: a question
/// follows the branch's last question (the caller then makes it the last), a
/// reply answers that question in the next free slot.
pub(super) const INSERT_MESSAGE: &str = "INSERT INTO messages \
     (id, conversation_id, role, persona, model, content, status, stream_id, created_at, \
     updated_at, parent_id, slot, selected_at) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $9, c.leaf_id, \
     CASE WHEN $3 = 'user' THEN 0 ELSE (SELECT COUNT(*) FROM messages r \
     WHERE r.parent_id = c.leaf_id AND r.role = 'assistant') END, $9 \
     FROM conversations c WHERE c.id = $2";

/// Saves the text so far of a reply still streaming.
pub(super) const CHECKPOINT: &str =
    "UPDATE messages SET content = $1, updated_at = $2 WHERE id = $3 AND status = 'streaming'";

/// Creates a project for its owner unless it exists.
pub(super) const ENSURE_PROJECT: &str = "INSERT INTO projects (id, owner, created_at) \
     VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING";

/// A project's owner.
pub(super) const PROJECT_OWNER: &str = "SELECT owner FROM projects WHERE id = $1";

/// Records the sources a reply was given (JSON).
pub(super) const SET_SOURCES: &str = "UPDATE messages SET sources = $1 WHERE id = $2";

/// The persona and model routing chose for a reply, and how sure it was.
pub(super) const SET_PERSONA: &str =
    "UPDATE messages SET persona = $1, model = $2, confidence = $3 WHERE id = $4";

/// The update of [`FINISH`].
macro_rules! finish {
    () => {
        "UPDATE messages SET content = $1, status = $2, \
         prompt_tokens = $3, completion_tokens = $4, updated_at = $5, usage_estimated = $6, \
         first_token_ms = $7, total_ms = $8 WHERE id = $9"
    };
}

/// Finalizes a reply.
pub(super) const FINISH: &str = finish!();

/// Indexes for search the messages the triggers noted (SQLite, migration
/// 0010): a noted row is never streaming and not yet in the index.
pub(super) const INDEX_PENDING: &str = "INSERT INTO messages_fts (rowid, content) \
     SELECT m.rowid, m.content FROM search_pending p JOIN messages m ON m.rowid = p.message_rowid";

/// Empties the list of messages to index (after [`INDEX_PENDING`], in its transaction).
pub(super) const CLEAR_PENDING: &str = "DELETE FROM search_pending";

/// [`INDEX_PENDING`] for the first `$1` noted rows only (the SQLite writer
/// indexes in bounded chunks, so a question never waits behind a long run).
pub(super) const INDEX_PENDING_CHUNK: &str = "INSERT INTO messages_fts (rowid, content) \
     SELECT m.rowid, m.content FROM (SELECT message_rowid FROM search_pending \
     ORDER BY message_rowid LIMIT $1) p JOIN messages m ON m.rowid = p.message_rowid";

/// Takes the rows [`INDEX_PENDING_CHUNK`] indexed off the list (the same
/// first `$1`, in its transaction).
pub(super) const CLEAR_PENDING_CHUNK: &str = "DELETE FROM search_pending WHERE message_rowid IN \
     (SELECT message_rowid FROM search_pending ORDER BY message_rowid LIMIT $1)";

/// Marks every reply still streaming as interrupted (at startup).
pub(super) const MARK_INTERRUPTED: &str =
    "UPDATE messages SET status = 'interrupted', updated_at = $1 WHERE status = 'streaming'";

/// The columns of a shared link, in the readers' order.
macro_rules! share_columns {
    () => {
        "token, conversation_id, created_at, shared_upto, expires_at, revoked_at"
    };
}

/// The live link of a conversation at time `$2`, newest first.
pub(super) const LIVE_SHARE: &str = concat!(
    "SELECT ",
    share_columns!(),
    " FROM shares WHERE conversation_id = $1 AND revoked_at IS NULL \
     AND (expires_at IS NULL OR expires_at > $2) ORDER BY created_at DESC LIMIT 1"
);

/// A link by its token.
pub(super) const SHARE_BY_TOKEN: &str =
    concat!("SELECT ", share_columns!(), " FROM shares WHERE token = $1");

/// A new link.
pub(super) const INSERT_SHARE: &str = "INSERT INTO shares \
     (token, conversation_id, created_at, shared_upto, expires_at) VALUES ($1, $2, $3, $4, $5)";

/// A live link shared again: its snapshot moves to now, its expiry is the new one.
pub(super) const RESHARE: &str =
    "UPDATE shares SET shared_upto = $1, expires_at = $2 WHERE token = $3";

/// Revokes a conversation's live links.
pub(super) const REVOKE_SHARES: &str =
    "UPDATE shares SET revoked_at = $1 WHERE conversation_id = $2 AND revoked_at IS NULL";

/// Deletes a conversation's links (explicitly, not by foreign key).
pub(super) const DELETE_SHARES: &str = "DELETE FROM shares WHERE conversation_id = $1";

/// How many values [`insert_turn_sql`] takes per row.
pub(super) const TURN_COLUMNS: usize = 11;

/// Inserts `rows` messages (a question and its empty replies, or one reply
/// regenerated): [`TURN_COLUMNS`] values per row, in this column order
/// (`updated_at` and `selected_at` take `created_at`).
pub(super) fn insert_turn_sql(rows: usize) -> String {
    const COLUMNS: usize = TURN_COLUMNS;
    let mut sql = String::from(
        "INSERT INTO messages (id, conversation_id, role, persona, model, content, status, \
         stream_id, created_at, updated_at, parent_id, slot, selected_at) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        // created_at, once more as updated_at, after parent_id and slot as selected_at.
        let at = |column: usize| (row * COLUMNS + column + 1).to_string();
        for column in 0..COLUMNS {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&at(column));
            if column == 8 {
                sql.push_str(", $");
                sql.push_str(&at(8));
            }
        }
        sql.push_str(", $");
        sql.push_str(&at(8));
        sql.push(')');
    }
    sql
}

/// [`insert_turn_sql`] of one row (the SQLite writer inserts a turn row by
/// row), built once.
pub(super) static INSERT_TURN_ROW: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_turn_sql(1));

#[cfg(test)]
mod tests {
    #[test]
    fn a_turn_insert_numbers_every_value() {
        assert_eq!(
            super::insert_turn_sql(2)
                .split_once("VALUES ")
                .map(|(_, values)| values),
            Some(
                "($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $9), \
                 ($12, $13, $14, $15, $16, $17, $18, $19, $20, $20, $21, $22, $20)"
            )
        );
    }
}
