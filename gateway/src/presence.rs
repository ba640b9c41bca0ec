//! Which user a device belongs to (`device:{id}:user`) and which gateway holds it now
//! (`device:{id}:node`, with a TTL refreshed while it stays connected, cleared when it
//! leaves unless another node holds it by then). docs/realtime.md, "Keys".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    connection: &mut ConnectionManager,
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

/// The devices connected to this node, for the presence keys.
pub struct Presence {
    node: String,
    ttl: Duration,
    devices: Mutex<HashMap<String, usize>>,
    connection: ConnectionManager,
}

impl Presence {
    pub fn new(node: String, ttl: Duration, connection: ConnectionManager) -> Presence {
        Presence {
            node,
            ttl,
            devices: Mutex::new(HashMap::new()),
            connection,
        }
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
        redis::cmd("SET")
            .arg(node_key(device))
            .arg(&self.node)
            .arg("EX")
            .arg(self.ttl.as_secs())
            .query_async::<()>(&mut connection)
            .await
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
        let script = redis::Script::new(
            r"
            if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
            return 0
            ",
        );
        let mut connection = self.connection.clone();
        let cleared: redis::RedisResult<i64> = script
            .key(node_key(device))
            .arg(&self.node)
            .invoke_async(&mut connection)
            .await;
        if let Err(e) = cleared {
            tracing::warn!(error = %e, "clearing a presence key failed; its TTL ends it");
        }
    }

    /// Refreshes every presence key of this node, every half TTL, one pipeline a round.
    pub async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.ttl / 2);
        every.tick().await;
        loop {
            every.tick().await;
            let devices: Vec<String> = {
                let devices = self.devices.lock().expect("not poisoned");
                devices.keys().cloned().collect()
            };
            if devices.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for device in &devices {
                pipe.cmd("SET")
                    .arg(node_key(device))
                    .arg(&self.node)
                    .arg("EX")
                    .arg(self.ttl.as_secs())
                    .ignore();
            }
            let mut connection = self.connection.clone();
            if let Err(e) = pipe.query_async::<()>(&mut connection).await {
                tracing::warn!(error = %e, devices = devices.len(), "refreshing presence keys failed");
            }
        }
    }
}
