//! Realtime delivery (docs/streams.md): every message change that took effect reaches the stream of
//! every user it concerns, once, in commit order per conversation; nothing else does; a Redis
//! outage or a crash between commit and XADD loses nothing; devices replay exactly what they
//! missed, or are told to resync when it was trimmed away. Against the machine's Redis on
//! 127.0.0.1:6379 (unique user names per test) and, where a test stops Redis, a private one.

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use mirror_tests::{
    canonical, conversation, message, test_redis_url, unique_name, Mirror, PrivateRedis,
};
use realtime_mirror::streams::{self, Entry, Fanout, Replay, StreamSettings};
use realtime_mirror::{BatchOutcome, Config, Outcome, Processor, Route};
use serde_json::{json, Value};

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}: scripts/test starts the machine's Redis"))
}

async fn entries(url: &str, user: &str) -> Vec<Entry> {
    streams::tail(&mut connection(url).await, user, None, 1_000_000)
        .await
        .unwrap()
}

/// (type, messageId, version) of each entry, in stream order.
async fn seen(url: &str, user: &str) -> Vec<(String, String, String)> {
    entries(url, user)
        .await
        .into_iter()
        .map(|e| {
            (
                e.fields["type"].clone(),
                e.fields["messageId"].clone(),
                e.fields["version"].clone(),
            )
        })
        .collect()
}

fn edit(conversation: &str, id: &str, author: &str, body: &str, at: &str) -> Value {
    canonical(
        "dm.message.updated",
        at,
        json!({ "conversationId": conversation, "messageId": id, "authorId": author,
                "body": body, "createdAt": "2025-10-08T12:00:00Z", "updatedAt": at }),
    )
}

fn remove(conversation: &str, id: &str, at: &str) -> Value {
    json!({ "eventType": "dm.message.deleted", "occurredAt": at,
            "payload": { "conversationId": conversation, "messageId": id, "deletedAt": at } })
}

async fn both() -> [Mirror; 2] {
    [Mirror::sqlite().await, Mirror::postgres().await]
}

/// Two new users and their conversation, mirrored first (so its participants are known):
/// (a, b, the conversation's id).
async fn two_users_in_a_conversation(mirror: &Mirror) -> (String, String, String) {
    let (a, b) = (unique_name("a"), unique_name("b"));
    let conv = unique_name("conv");
    mirror
        .apply(&[conversation(&conv, &[&a, &b], "2025-10-08T11:00:00Z")])
        .await;
    (a, b, conv)
}

/// `events` as one batch through `processor`, as a function applies a batch.
async fn announce(processor: &Processor, events: &[Value]) -> BatchOutcome {
    processor
        .process(mirror_tests::records(events), Route::AllFamilies)
        .await
}

/// A mirror holding one message that two users were to hear of while Redis could not be
/// reached: its two outbox rows wait. (mirror, a, b).
async fn a_message_left_in_the_outbox() -> (Mirror, String, String) {
    let mirror = Mirror::sqlite().await;
    let (a, b, conv) = two_users_in_a_conversation(&mirror).await;
    let unreachable = mirror
        .announcing("redis://127.0.0.1:1", Config::default())
        .await;
    let outcome = announce(
        &unreachable,
        &[message(&conv, "m1", &a, "x", "2025-10-08T12:00:00Z")],
    )
    .await;
    assert_eq!(outcome.counts().applied, 1, "applied without Redis");
    let delivery = outcome.delivery.unwrap();
    let error = delivery.error.as_deref().unwrap();
    assert!(error.contains("cannot reach Redis"), "{delivery:?}");
    assert_eq!(delivery.backlog, 2);
    (mirror, a, b)
}

/// The `mirror-check` binary on `mirror` outside Lambda, announcing to `redis` if given.
fn mirror_check(mirror: &Mirror, redis: Option<&str>) -> Command {
    let mut command = Command::new(mirror_tests::workspace_binary("mirror-check"));
    command
        .env("DATABASE_URL", &mirror.url)
        .env("RUST_LOG", "warn")
        .env_remove("MIRROR_REDIS_URL")
        .env_remove("AWS_LAMBDA_RUNTIME_API");
    if let Some(url) = redis {
        command.env("MIRROR_REDIS_URL", url);
    }
    command
}

/// `mirrorctl` on `mirror`, announcing to `redis`.
fn mirrorctl(mirror: &Mirror, redis: &str) -> Command {
    let mut command = Command::new(mirror_tests::workspace_binary("mirrorctl"));
    command
        .env("DATABASE_URL", &mirror.url)
        .env("MIRROR_REDIS_URL", redis);
    command
}

