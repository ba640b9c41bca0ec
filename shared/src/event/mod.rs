//! Events as the mirror applies them (docs/contract.md §2 and §3): the type, the entity,
//! the full document or a tombstone, the version, the content hash and the idempotency key.

//!
//! This module holds the domain types; [`fields`] reads and checks an envelope's fields into
//! an [`Event`]; [`hash`] makes the canonical JSON, the content hash and the idempotency key.

mod fields;
mod hash;

use std::fmt;
use std::time::Duration;

use crate::envelope::Envelope;
use crate::rejection::Rejection;
use crate::timestamp::Timestamp;

pub use fields::check_id;
pub use hash::{canonical_document, canonical_json, idempotency_key, sha256_hex, IdempotencyKey};

/// The three event families; each has its own queue, function and table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    DmConversation,
    DmMessage,
    FollowEdge,
}

impl Family {
    pub const ALL: [Family; 3] = [
        Family::DmConversation,
        Family::DmMessage,
        Family::FollowEdge,
    ];

    pub fn type_prefix(self) -> &'static str {
        match self {
            Family::DmConversation => "dm.conversation",
            Family::DmMessage => "dm.message",
            Family::FollowEdge => "follow.edge",
        }
    }

    /// The name of the function (and queue) that handles this family.
    pub fn function_name(self) -> &'static str {
        match self {
            Family::DmConversation => "dm-conversation",
            Family::DmMessage => "dm-message",
            Family::FollowEdge => "follow-edge",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    /// Both verb forms are accepted (CloudEvents producers write `create`, canonical envelopes `created`).
    fn parse(verb: &str) -> Option<Action> {
        match verb {
            "created" | "create" => Some(Action::Created),
            "updated" | "update" => Some(Action::Updated),
            "deleted" | "delete" => Some(Action::Deleted),
            _ => None,
        }
    }

    fn past_tense(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }
}

/// A normalised event type: always displayed in the past tense (`dm.message.created`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventType {
    pub family: Family,
    pub action: Action,
}

impl EventType {
    pub fn parse(text: &str) -> Option<EventType> {
        let (prefix, verb) = text.rsplit_once('.')?;
        let family = Family::ALL
            .into_iter()
            .find(|f| f.type_prefix() == prefix)?;
        Some(EventType {
            family,
            action: Action::parse(verb)?,
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            self.family.type_prefix(),
            self.action.past_tense()
        )
    }
}

/// The primary key of the row an event writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKey {
    Conversation {
        conversation_id: String,
    },
    Message {
        conversation_id: String,
        message_id: String,
    },
    FollowEdge {
        user_id: String,
        target_id: String,
    },
}

impl EntityKey {
    pub fn family(&self) -> Family {
        match self {
            EntityKey::Conversation { .. } => Family::DmConversation,
            EntityKey::Message { .. } => Family::DmMessage,
            EntityKey::FollowEdge { .. } => Family::FollowEdge,
        }
    }

    /// `{conversationId}`, `{conversationId}/{messageId}` or `{userId}/{targetId}`.
    pub fn entity_id(&self) -> String {
        match self {
            EntityKey::Conversation { conversation_id } => conversation_id.clone(),
            EntityKey::Message {
                conversation_id,
                message_id,
            } => {
                format!("{conversation_id}/{message_id}")
            }
            EntityKey::FollowEdge { user_id, target_id } => format!("{user_id}/{target_id}"),
        }
    }

    /// The conversation a message or conversation event touches.
    pub fn conversation_id(&self) -> Option<&str> {
        match self {
            EntityKey::Conversation { conversation_id }
            | EntityKey::Message {
                conversation_id, ..
            } => Some(conversation_id),
            EntityKey::FollowEdge { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub author_id: String,
    pub body: Option<String>,
    /// Canonical JSON text (sorted keys, no spaces), as hashed.
    pub media: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conversation {
    pub owner_id: Option<String>,
    pub participant_ids: Option<Vec<String>>,
    pub last_message_id: Option<String>,
    pub last_message_at: Option<Timestamp>,
    /// Already cut to [`PREVIEW_CHARS`] characters.
    pub last_message_preview: Option<String>,
    pub last_message_author_id: Option<String>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

impl Conversation {
    /// The two distinct participants when there are exactly two, sorted as byte strings:
    /// what `dm_messages.recipient_id` is derived from.
    pub fn pair(&self) -> Option<(String, String)> {
        let ids = self.participant_ids.as_ref()?;
        let mut distinct: Vec<&String> = ids.iter().collect();
        distinct.sort();
        distinct.dedup();
        match distinct.as_slice() {
            [low, high] => Some(((*low).clone(), (*high).clone())),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct FollowEdge {
    pub edge_type: String,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

/// What an event writes besides its key.
#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    Conversation(Conversation),
    Message(Message),
    FollowEdge(FollowEdge),
    /// A delete: the row keeps its key, `deleted_at` and the version, nothing else.
    Tombstone {
        deleted_at: Timestamp,
    },
}

/// The contract's total order: newest version, then delete over upsert, then the greater
/// content hash. Field order is the comparison order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    pub version: Timestamp,
    pub is_delete: bool,
    pub content_hash: String,
}

/// How much of a body a conversation's `last_message_preview` keeps, in Unicode scalar values.
pub const PREVIEW_CHARS: usize = 140;

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_type: EventType,
    pub event_id: String,
    pub key: EntityKey,
    pub version: Timestamp,
    pub document: Document,
    /// Lowercase hex SHA-256 of [`Event::canonical_document`].
    pub content_hash: String,
    /// Lowercase hex SHA-256; see [`idempotency_key`].
    pub idempotency_key: IdempotencyKey,
    pub source: String,
    pub attempt: Option<u32>,
    /// When the change happened at the source (`occurredAt`, CloudEvents `time`).
    pub occurred_at: Option<Timestamp>,
}

/// What parsing needs to know besides the body.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub now: Timestamp,
    pub max_future_skew: Duration,
}

impl Event {
    pub fn parse(body: &str, limits: Limits) -> Result<Event, Rejection> {
        let envelope = Envelope::parse(body)?;
        Event::from_envelope(envelope, limits)
    }

    pub fn family(&self) -> Family {
        self.event_type.family
    }

    pub fn is_delete(&self) -> bool {
        matches!(self.document, Document::Tombstone { .. })
    }

    pub fn rank(&self) -> Rank {
        Rank {
            version: self.version,
            is_delete: self.is_delete(),
            content_hash: self.content_hash.clone(),
        }
    }
}
