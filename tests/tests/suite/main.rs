//! The behavioural suite in one test binary (one link of the workspace instead of one per
//! file): every contract rule on both stores, convergence, concurrency, faults, hostile
//! input, the handler, queues, metrics, realtime delivery, repair and TLS.
//! `deadline.rs`, `privacy.rs` and `deployment.rs` stay binaries of their own: each sets
//! process-wide state (the global log subscriber, environment variables).
//! Run one part with `cargo test -p mirror-tests --test suite contract::`.

mod concurrency;
mod contract;
mod convergence;
mod faults;
mod handlers;
mod hostile_input;
mod metrics;
mod queues;
mod repair;
mod server_faults;
mod stream_cluster;
mod stream_production;
mod stream_replay;
mod streams;
mod tls;
