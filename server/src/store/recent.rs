//! The histories of the conversations the SQLite writer has just answered:
//! their rows, and their text while it fits, so that the next question in
//! one of them is sent with it without walking the branch again.
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
//! What is kept is row ids (and the ids of the replies still streaming),
//! and, within a byte budget over all conversations (`--history-cache-mib`,
//! [`Recent::BUDGET`] by default),
//! the messages themselves: the writer wrote every one of them (the
//! question with its turn, a reply's text with its finish), so it has their
//! text without reading it back. A question whose history is kept with its
//! text is sent with a copy of it, and SQLite is not asked at all; one whose
//! text did not fit is read by row, with the very columns the full query
//! reads, so every way gives the same messages. A history that shows a
//! reply still streaming is not kept (its text would change), and neither
//! is one read without history (`include_history: false`). At most
//! [`Recent::MOST`] conversations are kept; past that, one is forgotten.
//!
//! Only this process writes its database (the data directory is its own),
//! so a text kept here cannot change behind it.

use std::collections::HashMap;

use super::HistoryMessage;

/// The histories kept, by conversation id.
#[derive(Debug)]
pub(super) struct Recent {
    entries: HashMap<String, Entry>,
    /// Bytes of text kept, over every entry (see [`cost`]).
    bytes: usize,
    /// Most bytes of text kept.
    budget: usize,
}

/// The default budget (the tests' histories).
#[cfg(test)]
impl Default for Recent {
    fn default() -> Self {
        Recent::with_budget(Recent::BUDGET)
    }
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
    /// The messages at `rows`, in the same order, while they fit in the
    /// budget.
    texts: Option<Vec<HistoryMessage>>,
    /// What `texts` and the pending replies' texts count against the budget.
    bytes: usize,
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
    /// Its role (`assistant`).
    pub role: &'static str,
    /// Once final: whether it has text (a reply that failed before any has
    /// none, and no history shows it).
    pub has_text: Option<bool>,
    /// Once final, its text, if its entry keeps texts.
    content: Option<String>,
}

impl Reply {
    /// A reply just stored, still streaming.
    pub(super) fn streaming(id: String, rowid: i64, role: &'static str) -> Self {
        Reply {
            id,
            rowid,
            role,
            has_text: None,
            content: None,
        }
    }
}

/// A history taken out of [`Recent`] by the question that follows it.
#[derive(Debug)]
pub(super) struct Kept {
    /// Its rows, oldest first.
    pub rows: Vec<i64>,
    /// The messages at `rows`, if they were kept.
    pub texts: Option<Vec<HistoryMessage>>,
}

/// What one kept message counts against the budget: its three strings and
/// their header.
pub(super) fn cost(id: &str, role: &str, content: &str) -> usize {
    std::mem::size_of::<HistoryMessage>() + id.len() + role.len() + content.len()
}

/// [`cost`] of a message.
pub(super) fn cost_of(message: &HistoryMessage) -> usize {
    cost(&message.id, &message.role, &message.content)
}

impl Recent {
    /// Most conversations kept (a few hundred bytes each without text).
    pub(super) const MOST: usize = 10_000;

    /// Most bytes of message text kept by default, over every conversation
    /// (`--history-cache-mib`): 16 MiB hold 40 messages of 1 KiB for about
    /// 400 conversations.
    pub(super) const BUDGET: usize = 16 << 20;

    /// Keeping at most `budget` bytes of text.
    pub(super) fn with_budget(budget: usize) -> Self {
        Recent {
            entries: HashMap::new(),
            bytes: 0,
            budget,
        }
    }

    /// Takes out the history of a question in `conversation` after
    /// `anchor`, if kept and final. The caller keeps the next one (or
    /// forgets the conversation).
    pub(super) fn take(&mut self, conversation: &str, anchor: &str, limit: usize) -> Option<Kept> {
        let entry = self.entries.get(conversation)?;
        if entry.anchor != anchor || entry.limit != limit || !entry.pending.is_empty() {
            return None;
        }
        let entry = self.entries.remove(conversation)?;
        self.bytes -= entry.bytes;
        Some(Kept {
            rows: entry.rows,
            texts: entry.texts,
        })
    }

