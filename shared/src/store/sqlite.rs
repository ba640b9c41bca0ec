//! The SQLite dialect: every statement is set-based; a chunk's rows travel as one JSON array
//! bound once and unpacked with `json_each`, so no statement approaches the bind limit.
//! Timestamps are RFC 3339 text with six fractional digits, so text order is time order.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use sqlx::{SqliteConnection, SqlitePool};

use super::outbox::{Announcement, Backlog, Change};
use super::rows::{entity_key, key_parts, ConversationRow, FollowEdgeRow, MessageRow};
use super::snapshot::{Kind, Table};
use super::StoreError;
use crate::check::Inconsistency;
use crate::event::{EntityKey, Event, Family, Rank};
use crate::timestamp::Timestamp;

fn json<T: Serialize>(rows: &T) -> String {
    serde_json::to_string(rows).expect("rows serialise to JSON")
}

pub(super) async fn applied_keys(
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

pub(super) async fn record_applied(
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

/// SQLite has one writer at a time (`BEGIN IMMEDIATE`), so creating the stubs is all the
/// locking there is to do.
pub(super) async fn lock_conversations(
    c: &mut SqliteConnection,
    ids: &[String],
    at: Timestamp,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO dm_conversations (conversation_id, sync_source, mirrored_at)
         SELECT value, 'derived', ?2 FROM json_each(?1) WHERE true
         ON CONFLICT (conversation_id) DO NOTHING",
    )
    .bind(json(&ids))
    .bind(at.to_string())
    .execute(c)
    .await?;
    Ok(())
}

pub(super) async fn upsert_messages(
    c: &mut SqliteConnection,
    rows: &[MessageRow<'_>],
    at: Timestamp,
) -> Result<HashSet<EntityKey>, StoreError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let returned: Vec<(String, String)> = sqlx::query_as(
        "WITH u AS (
             SELECT value ->> 'conversation_id' AS conversation_id, value ->> 'message_id' AS message_id,
                    value ->> 'author_id' AS author_id, value ->> 'body' AS body,
                    value ->> 'media' AS media, value ->> 'created_at' AS created_at,
                    value ->> 'updated_at' AS updated_at, value ->> 'deleted_at' AS deleted_at,
                    value ->> 'content_hash' AS content_hash, value ->> 'sync_source' AS sync_source,
                    value ->> 'event_id' AS event_id, value ->> 'retry_count' AS retry_count
             FROM json_each(?1)
         )
         INSERT INTO dm_messages (conversation_id, message_id, author_id, recipient_id, body,
             media, created_at, updated_at, deleted_at, content_hash, sync_source, event_id,
             retry_count, mirrored_at)
         SELECT u.conversation_id, u.message_id, u.author_id,
                CASE WHEN u.deleted_at IS NULL THEN
                    CASE u.author_id WHEN c.dm_pair_low THEN c.dm_pair_high
                                     WHEN c.dm_pair_high THEN c.dm_pair_low END
                END,
                u.body, u.media, u.created_at, u.updated_at, u.deleted_at, u.content_hash,
                u.sync_source, u.event_id, u.retry_count, ?2
         FROM u LEFT JOIN dm_conversations c ON c.conversation_id = u.conversation_id
         WHERE true
         ON CONFLICT (conversation_id, message_id) DO UPDATE SET
             author_id = excluded.author_id, recipient_id = excluded.recipient_id,
             body = excluded.body, media = excluded.media, created_at = excluded.created_at,
             updated_at = excluded.updated_at, deleted_at = excluded.deleted_at,
             content_hash = excluded.content_hash, sync_source = excluded.sync_source,
             event_id = excluded.event_id, retry_count = excluded.retry_count,
             mirrored_at = excluded.mirrored_at
         WHERE (excluded.updated_at, excluded.deleted_at IS NOT NULL, excluded.content_hash)
             > (dm_messages.updated_at, dm_messages.deleted_at IS NOT NULL, dm_messages.content_hash)
         RETURNING conversation_id, message_id",
    )
    .bind(json(&rows))
    .bind(at.to_string())
    .fetch_all(c)
    .await?;
    Ok(returned
        .into_iter()
        .map(|(conversation_id, message_id)| EntityKey::Message {
            conversation_id,
            message_id,
        })
        .collect())
}

