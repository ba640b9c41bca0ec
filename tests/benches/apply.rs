//! Throughput and per-batch latency of applying events, on both stores, for the batch sizes
//! the functions see, against the per-event design (one transaction per event).
//!
//! `cargo bench -p mirror-tests --bench apply` measures and prints a Markdown table (the
//! numbers in BENCHMARKS.md); under `cargo test` it runs a tiny version as a smoke test.

use std::time::{Duration, Instant};

use mirror_tests::realtime_mirror::config::Config;
use mirror_tests::Mirror;
use serde_json::{json, Value};

/// Messages spread over conversations of two participants, as a DM queue carries them.
fn events(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let conversation = format!("c{}", i % 500);
            let at = chrono::DateTime::from_timestamp(1_759_926_840 + i as i64, 0).unwrap().to_rfc3339();
            json!({"eventType": "dm.message.created", "occurredAt": at,
                   "payload": {"conversationId": conversation, "messageId": format!("m{i}"),
                               "authorId": format!("u{}", i % 7), "body": format!("message number {i}"),
                               "createdAt": at}})
        })
        .collect()
}

struct Run {
    events_per_second: f64,
    p50: Duration,
    p95: Duration,
}

async fn run(mirror: &Mirror, events: &[Value], batch: usize) -> Run {
    let mut latencies = Vec::new();
    let start = Instant::now();
    for chunk in events.chunks(batch) {
        let t = Instant::now();
        let summary = mirror.apply(chunk).await.summary();
        assert_eq!(summary.applied, chunk.len(), "{summary:?}");
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Run {
        events_per_second: events.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p95: at(0.95),
    }
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let n = if measuring { 20_000 } else { 200 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("| store | design | batch | events | events/s | batch p50 | batch p95 |");
        println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        for store in ["postgres", "sqlite"] {
            // (design, records per batch, events per transaction)
            let designs = [
                ("per-event transactions", 10, 1),
                ("set-based", 10, 500),
                ("set-based", 100, 500),
                ("set-based", 1000, 500),
            ];
            for (design, batch, chunk) in designs {
                let config = Config {
                    chunk_size: chunk,
                    max_connections: 2,
                    ..Config::default()
                };
                let mirror = match store {
                    "postgres" => Mirror::postgres_with(config).await,
                    _ => Mirror::sqlite_with(config).await,
                };
                // The per-event design is measured on a tenth of the events: it is that slow.
                let count = if chunk == 1 { n / 10 } else { n };
                let r = run(&mirror, &events(count), batch).await;
                println!(
                    "| {store} | {design} | {batch} | {count} | {:.0} | {:.1} ms | {:.1} ms |",
                    r.events_per_second,
                    r.p50.as_secs_f64() * 1e3,
                    r.p95.as_secs_f64() * 1e3
                );
            }
        }
    });
}
