//! The batch processor: queue records in, one outcome per record out. Parsing is per
//! record, so a malformed body fails alone; writing is per chunk, set-based, with at most
//! `MIRROR_MAX_CONNECTIONS` chunks in flight.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tracing::Instrument;

use crate::config::Config;
use crate::event::{Event, Family, Limits};
use crate::rejection::Rejection;
use crate::store::{Pending, Store, StoreError, Written};
use crate::streams::Fanout;
use crate::timestamp::Timestamp;

/// One queue record: an SQS message, or an envelope read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub message_id: String,
    pub body: Option<String>,
    /// SQS `ApproximateReceiveCount`, when the record came from a queue.
    pub receive_count: Option<u32>,
}

impl Record {
    /// An SQS message as a record; one without a message id is called `unnamed`.
    pub fn from_sqs(message: aws_lambda_events::event::sqs::SqsMessage, unnamed: String) -> Record {
        Record {
            message_id: message.message_id.unwrap_or(unnamed),
            receive_count: message
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok()),
            body: message.body,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Stale,
    /// Final: never retried (docs/contract.md §3.9).
    Rejected(Rejection),
    /// Transient: the record should be delivered again.
    Failed(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RecordOutcome {
    pub message_id: String,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub entity_id: Option<String>,
    pub occurred_at: Option<Timestamp>,
    pub outcome: Outcome,
}

impl RecordOutcome {
    /// The one rule for what a queue keeps, behind "never dropped", used by every consumer of
    /// a queue (the Lambda handler's batch item failures, the worker's deletes). A failure
    /// stays, to be delivered again. A rejection stays unless it already reached the
    /// dead-letter queue (`dead_lettered`); kept, the queue's redrive policy moves it there
    /// after `maxReceiveCount` receives. Everything else took effect, or already had, and is
    /// acknowledged.
    pub fn stays_on_queue(&self, dead_lettered: &HashSet<String>) -> bool {
        match &self.outcome {
            Outcome::Failed(_) => true,
            Outcome::Rejected(_) => !dead_lettered.contains(&self.message_id),
            Outcome::Applied | Outcome::Duplicate | Outcome::Stale => false,
        }
    }

    /// One line of `--details`: the record, how it ended and why, as JSON.
    pub fn details(&self) -> serde_json::Value {
        let (outcome, kind, reason) = match &self.outcome {
            Outcome::Applied => ("applied", None, None),
            Outcome::Duplicate => ("duplicate", None, None),
            Outcome::Stale => ("stale", None, None),
            Outcome::Rejected(why) => ("rejected", Some(why.kind()), Some(why.to_string())),
            Outcome::Failed(why) => ("failed", None, Some(why.clone())),
        };
        let mut line = serde_json::json!({ "messageId": self.message_id, "outcome": outcome });
        let fields = [
            ("kind", kind.map(str::to_string)),
            ("reason", reason),
            ("eventId", self.event_id.clone()),
            ("eventType", self.event_type.clone()),
            ("entityId", self.entity_id.clone()),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                line[name] = value.into();
            }
        }
        line
    }

    pub fn new(message_id: impl Into<String>, outcome: Outcome) -> Self {
        RecordOutcome {
            message_id: message_id.into(),
            event_id: None,
            event_type: None,
            entity_id: None,
            occurred_at: None,
            outcome,
        }
    }
}

/// Which families a processor accepts: a function takes its own only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Only(Family),
    AllFamilies,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchOutcome {
    pub records: Vec<RecordOutcome>,
    /// Chunks retried at once after a write conflict (deadlock, serialization failure, a
    /// lock not obtained). Locks are taken in one total order, so on PostgreSQL this stays 0;
    /// it is reported so that any regression shows.
    pub conflict_retries: usize,
    /// What was delivered to the users' Redis Streams after the commit (when
    /// `MIRROR_REDIS_URL` is set and the outbox was drained).
    pub delivery: Option<crate::streams::Delivery>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "messageId")]
    pub message_id: String,
    pub reason: String,
}

