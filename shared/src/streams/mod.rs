//! Realtime delivery (docs/streams.md): every message change that took effect is added to
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

mod auth;
pub mod connection;
mod device;
mod fanout;

use std::time::Duration;

pub use crate::config::StreamSettings;
pub use auth::{is_auth_error, open_client};
pub use device::{
    ack, entries, id_parts, is_after, is_entry_id, last_generated, replay, replay_after,
    stream_info, tail, text, Entry, Gap, Replay, StreamInfo,
};
pub use fanout::{entry_fields, Delivery, DeliveryTotal, Fanout};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_hash_tag_of_their_user_or_device() {
        assert_eq!(stream_key("u123"), "stream:user:{u123}");
        assert_eq!(device_key("d1"), "device:{d1}:lastSeen");
    }
}
