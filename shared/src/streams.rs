//! Realtime delivery (issue 12, seed 003): every message change that took effect is added to
//! the Redis Stream of each user it concerns, `stream:user:{userId}`, as a pointer — `type`
//! (`message.created|updated|deleted`), `messageId`, `conversationId`, `senderId`, `version`,
//! `ts` (when the mirror applied it, epoch milliseconds), `prev` (the stream's entry before
//! it, so a device can tell a replay with a hole) — never a body.
//!
//! The changes come from the store's transactional outbox ([`crate::store::OutboxLease`]):
//! what a duplicate or stale event would have announced is never written, and what is
//! written is delivered at least once, even across a crash or a Redis outage. A consumer
//! deduplicates by `messageId` + `version`. The device side — replay from the last id a
//! device acknowledged (`device:{deviceId}:lastSeen`), acknowledgement, and a resync from
//! SQL whenever entries it missed may have been trimmed away — is [`replay`] and [`ack`]; the contract
//! is in `docs/streams.md`.
//!
//! Off unless `MIRROR_REDIS_URL` is set. Client: the `redis` crate (redis-rs, the most used
//! Rust Redis client; tokio and rustls support, pipelining).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use serde::Serialize;

use crate::config::ConfigError;
use crate::store::{Announcement, Backlog, Store};
use crate::timestamp::Timestamp;

/// `MIRROR_STREAM_MAXLEN`: entries kept per user (approximately: `MAXLEN ~`). At about
/// 170 bytes an entry (measured, BENCHMARKS.md), 10,000 entries is about 1.7 MB per user.
pub const DEFAULT_MAXLEN: u64 = 10_000;
/// `MIRROR_STREAM_MAXLEN` from 100 to 1,000,000.
pub const MAXLEN_RANGE: (u64, u64) = (100, 1_000_000);
/// Outbox rows per lease (one pipeline to Redis).
pub const DRAIN_PAGE: i64 = 1_000;
/// A process that announced nothing itself still drains the outbox this often, so that
/// rows left by a crash between commit and `XADD` are delivered by whoever runs next.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// After a failed delivery, the next attempt waits this long, so that a Redis outage costs
/// each batch nothing (the rows wait in the outbox).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long connecting to Redis, and each reply, may take.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// The key of a user's stream. The braces are a Redis Cluster hash tag: every key of one
/// user lands in one slot.
pub fn stream_key(user_id: &str) -> String {
    format!("stream:user:{{{user_id}}}")
}

/// Where a device's last acknowledged entry id is kept.
pub fn device_key(device_id: &str) -> String {
    format!("device:{{{device_id}}}:lastSeen")
}

/// Where the streams are, and how long they are kept.
#[derive(Clone)]
pub struct StreamSettings {
    /// `MIRROR_REDIS_URL`: `redis://` on loopback, `rediss://` (TLS) anywhere else.
    url: String,
    /// `MIRROR_REDIS_AUTH_SECRET_ARN`: a Secrets Manager secret holding the auth token
    /// (plain, or JSON with `authToken` or `password`), read at cold start.
    pub auth_secret_arn: Option<String>,
    /// `MIRROR_STREAM_MAXLEN`, default [`DEFAULT_MAXLEN`].
    pub maxlen: u64,
    /// `MIRROR_STREAM_MAX_AGE` (for example `7d`): entries older are trimmed as well
    /// (`XTRIM … MINID ~`). Off by default.
    pub max_age: Option<Duration>,
}

impl fmt::Debug for StreamSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSettings")
            .field("url", &crate::config::DatabaseUrl::new(self.url.clone()))
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
        settings.auth_secret_arn = get("MIRROR_REDIS_AUTH_SECRET_ARN");
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
            Some(v) => Some(crate::config::duration("MIRROR_STREAM_MAX_AGE", v)?),
        };
        Ok(Some(settings))
    }

    /// The URL without its password, for messages.
    pub fn shown(&self) -> String {
        crate::config::DatabaseUrl::new(self.url.clone()).to_string()
    }
}

