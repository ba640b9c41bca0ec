//! The reader on a Redis Cluster. One command reads one slot there, so one `XREAD BLOCK`
//! cannot follow every user; instead each master tells this process which streams grew.
//! The reader subscribes, on the master that holds the user's slot, to the keyspace
//! notifications of the stream of each user it follows (`__keyspace@0__:stream:user:{u}`,
//! which needs `notify-keyspace-events` with `K` and `t`), and on each notification reads
//! the streams that grew, one non-blocking `XREAD` per slot over all of that slot's keys,
//! each from its cursor. Idle users cost nothing: no command runs until something is added.
//!
//! A subscription is made after the cursor is read, and the stream is read once right after
//! it, so an entry added in between is not missed. When a node's subscription connection
//! closes or the slots move, the reader starts over: it subscribes again where the slots are
//! now, rechecks every cursor ([`Feed::Lost`](super::Feed::Lost) where a stream lost
//! entries) and reads every stream once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use realtime_mirror::streams::connection::slot;
use realtime_mirror::streams::{self, stream_key, REDIS_TIMEOUT};
use redis::aio::PubSubSink;
use redis::cluster_async::ClusterConnection;
use redis::{ConnectionAddr, ConnectionInfo, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::{streams_of, Hub, READ_COUNT, RECONNECT_AFTER};

/// How often the reader asks whether the slots moved.
const TOPOLOGY_EVERY: Duration = Duration::from_secs(10);
/// Slot reads in flight at once.
const READS_IN_FLIGHT: usize = 64;
/// Channels per `SUBSCRIBE`.
const SUBSCRIBE_BATCH: usize = 500;

/// The channel that hears what is done to `key` (database 0: a cluster has no other).
fn channel(key: &str) -> String {
    format!("__keyspace@0__:{key}")
}

/// A master and the slots it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Master {
    host: String,
    port: u16,
    slots: Vec<(u16, u16)>,
}

/// The masters of the cluster, from `CLUSTER SLOTS`, in a stable order.
async fn masters(commands: &mut ClusterConnection) -> Result<Vec<Master>, String> {
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(commands)
        .await
        .map_err(|e| format!("CLUSTER SLOTS failed: {e}"))?;
    let Value::Array(ranges) = reply else {
        return Err(format!("CLUSTER SLOTS answered {reply:?}"));
    };
    let mut by_node: BTreeMap<(String, u16), Vec<(u16, u16)>> = BTreeMap::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let (Some(host), Some(Value::Int(port))) =
            (node.first().and_then(streams::text), node.get(1))
        else {
            continue;
        };
        by_node
            .entry((host, *port as u16))
            .or_default()
            .push((*start as u16, *end as u16));
    }
    Ok(by_node
        .into_iter()
        .map(|((host, port), mut slots)| {
            slots.sort_unstable();
            Master { host, port, slots }
        })
        .collect())
}

/// Which of `masters` serves `slot`.
fn master_of(masters: &[Master], slot: u16) -> Option<usize> {
    masters
        .iter()
        .position(|m| m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
}

/// `info` (TLS, credentials) pointed at one node.
fn at(info: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match info.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_string(), port),
    };
    info.clone().set_addr(addr)
}

/// A subscription connection to `master`; its notifications go to `due` as stream keys,
/// and a `None` says the connection closed.
async fn listen(
    client: &redis::Client,
    master: &Master,
    due: UnboundedSender<Option<String>>,
) -> Result<PubSubSink, String> {
    let node = redis::Client::open(at(client.get_connection_info(), &master.host, master.port))
        .map_err(|e| format!("{}:{}: {e}", master.host, master.port))?;
    let pubsub = tokio::time::timeout(REDIS_TIMEOUT, node.get_async_pubsub())
        .await
        .map_err(|_| format!("{}:{} did not answer", master.host, master.port))?
        .map_err(|e| format!("cannot subscribe at {}:{}: {e}", master.host, master.port))?;
    let (sink, mut messages) = pubsub.split();
    tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let key = message
                .get_channel_name()
                .trim_start_matches("__keyspace@0__:");
            if due.send(Some(key.to_string())).is_err() {
                return;
            }
        }
        let _ = due.send(None);
    });
    Ok(sink)
}

/// The reader's view of one topology: a subscription connection per master, and where each
/// followed user is subscribed.
struct Listening {
    masters: Vec<Master>,
    sinks: Vec<PubSubSink>,
    subscribed: HashMap<String, usize>,
}

