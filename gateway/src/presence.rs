//! Which user a device belongs to (`device:{id}:user`) and which gateway holds it now
//! (`device:{id}:node`, cleared when it leaves unless another node holds it by then).
//!
//! Presence costs Redis nothing per idle device: the node, not each device, proves it is
//! alive, with one heartbeat key (`gateway:node:{N}`, a TTL refreshed every half TTL). A
//! device is present when its `device:{id}:node` names a node whose heartbeat is there. The
//! node lists the devices it holds (`gateway:node:{N}:devices`), so the keys a crashed node
//! leaves are cleared by the next live node that sees its heartbeat gone, or by the node
//! itself when it starts again under the same name. docs/realtime.md, "Presence".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use realtime_mirror::streams::connection::Connection;
use redis::aio::ConnectionManager;

/// Where a device's user is kept.
pub fn user_key(device: &str) -> String {
    format!("device:{{{device}}}:user")
}

/// Where the node holding a device is kept.
pub fn node_key(device: &str) -> String {
    format!("device:{{{device}}}:node")
}

/// Binds `device` to `user`. A device that belonged to another user before forgets what it
/// acknowledged there (its `lastSeen` is of another stream): true, and it resyncs.
pub async fn bind(
    connection: &mut Connection<ConnectionManager>,
    user: &str,
    device: &str,
) -> Result<bool, String> {
    let script = redis::Script::new(
        r"
        local before = redis.call('GET', KEYS[1])
        if before == ARGV[1] then return 0 end
        redis.call('SET', KEYS[1], ARGV[1])
        if before then redis.call('DEL', KEYS[2]) return 1 end
        return 0
        ",
    );
    let rebound: i64 = script
        .key(user_key(device))
        .key(realtime_mirror::streams::device_key(device))
        .arg(user)
        .invoke_async(connection)
        .await
        .map_err(|e| format!("binding the device failed: {e}"))?;
    Ok(rebound == 1)
}

/// Where a node's heartbeat is kept; present while the node is alive.
pub fn heartbeat_key(node: &str) -> String {
    format!("gateway:node:{{{node}}}")
}

/// Where a node lists the devices it holds.
pub fn held_key(node: &str) -> String {
    format!("gateway:node:{{{node}}}:devices")
}

/// Every node that has held devices and has not been cleared.
pub const NODES_KEY: &str = "gateway:nodes";

/// Devices cleared per round trip when a node's keys are swept.
const SWEEP_BATCH: usize = 500;

/// Deletes `KEYS[1]` if it still names the node `ARGV[1]`.
const DELETE_IF_MINE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The devices connected to this node, for the presence keys.
pub struct Presence {
    node: String,
    ttl: Duration,
    devices: Mutex<HashMap<String, usize>>,
    connection: Connection<ConnectionManager>,
}

impl Presence {
    pub fn new(node: String, ttl: Duration, connection: Connection<ConnectionManager>) -> Presence {
        Presence {
            node,
            ttl,
            devices: Mutex::new(HashMap::new()),
            connection,
        }
    }

    /// Announces the node, after clearing what an earlier process of the same name left.
    pub async fn start(&self) -> Result<(), String> {
        self.sweep(&self.node).await?;
        self.beat()
            .await
            .map_err(|e| format!("writing the node's heartbeat failed: {e}"))
    }

