//! `MIRROR_REDIS_URL` and its companions: where the users' streams are and how long they
//! are kept (docs/streams.md). Delivery itself is the `streams` module's.

use std::fmt;
use std::time::Duration;

use super::values::{duration, is_loopback, ConfigError, DatabaseUrl};

/// `MIRROR_STREAM_MAXLEN`: entries kept per user (approximately: `MAXLEN ~`). At about
/// 170 bytes an entry (measured, BENCHMARKS.md), 10,000 entries is about 1.7 MB per user.
pub const DEFAULT_MAXLEN: u64 = 10_000;
/// `MIRROR_STREAM_MAXLEN` from 100 to 1,000,000.
pub const MAXLEN_RANGE: (u64, u64) = (100, 1_000_000);

/// How a Secrets Manager secret holds the Redis auth token (the template's
/// `RedisAuthSecretForm`, which the cache's AUTH token is read with too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretForm {
    /// Unset: JSON with `authToken` or `password`, or else the whole string.
    #[default]
    Either,
    /// The whole secret string (`plain`).
    Plain,
    /// JSON, the token in this field (`authToken` or `password`).
    Field(&'static str),
}

impl SecretForm {
    pub fn named(name: &str) -> Option<SecretForm> {
        match name {
            "" => Some(SecretForm::Either),
            "plain" => Some(SecretForm::Plain),
            "authToken" => Some(SecretForm::Field("authToken")),
            "password" => Some(SecretForm::Field("password")),
            _ => None,
        }
    }
}

/// Where the streams are, and how long they are kept.
#[derive(Clone)]
pub struct StreamSettings {
    /// `MIRROR_REDIS_URL`: `redis://` on loopback, `rediss://` (TLS) anywhere else.
    url: String,
    /// `MIRROR_REDIS_AUTH_SECRET_ARN`: a Secrets Manager secret holding the auth token,
    /// read at the first connection and again whenever Redis refuses the token.
    pub auth_secret_arn: Option<String>,
    /// `MIRROR_REDIS_AUTH_SECRET_FORM`: how the secret holds the token.
    pub auth_secret_form: SecretForm,
    /// `MIRROR_STREAM_MAXLEN`, default [`DEFAULT_MAXLEN`].
    pub maxlen: u64,
    /// `MIRROR_STREAM_MAX_AGE` (for example `7d`): entries older are trimmed as well
    /// (`XTRIM … MINID ~`). Off by default.
    pub max_age: Option<Duration>,
}

impl fmt::Debug for StreamSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSettings")
            .field("url", &DatabaseUrl::new(self.url.clone()))
            .field("maxlen", &self.maxlen)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl StreamSettings {
    pub fn new(url: impl Into<String>) -> Result<Self, ConfigError> {
        let url = url.into();
        check_url(&url)?;
        Ok(StreamSettings {
            url,
            auth_secret_arn: None,
            auth_secret_form: SecretForm::Either,
            maxlen: DEFAULT_MAXLEN,
            max_age: None,
        })
    }

    /// None unless `MIRROR_REDIS_URL` is set.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<StreamSettings>, ConfigError> {
        let Some(url) = get("MIRROR_REDIS_URL") else {
            return Ok(None);
        };
        let mut settings = StreamSettings::new(url.trim())?;
        settings.auth_secret_arn = get("MIRROR_REDIS_AUTH_SECRET_ARN").filter(|v| !v.is_empty());
        if let Some(form) = get("MIRROR_REDIS_AUTH_SECRET_FORM") {
            settings.auth_secret_form =
                SecretForm::named(form.trim()).ok_or_else(|| ConfigError {
                    variable: "MIRROR_REDIS_AUTH_SECRET_FORM",
                    problem: format!("is {form:?}; expected plain, authToken or password"),
                })?;
        }
        if let Some(v) = get("MIRROR_STREAM_MAXLEN") {
            let (low, high) = MAXLEN_RANGE;
            settings.maxlen = match v.trim().parse::<u64>() {
                Ok(n) if (low..=high).contains(&n) => n,
                _ => {
                    return Err(ConfigError {
                        variable: "MIRROR_STREAM_MAXLEN",
                        problem: format!("is {v:?}; expected a whole number from {low} to {high}"),
                    })
                }
            };
        }
        settings.max_age = match get("MIRROR_STREAM_MAX_AGE").as_deref().map(str::trim) {
            None | Some("off") => None,
            Some(v) => Some(duration("MIRROR_STREAM_MAX_AGE", v)?),
        };
        Ok(Some(settings))
    }

    /// The URL with its credentials, for the client only.
    pub fn expose_url(&self) -> &str {
        &self.url
    }

    /// The URL without its password, for messages.
    pub fn shown(&self) -> String {
        DatabaseUrl::new(self.url.clone()).to_string()
    }
}

/// `redis://` or `rediss://`; plain `redis://` only to the loopback interface, as for
/// PostgreSQL: an auth token must never cross a network in the clear.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let problem = |problem: String| ConfigError {
        variable: "MIRROR_REDIS_URL",
        problem,
    };
    let shown = DatabaseUrl::new(url).to_string();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        problem(format!(
            "is {shown:?}; expected redis://host:port or rediss://host:port"
        ))
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    match scheme {
        "rediss" => Ok(()),
        "redis" if is_loopback(host) => Ok(()),
        "redis" => Err(problem(format!(
            "is {shown:?}: {host:?} is not on the loopback interface, so TLS is required: use rediss://"
        ))),
        _ => Err(problem(format!(
            "is {shown:?}; expected redis://host:port (loopback only) or rediss://host:port"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_redis_is_refused_off_the_loopback_interface() {
        assert!(StreamSettings::new("redis://127.0.0.1:6379").is_ok());
        assert!(StreamSettings::new("redis://localhost:6379/0").is_ok());
        assert!(StreamSettings::new("rediss://cache.example.com:6379").is_ok());
        let refused = StreamSettings::new("redis://:token@cache.example.com:6379").unwrap_err();
        assert!(refused.problem.contains("TLS is required"), "{refused}");
        assert!(!refused.to_string().contains("token"), "{refused}");
        assert!(StreamSettings::new("http://127.0.0.1").is_err());
    }
}
