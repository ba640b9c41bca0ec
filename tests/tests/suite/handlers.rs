//! The Lambda handler fed the sample files in `events/`, asserting on `batchItemFailures`
//! and on the rows, as `cargo lambda invoke` would.

use aws_lambda_events::event::sqs::SqsBatchResponse;
use lambda_runtime::{Context, LambdaEvent};
use mirror_tests::realtime_mirror::batch::{Outcome, Route};
use mirror_tests::realtime_mirror::config::Config;
use mirror_tests::realtime_mirror::lambda::{records, Function};
use mirror_tests::realtime_mirror::{Family, Processor, Store};
use mirror_tests::sample_event as sample;
use mirror_tests::{on_both_stores, Mirror};
use serde_json::Value;

async fn invoke(processor: &Processor, family: Family, name: &str) -> SqsBatchResponse {
    Function::new(family, processor.clone())
        .handle(LambdaEvent::new(sample(name), Context::default()))
        .await
        .expect("the handler answers")
}

fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

on_both_stores! {
    async fn each_function_applies_its_sample_file_with_no_batch_item_failures(m: Mirror) {
        for (family, file) in [
            (Family::DmConversation, "01-dm-conversation.json"),
            (Family::DmMessage, "02-dm-message.json"),
            (Family::FollowEdge, "03-follow-edge.json"),
        ] {
            let response = invoke(&m.processor, family, file).await;
            assert_eq!(failed_ids(&response), Vec::<String>::new(), "{file}");
            let json = serde_json::to_value(&response).unwrap();
            assert_eq!(json, serde_json::json!({"batchItemFailures": []}), "the wire form Lambda reads");
        }
        assert_eq!(m.rows("dm_conversations").await.len(), 4, "c1, c2, c3 and the stub c9");
        assert_eq!(m.rows("dm_messages").await.len(), 4);
        assert_eq!(m.rows("follow_edges").await.len(), 4);
        let m2 = m.row("dm_messages", &["c1", "m2"]).await;
        assert_eq!(m2["body"], "Yes — 7:30pm at the usual place 🎉", "the EventBridge edit won");
        assert_eq!(m2["recipient_id"], "u1");
        assert_eq!(m.row("dm_messages", &["c1", "m3"]).await["body"], Value::Null, "deleted");
        assert_eq!(m.row("dm_conversations", &["c1"]).await["last_message_id"], "m2");
        assert_ne!(m.row("follow_edges", &["u1", "u3"]).await["deleted_at"], Value::Null);
    }

    async fn the_receive_count_becomes_retry_count(m: Mirror) {
        invoke(&m.processor, Family::DmConversation, "01-dm-conversation.json").await;
        invoke(&m.processor, Family::DmMessage, "02-dm-message.json").await;
        assert_eq!(m.row("dm_conversations", &["c1"]).await["retry_count"], 1, "received twice");
        assert_eq!(m.row("dm_messages", &["c1", "m3"]).await["retry_count"], 2, "received three times");
        assert_eq!(m.row("dm_messages", &["c1", "m1"]).await["retry_count"], 0);
    }

    async fn the_bad_batch_reports_every_rejected_record_and_applies_the_rest(m: Mirror) {
        let event = sample("bad/dm-message-rejections.json");
        let mut expected: Vec<String> = event.records.iter().filter_map(|r| r.message_id.clone())
            .filter(|id| id.starts_with("bad-")).collect();
        expected.sort();
        let response = invoke(&m.processor, Family::DmMessage, "bad/dm-message-rejections.json").await;
        assert_eq!(failed_ids(&response), expected);
        assert_eq!(m.row("dm_messages", &["c1", "m-ok"]).await["author_id"], "u1");
        assert_eq!(m.rows("follow_edges").await.len(), 0, "the misrouted follow edge was not applied");
        let outcome = m.processor.process(records(event), Route::Only(Family::DmMessage)).await;
        let reasons: Vec<String> = outcome.summary().rejections.into_iter().map(|p| format!("{}: {}", p.message_id, p.reason)).collect();
        for (id, kind) in [("bad-not-json", "not JSON"), ("bad-unknown-shape", "unknown shape"),
            ("bad-unknown-type", "unknown event type"), ("bad-missing-author", "invalid field"),
            ("bad-id-with-slash", "bad id"), ("bad-nul-character", "NUL character"),
            ("bad-operation-mismatch", "operation mismatch"), ("bad-future-version", "version in the future"),
            ("bad-misrouted", "misrouted"), ("bad-entity-mismatch", "entityId"),
            ("bad-conflicting-aliases", "disagree"), ("bad-timestamp", "createdAt")] {
            assert!(reasons.iter().any(|r| r.starts_with(&format!("{id}: ")) && r.contains(kind)),
                "{id} should be rejected for {kind}: {reasons:#?}");
        }
    }

    async fn a_function_rejects_another_familys_events_as_misrouted(m: Mirror) {
        let response = invoke(&m.processor, Family::DmMessage, "03-follow-edge.json").await;
        assert_eq!(response.batch_item_failures.len(), sample("03-follow-edge.json").records.len());
        assert!(m.rows("follow_edges").await.is_empty());
        let outcome = m.processor.process(records(sample("03-follow-edge.json")), Route::Only(Family::DmMessage)).await;
        for record in outcome.records {
            match record.outcome {
                Outcome::Rejected(why) => assert!(why.to_string().starts_with("misrouted"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }
}

/// Transient failures: with the database unreachable, every record is a batch item failure,
/// so the queue redelivers it.
#[tokio::test]
async fn an_unreachable_database_makes_every_record_a_batch_item_failure() {
    let config = Config {
        db_timeout: std::time::Duration::from_millis(500),
        ..Config::default()
    };
    let options = "postgres://postgres@127.0.0.1:1/test".parse().unwrap();
    let processor = Processor::new(Store::postgres(options, &config), config);
    let response = invoke(&processor, Family::DmMessage, "02-dm-message.json").await;
    assert_eq!(
        response.batch_item_failures.len(),
        sample("02-dm-message.json").records.len()
    );
    let outcome = processor
        .process(
            records(sample("02-dm-message.json")),
            Route::Only(Family::DmMessage),
        )
        .await;
    assert!(
        outcome
            .records
            .iter()
            .all(|r| matches!(&r.outcome, Outcome::Failed(why) if why.contains("unavailable"))),
        "{:?}",
        outcome.records
    );
}

/// The pool is the cap: however many chunks a batch has, one process never opens more than
/// `MIRROR_MAX_CONNECTIONS` connections.
#[tokio::test]
async fn one_process_never_holds_more_than_max_connections() {
    for cap in [2u32, 4] {
        let in_flight = most_statements_in_flight(cap).await;
        assert_eq!(
            in_flight, cap as i64,
            "with MIRROR_MAX_CONNECTIONS={cap}, statements seen running at once"
        );
    }
    let sqlite = Mirror::sqlite().await;
    assert_eq!(sqlite.store().max_connections(), 1, "SQLite has one writer");
}

/// Applies 60 events in chunks of 3 with at most `cap` connections, each write slowed by a
/// trigger, while another session samples the store's statements running on the server
/// (`pg_stat_activity`, by this store's application name); returns the most seen at once.
async fn most_statements_in_flight(cap: u32) -> i64 {
    use std::str::FromStr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use sqlx::Connection;

    let schema = mirror_tests::new_schema().await;
    let name = format!("mirror-cap-{schema}");
    let options = sqlx::postgres::PgConnectOptions::from_str(&mirror_tests::test_database_url())
        .unwrap()
        .application_name(&name);
    let config = Config {
        max_connections: cap,
        chunk_size: 3,
        ..Config::default()
    };
    let m = Mirror::postgres_in(options, &schema, config).await;
    let mut admin = sqlx::PgConnection::connect(&m.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION slow_write() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$;
         CREATE TRIGGER slow_write BEFORE INSERT ON follow_edges
             FOR EACH STATEMENT EXECUTE FUNCTION slow_write();",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let mut most = 0i64;
            while !done.load(Ordering::Relaxed) {
                let (running,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE application_name = $1 AND state = 'active'",
                )
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
                most = most.max(running);
            }
            most
        })
    };
    let events: Vec<Value> = (0..60)
        .map(|i| mirror_tests::follow(&format!("u{i}"), "t", "2025-10-08T12:00:00Z"))
        .collect();
    let summary = m.apply(&events).await.summary();
    done.store(true, Ordering::Relaxed);
    assert_eq!(summary.applied, 60);
    let Store::Postgres(pool, _) = m.store() else {
        unreachable!()
    };
    assert!(
        pool.size() <= cap,
        "pool opened {} connections",
        pool.size()
    );
    sampler.await.unwrap()
}
