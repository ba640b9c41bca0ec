//! The SQL store: PostgreSQL in production, SQLite as the embedded default, one behaviour.
//!
//! A chunk of events of one family is applied in one transaction with set-based statements
//! (this module decides *what* to write; `postgres.rs` and `sqlite.rs` hold each dialect's
//! SQL and nothing else):
//! 1. per entity, the greatest event by the contract's total order is the chunk's winner;
//! 2. winners are upserted with a guard that only lets a greater rank overwrite a row, so
//!    concurrent writers and any arrival order converge on the same rows (and an event
//!    applied before cannot be applied again);
//! 3. the denormalised columns (`last_message_*`, `recipient_id`, stub conversations) are
//!    recomputed for what changed, inside the same transaction;
//! 4. only when some event did not apply: its key is looked up in `mirror_applied_events`
//!    (applied before: a duplicate) and its entity's stored rank (equal: a duplicate, lower:
//!    stale) — so the common case costs no look-up round trip;
//! 5. the applied keys are recorded.

/// One statement of the open transaction `$tx`, in its dialect's module.
macro_rules! dispatch {
    ($tx:expr, $f:ident ( $($arg:expr),* )) => {
        match $tx {
            Tx::Postgres(pg) => postgres::$f(pg, $($arg),*).await,
            Tx::Sqlite(c) => sqlite::$f(c, $($arg),*).await,
        }
    };
}

mod announcement;
mod apply;
mod connect;
mod error;
mod inconsistency;
mod integrity;
mod newest;
mod outbox;
mod plan;
mod postgres;
mod rows;
mod snapshot;
mod sqlite;
mod transaction;
mod tx;

use std::collections::BTreeSet;

use sqlx::{PgPool, SqlitePool};

pub use announcement::{Announcement, Backlog};
pub use connect::{PgSettings, PreparedStatements};
pub use error::StoreError;
pub use inconsistency::Inconsistency;
pub use integrity::{CheckCursor, Comparer, Comparison};
pub use outbox::OutboxLease;
pub use plan::plan;
pub use rows::PlainRows;
pub use snapshot::Snapshot;
pub use transaction::Repaired;

use crate::event::Event;
use crate::timestamp::Timestamp;
use snapshot::TABLES;
use transaction::{Done, Work};

/// An accepted event waiting to be written, with the bookkeeping of its SQS record.
#[derive(Clone, Debug)]
pub struct Pending {
    pub event: Event,
    /// The SQS receive count − 1 (`retry_count`).
    pub retry_count: i32,
}

#[cfg(test)]
impl Pending {
    /// The event of this envelope, parsed as a batch would, for the store's unit tests.
    fn of(envelope: &serde_json::Value) -> Pending {
        let limits = crate::event::Limits {
            now: crate::timestamp::Timestamp::now(),
            max_future_skew: std::time::Duration::from_secs(900),
        };
        Pending {
            event: Event::parse(&envelope.to_string(), limits).expect("a valid event"),
            retry_count: 0,
        }
    }
}

/// What became of an accepted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Applied,
    /// Its key was applied before, or an event of the same rank was.
    Duplicate,
    /// A greater event of the same entity is already in the row (or in the same chunk).
    Stale,
}

/// Applied keys deleted per transaction by [`Store::prune_applied_keys`].
pub const PRUNE_BATCH: i64 = 20_000;

#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgPool, PgSettings),
    Sqlite(SqlitePool),
}

impl Store {
    pub fn dialect(&self) -> &'static str {
        match self {
            Store::Postgres(..) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// The most connections (and so statements in flight) this process will hold.
    pub fn max_connections(&self) -> u32 {
        match self {
            Store::Postgres(pool, _) => pool.options().get_max_connections(),
            Store::Sqlite(pool) => pool.options().get_max_connections(),
        }
    }

    /// Creates or upgrades the schema (migrations are embedded in the binary).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool, _) => {
                // On a connection of its own that is closed afterwards: the migrator's named
                // prepared statements must not stay on a pooled connection (RDS Proxy pins).
                let mut connection = pool.acquire().await?;
                sqlx::migrate!("../migrations/postgres")
                    .run(&mut *connection)
                    .await?;
                connection.close().await?;
            }
            Store::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    /// Applies one chunk of events of one family in one transaction; on error nothing of the
    /// chunk is committed. Announces nothing.
    pub async fn apply(&self, chunk: &[Pending]) -> Result<Vec<Written>, StoreError> {
        self.apply_announcing(chunk, false).await
    }

