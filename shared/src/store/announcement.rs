//! What the outbox holds: the message changes a transaction announces, one row per user to
//! notify, and how much waits (docs/streams.md). Plain data, shared by both dialects and the
//! lease in `outbox.rs`.

use serde::Serialize;

use super::rows::MessageRow;
use crate::timestamp::Timestamp;

/// One message change to announce, before it is expanded to its users.
#[derive(Debug, Serialize)]
pub(super) struct Change<'a> {
    /// `message.created`, `message.updated` or `message.deleted`.
    pub(super) kind: &'static str,
    pub(super) conversation_id: &'a str,
    pub(super) message_id: &'a str,
    /// Empty when not known (a delete of a message never mirrored).
    pub(super) sender_id: String,
    /// The event's version, RFC 3339 UTC with microseconds.
    pub(super) version: String,
}

impl<'a> Change<'a> {
    /// `created`: whether the event was a `.created` one; `sender` is the
    /// message's author (for a delete, as it was stored before the delete).
    pub(super) fn new(row: &MessageRow<'a>, created: bool, sender: Option<&str>) -> Self {
        let kind = if row.common.deleted_at.is_some() {
            "message.deleted"
        } else if created {
            "message.created"
        } else {
            "message.updated"
        };
        Change {
            kind,
            conversation_id: row.conversation_id,
            message_id: row.message_id,
            sender_id: row.author_id.or(sender).unwrap_or_default().to_string(),
            version: row
                .common
                .updated_at
                .map(|t| t.to_string())
                .unwrap_or_default(),
        }
    }
}

/// One outbox row: one entry for one user's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub id: i64,
    pub user_id: String,
    pub kind: String,
    pub conversation_id: String,
    pub message_id: String,
    pub sender_id: String,
    pub version: String,
    /// When the applying transaction wrote it (its commit follows within milliseconds).
    pub enqueued_at: Timestamp,
}

/// How much waits in the outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Backlog {
    pub rows: u64,
    pub oldest: Option<Timestamp>,
}