    async fn beat(&self) -> redis::RedisResult<()> {
        let mut connection = self.connection.clone();
        redis::cmd("SET")
            .arg(heartbeat_key(&self.node))
            .arg(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |t| t.as_secs()),
            )
            .arg("EX")
            .arg(self.ttl.as_secs())
            .query_async::<()>(&mut connection)
            .await?;
        redis::cmd("SADD")
            .arg(NODES_KEY)
            .arg(&self.node)
            .query_async::<()>(&mut connection)
            .await
    }

    /// `device` is here now.
    pub async fn arrive(&self, device: &str) -> Result<(), String> {
        *self
            .devices
            .lock()
            .expect("not poisoned")
            .entry(device.to_string())
            .or_default() += 1;
        let mut connection = self.connection.clone();
        // Listed first: a crash between the two leaves nothing the sweep cannot find.
        redis::cmd("SADD")
            .arg(held_key(&self.node))
            .arg(device)
            .query_async::<()>(&mut connection)
            .await
            .and(
                redis::cmd("SET")
                    .arg(node_key(device))
                    .arg(&self.node)
                    .query_async::<()>(&mut connection)
                    .await,
            )
            .map_err(|e| format!("setting the presence key failed: {e}"))
    }

    /// One session of `device` ended here; the key goes when its last one does, unless
    /// another node holds the device by then.
    pub async fn leave(&self, device: &str) {
        {
            let mut devices = self.devices.lock().expect("not poisoned");
            let Some(count) = devices.get_mut(device) else {
                return;
            };
            *count -= 1;
            if *count > 0 {
                return;
            }
            devices.remove(device);
        }
        let mut connection = self.connection.clone();
        let cleared: redis::RedisResult<()> = async {
            redis::Script::new(DELETE_IF_MINE)
                .key(node_key(device))
                .arg(&self.node)
                .invoke_async::<i64>(&mut connection)
                .await?;
            redis::cmd("SREM")
                .arg(held_key(&self.node))
                .arg(device)
                .query_async(&mut connection)
                .await
        }
        .await;
        if let Err(e) = cleared {
            tracing::warn!(error = %e, "clearing a presence key failed; the node's sweep clears it");
        }
    }

    /// Clears the presence keys `node` left: each device key that still names it, then its
    /// list and its place among the nodes. Stops if the node's heartbeat comes back.
    async fn sweep(&self, node: &str) -> Result<usize, String> {
        let failed = |e: redis::RedisError| format!("clearing the keys of node {node} failed: {e}");
        let mut connection = self.connection.clone();
        let mut cleared = 0;
        loop {
            if node != self.node {
                let alive: bool = redis::cmd("EXISTS")
                    .arg(heartbeat_key(node))
                    .query_async(&mut connection)
                    .await
                    .map_err(failed)?;
                if alive {
                    return Ok(cleared);
                }
            }
            let devices: Vec<String> = redis::cmd("SPOP")
                .arg(held_key(node))
                .arg(SWEEP_BATCH)
                .query_async(&mut connection)
                .await
                .map_err(failed)?;
            if devices.is_empty() {
                break;
            }
            for device in &devices {
                let deleted: i64 = redis::Script::new(DELETE_IF_MINE)
                    .key(node_key(device))
                    .arg(node)
                    .invoke_async(&mut connection)
                    .await
                    .map_err(failed)?;
                cleared += deleted as usize;
            }
        }
        if node != self.node {
            redis::cmd("SREM")
                .arg(NODES_KEY)
                .arg(node)
                .query_async::<()>(&mut connection)
                .await
                .map_err(failed)?;
        }
        Ok(cleared)
    }

    /// Every half TTL: the heartbeat, and the keys of any node whose heartbeat is gone.
    /// A round costs a few commands per gateway node, none per device.
    pub async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.ttl / 2);
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(e) = self.beat().await {
                tracing::warn!(error = %e, "refreshing the node's heartbeat failed");
                continue;
            }
            if let Err(e) = self.sweep_dead().await {
                tracing::warn!(error = %e, "sweeping the keys of stopped nodes failed");
            }
        }
    }

    async fn sweep_dead(&self) -> Result<(), String> {
        let mut connection = self.connection.clone();
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(NODES_KEY)
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("listing the nodes failed: {e}"))?;
        for node in nodes.iter().filter(|n| **n != self.node) {
            let alive: bool = redis::cmd("EXISTS")
                .arg(heartbeat_key(node))
                .query_async(&mut connection)
                .await
                .map_err(|e| format!("reading node {node}'s heartbeat failed: {e}"))?;
            if alive {
                continue;
            }
            // One live node sweeps a dead one at a time.
            let claimed: Option<String> = redis::cmd("SET")
                .arg(format!("gateway:node:{{{node}}}:sweeper"))
                .arg(&self.node)
                .arg("NX")
                .arg("EX")
                .arg(self.ttl.as_secs())
                .query_async(&mut connection)
                .await
                .map_err(|e| format!("claiming node {node}'s sweep failed: {e}"))?;
            if claimed.is_some() {
                let cleared = self.sweep(node).await?;
                tracing::info!(node = %node, cleared, "cleared the presence keys of a stopped node");
            }
        }
        Ok(())
    }

    /// At a graceful stop, after every session left: the node is gone.
    pub async fn stop(&self) {
        let mut connection = self.connection.clone();
        // One command a key: on a cluster the two are in different slots.
        let gone = match self.sweep(&self.node).await {
            Err(e) => Err(e),
            Ok(_) => async {
                redis::cmd("DEL")
                    .arg(heartbeat_key(&self.node))
                    .query_async::<()>(&mut connection)
                    .await?;
                redis::cmd("SREM")
                    .arg(NODES_KEY)
                    .arg(&self.node)
                    .query_async::<()>(&mut connection)
                    .await
            }
            .await
            .map_err(|e| e.to_string()),
        };
        if let Err(e) = gone {
            tracing::warn!(error = %e, "removing the node's keys at the stop failed; another node sweeps them");
        }
    }
}
