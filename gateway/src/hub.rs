//! One reader per gateway process follows the streams of every user with a device
//! connected here: one `XREAD BLOCK` over all their keys at once, each from its own cursor,
//! on a connection of its own. The devices of one user share their user's feed; an idle
//! device costs Redis nothing (docs/realtime.md, "How it reads Redis").
//!
//! A user's first device to join reads the stream's last generated id as the cursor and
//! wakes the reader (`CLIENT UNBLOCK`) so that its next `XREAD` includes the new key; every
//! entry after the cursor reaches every device of the user, in stream order. When the
//! reader loses Redis, it reconnects; a user whose stream is gone or older than its cursor
//! (Redis restarted without its data) gets [`Feed::Lost`] and its devices resync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use realtime_mirror::streams::{self, is_after, stream_key, Entry, REDIS_TIMEOUT};
use redis::aio::ConnectionManager;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// How long one `XREAD` blocks when nothing arrives.
pub const BLOCK: Duration = Duration::from_secs(5);
/// Entries per stream per `XREAD`.
const READ_COUNT: usize = 1_000;
/// How long the reader waits before connecting again after an error.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// What a device's session hears from its user's feed.
#[derive(Debug)]
pub enum Feed {
    Entry(Arc<Entry>),
    /// The stream may have lost entries (Redis lost its data): resync.
    Lost,
}

struct Follower {
    cursor: String,
    devices: HashMap<u64, UnboundedSender<Feed>>,
}

pub struct Hub {
    followed: Mutex<HashMap<String, Follower>>,
    /// Users joined since the reader took its last snapshot of the keys.
    dirty: AtomicBool,
    reader_id: Mutex<Option<i64>>,
    wake: Notify,
    next: AtomicU64,
    client: redis::Client,
    commands: ConnectionManager,
    metrics: Arc<Metrics>,
}

/// A device's place in its user's feed; leaving is dropping it.
pub struct Subscription {
    hub: Arc<Hub>,
    user: String,
    id: u64,
    pub feed: UnboundedReceiver<Feed>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut followed = self.hub.followed.lock().expect("not poisoned");
        if let Some(follower) = followed.get_mut(&self.user) {
            follower.devices.remove(&self.id);
            if follower.devices.is_empty() {
                followed.remove(&self.user);
            }
        }
        self.hub.metrics.users.set(followed.len() as i64);
    }
}

impl Hub {
    pub fn new(client: redis::Client, commands: ConnectionManager, metrics: Arc<Metrics>) -> Hub {
        Hub {
            followed: Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(false),
            reader_id: Mutex::new(None),
            wake: Notify::new(),
            next: AtomicU64::new(0),
            client,
            commands,
            metrics,
        }
    }

    /// Joins `user`'s feed: from now on every entry after the returned cursor reaches the
    /// subscription, in order.
    pub async fn join(self: &Arc<Self>, user: &str) -> Result<(Subscription, String), String> {
        // A user already followed has a cursor: only a new one costs a round trip.
        let followed_already = self
            .followed
            .lock()
            .expect("not poisoned")
            .contains_key(user);
        let newest = if followed_already {
            None
        } else {
            let mut commands = self.commands.clone();
            streams::last_generated(&mut commands, user).await?
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, feed) = unbounded_channel();
        let (cursor, new_user) = {
            let mut followed = self.followed.lock().expect("not poisoned");
            let new_user = !followed.contains_key(user);
            let follower = followed
                .entry(user.to_string())
                .or_insert_with(|| Follower {
                    cursor: newest.unwrap_or_else(|| "0-0".to_string()),
                    devices: HashMap::new(),
                });
            follower.devices.insert(id, sender);
            let cursor = follower.cursor.clone();
            self.metrics.users.set(followed.len() as i64);
            (cursor, new_user)
        };
        if new_user {
            self.wake_reader().await;
        }
        let subscription = Subscription {
            hub: self.clone(),
            user: user.to_string(),
            id,
            feed,
        };
        Ok((subscription, cursor))
    }

