//! `mirrorctl`: the operator's command line (docs/contract.md §6).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use realtime_mirror::check::{self, SelfCheckOptions, SourceOptions};
use realtime_mirror::config::{Config, DatabaseUrl};
use realtime_mirror::dlq::{self, ReplayOptions};
use realtime_mirror::event::Limits;
use realtime_mirror::publish::{self, Destinations};
use realtime_mirror::timestamp::Timestamp;
use realtime_mirror::{apply, inputs, BatchOutcome, Processor, Route};

mod progress;

#[derive(Parser)]
#[command(version, about = "Operate a realtime-mirror SQL mirror and its queues")]
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
        /// Files holding an SQS event ({"Records": [...]}), JSON lines (one envelope a line) or one
        /// envelope, or directories of such files (read in name order; entries passed over are
        /// listed under "skipped"). Each record stands alone.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also write every record's outcome to this file, one JSON line each (messageId,
        /// outcome, kind and reason when refused, eventId, eventType, entityId); the summary
        /// lists only the first few records of each reason.
        #[arg(long, value_name = "FILE")]
        details: Option<PathBuf>,
    },
    /// Print every mirrored row as JSON, in one form for both stores (for comparing them).
    Dump,
    /// Recompute the derived columns (last_message_*, recipient_id) of every conversation, or
    /// of the --conversation ones, or of those a `check --details` file names, and print how
    /// many were wrong. Safe while live writers run (it takes their locks, in their order); a
    /// second run changes nothing. Nothing is announced to devices.
    Repair {
        /// Only this conversation (repeatable).
        #[arg(long = "conversation", value_name = "ID")]
        conversations: Vec<String>,
        /// Only the conversations this `check --details` file names as repairable
        /// (lastMessageWrong, recipientWrong, danglingLastMessage).
        #[arg(long, value_name = "FILE", conflicts_with = "conversations")]
        from_details: Option<PathBuf>,
    },
    /// Prove the mirror right. Without --source: the mirror against its own rules
    /// (derived columns, stub conversations older than --stub-age, last_message_id naming a
    /// deleted or missing message, live messages of a deleted conversation, self-follows).
    /// With --source: a snapshot of the source store (JSON lines, docs/snapshot.md) against
    /// the mirror, family by family. Prints one JSON report; exits 3 when the mirror is
    /// inconsistent (self-check), or when drift exceeds --max-drift, missing records exceed
    /// --max-missing, or drift exceeds --gate (source check); 0 otherwise.
    Check {
        /// The source snapshot: one {"family": ..., "document": {...}} a line.
        #[arg(long, value_name = "FILE")]
        source: Option<PathBuf>,
        /// Write every finding to this file, one JSON line each (`repair --from-details`
        /// reads it).
        #[arg(long, value_name = "FILE")]
        details: Option<PathBuf>,
        /// Alert (exit 3) when missing + extra + mismatched exceed this share of the records
        /// checked: 0.5% or 0.005.
        #[arg(long, default_value = "0.5%", value_parser = realtime_mirror::check::ratio)]
        max_drift: f64,
        /// Alert (exit 3) when more source records than this are missing from the mirror.
        #[arg(long, default_value_t = 100)]
        max_missing: u64,
        /// The read-path cut-over gate: report whether drift is within it (exit 3 if not).
        #[arg(long, value_parser = realtime_mirror::check::ratio)]
        gate: Option<f64>,
        /// Self-check: report stub conversations older than this (30d, 12h, 90m, 3600s).
        #[arg(long, default_value = "1h")]
        stub_age: String,
    },
    /// Apply a source snapshot (docs/snapshot.md) through the apply path as import events:
    /// sync_source 'backfill', each version the document's own, so newer live events always
    /// win and a second run changes nothing. Prints apply's summary; exit codes as for apply.
    /// Progress goes to stderr (a bar on a terminal), with the line to resume from.
    Backfill {
        #[arg(long, value_name = "FILE")]
        source: PathBuf,
        /// Start at this line (1-based): after an interruption, the line the last progress
        /// report named.
        #[arg(long, value_name = "LINE", default_value_t = 1)]
        resume_from: u64,
        /// Also write every record's outcome to this file, one JSON line each.
        #[arg(long, value_name = "FILE")]
        details: Option<PathBuf>,
        /// Off a terminal, a progress line at most this often, in seconds (0: after every
        /// window of records).
        #[arg(long, value_name = "SECONDS", default_value_t = 5)]
        progress_every: u64,
    },
    /// Measure: apply a reproducible stream of --events events (mixed families, duplicates,
    /// stale versions, deletes, bodies of realistic sizes) in batches of --batch-size through
    /// the functions' batch processor, into a scratch schema (PostgreSQL) or file (SQLite)
    /// of its own, removed afterwards. Prints one JSON line: events_per_s, batch latency
    /// (p50, p99, max) and peak RSS. --mode per-event: one transaction per event (the seed
    /// design); --mode ceiling: the server writing the same rows by plain upserts
    /// (PostgreSQL); --mode no-ledger: set, with the applied-key ledger's rows discarded
    /// (what the ledger costs); --mode all: each of them, then a line of ratios. MIRROR_CHUNK_SIZE and MIRROR_MAX_CONNECTIONS apply as for the functions.
    Bench {
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        #[arg(long, value_enum, default_value = "set")]
        mode: realtime_mirror::bench::Mode,
        /// The same seed and --events give the same stream, byte for byte.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Forget the idempotency keys of events applied longer ago than --older-than (the
    /// table of applied keys grows with every event). Rows never change because of it: a
    /// later copy of such an event is still kept out by its version.
    Prune {
        /// An age: 30d, 12h, 90m, 3600s.
        #[arg(long)]
        older_than: String,
    },
    /// Send event files to the queue of each event's family (batches of 10; on a FIFO queue
    /// with the idempotency key as deduplication id and the entity as group id). Queues from
    /// MIRROR_DM_MESSAGE_QUEUE_URL, MIRROR_DM_CONVERSATION_QUEUE_URL and
    /// MIRROR_FOLLOW_EDGE_QUEUE_URL, or --queue-url for all. Exit codes as for apply.
    Publish {
        /// Send every event to this queue.
        #[arg(long)]
        queue_url: Option<String>,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Inspect, replay or purge a dead-letter queue.
    /// Realtime delivery to per-user Redis Streams (MIRROR_REDIS_URL): read a user's stream,
    /// replay what a device missed, acknowledge, deliver the outbox now. See docs/streams.md.
    Stream {
        #[command(subcommand)]
        action: StreamAction,
    },
    Dlq {
        /// The dead-letter queue.
        #[arg(long, env = "MIRROR_DLQ_URL")]
        queue_url: String,
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
enum StreamAction {
    /// Print up to --count entries of USER's stream (stream:user:{USER}) after --after
    /// (from the oldest kept without it), one JSON line each: id, type, messageId,
    /// conversationId, senderId, version, ts.
    Tail {
        user: String,
        #[arg(long, value_name = "ID")]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// What device --device of USER missed since its last acknowledged id
    /// (device:{D}:lastSeen), as one JSON object: {"replay":"entries","after":…,"entries":[…]},
    /// or, when entries it missed were trimmed away, the stream was lost or the device never
    /// acknowledged anything, {"replay":"resync","reason":…,"resumeFrom":…} and exit code 3:
    /// the device must load from SQL, then acknowledge resumeFrom.
    Replay {
        user: String,
        #[arg(long)]
        device: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Record that DEVICE has seen every entry up to ID (never moves its last seen id back).
    Ack { device: String, id: String },
    /// Deliver what waits in the outbox now (left by a crash between commit and XADD, or by
    /// a Redis outage), and print what was delivered and what is left.
    Drain,
}

#[derive(Subcommand)]
enum DlqAction {
    /// How many messages wait, are in flight, are delayed.
    Stats,
    /// Show up to --max messages with their error kind, reason and origin; they stay queued.
    Peek {
        #[arg(long, default_value_t = 10)]
        max: usize,
        /// Also print the bodies (they hold private content).
        #[arg(long)]
        show_body: bool,
    },
    /// Move messages back to their source queue (the mirror.sourceQueue attribute, or --to);
    /// each is deleted here only after its send succeeded.
    Replay {
        /// Send every message to this queue (needed for messages the redrive policy moved,
        /// which carry no source).
        #[arg(long)]
        to: Option<String>,
        /// At most this many messages.
        #[arg(long, default_value_t = 1000)]
        max: usize,
        /// At most this many messages per second.
        #[arg(long, default_value_t = 50)]
        rate: u32,
        /// Count what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// Use SQS's own redrive (StartMessageMoveTask) instead.
        #[arg(long)]
        native: bool,
    },
    /// Delete every message of the dead-letter queue.
    Purge {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

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
        } => {
            config.database_url = DatabaseUrl::new(cli.database_url);
            let options = realtime_mirror::bench::Options {
                events,
                batch_size,
                mode,
                seed,
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

async fn stream(config: &Config, action: StreamAction) -> Result<u8, String> {
    use realtime_mirror::streams;
    let settings =
        (config.streams.clone()).ok_or("MIRROR_REDIS_URL is not set: realtime delivery is off")?;
    let fanout = streams::Fanout::new(settings).await?;
    let mut connection = fanout.connection().await?;
    match action {
        StreamAction::Tail { user, after, count } => {
            for entry in streams::tail(&mut connection, &user, after.as_deref(), count).await? {
                print_json(&entry);
            }
            Ok(0)
        }
        StreamAction::Replay {
            user,
            device,
            count,
        } => {
            let replay = streams::replay(&mut connection, &user, &device, count).await?;
            print_json(&replay);
            Ok(match replay {
                streams::Replay::Entries { .. } => 0,
                streams::Replay::Resync { .. } => 3,
            })
        }
        StreamAction::Ack { device, id } => {
            let stored = streams::ack(&mut connection, &device, &id).await?;
            print_json(&serde_json::json!({ "device": device, "lastSeen": stored }));
            Ok(0)
        }
        StreamAction::Drain => unreachable!("drain needs the database"),
    }
}

async fn database(url: String, mut config: Config, command: Command) -> Result<u8, String> {
    config.database_url = DatabaseUrl::new(url);
    // Every command works on a migrated schema; `migrate` is the explicit form.
    config.migrate_on_start = true;
    let chunk_size = config.chunk_size;
    let target = config.database_url.to_string();
    let opened = Processor::connect(config)
        .await
        .map_err(|e| format!("cannot open the mirror at {target}: {e}"));
    match command {
        Command::Apply { paths, details } => {
            let target = match &opened {
                Ok(processor) => apply::Target::Mirror(processor),
                Err(reason) => {
                    eprintln!("mirrorctl: {reason}; every record is counted as failed");
                    apply::Target::Unreachable(reason.clone())
                }
            };
            let mut file = details.as_deref().map(create_details).transpose()?;
            let items = inputs::stream(paths, apply::READ_AHEAD);
            let out = file.as_mut().map(|f| f as &mut (dyn Write + Send));
            let mut summary =
                apply::apply(target, items, Route::AllFamilies, out, &mut |_, _| {}).await?;
            summary.details = details.map(|p| p.display().to_string());
            print_json(&summary);
            Ok(summary.exit_code() as u8)
        }
        Command::Prune { older_than } => {
            let age = age("--older-than", &older_than)?;
            let before = (age.to_std().ok())
                .and_then(Timestamp::ago)
                .ok_or_else(|| format!("--older-than {older_than} reaches before year 1"))?;
            let deleted = opened?
                .store()
                .prune_applied_keys(before, None)
                .await
                .map_err(|e| e.to_string())?;
            print_json(
                &serde_json::json!({ "pruned": deleted, "appliedBefore": before.to_string() }),
            );
            Ok(0)
        }
        Command::Repair {
            conversations,
            from_details,
        } => {
            let processor = opened?;
            let only = match from_details {
                Some(path) => Some(realtime_mirror::check::repairable_conversations(&path)?),
                None => (!conversations.is_empty()).then_some(conversations),
            };
            let repaired = processor
                .store()
                .repair(only, chunk_size)
                .await
                .map_err(|e| format!("repair stopped: {e}; what was repaired so far is committed, and running it again is safe"))?;
            print_json(&repaired);
            Ok(0)
        }
        Command::Check {
            source,
            details,
            max_drift,
            max_missing,
            gate,
            stub_age,
        } => {
            let processor = opened?;
            let mut file = details.as_deref().map(create_details).transpose()?;
            let out = file.as_mut().map(|f| f as &mut (dyn Write + Send));
            let details = details.map(|p| p.display().to_string());
            match source {
                None => {
                    let options = SelfCheckOptions {
                        page: chunk_size,
                        stub_age: age("--stub-age", &stub_age)?
                            .to_std()
                            .map_err(|_| "--stub-age must not be negative".to_string())?,
                    };
                    let mut report = check::self_check(processor.store(), &options, out)
                        .await
                        .map_err(|e| format!("check stopped: {e}"))?;
                    report.details = details;
                    print_json(&report);
                    Ok(if report.inconsistent > 0 { 3 } else { 0 })
                }
                Some(path) => {
                    let options = SourceOptions {
                        max_drift,
                        max_missing,
                        gate,
                        chunk: chunk_size,
                        limits: Limits {
                            now: Timestamp::now(),
                            max_future_skew: processor.config().max_future_skew,
                        },
                    };
                    let mut report = check::check_source(processor.store(), path, &options, out)
                        .await
                        .map_err(|e| format!("check stopped: {e}"))?;
                    report.details = details;
                    print_json(&report);
                    Ok(report.exit_code())
                }
            }
        }
        Command::Backfill {
            source,
            resume_from,
            details,
            progress_every,
        } => {
            // Backfill announces nothing: old messages must not wake every device.
            let processor = opened?.quiet();
            let mut file = details.as_deref().map(create_details).transpose()?;
            let out = file.as_mut().map(|f| f as &mut (dyn Write + Send));
            let items =
                realtime_mirror::source::backfill_items(source, resume_from, apply::READ_AHEAD);
            let mut progress =
                progress::Progress::new("backfill", Duration::from_secs(progress_every));
            let mut summary = apply::apply(
                apply::Target::Mirror(&processor),
                items,
                Route::AllFamilies,
                out,
                &mut |summary, last| progress.update(summary, last),
            )
            .await?;
            progress.finish(&summary);
            // A bulk load leaves the planner's statistics behind until autovacuum catches
            // up (never, where it is off): refresh them, as after any bulk load.
            if let Err(e) = processor.store().analyze().await {
                eprintln!("backfill: the rows are written, but refreshing the planner's statistics failed ({e}); run ANALYZE on the mirror tables");
            }
            summary.details = details.map(|p| p.display().to_string());
            print_json(&summary);
            Ok(summary.exit_code() as u8)
        }
        Command::Stream { .. } => {
            let processor = opened?;
            let fanout = processor
                .fanout()
                .ok_or("MIRROR_REDIS_URL is not set: realtime delivery is off")?;
            let delivery = fanout.drain(processor.store()).await;
            print_json(&delivery);
            Ok(if delivery.error.is_some() { 1 } else { 0 })
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
        _ => {
            opened?;
            eprintln!("mirrorctl: the schema at {target} is up to date");
            Ok(0)
        }
    }
}

fn create_details(path: &std::path::Path) -> Result<std::io::BufWriter<std::fs::File>, String> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|e| format!("cannot create the details file {}: {e}", path.display()))
}

/// `30d`, `12h`, `90m`, `3600s` or a bare number of seconds, for the option `option`.
fn age(option: &str, text: &str) -> Result<chrono::Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number.parse().map_err(|_| {
        format!("{option} {text:?}: expected an age such as 30d, 12h, 90m or 3600s")
    })?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{option} {text:?}: the unit must be s, m, h or d")),
    };
    n.checked_mul(seconds)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(|| format!("{option} {text:?} reaches before year 1"))
}

async fn dead_letters(
    client: &aws_sdk_sqs::Client,
    url: &str,
    action: DlqAction,
) -> Result<u8, dlq::DlqError> {
    match action {
        DlqAction::Stats => print_json(&dlq::stats(client, url).await?),
        DlqAction::Peek { max, show_body } => {
            print_json(&dlq::peek(client, url, max, show_body).await?)
        }
        DlqAction::Replay {
            native: true,
            to,
            rate,
            ..
        } => {
            let task = dlq::replay_native(client, url, to.as_deref(), rate).await?;
            print_json(&serde_json::json!({ "taskHandle": task }));
        }
        DlqAction::Replay {
            to,
            max,
            rate,
            dry_run,
            native: false,
        } => {
            let summary = dlq::replay(
                client,
                url,
                &ReplayOptions {
                    to,
                    max,
                    rate,
                    dry_run,
                },
            )
            .await?;
            print_json(&summary);
            if summary.failed > 0 {
                return Ok(1);
            }
        }
        DlqAction::Purge { yes } => {
            let waiting = dlq::stats(client, url).await?["messages"]
                .as_u64()
                .unwrap_or(0);
            if !yes && !confirmed(url, waiting) {
                eprintln!("mirrorctl: not purged (confirm by typing 'purge', or pass --yes)");
                return Ok(1);
            }
            dlq::purge(client, url).await?;
            print_json(&serde_json::json!({ "purged": url, "messagesBefore": waiting }));
        }
    }
    Ok(0)
}

/// Asks on stderr, reads one line of stdin; no answer (closed stdin) is a no.
fn confirmed(url: &str, waiting: u64) -> bool {
    eprint!("Delete every message of {url} (about {waiting})? Type 'purge' to confirm: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let read = std::io::stdin().lock().read_line(&mut answer);
    matches!(read, Ok(n) if n > 0) && answer.trim() == "purge"
}
