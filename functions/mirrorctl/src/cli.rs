//! The command line's shape: every subcommand, argument and help text (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Operate a realtime-mirror SQL mirror and its queues")]
pub(crate) struct Cli {
    /// Where the mirror lives: postgres://… or sqlite://… (created on first use).
    #[arg(long, env = "DATABASE_URL", default_value = realtime_mirror::config::DEFAULT_DATABASE_URL, global = true)]
    pub(crate) database_url: String,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        /// Before measuring, fill the scratch schema with the stream's conversations and N
        /// earlier messages spread over them, with their applied keys and planner
        /// statistics (PostgreSQL): what a mirror's history costs each event.
        #[arg(long, value_name = "N")]
        preload: Option<u64>,
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
    /// Realtime delivery to per-user Redis Streams (MIRROR_REDIS_URL): read a user's stream,
    /// replay what a device missed, acknowledge, deliver the outbox now. See docs/streams.md.
    Stream {
        #[command(subcommand)]
        action: StreamAction,
    },
    /// Inspect, replay or purge a dead-letter queue.
    Dlq {
        /// The dead-letter queue.
        #[arg(long, env = "MIRROR_DLQ_URL")]
        queue_url: String,
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
pub(crate) enum StreamAction {
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
pub(crate) enum DlqAction {
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The first line of each subcommand's help, as `mirrorctl --help` lists it.
    fn about(name: &str) -> String {
        let command = Cli::command();
        let sub = command
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("no subcommand {name}"));
        sub.get_about().map(|a| a.to_string()).unwrap_or_default()
    }

    #[test]
    fn every_subcommand_has_its_own_help_text() {
        Cli::command().debug_assert();
        assert!(
            about("stream").starts_with("Realtime delivery"),
            "{}",
            about("stream")
        );
        assert!(
            about("dlq").contains("dead-letter queue"),
            "{}",
            about("dlq")
        );
        for command in Cli::command().get_subcommands() {
            let name = command.get_name();
            if name != "help" {
                assert!(!about(name).is_empty(), "mirrorctl {name} has no help text");
            }
        }
        let helps: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| about(c.get_name()))
            .collect();
        let distinct: std::collections::HashSet<&String> = helps.iter().collect();
        assert_eq!(
            distinct.len(),
            helps.len(),
            "two subcommands share a help text"
        );
    }
}
