//! The four accepted body shapes (docs/contract.md §1), unwrapped to one [`Envelope`]:
//! the canonical envelope, CloudEvents 1.0 structured JSON, and either of them inside an
//! SNS notification or an EventBridge event.

use serde_json::{Map, Value};

use crate::rejection::Rejection;
use crate::timestamp::{clip, json_kind, Timestamp};

/// One SQS body holds at most this many bytes (the SQS limit the contract adopts).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every shape says, before the event type's rules are applied.
#[derive(Debug, Default)]
pub struct Envelope {
    pub event_type: String,
    pub event_id: Option<String>,
    pub occurred_at: Option<Timestamp>,
    pub entity_id: Option<String>,
    pub source: Option<String>,
    pub attempt: Option<u32>,
    /// The document: `payload`, or CloudEvents `data.document`.
    pub document: Option<Map<String, Value>>,
    /// CloudEvents `data` ids (`conversationId`, `messageId`, `userId`, `targetId`).
    pub data_ids: Option<Map<String, Value>>,
    /// CloudEvents `data.previousDocument`, where a delete may find its ids.
    pub previous_document: Option<Map<String, Value>>,
    /// CloudEvents `data.operation`.
    pub operation: Option<String>,
}

impl Envelope {
    pub fn parse(body: &str) -> Result<Envelope, Rejection> {
        if body.len() > MAX_BODY_BYTES {
            return Err(Rejection::TooLarge(body.len()));
        }
        let value = parse_json(body).map_err(|e| Rejection::NotJson(e.to_string()))?;
        reject_nul(&value, "$")?;
        Self::from_value(value, true)
    }

    fn from_value(value: Value, may_be_wrapped: bool) -> Result<Envelope, Rejection> {
        let Value::Object(object) = value else {
            return Err(Rejection::UnknownShape(format!(
                "the body is {}, not a JSON object",
                json_kind(&value)
            )));
        };
        if may_be_wrapped {
            if object.get("Type").and_then(Value::as_str) == Some("Notification") {
                let message = match object.get("Message") {
                    Some(Value::String(message)) => message,
                    _ => {
                        return Err(Rejection::UnknownShape(
                            "SNS notification without a Message string".into(),
                        ))
                    }
                };
                let inner = parse_json(message)
                    .map_err(|e| Rejection::NotJson(format!("the SNS Message is not JSON: {e}")))?;
                reject_nul(&inner, "$.Message")?;
                return Self::from_value(inner, false);
            }
            if object.contains_key("detail-type") && object.contains_key("detail") {
                let detail = match &object["detail"] {
                    Value::String(text) => {
                        let inner = parse_json(text).map_err(|e| {
                            Rejection::NotJson(format!("the EventBridge detail is not JSON: {e}"))
                        })?;
                        reject_nul(&inner, "$.detail")?;
                        inner
                    }
                    other => other.clone(),
                };
                return Self::from_value(detail, false);
            }
        }
        if object.contains_key("specversion") {
            Self::cloud_event(object)
        } else if object.contains_key("eventType") {
            Self::canonical(object)
        } else {
            Err(Rejection::UnknownShape(
                "expected a canonical envelope (eventType), a CloudEvents 1.0 event \
                 (specversion), or either inside an SNS notification or an EventBridge event"
                    .into(),
            ))
        }
    }

    fn canonical(object: Map<String, Value>) -> Result<Envelope, Rejection> {
        let occurred_at = match object.get("occurredAt") {
            None | Some(Value::Null) => {
                return Err(Rejection::InvalidField("occurredAt is missing".into()))
            }
            Some(value) => Some(
                Timestamp::from_json(value)
                    .map_err(|e| Rejection::InvalidField(format!("occurredAt {e}")))?,
            ),
        };
        Ok(Envelope {
            event_type: required_string(&object, "eventType")?,
            event_id: optional_string(&object, "eventId")?,
            occurred_at,
            entity_id: optional_string(&object, "entityId")?,
            source: optional_string(&object, "source")?,
            attempt: attempt(&object)?,
            document: optional_object(&object, "payload")?,
            ..Envelope::default()
        })
    }