    /// Whether `bytes` more of text fit in the budget.
    pub(super) fn has_room(&self, bytes: usize) -> bool {
        self.bytes.saturating_add(bytes) <= self.budget
    }

    /// Keeps the history after the question `anchor`, just stored: `rows`
    /// (before the question and with it), their messages if given (dropped
    /// if they do not fit), and the question's replies still streaming.
    pub(super) fn keep(
        &mut self,
        conversation: &str,
        anchor: &str,
        limit: usize,
        rows: Vec<i64>,
        texts: Option<Vec<HistoryMessage>>,
        replies: Vec<Reply>,
    ) {
        self.forget(conversation);
        let texts = texts.filter(|t| t.len() == rows.len());
        let bytes = texts.iter().flatten().map(cost_of).sum();
        let mut entry = Entry {
            anchor: anchor.to_owned(),
            limit,
            rows,
            texts,
            bytes,
            pending: replies,
        };
        entry.trim();
        if self.has_room(entry.bytes) {
            self.bytes += entry.bytes;
        } else {
            entry.drop_texts();
        }
        if self.entries.len() >= Self::MOST {
            // Any one: a conversation forgotten is only read the long way.
            if let Some(key) = self.entries.keys().next().cloned() {
                self.forget(&key);
            }
        }
        self.entries.insert(conversation.to_owned(), entry);
    }

    /// The message `id` of `conversation` is final, with `content` (empty:
    /// without text).
    pub(super) fn finished(&mut self, conversation: &str, id: &str, content: &str) {
        let Some(entry) = self.entries.get_mut(conversation) else {
            return;
        };
        let Some(reply) = entry
            .pending
            .iter_mut()
            .find(|r| r.id == id && r.has_text.is_none())
        else {
            self.forget(conversation);
            return;
        };
        reply.has_text = Some(!content.is_empty());
        if entry.texts.is_some() && !content.is_empty() {
            let bytes = cost(&reply.id, reply.role, content);
            if self.bytes.saturating_add(bytes) <= self.budget {
                reply.content = Some(content.to_owned());
                entry.bytes += bytes;
                self.bytes += bytes;
            } else {
                // Over the budget: this conversation is read by row.
                self.bytes -= entry.bytes;
                entry.drop_texts();
            }
        }
        if entry.pending.iter().all(|r| r.has_text.is_some()) {
            let before = entry.bytes;
            entry.settle();
            self.bytes = self.bytes - before + entry.bytes;
        }
    }

    /// Forgets `conversation`'s history.
    pub(super) fn forget(&mut self, conversation: &str) {
        if let Some(entry) = self.entries.remove(conversation) {
            self.bytes -= entry.bytes;
        }
    }

    /// Forgets every history.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// How many conversations are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The history kept after `anchor`, without taking it: its rows, and
    /// its messages if kept.
    #[cfg(test)]
    fn peek(
        &self,
        conversation: &str,
        anchor: &str,
        limit: usize,
    ) -> Option<(&[i64], Option<&[HistoryMessage]>)> {
        self.entries
            .get(conversation)
            .filter(|e| e.anchor == anchor && e.limit == limit && e.pending.is_empty())
            .map(|e| (e.rows.as_slice(), e.texts.as_deref()))
    }
}

impl Entry {
    /// Its texts are no longer kept (nor its pending replies').
    fn drop_texts(&mut self) {
        self.texts = None;
        self.bytes = 0;
        for reply in &mut self.pending {
            reply.content = None;
        }
    }