    /// As [`Store::apply`]; with `announce`, the same transaction writes an outbox row for
    /// every message change that took effect and every user it concerns
    /// ([`Store::lease_outbox`]).
    pub async fn apply_announcing(
        &self,
        chunk: &[Pending],
        announce: bool,
    ) -> Result<Vec<Written>, StoreError> {
        if chunk.is_empty() {
            return Ok(Vec::new());
        }
        match self.transact(Work::Apply(chunk, announce)).await? {
            Done::Written(written) => Ok(written),
            Done::Repaired(_) => unreachable!("apply writes events"),
        }
    }

    /// Recomputes the derived columns (`last_message_*`, `recipient_id`) of `only` these
    /// conversations, or of all of them, in key order, `page` conversations per
    /// transaction. Each transaction takes the writers' locks in their order, so it is safe
    /// while live writers run; it writes only what differs, so a second run changes nothing.
    /// Never announces anything: it changes no event's effect, only derived values.
    pub async fn repair(
        &self,
        only: Option<Vec<String>>,
        page: usize,
    ) -> Result<Repaired, StoreError> {
        let page = page.max(1);
        self.analyze().await?;
        let mut total = Repaired::default();
        let mut add = |done: Done| {
            if let Done::Repaired(r) = done {
                total.conversations += r.conversations;
                total.conversations_changed += r.conversations_changed;
                total.messages_changed += r.messages_changed;
            }
        };
        match only {
            Some(ids) => {
                let ids: Vec<String> = ids
                    .into_iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                for ids in ids.chunks(page) {
                    add(self.transact(Work::Repair(ids)).await?);
                }
            }
            None => {
                let mut after = String::new();
                loop {
                    let ids = self.conversation_ids_after(&after, page).await?;
                    let Some(last) = ids.last() else { break };
                    after = last.clone();
                    add(self.transact(Work::Repair(&ids)).await?);
                }
            }
        }
        Ok(total)
    }

    /// Forgets the idempotency keys applied before `before`; returns how many. Safe at any
    /// age: a later copy of a forgotten event still cannot change a row (the rank guard keeps
    /// it out); it is then counted as a duplicate or stale by rank instead of by key. Deletes
    /// in transactions of at most [`PRUNE_BATCH`] keys, oldest first (the `applied_at`
    /// index), so that a day of keys at 10,000 events/s never becomes one huge transaction
    /// holding its locks and WAL; it stops early, with what it did, at `deadline`.
    pub async fn prune_applied_keys(
        &self,
        before: Timestamp,
        deadline: Option<std::time::Instant>,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = match self {
                Store::Postgres(pool, _) => {
                    postgres::prune_applied_keys(pool, before, PRUNE_BATCH).await?
                }
                Store::Sqlite(pool) => {
                    sqlite::prune_applied_keys(pool, before, PRUNE_BATCH).await?
                }
            };
            total += deleted;
            let out_of_time = deadline.is_some_and(|d| std::time::Instant::now() >= d);
            if deleted < PRUNE_BATCH as u64 || out_of_time {
                return Ok(total);
            }
        }
    }

    /// Every mirrored row, as JSON objects with one text form for both stores (timestamps as
    /// RFC 3339 UTC with microseconds, `participant_ids` and `media` as JSON), ordered by key.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot::default();
        for table in &TABLES {
            let rows = match self {
                Store::Postgres(pool, _) => postgres::dump(pool, table).await?,
                Store::Sqlite(pool) => sqlite::dump(pool, table).await?,
            };
            snapshot.tables.insert(table.name.to_string(), rows);
        }
        Ok(snapshot)
    }
}
