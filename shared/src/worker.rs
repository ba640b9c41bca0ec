//! Worker mode: a function binary outside Lambda long-polls its SQS queue and runs the very
//! same batch processor on what it receives. This is also how the bundle runs as a container.
//!
//! Each receive (up to 10 messages, 20 s long poll) is one batch: what was applied, was a
//! duplicate or stale, or was dead-lettered is deleted in one batch call; failures are left
//! to the queue's visibility timeout (and, after its redrive count, to its dead-letter queue).
//! On shutdown it stops receiving, finishes and acknowledges the batch in hand, and returns.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use serde::{Deserialize, Serialize};

use crate::batch::{Processor, Route};
use crate::event::Family;
use crate::metrics::Latencies;
use crate::queue::{describe, DeadLetterQueue, Received, SQS_BATCH};
use crate::timestamp::Timestamp;

#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub family: Family,
    pub queue_url: String,
    /// Long-poll wait, seconds (SQS allows 0 to 20).
    pub wait_seconds: i32,
    /// How often the latency percentiles are logged.
    pub report_every: Duration,
    pub dead_letters: Option<DeadLetterQueue>,
}

impl WorkerSettings {
    pub fn new(family: Family, queue_url: impl Into<String>) -> Self {
        WorkerSettings {
            family,
            queue_url: queue_url.into(),
            wait_seconds: 20,
            report_every: Duration::from_secs(60),
            dead_letters: None,
        }
    }
}

/// What a worker did over its life: printed as one JSON line when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTotals {
    pub received: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub rejected: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub acknowledged: u64,
    /// Chunks retried after a write conflict.
    pub conflict_retries: u64,
}

pub async fn run(
    processor: &Processor,
    client: &Client,
    settings: &WorkerSettings,
    shutdown: impl Future<Output = ()>,
) -> WorkerTotals {
    tokio::pin!(shutdown);
    let mut totals = WorkerTotals::default();
    let mut latencies = Latencies::default();
    let mut window = Instant::now();
    tracing::info!(queue = %settings.queue_url, function = settings.family.function_name(), "worker receiving");
    loop {
        let receive = client
            .receive_message()
            .queue_url(&settings.queue_url)
            .max_number_of_messages(SQS_BATCH as i32)
            .wait_time_seconds(settings.wait_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send();
        // Shutdown interrupts only the wait for messages, never a batch in hand.
        let response = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            response = receive => response,
        };
        match response {
            Ok(response) => {
                let received: Vec<Received> = response
                    .messages()
                    .iter()
                    .cloned()
                    .filter_map(Received::from_message)
                    .collect();
                if !received.is_empty() {
                    handle_batch(
                        processor,
                        client,
                        settings,
                        received,
                        &mut totals,
                        &mut latencies,
                    )
                    .await;
                }
            }
            Err(error) => {
                tracing::warn!(queue = %settings.queue_url, error = %describe(&error), "receive failed; retrying in 1 s");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        if window.elapsed() >= settings.report_every {
            report(&mut latencies);
            window = Instant::now();
        }
    }
    report(&mut latencies);
    tracing::info!(?totals, "worker stopped");
    totals
}

fn report(latencies: &mut Latencies) {
    latencies.log();
    latencies.clear();
}

async fn handle_batch(
    processor: &Processor,
    client: &Client,
    settings: &WorkerSettings,
    received: Vec<Received>,
    totals: &mut WorkerTotals,
    latencies: &mut Latencies,
) {
    let records = received.iter().map(|r| r.record.clone()).collect();
    let outcome = processor
        .process(records, Route::Only(settings.family))
        .await;
    let committed_at = Timestamp::now();
    let sent_at: HashMap<String, i64> = received
        .iter()
        .filter_map(|r| Some((r.record.message_id.clone(), r.sent_at_millis?)))
        .collect();
    latencies.record(&outcome, &sent_at, committed_at);

    let dead_lettered: HashSet<String> = match &settings.dead_letters {
        Some(dlq) if outcome.has_rejections() => {
            let bodies = received
                .iter()
                .map(|r| (r.record.message_id.clone(), r.record.body.clone()))
                .collect();
            dlq.send_rejections(&outcome, &bodies)
                .await
                .into_iter()
                .collect()
        }
        _ => HashSet::new(),
    };
    let acknowledge: Vec<&Received> = (received.iter().zip(&outcome.records))
        .filter(|(_, got)| !got.stays_on_queue(&dead_lettered))
        .map(|(r, _)| r)
        .collect();
    let counts = outcome.counts();
    totals.received += received.len() as u64;
    totals.applied += counts.applied as u64;
    totals.duplicates += counts.duplicate as u64;
    totals.stale += counts.stale as u64;
    totals.rejected += counts.rejected as u64;
    totals.failed += counts.failed as u64;
    totals.conflict_retries += outcome.conflict_retries as u64;
    totals.dead_lettered += dead_lettered.len() as u64;
    totals.acknowledged += delete(client, &settings.queue_url, &acknowledge).await;
}

/// Deletes in batch calls; returns how many were deleted. A message that could not be
/// deleted comes back after its visibility timeout and is then a duplicate.
pub async fn delete(client: &Client, queue_url: &str, messages: &[&Received]) -> u64 {
    let mut deleted = 0;
    for batch in messages.chunks(SQS_BATCH) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = batch
            .iter()
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&m.receipt_handle)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        match client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(response) => {
                deleted += response.successful().len() as u64;
                for failed in response.failed() {
                    tracing::warn!(
                        queue = queue_url,
                        code = failed.code(),
                        "a message could not be deleted; it will be redelivered as a duplicate"
                    );
                }
            }
            Err(error) => tracing::warn!(queue = queue_url, error = %describe(&error),
                "messages could not be deleted; they will be redelivered as duplicates"),
        }
    }
    deleted
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutdown requested: finishing the batch in hand");
}
