//! The realtime gateway (docs/realtime.md): a Socket.IO v4 server that authenticates each
//! device by its JWT, replays what it missed of its user's stream (`stream:user:{id}`,
//! docs/streams.md), pushes new entries as they arrive — each proven to follow the one
//! before it by `prev` — records its acknowledgements, and tells it to resync from SQL when
//! its history is gone. Never a body: entries are pointers.
//!
//! Modules, from the bottom up (each uses only those before it): `config`, `auth`,
//! `metrics` (plain values and checks); `presence`, `hub` (Redis: keys, the one reader);
//! `session` (one device); `server` (HTTP, Socket.IO, signals). The binary in
//! `functions/realtime-gateway` calls [`main`].

pub mod auth;
pub mod config;
pub mod hub;
pub mod metrics;
pub mod presence;
pub mod server;
pub mod session;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use realtime_mirror::streams::connection::Connection;
use redis::aio::ConnectionManager;

/// What every part of a running gateway shares.
pub struct App {
    pub settings: config::Settings,
    pub metrics: Arc<metrics::Metrics>,
    pub verifier: auth::Verifier,
    pub hub: Arc<hub::Hub>,
    pub presence: Arc<presence::Presence>,
    /// Commands (not the reader's blocking reads): replays, acknowledgements, keys.
    pub redis: Connection<ConnectionManager>,
    /// Admits [`session::CATCH_UP_IN_FLIGHT`] devices at a time to their catch-up.
    pub catch_up: tokio::sync::Semaphore,
    /// Set by SIGTERM: new handshakes are refused, `/healthz` says draining.
    pub draining: AtomicBool,
    /// Tells every session to say goodbye.
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

/// The `realtime-gateway` process: settings, then serve until SIGTERM.
pub async fn main() -> ExitCode {
    // JSON lines, always: the gateway runs under a log collector, never at a terminal.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing::subscriber::set_global_default(realtime_mirror::telemetry::subscriber(
        std::io::stderr,
        true,
        filter,
    ));
    let settings = match config::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("realtime-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    match server::serve(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the gateway stopped");
            eprintln!("realtime-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
