//! One place that builds the log subscriber. Logs go to stderr (stdout carries command
//! output and EMF metrics); inside Lambda, or with `MIRROR_LOG_FORMAT=json`, as JSON lines
//! whose `span` carries the record's message id, event id, event type and entity id.
//!
//! Message bodies are never logged, at any level: the mirror's own events name fields, never
//! their content, and the crates that could print a request body at their verbose levels
//! (the AWS SDK's HTTP stack: an SQS `SendMessage` to the dead-letter queue carries a body)
//! are capped at `info` whatever `RUST_LOG` says.

use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

const CAPPED: [&str; 10] = [
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "aws_sdk_sqs",
    "aws_sdk_secretsmanager",
    "aws_config",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
];

fn caps() -> Targets {
    CAPPED.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, target| t.with_target(*target, LevelFilter::INFO),
    )
}

/// The subscriber, writing to `writer`: JSON lines or human-readable text.
pub fn subscriber<W>(writer: W, json: bool, filter: EnvFilter) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(writer).boxed()
    };
    Box::new(Registry::default().with(layer.with_filter(filter).with_filter(caps())))
}

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MIRROR_LOG_FORMAT")
        .map(|f| f == "json")
        .unwrap_or(false)
        || std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    // A second initialisation (tests) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber(std::io::stderr, json, filter));
}

/// This process's own peak resident set size in KiB (`VmHWM` of /proc/self/status: the
/// high-water mark of the memory this program mapped since it was executed, not counting the
/// parent it was forked from, which wait4's `ru_maxrss` does). None off Linux.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The CPU time this process has used so far, user and system, of every thread that ran, to
/// the nanosecond (`clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`): /proc's `utime` and `stime`
/// count 10 ms ticks, as much as a batch of 1,000 events takes, so a per-batch difference of
/// them was off by up to a whole batch. None where the clock is missing.
pub fn process_cpu_seconds() -> Option<f64> {
    cpu_time::ProcessTime::try_now()
        .ok()
        .map(|t| t.as_duration().as_secs_f64())
}

#[cfg(test)]
mod tests {
    /// Work done shows as CPU time, in seconds (bounded by a count of rounds, never by a
    /// clock).
    #[test]
    fn the_process_cpu_time_grows_with_work_done() {
        let before = super::process_cpu_seconds().expect("Linux has /proc/self/stat");
        let mut x = 0u64;
        for round in 0..2_000u64 {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
            if super::process_cpu_seconds().unwrap() - before >= 0.05 || round == 1_999 {
                break;
            }
        }
        let spent = super::process_cpu_seconds().unwrap() - before;
        assert!(spent >= 0.05, "{spent} s of CPU after the work ({x})");
        assert!(spent < 3_600.0, "{spent}: not ticks of another unit");
    }

    /// A tenth of a millisecond of work shows: far below the 10 ms ticks of /proc, so the
    /// difference around one batch measures that batch.
    #[test]
    fn the_process_cpu_time_resolves_far_less_than_a_tick() {
        let before = super::process_cpu_seconds().expect("Linux has the process CPU clock");
        let mut x = 0u64;
        for i in 0..200_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        let spent = super::process_cpu_seconds().unwrap() - before;
        assert!(
            spent > 0.0,
            "no CPU time after 200,000 rounds of work ({x})"
        );
        assert!(
            spent < 0.01,
            "{spent} s: more than a tick for 200,000 multiplications"
        );
    }
}
