//! Real queues (an SQS-compatible server, moto): publisher → worker → rows, poison events to
//! the dead-letter queue with their reason, redelivery and redrive while the database is
//! down and replay afterwards, and a SIGTERM in the middle of a stream.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use mirror_tests::realtime_mirror::config::Config;
use mirror_tests::realtime_mirror::dlq::{self, ReplayOptions};
use mirror_tests::realtime_mirror::event::Limits;
use mirror_tests::realtime_mirror::inputs;
use mirror_tests::realtime_mirror::publish::{self, Destinations};
use mirror_tests::realtime_mirror::queue::{
    DeadLetterQueue, ATTR_ERROR_KIND, ATTR_REASON, ATTR_SOURCE_MESSAGE_ID, ATTR_SOURCE_QUEUE,
};
use mirror_tests::realtime_mirror::timestamp::Timestamp;
use mirror_tests::realtime_mirror::worker::{self, WorkerSettings, WorkerTotals};
use mirror_tests::realtime_mirror::{Family, Processor, Store};
use mirror_tests::{
    create_queue, drained, queue_arn, queue_depth, send_all, sqs, sqs_env, workspace_binary, Mirror,
};

const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");

fn limits() -> Limits {
    Limits {
        now: Timestamp::now(),
        max_future_skew: Duration::from_secs(900),
    }
}

/// Runs a worker for `family` on `queue` until the queue is drained.
async fn work_until_drained(processor: &Processor, settings: &WorkerSettings) -> WorkerTotals {
    let client = sqs();
    let stop = drained(&client, &settings.queue_url, Duration::from_secs(60));
    worker::run(processor, &client, settings, stop).await
}

/// Everything (up to 100, fast) to `queue`.
fn replay_to(queue: &str, dry_run: bool) -> ReplayOptions {
    ReplayOptions {
        to: Some(queue.to_string()),
        max: 100,
        rate: 500,
        dry_run,
    }
}

fn settings(family: Family, url: &str) -> WorkerSettings {
    WorkerSettings {
        wait_seconds: 1,
        ..WorkerSettings::new(family, url)
    }
}