pub(super) async fn upsert_conversations(
    c: &mut SqliteConnection,
    rows: &[ConversationRow<'_>],
    at: Timestamp,
) -> Result<HashSet<EntityKey>, StoreError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let returned: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO dm_conversations (conversation_id, owner_id, participant_ids,
             doc_last_message_id, doc_last_message_at, doc_last_message_preview,
             doc_last_message_author_id, dm_pair_low, dm_pair_high, created_at, updated_at,
             deleted_at, content_hash, sync_source, last_synced_event_id, retry_count, mirrored_at)
         SELECT value ->> 'conversation_id', value ->> 'owner_id', value ->> 'participant_ids',
                value ->> 'doc_last_message_id', value ->> 'doc_last_message_at',
                value ->> 'doc_last_message_preview', value ->> 'doc_last_message_author_id',
                value ->> 'dm_pair_low', value ->> 'dm_pair_high', value ->> 'created_at',
                value ->> 'updated_at', value ->> 'deleted_at', value ->> 'content_hash',
                value ->> 'sync_source', value ->> 'event_id', value ->> 'retry_count', ?2
         FROM json_each(?1)
         WHERE true
         ON CONFLICT (conversation_id) DO UPDATE SET
             owner_id = excluded.owner_id, participant_ids = excluded.participant_ids,
             doc_last_message_id = excluded.doc_last_message_id,
             doc_last_message_at = excluded.doc_last_message_at,
             doc_last_message_preview = excluded.doc_last_message_preview,
             doc_last_message_author_id = excluded.doc_last_message_author_id,
             dm_pair_low = excluded.dm_pair_low, dm_pair_high = excluded.dm_pair_high,
             created_at = excluded.created_at, updated_at = excluded.updated_at,
             deleted_at = excluded.deleted_at, content_hash = excluded.content_hash,
             sync_source = excluded.sync_source,
             last_synced_event_id = excluded.last_synced_event_id,
             retry_count = excluded.retry_count, mirrored_at = excluded.mirrored_at
         WHERE dm_conversations.updated_at IS NULL
            OR (excluded.updated_at, excluded.deleted_at IS NOT NULL, excluded.content_hash)
             > (dm_conversations.updated_at, dm_conversations.deleted_at IS NOT NULL,
                dm_conversations.content_hash)
         RETURNING conversation_id",
    )
    .bind(json(&rows))
    .bind(at.to_string())
    .fetch_all(c)
    .await?;
    Ok(returned
        .into_iter()
        .map(|(conversation_id,)| EntityKey::Conversation { conversation_id })
        .collect())
}

pub(super) async fn upsert_follow_edges(
    c: &mut SqliteConnection,
    rows: &[FollowEdgeRow<'_>],
    at: Timestamp,
) -> Result<HashSet<EntityKey>, StoreError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let returned: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO follow_edges (user_id, target_id, edge_type, created_at, updated_at,
             deleted_at, content_hash, sync_source, event_id, retry_count, mirrored_at)
         SELECT value ->> 'user_id', value ->> 'target_id', value ->> 'edge_type',
                value ->> 'created_at', value ->> 'updated_at', value ->> 'deleted_at',
                value ->> 'content_hash', value ->> 'sync_source', value ->> 'event_id',
                value ->> 'retry_count', ?2
         FROM json_each(?1)
         WHERE true
         ON CONFLICT (user_id, target_id) DO UPDATE SET
             edge_type = excluded.edge_type, created_at = excluded.created_at,
             updated_at = excluded.updated_at, deleted_at = excluded.deleted_at,
             content_hash = excluded.content_hash, sync_source = excluded.sync_source,
             event_id = excluded.event_id, retry_count = excluded.retry_count,
             mirrored_at = excluded.mirrored_at
         WHERE (excluded.updated_at, excluded.deleted_at IS NOT NULL, excluded.content_hash)
             > (follow_edges.updated_at, follow_edges.deleted_at IS NOT NULL, follow_edges.content_hash)
         RETURNING user_id, target_id",
    )
    .bind(json(&rows))
    .bind(at.to_string())
    .fetch_all(c)
    .await?;
    Ok(returned
        .into_iter()
        .map(|(user_id, target_id)| EntityKey::FollowEdge { user_id, target_id })
        .collect())
}

