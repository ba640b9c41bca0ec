//! The transactional outbox of realtime delivery (docs/streams.md).
//!
//! The transaction that applies a message chunk writes, for every message change that took
//! effect, one row per user to notify: the conversation's participants and the sender (so a
//! stub conversation, whose participants are not known yet, still notifies its author, and
//! the sender's other devices hear their own message). Duplicates and stale events write
//! nothing. After the commit, [`Store::lease_outbox`] hands the rows out in id order under
//! one lock for all drainers — so per conversation they reach Redis in commit order — and
//! [`OutboxLease::delivered`] deletes them, in the lease's transaction.

use sqlx::{Postgres, Sqlite, Transaction};

use super::announcement::{Announcement, Backlog};
use super::{postgres, sqlite, Store, StoreError};

/// Rows taken from the outbox under its lock; dropped without [`OutboxLease::delivered`],
/// they stay for the next drain.
pub struct OutboxLease {
    pub announcements: Vec<Announcement>,
    tx: LeaseTx,
}

enum LeaseTx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl OutboxLease {
    /// Deletes the leased rows (PostgreSQL's lease deleted them already: its commit is the
    /// deletion) and releases the lock.
    pub async fn delivered(self) -> Result<(), StoreError> {
        match self.tx {
            LeaseTx::Postgres(tx) => tx.commit().await?,
            LeaseTx::Sqlite(mut tx) => {
                let ids: Vec<i64> = self.announcements.iter().map(|a| a.id).collect();
                sqlite::delete_outbox(&mut tx, &ids).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

impl Store {
    /// Takes the oldest `limit` rows of the outbox (by id, so in commit order per
    /// conversation) under the one outbox lock every drainer takes, waiting for a drainer
    /// that holds it. The lock and the rows are held until the lease is delivered or dropped.
    pub async fn lease_outbox(&self, limit: i64) -> Result<OutboxLease, StoreError> {
        Ok(match self {
            Store::Postgres(pool, _) => {
                let mut tx = pool.begin().await?;
                let announcements = postgres::lease_outbox(&mut tx, limit).await?;
                OutboxLease {
                    announcements,
                    tx: LeaseTx::Postgres(tx),
                }
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let announcements = sqlite::lease_outbox(&mut tx, limit).await?;
                OutboxLease {
                    announcements,
                    tx: LeaseTx::Sqlite(tx),
                }
            }
        })
    }

    pub async fn outbox_backlog(&self) -> Result<Backlog, StoreError> {
        match self {
            Store::Postgres(pool, _) => postgres::outbox_backlog(pool).await,
            Store::Sqlite(pool) => sqlite::outbox_backlog(pool).await,
        }
    }
}
