//! realtime-mirror: applies document-store change events to SQL, exactly once in effect, in
//! any order, under a bounded number of connections. The rules are in docs/contract.md.
//!
//! Domain (no I/O):
//! - [`envelope`]: the four accepted body shapes, unwrapped (contract §1).
//! - [`event`]: types, fields and their checks, canonical JSON, hashes, idempotency keys
//!   (§2, §3); [`rejection`]: why a record is refused; [`timestamp`]: the accepted forms.
//!
//! Applying:
//! - [`store`]: the SQL store, one transaction a chunk (`store/postgres.rs` and
//!   `store/sqlite.rs` hold each dialect's SQL) (§3, §4).
//! - [`batch`]: records → outcomes under the connection cap, and the one rule for what a
//!   queue keeps.
//! - [`streams`]: realtime delivery of the message changes that took effect to per-user
//!   Redis Streams, from the store's transactional outbox; device replay and acknowledgement.
//!
//! Adapters:
//! - [`lambda`]: the SQS-triggered function; [`scheduled`]: the scheduled self-check; [`worker`]: the same processor long-polling SQS;
//!   [`queue`]: SQS clients and dead-lettering; [`metrics`]: EMF documents and latencies;
//!   [`credentials`]: Secrets Manager and TLS; [`config`]: the environment;
//!   [`telemetry`]: logs.
//!
//! Operator tools (used by `mirrorctl`):
//! - [`inputs`]: event files (SQS events, JSON lines, envelopes), read as a stream;
//!   [`apply`]: streams them through the processor into a bounded summary; [`publish`]: files to
//!   queues; [`dlq`]: inspecting and replaying dead letters; [`source`]: source snapshots
//!   (for `backfill` and `check --source`); [`check`]: the mirror against its rules and
//!   against a snapshot; [`workload`]: a reproducible event stream (`bench`, fault tests).

pub mod apply;
pub mod batch;
pub mod bench;
pub mod check;
pub mod config;
pub mod credentials;
pub mod dlq;
pub mod envelope;
pub mod event;
pub mod inputs;
pub mod lambda;
pub mod metrics;
pub mod publish;
pub mod queue;
pub mod rejection;
pub mod scheduled;
pub mod source;
pub mod store;
pub mod streams;
pub mod telemetry;
pub mod timestamp;
pub mod worker;
pub mod workload;

pub use batch::{BatchOutcome, Outcome, Processor, Record, Route, Summary};
pub use config::Config;
pub use event::{Event, Family};
pub use rejection::Rejection;
pub use store::Store;
