//! Which rows make up the history of the conversations the SQLite writer has
//! just answered, so that the next question in one of them reads its history
//! by row, without walking the branch again.
//!
//! A question is sent with the branch shown before it (`super::history`):
//! found by a recursive query up the questions' parents, then sorted out
//! among versions in Rust. Most questions follow the one just answered in
//! the same conversation, whose history the writer has itself just read and
//! written: that history, plus the question, plus its replies once they are
//! final. The writer sees every write, so it knows when that stops being
//! true, and it then forgets the conversation:
//!
//! - a new version shown on the branch (a regenerated reply, a selected
//!   version, a message added outside a turn), or the conversation deleted;
//! - a reply of that turn finished a second time (it cannot happen through
//!   the engine, but a finish of a message that is not one of the turn's
//!   replies forgets the conversation all the same);
//! - a batch of writes rolled back, or replies marked interrupted: everything
//!   is forgotten.
//!
//! What is kept is row ids (and the ids of the replies still streaming), not
//! text: a few hundred bytes a conversation, read back with the very columns
//! the full query reads, so both ways give the same messages. A history that
//! shows a reply still streaming is not kept (its text would change), and
//! neither is one read without history (`include_history: false`). At most
//! [`Recent::MOST`] conversations are kept; past that, one is forgotten.

use std::collections::HashMap;

/// The histories kept, by conversation id.
#[derive(Debug, Default)]
pub(super) struct Recent {
    entries: HashMap<String, Entry>,
}

/// The history a question after `anchor` is sent with.
#[derive(Debug)]
struct Entry {
    /// The question a next question must follow for this history to hold.
    anchor: String,
    /// The history limit it was made for.
    limit: usize,
    /// Its rows, oldest first: the newest `limit` with text.
    rows: Vec<i64>,
    /// The anchor's replies, in slot order, while any is still streaming.
    pending: Vec<Reply>,
}

/// One reply of the anchor.
#[derive(Debug)]
pub(super) struct Reply {
    /// The message id.
    pub id: String,
    /// Its row.
    pub rowid: i64,
    /// Once final: whether it has text (a reply that failed before any has
    /// none, and no history shows it).
    pub has_text: Option<bool>,
}

impl Reply {
    /// A reply just stored, still streaming.
    pub(super) fn streaming(id: String, rowid: i64) -> Self {
        Reply {
            id,
            rowid,
            has_text: None,
        }
    }
}

impl Recent {
    /// Most conversations kept (a few hundred bytes each).
    pub(super) const MOST: usize = 10_000;

    /// The rows of the history of a question in `conversation` after
    /// `anchor`, if kept and final.
    pub(super) fn rows(&self, conversation: &str, anchor: &str, limit: usize) -> Option<&[i64]> {
        self.entries
            .get(conversation)
            .filter(|e| e.anchor == anchor && e.limit == limit && e.pending.is_empty())
            .map(|e| e.rows.as_slice())
    }

    /// Keeps the history after the question `anchor`, just stored: `rows`
    /// (before the question and with it), and its replies still streaming.
    pub(super) fn keep(
        &mut self,
        conversation: &str,
        anchor: &str,
        limit: usize,
        mut rows: Vec<i64>,
        replies: Vec<Reply>,
    ) {
        trim(&mut rows, limit);
        let entry = Entry {
            anchor: anchor.to_owned(),
            limit,
            rows,
            pending: replies,
        };
        if let Some(kept) = self.entries.get_mut(conversation) {
            *kept = entry;
            return;
        }
        if self.entries.len() >= Self::MOST {
            // Any one: a conversation forgotten is only read the long way.
            if let Some(key) = self.entries.keys().next().cloned() {
                self.entries.remove(&key);
            }
        }
        self.entries.insert(conversation.to_owned(), entry);
    }

