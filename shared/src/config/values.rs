//! The forms a setting may take, checked once at start: durations, whole numbers in a range,
//! booleans, CloudWatch namespaces, URLs that never print their password, loopback hosts.

use std::fmt;
use std::time::Duration;

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

/// Where the database is, when the credentials come from a secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseEndpoint {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub name: Option<String>,
}

/// A CloudWatch namespace: 1 to 255 of letters, digits and `.-_/#:`, not starting with
/// `AWS/` (reserved for AWS's own).
pub(super) fn namespace(variable: &'static str, value: &str) -> Result<String, ConfigError> {
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

pub(super) fn boolean(
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

/// A whole number within `(low, high)`, or an error naming the variable and the range.
pub fn whole(
    variable: &'static str,
    value: &str,
    (low, high): (u64, u64),
) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (low..=high).contains(&n) => Ok(n),
        _ => Err(ConfigError {
            variable,
            problem: format!("is {value:?}; expected a whole number from {low} to {high}"),
        }),
    }
}

/// A duration (the forms of [`duration`]) within `(low, high)`.
pub fn duration_in(
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

/// A host on the loopback interface (or a Unix socket path): the only place a password may
/// travel without TLS.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}
