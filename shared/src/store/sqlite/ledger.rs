//! The applied-key ledger (`mirror_applied_events`) and the stored ranks: what tells a
//! duplicate and a stale event from an applied one, and its pruning.

use std::collections::{HashMap, HashSet};

use sqlx::{SqliteConnection, SqlitePool};

use crate::event::{EntityKey, Event, Family, Rank};
use crate::store::rows::{entity_key, key_parts};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

use super::json;

pub(in crate::store) async fn applied_keys(
    c: &mut SqliteConnection,
    keys: &[&str],
) -> Result<HashSet<String>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT idempotency_key FROM mirror_applied_events
         WHERE idempotency_key IN (SELECT value FROM json_each(?1))",
    )
    .bind(json(&keys))
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().map(|(k,)| k).collect())
}

pub(in crate::store) async fn record_applied(
    c: &mut SqliteConnection,
    events: &[&Event],
    at: Timestamp,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let rows: Vec<[String; 4]> = events
        .iter()
        .map(|e| {
            [
                e.idempotency_key.to_string(),
                e.event_type.to_string(),
                e.key.entity_id(),
                e.event_id.clone(),
            ]
        })
        .collect();
    sqlx::query(
        "INSERT INTO mirror_applied_events (idempotency_key, event_type, entity_id, event_id, applied_at)
         SELECT r.value ->> 0, r.value ->> 1, r.value ->> 2, r.value ->> 3, ?2 FROM json_each(?1) AS r
         WHERE true
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(json(&rows))
    .bind(at.to_string())
    .execute(c)
    .await?;
    Ok(())
}

pub(in crate::store) async fn current_ranks(
    c: &mut SqliteConnection,
    family: Family,
    keys: &[&EntityKey],
) -> Result<HashMap<EntityKey, Rank>, StoreError> {
    let parts: Vec<(String, String)> = keys.iter().map(|k| key_parts(k)).collect();
    let sql = match family {
        Family::DmConversation => {
            "SELECT t.conversation_id, '', t.updated_at, t.deleted_at IS NOT NULL, t.content_hash
             FROM dm_conversations t JOIN json_each(?1) AS u ON t.conversation_id = u.value ->> 0
             WHERE t.updated_at IS NOT NULL"
        }
        Family::DmMessage => {
            "SELECT t.conversation_id, t.message_id, t.updated_at, t.deleted_at IS NOT NULL, t.content_hash
             FROM dm_messages t JOIN json_each(?1) AS u
               ON t.conversation_id = u.value ->> 0 AND t.message_id = u.value ->> 1"
        }
        Family::FollowEdge => {
            "SELECT t.user_id, t.target_id, t.updated_at, t.deleted_at IS NOT NULL, t.content_hash
             FROM follow_edges t JOIN json_each(?1) AS u
               ON t.user_id = u.value ->> 0 AND t.target_id = u.value ->> 1"
        }
    };
    let rows: Vec<(String, String, String, bool, String)> =
        sqlx::query_as(sql).bind(json(&parts)).fetch_all(c).await?;
    rows.into_iter()
        .map(|(a, b, updated_at, is_delete, content_hash)| {
            let version = Timestamp::parse_rfc3339(&updated_at)
                .map_err(|e| StoreError::Other(format!("stored version {e}")))?;
            Ok((
                entity_key(family, a, b),
                Rank {
                    version,
                    is_delete,
                    content_hash,
                },
            ))
        })
        .collect()
}

/// `mirrorctl bench --mode no-ledger`: the scratch ledger discards every row inserted.
pub(in crate::store) const DISCARD_APPLIED_KEYS: &str =
    "CREATE TRIGGER mirror_bench_discard BEFORE INSERT ON mirror_applied_events
     BEGIN SELECT RAISE(IGNORE); END";

/// Deletes up to `limit` applied keys older than `before`, oldest first; returns how many.
pub(in crate::store) async fn prune_applied_keys(
    pool: &SqlitePool,
    before: Timestamp,
    limit: i64,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM mirror_applied_events WHERE idempotency_key IN (
             SELECT idempotency_key FROM mirror_applied_events WHERE applied_at < ?1
             ORDER BY applied_at LIMIT ?2)",
    )
    .bind(before.to_string())
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}