/// As PostgreSQL's [`recipients_computed`](super::postgres): every live message of the
/// conversations `?1` (a JSON array), the recipient the rule gives it and the one stored.
macro_rules! recipients_computed {
    () => {
        "(SELECT x.conversation_id, x.message_id, x.recipient_id AS stored,
                 CASE x.author_id WHEN c.dm_pair_low THEN c.dm_pair_high
                                  WHEN c.dm_pair_high THEN c.dm_pair_low END AS recipient_id
          FROM dm_messages x JOIN dm_conversations c ON c.conversation_id = x.conversation_id
          WHERE x.deleted_at IS NULL
            AND x.conversation_id IN (SELECT value FROM json_each(?1))) AS r"
    };
}

/// As PostgreSQL's: only what differs is written; returns how many messages changed.
pub(super) async fn refresh_recipients(
    c: &mut SqliteConnection,
    ids: &[String],
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let changed = sqlx::query(concat!(
        "UPDATE dm_messages SET recipient_id = r.recipient_id FROM ",
        recipients_computed!(),
        " WHERE dm_messages.conversation_id = r.conversation_id
            AND dm_messages.message_id = r.message_id
            AND dm_messages.recipient_id IS NOT r.recipient_id"
    ))
    .bind(json(&ids))
    .execute(c)
    .await?
    .rows_affected();
    Ok(changed)
}

/// As PostgreSQL's [`last_message_computed`](super::postgres), over the conversations `?1`
/// (a JSON array).
macro_rules! last_message_computed {
    () => {
        "WITH newest AS (
             SELECT t.value AS id,
                    EXISTS (SELECT 1 FROM dm_messages x WHERE x.conversation_id = t.value) AS mirrored,
                    (SELECT json_array(m.message_id, m.created_at, m.body, m.author_id)
                     FROM dm_messages m
                     WHERE m.conversation_id = t.value AND m.deleted_at IS NULL
                     ORDER BY m.created_at DESC, m.message_id DESC LIMIT 1) AS m
             FROM json_each(?1) AS t
         ),
         computed AS (
             SELECT c.conversation_id AS id,
                    CASE WHEN c.deleted_at IS NOT NULL THEN NULL
                         WHEN n.mirrored THEN n.m ->> 0 ELSE c.doc_last_message_id END AS id_,
                    CASE WHEN c.deleted_at IS NOT NULL THEN NULL
                         WHEN n.mirrored THEN n.m ->> 1 ELSE c.doc_last_message_at END AS at_,
                    CASE WHEN c.deleted_at IS NOT NULL THEN NULL
                         WHEN n.mirrored THEN substr(n.m ->> 2, 1, 140)
                         ELSE c.doc_last_message_preview END AS preview_,
                    CASE WHEN c.deleted_at IS NOT NULL THEN NULL
                         WHEN n.mirrored THEN n.m ->> 3
                         ELSE c.doc_last_message_author_id END AS author_
             FROM dm_conversations c JOIN newest n ON n.id = c.conversation_id
         ) "
    };
}

/// As PostgreSQL's: only rows whose values differ are written; returns how many.
pub(super) async fn refresh_conversations(
    c: &mut SqliteConnection,
    ids: &[String],
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let changed = sqlx::query(concat!(
        last_message_computed!(),
        "UPDATE dm_conversations SET
             last_message_id = v.id_, last_message_at = v.at_,
             last_message_preview = v.preview_, last_message_author_id = v.author_
         FROM computed v
         WHERE dm_conversations.conversation_id = v.id
           AND (last_message_id, last_message_at, last_message_preview, last_message_author_id)
               IS NOT (v.id_, v.at_, v.preview_, v.author_)"
    ))
    .bind(json(&ids))
    .execute(c)
    .await?
    .rows_affected();
    Ok(changed)
}

