//! The derived columns (`last_message_*`, `recipient_id`): recomputed for what a chunk or a
//! repair touched, from one definition each that the self-check shares.

use sqlx::{SqliteConnection, SqlitePool};

use crate::store::newest::LastMessage;
use crate::store::StoreError;

use super::json;

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
pub(in crate::store) async fn refresh_recipients(
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
pub(in crate::store) async fn refresh_conversations(
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

/// As PostgreSQL's: writes the `last_message_*` a chunk's messages gave where they differ.
pub(in crate::store) async fn write_last_messages(
    c: &mut SqliteConnection,
    rows: &[LastMessage<'_>],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let values: Vec<_> = (rows.iter())
        .map(|r| {
            (
                r.conversation_id,
                r.message_id,
                r.at.map(|at| at.to_string()),
                &r.preview,
                r.author_id,
            )
        })
        .collect();
    let changed = sqlx::query(
        "UPDATE dm_conversations SET
             last_message_id = u.id, last_message_at = u.at,
             last_message_preview = u.preview, last_message_author_id = u.author
         FROM (SELECT value ->> 0 AS conversation_id, value ->> 1 AS id, value ->> 2 AS at,
                      value ->> 3 AS preview, value ->> 4 AS author
               FROM json_each(?1)) AS u
         WHERE dm_conversations.conversation_id = u.conversation_id
           AND (last_message_id, last_message_at, last_message_preview, last_message_author_id)
               IS NOT (u.id, u.at, u.preview, u.author)",
    )
    .bind(json(&values))
    .execute(c)
    .await?
    .rows_affected();
    Ok(changed)
}

/// SQLite has one writer at a time: nothing to lock. Returns how many of `ids` exist.
pub(in crate::store) async fn lock_existing_conversations(
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
pub(in crate::store) async fn conversation_ids_after(
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
