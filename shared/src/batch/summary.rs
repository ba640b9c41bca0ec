//! The summary `mirrorctl apply` prints (docs/contract.md §6): every record counted, a
//! bounded few named per reason, the exit code.

use std::collections::BTreeMap;

use serde::Serialize;

use super::record::{BatchOutcome, Outcome, RecordOutcome};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "messageId")]
    pub message_id: String,
    pub reason: String,
}

/// A directory entry that was not read, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: String,
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
    pub skipped: Vec<Skipped>,
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

impl BatchOutcome {
    /// The summary of one batch: every record counted, a bounded few listed.
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
}
