//! `mirrorctl bench`: applies a reproducible stream ([`crate::workload`]) in batches of the
//! size a function is handed, through the functions' own batch processor, and reports
//! throughput, batch latency and peak memory as one JSON line. Three modes on the same
//! stream, so that one run on one machine gives its own ratios:
//! - `set`: the processor as deployed (set-based chunks of `MIRROR_CHUNK_SIZE`);
//! - `per-event`: the same processor, one transaction per event (the seed design);
//! - `ceiling`: the server writing the same rows by itself in plain SQL — one
//!   `INSERT … SELECT FROM UNNEST … ON CONFLICT DO UPDATE` per table and one insert of
//!   idempotency keys per batch, none of the mirror's rules (PostgreSQL only);
//! - `no-ledger`: `set`, with the rows its applied-key inserts send discarded by a
//!   `BEFORE INSERT` trigger on the scratch copy of `mirror_applied_events` — what the
//!   ledger's writes (its heap, two indexes and their WAL) cost the write path. The statement
//!   is still sent and its arrays still decoded, so the difference is a lower bound; later
//!   copies are then told apart by their rows' versions instead of their keys.
//!
//! Every run writes into a store of its own — a fresh schema on PostgreSQL, a fresh file
//! beside the SQLite database — removed afterwards, so it never touches the mirror's rows
//! and always starts empty.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::batch::{Processor, Record, Route};
use crate::config::{Config, DatabaseUrl};
use crate::store::{PlainRows, Store};
use crate::workload::{self, Spec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Set,
    PerEvent,
    Ceiling,
    NoLedger,
    /// The four in one run (ceiling, set, no-ledger, per-event), then their ratios.
    All,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub events: usize,
    pub batch_size: usize,
    pub mode: Mode,
    pub seed: u64,
    /// `--preload N`: before measuring, the scratch schema gets the workload's conversations
    /// and N earlier messages spread over them, with their applied keys
    /// ([`Store::preload`]), so that a run shows what history costs.
    pub preload: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// Nearest-rank p50, p99 and the maximum of `values` (milliseconds), to 0.01 ms.
    fn of(mut values: Vec<f64>) -> Latency {
        values.sort_by(f64::total_cmp);
        let round = |ms: f64| (ms * 100.0).round() / 100.0;
        let at = |q: f64| {
            values
                .get(((values.len().max(1) - 1) as f64 * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        Latency {
            p50: round(at(0.5)),
            p99: round(at(0.99)),
            max: round(values.last().copied().unwrap_or_default()),
        }
    }
}

/// The JSON line (snake_case, as `events_per_s`).
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub store: &'static str,
    pub events: usize,
    pub batch_size: usize,
    pub chunk_size: usize,
    pub max_connections: u32,
    pub seed: u64,
    /// `--preload`: earlier messages in the store before the first batch, and the seconds
    /// it took to write them (not counted in the figures below).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preloaded_messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preload_seconds: Option<f64>,
    /// Events over the time spent applying batches (generating them is not counted).
    pub events_per_s: f64,
    pub seconds: f64,
    /// Milliseconds to apply one batch.
    pub batch_latency_ms: Latency,
    pub applied: usize,
    pub duplicates: usize,
    pub stale: usize,
    pub rejected: usize,
    pub failed: usize,
    pub peak_rss_kib: Option<u64>,
    /// This process's CPU time (user + system) while applying batches, per event, in
    /// microseconds: the client's own cost, beside the database's.
    pub client_cpu_us_per_event: Option<f64>,
    /// With `MIRROR_REDIS_URL` set: entries added to the users' streams, and commit →
    /// `XADD` acknowledged per entry, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout_latency_ms: Option<Latency>,
}

/// Where a run writes, and how to clean up after it.
enum Scratch {
    Schema { admin: String, name: String },
    File(std::path::PathBuf),
}

fn scratch(url: &str) -> (String, Scratch) {
    let tag = format!("mirror_bench_{}", std::process::id());
    if DatabaseUrl::is_sqlite(url) {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        let file = std::path::Path::new(path).with_file_name(format!("{tag}.db"));
        (format!("sqlite://{}", file.display()), Scratch::File(file))
    } else {
        let separator = if url.contains('?') { '&' } else { '?' };
        (
            format!("{url}{separator}options=-c%20search_path%3D{tag}"),
            Scratch::Schema {
                admin: url.to_string(),
                name: tag,
            },
        )
    }
}

impl Scratch {
    async fn create(&self) -> Result<(), String> {
        if let Scratch::Schema { admin, name } = self {
            let store = admin_store(admin).await?;
            store
                .execute_admin(&format!("CREATE SCHEMA {name}"))
                .await
                .map_err(|e| format!("cannot create the benchmark's schema {name}: {e}"))?;
        }
        Ok(())
    }

    async fn remove(&self) {
        match self {
            Scratch::Schema { admin, name } => {
                if let Ok(store) = admin_store(admin).await {
                    let _ = store
                        .execute_admin(&format!("DROP SCHEMA {name} CASCADE"))
                        .await;
                }
            }
            Scratch::File(file) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut path = file.clone().into_os_string();
                    path.push(suffix);
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

async fn admin_store(url: &str) -> Result<Store, String> {
    let config = Config {
        database_url: DatabaseUrl::new(url),
        max_connections: 1,
        ..Config::default()
    };
    Store::connect(&config)
        .await
        .map_err(|e| format!("cannot reach {}: {e}", config.database_url))
}

/// Each mode of `options` (the four for [`Mode::All`], then a line of ratios), as JSON.
pub async fn run_all(config: Config, options: &Options) -> Result<Vec<Value>, String> {
    if options.mode != Mode::All {
        let report = run(config, options).await?;
        return Ok(vec![
            serde_json::to_value(report).expect("a report serialises")
        ]);
    }
    let mut lines = Vec::new();
    let mut rate = HashMap::new();
    let modes: &[Mode] = if DatabaseUrl::is_sqlite(config.database_url.expose()) {
        &[Mode::Set, Mode::NoLedger, Mode::PerEvent]
    } else {
        &[Mode::Ceiling, Mode::Set, Mode::NoLedger, Mode::PerEvent]
    };
    for &mode in modes {
        let options = Options {
            mode,
            ..options.clone()
        };
        let report = run(config.clone(), &options).await?;
        rate.insert(mode, report.events_per_s);
        lines.push(serde_json::to_value(report).expect("a report serialises"));
    }
    let ratio = |a: Mode, b: Mode| (rate[&a] / rate[&b].max(1e-9) * 100.0).round() / 100.0;
    let mut ratios = serde_json::json!({
        "set_over_no_ledger": ratio(Mode::Set, Mode::NoLedger),
        "set_over_per_event": ratio(Mode::Set, Mode::PerEvent),
    });
    if rate.contains_key(&Mode::Ceiling) {
        ratios["set_over_ceiling"] = ratio(Mode::Set, Mode::Ceiling).into();
    }
    lines.push(ratios);
    Ok(lines)
}

/// Runs the benchmark in one mode against the store `config.database_url` names.
pub async fn run(mut config: Config, options: &Options) -> Result<Report, String> {
    let batch_size = options.batch_size.max(1);
    if options.mode == Mode::PerEvent {
        config.chunk_size = 1;
    }
    let (url, scratch) = scratch(config.database_url.expose());
    if options.mode == Mode::Ceiling && matches!(scratch, Scratch::File(_)) {
        return Err(
            "--mode ceiling measures a PostgreSQL server writing the rows by itself: set DATABASE_URL to postgres://…"
                .into(),
        );
    }
    scratch.create().await?;
    config.database_url = DatabaseUrl::new(url);
    config.migrate_on_start = true;
    let result = measure(config, options, batch_size).await;
    scratch.remove().await;
    result
}

async fn measure(config: Config, options: &Options, batch_size: usize) -> Result<Report, String> {
    let processor = Processor::connect(config.clone())
        .await
        .map_err(|e| format!("cannot open the benchmark's store: {e}"))?;
    if options.mode == Mode::NoLedger {
        processor
            .store()
            .discard_applied_keys()
            .await
            .map_err(|e| format!("cannot switch the scratch ledger off: {e}"))?;
    }
    let spec = Spec::new(options.events, options.seed);
    let mut preload_seconds = None;
    if let Some(messages) = options.preload {
        let started = Instant::now();
        let mut shown =
            |done: i64| eprintln!("mirrorctl bench: preloaded {done} of {messages} messages");
        processor
            .store()
            .preload(messages, spec.conversations, &mut shown)
            .await
            .map_err(|e| format!("cannot preload the benchmark's store: {e}"))?;
        preload_seconds = Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    }
    let mut stream = workload::stream(spec);
    let mut latencies: Vec<Duration> = Vec::new();
    let mut report = Report {
        mode: options.mode,
        store: processor.store().dialect(),
        events: options.events,
        batch_size,
        chunk_size: config.chunk_size,
        max_connections: processor.store().max_connections(),
        seed: options.seed,
        preloaded_messages: options.preload,
        preload_seconds,
        events_per_s: 0.0,
        seconds: 0.0,
        batch_latency_ms: Latency::default(),
        applied: 0,
        duplicates: 0,
        stale: 0,
        rejected: 0,
        failed: 0,
        peak_rss_kib: None,
        client_cpu_us_per_event: None,
        stream_entries: None,
        fanout_latency_ms: None,
    };
    let mut fanout: Vec<f64> = Vec::new();
    let mut index = 0usize;
    let mut cpu = Some(0.0f64);
    loop {
        let bodies: Vec<String> = stream.by_ref().take(batch_size).collect();
        if bodies.is_empty() {
            break;
        }
        let started;
        match options.mode {
            Mode::Set | Mode::PerEvent | Mode::NoLedger => {
                let records: Vec<Record> = bodies
                    .into_iter()
                    .map(|body| {
                        index += 1;
                        Record {
                            message_id: format!("bench-{index}"),
                            body: Some(body),
                            receive_count: None,
                        }
                    })
                    .collect();
                started = Instant::now();
                let cpu_before = crate::telemetry::process_cpu_seconds();
                let outcome = processor.process(records, Route::AllFamilies).await;
                latencies.push(started.elapsed());
                cpu = cpu
                    .zip(crate::telemetry::process_cpu_seconds().zip(cpu_before))
                    .map(|(sum, (after, before))| sum + after - before);
                let counts = outcome.counts();
                report.applied += counts.applied;
                report.duplicates += counts.duplicate;
                report.stale += counts.stale;
                report.rejected += counts.rejected;
                report.failed += counts.failed;
                if let Some(delivery) = outcome.delivery {
                    *report.stream_entries.get_or_insert(0) += delivery.delivered;
                    fanout.extend(delivery.latency_ms);
                }
            }
            Mode::Ceiling | Mode::All => {
                let rows = plain_rows(&bodies);
                started = Instant::now();
                processor
                    .store()
                    .write_plain(&rows)
                    .await
                    .map_err(|e| format!("the ceiling's SQL failed: {e}"))?;
                latencies.push(started.elapsed());
                report.applied += bodies.len();
            }
        }
    }
    let total: Duration = latencies.iter().sum();
    report.seconds = total.as_secs_f64();
    report.events_per_s = options.events as f64 / total.as_secs_f64().max(1e-9);
    let batches: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    report.batch_latency_ms = Latency::of(batches);
    if report.stream_entries.is_some() {
        report.fanout_latency_ms = Some(Latency::of(fanout));
    }
    report.peak_rss_kib = crate::telemetry::peak_rss_kib();
    if matches!(options.mode, Mode::Set | Mode::PerEvent | Mode::NoLedger) {
        report.client_cpu_us_per_event = cpu.map(|s| s * 1e6 / options.events.max(1) as f64);
    }
    Ok(report)
}

/// The rows a batch of the workload writes, by table, one per key (the batch's last event
/// of each key), as plain columns: what the ceiling mode has the server write.
fn plain_rows(bodies: &[String]) -> PlainRows {
    use sha2::Digest;
    let mut rows = PlainRows::default();
    let mut last: HashMap<(String, String), usize> = HashMap::new();
    let events: Vec<(Value, String)> = bodies
        .iter()
        .map(|body| {
            let hash = format!("{:x}", sha2::Sha256::digest(body.as_bytes()));
            (serde_json::from_str(body).unwrap_or(Value::Null), hash)
        })
        .collect();
    for (i, (event, _)) in events.iter().enumerate() {
        let p = &event["payload"];
        let text = |k: &str| p[k].as_str().unwrap_or_default().to_string();
        let key = match event["eventType"].as_str().unwrap_or_default() {
            t if t.starts_with("dm.message") => (
                "m".into(),
                format!("{}/{}", text("conversationId"), text("messageId")),
            ),
            t if t.starts_with("dm.conversation") => ("c".into(), text("conversationId")),
            _ => (
                "f".into(),
                format!("{}/{}", text("userId"), text("targetId")),
            ),
        };
        rows.keys[0].push(events[i].1.clone());
        rows.keys[1].push(event["eventType"].as_str().unwrap_or_default().to_string());
        rows.keys[2].push(key.1.clone());
        last.insert(key, i);
    }
    let mut chosen: Vec<(&(String, String), &usize)> = last.iter().collect();
    chosen.sort_by_key(|(key, _)| (*key).clone());
    for ((table, _), &i) in chosen {
        let (event, hash) = &events[i];
        let p = &event["payload"];
        let opt = |k: &str| p[k].as_str().map(str::to_string);
        let deleted = event["eventType"]
            .as_str()
            .is_some_and(|t| t.ends_with(".deleted"))
            .then(|| opt("updatedAt").or_else(|| event["occurredAt"].as_str().map(str::to_string)))
            .flatten()
            .or_else(|| opt("deletedAt"));
        let version = opt("updatedAt").or_else(|| event["occurredAt"].as_str().map(str::to_string));
        let live = |v: Option<String>| if deleted.is_some() { None } else { v };
        let columns: Vec<Option<String>> = match table.as_str() {
            "m" => vec![
                opt("conversationId"),
                opt("messageId"),
                live(opt("authorId")),
                live(opt("body")),
                live(opt("createdAt")),
                version,
                deleted,
                Some(hash.clone()),
            ],
            "c" => {
                let participant = |n: usize| p["participantIds"][n].as_str().map(str::to_string);
                vec![
                    opt("conversationId"),
                    opt("ownerId"),
                    participant(0),
                    participant(1),
                    opt("createdAt"),
                    version,
                    Some(hash.clone()),
                ]
            }
            _ => vec![
                opt("userId"),
                opt("targetId"),
                live(opt("edgeType")),
                live(opt("createdAt")),
                version,
                deleted,
                Some(hash.clone()),
            ],
        };
        let target: &mut [Vec<Option<String>>] = match table.as_str() {
            "m" => &mut rows.messages,
            "c" => &mut rows.conversations,
            _ => &mut rows.follows,
        };
        for (column, value) in target.iter_mut().zip(columns) {
            column.push(value);
        }
    }
    rows
}