impl Listening {
    /// Subscribes to the streams of `users` (those not yet subscribed), each on its master.
    async fn subscribe(&mut self, users: impl IntoIterator<Item = String>) -> Result<(), String> {
        let mut by_master: Vec<Vec<String>> = vec![Vec::new(); self.masters.len()];
        for user in users {
            if self.subscribed.contains_key(&user) {
                continue;
            }
            let key = stream_key(&user);
            let Some(master) = master_of(&self.masters, slot(&key)) else {
                return Err(format!("no master serves the slot of {key}"));
            };
            by_master[master].push(channel(&key));
            self.subscribed.insert(user, master);
        }
        for (master, channels) in by_master.into_iter().enumerate() {
            for batch in channels.chunks(SUBSCRIBE_BATCH) {
                self.sinks[master]
                    .subscribe(batch)
                    .await
                    .map_err(|e| format!("SUBSCRIBE failed: {e}"))?;
            }
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, user: &str) -> Result<(), String> {
        if let Some(master) = self.subscribed.remove(user) {
            self.sinks[master]
                .unsubscribe(channel(&stream_key(user)))
                .await
                .map_err(|e| format!("UNSUBSCRIBE failed: {e}"))?;
        }
        Ok(())
    }
}

/// Checks that the cluster sends the keyspace notifications of streams, which the reader
/// depends on: a probe stream is added to and the notification awaited.
pub async fn check_notifications(
    client: &redis::Client,
    commands: &mut ClusterConnection,
    node: &str,
) -> Result<(), String> {
    let masters = masters(commands).await?;
    let key = format!("gateway:probe:{{{node}}}");
    let master = master_of(&masters, slot(&key)).ok_or("CLUSTER SLOTS: a slot has no master")?;
    let (due, mut heard) = unbounded_channel();
    let mut sink = listen(client, &masters[master], due).await?;
    sink.subscribe(channel(&key))
        .await
        .map_err(|e| format!("SUBSCRIBE failed: {e}"))?;
    let added: redis::RedisResult<String> = redis::cmd("XADD")
        .arg(&key)
        .arg("MAXLEN")
        .arg(1)
        .arg("*")
        .arg("probe")
        .arg(1)
        .query_async(commands)
        .await;
    added.map_err(|e| format!("XADD {key} failed: {e}"))?;
    let notified = tokio::time::timeout(REDIS_TIMEOUT, heard.recv()).await;
    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&key).query_async(commands).await;
    match notified {
        Ok(Some(Some(_))) => Ok(()),
        _ => Err(format!(
            "the Redis Cluster sends no keyspace notifications for streams, and the gateway learns of new entries from them: set notify-keyspace-events to include K and t (for example `CONFIG SET notify-keyspace-events Kt` on every node; on ElastiCache, in the parameter group); the probe {key} on {}:{} was not announced",
            masters[master].host, masters[master].port
        )),
    }
}