#[tokio::test]
async fn every_applied_message_change_appears_once_per_participant_in_commit_order() {
    let redis = test_redis_url();
    for mirror in both().await {
        let (a, b, c) = (unique_name("a"), unique_name("b"), unique_name("c"));
        let processor = mirror.announcing(&redis, Config::default()).await;
        let conv = unique_name("conv");
        let t = |m: u32| format!("2025-10-08T12:{m:02}:00Z");
        // The conversation first: a message applied before it (in another chunk of the same
        // batch, or by the other function) finds a stub and notifies only its author.
        mirror.apply(&[conversation(&conv, &[&a, &b], &t(0))]).await;
        let outcome = announce(
            &processor,
            &[
                message(&conv, "m1", &a, "hello", &t(1)),
                message(&conv, "m2", &b, "hi", &t(2)),
            ],
        )
        .await;
        assert_eq!(outcome.counts().applied, 2);
        assert_eq!(
            outcome.delivery.as_ref().unwrap().delivered,
            4,
            "two users × two messages"
        );
        announce(&processor, &[edit(&conv, "m1", &a, "hello!", &t(3))]).await;
        announce(&processor, &[remove(&conv, "m2", &t(4))]).await;
        let expected = vec![
            (
                "message.created".to_string(),
                "m1".to_string(),
                "2025-10-08T12:01:00.000000Z".to_string(),
            ),
            (
                "message.created".into(),
                "m2".into(),
                "2025-10-08T12:02:00.000000Z".into(),
            ),
            (
                "message.updated".into(),
                "m1".into(),
                "2025-10-08T12:03:00.000000Z".into(),
            ),
            (
                "message.deleted".into(),
                "m2".into(),
                "2025-10-08T12:04:00.000000Z".into(),
            ),
        ];
        assert_eq!(seen(&redis, &a).await, expected, "{}", mirror.url);
        assert_eq!(seen(&redis, &b).await, expected, "{}", mirror.url);
        assert!(seen(&redis, &c).await.is_empty());
        // Pointers only, and the delete names the sender the tombstone no longer holds.
        let last = entries(&redis, &a).await.pop().unwrap();
        let fields: Vec<&str> = last.fields.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "conversationId",
                "messageId",
                "prev",
                "senderId",
                "ts",
                "type",
                "version"
            ]
        );
        assert_eq!(last.fields["senderId"], b);
        assert_eq!(last.fields["conversationId"], conv);
    }
}

/// A message whose conversation is not mirrored yet (a stub) is announced to its author, the
/// only user known; when the conversation's participants arrive, the others hear of its live
/// messages then (as `message.created`), and of every later change at once.
#[tokio::test]
async fn a_stub_conversations_messages_reach_its_participants_once_they_are_known() {
    let redis = test_redis_url();
    for mirror in both().await {
        let (a, b) = (unique_name("a"), unique_name("b"));
        let conv = unique_name("conv");
        let processor = mirror.announcing(&redis, Config::default()).await;
        announce(
            &processor,
            &[
                message(&conv, "m1", &a, "x", "2025-10-08T12:01:00Z"),
                message(&conv, "m0", &a, "gone", "2025-10-08T12:00:00Z"),
            ],
        )
        .await;
        announce(&processor, &[remove(&conv, "m0", "2025-10-08T12:00:30Z")]).await;
        assert_eq!(seen(&redis, &a).await.len(), 3);
        assert!(seen(&redis, &b).await.is_empty());
        announce(
            &processor,
            &[conversation(&conv, &[&a, &b], "2025-10-08T12:02:00Z")],
        )
        .await;
        assert_eq!(
            seen(&redis, &b).await,
            [(
                "message.created".to_string(),
                "m1".to_string(),
                "2025-10-08T12:01:00.000000Z".to_string()
            )],
            "{}: the live message, not the deleted one",
            mirror.url
        );
        announce(
            &processor,
            &[message(&conv, "m2", &a, "y", "2025-10-08T12:03:00Z")],
        )
        .await;
        assert_eq!(
            seen(&redis, &a).await.len(),
            4,
            "the author hears nothing twice"
        );
        assert_eq!(seen(&redis, &b).await.len(), 2, "{}", mirror.url);
    }
}

/// A conversation and its first messages in one batch (one transaction, in any order of the
/// records): each participant hears each message exactly once.
#[tokio::test]
async fn a_conversation_and_its_messages_in_one_batch_reach_every_participant_once() {
    let redis = test_redis_url();
    for mirror in both().await {
        let processor = mirror.announcing(&redis, Config::default()).await;
        for round in 0..15 {
            let (a, b) = (unique_name("a"), unique_name("b"));
            let conv = unique_name("conv");
            let mut events = vec![
                message(&conv, "m1", &a, "x", "2025-10-08T12:01:00Z"),
                message(&conv, "m2", &b, "y", "2025-10-08T12:02:00Z"),
                conversation(&conv, &[&a, &b], "2025-10-08T12:00:00Z"),
            ];
            events.rotate_left(round % 3);
            announce(&processor, &events).await;
            for user in [&a, &b] {
                let mut ids: Vec<String> =
                    seen(&redis, user).await.into_iter().map(|s| s.1).collect();
                ids.sort();
                assert_eq!(ids, ["m1", "m2"], "{} round {round}", mirror.url);
            }
        }
    }
}

