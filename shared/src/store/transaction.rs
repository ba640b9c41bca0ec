//! One chunk, one transaction: the set-based statements of each dialect in the one order every
//! writer keeps (conversations first, in key order; then the rows; then the applied keys), so
//! concurrent writers never deadlock and every derived value sees all committed rows.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::{Connection, SqliteConnection};

use super::announcement::Change;
use super::plan::plan;
use super::rows::{conversation_ids, ConversationRow, FollowEdgeRow, MessageRow};
use super::{postgres, sqlite, Pending, PreparedStatements, Store, StoreError, Written};
use crate::event::{Action, EntityKey, Event, Family, Rank};
use crate::timestamp::Timestamp;

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

/// One open transaction of either dialect; each method is one set-based statement.
enum Tx<'t> {
    Postgres(postgres::PgTx<'t>),
    Sqlite(&'t mut SqliteConnection),
}

macro_rules! dispatch {
    ($tx:expr, $f:ident ( $($arg:expr),* )) => {
        match $tx {
            Tx::Postgres(pg) => postgres::$f(pg, $($arg),*).await,
            Tx::Sqlite(c) => sqlite::$f(c, $($arg),*).await,
        }
    };
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

async fn apply_in(
    tx: &mut Tx<'_>,
    chunk: &[Pending],
    announce: bool,
) -> Result<Vec<Written>, StoreError> {
    let family = chunk[0].event.family();
    debug_assert!(chunk.iter().all(|p| p.event.family() == family));
    let (mut written, winners) = plan(chunk);
    let winner_at: HashSet<usize> = winners.iter().copied().collect();
    let mirrored_at = Timestamp::now();

    // Sorted by key so that concurrent transactions lock rows in the same order.
    let mut winners: Vec<&Pending> = winners.iter().map(|&i| &chunk[i]).collect();
    winners.sort_by(|a, b| a.event.key.cmp(&b.event.key));
    let applied: HashSet<EntityKey> = match family {
        Family::DmMessage => {
            let conversations = conversation_ids(winners.iter().map(|p| &p.event.key));
            // A message row needs its conversation row: a stub until the conversation's own
            // events arrive. Locking the conversations first serialises every writer of one
            // conversation, so the summaries below see all committed messages.
            dispatch!(tx, lock_conversations(&conversations, mirrored_at))?;
            let rows: Vec<MessageRow> = winners.iter().map(|p| MessageRow::new(p)).collect();
            // A tombstone keeps no author: a delete's announcement names the stored one.
            let deleted: Vec<(&str, &str)> = (rows.iter())
                .filter(|r| announce && r.author_id.is_none())
                .map(|r| (r.conversation_id, r.message_id))
                .collect();
            let authors = if deleted.is_empty() {
                HashMap::new()
            } else {
                dispatch!(tx, message_authors(&deleted))?
            };
            let applied = dispatch!(tx, upsert_messages(&rows, mirrored_at))?;
            let touched = conversation_ids(applied.iter());
            dispatch!(tx, refresh_conversations(&touched))?;
            if announce {
                let mut changes: Vec<Change> = (rows.iter().zip(&winners))
                    .filter(|(_, p)| applied.contains(&p.event.key))
                    .map(|(row, p)| {
                        let key = (row.conversation_id.to_string(), row.message_id.to_string());
                        let created = p.event.event_type.action == Action::Created;
                        Change::new(row, created, authors.get(&key).map(String::as_str))
                    })
                    .collect();
                // Per conversation in version order, as the changes happened.
                changes.sort_by(|a, b| {
                    (a.conversation_id, &a.version, a.message_id).cmp(&(
                        b.conversation_id,
                        &b.version,
                        b.message_id,
                    ))
                });
                // Stamped now, the transaction's last statements: commit → XADD is measured
                // from here.
                dispatch!(tx, enqueue_announcements(&changes, Timestamp::now()))?;
            }
            applied
        }
        Family::DmConversation => {
            let rows: Vec<ConversationRow> =
                winners.iter().map(|p| ConversationRow::new(p)).collect();
            // Conversations whose participants are not known yet (a stub, or no row): their
            // messages so far were announced to their authors only.
            let unknown: Vec<String> = if announce {
                let ids = conversation_ids(winners.iter().map(|p| &p.event.key));
                let known = dispatch!(tx, conversations_with_participants(&ids))?;
                ids.into_iter().filter(|id| !known.contains(id)).collect()
            } else {
                Vec::new()
            };
            let applied = dispatch!(tx, upsert_conversations(&rows, mirrored_at))?;
            let touched = conversation_ids(applied.iter());
            dispatch!(tx, refresh_recipients(&touched))?;
            dispatch!(tx, refresh_conversations(&touched))?;
            if announce {
                // Now they are known, the other participants hear of those messages.
                let learned: Vec<String> = (touched.iter())
                    .filter(|id| unknown.contains(id))
                    .cloned()
                    .collect();
                dispatch!(tx, announce_earlier_messages(&learned, Timestamp::now()))?;
            }
            applied
        }
        Family::FollowEdge => {
            let rows: Vec<FollowEdgeRow> = winners.iter().map(|p| FollowEdgeRow::new(p)).collect();
            dispatch!(tx, upsert_follow_edges(&rows, mirrored_at))?
        }
    };

    // Every event but the winners that were written: a key applied before is a duplicate; a
    // winner the guard kept out lost to the stored row (equal rank is the same write, a
    // duplicate; lower is stale).
    let not_applied: Vec<&Pending> = chunk
        .iter()
        .enumerate()
        .filter(|(i, p)| !(winner_at.contains(i) && applied.contains(&p.event.key)))
        .map(|(_, p)| p)
        .collect();
    let (seen, stored): (HashSet<String>, HashMap<EntityKey, Rank>) = if not_applied.is_empty() {
        (HashSet::new(), HashMap::new())
    } else {
        let keys: Vec<&str> = not_applied
            .iter()
            .map(|p| p.event.idempotency_key.as_str())
            .collect();
        let lost: Vec<&EntityKey> = winners
            .iter()
            .map(|p| &p.event.key)
            .filter(|k| !applied.contains(*k))
            .collect();
        let seen = dispatch!(tx, applied_keys(&keys))?;
        let stored = if lost.is_empty() {
            HashMap::new()
        } else {
            dispatch!(tx, current_ranks(family, &lost))?
        };
        (seen, stored)
    };
    let mut newly_applied: Vec<&Event> = Vec::new();
    for (i, pending) in chunk.iter().enumerate() {
        let event = &pending.event;
        if seen.contains(event.idempotency_key.as_str()) {
            written[i] = Some(Written::Duplicate);
            continue;
        }
        if written[i].is_some() {
            continue;
        }
        written[i] = Some(if applied.contains(&event.key) {
            newly_applied.push(event);
            Written::Applied
        } else if stored.get(&event.key) == Some(&event.rank()) {
            Written::Duplicate
        } else {
            Written::Stale
        });
    }
    // In key order, like every other write, so two chunks can never wait on each other here.
    newly_applied.sort_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
    dispatch!(tx, record_applied(&newly_applied, mirrored_at))?;
    Ok(written
        .into_iter()
        .map(|w| w.expect("every event classified"))
        .collect())
}
