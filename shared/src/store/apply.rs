//! A chunk of events of any families in one transaction, and the one lock order every writer
//! keeps (docs/architecture.md, "The write path").
//!
//! **The lock order.** Every transaction that writes mirror rows takes its row locks in this
//! order, each class in key order, and never goes back to an earlier class:
//! 1. the conversation rows of every conversation the chunk names (its conversations' own
//!    events and its messages'), missing ones created as stubs, in one ordered statement;
//! 2. message rows: only ever written while their conversation's lock is held, so no two
//!    writers wait on each other for them;
//! 3. follow edges, in key order (the upsert's input is sorted);
//! 4. the applied keys of the ledger, in key order.
//!
//! The outbox takes no row lock another writer waits for (new rows only). Repair takes the
//! same first class (conversations, in key order) before the messages. Two transactions that
//! take locks in one total order cannot wait on each other in a cycle, so no deadlock can
//! arise between any number of writers, of any mix of families.
//!
//! **Each statement once.** Whatever the mix, a transaction runs each statement at most once:
//! one conversation lock, one upsert per table, one `recipient_id` refresh (for the
//! conversations whose pair changed), one `last_message_*` update moved forward from the
//! messages written (`newest.rs`) and one full refresh for the conversations that need it,
//! one ledger insert, one outbox insert (and the announcement of earlier messages when
//! conversations' participants became known).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::announcement::Change;
use super::newest::newest;
use super::plan::plan;
use super::rows::{ConversationRow, FollowEdgeRow, MessageRow};
use super::tx::Tx;
use super::{postgres, sqlite, Pending, StoreError, Written};
use crate::event::{Action, EntityKey, Event, Family, Rank};
use crate::timestamp::Timestamp;

/// The winners of a chunk by family, each in key order.
struct Winners<'a> {
    conversations: Vec<&'a Pending>,
    messages: Vec<&'a Pending>,
    follows: Vec<&'a Pending>,
}

impl<'a> Winners<'a> {
    fn of(chunk: &'a [Pending], winners: &[usize]) -> Self {
        let mut sorted: Vec<&Pending> = winners.iter().map(|&i| &chunk[i]).collect();
        sorted.sort_unstable_by(|a, b| a.event.key.cmp(&b.event.key));
        let mut split = Winners {
            conversations: Vec::new(),
            messages: Vec::new(),
            follows: Vec::new(),
        };
        for p in sorted {
            match p.event.family() {
                Family::DmConversation => split.conversations.push(p),
                Family::DmMessage => split.messages.push(p),
                Family::FollowEdge => split.follows.push(p),
            }
        }
        split
    }

    /// Every conversation the chunk names, sorted and distinct: the first class of locks.
    fn conversation_ids(&self) -> Vec<String> {
        let ids: BTreeSet<&str> = (self.conversations.iter().chain(&self.messages))
            .filter_map(|p| p.event.key.conversation_id())
            .collect();
        ids.into_iter().map(str::to_string).collect()
    }
}

fn ids_of(keys: &HashSet<EntityKey>) -> BTreeSet<&str> {
    keys.iter().filter_map(EntityKey::conversation_id).collect()
}