    /// Makes the reader's next `XREAD` include the users joined since its last one.
    async fn wake_reader(&self) {
        if self.dirty.swap(true, Ordering::SeqCst) {
            return; // a wake is on its way already
        }
        self.wake.notify_one();
        let mut commands = self.commands.clone();
        // The reader may be between two XREADs: try until it is blocked (and so unblocked
        // by this), or it has taken the new keys in by itself.
        for _ in 0..200 {
            if !self.dirty.load(Ordering::SeqCst) {
                return;
            }
            let Some(reader) = *self.reader_id.lock().expect("not poisoned") else {
                return; // connecting: it takes a fresh snapshot when it is back
            };
            let unblocked: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(reader)
                .query_async(&mut commands)
                .await;
            if unblocked.unwrap_or(0) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        self.dirty.store(false, Ordering::SeqCst);
        let followed = self.followed.lock().expect("not poisoned");
        followed
            .iter()
            .map(|(user, f)| (user.clone(), f.cursor.clone()))
            .collect()
    }

    /// Hands each entry to every device of its user, once, in order.
    fn dispatch(&self, user: &str, entries: Vec<Entry>) {
        let mut followed = self.followed.lock().expect("not poisoned");
        let Some(follower) = followed.get_mut(user) else {
            return; // every device left meanwhile
        };
        for entry in entries {
            if !is_after(&entry.id, &follower.cursor) {
                continue;
            }
            follower.cursor = entry.id.clone();
            let entry = Arc::new(entry);
            follower
                .devices
                .retain(|_, device| device.send(Feed::Entry(entry.clone())).is_ok());
        }
    }

    /// After the reader lost Redis: a user whose stream is gone, or ends before the cursor,
    /// lost entries; its devices resync and the cursor starts over from what is there.
    async fn recheck(&self, connection: &mut redis::aio::MultiplexedConnection) {
        for (user, cursor) in self.snapshot() {
            let newest = match streams::last_generated(connection, &user).await {
                Ok(newest) => newest,
                Err(_) => return, // lost again: the next reconnect checks again
            };
            let lost = match &newest {
                None => cursor != "0-0",
                Some(newest) => is_after(&cursor, newest),
            };
            if lost {
                let mut followed = self.followed.lock().expect("not poisoned");
                if let Some(follower) = followed.get_mut(&user) {
                    follower.cursor = newest.unwrap_or_else(|| "0-0".to_string());
                    follower
                        .devices
                        .retain(|_, device| device.send(Feed::Lost).is_ok());
                }
            }
        }
    }

    /// The reader: runs for the life of the process.
    pub async fn run(self: Arc<Self>) {
        let mut lost_once = false;
        loop {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(REDIS_TIMEOUT))
                .set_response_timeout(Some(BLOCK + REDIS_TIMEOUT));
            let connected = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await;
            let mut connection = match connected {
                Ok(c) => c,
                Err(e) => {
                    self.metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "the stream reader cannot reach Redis; retrying");
                    lost_once = true;
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    continue;
                }
            };
            match redis::cmd("CLIENT")
                .arg("ID")
                .query_async::<i64>(&mut connection)
                .await
            {
                Ok(id) => *self.reader_id.lock().expect("not poisoned") = Some(id),
                Err(e) => {
                    self.metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "CLIENT ID failed; reconnecting");
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    continue;
                }
            }
            if lost_once {
                self.recheck(&mut connection).await;
                tracing::info!("the stream reader is back on Redis");
            }
            let error = self.read(&mut connection).await;
            *self.reader_id.lock().expect("not poisoned") = None;
            self.metrics.redis_errors.inc();
            tracing::warn!(error = %error, "the stream reader lost Redis; reconnecting");
            lost_once = true;
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }

    /// `XREAD`s until Redis fails; returns the failure.
    async fn read(&self, connection: &mut redis::aio::MultiplexedConnection) -> String {
        loop {
            let users = self.snapshot();
            if users.is_empty() {
                let _ = tokio::time::timeout(BLOCK, self.wake.notified()).await;
                continue;
            }
            let mut command = redis::cmd("XREAD");
            command
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS");
            for (user, _) in &users {
                command.arg(stream_key(user));
            }
            for (_, cursor) in &users {
                command.arg(cursor);
            }
            self.metrics.reads.inc();
            let reply: Value = match command.query_async(connection).await {
                Ok(reply) => reply,
                Err(e) => return e.to_string(),
            };
            let by_key: HashMap<String, &str> = users
                .iter()
                .map(|(user, _)| (stream_key(user), user.as_str()))
                .collect();
            for (key, entries) in streams_of(reply) {
                let Some(user) = by_key.get(&key) else {
                    continue;
                };
                match streams::entries(entries) {
                    Ok(entries) => self.dispatch(user, entries),
                    Err(e) => tracing::error!(error = %e, "an XREAD reply could not be read"),
                }
            }
        }
    }
}

/// The (key, entries) pairs of an XREAD reply, RESP2 or RESP3; none on a timeout.
fn streams_of(reply: Value) -> Vec<(String, Value)> {
    let pair = |key: &Value, entries: Value| Some((streams::text(key)?, entries));
    match reply {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop().expect("two");
                    pair(&kv[0], entries)
                }
                _ => None,
            })
            .collect(),
        Value::Map(items) => items.into_iter().filter_map(|(k, v)| pair(&k, v)).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xread_reply_yields_each_stream_and_a_timeout_none() {
        let entry = Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"prev".to_vec()),
                Value::BulkString(b"0-0".to_vec()),
            ]),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"stream:user:{u1}".to_vec()),
            Value::Array(vec![entry]),
        ])]);
        let streams = streams_of(reply);
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].0, "stream:user:{u1}");
        let entries = streams::entries(streams[0].1.clone()).unwrap();
        assert_eq!(entries[0].id, "1-0");
        assert!(streams_of(Value::Nil).is_empty());
    }
}
