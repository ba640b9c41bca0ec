//! The scheduled self-check (`mirror-check`): run by an EventBridge schedule, it checks the
//! mirror against its own rules ([`crate::check::self_check`]) and writes the count of each
//! kind as EMF metrics (`Function=mirror-check`), which the template alarms on. Then it
//! keeps the table of applied keys bounded: keys older than `MIRROR_APPLIED_KEYS_RETENTION`
//! (1 day by default; `off` keeps every key) are deleted in small transactions until the
//! invocation's time is nearly spent (the next run goes on). A copy arriving after its key
//! is gone is still recognised by the row (same version and content: a duplicate; older:
//! stale), so the retention bounds only how a copy of a since-superseded event is labelled.
//! With `MIRROR_REDIS_URL`, it also delivers what waits in the realtime outbox. Outside
//! Lambda it runs once and prints the report, for cron or a shell.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

use crate::batch::Processor;
use crate::check::{self, SelfCheckOptions};
use crate::config::Config;
use crate::timestamp::Timestamp;
use std::time::Duration;

pub const FUNCTION: &str = "mirror-check";

/// The binary's `main`: a failure to start is one line on stderr.
pub async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{FUNCTION}: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    crate::telemetry::init();
    let config = Config::from_env()?;
    let stub_age = match std::env::var("MIRROR_CHECK_STUB_AGE") {
        Ok(value) => crate::config::duration("MIRROR_CHECK_STUB_AGE", &value)?,
        Err(_) => std::time::Duration::from_secs(3600),
    };
    let retention = match std::env::var("MIRROR_APPLIED_KEYS_RETENTION").as_deref() {
        Ok("off") => None,
        Ok(value) => Some(crate::config::duration(
            "MIRROR_APPLIED_KEYS_RETENTION",
            value,
        )?),
        Err(_) => Some(DEFAULT_RETENTION),
    };
    let processor = Processor::connect(config).await?;
    let options = SelfCheckOptions {
        page: processor.config().chunk_size,
        stub_age,
    };
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        let report = once(&processor, &options, retention, None).await?;
        println!("{report}");
        return Ok(());
    }
    let (processor, options) = (&processor, &options);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        // Leave a minute of the invocation for the last prune transaction and the reply.
        let now_ms = chrono::Utc::now().timestamp_millis() as u64;
        let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        let deadline = std::time::Instant::now() + left.saturating_sub(Duration::from_secs(60));
        once(processor, options, retention, Some(deadline))
    }))
    .await
}

/// How long applied keys are kept unless `MIRROR_APPLIED_KEYS_RETENTION` says otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(86_400);

/// One self-check, then the applied keys older than `retention` pruned until `deadline`:
/// the EMF document on stdout, the report (with `appliedKeysPruned`) as the result.
pub async fn once(
    processor: &Processor,
    options: &SelfCheckOptions,
    retention: Option<Duration>,
    deadline: Option<std::time::Instant>,
) -> Result<Value, Error> {
    let report = check::self_check(processor.store(), options, None).await?;
    let pruned = match retention {
        Some(age) => {
            let before =
                Timestamp::ago(age).ok_or("MIRROR_APPLIED_KEYS_RETENTION reaches before year 1")?;
            Some(
                processor
                    .store()
                    .prune_applied_keys(before, deadline)
                    .await?,
            )
        }
        None => None,
    };
    let now = Timestamp::now().as_datetime().timestamp_millis();
    println!(
        "{}",
        crate::metrics::check_document(&report, pruned, &processor.config().metrics_namespace, now)
    );
    tracing::info!(
        conversations = report.conversations,
        inconsistent = report.inconsistent,
        repairable = report.repairable,
        applied_keys_pruned = pruned,
        "self-check done"
    );
    let mut result = serde_json::to_value(&report)?;
    result["appliedKeysPruned"] = pruned.into();
    // With realtime delivery on, the outbox too: a system with no traffic left still
    // delivers what a crash or an outage left behind.
    if let Some(fanout) = processor.fanout() {
        let delivery = fanout.drain(processor.store()).await;
        result["streams"] = serde_json::to_value(&delivery)?;
    }
    Ok(result)
}
