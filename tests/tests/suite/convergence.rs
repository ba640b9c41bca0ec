//! Convergence (docs/contract.md §3): the final rows are a function of the *set* of
//! accepted events. Random events for a few entities, applied in a random order, with random
//! duplicates and random batch splits (and chunks small enough to run concurrently), end in
//! the same rows as one in-order application. The same holds when a backfill's import events
//! (docs/snapshot.md) are mixed in: a snapshot document is one more event, versioned by the
//! document, so a backfill interleaved with live events, or run twice, changes nothing the
//! oracle would not.

use mirror_tests::realtime_mirror::config::Config;
use mirror_tests::realtime_mirror::event::{Event, Limits};
use mirror_tests::realtime_mirror::source;
use mirror_tests::realtime_mirror::store::Snapshot;
use mirror_tests::realtime_mirror::timestamp::Timestamp;
use mirror_tests::{derived_column_disagreements, Mirror};
use proptest::prelude::*;
use serde_json::{json, Value};

const TIMES: [&str; 3] = [
    "2025-01-01T00:00:01Z",
    "2025-01-01T00:00:02Z",
    "2025-01-01T00:00:03Z",
];
const IDS: [&str; 3] = ["u1", "u2", "u3"];

/// Entities: two conversations, three messages (two in c1), two follow edges.
const ENTITIES: [(&str, &str); 7] = [
    ("dm.conversation", "c1"),
    ("dm.conversation", "c2"),
    ("dm.message", "c1/m1"),
    ("dm.message", "c1/m2"),
    ("dm.message", "c2/m1"),
    ("follow.edge", "u1/u2"),
    ("follow.edge", "u2/u1"),
];

#[derive(Clone, Debug)]
struct Change {
    entity: usize,
    /// 0 upsert, 1 delete, 2 soft delete (an update with deletedAt)
    kind: u8,
    version: usize,
    variant: usize,
    created: usize,
    event_id: u8,
    /// An upsert or soft delete that arrives as a snapshot document through `backfill`
    /// rather than as a live event.
    backfill: bool,
}

fn envelope(c: &Change) -> Value {
    let (family, entity_id) = ENTITIES[c.entity];
    let parts: Vec<&str> = entity_id.split('/').collect();
    let version = TIMES[c.version];
    let mut ids = match family {
        "dm.conversation" => json!({"conversationId": parts[0]}),
        "dm.message" => json!({"conversationId": parts[0], "messageId": parts[1]}),
        _ => json!({"userId": parts[0], "targetId": parts[1]}),
    };
    let event = match c.kind {
        1 => {
            json!({"eventType": format!("{family}.deleted"), "occurredAt": version, "entityId": entity_id})
        }
        kind => {
            let payload = ids.as_object_mut().unwrap();
            payload.insert("updatedAt".into(), json!(version));
            if kind == 2 {
                payload.insert("deletedAt".into(), json!(TIMES[c.created]));
            } else {
                match family {
                    "dm.conversation" => {
                        let participants =
                            [vec!["u1", "u2"], vec!["u1", "u2", "u3"], vec!["u3", "u1"]];
                        payload.insert("participantIds".into(), json!(participants[c.variant]));
                        payload.insert(
                            "lastMessagePreview".into(),
                            json!(format!("doc {}", c.variant)),
                        );
                    }
                    "dm.message" => {
                        payload.insert("authorId".into(), json!(IDS[c.variant]));
                        payload.insert("body".into(), json!(["a", "b", "c"][c.variant]));
                        payload.insert("createdAt".into(), json!(TIMES[c.created]));
                    }
                    _ => {
                        payload.insert(
                            "edgeType".into(),
                            json!(["follow", "mute", "close"][c.variant]),
                        );
                    }
                }
            }
            json!({"eventType": format!("{family}.updated"), "occurredAt": version, "payload": payload})
        }
    };
    if c.backfill && c.kind != 1 {
        // The document of the snapshot line is the live event's payload.
        let line = json!({"family": family, "document": event["payload"]}).to_string();
        let import = source::import_body(&line).expect("generated documents are valid");
        return serde_json::from_str(&import).unwrap();
    }
    let mut event = event;
    event["eventId"] = json!(format!("e{}", c.event_id));
    event
}

fn change(backfill: bool) -> impl Strategy<Value = Change> {
    (
        0..ENTITIES.len(),
        0u8..3,
        0..3usize,
        0..3usize,
        0..3usize,
        0u8..4,
        any::<bool>(),
    )
        .prop_map(
            move |(entity, kind, version, variant, created, event_id, imported)| Change {
                entity,
                kind,
                version,
                variant,
                created,
                event_id,
                backfill: backfill && imported,
            },
        )
}

