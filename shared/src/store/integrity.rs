//! What `mirrorctl check` and `repair` need of the store: the self-check's queries, page by
//! page in key order, and a connection of its own for comparing a source snapshot, holding
//! the keys it has seen in a temporary table (so memory stays bounded on this side).

use std::collections::HashMap;

use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Sqlite};

use super::inconsistency::Inconsistency;
use super::rows::{compared_columns, expected_row, key_parts, PlainRows};
use super::snapshot::{Table, TABLES};
use super::{postgres, sqlite, Store, StoreError};
use crate::event::{Event, Family, Rank};
use crate::timestamp::Timestamp;

/// How one source document compares with its row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// The row holds the document's version and content.
    Matched,
    /// No row (or only a stub conversation).
    Missing,
    /// The row holds a greater version: the mirror is ahead of the snapshot, not drift.
    MirrorNewer,
    /// The row holds an older or different version; the compared columns that differ.
    Mismatched(Vec<&'static str>),
}

fn table(family: Family) -> &'static Table {
    let name = match family {
        Family::DmConversation => "dm_conversations",
        Family::DmMessage => "dm_messages",
        Family::FollowEdge => "follow_edges",
    };
    TABLES
        .iter()
        .find(|t| t.name == name)
        .expect("every family has a table")
}

/// Where a self-check stopped, for the next run to go on from: in the conversations (after
/// the id `after.0`) or in the follow edges (after the key `after`), and when its pass began.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckCursor {
    pub follows: bool,
    pub after: (String, String),
    pub pass_started_at: String,
}

impl Store {
    /// Where the last scheduled self-check stopped, if it did not finish its pass.
    pub async fn check_cursor(&self) -> Result<Option<CheckCursor>, StoreError> {
        match self {
            Store::Postgres(pool, _) => postgres::check_cursor(pool).await,
            Store::Sqlite(pool) => sqlite::check_cursor(pool).await,
        }
    }

    /// Keeps where a self-check stopped; `None` when its pass is done.
    pub async fn save_check_cursor(&self, cursor: Option<&CheckCursor>) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool, _) => postgres::save_check_cursor(pool, cursor).await,
            Store::Sqlite(pool) => sqlite::save_check_cursor(pool, cursor).await,
        }
    }

    /// Refreshes the planner's statistics of the mirror tables, as a bulk load should be
    /// followed by (PostgreSQL's `ANALYZE`, sampled, about a second on millions of rows).
    /// SQLite plans by its index heuristics and is left as it is.
    pub async fn analyze(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool, _) => postgres::analyze(pool).await,
            Store::Sqlite(_) => Ok(()),
        }
    }

    /// `mirrorctl bench --mode ceiling`: a batch's rows by plain upserts (PostgreSQL).
    pub async fn write_plain(&self, rows: &PlainRows) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool, _) => postgres::write_plain(pool, rows).await,
            Store::Sqlite(_) => Err(StoreError::Other(
                "the ceiling mode needs PostgreSQL".into(),
            )),
        }
    }

    /// `mirrorctl bench --preload N`, on its scratch store: `messages` earlier messages over
    /// `conversations` conversations, with their applied keys (PostgreSQL).
    pub async fn preload(
        &self,
        messages: u64,
        conversations: usize,
        progress: &mut (dyn FnMut(i64) + Send),
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool, _) => {
                postgres::preload(pool, messages as i64, conversations as i64, progress).await
            }
            Store::Sqlite(_) => Err(StoreError::Other(
                "--preload fills a PostgreSQL schema: set DATABASE_URL to postgres://…".into(),
            )),
        }
    }

    /// One administrative statement (PostgreSQL: `mirrorctl bench`'s scratch schema).
    pub async fn execute_admin(&self, sql: &str) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool, _) => postgres::execute_admin(pool, sql).await,
            Store::Sqlite(_) => Ok(()),
        }
    }

    /// `mirrorctl bench --mode no-ledger` only, on its scratch store: from now on the rows
    /// inserted into `mirror_applied_events` are discarded by a trigger.
    pub async fn discard_applied_keys(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool, _) => {
                postgres::execute_admin(pool, postgres::DISCARD_APPLIED_KEYS).await
            }
            Store::Sqlite(pool) => sqlite::execute_admin(pool, sqlite::DISCARD_APPLIED_KEYS).await,
        }
    }

    /// Up to `limit` conversation ids after `after`, in key order.
    pub async fn conversation_ids_after(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self {
            Store::Postgres(pool, _) => postgres::conversation_ids_after(pool, after, limit).await,
            Store::Sqlite(pool) => sqlite::conversation_ids_after(pool, after, limit).await,
        }
    }

    /// The self-check's findings among the conversations `ids` and their messages: (kind,
    /// conversation id, message id or "").
    pub async fn self_check(
        &self,
        ids: &[String],
        stub_before: Timestamp,
    ) -> Result<Vec<(Inconsistency, String, String)>, StoreError> {
        match self {
            Store::Postgres(pool, _) => postgres::self_check(pool, ids, stub_before).await,
            Store::Sqlite(pool) => sqlite::self_check(pool, ids, stub_before).await,
        }
    }

    /// Up to `limit` live self-follow edges after `after`, in key order.
    pub async fn self_follows_after(
        &self,
        after: &(String, String),
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self {
            Store::Postgres(pool, _) => postgres::self_follows_after(pool, after, limit).await,
            Store::Sqlite(pool) => sqlite::self_follows_after(pool, after, limit).await,
        }
    }

    /// A connection of its own for comparing a snapshot with the mirror.
    pub async fn comparer(&self) -> Result<Comparer, StoreError> {
        let mut connection = match self {
            Store::Postgres(pool, _) => Connection::Postgres(pool.acquire().await?),
            Store::Sqlite(pool) => Connection::Sqlite(pool.acquire().await?),
        };
        match &mut connection {
            Connection::Postgres(c) => postgres::seen_reset(c).await?,
            Connection::Sqlite(c) => sqlite::seen_reset(c).await?,
        }
        Ok(Comparer { connection })
    }
}

