//! The scheduled self-check (`mirror-check`): run by an EventBridge schedule, it checks the
//! mirror against its own rules ([`crate::check::self_check`]) and writes the count of each
//! kind as EMF metrics (`Function=mirror-check`), which the template alarms on. Outside
//! Lambda it runs once and prints the report, for cron or a shell.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

use crate::batch::Processor;
use crate::check::{self, SelfCheckOptions};
use crate::config::Config;

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
    let processor = Processor::connect(config).await?;
    let options = SelfCheckOptions {
        page: processor.config().chunk_size,
        stub_age,
    };
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        let report = once(&processor, &options).await?;
        println!("{report}");
        return Ok(());
    }
    let (processor, options) = (&processor, &options);
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| once(processor, options))).await
}

/// One self-check: the EMF document on stdout, the report as the result.
pub async fn once(processor: &Processor, options: &SelfCheckOptions) -> Result<Value, Error> {
    let report = check::self_check(processor.store(), options, None).await?;
    let now = crate::timestamp::Timestamp::now()
        .as_datetime()
        .timestamp_millis();
    println!(
        "{}",
        crate::metrics::check_document(&report, &processor.config().metrics_namespace, now)
    );
    tracing::info!(
        conversations = report.conversations,
        inconsistent = report.inconsistent,
        repairable = report.repairable,
        "self-check done"
    );
    Ok(serde_json::to_value(&report)?)
}
