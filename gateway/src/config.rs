//! The gateway's settings, read and range-checked once at start (docs/realtime.md lists
//! each one). A setting that is wrong stops the gateway with a message naming it; nothing
//! is guessed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use realtime_mirror::config::{duration_in, whole, ConfigError, StreamSettings};

/// `GATEWAY_LISTEN` when unset: loopback only; a deployment behind a load balancer sets
/// `0.0.0.0:8080`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// `GATEWAY_REPLAY_CAP`: a device that missed more entries than this is told to resync.
pub const DEFAULT_REPLAY_CAP: u64 = 1_000;
pub const REPLAY_CAP_RANGE: (u64, u64) = (1, 100_000);
/// `GATEWAY_PRESENCE_TTL`: how long the node's heartbeat (`gateway:node:{N}`) outlives its
/// last refresh (every half of it): how soon a crashed node's devices stop being present.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(120);
pub const PRESENCE_TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(86_400));
/// `GATEWAY_SHUTDOWN_GRACE`: how long SIGTERM waits for devices to be told and let go.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub const SHUTDOWN_GRACE_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(300));
/// `GATEWAY_JWT_LEEWAY`: clock skew allowed on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub const LEEWAY_RANGE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(300));

/// Where the keys that sign device tokens come from: exactly one of the two.
#[derive(Clone)]
pub enum KeySource {
    /// `GATEWAY_JWT_HS256_SECRET`: a shared secret (at least 32 bytes).
    Hs256(Vec<u8>),
    /// `GATEWAY_JWT_JWKS`: a JWKS file, RS256 or ES256 public keys.
    JwksFile(PathBuf),
    /// `GATEWAY_JWT_JWKS`: an `https://` URL of a JWKS (Firebase Auth, Clerk, Auth0, …),
    /// fetched at start and again when a token names a key it does not hold.
    JwksUrl(String),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Hs256(_) => f.write_str("Hs256(***)"),
            KeySource::JwksFile(path) => write!(f, "JwksFile({})", path.display()),
            KeySource::JwksUrl(url) => write!(f, "JwksUrl({url})"),
        }
    }
}

/// Every setting of the gateway.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    /// `MIRROR_REDIS_URL` (required) and its companions, as for the mirror.
    pub streams: StreamSettings,
    pub keys: KeySource,
    /// `GATEWAY_JWT_ISSUER` (required): the `iss` every token must carry.
    pub issuer: String,
    /// `GATEWAY_JWT_AUDIENCE` (required): the `aud` every token must carry.
    pub audience: String,
    /// `GATEWAY_JWT_USER_CLAIM`, default `sub`: the claim that names the user.
    pub user_claim: String,
    pub leeway: Duration,
    pub replay_cap: usize,
    pub presence_ttl: Duration,
    pub shutdown_grace: Duration,
    /// `GATEWAY_DEMO=on`: serves `/demo` and mints development tokens (HS256 only). Never
    /// in production: anyone who reaches it can read any user's stream.
    pub demo: bool,
    /// `GATEWAY_NODE_ID`, default `<hostname>:<port>`: what `device:{id}:node` holds.
    pub node_id: String,
}

