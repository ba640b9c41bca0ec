//! Faults of the database server and of the applying process, under a stream of events
//! (`workload`: new messages, edits, deletes, conversation and follow changes, duplicates,
//! stale versions): connections killed mid-batch, the server restarted mid-stream, the
//! applying process killed with SIGKILL and started again. Every time, the records that did
//! not settle are reported as failures — for the queue to redeliver — and once redelivered
//! the rows equal one clean application of the same events: none lost, none doubled.
//! Each test starts a PostgreSQL cluster of its own, so that killing and restarting it
//! disturbs nothing else.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mirror_tests::realtime_mirror::config::Config;
use mirror_tests::realtime_mirror::store::Snapshot;
use mirror_tests::realtime_mirror::workload::{self, Spec};
use mirror_tests::realtime_mirror::Outcome;
use mirror_tests::{workspace_binary, Mirror, PrivateCluster};
use serde_json::Value;
use sqlx::Connection;

const BATCH: usize = 100;

fn config() -> Config {
    Config {
        chunk_size: 25,
        max_connections: 2,
        db_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

fn events(count: usize, seed: u64) -> Vec<Value> {
    workload::stream(Spec::new(count, seed))
        .map(Value::String)
        .collect()
}

async fn rows(mirror: &Mirror) -> Snapshot {
    mirror
        .store()
        .snapshot()
        .await
        .unwrap()
        .without_bookkeeping()
}

/// The events applied once, in batches, on a fresh mirror of the same cluster.
async fn clean(cluster: &PrivateCluster, events: &[Value]) -> Snapshot {
    let mirror = cluster.mirror(config()).await;
    for batch in events.chunks(BATCH) {
        let s = mirror.apply(batch).await.summary();
        assert_eq!(s.failed + s.rejected, 0, "the clean run: {s:?}");
    }
    rows(&mirror).await
}

/// Delivers `events` as a queue would: batches of [`BATCH`], and every record reported as
/// failed goes back on the queue, to a later batch. `done` counts the batches. Returns how
/// many deliveries failed.
async fn deliver(mirror: &Mirror, events: &[Value], done: &AtomicUsize) -> usize {
    let mut queue: VecDeque<Value> = events.iter().cloned().collect();
    let mut failed = 0;
    let limit = 50 * events.len() / BATCH;
    while !queue.is_empty() {
        let batch: Vec<Value> = queue.drain(..BATCH.min(queue.len())).collect();
        let outcome = mirror.apply(&batch).await;
        assert_eq!(outcome.records.len(), batch.len(), "one outcome a record");
        for record in &outcome.records {
            let i: usize = record.message_id[1..].parse().unwrap();
            match &record.outcome {
                Outcome::Failed(_) => {
                    failed += 1;
                    queue.push_back(batch[i].clone());
                }
                Outcome::Rejected(why) => panic!("a valid event rejected: {why}"),
                Outcome::Applied | Outcome::Duplicate | Outcome::Stale => {}
            }
        }
        let n = done.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(
            n < limit,
            "still {} records unsettled after {n} batches",
            queue.len()
        );
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_mid_batch_lose_nothing_and_double_nothing_after_redelivery() {
    let cluster = PrivateCluster::start();
    let events = events(4000, 1);
    let mirror = cluster.mirror(config()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (url, stop) = (cluster.url(), stop.clone());
        tokio::spawn(async move {
            let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut killed = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
                .fetch_one(&mut admin)
                .await
                .unwrap();
                killed += n;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            killed
        })
    };
    let batches = AtomicUsize::new(0);
    let failed = deliver(&mirror, &events, &batches).await;
    stop.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    assert!(killed > 0, "no connection was killed");
    assert!(
        failed > 0,
        "{killed} connections killed, yet no record failed"
    );
    assert_eq!(rows(&mirror).await, clean(&cluster, &events).await);
    eprintln!(
        "{killed} connections killed; {failed} deliveries failed and were redelivered, in {} batches",
        batches.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_restarted_mid_stream_loses_nothing_and_doubles_nothing_after_redelivery() {
    let cluster = Arc::new(PrivateCluster::start());
    let events = events(6000, 2);
    let mirror = cluster.mirror(config()).await;
    let batches = Arc::new(AtomicUsize::new(0));
    // Restarts (fast shutdown: open transactions are rolled back) after batches 5 and 25,
    // while the next batches are being applied.
    let restarter = {
        let (cluster, batches) = (cluster.clone(), batches.clone());
        std::thread::spawn(move || {
            for at in [5, 25] {
                while batches.load(Ordering::SeqCst) < at {
                    std::thread::sleep(Duration::from_millis(2));
                }
                cluster.restart();
            }
        })
    };
    let failed = deliver(&mirror, &events, &batches).await;
    restarter.join().expect("the server restarted twice");
    assert!(failed > 0, "the restarts failed no record");
    assert_eq!(rows(&mirror).await, clean(&cluster, &events).await);
    eprintln!(
        "2 restarts; {failed} deliveries failed and were redelivered, in {} batches",
        batches.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applying_process_killed_and_run_again_loses_nothing_and_doubles_nothing() {
    let cluster = PrivateCluster::start();
    let events = events(20_000, 3);
    let file = cluster.dir().join("events.jsonl");
    let lines: Vec<String> = events
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let mirror = cluster.mirror(config()).await;
    let apply = || {
        let mut command = std::process::Command::new(workspace_binary("mirrorctl"));
        command
            .arg("apply")
            .arg(&file)
            .env("DATABASE_URL", &mirror.url)
            .env("MIRROR_CHUNK_SIZE", "50")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    };
    // SIGKILL once some rows are committed: mid-stream, mid-chunk most likely.
    let mut child = apply().spawn().unwrap();
    let mut admin = sqlx::PgConnection::connect(&mirror.url).await.unwrap();
    let mut before_kill = 0i64;
    for _ in 0..3000 {
        (before_kill,) = sqlx::query_as("SELECT count(*) FROM dm_messages")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if before_kill > 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "killed mid-stream, not finished: {status}"
    );
    // Everything is delivered again, as SQS would redeliver what was never deleted.
    let again = apply().status().unwrap();
    assert_eq!(again.code(), Some(0), "the second run settles every record");
    let after = rows(&mirror).await;
    let messages = after.rows("dm_messages").len() as i64;
    assert!(
        before_kill > 0 && before_kill < messages,
        "killed after {before_kill} of {messages} message rows"
    );
    assert_eq!(after, clean(&cluster, &events).await);
}
