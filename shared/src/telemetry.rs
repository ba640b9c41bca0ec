//! One place that builds the log subscriber. Logs go to stderr (stdout carries command
//! output); inside Lambda, or with `MIRROR_LOG_FORMAT=json`, as JSON lines. No payload
//! content is ever a field of a log line: records are logged by message id, event id, event
//! type and entity id only.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MIRROR_LOG_FORMAT")
        .map(|f| f == "json")
        .unwrap_or(false)
        || std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) keeps the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}
