//! The PostgreSQL dialect: every statement is set-based, one array per column through
//! `UNNEST`, so a chunk costs the same few round trips whatever its size. One file per
//! family of statements; this one holds what they all use.

#[macro_use]
mod derived;
mod integrity;
mod ledger;
mod outbox;
mod plain;
mod upserts;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::{Query, QueryAs};
use sqlx::{FromRow, PgConnection, Postgres};

use super::StoreError;
use crate::event::Rank;
use crate::timestamp::Timestamp;

pub(super) use derived::{
    analyze, conversation_ids_after, lock_existing_conversations, refresh_conversations,
    refresh_recipients, write_last_messages,
};
pub(super) use integrity::{
    check_cursor, dump, live_keys_after, rows_for_keys, save_check_cursor, seen_add, seen_among,
    seen_reset, self_check, self_follows_after,
};
pub(super) use ledger::{
    applied_keys, current_ranks, prune_applied_keys, record_applied, DISCARD_APPLIED_KEYS,
};
pub(super) use outbox::{
    announce_earlier_messages, enqueue_announcements, lease_outbox, outbox_backlog,
};
pub(super) use plain::{execute_admin, preload, write_plain};
pub(super) use upserts::{
    conversation_states, lock_conversations, message_authors, upsert_conversations,
    upsert_follow_edges, upsert_messages,
};

/// One PostgreSQL transaction's connection, and the statement-cache choice
/// (`MIRROR_STATEMENT_CACHE`) every statement in it follows: named and cached on the
/// connection, or unnamed behind RDS Proxy, which pins a session holding a named statement.
pub(super) struct PgTx<'c> {
    pub(super) connection: &'c mut PgConnection,
    pub(super) cached: bool,
}

impl PgTx<'_> {
    fn query<'q>(&self, sql: &'q str) -> Query<'q, Postgres, PgArguments> {
        sqlx::query(sql).persistent(self.cached)
    }

    fn query_as<'q, O: for<'r> FromRow<'r, PgRow>>(
        &self,
        sql: &'q str,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        sqlx::query_as(sql).persistent(self.cached)
    }

    /// A statement planned at every execution, whatever the cache: a generic plan cached
    /// while the tables were small would keep scanning them once they have grown.
    fn unnamed_query<'q>(&self, sql: &'q str) -> Query<'q, Postgres, PgArguments> {
        sqlx::query(sql).persistent(false)
    }
}

/// One array per column of `rows`, for `UNNEST`.
fn column<'a, R, T>(rows: &'a [R], value: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}

fn datetime(t: Option<Timestamp>) -> Option<DateTime<Utc>> {
    t.map(|t| t.as_datetime())
}

fn rank(
    updated_at: DateTime<Utc>,
    is_delete: bool,
    content_hash: String,
) -> Result<Rank, StoreError> {
    let version = Timestamp::new(updated_at)
        .ok_or_else(|| StoreError::Other(format!("stored version {updated_at} is out of range")))?;
    Ok(Rank {
        version,
        is_delete,
        content_hash,
    })
}
