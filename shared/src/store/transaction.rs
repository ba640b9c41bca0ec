//! One transaction of either dialect: how it begins and ends, and what runs in it (a chunk,
//! `apply.rs`, which owns the lock order; or a page of repair, which keeps that order).

use serde::Serialize;
use sqlx::Connection;

use super::apply::apply_in;
use super::tx::Tx;
use super::{postgres, sqlite, Pending, PreparedStatements, Store, StoreError, Written};

impl Store {
    /// Runs `work` in one transaction. The connection goes back to the pool only if its
    /// transaction was ended cleanly.
    pub(super) async fn transact(&self, work: Work<'_>) -> Result<Done, StoreError> {
        match self {
            Store::Postgres(pool, settings) => {
                let mut connection = pool.acquire().await?;
                let mut tx = connection
                    .begin_with(format!(
                        "BEGIN; SET LOCAL statement_timeout = {}",
                        settings.statement_timeout_ms
                    ))
                    .await?;
                let pg = postgres::PgTx {
                    connection: &mut tx,
                    cached: settings.statements == PreparedStatements::Cached,
                };
                let result = work.run(&mut Tx::Postgres(pg)).await;
                let ended = end(tx, result).await;
                if ended.is_err() && !connection.is_clean() {
                    connection.close_on_drop();
                }
                ended
            }
            Store::Sqlite(pool) => {
                let mut connection = pool.acquire().await?;
                // IMMEDIATE takes the write lock up front, so two writers never deadlock
                // upgrading a read lock.
                let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
                let result = work.run(&mut Tx::Sqlite(&mut tx)).await;
                let ended = end(tx, result).await;
                if ended.is_err() && !connection.is_clean() {
                    connection.close_on_drop();
                }
                ended
            }
        }
    }
}

/// Commits on success; on failure rolls back, and reports whether that worked. SQLite rolls a
/// transaction back by itself on some errors (a full disk during a statement it cannot undo
/// alone, or at commit), after which the driver's own ROLLBACK fails and the driver still
/// counts the transaction as open: such a connection must not serve another chunk.
async fn end<DB: sqlx::Database, T>(
    tx: sqlx::Transaction<'_, DB>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(written) => {
            tx.commit().await?;
            Ok(written)
        }
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(%rollback, "the failed chunk could not be rolled back; its connection is closed");
            }
            Err(error)
        }
    }
}

/// Whether a pooled connection can serve the next chunk: no transaction left open.
trait Clean {
    fn is_clean(&self) -> bool;
}

impl<DB: sqlx::Database> Clean for sqlx::pool::PoolConnection<DB> {
    fn is_clean(&self) -> bool {
        !sqlx::Connection::is_in_transaction(&**self)
    }
}

/// What one transaction does.
pub(super) enum Work<'a> {
    /// A chunk, and whether its message changes are announced (written to the outbox).
    Apply(&'a [Pending], bool),
    /// Conversation ids, sorted and distinct.
    Repair(&'a [String]),
}

pub(super) enum Done {
    Written(Vec<Written>),
    Repaired(Repaired),
}

impl Work<'_> {
    async fn run(self, tx: &mut Tx<'_>) -> Result<Done, StoreError> {
        match self {
            Work::Apply(chunk, announce) => apply_in(tx, chunk, announce).await.map(Done::Written),
            Work::Repair(ids) => {
                // The writers' locks, in their order: conversations first, in key order.
                let conversations = dispatch!(tx, lock_existing_conversations(ids))?;
                let messages_changed = dispatch!(tx, refresh_recipients(ids))?;
                let conversations_changed = dispatch!(tx, refresh_conversations(ids))?;
                Ok(Done::Repaired(Repaired {
                    conversations,
                    conversations_changed,
                    messages_changed,
                }))
            }
        }
    }
}

/// What `repair` looked at and changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Repaired {
    /// Conversations whose derived columns were recomputed.
    pub conversations: u64,
    /// Conversations whose `last_message_*` were wrong and were rewritten.
    pub conversations_changed: u64,
    /// Messages whose `recipient_id` was wrong and was rewritten.
    pub messages_changed: u64,
}
