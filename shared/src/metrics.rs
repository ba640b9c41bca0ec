//! CloudWatch metrics as Embedded Metric Format (EMF) documents on stdout: one per
//! invocation, namespace `RealtimeMirror` (or `MIRROR_METRICS_NAMESPACE`), dimensions
//! function and event family. CloudWatch
//! Logs turns them into metrics; latencies go as lists of values so that CloudWatch computes
//! the percentiles the alarms use.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use std::collections::HashMap;
use std::io::Write;

use serde_json::{json, Map, Value};

use crate::batch::{BatchOutcome, Outcome};
use crate::event::Family;
use crate::timestamp::Timestamp;

pub use crate::config::NAMESPACE;
/// EMF allows at most 100 values per metric in one document.
pub const MAX_VALUES: usize = 100;

/// Enqueue (`SentTimestamp`) → commit, in milliseconds, for every applied record whose
/// sent time is known.
pub fn enqueue_to_commit_ms(
    outcome: &BatchOutcome,
    sent_at_millis: &HashMap<String, i64>,
    committed_at: Timestamp,
) -> Vec<f64> {
    let committed = committed_at.as_datetime().timestamp_millis();
    outcome
        .records
        .iter()
        .filter(|r| r.outcome == Outcome::Applied)
        .filter_map(|r| sent_at_millis.get(&r.message_id))
        .map(|sent| committed.saturating_sub(*sent).max(0) as f64)
        .collect()
}

/// What one invocation measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InvocationMetrics {
    /// The CloudWatch namespace ([`NAMESPACE`] unless configured).
    pub namespace: String,
    pub function: String,
    pub event_family: String,
    /// Enqueue (`SentTimestamp`) → commit, per applied record.
    pub sql_mirror_latency_ms: Vec<f64>,
    /// `occurredAt` → commit, per applied record.
    pub source_to_commit_ms: Vec<f64>,
    pub applied: usize,
    pub duplicate: usize,
    pub stale: usize,
    pub rejected: usize,
    pub failed: usize,
    /// Chunks retried after a write conflict.
    pub conflict_retries: usize,
    pub batch_size: usize,
    pub cold_start: bool,
    /// Realtime delivery, when the outbox was drained in this invocation: entries added,
    /// commit → `XADD` per entry, and the backlog left (rows, oldest's age), alarmed on.
    pub stream: Option<StreamMetrics>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamMetrics {
    pub entries: u64,
    pub fanout_latency_ms: Vec<f64>,
    pub outbox_backlog: u64,
    pub outbox_backlog_age_ms: u64,
}

impl From<&crate::streams::Delivery> for StreamMetrics {
    fn from(d: &crate::streams::Delivery) -> Self {
        StreamMetrics {
            entries: d.delivered,
            fanout_latency_ms: d.latency_ms.clone(),
            outbox_backlog: d.backlog,
            outbox_backlog_age_ms: d.backlog_age_ms,
        }
    }
}

impl StreamMetrics {
    /// Entries added, and the backlog left: rows and the oldest one's age in seconds.
    fn counts(&self) -> [(&'static str, &'static str, Value); 3] {
        [
            ("stream_entries", "Count", json!(self.entries)),
            ("outbox_backlog", "Count", json!(self.outbox_backlog)),
            (
                "outbox_backlog_age_s",
                "Seconds",
                json!(self.outbox_backlog_age_ms as f64 / 1000.0),
            ),
        ]
    }
}

/// The outbox sweep's EMF documents (`Function=mirror-check`): the counts in the first,
/// commit → `XADD` latencies [`MAX_VALUES`] to a document.
pub fn sweep_documents(
    delivery: &crate::streams::Delivery,
    namespace: &str,
    timestamp_millis: i64,
) -> Vec<Value> {
    let stream = StreamMetrics::from(delivery);
    let latencies: Vec<&[f64]> = stream.fanout_latency_ms.chunks(MAX_VALUES).collect();
    (0..latencies.len().max(1))
        .map(|i| {
            let mut metrics: Vec<(&str, &str, Value)> = Vec::new();
            if let Some(values) = latencies.get(i) {
                metrics.push(("fanout_latency_ms", "Milliseconds", json!(values)));
            }
            if i == 0 {
                metrics.extend(stream.counts());
            }
            emf(
                namespace,
                timestamp_millis,
                &[("Function", crate::config::MIRROR_CHECK_FUNCTION)],
                metrics,
            )
        })
        .collect()
}

impl InvocationMetrics {
    pub fn measure(
        namespace: &str,
        family: Family,
        outcome: &BatchOutcome,
        sent_at_millis: &HashMap<String, i64>,
        committed_at: Timestamp,
        cold_start: bool,
    ) -> Self {
        let committed = committed_at.as_datetime();
        let counts = outcome.counts();
        let mut m = InvocationMetrics {
            namespace: namespace.to_string(),
            function: family.function_name().to_string(),
            event_family: family.type_prefix().to_string(),
            batch_size: outcome.records.len(),
            cold_start,
            conflict_retries: outcome.conflict_retries,
            applied: counts.applied,
            duplicate: counts.duplicate,
            stale: counts.stale,
            rejected: counts.rejected,
            failed: counts.failed,
            ..InvocationMetrics::default()
        };
        m.sql_mirror_latency_ms = enqueue_to_commit_ms(outcome, sent_at_millis, committed_at);
        m.stream = outcome.delivery.as_ref().map(StreamMetrics::from);
        for r in &outcome.records {
            if let (Outcome::Applied, Some(at)) = (&r.outcome, r.occurred_at) {
                let micros = (committed - at.as_datetime())
                    .num_microseconds()
                    .unwrap_or(i64::MAX);
                m.source_to_commit_ms.push(micros.max(0) as f64 / 1000.0);
            }
        }
        m
    }