/// `redis://` or `rediss://`; plain `redis://` only to the loopback interface, as for
/// PostgreSQL: an auth token must never cross a network in the clear.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let problem = |problem: String| ConfigError {
        variable: "MIRROR_REDIS_URL",
        problem,
    };
    let shown = crate::config::DatabaseUrl::new(url).to_string();
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
        "redis" if crate::credentials::is_loopback(host) => Ok(()),
        "redis" => Err(problem(format!(
            "is {shown:?}: {host:?} is not on the loopback interface, so TLS is required: use rediss://"
        ))),
        _ => Err(problem(format!(
            "is {shown:?}; expected redis://host:port (loopback only) or rediss://host:port"
        ))),
    }
}

/// What one drain did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Entries added to streams.
    pub delivered: u64,
    /// Commit → `XADD` acknowledged, per entry, in milliseconds.
    #[serde(skip)]
    pub latency_ms: Vec<f64>,
    /// Rows still waiting afterwards, and the oldest one's age in milliseconds.
    pub backlog: u64,
    pub backlog_age_ms: u64,
    /// Why delivery stopped, when it did (the rows wait for the next drain).
    pub error: Option<String>,
}

/// Deliveries added up (`mirrorctl apply`'s summary): the count, and the last one's backlog
/// and error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryTotal {
    pub delivered: u64,
    pub backlog: u64,
    pub backlog_age_ms: u64,
    pub error: Option<String>,
}

impl DeliveryTotal {
    pub fn add(&mut self, delivery: Delivery) {
        self.delivered += delivery.delivered;
        self.backlog = delivery.backlog;
        self.backlog_age_ms = delivery.backlog_age_ms;
        self.error = delivery.error;
    }
}