/// As PostgreSQL's.
pub(super) async fn self_check(
    pool: &SqlitePool,
    ids: &[String],
    stub_before: Timestamp,
) -> Result<Vec<(Inconsistency, String, String)>, StoreError> {
    let queries: [(Inconsistency, &str); 5] = [
        (
            Inconsistency::LastMessageWrong,
            concat!(
                last_message_computed!(),
                "SELECT c.conversation_id, '' FROM dm_conversations c JOIN computed v
                   ON c.conversation_id = v.id
                 WHERE (c.last_message_id, c.last_message_at, c.last_message_preview,
                        c.last_message_author_id)
                       IS NOT (v.id_, v.at_, v.preview_, v.author_)
                 ORDER BY 1"
            ),
        ),
        (
            Inconsistency::RecipientWrong,
            concat!(
                "SELECT r.conversation_id, r.message_id FROM ",
                recipients_computed!(),
                " WHERE r.stored IS NOT r.recipient_id ORDER BY 1, 2"
            ),
        ),
        (
            Inconsistency::OldStub,
            "SELECT conversation_id, '' FROM dm_conversations
             WHERE conversation_id IN (SELECT value FROM json_each(?1))
               AND sync_source = 'derived' AND mirrored_at < ?2
             ORDER BY 1",
        ),
        (
            Inconsistency::DanglingLastMessage,
            "SELECT c.conversation_id, c.last_message_id FROM dm_conversations c
             WHERE c.conversation_id IN (SELECT value FROM json_each(?1))
               AND c.last_message_id IS NOT NULL
               AND EXISTS (SELECT 1 FROM dm_messages x WHERE x.conversation_id = c.conversation_id)
               AND NOT EXISTS (SELECT 1 FROM dm_messages m
                               WHERE m.conversation_id = c.conversation_id
                                 AND m.message_id = c.last_message_id AND m.deleted_at IS NULL)
             ORDER BY 1",
        ),
        (
            Inconsistency::LiveMessageOfDeletedConversation,
            "SELECT m.conversation_id, m.message_id FROM dm_messages m
             JOIN dm_conversations c ON c.conversation_id = m.conversation_id
             WHERE c.conversation_id IN (SELECT value FROM json_each(?1))
               AND c.deleted_at IS NOT NULL AND m.deleted_at IS NULL
             ORDER BY 1, 2",
        ),
    ];
    let ids = json(&ids);
    let mut found = Vec::new();
    for (kind, sql) in queries {
        let mut query = sqlx::query_as::<_, (String, String)>(sql).bind(&ids);
        if kind == Inconsistency::OldStub {
            query = query.bind(stub_before.to_string());
        }
        for (a, b) in query.fetch_all(pool).await? {
            found.push((kind, a, b));
        }
    }
    Ok(found)
}

/// As PostgreSQL's.
pub(super) async fn self_follows_after(
    pool: &SqlitePool,
    after: &(String, String),
    limit: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT user_id, target_id FROM follow_edges
         WHERE user_id = target_id AND deleted_at IS NULL AND (user_id, target_id) > (?1, ?2)
         ORDER BY user_id, target_id LIMIT ?3",
    )
    .bind(&after.0)
    .bind(&after.1)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// SQLite has one writer at a time: nothing to lock. Returns how many of `ids` exist.
pub(super) async fn lock_existing_conversations(
    c: &mut SqliteConnection,
    ids: &[String],
) -> Result<u64, StoreError> {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM dm_conversations
         WHERE conversation_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json(&ids))
    .fetch_one(c)
    .await?;
    Ok(count.max(0) as u64)
}

/// Up to `limit` conversation ids after `after`, in key order.
pub(super) async fn conversation_ids_after(
    pool: &SqlitePool,
    after: &str,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT conversation_id FROM dm_conversations WHERE conversation_id > ?1
         ORDER BY conversation_id LIMIT ?2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn current_ranks(
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

/// A row of `table` as one JSON object, in the text forms both stores share.
fn row_json(table: &Table) -> String {
    let fields: Vec<String> = table
        .columns
        .iter()
        .map(|(name, kind)| {
            let value = match kind {
                Kind::TextList | Kind::Json => format!("json({name})"),
                Kind::Text | Kind::Integer | Kind::Time => name.to_string(),
            };
            format!("'{name}', {value}")
        })
        .collect();
    format!("json_object({})", fields.join(", "))
}

fn parse_rows(rows: Vec<(String,)>) -> Result<Vec<Value>, StoreError> {
    rows.into_iter()
        .map(|(text,)| {
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Other(format!("row is not JSON: {e}")))
        })
        .collect()
}

pub(super) async fn dump(pool: &SqlitePool, table: &Table) -> Result<Vec<Value>, StoreError> {
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        row_json(table),
        table.name,
        table.key.join(", ")
    );
    parse_rows(sqlx::query_as(&sql).fetch_all(pool).await?)
}

