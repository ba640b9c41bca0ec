//! A batch's records and what became of each: the one rule for what a queue keeps, and
//! the counts behind the summary, the metrics and the worker's totals.

use std::collections::HashSet;

use crate::event::Family;
use crate::rejection::Rejection;
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

    pub fn extend(&mut self, other: BatchOutcome) {
        self.records.extend(other.records);
        self.conflict_retries += other.conflict_retries;
    }
}
