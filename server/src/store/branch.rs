//! Branches: which of a conversation's messages are shown, and what selecting
//! one version changes. Pure functions over stored rows, shared by both
//! databases.
//!
//! The tree: a question's parent is the question before it on its branch, a
//! reply's parent is its question and its slot is its place among that
//! question's side-by-side replies. Messages with the same parent, role and
//! slot are versions of one another (an edited question, a regenerated
//! reply); the one shown is the one selected last. A conversation shows the
//! branch that ends at its leaf question.

use std::collections::{HashMap, HashSet};

use super::StoredMessage;

/// The order of versions among themselves: oldest first.
fn age(message: &StoredMessage) -> (i64, &str) {
    (message.created_at, message.id.as_str())
}

/// Which version wins: the one selected last (then the newest).
fn preference(message: &StoredMessage) -> (i64, i64, &str) {
    (message.selected_at, message.created_at, message.id.as_str())
}

fn is_question(message: &StoredMessage) -> bool {
    message.role == "user"
}

/// The branch of `all` (a conversation's messages, or part of one) that ends
/// at the question `leaf`, oldest first: each question on it, then the shown
/// version of each of its reply slots. Every message carries its versions'
/// ids. When `leaf` is not a question of `all`, the branch of the newest
/// question is shown. Replies that answer no question (written before any)
/// come first.
pub fn shown(all: Vec<StoredMessage>, leaf: Option<&str>) -> Vec<StoredMessage> {
    let index: HashMap<&str, usize> = all
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();
    let question_at = |id: &str| index.get(id).copied().filter(|&i| is_question(&all[i]));
    let leaf = leaf.and_then(question_at).or_else(|| {
        (0..all.len())
            .filter(|&i| is_question(&all[i]))
            .max_by(|&a, &b| age(&all[a]).cmp(&age(&all[b])))
    });

    // The questions from the leaf up to the first (or as far as `all` goes).
    let mut path = Vec::new();
    let mut seen = HashSet::new();
    let mut at = leaf;
    while let Some(i) = at {
        if !seen.insert(i) {
            break;
        }
        path.push(i);
        at = all[i].parent_id.as_deref().and_then(question_at);
    }
    path.reverse();

    // Versions, grouped by (role, parent, slot).
    let mut groups: HashMap<(bool, Option<&str>, i64), Vec<usize>> = HashMap::new();
    for (i, m) in all.iter().enumerate() {
        let slot = if is_question(m) { 0 } else { m.slot };
        groups
            .entry((is_question(m), m.parent_id.as_deref(), slot))
            .or_default()
            .push(i);
    }
    for members in groups.values_mut() {
        members.sort_by(|&a, &b| age(&all[a]).cmp(&age(&all[b])));
    }
    let versions_of = |i: usize| -> Vec<String> {
        let m = &all[i];
        let slot = if is_question(m) { 0 } else { m.slot };
        groups
            .get(&(is_question(m), m.parent_id.as_deref(), slot))
            .map(|members| members.iter().map(|&j| all[j].id.clone()).collect())
            .unwrap_or_default()
    };
    // The shown reply of each slot of a question (`None`: replies to none).
    let replies_of = |question: Option<&str>| -> Vec<usize> {
        let mut slots: Vec<(i64, usize)> = groups
            .iter()
            .filter(|((q, parent, _), _)| {
                !*q && match question {
                    Some(id) => *parent == Some(id),
                    None => parent.is_none_or(|p| !index.contains_key(p)),
                }
            })
            .filter_map(|((_, _, slot), members)| {
                let best = members
                    .iter()
                    .copied()
                    .max_by(|&a, &b| preference(&all[a]).cmp(&preference(&all[b])))?;
                Some((*slot, best))
            })
            .collect();
        slots.sort_unstable();
        slots.into_iter().map(|(_, i)| i).collect()
    };

    let mut order = replies_of(None);
    for &q in &path {
        order.push(q);
        order.extend(replies_of(Some(all[q].id.as_str())));
    }
    let mut versions: Vec<Vec<String>> = order.iter().map(|&i| versions_of(i)).collect();
    let mut slots: Vec<Option<StoredMessage>> = all.into_iter().map(Some).collect();
    order
        .into_iter()
        .zip(versions.iter_mut())
        .filter_map(|(i, versions)| {
            let mut message = slots[i].take()?;
            message.versions = std::mem::take(versions);
            Some(message)
        })
        .collect()
}

