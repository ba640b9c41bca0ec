//! The subcommands on the mirror itself: migrate, apply, dump, repair, prune, check,
//! backfill, bench.

use std::io::Write;
use std::time::Duration;

use realtime_mirror::check::{self, SelfCheckOptions, SourceOptions};
use realtime_mirror::config::{Config, DatabaseUrl};
use realtime_mirror::event::Limits;
use realtime_mirror::timestamp::Timestamp;
use realtime_mirror::{apply, inputs, Processor, Route};

use crate::cli::*;
use crate::{print_json, progress};

pub(crate) async fn database(
    url: String,
    mut config: Config,
    command: Command,
) -> Result<u8, String> {
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
                        budget: None,
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

pub(crate) fn create_details(
    path: &std::path::Path,
) -> Result<std::io::BufWriter<std::fs::File>, String> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|e| format!("cannot create the details file {}: {e}", path.display()))
}

/// `30d`, `12h`, `90m`, `3600s` or a bare number of seconds, for the option `option`.
pub(crate) fn age(option: &str, text: &str) -> Result<chrono::Duration, String> {
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
