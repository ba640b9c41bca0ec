//! The derived columns (`last_message_*`, `recipient_id`): recomputed for what a chunk or a
//! repair touched, from one definition each that the self-check shares.

use sqlx::PgPool;

use crate::store::newest::LastMessage;
use crate::store::StoreError;

use super::{column, PgTx};

/// Runs one derived-column refresh over the conversations `ids`; returns how many rows it
/// changed. Planned at every execution (unnamed): a cached generic plan made while the tables
/// were small would keep scanning them once they have grown.
async fn refresh(tx: &mut PgTx<'_>, ids: &[String], sql: &str) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = tx
        .unnamed_query(sql)
        .bind(ids)
        .execute(&mut *tx.connection)
        .await?;
    Ok(done.rows_affected())
}

/// Every live message of the conversations `$1` with the `recipient_id` the rule gives it
/// (`recipient_id`) and the one stored (`stored`): the one statement of the rule, used to
/// repair and to check. Each side of the join has its own `= ANY($1)`: PostgreSQL does not
/// carry the condition across the join, and without statistics it then scanned the whole
/// other table for every page.
macro_rules! recipients_computed {
    () => {
        "(SELECT x.conversation_id, x.message_id, x.recipient_id AS stored,
                 CASE x.author_id WHEN c.dm_pair_low THEN c.dm_pair_high
                                  WHEN c.dm_pair_high THEN c.dm_pair_low END AS recipient_id
          FROM dm_messages x JOIN dm_conversations c ON c.conversation_id = x.conversation_id
          WHERE x.conversation_id = ANY($1) AND c.conversation_id = ANY($1)
            AND x.deleted_at IS NULL) r"
    };
}

/// `recipient_id` of every live message of these conversations, after their participants
/// may have changed; returns how many messages changed.
pub(in crate::store) async fn refresh_recipients(
    tx: &mut PgTx<'_>,
    ids: &[String],
) -> Result<u64, StoreError> {
    refresh(
        tx,
        ids,
        concat!(
            "UPDATE dm_messages m SET recipient_id = r.recipient_id FROM ",
            recipients_computed!(),
            " WHERE m.conversation_id = r.conversation_id AND m.message_id = r.message_id
                AND m.recipient_id IS DISTINCT FROM r.recipient_id"
        ),
    )
    .await
}

/// `last_message_*` of the conversations `$1` as the rule computes them, in `computed`
/// (`id`, `id_`, `at_`, `preview_`, `author_`): the newest live message by (created_at,
/// message_id); the document's own lastMessage* fields only while no message of the
/// conversation is mirrored; NULL on a tombstone. The one statement of the rule, used to
/// repair and to check.
macro_rules! last_message_computed {
    () => {
        "WITH target AS (SELECT DISTINCT id FROM UNNEST($1::text[]) AS u(id)),
         newest AS (
             SELECT t.id,
                    EXISTS (SELECT 1 FROM dm_messages x WHERE x.conversation_id = t.id) AS mirrored,
                    n.message_id, n.created_at, n.body, n.author_id
             FROM target t
             LEFT JOIN LATERAL (
                 SELECT m.message_id, m.created_at, m.body, m.author_id
                 FROM dm_messages m
                 WHERE m.conversation_id = t.id AND m.deleted_at IS NULL
                 ORDER BY m.created_at DESC, m.message_id DESC
                 LIMIT 1
             ) n ON true
         ),
         computed AS (
             SELECT c.conversation_id AS id,
                    CASE WHEN c.deleted_at IS NOT NULL THEN NULL
                         WHEN n.mirrored THEN n.message_id ELSE c.doc_last_message_id END AS id_,
                    CASE WHEN c.deleted_at IS NOT NULL THEN NULL
                         WHEN n.mirrored THEN n.created_at ELSE c.doc_last_message_at END AS at_,
                    CASE WHEN c.deleted_at IS NOT NULL THEN NULL
                         WHEN n.mirrored THEN left(n.body, 140)
                         ELSE c.doc_last_message_preview END AS preview_,
                    CASE WHEN c.deleted_at IS NOT NULL THEN NULL
                         WHEN n.mirrored THEN n.author_id
                         ELSE c.doc_last_message_author_id END AS author_
             FROM dm_conversations c JOIN newest n ON n.id = c.conversation_id
             WHERE c.conversation_id = ANY($1)
         ) "
    };
}