pub(super) async fn apply_in(
    tx: &mut Tx<'_>,
    chunk: &[Pending],
    announce: bool,
) -> Result<Vec<Written>, StoreError> {
    let (mut written, winner_at) = plan(chunk);
    let winners = Winners::of(chunk, &winner_at);
    let winner_at: HashSet<usize> = winner_at.into_iter().collect();
    let mirrored_at = Timestamp::now();

    // 1. The conversations, in key order: after this statement every message of them is
    //    visible and no other writer changes them until this transaction ends.
    let locked = winners.conversation_ids();
    let summaries = dispatch!(tx, lock_conversations(&locked, mirrored_at))?;

    // The conversations' own events. What their rows held before: those whose participants
    // were not known (a stub) had their messages announced to their authors only; those
    // whose pair changes need their messages' `recipient_id` again (and only those: the
    // refresh reads every message of a conversation).
    let before = if winners.conversations.is_empty() {
        HashMap::new()
    } else {
        let ids: Vec<String> = (winners.conversations.iter())
            .filter_map(|p| p.event.key.conversation_id().map(str::to_string))
            .collect();
        dispatch!(tx, conversation_states(&ids))?
    };
    let rows: Vec<ConversationRow> = (winners.conversations.iter())
        .map(|p| ConversationRow::new(p))
        .collect();
    let conversations = dispatch!(tx, upsert_conversations(&rows, mirrored_at))?;
    let applied_ids = ids_of(&conversations);
    let changed: Vec<&ConversationRow> = (rows.iter())
        .filter(|r| applied_ids.contains(r.conversation_id))
        .collect();
    let pair_changed: Vec<String> = (changed.iter())
        .filter(|r| {
            before.get(r.conversation_id).map(|b| &b.pair)
                != Some(&(r.dm_pair_low.clone(), r.dm_pair_high.clone()))
        })
        .map(|r| r.conversation_id.to_string())
        .collect();
    dispatch!(tx, refresh_recipients(&pair_changed))?;
    if announce {
        // Now they are known, the other participants hear of the earlier messages; before
        // this chunk's messages are written, which are announced below with their own change.
        let learned: Vec<String> = (changed.iter())
            .filter(|r| before.get(r.conversation_id).is_none_or(|b| !b.known))
            .map(|r| r.conversation_id.to_string())
            .collect();
        dispatch!(tx, announce_earlier_messages(&learned, Timestamp::now()))?;
    }

    // 2. The messages: `recipient_id` from the conversation row as this transaction left it.
    let rows: Vec<MessageRow> = winners
        .messages
        .iter()
        .map(|p| MessageRow::new(p))
        .collect();
    // A tombstone keeps no author: a delete's announcement names the stored one.
    let deleted: Vec<(&str, &str)> = (rows.iter())
        .filter(|r| announce && r.author_id.is_none())
        .map(|r| (r.conversation_id, r.message_id))
        .collect();
    let authors = if deleted.is_empty() {
        HashMap::new()
    } else {
        dispatch!(tx, message_authors(&deleted))?
    };
    let messages = dispatch!(tx, upsert_messages(&rows, mirrored_at))?;
    // `last_message_*`: moved forward from what the chunk wrote where that is exact, by the
    // full definition for the rest.
    let own: HashMap<&str, bool> = (changed.iter())
        .map(|r| (r.conversation_id, r.common.deleted_at.is_some()))
        .collect();
    let newest = newest(&rows, &winners.messages, &messages, &summaries, &own);
    dispatch!(tx, write_last_messages(&newest.set))?;
    let recompute: Vec<String> = newest.recompute.iter().map(|id| id.to_string()).collect();
    dispatch!(tx, refresh_conversations(&recompute))?;
    let changes: Vec<Change> = if announce {
        changes(&rows, &winners.messages, &messages, &authors)
    } else {
        Vec::new()
    };

    // 3. The follow edges.
    let rows: Vec<FollowEdgeRow> = winners
        .follows
        .iter()
        .map(|p| FollowEdgeRow::new(p))
        .collect();
    let follows = dispatch!(tx, upsert_follow_edges(&rows, mirrored_at))?;

    let applied = |key: &EntityKey| match key.family() {
        Family::DmConversation => conversations.contains(key),
        Family::DmMessage => messages.contains(key),
        Family::FollowEdge => follows.contains(key),
    };

    // Every event but the winners that were written: a key applied before is a duplicate; a
    // winner the guard kept out lost to the stored row (equal rank is the same write, a
    // duplicate; lower is stale).
    let not_applied: Vec<&str> = (chunk.iter().enumerate())
        .filter(|(i, p)| !(winner_at.contains(i) && applied(&p.event.key)))
        .map(|(_, p)| p.event.idempotency_key.as_str())
        .collect();
    let seen = if not_applied.is_empty() {
        HashSet::new()
    } else {
        dispatch!(tx, applied_keys(&not_applied))?
    };
    let mut stored: HashMap<EntityKey, Rank> = HashMap::new();
    for (family, of_family) in [
        (Family::DmConversation, &winners.conversations),
        (Family::DmMessage, &winners.messages),
        (Family::FollowEdge, &winners.follows),
    ] {
        let lost: Vec<&EntityKey> = (of_family.iter())
            .map(|p| &p.event.key)
            .filter(|k| !applied(k))
            .collect();
        if !lost.is_empty() {
            stored.extend(dispatch!(tx, current_ranks(family, &lost))?);
        }
    }
    let mut newly_applied: Vec<&Event> = Vec::new();
    for (i, pending) in chunk.iter().enumerate() {
        let event = &pending.event;
        if seen.contains(event.idempotency_key.as_str()) {
            written[i] = Some(Written::Duplicate);
            continue;
        }
        if written[i].is_some() {
            continue;
        }
        written[i] = Some(if applied(&event.key) {
            newly_applied.push(event);
            Written::Applied
        } else if stored.get(&event.key) == Some(&event.rank()) {
            Written::Duplicate
        } else {
            Written::Stale
        });
    }
    // 4. The ledger, in key order.
    newly_applied.sort_unstable_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
    dispatch!(tx, record_applied(&newly_applied, mirrored_at))?;
    // Stamped now, the transaction's last statement: commit → XADD is measured from here.
    dispatch!(tx, enqueue_announcements(&changes, Timestamp::now()))?;
    Ok(written
        .into_iter()
        .map(|w| w.expect("every event classified"))
        .collect())
}

/// The message changes that took effect, per conversation in version order, as they
/// happened.
fn changes<'a>(
    rows: &[MessageRow<'a>],
    winners: &[&Pending],
    applied: &HashSet<EntityKey>,
    authors: &HashMap<(String, String), String>,
) -> Vec<Change<'a>> {
    let mut changes: Vec<Change> = (rows.iter().zip(winners))
        .filter(|(_, p)| applied.contains(&p.event.key))
        .map(|(row, p)| {
            let key = (row.conversation_id.to_string(), row.message_id.to_string());
            let created = p.event.event_type.action == Action::Created;
            Change::new(row, created, authors.get(&key).map(String::as_str))
        })
        .collect();
    changes.sort_by(|a, b| {
        (a.conversation_id, &a.version, a.message_id).cmp(&(
            b.conversation_id,
            &b.version,
            b.message_id,
        ))
    });
    changes
}
