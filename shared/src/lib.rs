//! realtime-mirror: applies document-store change events to SQL, exactly once in effect, in
//! any order, under a bounded number of connections.
//!
//! - [`envelope`] and [`event`]: what arrives and what it means (contract §1–3, docs/contract.md).
//! - [`store`]: how it is applied, with one module per SQL dialect (section 4).
//! - [`batch`]: a batch of queue records → outcomes, with a concurrency cap.
//! - [`lambda`]: the SQS-triggered function; [`inputs`]: event files for `mirrorctl apply`.

pub mod batch;
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
pub mod store;
pub mod telemetry;
pub mod timestamp;
pub mod worker;

pub use batch::{BatchOutcome, Outcome, Processor, Record, Route, Summary};
pub use config::Config;
pub use event::{Event, Family};
pub use rejection::Rejection;
pub use store::Store;
