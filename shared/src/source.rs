//! The source snapshot (docs/snapshot.md): the source store's documents as JSON lines, one
//! document a line, `{"family": "dm.message" | "dm.conversation" | "follow.edge",
//! "document": {...}}`, the document with the same fields and timestamp forms as an event's
//! payload. `mirrorctl check --source` compares it with the mirror; `mirrorctl backfill`
//! applies it as import events.

use serde_json::{json, Value};

use crate::batch::{Outcome, Record, RecordOutcome};
use crate::event::{Event, Family, Limits};
use crate::inputs::Item;
use crate::rejection::Rejection;

/// What backfilled rows carry as `sync_source`.
pub const BACKFILL_SOURCE: &str = "backfill";

/// The import event of one snapshot line: a canonical envelope of type `<family>.updated`
/// from source `backfill`, whose version is the document's own (`updatedAt`, else
/// `deletedAt`, else `createdAt`), so that a newer live event always wins over it and an
/// equal one makes it a duplicate.
pub fn import_body(line: &str) -> Result<String, Rejection> {
    let value = crate::envelope::parse_json(line)
        .map_err(|e| Rejection::NotJson(format!("{} at column {}", category(&e), e.column())))?;
    let Value::Object(mut object) = value else {
        return Err(Rejection::UnknownShape(
            "a snapshot line is an object {\"family\": ..., \"document\": {...}}".into(),
        ));
    };
    let family = match object.get("family") {
        Some(Value::String(name)) => Family::ALL
            .into_iter()
            .find(|f| f.type_prefix() == name)
            .ok_or_else(|| {
                Rejection::UnknownType(format!(
                    "family {name:?}: expected dm.message, dm.conversation or follow.edge"
                ))
            })?,
        _ => {
            return Err(Rejection::UnknownShape(
                "the snapshot line has no \"family\" string".into(),
            ))
        }
    };
    let document = match object.remove("document") {
        Some(document @ Value::Object(_)) => document,
        _ => {
            return Err(Rejection::UnknownShape(
                "the snapshot line has no \"document\" object".into(),
            ))
        }
    };
    let version = ["updatedAt", "deletedAt", "createdAt"]
        .into_iter()
        .find_map(|field| document.get(field).filter(|v| !v.is_null()))
        .cloned()
        .ok_or_else(|| {
            Rejection::InvalidField(
                "the document has no updatedAt, deletedAt or createdAt to version it".into(),
            )
        })?;
    let envelope = json!({
        "eventType": format!("{}.updated", family.type_prefix()),
        "occurredAt": version,
        "source": BACKFILL_SOURCE,
        "payload": document,
    });
    Ok(envelope.to_string())
}

/// The line number in an item id `{file}:{line}` (1 for a file of one document).
pub fn line_of(id: &str) -> u64 {
    id.rsplit_once(':')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1)
}

/// The snapshot at `path` as import events for [`crate::apply::apply`], read on a thread
/// of its own at most `read_ahead` items ahead, from line `resume_from` on. A line that is
/// not a document is a rejection naming the line and what is wrong.
pub fn backfill_items(
    path: std::path::PathBuf,
    resume_from: u64,
    read_ahead: usize,
) -> tokio::sync::mpsc::Receiver<Item> {
    let (sender, receiver) = tokio::sync::mpsc::channel(read_ahead.max(1));
    std::thread::spawn(move || {
        let mut open = true;
        crate::inputs::each(&[path], &mut |item: Item| {
            let item = match item {
                Item::Record(r) if line_of(&r.message_id) < resume_from => return,
                Item::Problem(p) if line_of(&p.message_id) < resume_from => return,
                Item::Record(r) => match r.body.as_deref().map(import_body) {
                    Some(Ok(body)) => Item::Record(Record {
                        body: Some(body),
                        ..r
                    }),
                    Some(Err(why)) => {
                        Item::Problem(RecordOutcome::new(r.message_id, Outcome::Rejected(why)))
                    }
                    None => Item::Problem(RecordOutcome::new(
                        r.message_id,
                        Outcome::Rejected(Rejection::Empty),
                    )),
                },
                other => other,
            };
            open = open && sender.blocking_send(item).is_ok();
        });
    });
    receiver
}

/// A snapshot line as the event that `backfill` would apply.
pub fn import_event(line: &str, limits: Limits) -> Result<Event, Rejection> {
    Event::parse(&import_body(line)?, limits)
}

fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "it ends too early",
        serde_json::error::Category::Data => "an object has the same key twice",
        _ => "a syntax error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Timestamp;

    fn limits() -> Limits {
        Limits {
            now: Timestamp::now(),
            max_future_skew: std::time::Duration::from_secs(900),
        }
    }

    #[test]
    fn a_snapshot_line_becomes_an_import_event_versioned_by_its_document() {
        let line = r#"{"family": "dm.message", "document": {"conversationId": "c1", "messageId": "m1", "authorId": "u1", "body": "hi", "createdAt": "2025-10-08T12:34:00Z"}}"#;
        let event = import_event(line, limits()).unwrap();
        assert_eq!(event.source, BACKFILL_SOURCE);
        assert_eq!(event.key.entity_id(), "c1/m1");
        assert_eq!(event.version.to_string(), "2025-10-08T12:34:00.000000Z");
        let line = r#"{"family": "follow.edge", "document": {"userId": "u1", "targetId": "u2", "createdAt": "2025-10-08T12:00:00Z", "updatedAt": "2025-10-09T12:00:00Z"}}"#;
        let event = import_event(line, limits()).unwrap();
        assert_eq!(event.version.to_string(), "2025-10-09T12:00:00.000000Z");
    }

    #[test]
    fn a_bad_snapshot_line_is_rejected_with_what_is_wrong() {
        let cases = [
            ("not json", "not JSON"),
            ("[1]", "unknown shape"),
            (
                r#"{"family": "dm.reaction", "document": {}}"#,
                "unknown event type",
            ),
            (r#"{"family": "dm.message"}"#, "unknown shape"),
            (
                r#"{"family": "follow.edge", "document": {"userId": "u1", "targetId": "u2"}}"#,
                "invalid field: the document has no updatedAt",
            ),
        ];
        for (line, reason) in cases {
            let why = import_event(line, limits()).unwrap_err().to_string();
            assert!(why.starts_with(reason), "{line}: {why}");
        }
    }
}
