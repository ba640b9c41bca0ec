//! The scheduled self-check (`mirror-check`): run by an EventBridge schedule, it checks the
//! mirror against its own rules ([`crate::check::self_check`]) and writes the count of each
//! kind as EMF metrics (`Function=mirror-check`), which the template alarms on. Then it
//! keeps the table of applied keys bounded: keys older than `MIRROR_APPLIED_KEYS_RETENTION`
//! (1 day by default; `off` keeps every key) are deleted in small transactions until the
//! invocation's time is nearly spent (the next run goes on). A copy arriving after its key
//! is gone is still recognised by the row (same version and content: a duplicate; older:
//! stale), so the retention bounds only how a copy of a since-superseded event is labelled.
//! With `MIRROR_REDIS_URL`, it also delivers what waits in the realtime outbox.
//!
//! An event `{"task": "drain"}` (the template's one-minute schedule when realtime delivery is
//! on) runs only the outbox sweep: whatever a crash or a Redis outage left in the outbox is
//! delivered within a minute even when no traffic comes, and the backlog's age is reported
//! every minute (`outbox_backlog_age_s`, `Function=mirror-check`), which the template alarms
//! on. Outside Lambda it runs once (`mirror-check`, or `mirror-check drain`) and prints the
//! report, for cron or a shell.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

use crate::batch::Processor;
use crate::check::{self, SelfCheckOptions};
use crate::config::Config;
use crate::timestamp::Timestamp;
use std::time::Duration;

pub use crate::config::MIRROR_CHECK_FUNCTION as FUNCTION;

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
    let budget = match std::env::var("MIRROR_CHECK_BUDGET").as_deref() {
        Ok("off") | Err(_) => None,
        Ok(value) => Some(crate::config::duration("MIRROR_CHECK_BUDGET", value)?),
    };
    let processor = Processor::connect(config).await?;
    let options = SelfCheckOptions {
        page: processor.config().chunk_size,
        stub_age,
        budget,
    };
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        let task = Task::from_args(std::env::args().skip(1))?;
        let report = task.run(&processor, &options, retention, None).await?;
        println!("{report}");
        return Ok(());
    }
    let (processor, options) = (&processor, &options);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        handle(processor, options, retention, event)
    }))
    .await
}

/// One invocation: the task its event names, with a minute of the invocation left for the
/// last prune transaction and the reply; a sweep ends within [`SWEEP_BUDGET`], before the
/// next one starts.
pub async fn handle(
    processor: &Processor,
    options: &SelfCheckOptions,
    retention: Option<Duration>,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let now_ms = chrono::Utc::now().timestamp_millis() as u64;
    let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
    let deadline = std::time::Instant::now() + left.saturating_sub(Duration::from_secs(60));
    Task::from_payload(&event.payload)?
        .run(processor, options, retention, Some(deadline))
        .await
}

/// What one run does: the self-check (then pruning and a drain), or only the outbox sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    Check,
    Drain,
}

impl Task {
    /// From the invocation's event: `{"task": "drain"}` sweeps the outbox; `{"task":
    /// "check"}`, or any event without `task` (EventBridge's own scheduled event), checks.
    pub fn from_payload(payload: &Value) -> Result<Task, String> {
        match payload.get("task") {
            None => Ok(Task::Check),
            Some(Value::String(task)) => Task::named(task),
            Some(other) => Err(format!(
                "the event's \"task\" is {other}: expected \"check\" or \"drain\""
            )),
        }
    }

    /// From the command line outside Lambda: no argument or `check`, or `drain`.
    pub fn from_args(mut args: impl Iterator<Item = String>) -> Result<Task, String> {
        match (args.next(), args.next()) {
            (None, _) => Ok(Task::Check),
            (Some(task), None) => Task::named(&task),
            (Some(_), Some(extra)) => Err(format!(
                "unexpected argument {extra:?}: usage: {FUNCTION} [check|drain]"
            )),
        }
    }

    /// Runs the task until `deadline` (a sweep for at most [`SWEEP_BUDGET`] of it): the report.
    pub async fn run(
        self,
        processor: &Processor,
        options: &SelfCheckOptions,
        retention: Option<Duration>,
        deadline: Option<std::time::Instant>,
    ) -> Result<Value, Error> {
        match self {
            Task::Check => once(processor, options, retention, deadline).await,
            Task::Drain => {
                let budget = std::time::Instant::now() + SWEEP_BUDGET;
                let delivery = sweep(processor, deadline.map(|d| d.min(budget))).await?;
                Ok(serde_json::json!({ "streams": delivery }))
            }
        }
    }

    fn named(task: &str) -> Result<Task, String> {
        match task {
            "check" => Ok(Task::Check),
            "drain" => Ok(Task::Drain),
            other => Err(format!(
                "unknown task {other:?}: usage: {FUNCTION} [check|drain] (check: the self-check, then pruning; drain: only the realtime outbox sweep)"
            )),
        }
    }
}