    /// The message `id` of `conversation` is final, with or without text.
    pub(super) fn finished(&mut self, conversation: &str, id: &str, has_text: bool) {
        let Some(entry) = self.entries.get_mut(conversation) else {
            return;
        };
        match entry
            .pending
            .iter_mut()
            .find(|r| r.id == id && r.has_text.is_none())
        {
            Some(reply) => reply.has_text = Some(has_text),
            None => {
                self.entries.remove(conversation);
                return;
            }
        }
        if entry.pending.iter().all(|r| r.has_text.is_some()) {
            let replies = std::mem::take(&mut entry.pending);
            entry.rows.extend(
                replies
                    .into_iter()
                    .filter(|r| r.has_text == Some(true))
                    .map(|r| r.rowid),
            );
            trim(&mut entry.rows, entry.limit);
        }
    }

    /// Forgets `conversation`'s history.
    pub(super) fn forget(&mut self, conversation: &str) {
        self.entries.remove(conversation);
    }

    /// Forgets every history.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many conversations are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Keeps the newest `limit` of `rows`.
fn trim(rows: &mut Vec<i64>, limit: usize) {
    let skip = rows.len().saturating_sub(limit);
    rows.drain(..skip);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(ids: &[(&str, i64)]) -> Vec<Reply> {
        ids.iter()
            .map(|(id, rowid)| Reply::streaming((*id).to_owned(), *rowid))
            .collect()
    }

    #[test]
    fn a_history_holds_once_every_reply_is_final_with_those_that_have_text() {
        let mut recent = Recent::default();
        recent.keep("c", "q2", 4, vec![1, 2, 3], replies(&[("a", 4), ("b", 5)]));
        assert_eq!(recent.rows("c", "q2", 4), None, "replies still streaming");
        recent.finished("c", "a", false);
        assert_eq!(recent.rows("c", "q2", 4), None, "one still streaming");
        recent.finished("c", "b", true);
        // The reply without text is left out; the oldest row falls off.
        assert_eq!(recent.rows("c", "q2", 4), Some(&[1, 2, 3, 5][..]));
        assert_eq!(recent.rows("c", "q2", 3), None, "another limit");
        assert_eq!(recent.rows("c", "q1", 4), None, "another anchor");
        assert_eq!(recent.rows("d", "q2", 4), None, "another conversation");
        recent.keep("c", "q3", 3, vec![1, 2, 3, 5, 6], Vec::new());
        assert_eq!(recent.rows("c", "q3", 3), Some(&[3, 5, 6][..]));
    }

    #[test]
    fn a_finish_it_does_not_expect_forgets_the_conversation() {
        let mut recent = Recent::default();
        recent.keep("c", "q", 40, vec![1], replies(&[("a", 2)]));
        recent.finished("c", "a", true);
        assert_eq!(recent.rows("c", "q", 40), Some(&[1, 2][..]));
        // Finished again: its text may have changed.
        recent.finished("c", "a", true);
        assert_eq!(recent.rows("c", "q", 40), None);
        recent.keep("c", "q", 40, vec![1], replies(&[("a", 2)]));
        recent.finished("c", "elsewhere", true);
        recent.finished("c", "a", true);
        assert_eq!(recent.rows("c", "q", 40), None);
        // Other conversations' finishes change nothing here.
        recent.keep("c", "q", 40, vec![1], Vec::new());
        recent.finished("d", "a", true);
        assert_eq!(recent.rows("c", "q", 40), Some(&[1][..]));
        recent.forget("c");
        assert_eq!(recent.rows("c", "q", 40), None);
    }

    #[test]
    fn it_keeps_at_most_its_bound() {
        let mut recent = Recent::default();
        for i in 0..Recent::MOST + 10 {
            recent.keep(&format!("c{i}"), "q", 40, vec![1], Vec::new());
        }
        assert_eq!(recent.len(), Recent::MOST);
        let newest = format!("c{}", Recent::MOST + 9);
        assert_eq!(recent.rows(&newest, "q", 40), Some(&[1][..]));
        recent.clear();
        assert_eq!(recent.len(), 0);
    }
}