/// The key columns of `table` as `(a, b)`, `b` empty for a one-column key.
fn key_pair(table: &Table) -> (String, String) {
    let a = format!("t.{}", table.key[0]);
    let b = table
        .key
        .get(1)
        .map_or("''".to_string(), |k| format!("t.{k}"));
    (a, b)
}

/// As PostgreSQL's.
pub(super) async fn rows_for_keys(
    c: &mut SqliteConnection,
    table: &Table,
    keys: &[(String, String)],
) -> Result<Vec<Value>, StoreError> {
    let (a, b) = key_pair(table);
    let sql = format!(
        "SELECT json_set({}, '$.content_hash', t.content_hash)
         FROM {} t JOIN json_each(?1) AS u ON {a} = u.value ->> 0 AND {b} = u.value ->> 1",
        row_json(table),
        table.name,
    );
    parse_rows(sqlx::query_as(&sql).bind(json(&keys)).fetch_all(c).await?)
}

/// As PostgreSQL's.
pub(super) async fn seen_reset(c: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TEMP TABLE IF NOT EXISTS mirror_check_seen (
             family TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL, PRIMARY KEY (family, a, b));
         DELETE FROM mirror_check_seen",
    )
    .execute(c)
    .await?;
    Ok(())
}

/// As PostgreSQL's.
pub(super) async fn seen_add(
    c: &mut SqliteConnection,
    table: &Table,
    keys: &[(String, String)],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO mirror_check_seen (family, a, b)
         SELECT ?1, value ->> 0, value ->> 1 FROM json_each(?2) WHERE true
         ON CONFLICT DO NOTHING",
    )
    .bind(table.name)
    .bind(json(&keys))
    .execute(c)
    .await?;
    Ok(())
}

/// As PostgreSQL's.
pub(super) async fn live_keys_after(
    c: &mut SqliteConnection,
    table: &Table,
    after: &(String, String),
    limit: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let (a, b) = key_pair(table);
    let after_key = match table.key.len() {
        1 => format!("{a} > ?1 AND ?2 = ?2"),
        _ => format!("({a}, {b}) > (?1, ?2)"),
    };
    let sql = format!(
        "SELECT {a}, {b} FROM {} t
         WHERE {after_key} AND t.deleted_at IS NULL AND t.updated_at IS NOT NULL
         ORDER BY {} LIMIT ?3",
        table.name,
        table.key.join(", ")
    );
    Ok(sqlx::query_as(&sql)
        .bind(&after.0)
        .bind(&after.1)
        .bind(limit)
        .fetch_all(c)
        .await?)
}

/// As PostgreSQL's.
pub(super) async fn seen_among(
    c: &mut SqliteConnection,
    table: &Table,
    keys: &[(String, String)],
) -> Result<HashSet<(String, String)>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.a, s.b FROM mirror_check_seen s
         JOIN json_each(?2) AS u ON s.a = u.value ->> 0 AND s.b = u.value ->> 1
         WHERE s.family = ?1",
    )
    .bind(table.name)
    .bind(json(&keys))
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().collect())
}

/// `mirrorctl bench --mode no-ledger`: the scratch ledger discards every row inserted.
pub(super) const DISCARD_APPLIED_KEYS: &str =
    "CREATE TRIGGER mirror_bench_discard BEFORE INSERT ON mirror_applied_events
     BEGIN SELECT RAISE(IGNORE); END";

/// One statement outside the mirror's rules (`mirrorctl bench`'s scratch file).
pub(super) async fn execute_admin(pool: &SqlitePool, sql: &str) -> Result<(), StoreError> {
    sqlx::raw_sql(sql).execute(pool).await?;
    Ok(())
}

/// Deletes up to `limit` applied keys older than `before`, oldest first; returns how many.
pub(super) async fn prune_applied_keys(
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

/// The authors of these messages as stored; see the PostgreSQL dialect.
pub(super) async fn message_authors(
    c: &mut SqliteConnection,
    keys: &[(&str, &str)],
) -> Result<HashMap<(String, String), String>, StoreError> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT m.conversation_id, m.message_id, m.author_id
         FROM json_each(?1) AS u
         JOIN dm_messages m ON m.conversation_id = u.value ->> 0 AND m.message_id = u.value ->> 1
         WHERE m.author_id IS NOT NULL",
    )
    .bind(json(&keys))
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().map(|(c, m, a)| ((c, m), a)).collect())
}