/// Messages of a stub conversation were committed before; then one batch brings the
/// conversation's participants and a new message: the other participant hears the earlier
/// message once (as `message.created`) and the new one once, not again as an earlier message
/// of the conversation it just learned of (docs/architecture.md, "The write path").
#[tokio::test]
async fn a_batch_that_makes_a_conversation_known_announces_its_own_messages_once() {
    let redis = test_redis_url();
    for mirror in both().await {
        let processor = mirror.announcing(&redis, Config::default()).await;
        for round in 0..3 {
            let (a, b) = (unique_name("a"), unique_name("b"));
            let conv = unique_name("conv");
            announce(
                &processor,
                &[message(&conv, "m1", &a, "x", "2025-10-08T12:01:00Z")],
            )
            .await;
            let mut events = vec![
                conversation(&conv, &[&a, &b], "2025-10-08T12:00:00Z"),
                message(&conv, "m2", &a, "y", "2025-10-08T12:02:00Z"),
            ];
            events.rotate_left(round % 2);
            announce(&processor, &events).await;
            let ids = |seen: Vec<(String, String, String)>| -> Vec<String> {
                seen.into_iter().map(|s| s.1).collect()
            };
            assert_eq!(
                ids(seen(&redis, &b).await),
                ["m1", "m2"],
                "{} round {round}",
                mirror.url
            );
            assert_eq!(
                ids(seen(&redis, &a).await),
                ["m1", "m2"],
                "{} round {round}",
                mirror.url
            );
        }
    }
}

#[tokio::test]
async fn duplicates_stale_and_rejected_events_produce_no_entry() {
    let redis = test_redis_url();
    for mirror in both().await {
        let (a, b, conv) = two_users_in_a_conversation(&mirror).await;
        let processor = mirror.announcing(&redis, Config::default()).await;
        let first = vec![
            message(&conv, "m1", &a, "x", "2025-10-08T12:01:00Z"),
            edit(&conv, "m1", &a, "y", "2025-10-08T12:05:00Z"),
        ];
        announce(&processor, &first).await;
        let before = seen(&redis, &a).await;
        assert_eq!(before.len(), 1, "one chunk, one winner: the edit");
        let again = vec![
            first[1].clone(),
            edit(&conv, "m1", &a, "older", "2025-10-08T12:03:00Z"),
            json!({"eventType": "dm.message.created", "payload": {"conversationId": conv}}),
        ];
        let outcome = announce(&processor, &again).await;
        let outcomes: Vec<&Outcome> = outcome.records.iter().map(|r| &r.outcome).collect();
        assert_eq!(outcomes[0], &Outcome::Duplicate);
        assert_eq!(outcomes[1], &Outcome::Stale);
        assert!(matches!(outcomes[2], Outcome::Rejected(_)));
        assert_eq!(seen(&redis, &a).await, before, "{}", mirror.url);
        assert_eq!(seen(&redis, &b).await, before);
    }
}

