//! The SQLite dialect: every statement is set-based; a chunk's rows travel as one JSON array
//! bound once and unpacked with `json_each`, so no statement approaches the bind limit.
//! Timestamps are RFC 3339 text with six fractional digits, so text order is time order.
//! One file per family of statements; this one holds what they all use.

#[macro_use]
mod derived;
mod integrity;
mod ledger;
mod outbox;
mod plain;
mod upserts;

use serde::Serialize;

pub(super) use derived::{
    conversation_ids_after, lock_existing_conversations, refresh_conversations, refresh_recipients,
    write_last_messages,
};
pub(super) use integrity::{
    check_cursor, dump, live_keys_after, rows_for_keys, save_check_cursor, seen_add, seen_among,
    seen_reset, self_check, self_follows_after,
};
pub(super) use ledger::{
    applied_keys, current_ranks, prune_applied_keys, record_applied, DISCARD_APPLIED_KEYS,
};
pub(super) use outbox::{
    announce_earlier_messages, delete_outbox, enqueue_announcements, lease_outbox, outbox_backlog,
};
pub(super) use plain::execute_admin;
pub(super) use upserts::{
    conversation_states, lock_conversations, message_authors, upsert_conversations,
    upsert_follow_edges, upsert_messages,
};

fn json<T: Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).expect("rows serialise to JSON")
}