#[tokio::test]
async fn published_sample_events_reach_postgres_through_the_workers() {
    let client = sqs();
    let mirror = Mirror::postgres().await;
    let mut destinations = Destinations::default();
    for family in Family::ALL {
        let url = create_queue(&client, family.function_name(), false, &[]).await;
        destinations.by_family.insert(family, url);
    }
    let records = inputs::read_paths(&[EVENTS.into()]).records;
    let count = records.len();
    let summary = publish::publish(&client, records, &destinations, limits()).await;
    assert_eq!(
        (summary.sent, summary.failed, summary.rejected),
        (count, 0, 0),
        "{summary:?}"
    );
    let mut totals = Vec::new();
    for family in Family::ALL {
        totals.push(
            work_until_drained(
                &mirror.processor,
                &settings(family, &destinations.by_family[&family]),
            )
            .await,
        );
    }
    assert_eq!(
        totals.iter().map(|t| t.acknowledged).sum::<u64>(),
        count as u64,
        "{totals:?}"
    );
    assert_eq!(totals.iter().map(|t| t.failed + t.rejected).sum::<u64>(), 0);

    // The same rows as applying the files directly.
    let direct = Mirror::postgres().await;
    direct
        .apply_each(
            &inputs::read_paths(&[EVENTS.into()])
                .records
                .into_iter()
                .map(|r| serde_json::Value::String(r.body.unwrap()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(mirror.state().await, direct.state().await);
}

#[tokio::test]
async fn a_poison_event_reaches_the_dead_letter_queue_with_its_reason_while_its_batch_mates_are_applied(
) {
    let client = sqs();
    let mirror = Mirror::postgres().await;
    let queue = create_queue(&client, "dm-message", false, &[]).await;
    let dead = create_queue(&client, "dm-message-dlq", false, &[]).await;
    let event =
        inputs::read_paths(&[format!("{EVENTS}/bad/dm-message-rejections.json").into()]).records;
    let bad: Vec<String> = event
        .iter()
        .filter(|r| r.message_id.starts_with("bad-"))
        .map(|r| r.message_id.clone())
        .collect();
    // Sent raw: the publisher would refuse the bad ones.
    let mut sqs_ids: HashMap<String, String> = HashMap::new();
    for record in &event {
        let sent = client
            .send_message()
            .queue_url(&queue)
            .message_body(record.body.clone().unwrap())
            .send()
            .await
            .unwrap();
        sqs_ids.insert(
            sent.message_id().unwrap().to_string(),
            record.message_id.clone(),
        );
    }
    let mut s = settings(Family::DmMessage, &queue);
    s.dead_letters = Some(DeadLetterQueue {
        client: client.clone(),
        url: dead.clone(),
        source_queue: queue.clone(),
    });
    let totals = work_until_drained(&mirror.processor, &s).await;
    assert_eq!(
        (totals.applied, totals.rejected, totals.dead_lettered),
        (1, bad.len() as u64, bad.len() as u64),
        "{totals:?}"
    );
    assert_eq!(
        mirror.row("dm_messages", &["c1", "m-ok"]).await["author_id"],
        "u1"
    );

    let peeked = dlq::peek(&client, &dead, 50, false).await.unwrap();
    assert_eq!(peeked.len(), bad.len());
    let mut origins: Vec<String> = peeked
        .iter()
        .map(|p| sqs_ids[p["sourceMessageId"].as_str().unwrap()].clone())
        .collect();
    origins.sort();
    let mut expected = bad.clone();
    expected.sort();
    assert_eq!(origins, expected);
    for p in &peeked {
        assert_eq!(p["sourceQueue"], queue.as_str());
        assert!(!p["errorKind"].as_str().unwrap().is_empty());
        assert!(
            p["reason"]
                .as_str()
                .unwrap()
                .starts_with(p["errorKind"].as_str().unwrap()),
            "{p}"
        );
        assert!(p.get("body").is_none(), "bodies only when asked for");
    }
    let misrouted = peeked
        .iter()
        .find(|p| sqs_ids[p["sourceMessageId"].as_str().unwrap()] == "bad-misrouted")
        .unwrap();
    assert_eq!(misrouted["errorKind"], "misrouted");
    // The attributes are real SQS message attributes.
    let raw = client
        .receive_message()
        .queue_url(&dead)
        .max_number_of_messages(1)
        .message_attribute_names("All")
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let attrs = raw.messages()[0].message_attributes().unwrap();
    for name in [
        ATTR_ERROR_KIND,
        ATTR_REASON,
        ATTR_SOURCE_QUEUE,
        ATTR_SOURCE_MESSAGE_ID,
    ] {
        assert!(attrs.contains_key(name), "{name}");
    }
}

#[tokio::test]
async fn with_the_database_down_records_are_redelivered_redriven_after_5_receives_and_replay_applies_them_once(
) {
    let client = sqs();
    let dead = create_queue(&client, "follow-edge-dlq", false, &[]).await;
    let redrive = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"5"}}"#,
        queue_arn(&client, &dead).await
    );
    let queue = create_queue(
        &client,
        "follow-edge",
        false,
        &[
            (QueueAttributeName::RedrivePolicy, redrive),
            (QueueAttributeName::VisibilityTimeout, "1".into()),
        ],
    )
    .await;
    let events: Vec<String> = (0..7)
        .map(|i| mirror_tests::follow(&format!("u{i}"), "t", "2025-10-08T12:00:00Z").to_string())
        .collect();
    send_all(&client, &queue, events.clone()).await;

    // Database unreachable: every receive fails every record, which the queue redelivers
    // until its redrive policy moves them to the dead-letter queue.
    let down_config = Config {
        db_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let down = Processor::new(
        Store::postgres(
            "postgres://postgres@127.0.0.1:1/test".parse().unwrap(),
            &down_config,
        ),
        down_config,
    );
    let totals = work_until_drained(&down, &settings(Family::FollowEdge, &queue)).await;
    assert_eq!(totals.applied + totals.acknowledged, 0, "{totals:?}");
    assert!(
        totals.failed >= 7 * 5,
        "each record was received 5 times: {totals:?}"
    );
    assert_eq!(queue_depth(&client, &dead).await.0, 7);

    // Fixed: replay (the redrive policy records no source, so --to) and apply once.
    let mirror = Mirror::postgres().await;
    let dry = dlq::replay(&client, &dead, &replay_to(&queue, true))
        .await
        .unwrap();
    assert_eq!((dry.would_move, dry.moved), (7, 0));
    assert_eq!(
        queue_depth(&client, &dead).await,
        (7, 0),
        "a dry run releases what it looked at"
    );
    let replayed = dlq::replay(&client, &dead, &replay_to(&queue, false))
        .await
        .unwrap();
    assert_eq!((replayed.moved, replayed.failed), (7, 0), "{replayed:?}");
    assert_eq!(queue_depth(&client, &dead).await, (0, 0));
    let totals = work_until_drained(&mirror.processor, &settings(Family::FollowEdge, &queue)).await;
    assert_eq!(totals.applied, 7, "{totals:?}");
    assert_eq!(mirror.rows("follow_edges").await.len(), 7);
    // Replaying the same events again changes nothing.
    send_all(&client, &queue, events.clone()).await;
    let again = work_until_drained(&mirror.processor, &settings(Family::FollowEdge, &queue)).await;
    assert_eq!((again.applied, again.duplicates), (0, 7));
}

#[tokio::test]
async fn replay_without_a_source_or_destination_leaves_the_message_and_respects_max() {
    let client = sqs();
    let dead = create_queue(&client, "dlq", false, &[]).await;
    let target = create_queue(&client, "target", false, &[]).await;
    for i in 0..3 {
        client
            .send_message()
            .queue_url(&dead)
            .message_body(format!("{{\"n\": {i}}}"))
            .send()
            .await
            .unwrap();
    }
    let summary = dlq::replay(
        &client,
        &dead,
        &ReplayOptions {
            to: None,
            max: 10,
            rate: 100,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!((summary.moved, summary.without_source), (0, 3));
    assert_eq!(queue_depth(&client, &dead).await, (3, 0));
    let summary = dlq::replay(
        &client,
        &dead,
        &ReplayOptions {
            to: Some(target.clone()),
            max: 2,
            rate: 100,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.moved, 2);
    assert_eq!(queue_depth(&client, &dead).await.0, 1);
    assert_eq!(queue_depth(&client, &target).await.0, 2);
}

#[tokio::test]
async fn native_replay_says_clearly_when_the_server_lacks_start_message_move_task() {
    let client = sqs();
    let dead = create_queue(&client, "dlq", false, &[]).await;
    let error = dlq::replay_native(&client, &dead, None, 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("StartMessageMoveTask") && error.contains("without --native"),
        "{error}"
    );
}

#[tokio::test]
async fn publishing_to_a_fifo_queue_sets_the_idempotency_key_and_entity_as_dedup_and_group_ids() {
    let client = sqs();
    let queue = create_queue(&client, "follow-edge", true, &[]).await;
    let file = format!("{EVENTS}/03-follow-edge.json");
    let destinations = Destinations {
        all: Some(queue.clone()),
        ..Destinations::default()
    };
    let first = publish::publish(
        &client,
        inputs::read_paths(&[file.clone().into()]).records,
        &destinations,
        limits(),
    )
    .await;
    assert_eq!(first.sent, 5);
    publish::publish(
        &client,
        inputs::read_paths(&[file.clone().into()]).records,
        &destinations,
        limits(),
    )
    .await;
    assert_eq!(
        queue_depth(&client, &queue).await.0,
        5,
        "SQS dropped the re-sent copies by deduplication id"
    );
    let mut expected: HashMap<String, String> = HashMap::new();
    for record in inputs::read_paths(&[file.into()]).records {
        let event =
            mirror_tests::realtime_mirror::Event::parse(record.body.as_deref().unwrap(), limits())
                .unwrap();
        expected.insert(event.idempotency_key.to_string(), event.key.entity_id());
    }
    let mut seen = 0;
    while seen < 5 {
        let got = client
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            let attrs = m.attributes().unwrap();
            let dedup = &attrs[&MessageSystemAttributeName::MessageDeduplicationId];
            assert_eq!(
                &attrs[&MessageSystemAttributeName::MessageGroupId],
                &expected[dedup]
            );
            assert!(m.message_attributes().unwrap()["eventType"]
                .string_value()
                .unwrap()
                .starts_with("follow.edge."));
            client
                .delete_message()
                .queue_url(&queue)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            seen += 1;
        }
    }
}

#[tokio::test]
async fn publishing_without_a_queue_for_a_family_fails_those_events_and_says_which_variable() {
    let client = sqs();
    let summary = publish::publish(
        &client,
        inputs::read_paths(&[format!("{EVENTS}/03-follow-edge.json").into()]).records,
        &Destinations::default(),
        limits(),
    )
    .await;
    assert_eq!((summary.sent, summary.failed), (0, 5));
    assert!(summary.failures[0]
        .reason
        .contains("MIRROR_FOLLOW_EDGE_QUEUE_URL"));
}

/// SIGTERM in the middle of 1,000 events: the worker stops receiving, finishes and
/// acknowledges the batch in hand, exits 0; a second worker drains the rest. Nothing is
/// lost, nothing applied twice.
#[tokio::test]
async fn sigterm_in_a_stream_of_1000_events_loses_none_and_applies_none_twice() {
    let client = sqs();
    let mirror = Mirror::postgres().await;
    let queue = create_queue(
        &client,
        "follow-edge",
        false,
        &[(QueueAttributeName::VisibilityTimeout, "5".into())],
    )
    .await;
    let records: Vec<_> = (0..1000)
        .map(|i| mirror_tests::realtime_mirror::batch::Record {
            message_id: format!("e{i}"),
            body: Some(
                mirror_tests::follow(&format!("u{i}"), "t", "2025-10-08T12:00:00Z").to_string(),
            ),
            receive_count: None,
        })
        .collect();
    let sent = publish::publish(
        &client,
        records,
        &Destinations {
            all: Some(queue.clone()),
            ..Default::default()
        },
        limits(),
    )
    .await;
    assert_eq!(sent.sent, 1000);

    let spawn = || {
        let mut command = std::process::Command::new(workspace_binary("follow-edge"));
        command
            .envs(sqs_env())
            .env("MIRROR_QUEUE_URL", &queue)
            .env("DATABASE_URL", &mirror.url)
            .env("RUST_LOG", "warn")
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .stdout(std::process::Stdio::piped());
        command.spawn().expect("the worker starts")
    };
    let first = spawn();
    let start = std::time::Instant::now();
    while mirror.rows("follow_edges").await.len() < 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the worker applies nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = first.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let output = first.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "a worker exits 0 on SIGTERM");
    let before: WorkerTotals =
        serde_json::from_slice(&output.stdout).expect("the worker prints its totals");
    let after_first = mirror.rows("follow_edges").await.len() as u64;
    assert!(after_first < 1000, "stopped in the middle: {after_first}");
    assert_eq!(
        before.applied, before.acknowledged,
        "what it applied it acknowledged: {before:?}"
    );

    let second = spawn();
    drained(&client, &queue, Duration::from_secs(120)).await;
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap()
        .success());
    let output = second.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let rest: WorkerTotals = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(mirror.rows("follow_edges").await.len(), 1000, "none lost");
    assert_eq!(
        before.applied + rest.applied,
        1000,
        "none applied twice: {before:?} {rest:?}"
    );
    assert_eq!(
        before.failed + rest.failed + before.rejected + rest.rejected,
        0
    );
}