/// [`shown`] as it was at `upto` (milliseconds since the Unix epoch): of the
/// messages written by then, the branch that ends at `leaf` or, if `leaf`
/// was written later, at the newest of its ancestors written by then.
pub fn shown_upto(all: Vec<StoredMessage>, leaf: Option<&str>, upto: i64) -> Vec<StoredMessage> {
    let by_id: HashMap<&str, &StoredMessage> = all.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut leaf = leaf;
    for _ in 0..all.len() {
        match leaf.and_then(|id| by_id.get(id)) {
            Some(m) if m.created_at > upto => leaf = m.parent_id.as_deref(),
            _ => break,
        }
    }
    let leaf = leaf.map(str::to_owned);
    drop(by_id);
    let kept = all.into_iter().filter(|m| m.created_at <= upto).collect();
    shown(kept, leaf.as_deref())
}

/// What selecting `target` (a message of `all`, a conversation's messages)
/// writes: the messages whose `selected_at` moves to now (the target, and
/// every question from its own up to the first, so that each is the shown
/// version at its level), and the new leaf (from the target's question down,
/// the child question selected last at each step). `None` if `target` is not
/// in `all`, or is a reply to no question.
pub fn select(all: &[StoredMessage], target: &str) -> Option<(Vec<String>, String)> {
    let index: HashMap<&str, usize> = all
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();
    let target_at = *index.get(target)?;
    let question_at = |id: &str| index.get(id).copied().filter(|&i| is_question(&all[i]));
    let own_question = if is_question(&all[target_at]) {
        target_at
    } else {
        question_at(all[target_at].parent_id.as_deref()?)?
    };
    let mut bump = vec![all[target_at].id.clone()];
    let mut seen = HashSet::new();
    let mut at = Some(own_question);
    while let Some(i) = at {
        if !seen.insert(i) {
            break;
        }
        if i != target_at {
            bump.push(all[i].id.clone());
        }
        at = all[i].parent_id.as_deref().and_then(question_at);
    }
    // Down from the target's question: the selected child question each time.
    let mut leaf = own_question;
    let mut visited = HashSet::from([leaf]);
    loop {
        let child = all
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                is_question(m) && m.parent_id.as_deref() == Some(all[leaf].id.as_str())
            })
            .max_by(|(_, a), (_, b)| preference(a).cmp(&preference(b)))
            .map(|(i, _)| i);
        match child {
            Some(next) if visited.insert(next) => leaf = next,
            _ => break,
        }
    }
    Some((bump, all[leaf].id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Figures, MessageStatus};

    /// A message: `id`, parent, slot; its times from `at`.
    fn message(id: &str, role: &str, parent: Option<&str>, slot: i64, at: i64) -> StoredMessage {
        StoredMessage {
            id: id.to_owned(),
            conversation_id: "c".to_owned(),
            role: role.to_owned(),
            persona: None,
            model: None,
            content: id.to_owned(),
            status: MessageStatus::Complete,
            stream_id: None,
            created_at: at,
            confidence: None,
            figures: Figures::default(),
            parent_id: parent.map(str::to_owned),
            slot,
            selected_at: at,
            sources: None,
            versions: Vec::new(),
        }
    }

    fn ids(messages: &[StoredMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.id.as_str()).collect()
    }

    /// q1 → a1; q2 → a2 (regenerated as a2b, side by side with b2 in slot 1);
    /// q2 edited as q2b → a2c; q3 after q2.
    fn tree() -> Vec<StoredMessage> {
        vec![
            message("q1", "user", None, 0, 1),
            message("a1", "assistant", Some("q1"), 0, 1),
            message("q2", "user", Some("q1"), 0, 2),
            message("a2", "assistant", Some("q2"), 0, 2),
            message("b2", "assistant", Some("q2"), 1, 2),
            message("q3", "user", Some("q2"), 0, 3),
            message("a3", "assistant", Some("q3"), 0, 3),
            message("a2b", "assistant", Some("q2"), 0, 4),
            message("q2b", "user", Some("q1"), 0, 5),
            message("a2c", "assistant", Some("q2b"), 0, 5),
        ]
    }

    #[test]
    fn the_leaf_decides_the_branch_and_each_slot_shows_its_newest_selection() {
        let shown_q3 = shown(tree(), Some("q3"));
        assert_eq!(ids(&shown_q3), ["q1", "a1", "q2", "a2b", "b2", "q3", "a3"]);
        let q2 = &shown_q3[2];
        assert_eq!(q2.versions, ["q2", "q2b"]);
        assert_eq!(shown_q3[3].versions, ["a2", "a2b"]);
        assert_eq!(shown_q3[4].versions, ["b2"]);
        assert_eq!(ids(&shown(tree(), Some("q2b"))), ["q1", "a1", "q2b", "a2c"]);
    }

    #[test]
    fn an_unknown_leaf_shows_the_branch_of_the_newest_question() {
        assert_eq!(
            ids(&shown(tree(), Some("gone"))),
            ["q1", "a1", "q2b", "a2c"]
        );
        assert_eq!(ids(&shown(tree(), None)), ["q1", "a1", "q2b", "a2c"]);
        assert!(shown(Vec::new(), None).is_empty());
    }

    #[test]
    fn selecting_an_old_question_returns_to_its_branch_as_it_was_left() {
        let (bump, leaf) = select(&tree(), "q2").unwrap();
        assert_eq!(bump, ["q2", "q1"]);
        assert_eq!(leaf, "q3");
        // A reply: it and its question's line are selected; the leaf follows.
        let (bump, leaf) = select(&tree(), "a2").unwrap();
        assert_eq!(bump, ["a2", "q2", "q1"]);
        assert_eq!(leaf, "q3");
        assert_eq!(select(&tree(), "nope"), None);
    }

    #[test]
    fn a_selection_written_back_is_what_is_shown() {
        let mut all = tree();
        let (bump, leaf) = select(&all, "a2").unwrap();
        for m in &mut all {
            if bump.contains(&m.id) {
                m.selected_at = 100;
            }
        }
        assert_eq!(
            ids(&shown(all, Some(&leaf))),
            ["q1", "a1", "q2", "a2", "b2", "q3", "a3"]
        );
    }

    #[test]
    fn a_snapshot_shows_the_branch_as_it_was() {
        // q2b (at 5) came after the snapshot at 4: its ancestor q1 ends the
        // branch then, and q1's shown child is not asked for.
        assert_eq!(ids(&shown_upto(tree(), Some("q2b"), 4)), ["q1", "a1"]);
        assert_eq!(
            ids(&shown_upto(tree(), Some("q3"), 3)),
            ["q1", "a1", "q2", "a2", "b2", "q3", "a3"]
        );
    }

    #[test]
    fn a_partial_branch_shows_what_it_has_and_cycles_end() {
        // History reads only the last questions of a branch: their parents
        // may be missing.
        let part: Vec<_> = tree().into_iter().skip(2).take(5).collect();
        assert_eq!(
            ids(&shown(part, Some("q3"))),
            ["q2", "a2", "b2", "q3", "a3"]
        );
        let cycle = vec![
            message("x", "user", Some("y"), 0, 1),
            message("y", "user", Some("x"), 0, 2),
        ];
        assert_eq!(shown(cycle.clone(), Some("x")).len(), 2);
        assert!(select(&cycle, "x").is_some());
    }
}
