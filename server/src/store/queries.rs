//! The SQL of the store's writes, shared by both writers (sqlx for PostgreSQL
//! and in-memory SQLite, rusqlite for an SQLite file) so that one set of
//! queries serves both. Placeholders are `$1`, `$2` …, numbered in order of
//! first use: PostgreSQL reads them as positions, SQLite as names whose
//! indexes follow that order.

/// The columns of a conversation, in the readers' order.
macro_rules! conversation_columns {
    () => {
        "id, owner, title, customer_id, created_at, updated_at"
    };
}

/// The columns of a message, in the readers' order.
macro_rules! message_columns {
    () => {
        "id, conversation_id, role, persona, model, content, status, \
         prompt_tokens, completion_tokens, stream_id, created_at, confidence, \
         usage_estimated, first_token_ms, total_ms"
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
     WHERE conversations.owner = excluded.owner RETURNING id";

/// Marks a conversation as just updated.
pub(super) const TOUCH_CONVERSATION: &str =
    "UPDATE conversations SET updated_at = $1 WHERE id = $2";

/// Renames a conversation.
pub(super) const RENAME: &str = "UPDATE conversations SET title = $1 WHERE id = $2";

/// Deletes a conversation's messages (explicitly, not by foreign key).
pub(super) const DELETE_MESSAGES: &str = "DELETE FROM messages WHERE conversation_id = $1";

/// Deletes a conversation.
pub(super) const DELETE_CONVERSATION: &str = "DELETE FROM conversations WHERE id = $1";

/// Inserts one message.
pub(super) const INSERT_MESSAGE: &str = "INSERT INTO messages \
     (id, conversation_id, role, persona, model, content, status, stream_id, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// The newest messages of a conversation that have text (newest first).
pub(super) const RECENT_MESSAGES: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND content <> '' \
     ORDER BY created_at DESC, id DESC LIMIT $2"
);

/// Saves the text so far of a reply still streaming.
pub(super) const CHECKPOINT: &str =
    "UPDATE messages SET content = $1, updated_at = $2 WHERE id = $3 AND status = 'streaming'";

/// Finalizes a reply.
/// Creates a project for its owner unless it exists.
pub(super) const ENSURE_PROJECT: &str = "INSERT INTO projects (id, owner, created_at) \
     VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING";

/// A project's owner.
pub(super) const PROJECT_OWNER: &str = "SELECT owner FROM projects WHERE id = $1";

/// The persona and model routing chose for a reply, and how sure it was.
pub(super) const SET_PERSONA: &str =
    "UPDATE messages SET persona = $1, model = $2, confidence = $3 WHERE id = $4";

pub(super) const FINISH: &str = "UPDATE messages SET content = $1, status = $2, \
     prompt_tokens = $3, completion_tokens = $4, updated_at = $5, usage_estimated = $6, \
     first_token_ms = $7, total_ms = $8 WHERE id = $9";

/// Marks every reply still streaming as interrupted (at startup).
pub(super) const MARK_INTERRUPTED: &str =
    "UPDATE messages SET status = 'interrupted', updated_at = $1 WHERE status = 'streaming'";

/// When a message was written (to truncate from it).
pub(super) const MESSAGE_TIME: &str =
    "SELECT created_at FROM messages WHERE id = $1 AND conversation_id = $2";

/// Deletes a message and every later one, in the list order (created_at, id).
pub(super) const TRUNCATE: &str = "DELETE FROM messages WHERE conversation_id = $1 \
     AND (created_at > $2 OR (created_at = $2 AND id >= $3))";

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

/// Inserts a question and its `replies` empty replies: ten values per row, in
/// [`INSERT_MESSAGE`]'s column order.
pub(super) fn insert_turn_sql(replies: usize) -> String {
    const COLUMNS: usize = 10;
    let mut sql = String::from(
        "INSERT INTO messages (id, conversation_id, role, persona, model, content, status, \
         stream_id, created_at, updated_at) VALUES ",
    );
    for row in 0..=replies {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..COLUMNS {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * COLUMNS + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_turn_insert_numbers_every_value() {
        assert_eq!(
            super::insert_turn_sql(1)
                .split_once("VALUES ")
                .map(|(_, values)| values),
            Some(
                "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10), \
                 ($11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
            )
        );
    }
}