/// Only rows whose `last_message_*` differ from [`last_message_computed`] are written;
/// returns how many.
pub(in crate::store) async fn refresh_conversations(
    tx: &mut PgTx<'_>,
    ids: &[String],
) -> Result<u64, StoreError> {
    refresh(
        tx,
        ids,
        concat!(
            last_message_computed!(),
            "UPDATE dm_conversations c SET
                 last_message_id = v.id_, last_message_at = v.at_,
                 last_message_preview = v.preview_, last_message_author_id = v.author_
             FROM computed v
             WHERE c.conversation_id = v.id
               AND (c.last_message_id, c.last_message_at, c.last_message_preview,
                    c.last_message_author_id)
                   IS DISTINCT FROM (v.id_, v.at_, v.preview_, v.author_)"
        ),
    )
    .await
}

/// Writes the `last_message_*` a chunk's messages gave (see `store::newest`) where they
/// differ; returns how many rows changed. The rows are locked already.
pub(in crate::store) async fn write_last_messages(
    tx: &mut PgTx<'_>,
    rows: &[LastMessage<'_>],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let done = tx
        .query(
            "UPDATE dm_conversations c SET
                 last_message_id = u.id, last_message_at = u.at,
                 last_message_preview = u.preview, last_message_author_id = u.author
             FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[])
                  AS u(conversation_id, id, at, preview, author)
             WHERE c.conversation_id = u.conversation_id
               AND (c.last_message_id, c.last_message_at, c.last_message_preview,
                    c.last_message_author_id)
                   IS DISTINCT FROM (u.id, u.at, u.preview, u.author)",
        )
        .bind(column(rows, |r| r.conversation_id))
        .bind(column(rows, |r| r.message_id))
        .bind(column(rows, |r| r.at.map(|at| at.as_datetime())))
        .bind(column(rows, |r| r.preview.as_deref()))
        .bind(column(rows, |r| r.author_id))
        .execute(&mut *tx.connection)
        .await?;
    Ok(done.rows_affected())
}

/// Locks the existing conversation rows `ids` (sorted, distinct) in key order, as every
/// writer does, creating nothing; returns how many exist.
pub(in crate::store) async fn lock_existing_conversations(
    tx: &mut PgTx<'_>,
    ids: &[String],
) -> Result<u64, StoreError> {
    let (locked,): (i64,) = tx
        .query_as(
            "SELECT count(*) FROM (SELECT 1 FROM dm_conversations WHERE conversation_id = ANY($1)
                              ORDER BY conversation_id FOR NO KEY UPDATE) AS locked",
        )
        .bind(ids)
        .fetch_one(&mut *tx.connection)
        .await?;
    Ok(locked.max(0) as u64)
}

/// Fresh planner statistics for the mirror tables (a sample of each, bounded whatever the
/// size). A server without autovacuum, or one that has not yet caught up with a bulk load,
/// plans the check's per-page joins as if the tables were empty: on a million rows that
/// was a sequential scan a page, 17 times slower than with statistics.
pub(in crate::store) async fn analyze(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("ANALYZE dm_conversations, dm_messages, follow_edges")
        .execute(pool)
        .await?;
    Ok(())
}

/// Up to `limit` conversation ids after `after`, in key order.
pub(in crate::store) async fn conversation_ids_after(
    pool: &PgPool,
    after: &str,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT conversation_id FROM dm_conversations WHERE conversation_id > $1
         ORDER BY conversation_id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
