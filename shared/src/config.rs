//! Settings read once per process from the environment (the functions have no other input).

use std::fmt;
use std::time::Duration;

/// The embedded default: a SQLite file in the working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://mirror.db";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {variable} {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

/// A database URL that never prints its password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The URL with its credentials, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_sqlite(url: &str) -> bool {
        url.starts_with("sqlite:")
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                write!(f, "{}://***{}", &self.0[..scheme], &self.0[at..])
            }
            _ => f.write_str(&self.0),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

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
    /// `MIRROR_CHUNK_SIZE`, default 500: events per transaction.
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
    /// ([`crate::streams`]); off (None) unless the URL is set.
    pub streams: Option<crate::streams::StreamSettings>,
}

/// Where the database is, when the credentials come from a secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseEndpoint {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub name: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: DatabaseUrl::new(DEFAULT_DATABASE_URL),
            max_connections: 2,
            max_future_skew: Duration::from_secs(15 * 60),
            chunk_size: 500,
            db_timeout: Duration::from_secs(10),
            migrate_on_start: true,
            database_secret_arn: None,
            statement_cache: true,
            database_endpoint: DatabaseEndpoint::default(),
            statement_timeout: Duration::from_secs(20),
            deadline_margin: Duration::from_secs(2),
            metrics_namespace: crate::metrics::NAMESPACE.to_string(),
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
            streams: crate::streams::StreamSettings::from_lookup(get)?,
        })
    }
}

/// A CloudWatch namespace: 1 to 255 of letters, digits and `.-_/#:`, not starting with
/// `AWS/` (reserved for AWS's own).
fn namespace(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
    if value.len() > 255 || !value.chars().all(allowed) || value.starts_with("AWS/") {
        return Err(ConfigError {
            variable,
            problem: format!(
                "is {value:?}; expected a CloudWatch namespace (up to 255 letters, digits and \
                 . - _ / # :, not starting with AWS/)"
            ),
        });
    }
    Ok(value.to_string())
}

fn boolean(
    variable: &'static str,
    value: Option<String>,
    default: bool,
) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::trim) {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(ConfigError {
            variable,
            problem: format!("is {other:?}; expected true or false"),
        }),
    }
}

/// `MIRROR_MAX_CONNECTIONS`: a PostgreSQL server allows 100 connections by default, and
/// Lambda multiplies this by the concurrent executions.
pub const MAX_CONNECTIONS_RANGE: (u64, u64) = (1, 1000);
/// `MIRROR_CHUNK_SIZE`: up to the largest Lambda SQS batch (10,000).
pub const CHUNK_SIZE_RANGE: (u64, u64) = (1, 10_000);
/// `MIRROR_MAX_FUTURE_SKEW`: from none at all to 30 days.
pub const MAX_FUTURE_SKEW_RANGE: (Duration, Duration) =
    (Duration::ZERO, Duration::from_secs(30 * 86_400));
/// `MIRROR_DB_TIMEOUT`: from 100 ms to a Lambda function's longest run (15 minutes).
pub const DB_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(15 * 60));

/// `MIRROR_DB_PORT`.
pub const PORT_RANGE: (u64, u64) = (1, 65_535);
/// `MIRROR_STATEMENT_TIMEOUT`: from 100 ms to a Lambda function's longest run.
pub const STATEMENT_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(15 * 60));
/// `MIRROR_DEADLINE_MARGIN`: from none to 5 minutes.
pub const DEADLINE_MARGIN_RANGE: (Duration, Duration) =
    (Duration::ZERO, Duration::from_secs(5 * 60));

fn whole(variable: &'static str, value: &str, (low, high): (u64, u64)) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (low..=high).contains(&n) => Ok(n),
        _ => Err(ConfigError {
            variable,
            problem: format!("is {value:?}; expected a whole number from {low} to {high}"),
        }),
    }
}

fn duration_in(
    variable: &'static str,
    value: &str,
    (low, high): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let d = duration(variable, value)?;
    if (low..=high).contains(&d) {
        Ok(d)
    } else {
        Err(ConfigError {
            variable,
            problem: format!(
                "is {value:?}; expected a duration from {} to {}",
                show(low),
                show(high)
            ),
        })
    }
}

/// A duration in the largest unit that divides it.
fn show(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// `900`, `900s`, `15m`, `1h`, `2d` or `250ms`; a bare number is seconds. A number too large
/// for its unit is an error, never a wrapped value.
pub fn duration(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let bad = || ConfigError {
        variable,
        problem: format!(
            "is {value:?}; expected a duration such as 900, 900s, 15m, 1h, 2d or 250ms"
        ),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = |per: u64| n.checked_mul(per).map(Duration::from_secs).ok_or_else(bad);
    match unit {
        "" | "s" => seconds(1),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        _ => Err(bad()),
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