/// The reader on a cluster: runs for the life of the process.
pub(super) async fn run(hub: Arc<Hub>, mut commands: ClusterConnection) {
    let mut lost_once = false;
    loop {
        let error = follow(&hub, &mut commands, lost_once).await;
        hub.metrics.redis_errors.inc();
        tracing::warn!(error = %error, "the cluster stream reader starts over");
        lost_once = true;
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Follows one topology until something fails or the slots move; returns why.
async fn follow(hub: &Arc<Hub>, commands: &mut ClusterConnection, lost_once: bool) -> String {
    let now = match masters(commands).await {
        Ok(m) if !m.is_empty() => m,
        Ok(_) => return "CLUSTER SLOTS named no master".into(),
        Err(e) => return e,
    };
    let (due_tx, mut due_rx) = unbounded_channel();
    let mut sinks = Vec::with_capacity(now.len());
    for master in &now {
        match listen(&hub.client, master, due_tx.clone()).await {
            Ok(sink) => sinks.push(sink),
            Err(e) => return e,
        }
    }
    let mut listening = Listening {
        masters: now,
        sinks,
        subscribed: HashMap::new(),
    };
    hub.changed.lock().expect("not poisoned").clear();
    let users: Vec<String> = hub.snapshot().into_iter().map(|(user, _)| user).collect();
    if let Err(e) = listening.subscribe(users.iter().cloned()).await {
        return e;
    }
    if lost_once {
        if let Err(e) = hub.recheck(commands).await {
            return format!("rechecking the cursors failed: {e}");
        }
        tracing::info!(
            masters = listening.masters.len(),
            "the cluster stream reader is back"
        );
    }
    let mut due: HashSet<String> = users.into_iter().collect();
    let mut topology = tokio::time::interval(TOPOLOGY_EVERY);
    topology.tick().await;
    loop {
        if !due.is_empty() {
            if let Err(e) = read(hub, commands, &mut due).await {
                return e;
            }
        }
        if due.is_empty() {
            tokio::select! {
                heard = due_rx.recv() => match heard {
                    Some(Some(key)) => { due.extend(user_of(&key)); }
                    _ => return "a node's subscription connection closed".into(),
                },
                _ = hub.wake.notified() => {}
                _ = topology.tick() => match masters(commands).await {
                    Ok(now) if now == listening.masters => {}
                    Ok(_) => return "the cluster's slots moved".into(),
                    Err(e) => return e,
                },
            }
        }
        loop {
            match due_rx.try_recv() {
                Ok(Some(key)) => due.extend(user_of(&key)),
                Ok(None) => return "a node's subscription connection closed".into(),
                Err(_) => break,
            }
        }
        let changed = std::mem::take(&mut *hub.changed.lock().expect("not poisoned"));
        for user in changed {
            let followed = hub
                .followed
                .lock()
                .expect("not poisoned")
                .contains_key(&user);
            let outcome = if followed {
                due.insert(user.clone());
                listening.subscribe([user]).await
            } else {
                listening.unsubscribe(&user).await
            };
            if let Err(e) = outcome {
                return e;
            }
        }
    }
}

/// The user whose stream `key` is.
fn user_of(key: &str) -> Option<String> {
    key.strip_prefix("stream:user:{")?
        .strip_suffix('}')
        .map(str::to_string)
}

/// Reads every due stream from its cursor, one `XREAD` per slot, and hands the entries
/// out. A stream that gave a full read stays due.
async fn read(
    hub: &Hub,
    commands: &ClusterConnection,
    due: &mut HashSet<String>,
) -> Result<(), String> {
    let mut by_slot: HashMap<u16, Vec<(String, String)>> = HashMap::new();
    {
        let followed = hub.followed.lock().expect("not poisoned");
        for user in due.drain() {
            if let Some(follower) = followed.get(&user) {
                by_slot
                    .entry(slot(&stream_key(&user)))
                    .or_default()
                    .push((user, follower.cursor.clone()));
            }
        }
    }
    let reads = by_slot.into_values().map(|users| {
        let mut commands = commands.clone();
        async move {
            let mut command = redis::cmd("XREAD");
            command.arg("COUNT").arg(READ_COUNT).arg("STREAMS");
            for (user, _) in &users {
                command.arg(stream_key(user));
            }
            for (_, cursor) in &users {
                command.arg(cursor);
            }
            let reply: redis::RedisResult<Value> = command.query_async(&mut commands).await;
            (users, reply)
        }
    });
    let mut replies = futures::stream::iter(reads).buffer_unordered(READS_IN_FLIGHT);
    while let Some((users, reply)) = replies.next().await {
        hub.metrics.reads.inc();
        let reply = reply.map_err(|e| format!("XREAD failed: {e}"))?;
        for (key, entries) in streams_of(reply) {
            let Some(user) = user_of(&key).filter(|u| users.iter().any(|(v, _)| v == u)) else {
                continue;
            };
            match streams::entries(entries) {
                Ok(entries) => {
                    if entries.len() >= READ_COUNT {
                        due.insert(user.clone());
                    }
                    hub.dispatch(&user, entries);
                }
                Err(e) => tracing::error!(error = %e, "an XREAD reply could not be read"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_key_names_its_user_and_a_slot_its_master() {
        assert_eq!(user_of("stream:user:{u1}").as_deref(), Some("u1"));
        assert_eq!(user_of("device:{d1}:node"), None);
        let masters = vec![
            Master {
                host: "a".into(),
                port: 1,
                slots: vec![(0, 5460)],
            },
            Master {
                host: "b".into(),
                port: 2,
                slots: vec![(5461, 10922), (16000, 16383)],
            },
        ];
        assert_eq!(master_of(&masters, 0), Some(0));
        assert_eq!(master_of(&masters, 10922), Some(1));
        assert_eq!(master_of(&masters, 16383), Some(1));
        assert_eq!(master_of(&masters, 12000), None);
    }
}