    /// Every pending reply is final: those with text join the history.
    fn settle(&mut self) {
        let replies = std::mem::take(&mut self.pending);
        for reply in replies {
            if reply.has_text != Some(true) {
                continue;
            }
            self.rows.push(reply.rowid);
            match (&mut self.texts, reply.content) {
                (Some(texts), Some(content)) => texts.push(HistoryMessage {
                    id: reply.id,
                    role: reply.role.to_owned(),
                    content,
                }),
                // Not kept: the rows alone, read back next time.
                (texts, _) => *texts = None,
            }
        }
        if self.texts.is_none() {
            self.bytes = 0;
        }
        self.trim();
    }

    /// Keeps the newest `limit` rows (and texts).
    fn trim(&mut self) {
        let skip = self.rows.len().saturating_sub(self.limit);
        self.rows.drain(..skip);
        if let Some(texts) = &mut self.texts {
            for message in texts.drain(..skip) {
                self.bytes -= cost_of(&message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(ids: &[(&str, i64)]) -> Vec<Reply> {
        ids.iter()
            .map(|(id, rowid)| Reply::streaming((*id).to_owned(), *rowid, "assistant"))
            .collect()
    }

    fn message(id: &str, role: &str, content: &str) -> HistoryMessage {
        HistoryMessage {
            id: id.to_owned(),
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }

    fn rows<'a>(recent: &'a Recent, c: &str, q: &str, limit: usize) -> Option<&'a [i64]> {
        recent.peek(c, q, limit).map(|(rows, _)| rows)
    }

    #[test]
    fn a_history_holds_once_every_reply_is_final_with_those_that_have_text() {
        let mut recent = Recent::default();
        recent.keep(
            "c",
            "q2",
            4,
            vec![1, 2, 3],
            None,
            replies(&[("a", 4), ("b", 5)]),
        );
        assert_eq!(rows(&recent, "c", "q2", 4), None, "replies still streaming");
        recent.finished("c", "a", "");
        assert_eq!(rows(&recent, "c", "q2", 4), None, "one still streaming");
        recent.finished("c", "b", "text");
        // The reply without text is left out; the oldest row falls off.
        assert_eq!(rows(&recent, "c", "q2", 4), Some(&[1, 2, 3, 5][..]));
        assert_eq!(rows(&recent, "c", "q2", 3), None, "another limit");
        assert_eq!(rows(&recent, "c", "q1", 4), None, "another anchor");
        assert_eq!(rows(&recent, "d", "q2", 4), None, "another conversation");
        recent.keep("c", "q3", 3, vec![1, 2, 3, 5, 6], None, Vec::new());
        assert_eq!(rows(&recent, "c", "q3", 3), Some(&[3, 5, 6][..]));
    }

    #[test]
    fn texts_follow_their_rows_through_replies_and_the_limit() {
        let mut recent = Recent::default();
        let texts = vec![message("u1", "user", "one"), message("q2", "user", "two")];
        recent.keep(
            "c",
            "q2",
            3,
            vec![1, 2],
            Some(texts),
            replies(&[("a", 3), ("b", 4), ("x", 5)]),
        );
        recent.finished("c", "a", "first");
        recent.finished("c", "x", "");
        assert_eq!(recent.peek("c", "q2", 3), None, "b still streaming");
        recent.finished("c", "b", "second");
        let (rows, texts) = recent.peek("c", "q2", 3).unwrap();
        assert_eq!(rows, &[2, 3, 4][..]);
        assert_eq!(
            texts.unwrap(),
            &[
                message("q2", "user", "two"),
                message("a", "assistant", "first"),
                message("b", "assistant", "second"),
            ][..]
        );
        let counted: usize = texts.unwrap().iter().map(cost_of).sum();
        assert_eq!(recent.bytes, counted, "what is kept is what is counted");
        // Taken out, nothing is kept any more.
        let kept = recent.take("c", "q2", 3).unwrap();
        assert_eq!(kept.rows, vec![2, 3, 4]);
        assert_eq!(kept.texts.unwrap().len(), 3);
        assert_eq!(recent.len(), 0);
        assert_eq!(recent.bytes, 0);
        // Texts that do not match their rows are not kept.
        recent.keep(
            "c",
            "q",
            3,
            vec![1, 2],
            Some(vec![message("q", "user", "q")]),
            Vec::new(),
        );
        assert_eq!(recent.peek("c", "q", 3), Some((&[1, 2][..], None)));
        assert_eq!(
            recent.take("c", "other", 3).map(|k| k.rows),
            None,
            "another anchor"
        );
        assert_eq!(
            recent.len(),
            1,
            "a take that does not match leaves the entry"
        );
    }

    #[test]
    fn past_its_budget_a_history_is_kept_by_row_only() {
        let one = cost_of(&message("q1", "user", "0123456789"));
        let mut recent = Recent::with_budget(3 * one);
        let texts = |q: &str| Some(vec![message(q, "user", "0123456789")]);
        recent.keep("c1", "q1", 40, vec![1], texts("q1"), Vec::new());
        recent.keep("c2", "q1", 40, vec![2], texts("q1"), Vec::new());
        recent.keep("c3", "q1", 40, vec![3], texts("q1"), replies(&[("a1", 4)]));
        assert_eq!(recent.bytes, 3 * one, "exactly full");
        recent.keep("c4", "q1", 40, vec![5], texts("q1"), Vec::new());
        assert_eq!(
            recent.peek("c4", "q1", 40),
            Some((&[5][..], None)),
            "no room"
        );
        // A reply's text over the budget drops its conversation's texts.
        recent.finished("c3", "a1", "reply");
        assert_eq!(recent.peek("c3", "q1", 40), Some((&[3, 4][..], None)));
        assert_eq!(recent.bytes, 2 * one);
        // Room again once a conversation is forgotten or replaced.
        recent.forget("c1");
        recent.keep("c2", "q1", 40, vec![2], None, Vec::new());
        assert_eq!(recent.bytes, 0);
        recent.keep("c4", "q1", 40, vec![5], texts("q1"), Vec::new());
        assert!(recent.peek("c4", "q1", 40).unwrap().1.is_some());
        recent.clear();
        assert_eq!(recent.bytes, 0);
    }

    #[test]
    fn a_finish_it_does_not_expect_forgets_the_conversation() {
        let mut recent = Recent::default();
        let texts = Some(vec![message("u", "user", "hello")]);
        recent.keep("c", "q", 40, vec![1], texts.clone(), replies(&[("a", 2)]));
        recent.finished("c", "a", "text");
        assert_eq!(rows(&recent, "c", "q", 40), Some(&[1, 2][..]));
        // Finished again: its text may have changed.
        recent.finished("c", "a", "other text");
        assert_eq!(rows(&recent, "c", "q", 40), None);
        assert_eq!(recent.bytes, 0);
        recent.keep("c", "q", 40, vec![1], texts, replies(&[("a", 2)]));
        recent.finished("c", "elsewhere", "text");
        recent.finished("c", "a", "text");
        assert_eq!(rows(&recent, "c", "q", 40), None);
        assert_eq!(recent.bytes, 0);
        // Other conversations' finishes change nothing here.
        recent.keep("c", "q", 40, vec![1], None, Vec::new());
        recent.finished("d", "a", "text");
        assert_eq!(rows(&recent, "c", "q", 40), Some(&[1][..]));
        recent.forget("c");
        assert_eq!(rows(&recent, "c", "q", 40), None);
    }

    #[test]
    fn it_keeps_at_most_its_bound() {
        let mut recent = Recent::default();
        for i in 0..Recent::MOST + 10 {
            let texts = Some(vec![message("q", "user", "text")]);
            recent.keep(&format!("c{i}"), "q", 40, vec![1], texts, Vec::new());
        }
        assert_eq!(recent.len(), Recent::MOST);
        assert_eq!(
            recent.bytes,
            Recent::MOST * cost_of(&message("q", "user", "text"))
        );
        let newest = format!("c{}", Recent::MOST + 9);
        assert_eq!(rows(&recent, &newest, "q", 40), Some(&[1][..]));
        recent.clear();
        assert_eq!(recent.len(), 0);
    }
}
