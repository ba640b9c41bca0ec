//! Realtime delivery into a Redis Cluster (docs/streams.md, "Redis Cluster"): a page of the
//! outbox goes out as one pipeline per slot, and each user's stream still holds every change
//! once, in commit order, chained by `prev`, whichever master holds it and however many
//! writers there are; a master that stops answering delays delivery and loses nothing.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use mirror_tests::{canonical, conversation, message, unique_name, Mirror, PrivateRedisCluster};
use realtime_mirror::streams::connection::{cluster_connection, Connection};
use realtime_mirror::streams::{self, Entry, Fanout, StreamSettings};
use realtime_mirror::{Config, Route};
use serde_json::{json, Value};

async fn entries(url: &str, user: &str) -> Vec<Entry> {
    let client = redis::Client::open(url).unwrap();
    let mut cluster: Connection<redis::aio::MultiplexedConnection> =
        Connection::Cluster(cluster_connection(&client).await.unwrap());
    streams::tail(&mut cluster, user, None, 1_000_000)
        .await
        .unwrap()
}

/// Each entry names the one before it (the first, `0-0`): nothing between them is missing.
fn assert_chained(user: &str, entries: &[Entry]) {
    let mut before = "0-0";
    for e in entries {
        assert_eq!(
            e.fields["prev"], before,
            "{user}: {} breaks the chain",
            e.id
        );
        before = &e.id;
    }
}

fn edit(conversation: &str, id: &str, author: &str, at: &str) -> Value {
    canonical(
        "dm.message.updated",
        at,
        json!({ "conversationId": conversation, "messageId": id, "authorId": author,
                "body": "x", "createdAt": "2025-10-08T12:00:00Z", "updatedAt": at }),
    )
}

/// `n` conversations of two new users each, mirrored: (a, b, conversation) triples.
async fn pairs(mirror: &Mirror, n: usize) -> Vec<(String, String, String)> {
    let pairs: Vec<_> = (0..n)
        .map(|_| (unique_name("a"), unique_name("b"), unique_name("conv")))
        .collect();
    let events: Vec<Value> = pairs
        .iter()
        .map(|(a, b, c)| conversation(c, &[a, b], "2025-10-08T11:00:00Z"))
        .collect();
    mirror.apply(&events).await;
    pairs
}

#[tokio::test]
async fn several_writers_into_a_redis_cluster_announce_each_users_changes_once_in_commit_order() {
    let cluster = PrivateRedisCluster::start(3);
    let redis = cluster.url();
    for chunk_size in ["1", "7", "40"] {
        let mirror = Mirror::postgres().await;
        let pairs = pairs(&mirror, 12).await;
        let dir = std::env::temp_dir().join(unique_name("cluster_writers"));
        std::fs::create_dir_all(&dir).unwrap();
        // 4 writers, each with edits of the same 3 messages of every conversation at
        // interleaved versions: every page spans every master.
        let mut children = Vec::new();
        for writer in 0..4u32 {
            let mut lines = Vec::new();
            for k in 0..5u32 {
                for (a, _, conv) in &pairs {
                    for m in 0..3 {
                        let at = format!("2025-10-08T12:{m:02}:{:02}Z", k * 4 + writer);
                        lines.push(edit(conv, &format!("m{m}"), a, &at).to_string());
                    }
                }
            }
            let file = dir.join(format!("w{writer}.jsonl"));
            std::fs::write(&file, lines.join("\n")).unwrap();
            children.push(
                Command::new(mirror_tests::workspace_binary("mirrorctl"))
                    .env("DATABASE_URL", &mirror.url)
                    .env("MIRROR_REDIS_URL", &redis)
                    .env("MIRROR_CHUNK_SIZE", chunk_size)
                    .args(["apply", file.to_str().unwrap()])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        for (a, b, _) in &pairs {
            let (of_a, of_b) = (entries(&redis, a).await, entries(&redis, b).await);
            assert_chained(a, &of_a);
            assert_chained(b, &of_b);
            let seen = |es: &[Entry]| -> Vec<(String, String)> {
                es.iter()
                    .map(|e| (e.fields["messageId"].clone(), e.fields["version"].clone()))
                    .collect()
            };
            assert_eq!(
                seen(&of_a),
                seen(&of_b),
                "chunk {chunk_size}: one order for both"
            );
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            for (id, version) in seen(&of_a) {
                if let Some(before) = last.insert(id.clone(), version.clone()) {
                    assert!(
                        version > before,
                        "chunk {chunk_size}: {id}: {version} after {before}"
                    );
                }
            }
            assert_eq!(last.len(), 3, "chunk {chunk_size}: {a}");
            for (id, version) in &last {
                assert!(
                    version.ends_with(":19.000000Z"),
                    "chunk {chunk_size}: {a}: {id} ends on its latest version, not {version}"
                );
            }
        }
        assert_eq!(mirror.store().outbox_backlog().await.unwrap().rows, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[tokio::test]
async fn a_cluster_master_that_stops_answering_delays_delivery_and_loses_nothing() {
    let cluster = PrivateRedisCluster::start(3);
    let redis = cluster.url();
    let mirror = Mirror::sqlite().await;
    let pairs = pairs(&mirror, 12).await;
    let processor = mirror.announcing(&redis, Config::default()).await;
    let batch: Vec<Value> = pairs
        .iter()
        .map(|(a, _, c)| message(c, "m1", a, "hello", "2025-10-08T12:00:00Z"))
        .collect();
    cluster.freeze(1, true);
    let outcome = processor
        .process(mirror_tests::records(&batch), Route::AllFamilies)
        .await;
    assert_eq!(outcome.counts().applied, 12, "applied whatever Redis does");
    let delivery = outcome.delivery.expect("a drain was attempted");
    assert!(
        delivery.error.is_some(),
        "a frozen master fails the page: {delivery:?}"
    );
    assert_eq!(
        delivery.backlog, 24,
        "every row waits in the outbox: {delivery:?}"
    );
    cluster.freeze(1, false);
    let fanout = Fanout::new(StreamSettings::new(&redis).unwrap())
        .await
        .unwrap();
    let later = fanout.drain(mirror.store()).await;
    assert_eq!(
        (later.error, later.backlog),
        (None, 0),
        "delivered once it answers"
    );
    for (a, b, _) in &pairs {
        for user in [a, b] {
            let entries = entries(&redis, user).await;
            assert_chained(user, &entries);
            // At least once: a slot that took the page before another failed has it twice.
            assert!(!entries.is_empty(), "{user} heard of m1");
            assert!(entries.iter().all(|e| e.fields["messageId"] == "m1"));
        }
    }
}
