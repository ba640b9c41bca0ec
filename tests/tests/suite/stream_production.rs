//! Realtime delivery as production runs it (docs/streams.md, "In production"): a Redis that
//! is full (the stack's cache refuses writes, `maxmemory-policy noeviction`) loses no change,
//! and a stream with no entry for `MIRROR_STREAM_MAX_AGE` expires, after which a device
//! coming back is told to resync. Each on a private redis-server.

use std::time::Duration;

use mirror_tests::{conversation, message, unique_name, Mirror, PrivateRedis};
use realtime_mirror::streams::{self, Gap, Replay, StreamSettings};
use realtime_mirror::{BatchOutcome, Config, Processor, Route};
use serde_json::Value;

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn announce(processor: &Processor, events: &[Value]) -> BatchOutcome {
    processor
        .process(mirror_tests::records(events), Route::AllFamilies)
        .await
}

fn messages(conv: &str, author: &str, range: std::ops::Range<u32>) -> Vec<Value> {
    range
        .map(|i| {
            let at = format!("2025-10-08T12:{:02}:{:02}Z", i / 60, i % 60);
            message(conv, &format!("m{i:03}"), author, "x", &at)
        })
        .collect()
}

#[tokio::test]
async fn a_full_redis_that_refuses_writes_loses_no_change() {
    let redis =
        PrivateRedis::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let url = redis.url();
    let mirror = Mirror::postgres().await;
    let processor = mirror.announcing(&url, Config::default()).await;
    let (a, b, conv) = (unique_name("a"), unique_name("b"), unique_name("conv"));
    announce(
        &processor,
        &[conversation(&conv, &[&a, &b], "2025-10-08T11:00:00Z")],
    )
    .await;
    announce(&processor, &messages(&conv, &a, 0..10)).await;

    // Fill it until it refuses a write, as a cache at its memory limit does (small values,
    // so that no query buffer freed after a refusal brings it back under the limit).
    let mut admin = connection(&url).await;
    let ballast = "x".repeat(256);
    let mut filled = 0;
    loop {
        let set: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("ballast:{filled}"))
            .arg(&ballast)
            .query_async(&mut admin)
            .await;
        match set {
            Ok(()) => filled += 1,
            Err(e) => {
                assert!(e.to_string().contains("OOM"), "{e}");
                break;
            }
        }
        assert!(filled < 100_000, "the private Redis never filled up");
    }
    let during = announce(&processor, &messages(&conv, &a, 10..30)).await;
    assert_eq!(during.counts().applied, 20, "the SQL mirror goes on");
    let delivery = during.delivery.expect("a drain was attempted");
    assert!(
        delivery.error.as_deref().is_some_and(|e| e.contains("OOM")),
        "{delivery:?}"
    );
    assert_eq!(
        delivery.backlog, 40,
        "20 changes × 2 users wait in the outbox"
    );

    // Memory back: everything is delivered, in commit order, at least once.
    let _: () = redis::cmd("FLUSHDB").query_async(&mut admin).await.unwrap();
    tokio::time::sleep(streams::RETRY_AFTER + Duration::from_millis(200)).await;
    let after = announce(&processor, &messages(&conv, &a, 30..35)).await;
    let delivery = after.delivery.unwrap();
    assert_eq!((delivery.error, delivery.backlog), (None, 0));
    for user in [&a, &b] {
        let tail = streams::tail(&mut admin, user, None, 1_000).await.unwrap();
        let mut ids: Vec<String> = Vec::new();
        for entry in tail {
            let id = entry.fields["messageId"].clone();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        // The first ten went before the flush; everything after it is there, in order.
        let expected: Vec<String> = (10..35).map(|i| format!("m{i:03}")).collect();
        assert_eq!(
            ids, expected,
            "{user}: every change refused while full, then delivered"
        );
    }
}

#[tokio::test]
async fn a_stream_without_an_entry_for_the_max_age_expires_and_its_device_resyncs() {
    let redis = PrivateRedis::start();
    let url = redis.url();
    let mirror = Mirror::postgres().await;
    let mut settings = StreamSettings::new(url.clone()).unwrap();
    settings.max_age = Some(Duration::from_millis(1_500));
    let processor = mirror.announcing_with(settings, Config::default()).await;
    let (a, b, conv) = (unique_name("a"), unique_name("b"), unique_name("conv"));
    announce(
        &processor,
        &[conversation(&conv, &[&a, &b], "2025-10-08T11:00:00Z")],
    )
    .await;
    announce(&processor, &messages(&conv, &a, 0..3)).await;

    let mut admin = connection(&url).await;
    let key = streams::stream_key(&b);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        (1..=1_500).contains(&ttl),
        "the stream expires after the age: PTTL {ttl}"
    );
    let seen = streams::tail(&mut admin, &b, None, 10).await.unwrap();
    let last = seen.last().unwrap().id.clone();

    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(exists, 0, "no entry for the age: the stream is gone");
    match streams::replay_after(&mut admin, &b, Some(&last), 100)
        .await
        .unwrap()
    {
        Replay::Resync { code, .. } => assert_eq!(code, Gap::StreamGone.code()),
        other => panic!("a device back after the age must resync: {other:?}"),
    }
}