    fn cloud_event(object: Map<String, Value>) -> Result<Envelope, Rejection> {
        match object.get("specversion") {
            Some(Value::String(v)) if v == "1.0" => {}
            other => {
                return Err(Rejection::UnknownShape(format!(
                    "CloudEvents specversion {} is not supported; expected \"1.0\"",
                    other.map(|v| clip(&v.to_string())).unwrap_or_default()
                )))
            }
        }
        if object.contains_key("data_base64") {
            return Err(Rejection::InvalidField(
                "data_base64 is not supported; send data as structured JSON".into(),
            ));
        }
        // CloudEvents makes `time` optional; the version then comes from the document.
        let occurred_at = match object.get("time") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                Timestamp::from_json(value)
                    .map_err(|e| Rejection::InvalidField(format!("time {e}")))?,
            ),
        };
        let data = optional_object(&object, "data")?.unwrap_or_default();
        let document = embedded_document(&data, "document")?;
        let previous_document = embedded_document(&data, "previousDocument")?;
        let operation = optional_string(&data, "operation")?;
        let mut data_ids = Map::new();
        for key in ["conversationId", "messageId", "userId", "targetId"] {
            if let Some(value) = data.get(key).filter(|v| !v.is_null()) {
                data_ids.insert(key.to_string(), value.clone());
            }
        }
        Ok(Envelope {
            event_type: required_string(&object, "type")?,
            event_id: optional_string(&object, "id")?,
            occurred_at,
            entity_id: optional_string(&object, "entityId")?,
            source: optional_string(&object, "source")?,
            attempt: attempt(&object)?,
            document,
            data_ids: Some(data_ids),
            previous_document,
            operation,
        })
    }
}

/// JSON text as a [`Value`], refusing an object with the same key twice. RFC 8259 leaves
/// such an object's meaning to each parser (serde_json keeps the last, others the first),
/// and RFC 8785, the canonical form the content hash is taken of, forbids it (I-JSON): a
/// body two readers could read as two documents is rejected, not guessed at. The key is
/// named (a field name, never content); the position is serde_json's line and column.
pub fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    Ok(serde_json::from_str::<Strict>(text)?.0)
}

/// A [`Value`] whose objects have distinct keys.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if object.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(serde::de::Error::custom(format_args!(
                    "the key {shown:?} appears twice in one object"
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Whether any string or key in `value` holds U+0000.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// PostgreSQL text cannot hold U+0000, so a body with one anywhere is refused whole. The
/// walk that names where is taken only when there is one.
fn reject_nul(value: &Value, path: &str) -> Result<(), Rejection> {
    if !has_nul(value) {
        return Ok(());
    }
    reject_nul_at(value, path)
}

fn reject_nul_at(value: &Value, path: &str) -> Result<(), Rejection> {
    match value {
        Value::String(s) if s.contains('\0') => Err(Rejection::NulCharacter(format!(
            "the string at {path} contains U+0000, which PostgreSQL text cannot hold"
        ))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| reject_nul_at(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            if key.contains('\0') {
                return Err(Rejection::NulCharacter(format!(
                    "a key in {path} contains U+0000, which PostgreSQL text cannot hold"
                )));
            }
            reject_nul_at(item, &format!("{path}.{key}"))
        }),
        _ => Ok(()),
    }
}

/// `document` / `previousDocument` may be a JSON object or a JSON string holding one.
fn embedded_document(
    data: &Map<String, Value>,
    key: &str,
) -> Result<Option<Map<String, Value>>, Rejection> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(Value::String(text)) => match parse_json(text) {
            Ok(Value::Object(map)) => {
                let document = Value::Object(map);
                reject_nul(&document, &format!("$.data.{key}"))?;
                match document {
                    Value::Object(map) => Ok(Some(map)),
                    _ => unreachable!("made an object above"),
                }
            }
            Ok(Value::Null) => Ok(None),
            Ok(other) => Err(Rejection::InvalidField(format!(
                "data.{key} is a string holding {}, not a JSON object",
                json_kind(&other)
            ))),
            Err(e) => Err(Rejection::InvalidField(format!(
                "data.{key} is a string that is not JSON ({e})"
            ))),
        },
        Some(other) => Err(Rejection::InvalidField(format!(
            "data.{key} must be an object or a JSON string, not {}",
            json_kind(other)
        ))),
    }
}

fn required_string(object: &Map<String, Value>, key: &str) -> Result<String, Rejection> {
    optional_string(object, key)?
        .ok_or_else(|| Rejection::InvalidField(format!("{key} is missing")))
}

fn optional_string(object: &Map<String, Value>, key: &str) -> Result<Option<String>, Rejection> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Rejection::InvalidField(format!(
            "{key} must be a string, not {}",
            json_kind(other)
        ))),
    }
}

fn optional_object(
    object: &Map<String, Value>,
    key: &str,
) -> Result<Option<Map<String, Value>>, Rejection> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(other) => Err(Rejection::InvalidField(format!(
            "{key} must be an object, not {}",
            json_kind(other)
        ))),
    }
}

fn attempt(object: &Map<String, Value>) -> Result<Option<u32>, Rejection> {
    match object.get("attempt") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|a| a <= u32::MAX as u64) => {
            Ok(n.as_u64().map(|a| a as u32))
        }
        Some(_) => Err(Rejection::InvalidField(
            "attempt must be a non-negative integer".into(),
        )),
    }
}
