//! From an envelope to an [`Event`]: every field read, its aliases resolved, its type and
//! form checked, and every rejection naming the field (docs/contract.md §2 and §3.9).

use serde_json::{Map, Value};

use super::hash::{canonical_document, canonical_json, exact_numbers, idempotency_key, sha256_hex};
use super::{
    Action, Conversation, Document, EntityKey, Event, EventType, Family, FollowEdge, Limits,
    Message, PREVIEW_CHARS,
};
use crate::envelope::Envelope;
use crate::rejection::Rejection;
use crate::timestamp::{clip, json_kind, Timestamp};

impl Event {
    pub(super) fn from_envelope(envelope: Envelope, limits: Limits) -> Result<Event, Rejection> {
        let event_type = EventType::parse(&envelope.event_type).ok_or_else(|| {
            Rejection::UnknownType(format!(
                "{:?} is not one of dm.message.*, dm.conversation.*, follow.edge.* with \
                 created/updated/deleted (or create/update/delete)",
                clip(&envelope.event_type)
            ))
        })?;
        if let Some(operation) = &envelope.operation {
            if Action::parse(operation) != Some(event_type.action) {
                return Err(Rejection::OperationMismatch(format!(
                    "data.operation {:?} contradicts type {:?}",
                    clip(operation),
                    envelope.event_type
                )));
            }
        }
        if event_type.action != Action::Deleted && envelope.document.is_none() {
            return Err(Rejection::InvalidField(format!(
                "payload is missing: a {event_type} carries the whole document"
            )));
        }
        let key = entity_key(event_type.family, &envelope)?;
        let document = envelope.document.as_ref();
        let fields = Fields { map: document };
        let deleted_at = fields.timestamp("deletedAt")?;
        let updated_at = fields.timestamp("updatedAt")?;
        let missing_version = |what: &str| {
            Rejection::InvalidField(format!(
                "no version: {what} and the envelope has no occurredAt (CloudEvents time)"
            ))
        };
        let (version, document) = if event_type.action == Action::Deleted {
            let version = deleted_at
                .or(envelope.occurred_at)
                .ok_or_else(|| missing_version("the delete has no payload.deletedAt"))?;
            (
                version,
                Document::Tombstone {
                    deleted_at: version,
                },
            )
        } else {
            let version = updated_at
                .or(envelope.occurred_at)
                .ok_or_else(|| missing_version("the payload has no updatedAt"))?;
            let document = match deleted_at {
                // A soft delete by update: only the ids are needed.
                Some(deleted_at) => Document::Tombstone { deleted_at },
                None => upsert_document(event_type.family, &fields, updated_at)?,
            };
            (version, document)
        };
        // Checked: a horizon past the end of time lets every version through.
        let horizon = chrono::Duration::from_std(limits.max_future_skew)
            .ok()
            .and_then(|skew| limits.now.as_datetime().checked_add_signed(skew));
        if horizon.is_some_and(|horizon| version.as_datetime() > horizon) {
            return Err(Rejection::FutureVersion(format!(
                "version {version} is more than {}s ahead of now ({})",
                limits.max_future_skew.as_secs(),
                limits.now
            )));
        }
        let content_hash =
            sha256_hex(canonical_json(&canonical_document(&key, &document)).as_bytes());
        let idempotency_key = idempotency_key(&event_type, &key, version, &content_hash);
        Ok(Event {
            event_type,
            event_id: envelope
                .event_id
                .unwrap_or_else(|| idempotency_key.to_string()),
            key,
            version,
            document,
            content_hash,
            idempotency_key,
            source: envelope.source.unwrap_or_else(|| "firestore".to_string()),
            attempt: envelope.attempt,
            occurred_at: envelope.occurred_at,
        })
    }
}

