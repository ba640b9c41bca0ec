//! Convergence under concurrency on PostgreSQL: several `mirrorctl apply` *processes* (not
//! only several connections of one pool) apply overlapping, shuffled shares of the messages
//! of brand-new conversations, the conversations' own events and the follow edges between
//! their participants, at once, at several chunk sizes and connection counts. Half the
//! rounds are deployed as the functions are (message processes, one conversation and
//! follow process); the other half give every process mixed batches of all three families,
//! each one transaction. Every round must end with
//! - every process exiting 0 (an operator's `mirrorctl repair` running alongside too), with
//!   no chunk retried after a deadlock (none can arise: every writer takes its locks in the
//!   one order of `store/apply.rs`: conversations, messages, follow edges, applied keys, each
//!   in key order);
//! - derived columns (`last_message_*`, `recipient_id`) that agree with the rows themselves;
//! - the same rows as one sequential application of the same events.
//!
//! Rounds are bounded by count (`MIRROR_TEST_CONCURRENCY_ROUNDS`, default 16), not by time.

use std::process::Stdio;

use mirror_tests::realtime_mirror::config::Config;
use mirror_tests::{canonical, derived_column_disagreements, new_schema, workspace_binary, Mirror};
use serde_json::{json, Value};

/// A small deterministic generator, so a failing round can be replayed by seed.
use mirror_tests::realtime_mirror::workload::Random as Rng;

fn at(second: usize) -> String {
    format!("2025-03-01T00:{:02}:{:02}Z", second / 60, second % 60)
}

/// The events of one round: `conversations` new conversations, two of every three with
/// their own events (created with two participants, then updated to another participant
/// set; the third stays a stub), each with `messages` messages by either participant, some
/// edited, some deleted; and follow edges both ways between the participants of each
/// conversation and the next one's, some muted, some removed.
fn events(rng: &mut Rng, round: usize, conversations: usize, messages: usize) -> Vec<Value> {
    let mut events = Vec::new();
    for c in 0..conversations {
        let id = format!("r{round}c{c}");
        let (a, b, x) = (format!("u{c}a"), format!("u{c}b"), format!("u{c}x"));
        let has_events = c % 3 != 2;
        let created = json!({ "conversationId": id, "ownerId": a, "participantIds": [a, b],
                              "createdAt": at(1), "updatedAt": at(1) });
        if has_events {
            events.push(canonical("dm.conversation.created", &at(1), created));
        }
        // A later participant set: sometimes the same pair, sometimes a group of three
        // (no recipient), sometimes a different pair.
        let later = match rng.below(3) {
            0 => json!([b, a]),
            1 => json!([a, b, x]),
            _ => json!([a, x]),
        };
        let updated = json!({ "conversationId": id, "ownerId": a, "participantIds": later,
                              "createdAt": at(1), "updatedAt": at(2 + rng.below(messages + 4)) });
        if has_events {
            events.push(canonical("dm.conversation.updated", &at(2), updated));
        }
        let next = format!("u{}a", (c + 1) % conversations);
        for (user, target) in [(&a, &b), (&b, &a), (&a, &next), (&next, &a)] {
            let edge = json!({ "userId": user, "targetId": target, "edgeType": "follow",
                               "createdAt": at(1), "updatedAt": at(1) });
            events.push(canonical("follow.edge.created", &at(1), edge.clone()));
            match rng.below(3) {
                0 => {
                    let mut muted = edge;
                    muted["edgeType"] = json!("mute");
                    muted["updatedAt"] = json!(at(3 + rng.below(20)));
                    events.push(canonical("follow.edge.updated", &at(3), muted));
                }
                1 => events.push(json!({ "eventType": "follow.edge.deleted",
                                         "occurredAt": at(30 + rng.below(20)),
                                         "entityId": format!("{user}/{target}") })),
                _ => {}
            }
        }
        for m in 0..messages {
            let author = if rng.below(2) == 0 { &a } else { &b };
            let created_at = at(2 + m);
            let payload = json!({ "conversationId": id, "messageId": format!("m{m}"),
                                  "authorId": author, "body": format!("body {c}/{m}"),
                                  "createdAt": created_at });
            events.push(canonical(
                "dm.message.created",
                &created_at,
                payload.clone(),
            ));
            match rng.below(5) {
                0 => {
                    let mut edited = payload.clone();
                    edited["body"] = json!(format!("edited {c}/{m}"));
                    edited["updatedAt"] = json!(at(40 + m));
                    events.push(canonical("dm.message.updated", &at(40 + m), edited));
                }
                1 => events.push(
                    json!({ "eventType": "dm.message.deleted", "occurredAt": at(50 + m),
                                         "entityId": format!("{id}/m{m}") }),
                ),
                _ => {}
            }
        }
    }
    events
}

