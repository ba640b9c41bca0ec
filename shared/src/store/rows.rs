//! The values each family's winning events write, and the keys both dialects bind.

use serde::Serialize;

use super::Pending;
use crate::event::{Document, EntityKey, Family};
use crate::timestamp::Timestamp;

/// A key as the two text columns both dialects bind (the second empty for a conversation).
pub(super) fn key_parts(key: &EntityKey) -> (String, String) {
    match key {
        EntityKey::Conversation { conversation_id } => (conversation_id.clone(), String::new()),
        EntityKey::Message {
            conversation_id,
            message_id,
        } => (conversation_id.clone(), message_id.clone()),
        EntityKey::FollowEdge { user_id, target_id } => (user_id.clone(), target_id.clone()),
    }
}
pub(super) fn entity_key(family: Family, a: String, b: String) -> EntityKey {
    match family {
        Family::DmConversation => EntityKey::Conversation { conversation_id: a },
        Family::DmMessage => EntityKey::Message {
            conversation_id: a,
            message_id: b,
        },
        Family::FollowEdge => EntityKey::FollowEdge {
            user_id: a,
            target_id: b,
        },
    }
}

/// Serialises a [`Timestamp`] as the RFC 3339 text SQLite stores.
fn timestamp_text<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_string()),
        None => s.serialize_none(),
    }
}

/// What every winning event writes besides its document: the version, the tombstone's time,
/// and the bookkeeping columns.
#[derive(Debug, Serialize)]
pub(super) struct Common<'a> {
    #[serde(serialize_with = "timestamp_text")]
    pub(super) updated_at: Option<Timestamp>,
    #[serde(serialize_with = "timestamp_text")]
    pub(super) deleted_at: Option<Timestamp>,
    pub(super) content_hash: &'a str,
    pub(super) sync_source: &'a str,
    pub(super) event_id: &'a str,
    pub(super) retry_count: i32,
}

impl<'a> Common<'a> {
    fn new(p: &'a Pending, deleted_at: Option<Timestamp>) -> Self {
        Common {
            updated_at: Some(p.event.version),
            deleted_at,
            content_hash: &p.event.content_hash,
            sync_source: &p.event.source,
            event_id: &p.event.event_id,
            retry_count: p.retry_count,
        }
    }
}

/// The values one winning event writes to `dm_messages` (the derived `recipient_id` aside).
#[derive(Debug, Serialize)]
pub(super) struct MessageRow<'a> {
    pub(super) conversation_id: &'a str,
    pub(super) message_id: &'a str,
    pub(super) author_id: Option<&'a str>,
    pub(super) body: Option<&'a str>,
    pub(super) media: Option<&'a str>,
    #[serde(serialize_with = "timestamp_text")]
    pub(super) created_at: Option<Timestamp>,
    #[serde(flatten)]
    pub(super) common: Common<'a>,
}

impl<'a> MessageRow<'a> {
    pub(super) fn new(p: &'a Pending) -> Self {
        let EntityKey::Message {
            conversation_id,
            message_id,
        } = &p.event.key
        else {
            unreachable!("a dm.message event has a message key")
        };
        let (message, deleted_at) = match &p.event.document {
            Document::Message(m) => (Some(m), None),
            Document::Tombstone { deleted_at } => (None, Some(*deleted_at)),
            other => unreachable!("a dm.message event carries {other:?}"),
        };
        MessageRow {
            conversation_id,
            message_id,
            author_id: message.map(|m| m.author_id.as_str()),
            body: message.and_then(|m| m.body.as_deref()),
            media: message.and_then(|m| m.media.as_deref()),
            created_at: message.map(|m| m.created_at),
            common: Common::new(p, deleted_at),
        }
    }
}

/// The values one winning event writes to `dm_conversations` (the derived `last_message_*`
/// columns aside).
#[derive(Debug, Serialize)]
pub(super) struct ConversationRow<'a> {
    pub(super) conversation_id: &'a str,
    pub(super) owner_id: Option<&'a str>,
    /// JSON array text.
    pub(super) participant_ids: Option<String>,
    pub(super) doc_last_message_id: Option<&'a str>,
    #[serde(serialize_with = "timestamp_text")]
    pub(super) doc_last_message_at: Option<Timestamp>,
    pub(super) doc_last_message_preview: Option<&'a str>,
    pub(super) doc_last_message_author_id: Option<&'a str>,
    pub(super) dm_pair_low: Option<String>,
    pub(super) dm_pair_high: Option<String>,
    #[serde(serialize_with = "timestamp_text")]
    pub(super) created_at: Option<Timestamp>,
    #[serde(flatten)]
    pub(super) common: Common<'a>,
}