enum Connection {
    Postgres(PoolConnection<Postgres>),
    Sqlite(PoolConnection<Sqlite>),
}

/// Compares source documents with their rows, chunk by chunk, remembering (in the database)
/// which keys it saw, so that live rows the source does not hold can be listed at the end.
pub struct Comparer {
    connection: Connection,
}

impl Comparer {
    /// How each of `events` (all of `family`) compares with its row.
    pub async fn compare(
        &mut self,
        family: Family,
        events: &[Event],
    ) -> Result<Vec<Comparison>, StoreError> {
        let table = table(family);
        let keys: Vec<(String, String)> = events.iter().map(|e| key_parts(&e.key)).collect();
        let rows = match &mut self.connection {
            Connection::Postgres(c) => {
                postgres::seen_add(c, table, &keys).await?;
                postgres::rows_for_keys(c, table, &keys).await?
            }
            Connection::Sqlite(c) => {
                sqlite::seen_add(c, table, &keys).await?;
                sqlite::rows_for_keys(c, table, &keys).await?
            }
        };
        let text = |row: &Value, column: &str| row[column].as_str().unwrap_or("").to_string();
        let by_key: HashMap<(String, String), Value> = rows
            .into_iter()
            .map(|row| {
                let a = text(&row, table.key[0]);
                let b = table.key.get(1).map_or(String::new(), |k| text(&row, k));
                ((a, b), row)
            })
            .collect();
        events
            .iter()
            .zip(&keys)
            .map(|(event, key)| match by_key.get(key) {
                None => Ok(Comparison::Missing),
                Some(row) => compare(event, row),
            })
            .collect()
    }

    /// One page of live rows of `family` after `after` in key order (up to `limit` rows
    /// scanned): the keys no compared document had, and the last key scanned (None at the
    /// end), from which the next page starts. Two index look-ups a page: the work grows with
    /// the table, never with its square.
    pub async fn unseen_live_page(
        &mut self,
        family: Family,
        after: &(String, String),
        limit: usize,
    ) -> Result<(Vec<(String, String)>, Option<(String, String)>), StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let table = table(family);
        let (live, seen) = match &mut self.connection {
            Connection::Postgres(c) => {
                let live = postgres::live_keys_after(c, table, after, limit).await?;
                let seen = postgres::seen_among(c, table, &live).await?;
                (live, seen)
            }
            Connection::Sqlite(c) => {
                let live = sqlite::live_keys_after(c, table, after, limit).await?;
                let seen = sqlite::seen_among(c, table, &live).await?;
                (live, seen)
            }
        };
        let last = live.last().cloned();
        let unseen = live.into_iter().filter(|k| !seen.contains(k)).collect();
        Ok((unseen, last))
    }
}

fn compare(event: &Event, row: &Value) -> Result<Comparison, StoreError> {
    let Some(updated_at) = row["updated_at"].as_str() else {
        // A stub conversation: its own document never arrived.
        return Ok(Comparison::Missing);
    };
    let stored = Rank {
        version: Timestamp::parse_rfc3339(updated_at)
            .map_err(|e| StoreError::Other(format!("stored version {e}")))?,
        is_delete: !row["deleted_at"].is_null(),
        content_hash: row["content_hash"].as_str().unwrap_or("").to_string(),
    };
    let source = event.rank();
    // Newer only by version (or a delete over an upsert at one version): two contents at one
    // version are drift whichever hash is greater.
    let newer = (stored.version, stored.is_delete) > (source.version, source.is_delete);
    Ok(if stored == source {
        Comparison::Matched
    } else if newer {
        Comparison::MirrorNewer
    } else {
        let expected = expected_row(event);
        let mut fields: Vec<&'static str> = compared_columns(event.family())
            .iter()
            .copied()
            .filter(|column| expected[*column] != row[*column])
            .collect();
        if fields.is_empty() {
            // Equal in every compared column: the difference is in what the document carries
            // besides them (a conversation's own lastMessage* fields).
            fields.push("content_hash");
        }
        Comparison::Mismatched(fields)
    })
}