fn problem(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

impl Settings {
    pub fn from_env() -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let listen_text = get("GATEWAY_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text.trim().parse().map_err(|_| {
            problem(
                "GATEWAY_LISTEN",
                format!("is {listen_text:?}; expected host:port such as 0.0.0.0:8080"),
            )
        })?;
        let streams = StreamSettings::from_lookup(&get)?.ok_or_else(|| {
            problem(
                "MIRROR_REDIS_URL",
                "is not set; the gateway reads the users' streams from it (redis:// on loopback, rediss:// elsewhere)",
            )
        })?;
        let keys = match (get("GATEWAY_JWT_HS256_SECRET"), get("GATEWAY_JWT_JWKS")) {
            (Some(_), Some(_)) => {
                return Err(problem(
                    "GATEWAY_JWT_HS256_SECRET",
                    "and GATEWAY_JWT_JWKS are both set; set exactly one",
                ))
            }
            (None, None) => return Err(problem(
                "GATEWAY_JWT_HS256_SECRET",
                "and GATEWAY_JWT_JWKS are both unset; set one: the key that verifies device tokens",
            )),
            (Some(secret), None) if secret.len() < 32 => {
                return Err(problem(
                    "GATEWAY_JWT_HS256_SECRET",
                    format!("is {} bytes; expected at least 32", secret.len()),
                ))
            }
            (Some(secret), None) => KeySource::Hs256(secret.into_bytes()),
            (None, Some(jwks)) => {
                let jwks = jwks.trim().to_string();
                if jwks.starts_with("https://") {
                    KeySource::JwksUrl(jwks)
                } else if jwks.contains("://") {
                    return Err(problem(
                        "GATEWAY_JWT_JWKS",
                        format!("is {jwks:?}; a URL must be https://"),
                    ));
                } else {
                    KeySource::JwksFile(PathBuf::from(jwks))
                }
            }
        };
        let required = |variable: &'static str| {
            get(variable).map(|v| v.trim().to_string()).ok_or_else(|| {
                problem(
                    variable,
                    "is not set; every token's claim is checked against it",
                )
            })
        };
        let issuer = required("GATEWAY_JWT_ISSUER")?;
        let audience = required("GATEWAY_JWT_AUDIENCE")?;
        let user_claim = get("GATEWAY_JWT_USER_CLAIM")
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "sub".to_string());
        let leeway = match get("GATEWAY_JWT_LEEWAY") {
            Some(v) => duration_in("GATEWAY_JWT_LEEWAY", &v, LEEWAY_RANGE)?,
            None => DEFAULT_LEEWAY,
        };
        let replay_cap = match get("GATEWAY_REPLAY_CAP") {
            Some(v) => whole("GATEWAY_REPLAY_CAP", &v, REPLAY_CAP_RANGE)? as usize,
            None => DEFAULT_REPLAY_CAP as usize,
        };
        let presence_ttl = match get("GATEWAY_PRESENCE_TTL") {
            Some(v) => duration_in("GATEWAY_PRESENCE_TTL", &v, PRESENCE_TTL_RANGE)?,
            None => DEFAULT_PRESENCE_TTL,
        };
        let shutdown_grace = match get("GATEWAY_SHUTDOWN_GRACE") {
            Some(v) => duration_in("GATEWAY_SHUTDOWN_GRACE", &v, SHUTDOWN_GRACE_RANGE)?,
            None => DEFAULT_SHUTDOWN_GRACE,
        };
        let demo = match get("GATEWAY_DEMO").as_deref().map(str::trim) {
            None | Some("off") | Some("false") | Some("0") => false,
            Some("on") | Some("true") | Some("1") => true,
            Some(other) => {
                return Err(problem(
                    "GATEWAY_DEMO",
                    format!("is {other:?}; expected on or off"),
                ))
            }
        };
        if demo && !matches!(keys, KeySource::Hs256(_)) {
            return Err(problem(
                "GATEWAY_DEMO",
                "is on, but the demo mints its tokens with GATEWAY_JWT_HS256_SECRET, which is not set",
            ));
        }
        let node_id = get("GATEWAY_NODE_ID")
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "gateway".to_string());
                format!("{host}:{}", listen.port())
            });
        Ok(Settings {
            listen,
            streams,
            keys,
            issuer,
            audience,
            user_claim,
            leeway,
            replay_cap,
            presence_ttl,
            shutdown_grace,
            demo,
            node_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 4] = [
        ("MIRROR_REDIS_URL", "redis://127.0.0.1:6379"),
        (
            "GATEWAY_JWT_HS256_SECRET",
            "0123456789abcdef0123456789abcdef",
        ),
        ("GATEWAY_JWT_ISSUER", "https://issuer.example"),
        ("GATEWAY_JWT_AUDIENCE", "app"),
    ];

    #[test]
    fn settings_have_the_documented_defaults() {
        let s = settings(&BASE).unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.user_claim, "sub");
        assert_eq!(s.replay_cap, 1_000);
        assert_eq!(s.presence_ttl, Duration::from_secs(120));
        assert_eq!(s.leeway, Duration::from_secs(30));
        assert!(!s.demo);
        assert!(
            format!("{:?}", s.keys).contains("***"),
            "the secret is never printed"
        );
    }

    #[test]
    fn every_setting_out_of_range_names_its_variable() {
        let cases = [
            ("GATEWAY_LISTEN", "8080", "host:port"),
            ("GATEWAY_REPLAY_CAP", "0", "from 1 to 100000"),
            ("GATEWAY_PRESENCE_TTL", "1s", "from 10s to 1d"),
            ("GATEWAY_SHUTDOWN_GRACE", "1h", "from 1s to 5m"),
            ("GATEWAY_JWT_LEEWAY", "10m", "from 0s to 5m"),
            ("GATEWAY_DEMO", "maybe", "on or off"),
            (
                "GATEWAY_JWT_JWKS",
                "http://keys.example/jwks.json",
                "https://",
            ),
        ];
        for (variable, value, expected) in cases {
            let mut pairs: Vec<_> = BASE
                .into_iter()
                .filter(|(k, _)| variable != "GATEWAY_JWT_JWKS" || *k != "GATEWAY_JWT_HS256_SECRET")
                .collect();
            pairs.push((variable, value));
            let err = settings(&pairs).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(expected) && (err.variable == variable || text.contains(variable)),
                "{variable}={value}: {text}"
            );
        }
    }

    #[test]
    fn the_key_issuer_audience_and_redis_are_required() {
        for missing in [
            "MIRROR_REDIS_URL",
            "GATEWAY_JWT_ISSUER",
            "GATEWAY_JWT_AUDIENCE",
        ] {
            let pairs: Vec<_> = BASE.into_iter().filter(|(k, _)| *k != missing).collect();
            let err = settings(&pairs).unwrap_err();
            assert_eq!(err.variable, missing, "{err}");
        }
        let pairs: Vec<_> = BASE
            .into_iter()
            .filter(|(k, _)| *k != "GATEWAY_JWT_HS256_SECRET")
            .collect();
        assert!(settings(&pairs)
            .unwrap_err()
            .to_string()
            .contains("set one"));
        let mut short = BASE.to_vec();
        short[1].1 = "short";
        assert!(settings(&short)
            .unwrap_err()
            .to_string()
            .contains("at least 32"));
    }

    #[test]
    fn the_demo_needs_the_hs256_secret() {
        let mut pairs: Vec<_> = BASE
            .into_iter()
            .filter(|(k, _)| *k != "GATEWAY_JWT_HS256_SECRET")
            .collect();
        pairs.push(("GATEWAY_JWT_JWKS", "/etc/jwks.json"));
        pairs.push(("GATEWAY_DEMO", "on"));
        assert!(settings(&pairs)
            .unwrap_err()
            .to_string()
            .contains("HS256_SECRET"));
    }
}