/// Each event goes to one process at least and to each other one with probability 1/2;
/// each share is shuffled, then (when `grouped`) ordered by conversation, its messages
/// before its own events, and each process starting on a different conversation: at start a
/// process's concurrent chunks all create and update the same brand-new conversation, as a
/// burst from one trigger would.
fn shares(
    rng: &mut Rng,
    events: &[Value],
    conversations: usize,
    processes: usize,
    grouped: bool,
) -> Vec<Vec<Value>> {
    let mut shares = vec![Vec::new(); processes];
    for event in events {
        let owner = rng.below(processes);
        for (p, share) in shares.iter_mut().enumerate() {
            if p == owner || rng.below(2) == 0 {
                share.push(event.clone());
            }
        }
    }
    for (p, share) in shares.iter_mut().enumerate() {
        rng.shuffle(share);
        if grouped {
            // Conversation 3p + 2 has no events of its own: a stub, created by messages.
            let first = (3 * p + 2) % conversations;
            share.sort_by_key(|e| {
                let id = e["payload"]["conversationId"]
                    .as_str()
                    .or_else(|| e["entityId"].as_str())
                    .unwrap_or_default();
                let index: usize = id
                    .split('/')
                    .next()
                    .and_then(|c| c.rsplit('c').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let is_conversation_event = e["eventType"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("dm.conversation"));
                (
                    (index + conversations - first) % conversations,
                    is_conversation_event,
                )
            });
        }
    }
    shares
}

fn sqs_event_file(dir: &std::path::Path, name: &str, events: &[Value]) -> std::path::PathBuf {
    let records: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, e)| json!({ "messageId": format!("{name}-{i}"), "body": e.to_string() }))
        .collect();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, json!({ "Records": records }).to_string()).unwrap();
    path
}