/// The events (with `backfill`, about half of the upserts as snapshot documents), then a
/// delivery: a shuffled copy with some events repeated — a backfill run twice, a live event
/// redelivered — and where to cut it into batches.
fn scenario(backfill: bool) -> impl Strategy<Value = (Vec<Value>, Vec<Value>, Vec<bool>)> {
    prop::collection::vec(change(backfill), 1..14)
        .prop_flat_map(|changes| {
            let events: Vec<Value> = changes.iter().map(envelope).collect();
            let n = events.len();
            (Just(events), prop::collection::vec(0..n, 0..6))
        })
        .prop_flat_map(|(events, repeats)| {
            let mut delivery = events.clone();
            delivery.extend(repeats.iter().map(|&i| events[i].clone()));
            let cuts = prop::collection::vec(any::<bool>(), delivery.len());
            (Just(events), Just(delivery).prop_shuffle(), cuts)
        })
}

fn config() -> Config {
    // Chunks of two: one batch spans several transactions, in flight at once.
    Config {
        chunk_size: 2,
        ..Config::default()
    }
}

/// One application in the contract's total order, one event per batch.
async fn in_order(mirror: &Mirror, events: &[Value]) -> Snapshot {
    let limits = Limits {
        now: Timestamp::now(),
        max_future_skew: std::time::Duration::from_secs(900),
    };
    let mut sorted: Vec<(_, &Value)> = events
        .iter()
        .map(|e| {
            (
                Event::parse(&e.to_string(), limits)
                    .expect("generated events are valid")
                    .rank(),
                e,
            )
        })
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, event) in sorted {
        let summary = mirror.apply(std::slice::from_ref(event)).await.summary();
        assert_eq!(summary.rejected + summary.failed, 0, "{summary:?}");
    }
    mirror
        .store()
        .snapshot()
        .await
        .unwrap()
        .without_bookkeeping()
}

async fn delivered(mirror: &Mirror, delivery: &[Value], cuts: &[bool]) -> Snapshot {
    let mut batch = Vec::new();
    for (event, cut) in delivery.iter().zip(cuts) {
        batch.push(event.clone());
        if *cut {
            let summary = mirror.apply(&batch).await.summary();
            assert_eq!(summary.rejected + summary.failed, 0, "{summary:?}");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        mirror.apply(&batch).await;
    }
    // Whatever order the batches came in, each conversation's last_message_* is its newest
    // live message's (the writers move it forward from what they wrote).
    let state = mirror.store().snapshot().await.unwrap();
    let wrong = derived_column_disagreements(&state);
    assert!(wrong.is_empty(), "{wrong:#?}");
    state.without_bookkeeping()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The oracle's rows and the delivered rows, on two fresh mirrors of one store.
fn both(
    postgres: bool,
    events: &[Value],
    delivery: &[Value],
    cuts: &[bool],
) -> (Snapshot, Snapshot) {
    runtime().block_on(async {
        let (reference, subject) = if postgres {
            (
                Mirror::postgres_with(config()).await,
                Mirror::postgres_with(config()).await,
            )
        } else {
            (
                Mirror::sqlite_in_memory_with(config()).await,
                Mirror::sqlite_in_memory_with(config()).await,
            )
        };
        (
            in_order(&reference, events).await,
            delivered(&subject, delivery, cuts).await,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn any_order_duplicates_and_batching_converge_on_sqlite((events, delivery, cuts) in scenario(false)) {
        let (expected, actual) = both(false, &events, &delivery, &cuts);
        prop_assert_eq!(expected, actual);
    }

    #[test]
    fn backfill_interleaved_with_live_events_in_any_order_converges_on_sqlite((events, delivery, cuts) in scenario(true)) {
        let (expected, actual) = both(false, &events, &delivery, &cuts);
        prop_assert_eq!(expected, actual);
    }
}

proptest! {
    // Each case creates two PostgreSQL schemas; fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn any_order_duplicates_and_batching_converge_on_postgres((events, delivery, cuts) in scenario(false)) {
        let (expected, actual) = both(true, &events, &delivery, &cuts);
        prop_assert_eq!(expected, actual);
    }

    #[test]
    fn backfill_interleaved_with_live_events_in_any_order_converges_on_postgres((events, delivery, cuts) in scenario(true)) {
        let (expected, actual) = both(true, &events, &delivery, &cuts);
        prop_assert_eq!(expected, actual);
    }
}
