//! docs/contract.md §1–4, one test per rule, each run on SQLite and on PostgreSQL.

use mirror_tests::realtime_mirror::batch::Outcome;
use mirror_tests::{
    canonical, conversation, counts, delete, follow, message, on_both_stores, with, without, Counts,
};
use serde_json::{json, Value};

const T0: &str = "2025-10-08T12:00:00Z";
const T1: &str = "2025-10-08T12:01:00Z";
const T2: &str = "2025-10-08T12:02:00Z";

fn cloud_event(event_type: &str, operation: &str, data: Value) -> Value {
    let mut data = data;
    data["operation"] = json!(operation);
    json!({ "specversion": "1.0", "type": event_type, "id": "dm.message.create:firestore:abc:9f1e",
            "source": "//firestore.googleapis.com/projects/demo", "time": T0, "data": data })
}

on_both_stores! {
    async fn a_canonical_message_event_writes_every_column(m: Mirror) {
        let event = json!({
            "eventType": "dm.message.created", "eventId": "e-123", "occurredAt": T0,
            "entityId": "c1/m1", "source": "firestore", "attempt": 1,
            "payload": { "conversationId": "c1", "messageId": "m1", "authorId": "u1", "body": "hello",
                         "media": {"url": "https://x/1.jpg", "kind": "image"}, "createdAt": T0 }
        });
        assert_eq!(m.outcome_of(event).await, Outcome::Applied);
        let row = m.row("dm_messages", &["c1", "m1"]).await;
        assert_eq!(row["author_id"], "u1");
        assert_eq!(row["body"], "hello");
        assert_eq!(row["media"], json!({"kind": "image", "url": "https://x/1.jpg"}));
        assert_eq!(row["created_at"], "2025-10-08T12:00:00.000000Z");
        assert_eq!(row["updated_at"], "2025-10-08T12:00:00.000000Z", "version = occurredAt without updatedAt");
        assert_eq!(row["deleted_at"], Value::Null);
        assert_eq!(row["event_id"], "e-123");
        assert_eq!(row["sync_source"], "firestore");
    }

    async fn cloud_events_with_a_string_document_and_a_present_tense_type_are_accepted(m: Mirror) {
        let document = json!({"authorId": "u2", "body": "from a string", "createdAt": T1}).to_string();
        let event = cloud_event("dm.message.create", "create",
            json!({"conversationId": "c1", "messageId": "m2", "document": document, "previousDocument": null}));
        assert_eq!(m.outcome_of(event).await, Outcome::Applied);
        let row = m.row("dm_messages", &["c1", "m2"]).await;
        assert_eq!(row["body"], "from a string");
        assert_eq!(row["event_id"], "dm.message.create:firestore:abc:9f1e");
        assert_eq!(row["sync_source"], "//firestore.googleapis.com/projects/demo");
    }

    async fn cloud_events_with_an_object_document_are_accepted(m: Mirror) {
        let event = cloud_event("follow.edge.update", "update",
            json!({"userId": "u1", "targetId": "u2", "document": {"edgeType": "close_friend", "updatedAt": T1}}));
        assert_eq!(m.outcome_of(event).await, Outcome::Applied);
        let row = m.row("follow_edges", &["u1", "u2"]).await;
        assert_eq!(row["edge_type"], "close_friend");
        assert_eq!(row["updated_at"], "2025-10-08T12:01:00.000000Z");
    }

    async fn sns_and_eventbridge_wrappers_are_unwrapped(m: Mirror) {
        let inner = message("c1", "m1", "u1", "via sns", T0);
        let sns = json!({"Type": "Notification", "MessageId": "x", "Message": inner.to_string()});
        let inner_ce = cloud_event("dm.message.create", "create",
            json!({"conversationId": "c1", "messageId": "m2", "document": {"authorId": "u1", "body": "via eventbridge", "createdAt": T1}}));
        let eventbridge = json!({"version": "0", "detail-type": "dm.message.create", "source": "app", "detail": inner_ce});
        let summary = m.apply(&[sns, eventbridge]).await.summary();
        assert_eq!(counts(&summary), Counts { applied: 2, ..Counts::default() }, "{summary:?}");
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["body"], "via sns");
        assert_eq!(m.row("dm_messages", &["c1", "m2"]).await["body"], "via eventbridge");
    }

    async fn payload_aliases_resolve_to_the_contract_fields(m: Mirror) {
        let msg = canonical("dm.message.created", T0,
            json!({"conversationId": "c1", "messageId": "m1", "senderId": "u1", "content": "hi", "createdAt": T0}));
        let msg2 = canonical("dm.message.created", T0,
            json!({"conversationId": "c1", "messageId": "m2", "senderId": "u1", "text": "yo", "createdAt": T0}));
        let conv = canonical("dm.conversation.created", T0, json!({"conversationId": "c1", "peerIds": ["u1", "u2"]}));
        let edge = canonical("follow.edge.created", T0, json!({"followerId": "u1", "followeeId": "u2"}));
        assert_eq!(counts(&m.apply(&[msg, msg2, conv, edge]).await.summary()), Counts { applied: 4, ..Counts::default() });
        let row = m.row("dm_messages", &["c1", "m1"]).await;
        assert_eq!((row["author_id"].clone(), row["body"].clone()), (json!("u1"), json!("hi")));
        assert_eq!(m.row("dm_messages", &["c1", "m2"]).await["body"], "yo");
        assert_eq!(m.row("dm_conversations", &["c1"]).await["participant_ids"], json!(["u1", "u2"]));
        let edge = m.row("follow_edges", &["u1", "u2"]).await;
        assert_eq!(edge["edge_type"], "follow", "edgeType defaults to follow");
    }

    async fn aliases_that_disagree_are_rejected(m: Mirror) {
        let event = with(message("c1", "m1", "u1", "x", T0), &["payload", "senderId"], json!("u2"));
        let reason = m.rejection_of(event).await;
        assert!(reason.contains("authorId") && reason.contains("senderId"), "{reason}");
        let same = with(message("c1", "m1", "u1", "x", T0), &["payload", "senderId"], json!("u1"));
        assert_eq!(m.outcome_of(same).await, Outcome::Applied, "aliases that agree are fine");
    }

    async fn timestamps_in_every_form_are_truncated_to_microseconds(m: Mirror) {
        let event = canonical("dm.message.updated", "2025-10-08T14:00:00.9999999+02:00", json!({
            "conversationId": "c1", "messageId": "m1", "authorId": "u1",
            "createdAt": {"_seconds": 1759924800, "_nanoseconds": 123456789},
            "updatedAt": 1759924860123_i64,
        }));
        assert_eq!(m.outcome_of(event).await, Outcome::Applied);
        let row = m.row("dm_messages", &["c1", "m1"]).await;
        assert_eq!(row["created_at"], "2025-10-08T12:00:00.123456Z", "nanoseconds truncated, not rounded");
        assert_eq!(row["updated_at"], "2025-10-08T12:01:00.123000Z");
        let proto = canonical("follow.edge.created", "2025-10-08T12:00:00.0000009Z",
            json!({"userId": "u1", "targetId": "u2", "createdAt": {"seconds": "1759924800", "nanos": 999999999}}));
        assert_eq!(m.outcome_of(proto).await, Outcome::Applied);
        let edge = m.row("follow_edges", &["u1", "u2"]).await;
        assert_eq!(edge["created_at"], "2025-10-08T12:00:00.999999Z");
        assert_eq!(edge["updated_at"], "2025-10-08T12:00:00.000000Z");
    }

    async fn an_event_applied_twice_is_a_duplicate(m: Mirror) {
        let event = message("c1", "m1", "u1", "once", T0);
        assert_eq!(m.outcome_of(event.clone()).await, Outcome::Applied);
        assert_eq!(m.outcome_of(event.clone()).await, Outcome::Duplicate);
        let in_one_batch = m.apply(&[event.clone(), event]).await.summary();
        assert_eq!(counts(&in_one_batch), Counts { duplicate: 2, ..Counts::default() });
        assert_eq!(m.rows("dm_messages").await.len(), 1);
    }

    async fn one_change_under_two_event_ids_is_a_duplicate(m: Mirror) {
        let first = with(message("c1", "m1", "u1", "same", T0), &["eventId"], json!("a:firestore:x:111"));
        let second = with(message("c1", "m1", "u1", "same", T0), &["eventId"], json!("a:firestore:x:222"));
        assert_eq!(m.outcome_of(first).await, Outcome::Applied);
        assert_eq!(m.outcome_of(second).await, Outcome::Duplicate);
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["event_id"], "a:firestore:x:111");
    }

    async fn a_key_applied_before_stays_a_duplicate_after_newer_versions(m: Mirror) {
        let first = with(message("c1", "m1", "u1", "v1", T0), &["payload", "updatedAt"], json!(T0));
        let second = with(message("c1", "m1", "u1", "v2", T0), &["payload", "updatedAt"], json!(T1));
        let third = with(message("c1", "m1", "u1", "v3", T0), &["payload", "updatedAt"], json!(T2));
        assert_eq!(counts(&m.apply_each(&[first.clone(), second.clone()]).await), Counts { applied: 2, ..Counts::default() });
        assert_eq!(m.outcome_of(first.clone()).await, Outcome::Duplicate, "its key was applied, though superseded");
        let never_applied = with(message("c1", "m1", "u1", "v0", T0), &["payload", "updatedAt"], json!("2025-10-08T11:00:00Z"));
        assert_eq!(m.outcome_of(never_applied).await, Outcome::Stale);
        // In one batch beside a newer event of the same entity, too.
        let batch = m.apply(&[first, third]).await;
        assert_eq!(batch.records[0].outcome, Outcome::Duplicate);
        assert_eq!(batch.records[1].outcome, Outcome::Applied);
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["body"], "v3");
    }

    async fn an_older_update_arriving_later_is_stale(m: Mirror) {
        let newer = with(message("c1", "m1", "u1", "new", T0), &["payload", "updatedAt"], json!(T2));
        let older = with(message("c1", "m1", "u1", "old", T0), &["payload", "updatedAt"], json!(T1));
        assert_eq!(m.outcome_of(newer).await, Outcome::Applied);
        assert_eq!(m.outcome_of(older).await, Outcome::Stale);
        let row = m.row("dm_messages", &["c1", "m1"]).await;
        assert_eq!(row["body"], "new");
        assert_eq!(row["updated_at"], "2025-10-08T12:02:00.000000Z");
    }

    async fn on_equal_versions_a_delete_wins_over_an_upsert(m: Mirror) {
        let upsert = with(message("c1", "m1", "u1", "x", T0), &["payload", "updatedAt"], json!(T1));
        let tombstone = delete("dm.message", "c1/m1", T1);
        let first = m.apply_each(&[upsert.clone(), tombstone.clone()]).await;
        assert_eq!(counts(&first), Counts { applied: 2, ..Counts::default() });
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["deleted_at"], "2025-10-08T12:01:00.000000Z");
        // the other order, on another entity
        let upsert2 = with(message("c1", "m2", "u1", "x", T0), &["payload", "updatedAt"], json!(T1));
        let tombstone2 = delete("dm.message", "c1/m2", T1);
        let second = m.apply_each(&[tombstone2, upsert2]).await;
        assert_eq!(counts(&second), Counts { applied: 1, stale: 1, ..Counts::default() });
        assert_eq!(m.row("dm_messages", &["c1", "m2"]).await["body"], Value::Null);
    }

    async fn on_equal_versions_the_greater_content_hash_wins(m: Mirror) {
        use mirror_tests::realtime_mirror::event::{Event, Limits};
        use mirror_tests::realtime_mirror::timestamp::Timestamp;
        let limits = Limits { now: Timestamp::now(), max_future_skew: std::time::Duration::from_secs(900) };
        // The body of whichever of the two has the greater content hash.
        let winner = |x: &Value, y: &Value| {
            let hash = |v: &Value| Event::parse(&v.to_string(), limits).unwrap().content_hash;
            let greater = if hash(x) > hash(y) { x } else { y };
            greater["payload"]["body"].clone()
        };
        let a = with(message("c1", "m1", "u1", "alpha", T0), &["payload", "updatedAt"], json!(T1));
        let b = with(message("c1", "m1", "u1", "bravo", T0), &["payload", "updatedAt"], json!(T1));
        m.apply_each(&[a.clone(), b.clone()]).await;
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["body"], winner(&a, &b), "in order");
        let a2 = with(a, &["payload", "messageId"], json!("m2"));
        let b2 = with(b, &["payload", "messageId"], json!("m2"));
        let summary = m.apply_each(&[b2.clone(), a2.clone()]).await;
        assert_eq!(summary.applied + summary.stale, 2);
        assert_eq!(m.row("dm_messages", &["c1", "m2"]).await["body"], winner(&a2, &b2), "reversed");
    }

    async fn a_tombstone_keeps_no_content(m: Mirror) {
        let live = with(message("c1", "m1", "u1", "secret words", T0), &["payload", "media"], json!({"u": 1}));
        m.apply_each(&[conversation("c1", &["u1", "u2"], T0), live, delete("dm.message", "c1/m1", T2)]).await;
        let row = m.row("dm_messages", &["c1", "m1"]).await;
        for column in ["author_id", "recipient_id", "body", "media", "created_at"] {
            assert_eq!(row[column], Value::Null, "{column} of a tombstone");
        }
        assert_eq!(row["deleted_at"], "2025-10-08T12:02:00.000000Z");
        assert_eq!(row["updated_at"], "2025-10-08T12:02:00.000000Z");
    }

    async fn an_older_upsert_does_not_revive_a_tombstone_but_a_newer_one_does(m: Mirror) {
        m.apply_each(&[delete("follow.edge", "u1/u2", T1)]).await;
        assert_eq!(m.outcome_of(follow("u1", "u2", T0)).await, Outcome::Stale);
        assert_ne!(m.row("follow_edges", &["u1", "u2"]).await["deleted_at"], Value::Null);
        assert_eq!(m.outcome_of(follow("u1", "u2", T2)).await, Outcome::Applied);
        let row = m.row("follow_edges", &["u1", "u2"]).await;
        assert_eq!(row["deleted_at"], Value::Null);
        assert_eq!(row["edge_type"], "follow");
    }

    async fn an_upsert_rewrites_every_column_and_absent_fields_become_null(m: Mirror) {
        let full = canonical("dm.conversation.created", T0, json!({"conversationId": "c1", "ownerId": "u1",
            "participantIds": ["u1", "u2"], "lastMessagePreview": "p", "createdAt": T0}));
        let sparse = canonical("dm.conversation.updated", T1, json!({"conversationId": "c1", "ownerId": "u1"}));
        m.apply_each(&[full, sparse]).await;
        let row = m.row("dm_conversations", &["c1"]).await;
        assert_eq!(row["participant_ids"], Value::Null, "an update without participantIds clears them");
        assert_eq!(row["created_at"], Value::Null);
        assert_eq!(row["last_message_preview"], Value::Null);
        let edited = without(with(message("c1", "m1", "u1", "x", T0), &["payload", "updatedAt"], json!(T2)), &["payload", "body"]);
        m.apply_each(&[message("c1", "m1", "u1", "x", T0), edited]).await;
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["body"], Value::Null);
    }

    async fn an_upsert_with_deleted_at_is_a_soft_delete(m: Mirror) {
        let soft = canonical("dm.message.updated", T2, json!({"conversationId": "c1", "messageId": "m1",
            "updatedAt": T1, "deletedAt": T0}));
        assert_eq!(m.outcome_of(soft).await, Outcome::Applied, "only the ids are required");
        let row = m.row("dm_messages", &["c1", "m1"]).await;
        assert_eq!(row["deleted_at"], "2025-10-08T12:00:00.000000Z");
        assert_eq!(row["updated_at"], "2025-10-08T12:01:00.000000Z", "the version follows the upsert rule");
        assert_eq!(row["body"], Value::Null);
        let older_live = with(message("c1", "m1", "u1", "back?", T0), &["payload", "updatedAt"], json!(T0));
        assert_eq!(m.outcome_of(older_live).await, Outcome::Stale);
    }

    async fn a_delete_needs_only_the_ids(m: Mirror) {
        let by_entity = delete("dm.message", "c1/m1", T0);
        let by_payload = canonical("dm.conversation.deleted", T0, json!({"conversationId": "c2"}));
        let by_previous = cloud_event("follow.edge.delete", "delete",
            json!({"document": null, "previousDocument": json!({"userId": "u1", "targetId": "u2"}).to_string()}));
        let by_data = cloud_event("dm.message.delete", "delete", json!({"conversationId": "c1", "messageId": "m9"}));
        assert_eq!(counts(&m.apply(&[by_entity, by_payload, by_previous, by_data]).await.summary()), Counts { applied: 4, ..Counts::default() });
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["deleted_at"], "2025-10-08T12:00:00.000000Z");
        assert_ne!(m.row("dm_conversations", &["c2"]).await["deleted_at"], Value::Null);
        assert_ne!(m.row("follow_edges", &["u1", "u2"]).await["deleted_at"], Value::Null);
        assert_ne!(m.row("dm_messages", &["c1", "m9"]).await["deleted_at"], Value::Null);
    }

    async fn a_delete_version_is_deleted_at_before_occurred_at(m: Mirror) {
        let tombstone = canonical("dm.message.deleted", T2, json!({"conversationId": "c1", "messageId": "m1", "deletedAt": T1}));
        m.apply_each(&[tombstone]).await;
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["updated_at"], "2025-10-08T12:01:00.000000Z");
    }

    async fn the_entity_id_is_derived_when_absent_and_must_match_when_present(m: Mirror) {
        assert_eq!(m.outcome_of(message("c1", "m1", "u1", "x", T0)).await, Outcome::Applied);
        let matching = with(message("c1", "m2", "u1", "x", T0), &["entityId"], json!("c1/m2"));
        assert_eq!(m.outcome_of(matching).await, Outcome::Applied);
        let wrong = with(message("c1", "m3", "u1", "x", T0), &["entityId"], json!("c1/m4"));
        assert!(m.rejection_of(wrong).await.contains("entityId"));
        let malformed = with(follow("u1", "u2", T0), &["entityId"], json!("u1"));
        assert!(m.rejection_of(malformed).await.contains("entityId"));
    }

    async fn bad_ids_are_rejected(m: Mirror) {
        let long = "x".repeat(257);
        for (id, why) in [("a/b", "'/'"), ("", "empty"), (long.as_str(), "256"), ("a\tb", "control")] {
            let reason = m.rejection_of(message("c1", id, "u1", "x", T0)).await;
            assert!(reason.starts_with("bad id") && reason.contains(why), "{id:?}: {reason}");
        }
        let participant = canonical("dm.conversation.created", T0, json!({"conversationId": "c1", "participantIds": ["u1", "u/2"]}));
        assert!(m.rejection_of(participant).await.contains("participantIds[1]"));
        let widest = "é".repeat(128);
        assert_eq!(m.outcome_of(message("c1", &widest, "u1", "x", T0)).await, Outcome::Applied, "256 bytes is allowed");
        assert_eq!(m.rows("dm_messages").await.len(), 1);
    }

    async fn a_nul_character_anywhere_is_rejected(m: Mirror) {
        let in_body = message("c1", "m1", "u1", "a\u{0}b", T0);
        let in_media = with(message("c1", "m2", "u1", "x", T0), &["payload", "media"], json!({"k": ["\u{0}"]}));
        let in_string_document = cloud_event("dm.message.create", "create", json!({"conversationId": "c1", "messageId": "m3",
            "document": json!({"authorId": "u1", "body": "\u{0}", "createdAt": T0}).to_string()}));
        for event in [in_body, in_media, in_string_document] {
            assert!(m.rejection_of(event).await.starts_with("NUL character"));
        }
        assert!(m.rows("dm_messages").await.is_empty());
    }

    async fn a_cloud_events_operation_that_contradicts_its_type_is_rejected(m: Mirror) {
        let event = cloud_event("dm.message.update", "delete", json!({"conversationId": "c1", "messageId": "m1",
            "document": {"authorId": "u1", "createdAt": T0}}));
        assert!(m.rejection_of(event).await.starts_with("operation mismatch"));
        let past_tense_type = cloud_event("dm.message.deleted", "delete", json!({"conversationId": "c1", "messageId": "m1"}));
        assert_eq!(m.outcome_of(past_tense_type).await, Outcome::Applied, "both verb forms everywhere");
    }

    async fn a_version_beyond_the_future_skew_is_rejected(m: Mirror) {
        let now = chrono::Utc::now();
        let soon = (now + chrono::Duration::minutes(5)).to_rfc3339();
        let later = (now + chrono::Duration::minutes(20)).to_rfc3339();
        assert_eq!(m.outcome_of(follow("u1", "u2", &soon)).await, Outcome::Applied);
        assert!(m.rejection_of(follow("u1", "u3", &later)).await.starts_with("version in the future"));
    }

    async fn malformed_records_are_rejected_with_a_reason_naming_the_problem(m: Mirror) {
        let cases = [
            (json!("{not json"), "not JSON"),
            (json!([1, 2]), "unknown shape"),
            (json!({"hello": "world"}), "unknown shape"),
            (canonical("dm.reaction.created", T0, json!({})), "unknown event type"),
            (canonical("dm.message.created", T0, json!({"conversationId": "c1", "messageId": "m1", "authorId": "u1"})), "createdAt"),
            (canonical("dm.message.created", T0, json!({"conversationId": "c1", "messageId": "m1", "authorId": "u1", "createdAt": T0, "body": 5})), "payload.body must be a string"),
            (canonical("dm.message.created", T0, json!({"messageId": "m1", "authorId": "u1", "createdAt": T0})), "conversationId is missing"),
            (canonical("dm.message.created", T0, Value::Null), "payload is missing"),
            (without(message("c1", "m1", "u1", "x", T0), &["occurredAt"]), "occurredAt is missing"),
            (with(message("c1", "m1", "u1", "x", T0), &["payload", "createdAt"], json!("soon")), "payload.createdAt"),
            (json!({"specversion": "0.3", "type": "dm.message.create"}), "specversion"),
            (json!("x".repeat(1_048_577)), "too large"),
        ];
        for (event, expected) in cases {
            let reason = m.rejection_of(event).await;
            assert!(reason.contains(expected), "expected {expected:?} in {reason:?}");
        }
        assert!(m.rows("dm_messages").await.is_empty());
    }

    async fn last_message_is_the_newest_live_message_by_created_at_then_message_id(m: Mirror) {
        m.apply(&[
            conversation("c1", &["u1", "u2"], T0),
            message("c1", "m1", "u1", "first", T0),
            message("c1", "m3", "u2", "third", T1),
            message("c1", "m2", "u1", "second", T1),
        ]).await;
        let row = m.row("dm_conversations", &["c1"]).await;
        assert_eq!(row["last_message_id"], "m3", "equal created_at: the greater message id");
        assert_eq!(row["last_message_at"], "2025-10-08T12:01:00.000000Z");
        assert_eq!(row["last_message_author_id"], "u2");
        assert_eq!(row["last_message_preview"], "third");
    }

    async fn deleting_the_newest_message_falls_back_and_all_deleted_shows_null(m: Mirror) {
        m.apply_each(&[conversation("c1", &["u1", "u2"], T0), message("c1", "m1", "u1", "one", T0),
            message("c1", "m2", "u2", "two", T1)]).await;
        m.apply_each(&[delete("dm.message", "c1/m2", T2)]).await;
        assert_eq!(m.row("dm_conversations", &["c1"]).await["last_message_preview"], "one");
        m.apply_each(&[delete("dm.message", "c1/m1", T2)]).await;
        let row = m.row("dm_conversations", &["c1"]).await;
        for column in ["last_message_id", "last_message_at", "last_message_preview", "last_message_author_id"] {
            assert_eq!(row[column], Value::Null, "{column} when every message is deleted");
        }
    }

    async fn the_conversation_document_fills_last_message_only_while_no_message_is_mirrored(m: Mirror) {
        let long = "ü".repeat(200);
        let conv = canonical("dm.conversation.created", T0, json!({"conversationId": "c1", "participantIds": ["u1", "u2"],
            "lastMessageAt": T0, "lastMessagePreview": long, "lastMessageAuthorId": "u2", "lastMessageId": "old"}));
        m.apply_each(&[conv]).await;
        let row = m.row("dm_conversations", &["c1"]).await;
        assert_eq!(row["last_message_preview"], json!("ü".repeat(140)), "cut to 140 characters");
        assert_eq!(row["last_message_author_id"], "u2");
        assert_eq!(row["last_message_id"], "old");
        m.apply_each(&[message("c1", "m1", "u1", "mirrored", "2025-01-01T00:00:00Z")]).await;
        let row = m.row("dm_conversations", &["c1"]).await;
        assert_eq!(row["last_message_id"], "m1", "a mirrored message, even older, replaces the document's fields");
        assert_eq!(row["last_message_preview"], "mirrored");
    }

    async fn the_preview_is_the_first_140_characters_of_the_body(m: Mirror) {
        let body: String = "日本語🎉".repeat(50);
        m.apply_each(&[message("c1", "m1", "u1", &body, T0)]).await;
        let preview = m.row("dm_conversations", &["c1"]).await["last_message_preview"].as_str().unwrap().to_string();
        assert_eq!(preview.chars().count(), 140);
        assert_eq!(preview, body.chars().take(140).collect::<String>());
    }

    async fn a_tombstoned_conversation_has_no_last_message(m: Mirror) {
        m.apply_each(&[conversation("c1", &["u1", "u2"], T0), message("c1", "m1", "u1", "x", T0),
            delete("dm.conversation", "c1", T2)]).await;
        let row = m.row("dm_conversations", &["c1"]).await;
        for column in ["last_message_id", "last_message_preview", "participant_ids", "owner_id"] {
            assert_eq!(row[column], Value::Null, "{column} of a tombstoned conversation");
        }
        m.apply_each(&[message("c1", "m2", "u1", "later", T2)]).await;
        assert_eq!(m.row("dm_conversations", &["c1"]).await["last_message_id"], Value::Null);
    }

    async fn a_message_before_its_conversation_creates_a_stub_the_conversation_fills(m: Mirror) {
        m.apply_each(&[message("c1", "m1", "u1", "early", T1)]).await;
        let stub = m.row("dm_conversations", &["c1"]).await;
        assert_eq!(stub["sync_source"], "derived");
        assert_eq!(stub["updated_at"], Value::Null);
        assert_eq!(stub["participant_ids"], Value::Null);
        assert_eq!(stub["last_message_id"], "m1");
        let conv = with(conversation("c1", &["u1", "u2"], T0), &["source"], json!("backfill"));
        assert_eq!(m.outcome_of(conv).await, Outcome::Applied, "any event overwrites a stub");
        let row = m.row("dm_conversations", &["c1"]).await;
        assert_eq!(row["sync_source"], "backfill");
        assert_eq!(row["participant_ids"], json!(["u1", "u2"]));
        assert_eq!(row["last_message_id"], "m1");
        let tombstone_first = delete("dm.message", "c2/m1", T0);
        m.apply_each(&[tombstone_first]).await;
        let stub = m.row("dm_conversations", &["c2"]).await;
        assert_eq!(stub["sync_source"], "derived", "a tombstone creates a stub too");
        assert_eq!(stub["last_message_id"], Value::Null);
    }

    async fn recipient_is_the_other_participant_whichever_arrives_first(m: Mirror) {
        m.apply_each(&[message("c1", "m1", "u1", "x", T0)]).await;
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["recipient_id"], Value::Null);
        m.apply_each(&[conversation("c1", &["u2", "u1"], T0)]).await;
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["recipient_id"], "u2", "message first");
        m.apply_each(&[conversation("c2", &["u1", "u2"], T0), message("c2", "m1", "u2", "x", T0)]).await;
        assert_eq!(m.row("dm_messages", &["c2", "m1"]).await["recipient_id"], "u1", "conversation first");
    }

    async fn recipient_follows_participant_changes(m: Mirror) {
        m.apply_each(&[conversation("c1", &["u1", "u2"], T0), message("c1", "m1", "u1", "x", T0),
            message("c1", "m2", "u9", "x", T0)]).await;
        assert_eq!(m.row("dm_messages", &["c1", "m2"]).await["recipient_id"], Value::Null, "author not a participant");
        m.apply_each(&[conversation("c1", &["u1", "u2", "u3"], T1)]).await;
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["recipient_id"], Value::Null, "three participants");
        m.apply_each(&[conversation("c1", &["u1", "u3", "u1"], T2)]).await;
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["recipient_id"], "u3", "two distinct entries");
        m.apply_each(&[delete("dm.conversation", "c1", "2025-10-08T12:03:00Z")]).await;
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["recipient_id"], Value::Null, "tombstoned conversation");
    }

    async fn bookkeeping_records_event_id_source_retry_count_and_mirrored_at(m: Mirror) {
        let event = with(with(message("c1", "m1", "u1", "x", T0), &["source"], json!("backfill")), &["attempt"], json!(3));
        m.apply_each(&[event]).await;
        let row = m.row("dm_messages", &["c1", "m1"]).await;
        assert_eq!(row["sync_source"], "backfill");
        assert_eq!(row["retry_count"], 2, "attempt − 1 when there is no receive count");
        assert_eq!(row["event_id"].as_str().unwrap().len(), 64, "derived from the idempotency key");
        let mirrored = chrono::DateTime::parse_from_rfc3339(row["mirrored_at"].as_str().unwrap()).unwrap();
        assert!((chrono::Utc::now() - mirrored.to_utc()).num_seconds().abs() < 60);
        assert_eq!(m.row("dm_conversations", &["c1"]).await["last_synced_event_id"], Value::Null, "a stub has no event");
    }

    async fn one_bad_record_fails_alone(m: Mirror) {
        let outcome = m.apply(&[message("c1", "m1", "u1", "x", T0), json!("garbage"), follow("u1", "u2", T0)]).await;
        assert_eq!(counts(&outcome.summary()), Counts { applied: 2, rejected: 1, ..Counts::default() });
        assert_eq!(outcome.summary().rejections[0].message_id, "r1");
        assert_eq!(m.rows("dm_messages").await.len() + m.rows("follow_edges").await.len(), 2);
    }

    async fn a_record_the_database_refuses_is_isolated_and_the_rest_commit(m: Mirror) {
        m.execute(
            "ALTER TABLE dm_messages ADD CONSTRAINT no_poison CHECK (author_id <> 'poison')",
            "CREATE TRIGGER no_poison BEFORE INSERT ON dm_messages WHEN NEW.author_id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poison author'); END;",
        ).await;
        let outcome = m.apply(&[message("c1", "m1", "u1", "x", T0), message("c1", "m2", "poison", "x", T0),
            message("c1", "m3", "u1", "x", T0)]).await;
        let summary = outcome.summary();
        assert_eq!(counts(&summary), Counts { applied: 2, rejected: 1, ..Counts::default() }, "{summary:?}");
        assert_eq!(summary.rejections[0].message_id, "r1");
        assert!(summary.rejections[0].reason.starts_with("refused by the database"));
        assert_eq!(m.rows("dm_messages").await.len(), 2);
    }

    async fn tables_and_columns_have_the_contract_names(m: Mirror) {
        m.apply_each(&[conversation("c1", &["u1", "u2"], T0), message("c1", "m1", "u1", "x", T0), follow("u1", "u2", T0)]).await;
        let expect = [
            ("dm_conversations", vec!["conversation_id", "owner_id", "participant_ids", "last_message_id", "last_message_at",
                "last_message_preview", "last_message_author_id", "created_at", "updated_at", "deleted_at",
                "sync_source", "last_synced_event_id", "retry_count", "mirrored_at"]),
            ("dm_messages", vec!["conversation_id", "message_id", "author_id", "recipient_id", "body", "media",
                "created_at", "updated_at", "deleted_at", "sync_source", "event_id", "retry_count", "mirrored_at"]),
            ("follow_edges", vec!["user_id", "target_id", "edge_type", "created_at", "updated_at", "deleted_at",
                "sync_source", "event_id", "retry_count", "mirrored_at"]),
        ];
        for (table, columns) in expect {
            let row = &m.rows(table).await[0];
            for column in columns {
                assert!(row.get(column).is_some(), "{table}.{column}");
            }
        }
    }
}