impl<'a> ConversationRow<'a> {
    pub(super) fn new(p: &'a Pending) -> Self {
        let EntityKey::Conversation { conversation_id } = &p.event.key else {
            unreachable!("a dm.conversation event has a conversation key")
        };
        let (c, deleted_at) = match &p.event.document {
            Document::Conversation(c) => (Some(c), None),
            Document::Tombstone { deleted_at } => (None, Some(*deleted_at)),
            other => unreachable!("a dm.conversation event carries {other:?}"),
        };
        let pair = c.and_then(|c| c.pair());
        ConversationRow {
            conversation_id,
            owner_id: c.and_then(|c| c.owner_id.as_deref()),
            participant_ids: c
                .and_then(|c| c.participant_ids.as_ref())
                .map(|ids| serde_json::to_string(ids).expect("ids serialise")),
            doc_last_message_id: c.and_then(|c| c.last_message_id.as_deref()),
            doc_last_message_at: c.and_then(|c| c.last_message_at),
            doc_last_message_preview: c.and_then(|c| c.last_message_preview.as_deref()),
            doc_last_message_author_id: c.and_then(|c| c.last_message_author_id.as_deref()),
            dm_pair_low: pair.as_ref().map(|p| p.0.clone()),
            dm_pair_high: pair.map(|p| p.1),
            created_at: c.and_then(|c| c.created_at),
            common: Common::new(p, deleted_at),
        }
    }
}

/// A conversation row as a chunk finds it, before its own events: whether its participants
/// are known (not a stub), and its pair (`dm_pair_low`, `dm_pair_high`), from which every
/// message's `recipient_id` follows.
#[derive(Debug)]
pub(super) struct StoredConversation {
    pub(super) known: bool,
    pub(super) pair: (Option<String>, Option<String>),
}

/// `conversation_id`, whether participants are known, `dm_pair_low`, `dm_pair_high`: as
/// both dialects read a [`StoredConversation`].
pub(super) type StoredRow = (String, bool, Option<String>, Option<String>);

impl StoredConversation {
    pub(super) fn by_id(rows: Vec<StoredRow>) -> std::collections::HashMap<String, Self> {
        (rows.into_iter())
            .map(|(id, known, low, high)| {
                let pair = (low, high);
                (id, StoredConversation { known, pair })
            })
            .collect()
    }
}

#[derive(Debug, Serialize)]
pub(super) struct FollowEdgeRow<'a> {
    pub(super) user_id: &'a str,
    pub(super) target_id: &'a str,
    pub(super) edge_type: Option<&'a str>,
    #[serde(serialize_with = "timestamp_text")]
    pub(super) created_at: Option<Timestamp>,
    #[serde(flatten)]
    pub(super) common: Common<'a>,
}

impl<'a> FollowEdgeRow<'a> {
    pub(super) fn new(p: &'a Pending) -> Self {
        let EntityKey::FollowEdge { user_id, target_id } = &p.event.key else {
            unreachable!("a follow.edge event has a follow-edge key")
        };
        let (e, deleted_at) = match &p.event.document {
            Document::FollowEdge(e) => (Some(e), None),
            Document::Tombstone { deleted_at } => (None, Some(*deleted_at)),
            other => unreachable!("a follow.edge event carries {other:?}"),
        };
        FollowEdgeRow {
            user_id,
            target_id,
            edge_type: e.map(|e| e.edge_type.as_str()),
            created_at: e.and_then(|e| e.created_at),
            common: Common::new(p, deleted_at),
        }
    }
}

/// The columns `check --source` compares: what an event sets, as [`super::Snapshot`]
/// renders it (the derived and bookkeeping columns aside).
pub(super) fn compared_columns(family: Family) -> &'static [&'static str] {
    match family {
        Family::DmConversation => &[
            "owner_id",
            "participant_ids",
            "created_at",
            "updated_at",
            "deleted_at",
        ],
        Family::DmMessage => &[
            "author_id",
            "body",
            "media",
            "created_at",
            "updated_at",
            "deleted_at",
        ],
        Family::FollowEdge => &["edge_type", "created_at", "updated_at", "deleted_at"],
    }
}

/// The compared columns of the row `event` would write, in [`super::Snapshot`]'s forms.
pub(super) fn expected_row(event: &crate::event::Event) -> serde_json::Value {
    let pending = Pending {
        event: event.clone(),
        retry_count: 0,
    };
    let row = match event.family() {
        Family::DmMessage => serde_json::to_value(MessageRow::new(&pending)),
        Family::DmConversation => serde_json::to_value(ConversationRow::new(&pending)),
        Family::FollowEdge => serde_json::to_value(FollowEdgeRow::new(&pending)),
    }
    .expect("rows serialise");
    let mut expected = serde_json::Map::new();
    for column in compared_columns(event.family()) {
        let value = match &row[*column] {
            // JSON carried as text (participant ids, media) compares as JSON.
            serde_json::Value::String(text) if matches!(*column, "participant_ids" | "media") => {
                serde_json::from_str(text).expect("stored JSON text is JSON")
            }
            other => other.clone(),
        };
        expected.insert(column.to_string(), value);
    }
    serde_json::Value::Object(expected)
}

/// Rows as plain columns, by table, one per key: what `mirrorctl bench --mode ceiling` has
/// the server write by plain upserts ([`super::Store::write_plain`]), with none of the rules.
#[derive(Debug, Default)]
pub struct PlainRows {
    /// conversation_id, message_id, author_id, body, created_at, updated_at, deleted_at,
    /// content_hash
    pub messages: [Vec<Option<String>>; 8],
    /// conversation_id, owner_id, participant 1, participant 2, created_at, updated_at,
    /// content_hash
    pub conversations: [Vec<Option<String>>; 7],
    /// user_id, target_id, edge_type, created_at, updated_at, deleted_at, content_hash
    pub follows: [Vec<Option<String>>; 7],
    /// idempotency_key, event_type, entity_id
    pub keys: [Vec<String>; 3],
}