/// Delivers the outbox to Redis; one per process, shared by every invocation.
pub struct Fanout {
    settings: StreamSettings,
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Set after a failure: no attempt before then.
    paused_until: std::sync::Mutex<Option<Instant>>,
    last_drain: std::sync::Mutex<Option<Instant>>,
}

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Fanout {
    /// Reads the auth token's secret, if any; connects only when first used, so that a Redis
    /// that is down never keeps the mirror from starting.
    pub async fn new(settings: StreamSettings) -> Result<Fanout, String> {
        let url = match &settings.auth_secret_arn {
            None => settings.url.clone(),
            Some(arn) => with_password(&settings.url, &auth_token(arn).await?),
        };
        let client = redis::Client::open(url.as_str())
            .map_err(|e| format!("MIRROR_REDIS_URL {}: {e}", settings.shown()))?;
        Ok(Fanout {
            settings,
            client,
            connection: tokio::sync::Mutex::new(None),
            paused_until: std::sync::Mutex::new(None),
            last_drain: std::sync::Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// A connection, opened (again) when there is none.
    pub async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("cannot reach Redis at {}: {e}", self.settings.shown()))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn forget_connection(&self) {
        *self.connection.lock().await = None;
    }

    /// Whether this process should drain although it announced nothing itself: the outbox
    /// may hold rows another process left behind.
    pub fn sweep_due(&self) -> bool {
        let last = self.last_drain.lock().expect("not poisoned");
        last.is_none_or(|at| at.elapsed() >= SWEEP_EVERY)
    }

    /// Delivers every row of the outbox, oldest first, in pages of [`DRAIN_PAGE`], then
    /// reports what is left. A failure stops the drain (the rows stay, nothing is lost) and
    /// pauses delivery for [`RETRY_AFTER`].
    pub async fn drain(&self, store: &Store) -> Delivery {
        self.drain_until(store, None).await
    }

    /// As [`Fanout::drain`], stopping (with the rest left for the next drain) at `deadline`:
    /// an invocation never runs out of time delivering a backlog.
    pub async fn drain_until(
        &self,
        store: &Store,
        deadline: Option<tokio::time::Instant>,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        *self.last_drain.lock().expect("not poisoned") = Some(Instant::now());
        let paused = *self.paused_until.lock().expect("not poisoned");
        let emptied = if paused.is_some_and(|until| Instant::now() < until) {
            delivery.error = Some("paused after a failed delivery".into());
            false
        } else {
            match self.drain_pages(store, deadline, &mut delivery).await {
                Ok(emptied) => emptied,
                Err(error) => {
                    tracing::warn!(%error, delivered = delivery.delivered, "realtime delivery stopped; the changes wait in the outbox for the next attempt");
                    *self.paused_until.lock().expect("not poisoned") =
                        Some(Instant::now() + RETRY_AFTER);
                    delivery.error = Some(error);
                    false
                }
            }
        };
        // Emptied: nothing was left when it last looked (what others commit since is theirs
        // to drain). Otherwise, what is left is counted.
        if !emptied {
            match store.outbox_backlog().await {
                Ok(Backlog { rows, oldest }) => {
                    delivery.backlog = rows;
                    delivery.backlog_age_ms = oldest.map_or(0, |at| {
                        let age = Timestamp::now().as_datetime() - at.as_datetime();
                        age.num_milliseconds().max(0) as u64
                    });
                }
                Err(error) => tracing::warn!(%error, "cannot measure the outbox's backlog"),
            }
        }
        delivery
    }

    async fn drain_pages(
        &self,
        store: &Store,
        deadline: Option<tokio::time::Instant>,
        delivery: &mut Delivery,
    ) -> Result<bool, String> {
        loop {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Ok(false);
            }
            let lease = store
                .lease_outbox(DRAIN_PAGE)
                .await
                .map_err(|e| format!("cannot read the outbox: {e}"))?;
            if lease.announcements.is_empty() {
                return Ok(true);
            }
            let count = lease.announcements.len();
            let mut connection = self.connection().await?;
            let pipeline = self.pipeline(&lease.announcements);
            if let Err(e) = pipeline.query_async::<()>(&mut connection).await {
                self.forget_connection().await;
                return Err(format!(
                    "XADD to Redis at {} failed: {e}",
                    self.settings.shown()
                ));
            }
            let added = Timestamp::now().as_datetime();
            delivery
                .latency_ms
                .extend(lease.announcements.iter().map(|a| {
                    (added - a.enqueued_at.as_datetime())
                        .num_microseconds()
                        .unwrap_or(0)
                        .max(0) as f64
                        / 1000.0
                }));
            // Added but not deleted (the database failed now): they are delivered again by
            // the next drain — at least once, never lost.
            lease
                .delivered()
                .await
                .map_err(|e| format!("entries added, but the outbox rows could not be deleted (they will be delivered again): {e}"))?;
            delivery.delivered += count as u64;
            if (count as i64) < DRAIN_PAGE {
                return Ok(true);
            }
        }
    }

    fn pipeline(&self, announcements: &[Announcement]) -> redis::Pipeline {
        let mut pipeline = redis::pipe();
        // Loaded first in the same pipeline, so a Redis that restarted (empty script cache)
        // still runs the EVALSHAs after it.
        pipeline.cmd("SCRIPT").arg("LOAD").arg(ADD_ENTRY).ignore();
        let sha = redis::Script::new(ADD_ENTRY).get_hash().to_string();
        let mut users = BTreeSet::new();
        for a in announcements {
            let key = stream_key(&a.user_id);
            pipeline
                .cmd("EVALSHA")
                .arg(&sha)
                .arg(1)
                .arg(&key)
                .arg(self.settings.maxlen)
                .arg(entry_fields(a))
                .ignore();
            users.insert(key);
        }
        if let Some(age) = self.settings.max_age {
            let oldest = Timestamp::now().as_datetime().timestamp_millis()
                - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            for key in users {
                pipeline
                    .cmd("XTRIM")
                    .arg(key)
                    .arg("MINID")
                    .arg("~")
                    .arg(oldest.max(0))
                    .ignore();
            }
        }
        pipeline
    }
}

/// `XADD key MAXLEN ~ ARGV[1] * prev <id> ARGV[2..]`, where `prev` is the id of the
/// stream's newest entry before this one (`0-0` for a new stream): each entry names the one
/// before it, so a device replaying from its last seen id knows for certain whether it is
/// handed everything after it — whatever removed entries: trimming, or a Redis that lost
/// data in a restart or a failover to a replica that lagged.
const ADD_ENTRY: &str = r"
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if newest[1] then prev = newest[1][1] end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'prev', prev, unpack(ARGV, 2))
";

/// An entry's fields: pointers only.
pub fn entry_fields(a: &Announcement) -> Vec<(&'static str, String)> {
    vec![
        ("type", a.kind.clone()),
        ("messageId", a.message_id.clone()),
        ("conversationId", a.conversation_id.clone()),
        ("senderId", a.sender_id.clone()),
        ("version", a.version.clone()),
        (
            "ts",
            a.enqueued_at.as_datetime().timestamp_millis().to_string(),
        ),
    ]
}

