//! Every mirrored row in one form for both stores, for `mirrorctl dump` and the tests'
//! comparisons.

use serde::Serialize;
use serde_json::Value;

/// How a column is rendered in a [`Snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Time,
    Integer,
    /// `text[]` in PostgreSQL, a JSON array in SQLite.
    TextList,
    /// `jsonb` in PostgreSQL, JSON text in SQLite.
    Json,
}

pub(super) struct Table {
    pub(super) name: &'static str,
    pub(super) key: &'static [&'static str],
    pub(super) columns: &'static [(&'static str, Kind)],
}

const BOOKKEEPING: [&str; 5] = [
    "sync_source",
    "event_id",
    "last_synced_event_id",
    "retry_count",
    "mirrored_at",
];

pub(super) const TABLES: [Table; 3] = [
    Table {
        name: "dm_conversations",
        key: &["conversation_id"],
        columns: &[
            ("conversation_id", Kind::Text),
            ("owner_id", Kind::Text),
            ("participant_ids", Kind::TextList),
            ("last_message_id", Kind::Text),
            ("last_message_at", Kind::Time),
            ("last_message_preview", Kind::Text),
            ("last_message_author_id", Kind::Text),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
            ("deleted_at", Kind::Time),
            ("sync_source", Kind::Text),
            ("last_synced_event_id", Kind::Text),
            ("retry_count", Kind::Integer),
            ("mirrored_at", Kind::Time),
        ],
    },
    Table {
        name: "dm_messages",
        key: &["conversation_id", "message_id"],
        columns: &[
            ("conversation_id", Kind::Text),
            ("message_id", Kind::Text),
            ("author_id", Kind::Text),
            ("recipient_id", Kind::Text),
            ("body", Kind::Text),
            ("media", Kind::Json),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
            ("deleted_at", Kind::Time),
            ("sync_source", Kind::Text),
            ("event_id", Kind::Text),
            ("retry_count", Kind::Integer),
            ("mirrored_at", Kind::Time),
        ],
    },
    Table {
        name: "follow_edges",
        key: &["user_id", "target_id"],
        columns: &[
            ("user_id", Kind::Text),
            ("target_id", Kind::Text),
            ("edge_type", Kind::Text),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
            ("deleted_at", Kind::Time),
            ("sync_source", Kind::Text),
            ("event_id", Kind::Text),
            ("retry_count", Kind::Integer),
            ("mirrored_at", Kind::Time),
        ],
    },
];

/// The contract's columns of every mirrored row, comparable across stores.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub tables: std::collections::BTreeMap<String, Vec<Value>>,
}

impl Snapshot {
    /// Without `mirrored_at`, `retry_count`, `event_id` and `sync_source`: the part of the
    /// state that the contract makes a function of the set of accepted events.
    pub fn without_bookkeeping(&self) -> Snapshot {
        let mut copy = self.clone();
        for rows in copy.tables.values_mut() {
            for row in rows.iter_mut() {
                if let Value::Object(map) = row {
                    for column in BOOKKEEPING {
                        map.remove(column);
                    }
                }
            }
        }
        copy
    }

    pub fn rows(&self, table: &str) -> &[Value] {
        self.tables.get(table).map(Vec::as_slice).unwrap_or(&[])
    }
}
