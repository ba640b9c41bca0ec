//! The bytes other publishers must reproduce: canonical JSON (RFC 8785), the content hash
//! and the idempotency key (docs/contract.md §3.3 and §3.5), pinned by golden vectors.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{Document, EntityKey, EventType};
use crate::rejection::Rejection;
use crate::timestamp::{clip, Timestamp};

/// An idempotency key (docs/contract.md §3.5): 64 lowercase hex digits, made only by
/// [`idempotency_key`]. A record whose key was applied before is a duplicate; publishers to
/// a FIFO queue send it as the deduplication id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
) -> IdempotencyKey {
    let text = format!(
        "{event_type}\n{}\n{version}\n{content_hash}",
        key.entity_id()
    );
    IdempotencyKey(sha256_hex(text.as_bytes()))
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
    if is_plain(value) {
        return serde_json::to_string(value).expect("a serde_json value always serialises");
    }
    serde_json_canonicalizer::to_string(value)
        .expect("a serde_json value has no NaN or infinity, so it always canonicalises")
}

/// Whether serde_json's own compact text of `value` already is its RFC 8785 form, as for
/// every document the mirror hashes: object keys ASCII and in ascending order (so byte order
/// is UTF-16 order), numbers integers a double holds exactly (written the same by both).
/// Strings are escaped alike by both (`"`, `\\`, `\b \f \n \r \t`, other controls as
/// lowercase `\u00xx`, nothing else). Anything else takes the general canonicaliser, which
/// costs several times more per event.
fn is_plain(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u <= MAX_EXACT_INTEGER,
            (None, Some(i)) => i.unsigned_abs() <= MAX_EXACT_INTEGER,
            (None, None) => false,
        },
        Value::Array(items) => items.iter().all(is_plain),
        Value::Object(map) => {
            let mut previous: Option<&str> = None;
            map.iter().all(|(key, item)| {
                let ascending = previous.is_none_or(|p| p < key.as_str());
                previous = Some(key);
                ascending && key.is_ascii() && is_plain(item)
            })
        }
    }
}

/// The largest integer a double holds exactly (2^53 − 1): JSON canonicalisation (RFC 8785)
/// writes every number as the double it denotes.
pub(super) const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// Refuses an integer the canonical form could not keep exactly (it would be rounded to a
/// double: 12345678901234567890 becomes 12345678901234567000), naming where it is. A mirror
/// must not change a value silently; such a value travels as a string.
pub(super) fn exact_numbers(path: &str, value: &Value) -> Result<(), Rejection> {
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

/// Lower-case hex of the SHA-256 of `bytes`: 64 characters, built in one allocation (two
/// per event, so it shows in the client's CPU per event).
pub fn sha256_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(2 * digest.len());
    for b in digest {
        hex.push(DIGITS[usize::from(b >> 4)] as char);
        hex.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    hex
}

/// Fixed vectors: the canonical form, content hash and idempotency key are what other
/// publishers reproduce (the key is the FIFO deduplication id). The expected values come
/// from RFC 8785 itself and from Python's `rfc8785` package with `hashlib`, not from this
/// code.
/// The fast path of [`canonical_json`] against the general canonicaliser, on values of
/// every shape: keys ASCII or not, numbers integers, large or fractional, strings with
/// controls, quotes, non-ASCII and astral characters.
#[cfg(test)]
mod canonical_fast_path {
    use proptest::prelude::*;
    use serde_json::Value;

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just('a'),
                Just('Z'),
                Just('"'),
                Just('\\'),
                Just('/'),
                Just('\u{7f}'),
                Just('é'),
                Just('\u{e000}'),
                Just('\u{1f600}'),
                Just('\u{2028}'),
                (0u8..0x20).prop_map(char::from),
            ],
            0..6,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    /// Keys whose UTF-8 and UTF-16 orders differ (U+E000 and an astral character) come up
    /// often, beside any text.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec!["a", "é", "\u{e000}", "\u{1f600}", "\u{ffff}"])
                .prop_map(str::to_string),
            text(),
        ]
    }

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-1000i64..1000).prop_map(Value::from),
            Just(Value::from(super::MAX_EXACT_INTEGER)),
            Just(Value::from(super::MAX_EXACT_INTEGER + 1)),
            Just(Value::from(-(super::MAX_EXACT_INTEGER as i64) - 5)),
            Just(Value::from(u64::MAX)),
            (-1e6f64..1e6).prop_map(Value::from),
            Just(Value::from(1e21)),
            Just(Value::from(4.5)),
            Just(Value::from(-0.0)),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number(),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..5)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_fast_path_writes_exactly_what_rfc_8785_writes(value in value()) {
            let general = serde_json_canonicalizer::to_string(&value).unwrap();
            prop_assert_eq!(super::canonical_json(&value), general);
        }
    }
}

#[cfg(test)]
mod golden_vectors {
    use std::time::Duration;

    use super::*;
    use crate::event::{Event, Limits};

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
            event.idempotency_key.as_str(),
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
