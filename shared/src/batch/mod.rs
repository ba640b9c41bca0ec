//! The batch processor (docs/contract.md §3): queue records in, one outcome per record out,
//! under the connection cap.
//! - `record.rs`: a record, what became of it, and the one rule for what a queue keeps;
//! - `summary.rs`: the bounded summary `mirrorctl apply` prints and its exit code;
//! - `processor.rs`: parsing per record, writing per chunk, retries, the invocation's
//!   deadline, and the drain of the realtime outbox after the commit.

mod processor;
mod record;
mod summary;
#[cfg(test)]
mod tests;

pub use processor::{Processor, DEADLINE_REASON};
pub use record::{BatchOutcome, Counts, Outcome, Record, RecordOutcome, Route};
pub use summary::{
    exit_code, NotListed, Problem, Skipped, Summary, LISTED_MAX, LISTED_PER_REASON, OTHER_REASONS,
    REASONS_MAX,
};
