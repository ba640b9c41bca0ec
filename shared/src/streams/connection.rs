//! One Redis, or a Redis Cluster, behind one connection type. A cluster (ElastiCache with
//! cluster mode on, ElastiCache Serverless, a self-run cluster) is found at connect time by
//! `INFO cluster`; from then on a command goes to the node of its key's slot (redis-rs
//! follows `MOVED` and `ASK`), and a pipeline must stay inside one slot. Every key of one
//! user or device carries a hash tag (`{id}`), so what concerns one user is one slot
//! (docs/streams.md, "Redis Cluster").

use redis::aio::ConnectionLike;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::REDIS_TIMEOUT;

/// A connection to a single Redis (`S`), or to every node of a cluster.
#[derive(Clone)]
pub enum Connection<S> {
    Single(S),
    Cluster(ClusterConnection),
}

impl<S> Connection<S> {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }
}

impl<S: ConnectionLike + Send> ConnectionLike for Connection<S> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether the server `single` is connected to is a node of a Redis Cluster.
pub async fn is_cluster_node(single: &mut (impl ConnectionLike + Send)) -> Result<bool, String> {
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(single)
        .await
        .map_err(|e| format!("INFO cluster failed: {e}"))?;
    Ok(info.contains("cluster_enabled:1"))
}

/// A connection to the whole cluster that `client`'s node belongs to, with its address,
/// TLS and credentials.
pub async fn cluster_connection(client: &redis::Client) -> Result<ClusterConnection, String> {
    ClusterClientBuilder::new(vec![client.get_connection_info().clone()])
        .connection_timeout(REDIS_TIMEOUT)
        .response_timeout(REDIS_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot set up the Redis Cluster client: {e}"))?
        .get_async_connection()
        .await
        .map_err(|e| format!("cannot reach the Redis Cluster: {e}"))
}

/// The cluster slot of `key`: CRC16 of its hash tag (the text inside the first `{…}`, when
/// not empty), or of the whole key, modulo 16,384.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % 16_384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_keys_share_one_slot_by_their_hash_tag() {
        // CLUSTER KEYSLOT values, read off a Redis 7 cluster.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        // The rules of the cluster specification's examples: the first `{`, the first `}`
        // after it, and an empty tag hashes the whole key.
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        assert_eq!(slot("stream:user:{u1}"), slot("u1"));
        assert_eq!(slot("device:{d1}:lastSeen"), slot("device:{d1}:user"));
    }
}
