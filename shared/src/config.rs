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
                Some(v) => positive("MIRROR_MAX_CONNECTIONS", &v)? as u32,
            },
            max_future_skew: match get("MIRROR_MAX_FUTURE_SKEW") {
                None => defaults.max_future_skew,
                Some(v) => duration("MIRROR_MAX_FUTURE_SKEW", &v)?,
            },
            chunk_size: match get("MIRROR_CHUNK_SIZE") {
                None => defaults.chunk_size,
                Some(v) => positive("MIRROR_CHUNK_SIZE", &v)? as usize,
            },
            db_timeout: match get("MIRROR_DB_TIMEOUT") {
                None => defaults.db_timeout,
                Some(v) => duration("MIRROR_DB_TIMEOUT", &v)?,
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
        })
    }
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

fn positive(variable: &'static str, value: &str) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=u32::MAX as u64).contains(&n) => Ok(n),
        _ => Err(ConfigError {
            variable,
            problem: format!("is {value:?}; expected a whole number of at least 1"),
        }),
    }
}

/// `900`, `900s`, `15m`, `1h` or `250ms`; a bare number is seconds.
pub fn duration(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let bad = || ConfigError {
        variable,
        problem: format!("is {value:?}; expected a duration such as 900, 900s, 15m, 1h or 250ms"),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
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
}