/// The auth token in a Secrets Manager secret: the whole string, or its `authToken` or
/// `password` field when it is JSON.
async fn auth_token(arn: &str) -> Result<String, String> {
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&aws);
    let response = (client.get_secret_value().secret_id(arn).send().await).map_err(|e| {
        format!(
            "cannot read the Redis auth token secret {arn}: {}",
            aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
        )
    })?;
    let text = response
        .secret_string()
        .ok_or_else(|| format!("the Redis auth token secret {arn} has no SecretString"))?;
    token_of(text).ok_or_else(|| {
        format!("the Redis auth token secret {arn} is JSON without authToken or password")
    })
}

fn token_of(secret: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(secret) {
        Ok(serde_json::Value::Object(map)) => ["authToken", "password"]
            .iter()
            .find_map(|k| map.get(*k)?.as_str().map(str::to_string)),
        _ => Some(secret.to_string()),
    }
}

/// `url` with `password` as its credentials (percent-encoded).
fn with_password(url: &str, password: &str) -> String {
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://:{encoded}@{rest}")
        }
        None => url.to_string(),
    }
}

/// One stream entry as a device sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: String,
    #[serde(flatten)]
    pub fields: BTreeMap<String, String>,
}

/// What a device gets when it reconnects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "replay",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Replay {
    /// Exactly the entries after its last acknowledged id (up to the count asked for; ask
    /// again after the last one for more).
    Entries { after: String, entries: Vec<Entry> },
    /// Entries it never saw are gone: load the user's state from SQL, then acknowledge
    /// `resume_from` and replay from there.
    Resync { reason: String, resume_from: String },
}

/// A stream entry id, `<ms>-<seq>`, for comparing.
fn id_parts(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Up to `count` entries of `user`'s stream after `after` (from the start without it).
pub async fn tail(
    connection: &mut MultiplexedConnection,
    user_id: &str,
    after: Option<&str>,
    count: usize,
) -> Result<Vec<Entry>, String> {
    if let Some(after) = after {
        id_parts(after).ok_or_else(|| format!("{after:?} is not a stream entry id (ms-seq)"))?;
    }
    let start = after.map_or("-".to_string(), |id| format!("({id}"));
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream_key(user_id))
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(connection)
        .await
        .map_err(|e| format!("XRANGE failed: {e}"))?;
    entries(reply)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn entries(reply: Value) -> Result<Vec<Entry>, String> {
    let Value::Array(items) = reply else {
        return Err(format!("unexpected XRANGE reply {reply:?}"));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Array(mut parts) if parts.len() == 2 => {
                let fields = parts.pop().expect("two parts");
                let id = text(&parts[0]).ok_or("an entry without an id")?;
                let Value::Array(fields) = fields else {
                    return Err("an entry without fields".to_string());
                };
                let fields = fields
                    .chunks(2)
                    .filter_map(|kv| Some((text(&kv[0])?, text(kv.get(1)?)?)))
                    .collect();
                Ok(Entry { id, fields })
            }
            other => Err(format!("unexpected XRANGE entry {other:?}")),
        })
        .collect()
}

/// The id of the newest entry a stream ever had (`last-generated-id`), or None when the
/// stream does not exist.
async fn last_generated(
    connection: &mut MultiplexedConnection,
    user_id: &str,
) -> Result<Option<String>, String> {
    let reply: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream_key(user_id))
        .query_async(connection)
        .await;
    let pairs: Vec<(String, Value)> = match reply {
        Ok(Value::Array(items)) => items
            .chunks(2)
            .filter_map(|kv| Some((text(&kv[0])?, kv.get(1)?.clone())))
            .collect(),
        Ok(Value::Map(items)) => items
            .into_iter()
            .filter_map(|(k, v)| Some((text(&k)?, v)))
            .collect(),
        Ok(other) => return Err(format!("unexpected XINFO STREAM reply {other:?}")),
        Err(e) if e.to_string().contains("no such key") => return Ok(None),
        Err(e) => return Err(format!("XINFO STREAM failed: {e}")),
    };
    Ok(pairs
        .into_iter()
        .find(|(k, _)| k == "last-generated-id")
        .and_then(|(_, v)| text(&v)))
}

