//! Settings read once per process from the environment (the functions have no other input).
//! The foundation floor (docs/architecture.md): every setting's name, default and range are
//! here, as plain values; each feature builds what it needs from them.

mod streams;
mod values;

use std::time::Duration;

pub use streams::{SecretForm, StreamSettings, DEFAULT_MAXLEN, MAXLEN_RANGE};
use values::{boolean, namespace};
pub use values::{
    duration, duration_in, is_loopback, whole, ConfigError, DatabaseEndpoint, DatabaseUrl,
    CHUNK_SIZE_RANGE, DB_TIMEOUT_RANGE, DEADLINE_MARGIN_RANGE, MAX_CONNECTIONS_RANGE,
    MAX_FUTURE_SKEW_RANGE, PORT_RANGE, STATEMENT_TIMEOUT_RANGE,
};

/// The embedded default: a SQLite file in the working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://mirror.db";

/// The CloudWatch namespace of the metrics unless `MIRROR_METRICS_NAMESPACE` says otherwise.
pub const NAMESPACE: &str = "RealtimeMirror";

/// The scheduled function's name: its metrics' `Function` dimension.
pub const MIRROR_CHECK_FUNCTION: &str = "mirror-check";

#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL`, default [`DEFAULT_DATABASE_URL`].
    pub database_url: DatabaseUrl,
    /// `MIRROR_MAX_CONNECTIONS`, default 2: the most database connections — and so statements
    /// in flight — one process holds. Lambda scales out by processes, so the database sees at
    /// most (concurrent executions × this).
    pub max_connections: u32,
    /// `MIRROR_MAX_FUTURE_SKEW`, default 15 minutes: versions further ahead are rejected.
    pub max_future_skew: Duration,
    /// `MIRROR_CHUNK_SIZE`, default 1,000: the most events in one transaction; a batch of up
    /// to this many is one transaction, a larger one is split.
    pub chunk_size: usize,
    /// `MIRROR_DB_TIMEOUT`, default 10 s: how long to wait for a connection before the
    /// records are reported as failures (and redelivered by the queue).
    pub db_timeout: Duration,
    /// `MIRROR_MIGRATE`, default true: run the embedded migrations when the process starts.
    pub migrate_on_start: bool,
    /// `DATABASE_SECRET_ARN`: read the PostgreSQL credentials from this Secrets Manager
    /// secret at cold start (it takes precedence over `DATABASE_URL`).
    pub database_secret_arn: Option<String>,
    /// `MIRROR_STATEMENT_CACHE`, default true: cache prepared statements per connection.
    /// Off behind RDS Proxy, where named prepared statements pin sessions.
    pub statement_cache: bool,
    /// `MIRROR_DB_HOST`, `MIRROR_DB_PORT`, `MIRROR_DB_NAME`: where the database of
    /// `DATABASE_SECRET_ARN` is. A secret RDS manages for its master user holds only the user
    /// name and password; these supply the rest (and, when set, win over the secret's own).
    pub database_endpoint: DatabaseEndpoint,
    /// `MIRROR_STATEMENT_TIMEOUT`, default 20 s: PostgreSQL cancels a statement that runs (or
    /// waits for a lock) longer, so a blocked statement fails its records, not the whole
    /// invocation (the functions' timeout is 30 s).
    pub statement_timeout: Duration,
    /// `MIRROR_DEADLINE_MARGIN`, default 2 s: in Lambda, chunks not committed this long before
    /// the invocation's deadline are given up and reported as batch item failures, so that
    /// the committed ones are still acknowledged.
    pub deadline_margin: Duration,
    /// `MIRROR_METRICS_NAMESPACE`, default `RealtimeMirror`: the CloudWatch namespace of the
    /// functions' metrics. The template sets `RealtimeMirror/<stack name>`, so that two
    /// stacks in one account (staging, prod) keep their metrics and alarms apart.
    pub metrics_namespace: String,
    /// `MIRROR_REDIS_URL` and its companions: realtime delivery to per-user Redis Streams
    /// (delivered by the `streams` module); off (None) unless the URL is set.
    pub streams: Option<StreamSettings>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: DatabaseUrl::new(DEFAULT_DATABASE_URL),
            max_connections: 2,
            max_future_skew: Duration::from_secs(15 * 60),
            chunk_size: 1000,
            db_timeout: Duration::from_secs(10),
            migrate_on_start: true,
            database_secret_arn: None,
            statement_cache: true,
            database_endpoint: DatabaseEndpoint::default(),
            statement_timeout: Duration::from_secs(20),
            deadline_margin: Duration::from_secs(2),
            metrics_namespace: NAMESPACE.to_string(),
            streams: None,
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (tests pass a map instead of the environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Ok(Config {
            database_url: get("DATABASE_URL")
                .map(DatabaseUrl::new)
                .unwrap_or(defaults.database_url),
            max_connections: match get("MIRROR_MAX_CONNECTIONS") {
                None => defaults.max_connections,
                Some(v) => whole("MIRROR_MAX_CONNECTIONS", &v, MAX_CONNECTIONS_RANGE)? as u32,
            },
            max_future_skew: match get("MIRROR_MAX_FUTURE_SKEW") {
                None => defaults.max_future_skew,
                Some(v) => duration_in("MIRROR_MAX_FUTURE_SKEW", &v, MAX_FUTURE_SKEW_RANGE)?,
            },
            chunk_size: match get("MIRROR_CHUNK_SIZE") {
                None => defaults.chunk_size,
                Some(v) => whole("MIRROR_CHUNK_SIZE", &v, CHUNK_SIZE_RANGE)? as usize,
            },
            db_timeout: match get("MIRROR_DB_TIMEOUT") {
                None => defaults.db_timeout,
                Some(v) => duration_in("MIRROR_DB_TIMEOUT", &v, DB_TIMEOUT_RANGE)?,
            },
            migrate_on_start: boolean(
                "MIRROR_MIGRATE",
                get("MIRROR_MIGRATE"),
                defaults.migrate_on_start,
            )?,
            database_secret_arn: get("DATABASE_SECRET_ARN"),
            statement_cache: boolean(
                "MIRROR_STATEMENT_CACHE",
                get("MIRROR_STATEMENT_CACHE"),
                defaults.statement_cache,
            )?,
            database_endpoint: DatabaseEndpoint {
                host: get("MIRROR_DB_HOST").map(|h| h.trim().to_string()),
                port: match get("MIRROR_DB_PORT") {
                    None => None,
                    Some(v) => Some(whole("MIRROR_DB_PORT", &v, PORT_RANGE)? as u16),
                },
                name: get("MIRROR_DB_NAME").map(|n| n.trim().to_string()),
            },
            statement_timeout: match get("MIRROR_STATEMENT_TIMEOUT") {
                None => defaults.statement_timeout,
                Some(v) => duration_in("MIRROR_STATEMENT_TIMEOUT", &v, STATEMENT_TIMEOUT_RANGE)?,
            },
            deadline_margin: match get("MIRROR_DEADLINE_MARGIN") {
                None => defaults.deadline_margin,
                Some(v) => duration_in("MIRROR_DEADLINE_MARGIN", &v, DEADLINE_MARGIN_RANGE)?,
            },
            metrics_namespace: match get("MIRROR_METRICS_NAMESPACE") {
                None => defaults.metrics_namespace,
                Some(v) => namespace("MIRROR_METRICS_NAMESPACE", v.trim())?,
            },
            streams: StreamSettings::from_lookup(get)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_never_prints_its_password() {
        let url = DatabaseUrl::new("postgres://mirror:s3cret@db.example:5432/app");
        assert_eq!(url.to_string(), "postgres://***@db.example:5432/app");
        assert!(!format!("{url:?}").contains("s3cret"));
    }

    #[test]
    fn settings_have_the_documented_defaults_and_forms() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.database_url.expose(), "sqlite://mirror.db");
        assert_eq!(c.max_connections, 2);
        assert_eq!(c.max_future_skew, Duration::from_secs(900));
        let c = Config::from_lookup(|n| match n {
            "MIRROR_MAX_FUTURE_SKEW" => Some("2m".into()),
            "MIRROR_MAX_CONNECTIONS" => Some("7".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.max_future_skew, Duration::from_secs(120));
        assert_eq!(c.max_connections, 7);
        let e = Config::from_lookup(|n| (n == "MIRROR_MAX_CONNECTIONS").then(|| "0".into()))
            .unwrap_err();
        assert_eq!(e.variable, "MIRROR_MAX_CONNECTIONS");
    }

    /// The error for `variable=value`, or None when it is accepted.
    fn refusal(variable: &str, value: &str) -> Option<String> {
        Config::from_lookup(|n| (n == variable).then(|| value.to_string()))
            .err()
            .map(|e| {
                assert_eq!(e.variable, variable);
                e.to_string()
            })
    }

    #[test]
    fn every_setting_is_range_checked_at_start_with_its_name_and_range() {
        for (variable, accepted, refused, range) in [
            (
                "MIRROR_MAX_CONNECTIONS",
                ["1", "1000"],
                ["0", "1001"],
                "from 1 to 1000",
            ),
            (
                "MIRROR_CHUNK_SIZE",
                ["1", "10000"],
                ["0", "10001"],
                "from 1 to 10000",
            ),
            (
                "MIRROR_MAX_FUTURE_SKEW",
                ["0", "30d"],
                ["31d", "720h1"],
                "from 0s to 30d",
            ),
            (
                "MIRROR_DB_TIMEOUT",
                ["100ms", "15m"],
                ["99ms", "901"],
                "from 100ms to 15m",
            ),
            (
                "MIRROR_DB_PORT",
                ["1", "65535"],
                ["0", "65536"],
                "from 1 to 65535",
            ),
            (
                "MIRROR_STATEMENT_TIMEOUT",
                ["100ms", "15m"],
                ["99ms", "16m"],
                "from 100ms to 15m",
            ),
            (
                "MIRROR_DEADLINE_MARGIN",
                ["0", "5m"],
                ["301s", "1h"],
                "from 0s to 5m",
            ),
        ] {
            for value in accepted {
                assert_eq!(refusal(variable, value), None, "{variable}={value}");
            }
            for value in refused {
                let why = refusal(variable, value).expect(value);
                assert!(why.contains(variable), "{why}");
                assert!(why.contains(range) || why.contains("such as"), "{why}");
            }
        }
        for variable in ["MIRROR_MIGRATE", "MIRROR_STATEMENT_CACHE"] {
            assert!(refusal(variable, "maybe")
                .unwrap()
                .contains("true or false"));
        }
    }

    #[test]
    fn durations_too_large_for_their_unit_are_errors_not_wrapped_values() {
        // 5124095576030432 h is more seconds than a u64 holds; it once wrapped to about an hour.
        for value in [
            "100000000000000",
            "5124095576030432h",
            "18446744073709551616",
        ] {
            let why = refusal("MIRROR_MAX_FUTURE_SKEW", value).expect(value);
            assert!(why.contains("MIRROR_MAX_FUTURE_SKEW"), "{why}");
        }
        assert!(duration("X", "5124095576030432h").is_err());
        assert_eq!(duration("X", "2d").unwrap(), Duration::from_secs(172_800));
    }
}