/// The JSON summary `mirrorctl apply` prints (docs/contract.md §6), of bounded size
/// whatever the input: every record is counted, and the lists name the first few records
/// of each reason (see [`Summary::add`]); `--details FILE` has every record's outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub applied: usize,
    pub duplicates: usize,
    pub stale: usize,
    pub rejected: usize,
    pub failed: usize,
    /// Chunks retried after a write conflict (see [`BatchOutcome::conflict_retries`]).
    pub retries: usize,
    /// At most [`LISTED_PER_REASON`] per kind of rejection, [`LISTED_MAX`] in all.
    pub rejections: Vec<Problem>,
    /// At most [`LISTED_PER_REASON`] per reason, [`LISTED_MAX`] in all.
    pub failures: Vec<Problem>,
    /// Every rejection counted by its kind (`not JSON`, `invalid field`, …).
    pub rejections_by_kind: BTreeMap<String, usize>,
    /// Every failure counted by its reason; past [`REASONS_MAX`] distinct reasons, the rest
    /// are counted under [`OTHER_REASONS`].
    pub failures_by_reason: BTreeMap<String, usize>,
    /// Rejections and failures counted but not in the lists above.
    pub not_listed: NotListed,
    /// Directory entries that were not read (hidden files, subdirectories, FIFOs, devices):
    /// not records, so they change no count and no exit code, but none passes unseen.
    pub skipped: Vec<crate::inputs::Skipped>,
    /// Where every record's outcome was written (`--details`), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Realtime delivery (with `MIRROR_REDIS_URL`): entries added to the users' streams, and
    /// the outbox's backlog and last error after the last drain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<crate::streams::DeliveryTotal>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotListed {
    pub rejections: usize,
    pub failures: usize,
}

/// How many records of one reason a summary lists by name.
pub const LISTED_PER_REASON: usize = 5;
/// How many records a summary's list of rejections (or failures) names in all.
pub const LISTED_MAX: usize = 100;
/// How many distinct failure reasons a summary counts apart.
pub const REASONS_MAX: usize = 50;
pub const OTHER_REASONS: &str = "(other reasons)";

/// The operator's exit codes (docs/contract.md §6): 0 when nothing was rejected or
/// failed, 2 when something was rejected and nothing failed, 1 when anything failed.
pub fn exit_code(rejected: usize, failed: usize) -> i32 {
    if failed > 0 {
        1
    } else if rejected > 0 {
        2
    } else {
        0
    }
}

impl Summary {
    pub fn exit_code(&self) -> i32 {
        exit_code(self.rejected, self.failed)
    }

    /// Counts one record's outcome and lists it when its reason has fewer than
    /// [`LISTED_PER_REASON`] listed and the list fewer than [`LISTED_MAX`]: memory and output
    /// stay bounded however many records there are.
    pub fn add(&mut self, r: &RecordOutcome) {
        match &r.outcome {
            Outcome::Applied => self.applied += 1,
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Stale => self.stale += 1,
            Outcome::Rejected(why) => {
                self.rejected += 1;
                let seen = self
                    .rejections_by_kind
                    .entry(why.kind().to_string())
                    .or_default();
                *seen += 1;
                list(
                    &mut self.rejections,
                    &mut self.not_listed.rejections,
                    *seen,
                    r,
                    || why.to_string(),
                );
            }
            Outcome::Failed(why) => {
                self.failed += 1;
                let key = if self.failures_by_reason.len() < REASONS_MAX
                    || self.failures_by_reason.contains_key(why)
                {
                    why.as_str()
                } else {
                    OTHER_REASONS
                };
                let seen = self.failures_by_reason.entry(key.to_string()).or_default();
                *seen += 1;
                list(
                    &mut self.failures,
                    &mut self.not_listed.failures,
                    *seen,
                    r,
                    || why.clone(),
                );
            }
        }
    }
}

