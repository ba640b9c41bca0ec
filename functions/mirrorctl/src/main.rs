//! `mirrorctl`: the operator's command line (docs/contract.md §6).

use std::process::ExitCode;

use clap::Parser;
use realtime_mirror::config::{Config, DatabaseUrl};
use realtime_mirror::event::Limits;
use realtime_mirror::publish::{self, Destinations};
use realtime_mirror::timestamp::Timestamp;
use realtime_mirror::{inputs, BatchOutcome};

mod cli;
mod database;
mod dead_letters;
mod progress;
mod stream;

use cli::{Cli, Command, StreamAction};
use database::database;
use dead_letters::dead_letters;
use stream::stream;

#[tokio::main]
async fn main() -> ExitCode {
    realtime_mirror::telemetry::init();
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("mirrorctl: {message}");
            1
        }
    };
    // For memory tests and benchmarks: this program's own peak, whatever forked it.
    if std::env::var_os("MIRRORCTL_REPORT_PEAK_RSS").is_some() {
        if let Some(kib) = realtime_mirror::telemetry::peak_rss_kib() {
            eprintln!("mirrorctl: peak RSS {kib} KiB");
        }
    }
    ExitCode::from(code)
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string(value).expect("output serialises")
    );
}

async fn run(cli: Cli) -> Result<u8, String> {
    let mut config = Config::from_env().map_err(|e| e.to_string())?;
    match cli.command {
        Command::Migrate
        | Command::Apply { .. }
        | Command::Dump
        | Command::Prune { .. }
        | Command::Repair { .. }
        | Command::Check { .. }
        | Command::Backfill { .. }
        | Command::Stream {
            action: StreamAction::Drain,
        } => database(cli.database_url, config, cli.command).await,
        Command::Stream { action } => stream(&config, action).await,
        Command::Publish { queue_url, paths } => {
            let inputs = inputs::read_paths(&paths);
            let client = realtime_mirror::queue::client_from_env().await;
            let limits = Limits {
                now: Timestamp::now(),
                max_future_skew: config.max_future_skew,
            };
            let mut summary = publish::publish(
                &client,
                inputs.records,
                &Destinations::from_env(queue_url),
                limits,
            )
            .await;
            let unreadable = BatchOutcome {
                records: inputs.problems,
                ..BatchOutcome::default()
            }
            .summary();
            summary.failed += unreadable.failed;
            summary.failures.extend(unreadable.failures);
            summary.rejected += unreadable.rejected;
            summary.rejections.extend(unreadable.rejections);
            summary.skipped = inputs.skipped;
            print_json(&summary);
            Ok(summary.exit_code() as u8)
        }
        Command::Bench {
            events,
            batch_size,
            mode,
            seed,
            preload,
        } => {
            config.database_url = DatabaseUrl::new(cli.database_url);
            let options = realtime_mirror::bench::Options {
                events,
                batch_size,
                mode,
                seed,
                preload,
            };
            let lines = realtime_mirror::bench::run_all(config, &options).await?;
            let unsettled = |line: &serde_json::Value| {
                line["failed"].as_u64().unwrap_or(0) + line["rejected"].as_u64().unwrap_or(0)
            };
            for line in &lines {
                print_json(line);
            }
            Ok(if lines.iter().map(unsettled).sum::<u64>() > 0 {
                1
            } else {
                0
            })
        }
        Command::Dlq { queue_url, action } => {
            let client = realtime_mirror::queue::client_from_env().await;
            dead_letters(&client, &queue_url, action)
                .await
                .map_err(|e| e.to_string())
        }
    }
}