/// The longest an outbox sweep runs; the template schedules one a minute.
pub const SWEEP_BUDGET: Duration = Duration::from_secs(50);

/// How long applied keys are kept unless `MIRROR_APPLIED_KEYS_RETENTION` says otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(86_400);

/// One self-check, then the applied keys older than `retention` pruned until `deadline`:
/// the EMF document on stdout, the report (with `appliedKeysPruned`) as the result. With a
/// budget the check goes on from where the last run stopped (kept in the database) and stops
/// when the budget (or the invocation's time) is spent, keeping where: each run checks a
/// slice, every row is checked once per pass, and the report says what it covered.
pub async fn once(
    processor: &Processor,
    options: &SelfCheckOptions,
    retention: Option<Duration>,
    deadline: Option<std::time::Instant>,
) -> Result<Value, Error> {
    let report = match options.budget {
        None => check::self_check(processor.store(), options, None).await?,
        Some(budget) => {
            let store = processor.store();
            let from = store.check_cursor().await?;
            let until = std::time::Instant::now() + budget;
            let until = deadline.map_or(until, |d| d.min(until));
            let report =
                check::self_check_from(store, options, None, from.as_ref(), Some(until)).await?;
            store.save_check_cursor(report.stopped_at.as_ref()).await?;
            report
        }
    };
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
        crate::metrics::check_document(
            &report.counts(pruned),
            &processor.config().metrics_namespace,
            now
        )
    );
    tracing::info!(
        conversations = report.conversations,
        complete = report.complete,
        resumed_after = report.resumed_from.as_ref().map(|c| c.after.0.as_str()),
        stopped_after = report.stopped_at.as_ref().map(|c| c.after.0.as_str()),
        inconsistent = report.inconsistent,
        repairable = report.repairable,
        applied_keys_pruned = pruned,
        "self-check done"
    );
    let mut result = serde_json::to_value(&report)?;
    result["appliedKeysPruned"] = pruned.into();
    // With realtime delivery on, the outbox too: a system with no traffic left still
    // delivers what a crash or an outage left behind.
    if processor.fanout().is_some() {
        result["streams"] = serde_json::to_value(sweep(processor, deadline).await?)?;
    }
    Ok(result)
}

/// Delivers what waits in the realtime outbox until `deadline`, writes the EMF document
/// (entries, commit → `XADD`, the backlog left and its age) and returns what it did.
/// A Redis that cannot be reached is not an error of the invocation: the rows wait, and the
/// backlog's age (alarmed on) says how long.
pub async fn sweep(
    processor: &Processor,
    deadline: Option<std::time::Instant>,
) -> Result<crate::streams::Delivery, Error> {
    let Some(fanout) = processor.fanout() else {
        return Err("drain: realtime delivery is off (MIRROR_REDIS_URL is not set), so there is no outbox to deliver".into());
    };
    let deadline = deadline.map(tokio::time::Instant::from_std);
    let delivery = fanout.drain_until(processor.store(), deadline).await;
    let now = Timestamp::now().as_datetime().timestamp_millis();
    for document in
        crate::metrics::sweep_documents(&delivery, &processor.config().metrics_namespace, now)
    {
        println!("{document}");
    }
    tracing::info!(
        delivered = delivery.delivered,
        backlog = delivery.backlog,
        backlog_age_ms = delivery.backlog_age_ms,
        error = delivery.error.as_deref(),
        "outbox swept"
    );
    Ok(delivery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_names_its_task_and_eventbridges_own_event_is_the_check() {
        let scheduled =
            json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}});
        assert_eq!(Task::from_payload(&scheduled), Ok(Task::Check));
        assert_eq!(
            Task::from_payload(&json!({"task": "check"})),
            Ok(Task::Check)
        );
        assert_eq!(
            Task::from_payload(&json!({"task": "drain"})),
            Ok(Task::Drain)
        );
        let unknown = Task::from_payload(&json!({"task": "sweep"})).unwrap_err();
        assert!(unknown.contains("unknown task \"sweep\""), "{unknown}");
        let wrong_type = Task::from_payload(&json!({"task": 1})).unwrap_err();
        assert!(wrong_type.contains("\"task\" is 1"), "{wrong_type}");
    }

    #[test]
    fn the_command_line_names_its_task_or_checks() {
        let args = |a: &[&str]| {
            a.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert_eq!(Task::from_args(args(&[])), Ok(Task::Check));
        assert_eq!(Task::from_args(args(&["check"])), Ok(Task::Check));
        assert_eq!(Task::from_args(args(&["drain"])), Ok(Task::Drain));
        assert!(Task::from_args(args(&["drain", "now"]))
            .unwrap_err()
            .contains("usage: mirror-check [check|drain]"));
        assert!(Task::from_args(args(&["--help"]))
            .unwrap_err()
            .contains("unknown task"));
    }
}