#[tokio::test]
async fn backfill_and_a_quiet_processor_announce_nothing() {
    let redis = test_redis_url();
    let mirror = Mirror::sqlite().await;
    let a = unique_name("a");
    let conv = unique_name("conv");
    let quiet = mirror.announcing(&redis, Config::default()).await.quiet();
    announce(
        &quiet,
        &[message(&conv, "m1", &a, "x", "2025-10-08T12:01:00Z")],
    )
    .await;
    assert!(seen(&redis, &a).await.is_empty());
    assert_eq!(mirror.store().outbox_backlog().await.unwrap().rows, 0);

    // mirrorctl backfill with MIRROR_REDIS_URL set: the rows, no entry.
    let dir = std::env::temp_dir().join(unique_name("backfill"));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("source.jsonl");
    let document = json!({"family": "dm.message", "document": {"conversationId": conv,
        "messageId": "m2", "authorId": a, "body": "old", "createdAt": "2025-10-08T12:02:00Z",
        "updatedAt": "2025-10-08T12:02:00Z"}});
    std::fs::write(&source, format!("{document}\n")).unwrap();
    let output = mirrorctl(&mirror, &redis)
        .args(["backfill", "--source", source.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        mirror.find("dm_messages", &[&conv, "m2"]).await.is_some(),
        "backfilled"
    );
    assert!(seen(&redis, &a).await.is_empty(), "backfill announced");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Redis stopped mid-stream: the SQL apply goes on, the outbox keeps the changes, and when
/// Redis is back every change is delivered, once.
#[tokio::test]
async fn redis_stopped_mid_stream_then_restarted_loses_nothing() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    for mirror in both().await {
        let (a, b) = (unique_name("a"), unique_name("b"));
        let conv = unique_name("conv");
        let processor = mirror.announcing(&url, Config::default()).await;
        let batch = |from: u32, to: u32| -> Vec<Value> {
            (from..to)
                .map(|i| {
                    message(
                        &conv,
                        &format!("m{i:03}"),
                        &a,
                        "x",
                        &format!("2025-10-08T12:{:02}:{:02}Z", i / 60, i % 60),
                    )
                })
                .collect()
        };
        announce(
            &processor,
            &[conversation(&conv, &[&a, &b], "2025-10-08T11:00:00Z")],
        )
        .await;
        announce(&processor, &batch(0, 20)).await;
        redis.stop();
        let during = announce(&processor, &batch(20, 40)).await;
        assert_eq!(
            during.counts().applied,
            20,
            "the mirror goes on without Redis"
        );
        // The backlog is an EMF metric (alarmed on its age in the template).
        let metrics = realtime_mirror::metrics::InvocationMetrics::measure(
            "Test",
            realtime_mirror::Family::DmMessage,
            &during,
            &Default::default(),
            realtime_mirror::timestamp::Timestamp::now(),
            false,
        );
        let document = &metrics.documents(0)[0];
        assert_eq!(document["outbox_backlog"], 40, "{document}");
        assert!(
            document["outbox_backlog_age_s"].as_f64().is_some(),
            "{document}"
        );
        let delivery = during.delivery.expect("a drain was attempted");
        assert!(delivery.error.is_some(), "{delivery:?}");
        assert_eq!(delivery.backlog, 40, "20 messages × 2 users wait");
        announce(&processor, &batch(40, 50)).await;
        redis.resume();
        tokio::time::sleep(streams::RETRY_AFTER + Duration::from_millis(200)).await;
        let after = announce(&processor, &batch(50, 60)).await;
        let delivery = after.delivery.unwrap();
        assert_eq!(delivery.error, None);
        assert_eq!(
            delivery.latency_ms.len(),
            80,
            "commit → XADD per entry: 60 waited + 20 new"
        );
        assert_eq!(delivery.backlog, 0);
        for user in [&a, &b] {
            let ids: Vec<String> = seen(&url, user).await.into_iter().map(|s| s.1).collect();
            let expected: Vec<String> = (0..60).map(|i| format!("m{i:03}")).collect();
            assert_eq!(ids, expected, "{}: every change once, in order", mirror.url);
        }
    }
}

/// `mirrorctl apply` SIGKILLed after its commit while its XADD waits on a frozen Redis: the
/// rows stay in the outbox, and the next drain (here `mirrorctl stream drain`, as any
/// invocation's sweep would) delivers them. Delivery is at least once: a consumer that
/// deduplicates by messageId + version sees each change exactly once.
#[tokio::test]
async fn a_process_killed_between_commit_and_xadd_is_covered_by_the_leftover_sweep() {
    let redis = PrivateRedis::start();
    let url = redis.url();
    let mirror = Mirror::postgres().await;
    let (a, b, conv) = two_users_in_a_conversation(&mirror).await;
    let dir = std::env::temp_dir().join(unique_name("killed"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.jsonl");
    let lines: Vec<String> = (0..50)
        .map(|i| {
            message(
                &conv,
                &format!("m{i:03}"),
                &a,
                "x",
                &format!("2025-10-08T12:00:{i:02}Z"),
            )
            .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    redis.freeze(true);
    let mut child = mirrorctl(&mirror, &url)
        .args(["apply", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut committed = 0;
    for _ in 0..400 {
        committed = mirror.store().outbox_backlog().await.unwrap().rows;
        if committed == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(committed, 100, "the apply committed its outbox rows");
    assert!(child.try_wait().unwrap().is_none(), "it waits on Redis");
    child.kill().unwrap();
    child.wait().unwrap();
    redis.freeze(false);
    assert_eq!(mirror.rows("dm_messages").await.len(), 50);

    let output = mirrorctl(&mirror, &url)
        .args(["stream", "drain"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["backlog"], 0, "{report}");
    for user in [&a, &b] {
        let got = seen(&url, user).await;
        let distinct: Vec<&(String, String, String)> = {
            let mut once = HashSet::new();
            got.iter()
                .filter(|s| once.insert((s.1.clone(), s.2.clone())))
                .collect()
        };
        let ids: Vec<&str> = distinct.iter().map(|s| s.1.as_str()).collect();
        let expected: Vec<String> = (0..50).map(|i| format!("m{i:03}")).collect();
        assert_eq!(ids, expected, "every change, in order, after deduplication");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Several processes applying one conversation's messages at once on one PostgreSQL, at
/// several chunk sizes: every user's stream shows each message's versions only increasing (a
/// device applying entries in order ends on the latest), all users see the conversation's
/// changes in one order, and nothing is missing or left in the outbox.
#[tokio::test]
async fn several_writers_announce_each_conversations_changes_in_one_commit_order() {
    let redis = test_redis_url();
    for chunk_size in ["1", "7", "40"] {
        let mirror = Mirror::postgres().await;
        let (a, b, conv) = two_users_in_a_conversation(&mirror).await;
        let dir = std::env::temp_dir().join(unique_name("writers"));
        std::fs::create_dir_all(&dir).unwrap();
        // 4 files, each with edits of the same 20 messages at interleaved versions.
        let mut children = Vec::new();
        for writer in 0..4u32 {
            let lines: Vec<String> = (0..20)
                .flat_map(|m| {
                    let (conv, a) = (conv.clone(), a.clone());
                    (0..5u32).map(move |k| {
                        let at = format!("2025-10-08T12:{m:02}:{:02}Z", k * 4 + writer);
                        edit(&conv, &format!("m{m:02}"), &a, "x", &at).to_string()
                    })
                })
                .collect();
            let file = dir.join(format!("w{writer}.jsonl"));
            std::fs::write(&file, lines.join("\n")).unwrap();
            children.push(
                mirrorctl(&mirror, &redis)
                    .args(["apply", file.to_str().unwrap()])
                    .env("MIRROR_CHUNK_SIZE", chunk_size)
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        let seen_a = seen(&redis, &a).await;
        assert_eq!(seen_a, seen(&redis, &b).await, "chunk {chunk_size}");
        let mut last: BTreeMap<&str, &str> = BTreeMap::new();
        for (_, id, version) in &seen_a {
            if let Some(before) = last.insert(id, version) {
                assert!(
                    version.as_str() > before,
                    "chunk {chunk_size}: {id}: {version} announced after {before}"
                );
            }
        }
        assert_eq!(last.len(), 20);
        for (id, version) in &last {
            assert!(
                version.ends_with(":19.000000Z"),
                "chunk {chunk_size}: {id} ends on its latest version, not {version}"
            );
        }
        assert_eq!(mirror.store().outbox_backlog().await.unwrap().rows, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// `MAXLEN ~ N` keeps a stream near N entries; a device whose last seen id was trimmed away
/// is told to resync, never handed a replay with a hole; one that is within the kept range
/// replays exactly what it missed; acknowledgements never move back.
#[tokio::test]
async fn maxlen_trimming_holds_and_replay_returns_exactly_what_a_device_missed() {
    let redis = test_redis_url();
    let mirror = Mirror::sqlite().await;
    let a = unique_name("a");
    let conv = unique_name("conv");
    let mut settings = StreamSettings::new(&redis).unwrap();
    settings.maxlen = 100;
    let config = Config {
        database_url: realtime_mirror::config::DatabaseUrl::new(mirror.url.clone()),
        streams: Some(settings),
        ..Config::default()
    };
    let processor = Processor::connect(config).await.unwrap();
    let apply = |from: u32, to: u32| {
        let events: Vec<Value> = (from..to)
            .map(|i| {
                message(
                    &conv,
                    &format!("m{i:04}"),
                    &a,
                    "x",
                    &format!(
                        "2025-10-08T{:02}:{:02}:{:02}Z",
                        i / 3600,
                        i / 60 % 60,
                        i % 60
                    ),
                )
            })
            .collect();
        let processor = &processor;
        async move { announce(processor, &events).await }
    };
    apply(0, 10).await;
    let early = entries(&redis, &a).await;
    let mut conn = connection(&redis).await;
    let (old_device, new_device) = (unique_name("d-old"), unique_name("d-new"));
    streams::ack(&mut conn, &old_device, &early[4].id)
        .await
        .unwrap();
    for start in (10..1000).step_by(90) {
        apply(start, (start + 90).min(1000)).await;
    }
    let kept = entries(&redis, &a).await;
    assert!(
        (100..=200).contains(&kept.len()),
        "MAXLEN ~ 100 kept {}",
        kept.len()
    );
    assert_eq!(kept.last().unwrap().fields["messageId"], "m0999");
    match streams::replay(&mut conn, &a, &old_device, 1000)
        .await
        .unwrap()
    {
        Replay::Resync { resume_from, .. } => assert_eq!(resume_from, kept.last().unwrap().id),
        other => panic!("a replay with a hole: {other:?}"),
    }
    // A device that saw all but the last 30 gets exactly those 30.
    let cut = &kept[kept.len() - 31].id;
    streams::ack(&mut conn, &new_device, cut).await.unwrap();
    let Replay::Entries {
        entries: missed, ..
    } = streams::replay(&mut conn, &a, &new_device, 1000)
        .await
        .unwrap()
    else {
        panic!("within the kept range")
    };
    assert_eq!(missed, kept[kept.len() - 30..].to_vec());
    // An old acknowledgement arriving late does not move the device back.
    let stored = streams::ack(&mut conn, &new_device, &early[0].id)
        .await
        .unwrap();
    assert_eq!(&stored, cut);
    // A device that never acknowledged anything starts from SQL.
    assert!(matches!(
        streams::replay(&mut conn, &a, &unique_name("d-none"), 10)
            .await
            .unwrap(),
        Replay::Resync { .. }
    ));
}

/// Bodies are private: no stream entry holds one, and no log line of an announcing
/// `mirrorctl apply` at trace level does.
#[tokio::test]
async fn no_body_appears_in_any_stream_entry_or_log_line() {
    let redis = test_redis_url();
    let mirror = Mirror::sqlite().await;
    let (a, b, conv) = two_users_in_a_conversation(&mirror).await;
    let secret = unique_name("PRIVATE-BODY-TEXT");
    let dir = std::env::temp_dir().join(unique_name("privacy"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.jsonl");
    let lines = [
        message(&conv, "m1", &a, &secret, "2025-10-08T12:00:00Z"),
        edit(
            &conv,
            "m1",
            &a,
            &format!("{secret} edited"),
            "2025-10-08T12:01:00Z",
        ),
    ];
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&file, text.join("\n")).unwrap();
    let output = mirrorctl(&mirror, &redis)
        .args(["apply", file.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(output.status.success());
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(logs.contains("\"delivered\":2"), "{logs}");
    assert!(!logs.contains(&secret), "a body was logged");
    for user in [&a, &b] {
        let got = entries(&redis, user).await;
        assert_eq!(got.len(), 1);
        for entry in got {
            assert!(entry.fields.values().all(|v| !v.contains(&secret)));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With no traffic left, the scheduled check delivers what waits in the outbox (here left by
/// a Redis that could not be reached when the change was applied).
#[tokio::test]
async fn the_scheduled_check_delivers_what_waits_in_the_outbox() {
    let redis = test_redis_url();
    let (mirror, a, b) = a_message_left_in_the_outbox().await;
    let output = mirror_check(&mirror, Some(&redis)).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["streams"]["delivered"], 2, "{report}");
    assert_eq!(report["streams"]["backlog"], 0, "{report}");
    for user in [&a, &b] {
        assert_eq!(seen(&redis, user).await.len(), 1);
    }
}

/// The minute's outbox sweep (`mirror-check drain`; `{"task": "drain"}` in Lambda): while
/// Redis cannot be reached it exits cleanly and reports the backlog and its age under
/// `Function=mirror-check` (what the template's alarm reads, whatever the traffic); once
/// Redis answers it delivers every leftover with no new event applied.
#[tokio::test]
async fn the_outbox_sweep_reports_the_backlogs_age_and_delivers_leftovers_without_traffic() {
    let redis = test_redis_url();
    let (mirror, a, b) = a_message_left_in_the_outbox().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sweep = |redis_url: Option<&str>| {
        let output = mirror_check(&mirror, redis_url)
            .arg("drain")
            .output()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (
            output.status,
            lines,
            String::from_utf8(output.stderr).unwrap(),
        )
    };

    let (status, lines, stderr) = sweep(Some("redis://127.0.0.1:1"));
    assert!(status.success(), "{stderr}");
    let (metrics, report) = (&lines[0], lines.last().unwrap());
    assert_eq!(
        metrics["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Function"]]),
        "{metrics}"
    );
    assert_eq!(metrics["Function"], "mirror-check");
    assert_eq!(metrics["outbox_backlog"], 2, "{metrics}");
    assert!(
        metrics["outbox_backlog_age_s"].as_f64().unwrap() >= 0.02,
        "{metrics}"
    );
    assert_eq!(metrics["stream_entries"], 0);
    assert_eq!(report["streams"]["backlog"], 2, "{report}");
    let error = report["streams"]["error"].as_str().unwrap();
    assert!(error.contains("cannot reach Redis"), "{report}");
    assert!(
        stderr.contains("cannot reach Redis"),
        "the failure is logged: {stderr}"
    );

    let (status, lines, stderr) = sweep(Some(&redis));
    assert!(status.success(), "{stderr}");
    let (metrics, report) = (&lines[0], lines.last().unwrap());
    assert_eq!(metrics["stream_entries"], 2, "{metrics}");
    assert_eq!(metrics["outbox_backlog"], 0);
    assert_eq!(metrics["outbox_backlog_age_s"], 0.0);
    assert_eq!(metrics["fanout_latency_ms"].as_array().unwrap().len(), 2);
    assert_eq!(report["streams"]["delivered"], 2, "{report}");
    assert_eq!(report["streams"]["error"], Value::Null);
    for user in [&a, &b] {
        assert_eq!(seen(&redis, user).await.len(), 1, "{user}");
    }

    let (status, _, stderr) = sweep(None);
    assert!(
        !status.success(),
        "a sweep without Redis configured is an error"
    );
    assert!(
        stderr.contains("realtime delivery is off (MIRROR_REDIS_URL is not set)"),
        "{stderr}"
    );
}

/// In Lambda, the template's minute schedule sends `{"task": "drain"}`: the invocation
/// sweeps the outbox and returns what it delivered; EventBridge's own scheduled event runs the
/// check; a task it does not know is refused with the reason.
#[tokio::test]
async fn a_drain_event_sweeps_the_outbox_and_an_unknown_task_is_refused() {
    use lambda_runtime::{Context, LambdaEvent};
    use realtime_mirror::check::SelfCheckOptions;
    use realtime_mirror::scheduled::handle;

    let redis = test_redis_url();
    let (mirror, a, b) = a_message_left_in_the_outbox().await;
    let processor = mirror.announcing(&redis, Config::default()).await;
    let options = SelfCheckOptions {
        page: 100,
        stub_age: Duration::from_secs(3600),
        budget: None,
    };
    let event = |payload: Value| {
        let mut context = Context::default();
        context.deadline = (chrono::Utc::now().timestamp_millis() + 120_000) as u64;
        LambdaEvent::new(payload, context)
    };

    let swept = handle(&processor, &options, None, event(json!({"task": "drain"})))
        .await
        .unwrap();
    assert_eq!(swept["streams"]["delivered"], 2, "{swept}");
    assert_eq!(swept["streams"]["backlog"], 0, "{swept}");
    assert!(
        swept.get("inconsistent").is_none(),
        "a sweep does not check: {swept}"
    );
    for user in [&a, &b] {
        assert_eq!(seen(&redis, user).await.len(), 1, "{user}");
    }

    let scheduled = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
    let checked = handle(&processor, &options, None, event(scheduled))
        .await
        .unwrap();
    assert_eq!(checked["inconsistent"], 0, "{checked}");
    assert_eq!(checked["streams"]["delivered"], 0, "{checked}");

    let refused = handle(&processor, &options, None, event(json!({"task": "sweep"})))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("unknown task \"sweep\""), "{refused}");
}

/// In Lambda the drain stops at the invocation's deadline (less its margin): a backlog left
/// by an outage never makes an invocation time out; the rest waits for the next drain.
#[tokio::test]
async fn a_drain_stops_at_the_deadline_and_leaves_the_rest_for_the_next() {
    let redis = test_redis_url();
    let mirror = Mirror::sqlite().await;
    let a = unique_name("a");
    let conv = unique_name("conv");
    let unreachable = mirror
        .announcing("redis://127.0.0.1:1", Config::default())
        .await;
    announce(
        &unreachable,
        &[message(&conv, "m1", &a, "x", "2025-10-08T12:00:00Z")],
    )
    .await;
    let fanout = Fanout::new(StreamSettings::new(&redis).unwrap())
        .await
        .unwrap();
    let passed = tokio::time::Instant::now();
    let stopped = fanout.drain_until(mirror.store(), Some(passed)).await;
    assert_eq!((stopped.delivered, stopped.backlog), (0, 1), "{stopped:?}");
    assert_eq!(stopped.error, None, "stopping in time is not a failure");
    let later = fanout.drain(mirror.store()).await;
    assert_eq!((later.delivered, later.backlog), (1, 0), "{later:?}");
    assert_eq!(seen(&redis, &a).await.len(), 1);
}

/// Each entry names the entry before it (`prev`), so a device whose missed entries were
/// lost by Redis — a restart without persistence, a failover to a replica that lagged — is
/// told to resync, though the stream has since grown again past its last seen id.
#[tokio::test]
async fn a_device_is_told_to_resync_when_redis_lost_entries_it_never_saw() {
    let redis = test_redis_url();
    let mirror = Mirror::sqlite().await;
    let (a, _b, conv) = two_users_in_a_conversation(&mirror).await;
    let processor = mirror.announcing(&redis, Config::default()).await;
    let mut conn = connection(&redis).await;
    let device = unique_name("device");
    let at = |m: u32| format!("2025-10-08T12:{m:02}:00Z");
    announce(&processor, &[message(&conv, "m1", &a, "x", &at(1))]).await;
    let first = entries(&redis, &a).await;
    assert_eq!(first[0].fields["prev"], "0-0", "a new stream's first entry");
    streams::ack(&mut conn, &device, &first[0].id)
        .await
        .unwrap();
    announce(&processor, &[message(&conv, "m2", &a, "x", &at(2))]).await;
    let Replay::Entries {
        entries: missed, ..
    } = streams::replay(&mut conn, &a, &device, 10).await.unwrap()
    else {
        panic!("nothing was lost yet")
    };
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].fields["prev"], first[0].id);

    // Redis loses the stream (m2 with it); m3 arrives: the stream has entries after the
    // device's last seen id again, but not the one it missed.
    let _: () = redis::cmd("DEL")
        .arg(streams::stream_key(&a))
        .query_async(&mut conn)
        .await
        .unwrap();
    announce(&processor, &[message(&conv, "m3", &a, "x", &at(3))]).await;
    match streams::replay(&mut conn, &a, &device, 10).await.unwrap() {
        Replay::Resync { reason, .. } => assert!(reason.contains("gone"), "{reason}"),
        other => panic!("a replay with a hole: {other:?}"),
    }
}

/// Commit order per conversation holds across processes because drainers take the outbox
/// one at a time, oldest rows first: a second drainer waits while the first holds its lease,
/// then starts where the first stopped — never skips ahead of rows being delivered.
#[tokio::test]
async fn drainers_take_the_outbox_one_at_a_time_in_id_order() {
    for mirror in both().await {
        let (a, _b, conv) = two_users_in_a_conversation(&mirror).await;
        let unreachable = mirror
            .announcing("redis://127.0.0.1:1", Config::default())
            .await;
        let events: Vec<Value> = (0..3)
            .map(|i| {
                message(
                    &conv,
                    &format!("m{i}"),
                    &a,
                    "x",
                    &format!("2025-10-08T12:0{i}:00Z"),
                )
            })
            .collect();
        announce(&unreachable, &events).await;
        let store = mirror.store().clone();
        let first = store.lease_outbox(2).await.unwrap();
        let first_ids: Vec<i64> = first.announcements.iter().map(|x| x.id).collect();
        assert_eq!(first_ids.len(), 2);
        let second = tokio::spawn(async move { store.lease_outbox(100).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "{}: a second drainer went ahead",
            mirror.url
        );
        first.delivered().await.unwrap();
        let second = second.await.unwrap();
        let second_ids: Vec<i64> = second.announcements.iter().map(|x| x.id).collect();
        assert_eq!(second_ids.len(), 4, "{}: 6 rows, 2 delivered", mirror.url);
        assert!(second_ids[0] > *first_ids.last().unwrap(), "id order");
        assert!(second_ids.windows(2).all(|w| w[0] < w[1]));
        second.delivered().await.unwrap();
        assert_eq!(mirror.store().outbox_backlog().await.unwrap().rows, 0);
    }
}

/// `MIRROR_STREAM_MAX_AGE` trims by age as well (`XTRIM … MINID ~`, whole nodes of 100
/// entries): old entries go, the newest stay, and a device behind the trim resyncs.
#[tokio::test]
async fn entries_older_than_the_max_age_are_trimmed() {
    let redis = test_redis_url();
    let mirror = Mirror::sqlite().await;
    let (a, _b, conv) = two_users_in_a_conversation(&mirror).await;
    let mut settings = StreamSettings::new(&redis).unwrap();
    settings.max_age = Some(Duration::from_secs(1));
    let config = Config {
        database_url: realtime_mirror::config::DatabaseUrl::new(mirror.url.clone()),
        streams: Some(settings),
        ..Config::default()
    };
    let processor = Processor::connect(config).await.unwrap();
    let old: Vec<Value> = (0..250)
        .map(|i| {
            message(
                &conv,
                &format!("old{i:03}"),
                &a,
                "x",
                &format!("2025-10-08T12:{:02}:{:02}Z", i / 60, i % 60),
            )
        })
        .collect();
    announce(&processor, &old).await;
    let mut conn = connection(&redis).await;
    let device = unique_name("device");
    streams::ack(&mut conn, &device, &entries(&redis, &a).await[0].id)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    announce(
        &processor,
        &[message(&conv, "new", &a, "x", "2025-10-08T13:00:00Z")],
    )
    .await;
    let kept = entries(&redis, &a).await;
    assert!(
        kept.len() <= 101,
        "only the last node of old entries may stay: {}",
        kept.len()
    );
    assert_eq!(kept.last().unwrap().fields["messageId"], "new");
    assert!(matches!(
        streams::replay(&mut conn, &a, &device, 1000).await.unwrap(),
        Replay::Resync { .. }
    ));
}
