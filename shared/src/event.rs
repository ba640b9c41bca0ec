//! Events as the mirror applies them (docs/contract.md §2 and §3): the type, the entity,
//! the full document or a tombstone, the version, the content hash and the idempotency key.

use std::fmt;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::envelope::Envelope;
use crate::rejection::Rejection;
use crate::timestamp::{clip, json_kind, Timestamp};

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
    pub idempotency_key: String,
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

    fn from_envelope(envelope: Envelope, limits: Limits) -> Result<Event, Rejection> {
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
            event_id: envelope.event_id.unwrap_or_else(|| idempotency_key.clone()),
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

/// The idempotency key: lowercase hex SHA-256 of the UTF-8 bytes of
/// `{eventType}\n{entityId}\n{version}\n{contentHash}`, with the past-tense event type, the
/// version as RFC 3339 UTC with six fractional digits and the content hash in lowercase hex.
/// Ids cannot hold a newline, so the fields cannot run into each other.
pub fn idempotency_key(
    event_type: &EventType,
    key: &EntityKey,
    version: Timestamp,
    content_hash: &str,
) -> String {
    let text = format!(
        "{event_type}\n{}\n{version}\n{content_hash}",
        key.entity_id()
    );
    sha256_hex(text.as_bytes())
}

/// The values an event writes, with the contract's camelCase names: what the content hash
/// covers. Absent optional fields are present as `null`.
pub fn canonical_document(key: &EntityKey, document: &Document) -> Value {
    let mut object = match key {
        EntityKey::Conversation { conversation_id } => json!({ "conversationId": conversation_id }),
        EntityKey::Message {
            conversation_id,
            message_id,
        } => {
            json!({ "conversationId": conversation_id, "messageId": message_id })
        }
        EntityKey::FollowEdge { user_id, target_id } => {
            json!({ "userId": user_id, "targetId": target_id })
        }
    };
    let ts = |t: &Option<Timestamp>| t.map(|t| t.to_string());
    let fields = match document {
        Document::Tombstone { deleted_at } => json!({ "deletedAt": deleted_at.to_string() }),
        Document::Message(m) => json!({
            "authorId": m.author_id,
            "body": m.body,
            "media": m.media.as_deref().map(|text| serde_json::from_str::<Value>(text).expect("media is canonical JSON")),
            "createdAt": m.created_at.to_string(),
            "updatedAt": ts(&m.updated_at),
        }),
        Document::Conversation(c) => json!({
            "ownerId": c.owner_id,
            "participantIds": c.participant_ids,
            "lastMessageId": c.last_message_id,
            "lastMessageAt": ts(&c.last_message_at),
            "lastMessagePreview": c.last_message_preview,
            "lastMessageAuthorId": c.last_message_author_id,
            "createdAt": ts(&c.created_at),
            "updatedAt": ts(&c.updated_at),
        }),
        Document::FollowEdge(e) => json!({
            "edgeType": e.edge_type,
            "createdAt": ts(&e.created_at),
            "updatedAt": ts(&e.updated_at),
        }),
    };
    if let (Value::Object(target), Value::Object(source)) = (&mut object, fields) {
        target.extend(source);
    }
    object
}

/// The canonical JSON text of a value: RFC 8785, the JSON Canonicalization Scheme (object
/// keys sorted by their UTF-16 code units, no insignificant white space, the minimal string
/// escapes, and every number written as ECMAScript writes the double it denotes: `-0` is
/// `0`, `4.50` is `4.5`, `1e300` is `1e+300`, integers beyond 2^53 are rounded to a double).
/// What is hashed is this text, and it is what both stores keep.
pub fn canonical_json(value: &Value) -> String {
    serde_json_canonicalizer::to_string(value)
        .expect("a serde_json value has no NaN or infinity, so it always canonicalises")
}

/// The largest integer a double holds exactly (2^53 − 1): JSON canonicalisation (RFC 8785)
/// writes every number as the double it denotes.
const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// Refuses an integer the canonical form could not keep exactly (it would be rounded to a
/// double: 12345678901234567890 becomes 12345678901234567000), naming where it is. A mirror
/// must not change a value silently; such a value travels as a string.
fn exact_numbers(path: &str, value: &Value) -> Result<(), Rejection> {
    match value {
        Value::Number(n) => {
            let too_large = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u > MAX_EXACT_INTEGER,
                (None, Some(i)) => i.unsigned_abs() > MAX_EXACT_INTEGER,
                (None, None) => false,
            };
            if too_large {
                return Err(Rejection::InvalidField(format!(
                    "{path} is an integer beyond 2^53 − 1, which the canonical JSON form \
                     (RFC 8785) cannot keep exactly; send it as a string"
                )));
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| exact_numbers(&format!("{path}[{i}]"), item)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(key, item)| exact_numbers(&format!("{path}.{}", clip(key)), item)),
        _ => Ok(()),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

/// Fixed vectors: the canonical form, content hash and idempotency key are what other
/// publishers reproduce (the key is the FIFO deduplication id). The expected values come
/// from RFC 8785 itself and from Python's `rfc8785` package with `hashlib`, not from this
/// code.
#[cfg(test)]
mod golden_vectors {
    use super::*;

    #[test]
    fn canonical_json_is_rfc_8785_as_in_its_own_example() {
        // RFC 8785 section 3.2.2.
        let input = r#"{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}"#;
        let value: Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            canonical_json(&value),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    const MEDIA: &str = r#"{"duration": -0.0, "big": 1.5e300, "small": 1e-7, "count": 9007199254740991,
        "ratio": 4.50, "name": "clip \u00e9", "z": [1, 2.0], "\ud83d\ude00": 1, "\ufb01": 2}"#;

    fn event() -> Event {
        let body = format!(
            r#"{{"eventType": "dm.message.create", "occurredAt": "2025-10-08T12:34:00Z",
                "payload": {{"conversationId": "c1", "messageId": "m1", "senderId": "u1",
                             "text": "hello", "media": {MEDIA}, "createdAt": 1759926840000}}}}"#
        );
        let limits = Limits {
            now: Timestamp::parse_rfc3339("2025-10-08T12:34:00Z").unwrap(),
            max_future_skew: Duration::from_secs(900),
        };
        Event::parse(&body, limits).unwrap()
    }

    #[test]
    fn the_content_hash_and_idempotency_key_are_pinned() {
        let event = event();
        assert_eq!(
            canonical_json(&canonical_document(&event.key, &event.document)),
            r#"{"authorId":"u1","body":"hello","conversationId":"c1","createdAt":"2025-10-08T12:34:00.000000Z","media":{"big":1.5e+300,"count":9007199254740991,"duration":0,"name":"clip é","ratio":4.5,"small":1e-7,"z":[1,2],"😀":1,"ﬁ":2},"messageId":"m1","updatedAt":null}"#
        );
        assert_eq!(
            event.content_hash,
            "90aa75b64f0616865bee436a539c62e632a25e7a00035d02991ea50d8d430fc7"
        );
        assert_eq!(
            event.idempotency_key,
            "f12d9a12642e315241e41aa2bf4dcde551ddaf20d6e5ba3cab306baeb8dc22cb"
        );
    }

    #[test]
    fn media_is_kept_in_exactly_the_canonical_form_that_was_hashed() {
        let Document::Message(m) = event().document else {
            panic!("a message")
        };
        assert_eq!(
            m.media.as_deref(),
            Some(
                r#"{"big":1.5e+300,"count":9007199254740991,"duration":0,"name":"clip é","ratio":4.5,"small":1e-7,"z":[1,2],"😀":1,"ﬁ":2}"#
            )
        );
    }

    #[test]
    fn media_integers_a_double_cannot_hold_are_rejected_not_rounded() {
        for big in [
            "9007199254740992",
            "12345678901234567890",
            "-9007199254740992",
        ] {
            let body = format!(
                r#"{{"eventType": "dm.message.created", "occurredAt": "2025-10-08T12:34:00Z",
                    "payload": {{"conversationId": "c1", "messageId": "m1", "authorId": "u1",
                                 "media": {{"ids": [1, {big}]}}, "createdAt": "2025-10-08T12:34:00Z"}}}}"#
            );
            let limits = Limits {
                now: Timestamp::now(),
                max_future_skew: Duration::from_secs(900),
            };
            let why = Event::parse(&body, limits).unwrap_err().to_string();
            assert!(
                why.contains("payload.media.ids[1]") && why.contains("2^53"),
                "{why}"
            );
        }
    }
}