    /// The EMF documents: one, unless a latency list holds more than [`MAX_VALUES`] values,
    /// in which case the rest follow in further documents carrying only the latencies.
    pub fn documents(&self, timestamp_millis: i64) -> Vec<Value> {
        let latency_chunks = |values: &[f64]| -> Vec<Vec<f64>> {
            values.chunks(MAX_VALUES).map(<[f64]>::to_vec).collect()
        };
        let sql = latency_chunks(&self.sql_mirror_latency_ms);
        let source = latency_chunks(&self.source_to_commit_ms);
        let fanout = latency_chunks(self.stream.as_ref().map_or(&[], |s| &s.fanout_latency_ms));
        let documents = sql.len().max(source.len()).max(fanout.len()).max(1);
        (0..documents)
            .map(|i| {
                let mut metrics: Vec<(&str, &str, Value)> = Vec::new();
                if let Some(values) = sql.get(i) {
                    metrics.push(("sql_mirror_latency_ms", "Milliseconds", json!(values)));
                }
                if let Some(values) = source.get(i) {
                    metrics.push(("source_to_commit_ms", "Milliseconds", json!(values)));
                }
                if let Some(values) = fanout.get(i) {
                    metrics.push(("fanout_latency_ms", "Milliseconds", json!(values)));
                }
                if let (0, Some(stream)) = (i, &self.stream) {
                    metrics.extend(stream.counts());
                }
                if i == 0 {
                    for (name, value) in [
                        ("applied", self.applied),
                        ("duplicate", self.duplicate),
                        ("stale", self.stale),
                        ("rejected", self.rejected),
                        ("failed", self.failed),
                        ("conflict_retries", self.conflict_retries),
                        ("batch_size", self.batch_size),
                        ("cold_start", self.cold_start as usize),
                    ] {
                        metrics.push((name, "Count", json!(value)));
                    }
                }
                emf(
                    &self.namespace,
                    timestamp_millis,
                    &[
                        ("Function", self.function.as_str()),
                        ("EventFamily", self.event_family.as_str()),
                    ],
                    metrics,
                )
            })
            .collect()
    }

    /// Writes the documents, one JSON line each.
    pub fn write(&self, timestamp_millis: i64, out: &mut impl Write) -> std::io::Result<()> {
        for document in self.documents(timestamp_millis) {
            writeln!(out, "{document}")?;
        }
        out.flush()
    }
}

/// The scheduled self-check's EMF document: one count per name (each kind of inconsistency,
/// their sum `inconsistent`, alarmed on, the repairable part, the conversations looked at,
/// the applied keys pruned), all under `Function=mirror-check`.
pub fn check_document(counts: &[(&str, u64)], namespace: &str, timestamp_millis: i64) -> Value {
    emf(
        namespace,
        timestamp_millis,
        &[("Function", crate::config::MIRROR_CHECK_FUNCTION)],
        counts
            .iter()
            .map(|(name, value)| (*name, "Count", json!(value)))
            .collect(),
    )
}

/// One EMF document: `metrics` (name, unit, value) under one set of `dimensions`.
fn emf(
    namespace: &str,
    timestamp_millis: i64,
    dimensions: &[(&str, &str)],
    metrics: Vec<(&str, &str, Value)>,
) -> Value {
    let mut document = Map::new();
    document.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_millis,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions.iter().map(|(name, _)| *name).collect::<Vec<_>>()],
                "Metrics": metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (name, value) in dimensions {
        document.insert(name.to_string(), json!(value));
    }
    for (name, _, value) in metrics {
        document.insert(name.into(), value);
    }
    Value::Object(document)
}

/// Enqueue → commit latencies, in milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    values: Vec<u64>,
}

impl Latencies {
    /// Adds `committed_at − sent_at` for every applied record.
    pub fn record(
        &mut self,
        outcome: &BatchOutcome,
        sent_at: &HashMap<String, i64>,
        committed_at: Timestamp,
    ) {
        let values = enqueue_to_commit_ms(outcome, sent_at, committed_at);
        self.values.extend(values.into_iter().map(|ms| ms as u64));
    }

    pub fn values(&self) -> &[u64] {
        &self.values
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// (p50, p95, max), nearest-rank.
    pub fn summary(&self) -> Option<(u64, u64, u64)> {
        if self.values.is_empty() {
            return None;
        }
        let mut sorted = self.values.clone();
        sorted.sort_unstable();
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Some((rank(0.50), rank(0.95), *sorted.last().expect("not empty")))
    }

    pub fn clear(&mut self) {
        self.values.clear();
    }

    /// Logs `sql_mirror_latency_ms` p50 / p95 / max, when there is anything to log.
    pub fn log(&self) {
        if let Some((p50, p95, max)) = self.summary() {
            tracing::info!(
                count = self.values.len(),
                p50_ms = p50,
                p95_ms = p95,
                max_ms = max,
                "sql_mirror_latency_ms (enqueue to commit)"
            );
        }
    }
}
