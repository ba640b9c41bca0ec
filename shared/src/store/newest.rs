//! `last_message_*` moved forward from what a chunk wrote, without reading the conversation's
//! messages (docs/architecture.md, "The write path").
//!
//! The rule (docs/contract.md) is the newest live message by (`created_at`, `message_id`); the
//! document's own fields while no message is mirrored; NULL on a tombstone. Its one full
//! definition, which reads a conversation's newest message back, stays the one repair and the
//! self-check use. A writer needs it far less often: it holds the conversation's lock, its
//! stored `last_message_*` were right when the lock was taken, and it knows every message it
//! changed. So for a conversation the chunk touched, with the newest live message the chunk
//! wrote (`C`) and the stored newest (`L`):
//! - a conversation tombstoned now gets NULL; one that was and stays a tombstone keeps NULL;
//! - one whose own event applied otherwise, and which was a tombstone or whose `L` may be
//!   the document's fields: the full definition (its document counts only while no message
//!   is mirrored, which the row cannot tell); else its document does not matter, and:
//! - `L` is NULL: no live message was stored, so `C` is the newest (or, without `C`, NULL
//!   stays);
//! - `C` is at least `L`: `C` is the newest, whichever message `L` came from;
//! - otherwise, when the chunk did not write `L`'s message and `L` is certainly a message's
//!   (it differs from the document's fields): `L` stays the newest;
//! - otherwise (the chunk edited or deleted the newest message, or `L` may be the document's
//!   fields, which no mirrored message may show): the full definition, for that conversation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::rows::MessageRow;
use super::Pending;
use crate::event::EntityKey;
use crate::timestamp::Timestamp;

/// What the conversation lock read of one locked row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Summary {
    /// The conversation is a tombstone: `last_message_*` are NULL whatever its messages.
    pub(super) deleted: bool,
    /// Its stored `last_message_at` and `last_message_id`, when both are set (always, when
    /// they come from a message).
    pub(super) newest: Option<(Timestamp, String)>,
    /// All four stored `last_message_*` are NULL.
    pub(super) blank: bool,
    /// Its stored `last_message_*` equal the document's own fields, so they may come from
    /// the document rather than from a message.
    pub(super) as_document: bool,
}

/// `conversation_id`, deleted, blank, `as_document`, `last_message_id`, `last_message_at`: as
/// both dialects read a [`Summary`] (each parses its own timestamps).
pub(super) type SummaryRow<T> = (String, bool, bool, bool, Option<String>, Option<T>);

impl Summary {
    pub(super) fn by_id<T>(
        rows: Vec<SummaryRow<T>>,
        at: impl Fn(T) -> Option<Timestamp>,
    ) -> HashMap<String, Summary> {
        (rows.into_iter())
            .map(
                |(id, deleted, blank, as_document, message_id, message_at)| {
                    let newest = match (message_at.map(&at), message_id) {
                        (Some(Some(at)), Some(id)) => Some((at, id)),
                        _ => None,
                    };
                    let summary = Summary {
                        deleted,
                        newest,
                        blank,
                        as_document,
                    };
                    (id, summary)
                },
            )
            .collect()
    }
}

/// The new `last_message_*` of one conversation: a message's, or all NULL.
#[derive(Debug, PartialEq)]
pub(super) struct LastMessage<'a> {
    pub(super) conversation_id: &'a str,
    pub(super) message_id: Option<&'a str>,
    pub(super) at: Option<Timestamp>,
    /// The first 140 characters of the body, as the full definition cuts it.
    pub(super) preview: Option<String>,
    pub(super) author_id: Option<&'a str>,
}

impl<'a> LastMessage<'a> {
    fn of(conversation_id: &'a str, message: &MessageRow<'a>, at: Timestamp) -> Self {
        LastMessage {
            conversation_id,
            message_id: Some(message.message_id),
            at: Some(at),
            preview: message.body.map(|b| b.chars().take(140).collect()),
            author_id: message.author_id,
        }
    }

    fn none(conversation_id: &'a str) -> Self {
        LastMessage {
            conversation_id,
            message_id: None,
            at: None,
            preview: None,
            author_id: None,
        }
    }
}