#[tokio::test]
async fn concurrent_processes_converge_with_exact_derived_columns_and_no_deadlocks() {
    let rounds: usize = std::env::var("MIRROR_TEST_CONCURRENCY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(16);
    let mirrorctl = workspace_binary("mirrorctl");
    // How the suite itself is checked: a `mirrorctl` built with a broken lock order (for
    // example follow edges before conversations) runs as the first process of every round;
    // the round must then fail with conflict retries (docs/architecture.md, "The write path").
    let first_writer = std::env::var_os("MIRROR_TEST_CONCURRENCY_FIRST_WRITER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| mirrorctl.clone());
    let dir = std::env::temp_dir().join(format!("mirror-concurrency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // (chunk size, connections) per process, varied across rounds; chunk 1 with two
    // connections is the smallest case that raced.
    let settings = [
        (1, 2),
        (1, 4),
        (2, 2),
        (1, 1),
        (3, 3),
        (16, 2),
        (500, 2),
        (1000, 2),
    ];
    // Mixed batches: chunks that hold several families at once, many per process, so that
    // transactions of different processes overlap in time.
    let mixed_settings = [(16, 2), (32, 2), (8, 2), (64, 2), (1000, 2)];
    let mut failures = Vec::new();
    for round in 0..rounds {
        let seed = 0x5EED_0000 + round as u64;
        let mut rng = Rng(seed);
        // Every process with mixed batches of every family on rounds 2 and 3 of 4.
        let mixed = round % 4 >= 2;
        let conversations = if mixed { 16 } else { 12 };
        let all = events(&mut rng, round, conversations, 5);
        let processes = 2 + round % 3;

        let schema = new_schema().await;
        let mirror = Mirror::postgres_in(
            mirror_tests::test_database_url().parse().unwrap(),
            &schema,
            Config::default(),
        )
        .await;
        // As deployed: message processes (the dm-message function's instances) and one
        // conversation process (dm-conversation), all at once on one database.
        let is_message = |e: &Value| {
            e["eventType"]
                .as_str()
                .is_some_and(|t| t.starts_with("dm.message"))
        };
        let files = if mixed {
            shares(&mut rng, &all, conversations, processes + 1, round % 2 == 0)
        } else {
            let messages: Vec<Value> = all.iter().filter(|e| is_message(e)).cloned().collect();
            let mut files = shares(
                &mut rng,
                &messages,
                conversations,
                processes,
                round % 2 == 0,
            );
            let mut others: Vec<Value> = all.iter().filter(|e| !is_message(e)).cloned().collect();
            rng.shuffle(&mut others);
            files.push(others);
            files
        };
        let mut children = Vec::new();
        // And an operator's repair, racing the writers: it takes their locks in their order.
        let repair = tokio::process::Command::new(&mirrorctl)
            .args(["repair"])
            .env("DATABASE_URL", &mirror.url)
            .env("MIRROR_CHUNK_SIZE", "3")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mirrorctl starts");
        for (p, share) in files.iter().enumerate() {
            let (chunk, connections) = if mixed {
                mixed_settings[(round + p) % mixed_settings.len()]
            } else {
                settings[(round + p) % settings.len()]
            };
            let file = sqs_event_file(&dir, &format!("round{round}-p{p}"), share);
            let binary = if p == 0 { &first_writer } else { &mirrorctl };
            let child = tokio::process::Command::new(binary)
                .arg("apply")
                .arg(&file)
                .env("DATABASE_URL", &mirror.url)
                .env("MIRROR_CHUNK_SIZE", chunk.to_string())
                .env("MIRROR_MAX_CONNECTIONS", connections.to_string())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("mirrorctl starts");
            children.push((p, chunk, connections, child));
        }
        for (p, chunk, connections, child) in children {
            let output = child.wait_with_output().await.unwrap();
            let summary: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
            let retries = summary["retries"].as_u64().unwrap_or(0);
            if !output.status.success() || retries != 0 {
                failures.push(format!(
                    "round {round} (seed {seed:#x}, mixed {mixed}) process {p} (chunk {chunk}, {connections} connections): \
                     exit {:?}, {retries} conflict retries, summary {summary}, stderr {}",
                    output.status.code(),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
        }

        let repaired = repair.wait_with_output().await.unwrap();
        if !repaired.status.success() {
            failures.push(format!(
                "round {round} (seed {seed:#x}): repair exited {:?}: {}",
                repaired.status.code(),
                String::from_utf8_lossy(&repaired.stderr)
            ));
        }

        let concurrent = mirror.state().await;
        for wrong in derived_column_disagreements(&concurrent) {
            failures.push(format!("round {round} (seed {seed:#x}): {wrong}"));
        }
        let sequential = Mirror::sqlite_in_memory_with(Config::default()).await;
        sequential.apply_each(&all).await;
        if concurrent != sequential.state().await {
            failures.push(format!(
                "round {round} (seed {seed:#x}): the rows differ from one sequential application"
            ));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "{} problems in {rounds} rounds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The smallest case that raced: one process, two connections, one event per chunk, the
/// messages of one brand-new conversation. Both first chunks create the stub; the one that
/// waited for the other's insert must still lock the row before it reads the messages.
#[tokio::test]
async fn messages_of_a_new_conversation_in_concurrent_chunks_leave_the_newest_as_last_message() {
    let config = Config {
        chunk_size: 1,
        max_connections: 2,
        ..Config::default()
    };
    let mut wrong = Vec::new();
    for repetition in 0..12 {
        let mirror = Mirror::postgres_with(config.clone()).await;
        let events: Vec<Value> = (1..=3)
            .map(|i| mirror_tests::message("c", &format!("m{i}"), "u1", "hi", &at(i)))
            .collect();
        let summary = mirror.apply(&events).await.summary();
        assert_eq!(summary.applied, 3, "{summary:?}");
        let row = mirror.row("dm_conversations", &["c"]).await;
        if row["last_message_id"] != json!("m3") {
            wrong.push(format!(
                "repetition {repetition}: {}",
                row["last_message_id"]
            ));
        }
    }
    assert!(wrong.is_empty(), "last_message_id is not m3: {wrong:?}");
}