/// One outbox row per change and per user to notify; see the PostgreSQL dialect.
pub(super) async fn enqueue_announcements(
    c: &mut SqliteConnection,
    changes: &[Change<'_>],
    at: Timestamp,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH m AS (
             SELECT key AS n, value ->> 'kind' AS kind, value ->> 'conversation_id' AS conversation_id,
                    value ->> 'message_id' AS message_id, value ->> 'sender_id' AS sender_id,
                    value ->> 'version' AS version
             FROM json_each(?1)
         ),
         u AS (
             SELECT m.n, p.value AS user_id
             FROM m JOIN dm_conversations c ON c.conversation_id = m.conversation_id,
                  json_each(c.participant_ids) AS p
             UNION
             SELECT m.n, m.sender_id FROM m WHERE m.sender_id <> ''
         )
         INSERT INTO mirror_stream_outbox (user_id, kind, conversation_id, message_id, sender_id,
             version, enqueued_at)
         SELECT u.user_id, m.kind, m.conversation_id, m.message_id, m.sender_id, m.version, ?2
         FROM m JOIN u ON u.n = m.n
         ORDER BY m.n, u.user_id",
    )
    .bind(json(&changes))
    .bind(at.to_string())
    .execute(c)
    .await?;
    Ok(())
}

type AnnouncementRow = (i64, String, String, String, String, String, String, String);

pub(super) async fn lease_outbox(
    c: &mut SqliteConnection,
    limit: i64,
) -> Result<Vec<Announcement>, StoreError> {
    let rows: Vec<AnnouncementRow> = sqlx::query_as(
        "SELECT id, user_id, kind, conversation_id, message_id, sender_id, version, enqueued_at
         FROM mirror_stream_outbox ORDER BY id LIMIT ?1",
    )
    .bind(limit)
    .fetch_all(c)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, user_id, kind, conversation_id, message_id, sender_id, version, at)| {
                Announcement {
                    id,
                    user_id,
                    kind,
                    conversation_id,
                    message_id,
                    sender_id,
                    version,
                    enqueued_at: Timestamp::parse_rfc3339(&at).unwrap_or_else(|_| Timestamp::now()),
                }
            },
        )
        .collect())
}

pub(super) async fn delete_outbox(c: &mut SqliteConnection, ids: &[i64]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mirror_stream_outbox WHERE id IN (SELECT value FROM json_each(?1))")
        .bind(json(&ids))
        .execute(c)
        .await?;
    Ok(())
}

pub(super) async fn outbox_backlog(pool: &SqlitePool) -> Result<Backlog, StoreError> {
    let (rows, oldest): (i64, Option<String>) =
        sqlx::query_as("SELECT count(*), min(enqueued_at) FROM mirror_stream_outbox")
            .fetch_one(pool)
            .await?;
    Ok(Backlog {
        rows: rows as u64,
        oldest: oldest.and_then(|t| Timestamp::parse_rfc3339(&t).ok()),
    })
}

/// Which of these conversations have their participants; see the PostgreSQL dialect.
pub(super) async fn conversations_with_participants(
    c: &mut SqliteConnection,
    ids: &[String],
) -> Result<HashSet<String>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT conversation_id FROM dm_conversations
         WHERE conversation_id IN (SELECT value FROM json_each(?1))
           AND json_array_length(participant_ids) > 0",
    )
    .bind(json(&ids))
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// The live messages of conversations whose participants just became known, to every
/// participant but the author; see the PostgreSQL dialect.
pub(super) async fn announce_earlier_messages(
    c: &mut SqliteConnection,
    ids: &[String],
    at: Timestamp,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO mirror_stream_outbox (user_id, kind, conversation_id, message_id, sender_id,
             version, enqueued_at)
         SELECT p.value, 'message.created', m.conversation_id, m.message_id, m.author_id,
                m.updated_at, ?2
         FROM dm_messages m
         JOIN dm_conversations c ON c.conversation_id = m.conversation_id,
              json_each(c.participant_ids) AS p
         WHERE m.conversation_id IN (SELECT value FROM json_each(?1))
           AND m.deleted_at IS NULL AND p.value <> m.author_id
         ORDER BY m.conversation_id, m.updated_at, m.message_id, p.value",
    )
    .bind(json(&ids))
    .bind(at.to_string())
    .execute(c)
    .await?;
    Ok(())
}
