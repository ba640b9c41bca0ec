//! Envelope builders: canonical events of each family, deletes, fields set or removed, and
//! batches of records.

use realtime_mirror::batch::Counts;
use realtime_mirror::batch::{Record, Summary};
use serde_json::{json, Value};

use crate::*;

/// A canonical envelope.
pub fn canonical(event_type: &str, occurred_at: &str, payload: Value) -> Value {
    json!({ "eventType": event_type, "occurredAt": occurred_at, "payload": payload })
}

/// Envelopes as a batch of records `r0`, `r1`, … (no receive count); a string is sent as is.
pub fn records(events: &[Value]) -> Vec<Record> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| Record {
            message_id: format!("r{i}"),
            body: Some(match e {
                Value::String(raw) => raw.clone(),
                other => other.to_string(),
            }),
            receive_count: None,
        })
        .collect()
}

/// A `dm.message.created` envelope at `created_at` (also its occurredAt).
pub fn message(
    conversation: &str,
    message: &str,
    author: &str,
    body: &str,
    created_at: &str,
) -> Value {
    canonical(
        "dm.message.created",
        created_at,
        json!({ "conversationId": conversation, "messageId": message, "authorId": author,
                "body": body, "createdAt": created_at }),
    )
}

/// A `dm.conversation.updated` envelope with these participants, at `updated_at`.
pub fn conversation(conversation: &str, participants: &[&str], updated_at: &str) -> Value {
    canonical(
        "dm.conversation.updated",
        updated_at,
        json!({ "conversationId": conversation, "ownerId": participants.first(),
                "participantIds": participants, "createdAt": "2025-01-01T00:00:00Z",
                "updatedAt": updated_at }),
    )
}

/// A `follow.edge.created` envelope.
pub fn follow(user: &str, target: &str, at: &str) -> Value {
    canonical(
        "follow.edge.created",
        at,
        json!({ "userId": user, "targetId": target, "createdAt": at }),
    )
}

/// A delete of `entity_id` of `family_prefix` (`dm.message`, …) with only the entity id.
pub fn delete(family_prefix: &str, entity_id: &str, at: &str) -> Value {
    json!({ "eventType": format!("{family_prefix}.deleted"), "occurredAt": at, "entityId": entity_id })
}

/// Sets `value[path…] = new` (path segments are object keys).
pub fn with(mut value: Value, path: &[&str], new: Value) -> Value {
    let mut target = &mut value;
    for key in &path[..path.len() - 1] {
        target = &mut target[*key];
    }
    target[path[path.len() - 1]] = new;
    value
}

/// Removes `value[path…]`.
pub fn without(mut value: Value, path: &[&str]) -> Value {
    let mut target = &mut value;
    for key in &path[..path.len() - 1] {
        target = &mut target[*key];
    }
    if let Value::Object(map) = target {
        map.remove(path[path.len() - 1]);
    }
    value
}

/// A summary's counts, to compare by name: `Counts { applied: 2, ..Counts::default() }`.
pub fn counts(summary: &Summary) -> Counts {
    Counts {
        applied: summary.applied,
        duplicate: summary.duplicates,
        stale: summary.stale,
        rejected: summary.rejected,
        failed: summary.failed,
    }
}
