//! Delivery: the outbox, drained in id order, to the users' streams in one pipeline a page.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use serde::Serialize;

use super::auth::{is_auth_error, open_client};
use super::connection::{self, Connection};
use super::{stream_key, StreamSettings, DRAIN_PAGE, REDIS_TIMEOUT, RETRY_AFTER, SWEEP_EVERY};
use crate::store::{Announcement, Backlog, Store};
use crate::timestamp::Timestamp;

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
    /// Opened at the first connection (the auth token's secret read then), and again when
    /// Redis refuses the token.
    client: tokio::sync::Mutex<Option<redis::Client>>,
    connection: tokio::sync::Mutex<Option<Connection<MultiplexedConnection>>>,
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
    /// Reads nothing and connects to nothing yet: the auth token's secret is read and Redis
    /// reached when first used, so that neither a Redis that is down nor a secret the
    /// function cannot read (another KMS key) keeps the SQL mirror from starting. Those
    /// failures are the drain's: the changes wait in the outbox.
    pub async fn new(settings: StreamSettings) -> Result<Fanout, String> {
        Ok(Fanout {
            settings,
            client: tokio::sync::Mutex::new(None),
            connection: tokio::sync::Mutex::new(None),
            paused_until: std::sync::Mutex::new(None),
            last_drain: std::sync::Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// A connection, opened (again) when there is none: to the one Redis, or to every node
    /// of the cluster the configured one belongs to.
    pub async fn connection(&self) -> Result<Connection<MultiplexedConnection>, String> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let mut client = self.client(false).await?;
        let mut single = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            // A token rotated since it was read: read the secret again, once.
            Err(e) if is_auth_error(&e) && self.settings.auth_secret_arn.is_some() => {
                tracing::warn!(error = %e, "Redis refused the auth token; reading its secret again");
                client = self.client(true).await?;
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            }
            other => other,
        }
        .map_err(|e| format!("cannot reach Redis at {}: {e}", self.settings.shown()))?;
        let connection = if connection::is_cluster_node(&mut single).await? {
            Connection::Cluster(connection::cluster_connection(&client).await?)
        } else {
            Connection::Single(single)
        };
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// The client, opened (the secret read) when there is none or `fresh` asks.
    async fn client(&self, fresh: bool) -> Result<redis::Client, String> {
        let mut client = self.client.lock().await;
        match client.as_ref() {
            Some(open) if !fresh => Ok(open.clone()),
            _ => {
                let open = open_client(&self.settings).await?;
                *client = Some(open.clone());
                Ok(open)
            }
        }
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
            let connection = self.connection().await?;
            if let Err(e) = self.add(connection, &lease.announcements).await {
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

    /// Adds the entries: one pipeline, or on a cluster one per slot, all at once (a user's
    /// entries share its slot, so their order holds). A failure anywhere fails the page,
    /// which is delivered again: at least once.
    async fn add(
        &self,
        mut connection: Connection<MultiplexedConnection>,
        announcements: &[Announcement],
    ) -> redis::RedisResult<()> {
        if !connection.is_cluster() {
            return self
                .pipeline(announcements.iter())
                .query_async(&mut connection)
                .await;
        }
        let mut by_slot: BTreeMap<u16, Vec<&Announcement>> = BTreeMap::new();
        for a in announcements {
            by_slot
                .entry(connection::slot(&stream_key(&a.user_id)))
                .or_default()
                .push(a);
        }
        let sent = by_slot.into_values().map(|page| {
            let mut connection = connection.clone();
            let pipeline = self.pipeline(page.into_iter());
            async move { pipeline.query_async::<()>(&mut connection).await }
        });
        futures::future::try_join_all(sent).await.map(|_| ())
    }

    /// One pipeline for a page (or a slot's share of it): one script call that adds every
    /// entry, user by user in outbox order, then the trimming.
    fn pipeline<'a>(
        &self,
        announcements: impl Iterator<Item = &'a Announcement>,
    ) -> redis::Pipeline {
        let mut by_user: BTreeMap<String, Vec<&Announcement>> = BTreeMap::new();
        for a in announcements {
            by_user.entry(stream_key(&a.user_id)).or_default().push(a);
        }
        let mut pipeline = redis::pipe();
        // Loaded first in the same pipeline, so a Redis that restarted (empty script cache)
        // still runs the EVALSHA after it.
        pipeline.cmd("SCRIPT").arg("LOAD").arg(ADD_ENTRIES).ignore();
        let sha = redis::Script::new(ADD_ENTRIES).get_hash().to_string();
        let add = pipeline.cmd("EVALSHA").arg(&sha).arg(by_user.len());
        for key in by_user.keys() {
            add.arg(key);
        }
        add.arg(self.settings.maxlen).arg(ENTRY_FIELDS * 2);
        for entries in by_user.values() {
            add.arg(entries.len());
            for a in entries {
                add.arg(&entry_fields(a)[..]);
            }
        }
        add.ignore();
        let users = by_user.into_keys();
        if let Some(age) = self.settings.max_age {
            let oldest = Timestamp::now().as_datetime().timestamp_millis()
                - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            // A stream whose newest entry is older than the age expires: its user is gone,
            // and what it held would all be trimmed by age anyway. A device coming back
            // finds no stream and resyncs from SQL (`Gap::StreamGone`).
            let ttl_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            for key in users {
                pipeline
                    .cmd("XTRIM")
                    .arg(&key)
                    .arg("MINID")
                    .arg("~")
                    .arg(oldest.max(0))
                    .ignore();
                pipeline.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
            }
        }
        pipeline
    }
}

/// For each stream of `KEYS`, in order: its entries, each `XADD key MAXLEN ~ ARGV[1] * prev
/// <id> <fields>`, where `prev` is the id of the stream's newest entry before this one (`0-0`
/// for a new stream): each entry names the one before it, so a device replaying from its last
/// seen id knows for certain whether it is handed everything after it — whatever removed
/// entries: trimming, or a Redis that lost data in a restart or a failover to a replica that
/// lagged. `ARGV[2]` is the number of values an entry's fields take (names and values: 12,
/// [`ENTRY_FIELDS`] pairs, spelled out below); then, per stream, how many entries it gets,
/// then their fields. One call a page: per entry, a script call cost Redis five times the
/// `XADD` itself.
const ADD_ENTRIES: &str = r"
local width = tonumber(ARGV[2])
local at = 3
local added = 0
for k = 1, #KEYS do
  local newest = redis.call('XREVRANGE', KEYS[k], '+', '-', 'COUNT', 1)
  local prev = '0-0'
  if newest[1] then prev = newest[1][1] end
  local count = tonumber(ARGV[at])
  at = at + 1
  for e = 1, count do
    prev = redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[1], '*', 'prev', prev,
      ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5],
      ARGV[at + 6], ARGV[at + 7], ARGV[at + 8], ARGV[at + 9], ARGV[at + 10], ARGV[at + 11])
    at = at + width
    added = added + 1
  end
end
return added
";

/// How many fields [`entry_fields`] gives an entry.
const ENTRY_FIELDS: usize = 6;

/// An entry's fields: pointers only.
pub fn entry_fields(a: &Announcement) -> [(&'static str, String); ENTRY_FIELDS] {
    [
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