/// Ids: 1 to 256 bytes, no control characters, no `/` (it separates the parts of an entityId).
pub fn check_id(field: &str, id: &str) -> Result<(), Rejection> {
    if id.is_empty() {
        return Err(Rejection::BadId(format!("{field} is empty")));
    }
    if id.len() > 256 {
        return Err(Rejection::BadId(format!(
            "{field} is {} bytes, more than 256",
            id.len()
        )));
    }
    if id.contains('/') {
        return Err(Rejection::BadId(format!(
            "{field} {:?} contains '/'",
            clip(id)
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(Rejection::BadId(format!(
            "{field} {:?} contains a control character",
            clip(id)
        )));
    }
    Ok(())
}

/// The key of an event, from the payload, the CloudEvents `data` ids, `previousDocument`
/// or `entityId`; every place that names an id must name the same one.
fn entity_key(family: Family, envelope: &Envelope) -> Result<EntityKey, Rejection> {
    let (names, pattern): (&[(&str, &[&str])], &str) = match family {
        Family::DmConversation => (
            &[("conversationId", &["conversationId"])],
            "{conversationId}",
        ),
        Family::DmMessage => (
            &[
                ("conversationId", &["conversationId"]),
                ("messageId", &["messageId"]),
            ],
            "{conversationId}/{messageId}",
        ),
        Family::FollowEdge => (
            &[
                ("userId", &["userId", "followerId"]),
                ("targetId", &["targetId", "followeeId"]),
            ],
            "{userId}/{targetId}",
        ),
    };
    let entity_parts: Option<Vec<&str>> = match &envelope.entity_id {
        None => None,
        Some(entity_id) => {
            let parts: Vec<&str> = entity_id.split('/').collect();
            if parts.len() != names.len() {
                return Err(Rejection::BadId(format!(
                    "entityId {:?} is not of the form {pattern}",
                    clip(entity_id)
                )));
            }
            Some(parts)
        }
    };
    let mut ids = Vec::with_capacity(names.len());
    for (position, (name, aliases)) in names.iter().enumerate() {
        let mut found: Option<(String, String)> = None;
        let places = [
            ("payload", envelope.document.as_ref(), *aliases),
            ("data", envelope.data_ids.as_ref(), &aliases[..1]),
            (
                "data.previousDocument",
                envelope.previous_document.as_ref(),
                *aliases,
            ),
        ];
        for (place, map, keys) in places {
            let Some(map) = map else { continue };
            for key in keys {
                match map.get(*key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(id)) => match &found {
                        Some((first_place, first)) if first != id => {
                            return Err(Rejection::InvalidField(format!(
                                "{first_place} and {place}.{key} name different {name}s"
                            )))
                        }
                        Some(_) => {}
                        None => found = Some((format!("{place}.{key}"), id.clone())),
                    },
                    Some(other) => {
                        return Err(Rejection::InvalidField(format!(
                            "{place}.{key} must be a string, not {}",
                            json_kind(other)
                        )))
                    }
                }
            }
        }
        let id = match (found, &entity_parts) {
            (Some((place, id)), Some(parts)) if parts[position] != id => {
                return Err(Rejection::InvalidField(format!(
                    "entityId {:?} does not match {place} {:?}",
                    clip(envelope.entity_id.as_deref().unwrap_or_default()),
                    clip(&id)
                )))
            }
            (Some((_, id)), _) => id,
            (None, Some(parts)) => parts[position].to_string(),
            (None, None) => {
                return Err(Rejection::InvalidField(format!(
                    "{name} is missing from the payload and there is no entityId to derive it from"
                )))
            }
        };
        check_id(name, &id)?;
        ids.push(id);
    }
    let mut ids = ids.into_iter();
    let mut next = || ids.next().expect("one id per name");
    Ok(match family {
        Family::DmConversation => EntityKey::Conversation {
            conversation_id: next(),
        },
        Family::DmMessage => EntityKey::Message {
            conversation_id: next(),
            message_id: next(),
        },
        Family::FollowEdge => EntityKey::FollowEdge {
            user_id: next(),
            target_id: next(),
        },
    })
}

fn upsert_document(
    family: Family,
    fields: &Fields,
    updated_at: Option<Timestamp>,
) -> Result<Document, Rejection> {
    Ok(match family {
        Family::DmMessage => Document::Message(Message {
            author_id: fields.id(&["authorId", "senderId"])?.ok_or_else(|| {
                Rejection::InvalidField("payload.authorId (alias senderId) is missing".into())
            })?,
            body: fields.string(&["body", "content", "text"])?,
            media: fields
                .any("media")
                .map(|media| exact_numbers("payload.media", media).map(|()| canonical_json(media)))
                .transpose()?,
            created_at: fields
                .timestamp("createdAt")?
                .ok_or_else(|| Rejection::InvalidField("payload.createdAt is missing".into()))?,
            updated_at,
        }),
        Family::DmConversation => Document::Conversation(Conversation {
            owner_id: fields.id(&["ownerId"])?,
            participant_ids: fields.id_list(&["participantIds", "peerIds"])?,
            last_message_id: fields.id(&["lastMessageId"])?,
            last_message_at: fields.timestamp("lastMessageAt")?,
            last_message_preview: fields
                .string(&["lastMessagePreview"])?
                .map(|p| p.chars().take(PREVIEW_CHARS).collect()),
            last_message_author_id: fields.id(&["lastMessageAuthorId"])?,
            created_at: fields.timestamp("createdAt")?,
            updated_at,
        }),
        Family::FollowEdge => Document::FollowEdge(FollowEdge {
            edge_type: fields
                .string(&["edgeType"])?
                .unwrap_or_else(|| "follow".to_string()),
            created_at: fields.timestamp("createdAt")?,
            updated_at,
        }),
    })
}

/// Typed access to the document's fields, resolving aliases: aliases that are both present
/// must agree, and a value of the wrong type is refused with the field's name.
struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
}

impl Fields<'_> {
    fn any(&self, name: &str) -> Option<&Value> {
        self.map?.get(name).filter(|v| !v.is_null())
    }

    fn one_of<'n>(&self, names: &[&'n str]) -> Result<Option<(&'n str, &Value)>, Rejection> {
        let mut found: Option<(&'n str, &Value)> = None;
        for name in names {
            if let Some(value) = self.any(name) {
                match found {
                    Some((first, seen)) if seen != value => {
                        return Err(Rejection::InvalidField(format!(
                            "payload.{first} and payload.{name} are aliases but disagree"
                        )))
                    }
                    Some(_) => {}
                    None => found = Some((name, value)),
                }
            }
        }
        Ok(found)
    }

    fn string(&self, names: &[&str]) -> Result<Option<String>, Rejection> {
        match self.one_of(names)? {
            None => Ok(None),
            Some((_, Value::String(s))) => Ok(Some(s.clone())),
            Some((name, other)) => Err(Rejection::InvalidField(format!(
                "payload.{name} must be a string, not {}",
                json_kind(other)
            ))),
        }
    }

    fn id(&self, names: &[&str]) -> Result<Option<String>, Rejection> {
        let id = self.string(names)?;
        if let Some(id) = &id {
            check_id(&format!("payload.{}", names[0]), id)?;
        }
        Ok(id)
    }

    fn id_list(&self, names: &[&str]) -> Result<Option<Vec<String>>, Rejection> {
        match self.one_of(names)? {
            None => Ok(None),
            Some((name, Value::Array(items))) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(id) => {
                        check_id(&format!("payload.{name}[{i}]"), id)?;
                        Ok(id.clone())
                    }
                    other => Err(Rejection::InvalidField(format!(
                        "payload.{name}[{i}] must be a string id, not {}",
                        json_kind(other)
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some((name, other)) => Err(Rejection::InvalidField(format!(
                "payload.{name} must be an array of ids, not {}",
                json_kind(other)
            ))),
        }
    }

    fn timestamp(&self, name: &str) -> Result<Option<Timestamp>, Rejection> {
        self.any(name)
            .map(|value| {
                Timestamp::from_json(value)
                    .map_err(|e| Rejection::InvalidField(format!("payload.{name} {e}")))
            })
            .transpose()
    }
}

/// Every rejection that needs no database, decided by parsing alone: the sample batch of
/// `events/bad/` (one record of each kind, named after it) through [`Event::parse`].
#[cfg(test)]
mod parse_only_rejections {
    use super::*;

    #[test]
    fn each_bad_sample_is_rejected_by_parsing_alone_with_its_kind() {
        let batch: Value = serde_json::from_str(include_str!(
            "../../../events/bad/dm-message-rejections.json"
        ))
        .unwrap();
        let limits = Limits {
            now: Timestamp::parse_rfc3339("2025-10-08T12:40:00Z").unwrap(),
            max_future_skew: std::time::Duration::from_secs(900),
        };
        let expected = [
            ("bad-not-json", Some("not JSON")),
            ("bad-unknown-shape", Some("unknown shape")),
            ("bad-unknown-type", Some("unknown event type")),
            ("bad-missing-author", Some("invalid field")),
            ("bad-id-with-slash", Some("bad id")),
            ("bad-nul-character", Some("NUL character")),
            ("bad-operation-mismatch", Some("operation mismatch")),
            ("bad-future-version", Some("version in the future")),
            // A valid event on another family's queue: the batch processor's routing rejects it.
            ("bad-misrouted", None),
            ("bad-entity-mismatch", Some("invalid field")),
            ("bad-conflicting-aliases", Some("invalid field")),
            ("bad-timestamp", Some("invalid field")),
            ("good-in-bad-batch", None),
        ];
        let records = batch["Records"].as_array().unwrap();
        assert_eq!(
            records.len(),
            expected.len(),
            "one expectation per sample record"
        );
        for (record, (id, kind)) in records.iter().zip(expected) {
            assert_eq!(record["messageId"], id);
            let parsed = Event::parse(record["body"].as_str().unwrap(), limits);
            assert_eq!(
                parsed.as_ref().err().map(Rejection::kind),
                kind,
                "{id}: {parsed:?}"
            );
        }
    }
}
