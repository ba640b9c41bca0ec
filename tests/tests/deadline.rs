//! The invocation's deadline: a slow database never times out a whole batch. Alone in its
//! test binary because it installs the binary's global log subscriber.

use mirror_tests::realtime_mirror::Config;
use mirror_tests::{message, Mirror};
use serde_json::Value;

/// A slow database never times out a whole invocation: a chunk blocked by a lock another
/// session holds is given up before the deadline (its record is a batch item failure, to be
/// redelivered), while the chunks that committed are acknowledged.
#[tokio::test]
async fn a_chunk_blocked_past_the_deadline_fails_alone_and_the_committed_ones_are_acknowledged() {
    use aws_lambda_events::event::sqs::SqsEvent;
    use lambda_runtime::{Context, LambdaEvent};
    use mirror_tests::realtime_mirror::lambda::Function;
    use mirror_tests::realtime_mirror::Family;
    use sqlx::Connection;

    let mirror = Mirror::postgres_with(Config {
        chunk_size: 1,
        max_connections: 2,
        deadline_margin: std::time::Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let c1 = mirror_tests::conversation("c1", &["u1", "u2"], "2025-01-01T00:00:01Z");
    assert_eq!(mirror.apply(&[c1]).await.summary().applied, 1);
    // Another session holds c1's row lock, as a long transaction or a migration would.
    let mut blocker = sqlx::PgConnection::connect(&mirror.url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT 1 FROM dm_conversations WHERE conversation_id = 'c1' FOR UPDATE")
        .execute(&mut blocker)
        .await
        .unwrap();

    let records: Vec<Value> = [("blocked", "c1"), ("free-1", "c2"), ("free-2", "c3")]
        .iter()
        .map(|(id, c)| {
            let body = message(c, "m1", "u1", "hi", "2025-01-01T00:00:02Z").to_string();
            serde_json::json!({ "messageId": id, "body": body })
        })
        .collect();
    let event: SqsEvent =
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap();
    let mut context = Context::default();
    let now_ms = chrono::Utc::now().timestamp_millis() as u64;
    context.deadline = now_ms + 1500;
    let function = Function::new(Family::DmMessage, mirror.processor.clone());
    // The only test of this binary: its logs go to the global subscriber, so no other
    // thread's use of a span can leave it disabled.
    let capture = mirror_tests::LogCapture::default();
    tracing::subscriber::set_global_default(mirror_tests::realtime_mirror::telemetry::subscriber(
        capture.writer(),
        true,
        tracing_subscriber::EnvFilter::new("info"),
    ))
    .expect("the only subscriber of this test binary");
    // Bounded so that a regression fails instead of hanging (the blocker never lets go).
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        function.handle(LambdaEvent::new(event, context)),
    )
    .await
    .expect("the invocation gave up the blocked chunk")
    .expect("the invocation answers");
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["blocked"]);
    // The warning about the chunk given up names the chunk's events.
    let logs = capture.text();
    let given_up = logs
        .lines()
        .find(|l| l.contains("deadline is near"))
        .unwrap_or_else(|| panic!("no line about the chunk given up in:\n{logs}"));
    assert!(given_up.contains("\"entity_ids\":\"c1/m1\""), "{given_up}");
    assert!(mirror.find("dm_messages", &["c2", "m1"]).await.is_some());
    assert!(mirror.find("dm_messages", &["c1", "m1"]).await.is_none());

    // The lock is released; the redelivered record is applied.
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    let redelivered = message("c1", "m1", "u1", "hi", "2025-01-01T00:00:02Z");
    assert_eq!(mirror.apply(&[redelivered]).await.summary().applied, 1);
    assert_eq!(
        mirror.row("dm_conversations", &["c1"]).await["last_message_id"],
        "m1"
    );
}
