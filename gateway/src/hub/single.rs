//! The reader on one Redis: one `XREAD BLOCK` over the keys of every followed user, on a
//! connection of its own; a user joining wakes it (`CLIENT UNBLOCK`) so that its next
//! `XREAD` names the new key.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use realtime_mirror::streams::{self, stream_key, REDIS_TIMEOUT};
use redis::{AsyncConnectionConfig, Value};

use super::{streams_of, Hub, READ_COUNT, RECONNECT_AFTER};

/// How long one `XREAD` blocks when nothing arrives.
pub const BLOCK: Duration = Duration::from_secs(5);

impl Hub {
    /// Makes the reader's next `XREAD` include the users joined since its last one.
    pub(super) async fn wake_reader(&self) {
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

    /// The reader on one Redis: runs for the life of the process.
    pub(super) async fn run_single(self: Arc<Self>) {
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
                if let Err(e) = self.recheck(&mut connection).await {
                    self.metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "rechecking the cursors failed; reconnecting");
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    continue;
                }
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
