//! One reader per gateway process follows the streams of every user with a device
//! connected here, each from its own cursor; the devices of one user share their user's
//! feed, and an idle device costs Redis nothing (docs/realtime.md, "Running it").
//! On one Redis the reader is one `XREAD BLOCK` over all the keys ([`single`]); on a Redis
//! Cluster, where one command reads one slot, keyspace notifications say which streams
//! grew and the reader reads those, one `XREAD` per slot ([`cluster`]).
//!
//! A user's first device to join reads the stream's last generated id as the cursor and
//! tells the reader, whose next read includes the new key; every entry after the cursor
//! reaches every device of the user, in stream order. When the reader loses Redis, it
//! reconnects; a user whose stream is gone or older than its cursor (Redis restarted
//! without its data) gets [`Feed::Lost`] and its devices resync.

mod cluster;
mod single;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use realtime_mirror::streams::connection::Connection;
use realtime_mirror::streams::{self, is_after, Entry};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use crate::metrics::Metrics;

pub use cluster::check_notifications;
pub use single::BLOCK;

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
    /// Users joined or left since the cluster reader last looked (it subscribes to them).
    changed: Mutex<Vec<String>>,
    reader_id: Mutex<Option<i64>>,
    wake: Notify,
    next: AtomicU64,
    client: redis::Client,
    commands: Connection<ConnectionManager>,
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
                if self.hub.commands.is_cluster() {
                    self.hub.changed(&self.user);
                }
            }
        }
        self.hub.metrics.users.set(followed.len() as i64);
    }
}

impl Hub {
    pub fn new(
        client: redis::Client,
        commands: Connection<ConnectionManager>,
        metrics: Arc<Metrics>,
    ) -> Hub {
        Hub {
            followed: Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(false),
            changed: Mutex::new(Vec::new()),
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
            if self.commands.is_cluster() {
                self.changed(user);
            } else {
                self.wake_reader().await;
            }
        }
        let subscription = Subscription {
            hub: self.clone(),
            user: user.to_string(),
            id,
            feed,
        };
        Ok((subscription, cursor))
    }

    /// Tells the cluster reader that `user` joined or left.
    fn changed(&self, user: &str) {
        self.changed
            .lock()
            .expect("not poisoned")
            .push(user.to_string());
        self.wake.notify_one();
    }

    /// The reader: runs for the life of the process.
    pub async fn run(self: Arc<Self>) {
        match self.commands.clone() {
            Connection::Single(_) => self.run_single().await,
            Connection::Cluster(commands) => cluster::run(self, commands).await,
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
    /// lost entries; its devices resync and the cursor starts over from what is there. A
    /// failure stops the check: the reader reconnects and checks every user again.
    async fn recheck(&self, connection: &mut (impl ConnectionLike + Send)) -> Result<(), String> {
        for (user, cursor) in self.snapshot() {
            let newest = streams::last_generated(connection, &user).await?;
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
        Ok(())
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
