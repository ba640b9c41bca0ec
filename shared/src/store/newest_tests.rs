//! The forward move of `last_message_*` against the rule itself: for any stored messages,
//! any document fields and any chunk of message writes, what `newest` writes (or leaves, or
//! hands to the full definition) is what the rule gives for the rows after the chunk.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;

use super::*;

/// `last_message_id`, `_at`, `_preview`, `_author_id`.
type Last = (
    Option<String>,
    Option<Timestamp>,
    Option<String>,
    Option<String>,
);

#[derive(Clone, Debug)]
struct Message {
    at: i64,
    live: bool,
    body: String,
}

fn at(minute: i64) -> Timestamp {
    let micros = 1_760_000_000_000_000 + minute * 60_000_000;
    Timestamp::new(chrono::DateTime::from_timestamp_micros(micros).expect("in range"))
        .expect("in range")
}

fn blank() -> Last {
    (None, None, None, None)
}

/// The rule (docs/contract.md), over every message of the conversation.
fn rule(deleted: bool, messages: &BTreeMap<String, Message>, document: &Last) -> Last {
    if deleted {
        return blank();
    }
    if messages.is_empty() {
        return document.clone();
    }
    let newest = (messages.iter())
        .filter(|(_, m)| m.live)
        .max_by(|(a, x), (b, y)| (x.at, a).cmp(&(y.at, b)));
    match newest {
        None => blank(),
        Some((id, m)) => (
            Some(id.clone()),
            Some(at(m.at)),
            Some(m.body.chars().take(140).collect()),
            Some("u1".to_string()),
        ),
    }
}

fn pending(id: &str, write: &Message, version: i64) -> Pending {
    let occurred = at(version).to_string();
    let body = if write.live {
        serde_json::json!({"eventType": "dm.message.updated", "occurredAt": occurred,
            "payload": {"conversationId": "c1", "messageId": id, "authorId": "u1",
                        "body": write.body, "createdAt": at(write.at).to_string()}})
    } else {
        serde_json::json!({"eventType": "dm.message.deleted", "occurredAt": occurred,
            "entityId": format!("c1/{id}")})
    };
    Pending::of(&body)
}

fn message() -> impl Strategy<Value = Message> {
    (0i64..4, prop::bool::weighted(0.7), 0u8..3).prop_map(|(at, live, variant)| Message {
        at,
        live,
        body: format!("body {variant} {}", "é".repeat(70 * variant as usize)),
    })
}

fn messages() -> impl Strategy<Value = BTreeMap<String, Message>> {
    prop::collection::btree_map((0u8..5).prop_map(|i| format!("m{i}")), message(), 0..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn last_message_moved_forward_is_what_the_rule_gives_after_the_chunk(
        stored in messages(),
        chunk in messages(),
        unapplied in prop::collection::vec(any::<bool>(), 5),
        deleted in prop::bool::weighted(0.15),
        document_kind in 0u8..4,
        own_event in prop::option::weighted(0.3, (prop::bool::weighted(0.3), 0u8..4)),
    ) {
        let before_document = document(document_kind, &stored);
        let before = rule(deleted, &stored, &before_document);
        let summary = Summary {
            deleted,
            newest: before.1.zip(before.0.clone()),
            blank: before == blank(),
            as_document: before == before_document,
        };
        let events: Vec<(String, Pending)> = (chunk.iter().enumerate())
            .map(|(i, (id, m))| (id.clone(), pending(id, m, 10 + i as i64)))
            .collect();
        let winners: Vec<&Pending> = events.iter().map(|(_, p)| p).collect();
        let rows: Vec<MessageRow> = winners.iter().map(|p| MessageRow::new(p)).collect();
        let mut after = stored.clone();
        let mut applied = HashSet::new();
        for ((id, m), (i, (_, p))) in chunk.iter().zip(events.iter().enumerate()) {
            if !unapplied[i] {
                applied.insert(p.event.key.clone());
                after.insert(id.clone(), m.clone());
            }
        }
        // The conversation's own event, when one applied: tombstoned or not now, and its
        // document's fields now.
        let (deleted_after, document_after) = match own_event {
            Some((tombstone, kind)) => (tombstone, document(kind, &stored)),
            None => (deleted, before_document),
        };
        let expected = rule(deleted_after, &after, &document_after);
        let summaries = HashMap::from([("c1".to_string(), summary)]);
        let own: HashMap<&str, bool> = own_event.map(|(t, _)| ("c1", t)).into_iter().collect();
        let plan = newest(&rows, &winners, &applied, &summaries, &own);
        let written = (plan.set.iter()).find(|l| l.conversation_id == "c1").map(|l| {
            (l.message_id.map(str::to_string), l.at, l.preview.clone(),
             l.author_id.map(str::to_string))
        });
        let actual = match written {
            Some(last) => last,
            None if plan.recompute.contains(&"c1") => expected.clone(),
            None => before.clone(),
        };
        prop_assert_eq!(actual, expected, "plan {:?}", plan);
    }
}

/// A document's own fields: none, its own, partial, or the very values of the newest stored
/// message (so the stored row cannot tell which one it shows).
fn document(kind: u8, stored: &BTreeMap<String, Message>) -> Last {
    match kind {
        0 => blank(),
        1 => (
            Some("doc".into()),
            Some(at(9)),
            Some("doc".into()),
            Some("u9".into()),
        ),
        2 => (None, Some(at(1)), Some("doc".into()), None),
        _ => rule(false, stored, &blank()),
    }
}

/// `newest` for one write into a conversation whose one stored message is `m1` at minute 0.
fn plan_for(id: &str, write: &Message) -> (Vec<String>, usize) {
    let stored = BTreeMap::from([(
        "m1".to_string(),
        Message {
            at: 0,
            live: true,
            body: "a".into(),
        },
    )]);
    let before = rule(false, &stored, &blank());
    let summary = Summary {
        deleted: false,
        newest: before.1.zip(before.0.clone()),
        blank: false,
        as_document: false,
    };
    let p = pending(id, write, 10);
    let rows = [MessageRow::new(&p)];
    let applied = HashSet::from([p.event.key.clone()]);
    let summaries = HashMap::from([("c1".to_string(), summary)]);
    let plan = newest(&rows, &[&p], &applied, &summaries, &HashMap::new());
    let set = (plan.set.iter())
        .filter_map(|l| l.message_id.map(str::to_string))
        .collect();
    (set, plan.recompute.len())
}

#[test]
fn a_new_message_or_an_edit_of_the_newest_needs_no_full_definition() {
    let new = Message {
        at: 2,
        live: true,
        body: "b".into(),
    };
    assert_eq!(plan_for("m2", &new), (vec!["m2".to_string()], 0));
    let edit = Message {
        at: 0,
        live: true,
        body: "edited".into(),
    };
    assert_eq!(plan_for("m1", &edit), (vec!["m1".to_string()], 0));
    let older = Message {
        at: 0,
        live: true,
        body: "c".into(),
    };
    assert_eq!(
        plan_for("m0", &older),
        (vec![], 0),
        "an older message changes nothing"
    );
    let deleted = Message {
        at: 0,
        live: false,
        body: String::new(),
    };
    assert_eq!(
        plan_for("m1", &deleted),
        (vec![], 1),
        "the newest deleted: the full definition"
    );
}
