//! `mirrorctl`: the operator's command line (CONTRACT.md section 5).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use realtime_mirror::batch::RecordOutcome;
use realtime_mirror::config::{Config, DatabaseUrl};
use realtime_mirror::{inputs, BatchOutcome, Outcome, Processor, Route};

#[derive(Parser)]
#[command(version, about = "Operate a realtime-mirror SQL mirror")]
struct Cli {
    /// Where the mirror lives: postgres://… or sqlite://… (created on first use).
    #[arg(long, env = "DATABASE_URL", default_value = realtime_mirror::config::DEFAULT_DATABASE_URL, global = true)]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create or upgrade the schema.
    Migrate,
    /// Apply event files through the functions' own code path and print a JSON summary.
    /// Exits 0 when nothing was rejected or failed, 2 when something was rejected and
    /// nothing failed, 1 when anything failed.
    Apply {
        /// Files holding an SQS event or one envelope, or directories of such .json files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print every mirrored row as JSON, in one form for both stores (for comparing them).
    Dump,
}

#[tokio::main]
async fn main() -> ExitCode {
    realtime_mirror::telemetry::init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("mirrorctl: {message}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, String> {
    let mut config = Config::from_env().map_err(|e| e.to_string())?;
    config.database_url = DatabaseUrl::new(cli.database_url);
    // Every command works on a migrated schema; `migrate` is the explicit form.
    config.migrate_on_start = true;
    let target = config.database_url.to_string();
    let opened = Processor::connect(config)
        .await
        .map_err(|e| format!("cannot open the mirror at {target}: {e}"));
    match cli.command {
        Command::Migrate => {
            opened?;
            eprintln!("mirrorctl: the schema at {target} is up to date");
            Ok(0)
        }
        Command::Apply { paths } => {
            let (records, unreadable) = inputs::read_paths(&paths);
            let mut outcome = match opened {
                Ok(processor) => processor.process(records, Route::AllFamilies).await,
                // Still one summary line: every record failed, and why.
                Err(reason) => {
                    eprintln!("mirrorctl: {reason}");
                    BatchOutcome {
                        records: records
                            .into_iter()
                            .map(|r| {
                                RecordOutcome::new(r.message_id, Outcome::Failed(reason.clone()))
                            })
                            .collect(),
                    }
                }
            };
            outcome.extend(BatchOutcome {
                records: unreadable,
            });
            let summary = outcome.summary();
            println!(
                "{}",
                serde_json::to_string(&summary).expect("the summary serialises")
            );
            Ok(summary.exit_code() as u8)
        }
        Command::Dump => {
            let snapshot = opened?
                .store()
                .snapshot()
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&snapshot.tables).expect("rows serialise")
            );
            Ok(0)
        }
    }
}
