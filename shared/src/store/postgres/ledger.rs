//! The applied-key ledger (`mirror_applied_events`) and the stored ranks: what tells a
//! duplicate and a stale event from an applied one, and its pruning.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::event::{EntityKey, Event, Family, Rank};
use crate::store::rows::{entity_key, key_parts};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

use super::{rank, PgTx};

pub(in crate::store) async fn applied_keys(
    tx: &mut PgTx<'_>,
    keys: &[&str],
) -> Result<HashSet<String>, StoreError> {
    let rows: Vec<(String,)> = tx
        .query_as(
            "SELECT idempotency_key FROM mirror_applied_events WHERE idempotency_key = ANY($1)",
        )
        .bind(keys)
        .fetch_all(&mut *tx.connection)
        .await?;
    Ok(rows.into_iter().map(|(k,)| k).collect())
}

pub(in crate::store) async fn record_applied(
    tx: &mut PgTx<'_>,
    events: &[&Event],
    at: Timestamp,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = events.iter().map(|e| e.idempotency_key.as_str()).collect();
    let types: Vec<String> = events.iter().map(|e| e.event_type.to_string()).collect();
    let entities: Vec<String> = events.iter().map(|e| e.key.entity_id()).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    tx.query(
        "INSERT INTO mirror_applied_events (idempotency_key, event_type, entity_id, event_id, applied_at)
         SELECT k, t, e, i, $1
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(k, t, e, i, n)
         ORDER BY n
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(at.as_datetime())
    .bind(&keys)
    .bind(&types)
    .bind(&entities)
    .bind(&ids)
    .execute(&mut *tx.connection)
    .await?;
    Ok(())
}

pub(in crate::store) async fn current_ranks(
    tx: &mut PgTx<'_>,
    family: Family,
    keys: &[&EntityKey],
) -> Result<HashMap<EntityKey, Rank>, StoreError> {
    let (first, second): (Vec<String>, Vec<String>) = keys.iter().map(|k| key_parts(k)).unzip();
    let sql = match family {
        Family::DmConversation => {
            "SELECT t.conversation_id, '', t.updated_at, t.deleted_at IS NOT NULL, t.content_hash
             FROM dm_conversations t JOIN UNNEST($1::text[], $2::text[]) AS u(a, b)
               ON t.conversation_id = u.a
             WHERE t.updated_at IS NOT NULL"
        }
        Family::DmMessage => {
            "SELECT t.conversation_id, t.message_id, t.updated_at, t.deleted_at IS NOT NULL, t.content_hash
             FROM dm_messages t JOIN UNNEST($1::text[], $2::text[]) AS u(a, b)
               ON t.conversation_id = u.a AND t.message_id = u.b"
        }
        Family::FollowEdge => {
            "SELECT t.user_id, t.target_id, t.updated_at, t.deleted_at IS NOT NULL, t.content_hash
             FROM follow_edges t JOIN UNNEST($1::text[], $2::text[]) AS u(a, b)
               ON t.user_id = u.a AND t.target_id = u.b"
        }
    };
    let rows: Vec<(String, String, DateTime<Utc>, bool, String)> = tx
        .query_as(sql)
        .bind(&first)
        .bind(&second)
        .fetch_all(&mut *tx.connection)
        .await?;
    rows.into_iter()
        .map(|(a, b, updated_at, is_delete, hash)| {
            Ok((entity_key(family, a, b), rank(updated_at, is_delete, hash)?))
        })
        .collect()
}

/// `mirrorctl bench --mode no-ledger`: the scratch ledger discards every row inserted.
pub(in crate::store) const DISCARD_APPLIED_KEYS: &str =
    "CREATE FUNCTION mirror_bench_discard() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
     CREATE TRIGGER mirror_bench_discard BEFORE INSERT ON mirror_applied_events
         FOR EACH ROW EXECUTE FUNCTION mirror_bench_discard()";

/// Deletes up to `limit` applied keys older than `before`, oldest first; returns how many.
pub(in crate::store) async fn prune_applied_keys(
    pool: &PgPool,
    before: Timestamp,
    limit: i64,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM mirror_applied_events WHERE idempotency_key IN (
             SELECT idempotency_key FROM mirror_applied_events WHERE applied_at < $1
             ORDER BY applied_at LIMIT $2)",
    )
    .bind(before.as_datetime())
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}
