//! The transactional outbox of realtime delivery (issue 12, seed 003).
//!
//! The transaction that applies a message chunk writes, for every message change that took
//! effect, one row per user to notify: the conversation's participants and the sender (so a
//! stub conversation, whose participants are not known yet, still notifies its author, and
//! the sender's other devices hear their own message). Duplicates and stale events write
//! nothing. After the commit, [`Store::lease_outbox`] hands the rows out in id order under
//! one lock for all drainers — so per conversation they reach Redis in commit order — and
//! [`OutboxLease::delivered`] deletes them.

use serde::Serialize;
use sqlx::{Postgres, Sqlite, Transaction};

use super::rows::MessageRow;
use super::{postgres, sqlite, Store, StoreError};
use crate::timestamp::Timestamp;

/// One message change to announce, before it is expanded to its users.
#[derive(Debug, Serialize)]
pub(super) struct Change<'a> {
    /// `message.created`, `message.updated` or `message.deleted`.
    pub(super) kind: &'static str,
    pub(super) conversation_id: &'a str,
    pub(super) message_id: &'a str,
    /// Empty when not known (a delete of a message never mirrored).
    pub(super) sender_id: String,
    /// The event's version, RFC 3339 UTC with microseconds.
    pub(super) version: String,
}

impl<'a> Change<'a> {
    /// `created`: whether the event was a `.created` one; `sender` is the
    /// message's author (for a delete, as it was stored before the delete).
    pub(super) fn new(row: &MessageRow<'a>, created: bool, sender: Option<&str>) -> Self {
        let kind = if row.common.deleted_at.is_some() {
            "message.deleted"
        } else if created {
            "message.created"
        } else {
            "message.updated"
        };
        Change {
            kind,
            conversation_id: row.conversation_id,
            message_id: row.message_id,
            sender_id: row.author_id.or(sender).unwrap_or_default().to_string(),
            version: row
                .common
                .updated_at
                .map(|t| t.to_string())
                .unwrap_or_default(),
        }
    }
}

/// One outbox row: one entry for one user's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub id: i64,
    pub user_id: String,
    pub kind: String,
    pub conversation_id: String,
    pub message_id: String,
    pub sender_id: String,
    pub version: String,
    /// When the applying transaction wrote it (its commit follows within milliseconds).
    pub enqueued_at: Timestamp,
}

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
    /// Deletes the leased rows and releases the lock.
    pub async fn delivered(self) -> Result<(), StoreError> {
        let ids: Vec<i64> = self.announcements.iter().map(|a| a.id).collect();
        match self.tx {
            LeaseTx::Postgres(mut tx) => {
                postgres::delete_outbox(&mut tx, &ids).await?;
                tx.commit().await?;
            }
            LeaseTx::Sqlite(mut tx) => {
                sqlite::delete_outbox(&mut tx, &ids).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

/// How much waits in the outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Backlog {
    pub rows: u64,
    pub oldest: Option<Timestamp>,
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