fn list(
    listed: &mut Vec<Problem>,
    not_listed: &mut usize,
    nth_of_reason: usize,
    r: &RecordOutcome,
    reason: impl FnOnce() -> String,
) {
    if nth_of_reason <= LISTED_PER_REASON && listed.len() < LISTED_MAX {
        listed.push(Problem {
            message_id: r.message_id.clone(),
            reason: reason(),
        });
    } else {
        *not_listed += 1;
    }
}

/// How many records of a batch ended each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub applied: usize,
    pub duplicate: usize,
    pub stale: usize,
    pub rejected: usize,
    pub failed: usize,
}

impl BatchOutcome {
    /// The outcomes counted by kind: the one count behind the summary, the metrics and the
    /// worker's totals.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for r in &self.records {
            match &r.outcome {
                Outcome::Applied => counts.applied += 1,
                Outcome::Duplicate => counts.duplicate += 1,
                Outcome::Stale => counts.stale += 1,
                Outcome::Rejected(_) => counts.rejected += 1,
                Outcome::Failed(_) => counts.failed += 1,
            }
        }
        counts
    }

    pub fn has_rejections(&self) -> bool {
        self.records
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Rejected(_)))
    }

    pub fn summary(&self) -> Summary {
        let mut summary = Summary {
            retries: self.conflict_retries,
            ..Summary::default()
        };
        for r in &self.records {
            summary.add(r);
        }
        summary
    }

    pub fn extend(&mut self, other: BatchOutcome) {
        self.records.extend(other.records);
        self.conflict_retries += other.conflict_retries;
    }
}

/// A chunk of one family's events and the positions of their records in the batch.
struct Chunk {
    positions: Vec<usize>,
    events: Vec<Pending>,
}

/// Applies batches to a store; built once per process and shared by every invocation.
#[derive(Clone, Debug)]
pub struct Processor {
    store: Store,
    config: Config,
    /// Realtime delivery, when `MIRROR_REDIS_URL` is set.
    fanout: Option<Arc<Fanout>>,
    /// Whether the changes this processor applies are announced (not for backfill).
    announce: bool,
}

pub const DEADLINE_REASON: &str =
    "not committed before the invocation's deadline (less MIRROR_DEADLINE_MARGIN); redelivered";

/// How often a chunk is retried at once after a deadlock or serialization failure.
const CONFLICT_ATTEMPTS: u32 = 3;

impl Processor {
    /// A processor that announces nothing.
    pub fn new(store: Store, config: Config) -> Self {
        Processor {
            store,
            config,
            fanout: None,
            announce: false,
        }
    }

    /// Connects (once per process) and, unless `MIRROR_MIGRATE=false`, migrates. With
    /// `MIRROR_REDIS_URL`, the changes it applies are announced ([`crate::streams`]).
    pub async fn connect(config: Config) -> Result<Self, StoreError> {
        let store = Store::connect(&config).await?;
        if config.migrate_on_start {
            store.migrate().await?;
        }
        let fanout = match &config.streams {
            None => None,
            Some(settings) => Some(Arc::new(
                Fanout::new(settings.clone())
                    .await
                    .map_err(StoreError::Unavailable)?,
            )),
        };
        tracing::info!(
            database = %config.database_secret_arn.as_deref().map(|arn| format!("secret {arn}")).unwrap_or_else(|| config.database_url.to_string()),
            dialect = store.dialect(),
            max_connections = store.max_connections(),
            realtime = %config.streams.as_ref().map_or("off".to_string(), |s| s.shown()),
            "store ready"
        );
        Ok(Processor {
            announce: fanout.is_some(),
            fanout,
            ..Processor::new(store, config)
        })
    }

    /// The same processor, announcing nothing: for `backfill`, which must not wake every
    /// device for old messages.
    pub fn quiet(mut self) -> Self {
        self.announce = false;
        self
    }

