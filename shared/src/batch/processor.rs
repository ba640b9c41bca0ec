//! The batch processor: queue records in, one outcome per record out. Parsing is per
//! record, so a malformed body fails alone; writing is one set-based transaction per batch
//! (per chunk of `MIRROR_CHUNK_SIZE` when the batch is larger), at most
//! `MIRROR_MAX_CONNECTIONS` chunks in flight.

use super::record::{BatchOutcome, Outcome, Record, RecordOutcome, Route};

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use tracing::Instrument;

use crate::config::Config;
use crate::event::{Event, Family, Limits};
use crate::rejection::Rejection;
use crate::store::{Pending, Store, StoreError, Written};
use crate::streams::Fanout;
use crate::timestamp::Timestamp;

/// A chunk of the batch's events, of any families, and the positions of their records.
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

        // One transaction for the whole batch, of whatever families
        // (docs/architecture.md, "The write path"); only a batch larger than
        // `MIRROR_CHUNK_SIZE` is split, in batch order.
        let mut chunks = Vec::with_capacity(accepted.len().div_ceil(self.config.chunk_size.max(1)));
        let mut rest = accepted.into_iter().peekable();
        while rest.peek().is_some() {
            let (positions, events) = rest.by_ref().take(self.config.chunk_size.max(1)).unzip();
            chunks.push(Chunk { positions, events });
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
    let families: Vec<&str> = (Family::ALL.into_iter())
        .filter(|f| events.iter().any(|p| p.event.family() == *f))
        .map(Family::type_prefix)
        .collect();
    tracing::info_span!(
        "chunk",
        families = %families.join(" "),
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