/// What device `device_id` of `user_id` missed: the entries after its last acknowledged
/// id — exactly those: the first one's `prev` must be that id — or, when some of them are
/// gone (trimmed away, or lost by Redis), the device never acknowledged anything, or the
/// stream is newer than what it saw, a resync. Never a replay with a hole.
pub async fn replay(
    connection: &mut MultiplexedConnection,
    user_id: &str,
    device_id: &str,
    count: usize,
) -> Result<Replay, String> {
    let last_seen: Option<String> = redis::cmd("GET")
        .arg(device_key(device_id))
        .query_async(connection)
        .await
        .map_err(|e| format!("GET failed: {e}"))?;
    let newest = last_generated(connection, user_id).await?;
    let resync = |reason: &str| {
        Ok(Replay::Resync {
            reason: reason.to_string(),
            resume_from: newest.clone().unwrap_or_else(|| "0-0".to_string()),
        })
    };
    let Some(last_seen) = last_seen else {
        return resync("the device has acknowledged nothing yet: load from SQL first");
    };
    let seen = id_parts(&last_seen).ok_or_else(|| {
        format!(
            "{} holds {last_seen:?}, not an entry id",
            device_key(device_id)
        )
    })?;
    match newest.as_deref().and_then(id_parts) {
        None if seen == (0, 0) => {}
        None => return resync("the stream is gone (Redis lost it): load from SQL"),
        Some(newest) if seen > newest => return resync(
            "the stream is older than the device's last seen id (Redis lost data): load from SQL",
        ),
        Some(_) => {}
    }
    let entries = tail(connection, user_id, Some(&last_seen), count).await?;
    if let Some(first) = entries.first() {
        if first.fields.get("prev") != Some(&last_seen) {
            return resync(
                "entries after the device's last seen id are gone (trimmed away, or lost by Redis): load from SQL",
            );
        }
    }
    Ok(Replay::Entries {
        entries,
        after: last_seen,
    })
}

/// Records that `device_id` has seen everything up to `id`; never moves backwards (an old
/// acknowledgement arriving late changes nothing). Returns the id now stored.
pub async fn ack(
    connection: &mut MultiplexedConnection,
    device_id: &str,
    id: &str,
) -> Result<String, String> {
    id_parts(id).ok_or_else(|| format!("{id:?} is not a stream entry id (ms-seq)"))?;
    let script = redis::Script::new(
        r"
        local function parts(id)
            local ms, seq = string.match(id, '^(%d+)-(%d+)$')
            if not ms then ms, seq = string.match(id, '^(%d+)$'), '0' end
            return tonumber(ms), tonumber(seq)
        end
        local current = redis.call('GET', KEYS[1])
        if current then
            local cm, cs = parts(current)
            local nm, ns = parts(ARGV[1])
            if cm and (nm < cm or (nm == cm and ns <= cs)) then return current end
        end
        redis.call('SET', KEYS[1], ARGV[1])
        return ARGV[1]
        ",
    );
    script
        .key(device_key(device_id))
        .arg(id)
        .invoke_async(connection)
        .await
        .map_err(|e| format!("acknowledging failed: {e}"))
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

    #[test]
    fn keys_carry_the_hash_tag_of_their_user_or_device() {
        assert_eq!(stream_key("u123"), "stream:user:{u123}");
        assert_eq!(device_key("d1"), "device:{d1}:lastSeen");
    }

    #[test]
    fn the_auth_token_is_read_from_a_plain_or_json_secret_and_percent_encoded() {
        assert_eq!(token_of("abc").as_deref(), Some("abc"));
        assert_eq!(token_of(r#"{"authToken":"t"}"#).as_deref(), Some("t"));
        assert_eq!(token_of(r#"{"password":"p"}"#).as_deref(), Some("p"));
        assert_eq!(token_of(r#"{"user":"x"}"#), None);
        assert_eq!(
            with_password("rediss://old@h:6379", "a b@/"),
            "rediss://:a%20b%40%2F@h:6379"
        );
    }

    #[test]
    fn stream_ids_compare_as_numbers() {
        assert!(id_parts("10-0") > id_parts("9-5"));
        assert!(id_parts("10-2") > id_parts("10-1"));
        assert_eq!(id_parts("7"), Some((7, 0)));
        assert_eq!(id_parts("x-1"), None);
    }
}