    pub fn fanout(&self) -> Option<&Fanout> {
        self.fanout.as_deref()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// When to give up chunks, for an invocation whose deadline is `deadline_ms`
    /// (milliseconds since the epoch, as Lambda gives it): that, less
    /// `MIRROR_DEADLINE_MARGIN` for dead-lettering, metrics and the response. None when there
    /// is no usable deadline: 0 (no Lambda context), or one that is not in the future when the
    /// invocation starts, which Lambda never sends (cargo-lambda's local emulator sends its
    /// timeout, 600000, instead of a time).
    pub fn deadline(&self, deadline_ms: u64) -> Option<tokio::time::Instant> {
        let now_ms = u64::try_from(Timestamp::now().as_datetime().timestamp_millis()).unwrap_or(0);
        if deadline_ms == 0 {
            return None;
        }
        if deadline_ms <= now_ms {
            tracing::warn!(
                deadline_ms,
                now_ms,
                "the invocation's deadline is not in the future; it is ignored"
            );
            return None;
        }
        let left = std::time::Duration::from_millis(deadline_ms - now_ms)
            .saturating_sub(self.config.deadline_margin);
        tracing::debug!(
            deadline_ms,
            now_ms,
            left_ms = left.as_millis() as u64,
            "invocation deadline"
        );
        Some(tokio::time::Instant::now() + left)
    }

    pub async fn process(&self, records: Vec<Record>, route: Route) -> BatchOutcome {
        self.process_until(records, route, None).await
    }

    /// As [`Processor::process`], but a chunk not committed by `deadline` is given up: its
    /// records are failures (redelivered by the queue), so that a slow or blocked database
    /// never times out a whole invocation and the chunks that did commit are acknowledged.
    /// A chunk given up while committing may have committed; its redelivery is then a
    /// duplicate, which changes nothing.
    pub async fn process_until(
        &self,
        records: Vec<Record>,
        route: Route,
        deadline: Option<tokio::time::Instant>,
    ) -> BatchOutcome {
        let limits = Limits {
            now: Timestamp::now(),
            max_future_skew: self.config.max_future_skew,
        };
        let mut outcomes: Vec<RecordOutcome> = Vec::with_capacity(records.len());
        let mut accepted: Vec<(usize, Pending)> = Vec::new();
        for (position, record) in records.into_iter().enumerate() {
            let parsed = match &record.body {
                None => Err(Rejection::Empty),
                Some(body) => Event::parse(body, limits),
            };
            let mut outcome = RecordOutcome::new(record.message_id, Outcome::Applied);
            match parsed {
                Err(rejection) => outcome.outcome = Outcome::Rejected(rejection),
                Ok(event) => {
                    outcome.event_id = Some(event.event_id.clone());
                    outcome.event_type = Some(event.event_type.to_string());
                    outcome.entity_id = Some(event.key.entity_id());
                    outcome.occurred_at = event.occurred_at;
                    match route {
                        Route::Only(family) if event.family() != family => {
                            outcome.outcome = Outcome::Rejected(Rejection::Misrouted(format!(
                                "{} events belong to the {} function, not {}",
                                event.event_type,
                                event.family().function_name(),
                                family.function_name()
                            )));
                        }
                        _ => {
                            // retry_count is the receive count − 1; from a file, the
                            // envelope's attempt stands in for it.
                            let receives = record.receive_count.or(event.attempt).unwrap_or(1);
                            let retry_count =
                                receives.saturating_sub(1).min(i32::MAX as u32) as i32;
                            accepted.push((position, Pending { event, retry_count }));
                        }
                    }
                }
            }
            outcomes.push(outcome);
        }

        let mut chunks = Vec::new();
        for family in Family::ALL {
            let mut chunk = Chunk {
                positions: Vec::new(),
                events: Vec::new(),
            };
            for (position, pending) in accepted.iter().filter(|(_, p)| p.event.family() == family) {
                chunk.positions.push(*position);
                chunk.events.push(pending.clone());
                if chunk.events.len() == self.config.chunk_size {
                    chunks.push(std::mem::replace(
                        &mut chunk,
                        Chunk {
                            positions: Vec::new(),
                            events: Vec::new(),
                        },
                    ));
                }
            }
            if !chunk.events.is_empty() {
                chunks.push(chunk);
            }
        }
        let in_flight = self.store.max_connections().max(1) as usize;
        let results: Vec<(Vec<(usize, Outcome)>, usize)> = stream::iter(chunks)
            .map(|chunk| self.apply_chunk_until(chunk, deadline))
            .buffer_unordered(in_flight)
            .collect()
            .await;
        let mut conflict_retries = 0;
        for (written, retries) in results {
            conflict_retries += retries;
            for (position, outcome) in written {
                outcomes[position].outcome = outcome;
            }
        }
        let mut batch = BatchOutcome {
            records: outcomes,
            conflict_retries,
            delivery: None,
        };
        log_outcomes(&batch);
        batch.delivery = self.deliver(&batch, deadline).await;
        batch
    }

    /// After the commits: the outbox to Redis, when this batch announced something or a
    /// sweep for leftovers is due.
    async fn deliver(
        &self,
        batch: &BatchOutcome,
        deadline: Option<tokio::time::Instant>,
    ) -> Option<crate::streams::Delivery> {
        let fanout = self.fanout.as_ref().filter(|_| self.announce)?;
        // Message changes announce; a conversation change can too (its participants
        // becoming known announces its earlier messages).
        let announced = batch.records.iter().any(|r| {
            r.outcome == Outcome::Applied
                && (r.event_type.as_deref()).is_some_and(|t| t.starts_with("dm."))
        });
        if !announced && !fanout.sweep_due() {
            return None;
        }
        Some(fanout.drain_until(&self.store, deadline).await)
    }

    async fn apply_chunk_until(
        &self,
        chunk: Chunk,
        deadline: Option<tokio::time::Instant>,
    ) -> (Vec<(usize, Outcome)>, usize) {
        let span = chunk_span(&chunk.events);
        let Some(deadline) = deadline else {
            return self.apply_chunk(chunk).instrument(span).await;
        };
        let positions = chunk.positions.clone();
        let work = self.apply_chunk(chunk).instrument(span.clone());
        match tokio::time::timeout_at(deadline, work).await {
            Ok(done) => done,
            Err(_) => {
                span.in_scope(|| {
                    tracing::warn!(
                        records = positions.len(),
                        "the invocation's deadline is near: the chunk is given up, to be redelivered"
                    )
                });
                let outcome = Outcome::Failed(DEADLINE_REASON.to_string());
                (
                    positions
                        .into_iter()
                        .map(|p| (p, outcome.clone()))
                        .collect(),
                    0,
                )
            }
        }
    }

    /// The chunk's outcomes, and how many times it was retried after a write conflict.
    async fn apply_chunk(&self, chunk: Chunk) -> (Vec<(usize, Outcome)>, usize) {
        let mut retries = 0;
        let result = self.apply_with_retry(&chunk.events, &mut retries).await;
        let outcomes = match result {
            Ok(written) => chunk
                .positions
                .into_iter()
                .zip(written.into_iter().map(Outcome::from))
                .collect(),
            // One record's value was refused: apply each alone, so only that record fails
            // and the rest commit.
            Err(StoreError::RecordRefused(_)) if chunk.events.len() > 1 => {
                let mut isolated = Vec::with_capacity(chunk.events.len());
                for (position, pending) in chunk.positions.into_iter().zip(chunk.events) {
                    let outcome = match self
                        .apply_with_retry(std::slice::from_ref(&pending), &mut retries)
                        .instrument(record_span(&pending))
                        .await
                    {
                        Ok(written) => Outcome::from(written[0]),
                        Err(error) => error_outcome(error),
                    };
                    isolated.push((position, outcome));
                }
                isolated
            }
            Err(error) => {
                let outcome = error_outcome(error);
                chunk
                    .positions
                    .into_iter()
                    .map(|p| (p, outcome.clone()))
                    .collect()
            }
        };
        (outcomes, retries)
    }

    async fn apply_with_retry(
        &self,
        events: &[Pending],
        retries: &mut usize,
    ) -> Result<Vec<Written>, StoreError> {
        let mut attempt = 1;
        loop {
            match self.store.apply_announcing(events, self.announce).await {
                // The secret may have been rotated since the cold start: read it again, once.
                Err(StoreError::AuthenticationFailed(reason)) if attempt == 1 => {
                    match self.store.reload_credentials(&self.config).await {
                        Ok(true) => {
                            tracing::warn!(%reason, "authentication failed: the database secret was read again; retrying the chunk");
                            attempt += 1;
                        }
                        Ok(false) => return Err(StoreError::AuthenticationFailed(reason)),
                        Err(error) => {
                            tracing::warn!(%error, "authentication failed and the database secret could not be read again");
                            return Err(StoreError::AuthenticationFailed(reason));
                        }
                    }
                }
                Err(StoreError::Conflict(reason)) if attempt < CONFLICT_ATTEMPTS => {
                    tracing::warn!(attempt, %reason, "write conflict, retrying the chunk");
                    *retries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt as u64)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// How many entity ids a chunk's span names (a chunk holds up to `MIRROR_CHUNK_SIZE`).
const SPAN_IDS: usize = 10;

/// The span around a chunk's work, retries included: every line logged in it names the
/// chunk's events (the first [`SPAN_IDS`] entity ids, and how many there are).
fn chunk_span(events: &[Pending]) -> tracing::Span {
    let mut ids: Vec<String> = (events.iter().take(SPAN_IDS))
        .map(|p| p.event.key.entity_id())
        .collect();
    if events.len() > SPAN_IDS {
        ids.push(format!("+{} more", events.len() - SPAN_IDS));
    }
    tracing::info_span!(
        "chunk",
        family = events.first().map(|p| p.event.family().type_prefix()).unwrap_or(""),
        events = events.len(),
        entity_ids = %ids.join(" "),
    )
}

/// The span around one event's work when it is applied alone.
fn record_span(pending: &Pending) -> tracing::Span {
    let event = &pending.event;
    tracing::info_span!(
        "record",
        event_id = %event.event_id,
        event_type = %event.event_type,
        entity_id = %event.key.entity_id(),
    )
}

fn error_outcome(error: StoreError) -> Outcome {
    match error {
        StoreError::RecordRefused(reason) => {
            Outcome::Rejected(Rejection::RefusedByDatabase(reason))
        }
        other => Outcome::Failed(other.to_string()),
    }
}

impl From<Written> for Outcome {
    fn from(written: Written) -> Self {
        match written {
            Written::Applied => Outcome::Applied,
            Written::Duplicate => Outcome::Duplicate,
            Written::Stale => Outcome::Stale,
        }
    }
}

/// One line per record, by ids only: reasons name fields, never their content.
fn log_outcomes(batch: &BatchOutcome) {
    for r in &batch.records {
        let span = tracing::info_span!(
            "record",
            message_id = %r.message_id,
            event_id = r.event_id.as_deref().unwrap_or(""),
            event_type = r.event_type.as_deref().unwrap_or(""),
            entity_id = r.entity_id.as_deref().unwrap_or(""),
        );
        let _entered = span.enter();
        match &r.outcome {
            Outcome::Applied => tracing::debug!(outcome = "applied"),
            Outcome::Duplicate => tracing::debug!(outcome = "duplicate"),
            Outcome::Stale => tracing::debug!(outcome = "stale"),
            Outcome::Rejected(why) => {
                tracing::warn!(outcome = "rejected", kind = why.kind(), reason = %why)
            }
            Outcome::Failed(why) => tracing::warn!(outcome = "failed", reason = %why),
        }
    }
    let c = batch.counts();
    tracing::info!(
        records = batch.records.len(),
        applied = c.applied,
        duplicates = c.duplicate,
        stale = c.stale,
        rejected = c.rejected,
        failed = c.failed,
        conflict_retries = batch.conflict_retries,
        "batch done"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_keeps_failures_and_rejections_not_yet_dead_lettered_and_nothing_else() {
        let outcome = BatchOutcome {
            records: vec![
                RecordOutcome::new("applied", Outcome::Applied),
                RecordOutcome::new("duplicate", Outcome::Duplicate),
                RecordOutcome::new("stale", Outcome::Stale),
                RecordOutcome::new("failed", Outcome::Failed("database unreachable".into())),
                RecordOutcome::new("rejected", Outcome::Rejected(Rejection::Empty)),
                RecordOutcome::new("dead-lettered", Outcome::Rejected(Rejection::Empty)),
            ],
            ..BatchOutcome::default()
        };
        let dead_lettered: HashSet<String> = ["dead-lettered".to_string()].into();
        let kept: Vec<&str> = (outcome.records.iter())
            .filter(|r| r.stays_on_queue(&dead_lettered))
            .map(|r| r.message_id.as_str())
            .collect();
        assert_eq!(kept, ["failed", "rejected"]);
        assert_eq!(
            outcome.counts(),
            Counts {
                applied: 1,
                duplicate: 1,
                stale: 1,
                rejected: 2,
                failed: 1
            }
        );
        assert!(outcome.has_rejections());
    }

    #[test]
    fn a_summary_counts_every_record_and_lists_a_bounded_few_per_reason() {
        let mut outcome = BatchOutcome::default();
        for i in 0..100_000 {
            outcome.records.push(RecordOutcome::new(
                format!("f{i}"),
                Outcome::Failed(format!("database unreachable ({})", i % 60)),
            ));
            outcome.records.push(RecordOutcome::new(
                format!("r{i}"),
                Outcome::Rejected(if i % 2 == 0 {
                    Rejection::Empty
                } else {
                    Rejection::NotJson(format!("line {i} is not UTF-8"))
                }),
            ));
        }
        outcome
            .records
            .push(RecordOutcome::new("ok", Outcome::Applied));
        let s = outcome.summary();
        assert_eq!((s.applied, s.rejected, s.failed), (1, 100_000, 100_000));
        assert_eq!(
            s.rejections_by_kind,
            BTreeMap::from([("empty".into(), 50_000), ("not JSON".into(), 50_000)])
        );
        let ids: Vec<&str> = s.rejections.iter().map(|p| p.message_id.as_str()).collect();
        assert_eq!(
            ids,
            ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"]
        );
        assert_eq!(s.rejections[1].reason, "not JSON: line 1 is not UTF-8");
        // 60 reasons: 50 counted apart, 10 together.
        assert_eq!(s.failures_by_reason.len(), REASONS_MAX + 1);
        // Reasons 50..59 come 1,666 times each (100,000 = 60 × 1,666 + 40).
        assert_eq!(s.failures_by_reason[OTHER_REASONS], 16_660);
        assert_eq!(s.failures_by_reason.values().sum::<usize>(), 100_000);
        assert_eq!(s.failures.len(), LISTED_MAX);
        assert_eq!(s.not_listed.failures + s.failures.len(), 100_000);
        assert_eq!(s.not_listed.rejections + s.rejections.len(), 100_000);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.len() < 20_000, "{} bytes", json.len());
    }

    #[tokio::test]
    async fn only_a_deadline_in_the_future_is_used_less_the_margin() {
        let options = "sqlite::memory:".parse().unwrap();
        let processor = Processor::new(Store::sqlite(options).await.unwrap(), Config::default());
        let now_ms = Timestamp::now().as_datetime().timestamp_millis() as u64;
        assert_eq!(processor.deadline(0), None, "no Lambda context");
        assert_eq!(processor.deadline(600_000), None, "cargo-lambda's emulator");
        assert_eq!(processor.deadline(now_ms - 1), None, "already past");
        let at = processor
            .deadline(now_ms + 10_000)
            .expect("a deadline 10 s ahead");
        let left = at - tokio::time::Instant::now();
        // 10 s less the default 2 s margin (and the few ms this test took).
        assert!(left <= std::time::Duration::from_secs(8), "{left:?}");
        assert!(left > std::time::Duration::from_secs(7), "{left:?}");
    }
}