/// What the chunk's messages do to `last_message_*`: the values to write, and the
/// conversations that need the full definition.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Newest<'a> {
    pub(super) set: Vec<LastMessage<'a>>,
    pub(super) recompute: Vec<&'a str>,
}

/// What the chunk wrote of one conversation's messages.
#[derive(Default)]
struct Written<'r, 'a> {
    /// The newest live message written, and its `created_at`.
    candidate: Option<(&'r MessageRow<'a>, Timestamp)>,
    /// A written message was the stored newest one.
    unsure: bool,
    /// A live message was written without a `created_at` (no event makes one): the full
    /// definition decides where it sorts.
    untimed: bool,
}

/// `rows` are the chunk's message rows and `winners` their events, in the same order;
/// `applied` the keys the upsert wrote; `summaries` what the lock read of every conversation
/// the chunk names; `own` the conversations whose own event applied, each with whether it is
/// a tombstone now.
pub(super) fn newest<'a>(
    rows: &[MessageRow<'a>],
    winners: &[&Pending],
    applied: &HashSet<EntityKey>,
    summaries: &HashMap<String, Summary>,
    own: &HashMap<&'a str, bool>,
) -> Newest<'a> {
    let mut written: BTreeMap<&'a str, Written> = BTreeMap::new();
    for (row, pending) in rows.iter().zip(winners) {
        if !applied.contains(&pending.event.key) {
            continue;
        }
        let stored = summaries.get(row.conversation_id);
        let entry = written.entry(row.conversation_id).or_default();
        entry.unsure |= stored
            .and_then(|s| s.newest.as_ref())
            .is_some_and(|(_, id)| id == row.message_id);
        if row.common.deleted_at.is_some() {
            continue;
        }
        match row.created_at {
            None => entry.untimed = true,
            Some(at) => {
                let newer = |(c, c_at): (&MessageRow, Timestamp)| {
                    (at, row.message_id) > (c_at, c.message_id)
                };
                if entry.candidate.is_none_or(newer) {
                    entry.candidate = Some((row, at));
                }
            }
        }
    }
    let mut plan = Newest::default();
    let touched: BTreeSet<&'a str> = written.keys().chain(own.keys()).copied().collect();
    for conversation_id in touched {
        let Some(stored) = summaries.get(conversation_id) else {
            plan.recompute.push(conversation_id);
            continue;
        };
        match own.get(conversation_id) {
            // Tombstoned now: NULL, whatever its messages.
            Some(true) => {
                if !stored.blank {
                    plan.set.push(LastMessage::none(conversation_id));
                }
                continue;
            }
            // Its document changed: that matters only while no message is mirrored, which
            // a row that was a tombstone or may show the document's fields cannot tell.
            Some(false) if stored.deleted || stored.as_document => {
                plan.recompute.push(conversation_id);
                continue;
            }
            Some(false) => {}
            None if stored.deleted => continue,
            None => {}
        }
        let w = written.remove(conversation_id).unwrap_or_default();
        if w.untimed {
            plan.recompute.push(conversation_id);
            continue;
        }
        // Without a stored newest message (`last_message_*` NULL, or the document's without
        // a time or an id) no live message was stored: the newest written one is the newest.
        let ahead = match (w.candidate, &stored.newest) {
            (Some((c, at)), Some((stored_at, id))) => {
                (at, c.message_id) >= (*stored_at, id.as_str())
            }
            (Some(_), None) => stored.blank || stored.as_document,
            (None, _) => false,
        };
        match w.candidate {
            Some((c, at)) if ahead => plan.set.push(LastMessage::of(conversation_id, c, at)),
            // No live message was stored and none was written (only tombstones): NULL stays.
            _ if stored.blank => {}
            // The stored newest message is untouched, and it is a message's.
            _ if !w.unsure && !stored.as_document && stored.newest.is_some() => {}
            _ => plan.recompute.push(conversation_id),
        }
    }
    plan
}

#[cfg(test)]
#[path = "newest_tests.rs"]
mod tests;
