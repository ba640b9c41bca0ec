//! The PostgreSQL dialect: every statement is set-based, one array per column through
//! `UNNEST`, so a chunk costs the same few round trips whatever its size.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::{Query, QueryAs};
use sqlx::{FromRow, PgConnection, PgPool, Postgres};

use super::outbox::{Announcement, Backlog, Change};
use super::rows::{entity_key, key_parts, ConversationRow, FollowEdgeRow, MessageRow};
use super::snapshot::{Kind, Table};
use super::StoreError;
use crate::check::Inconsistency;
use crate::event::{EntityKey, Event, Family, Rank};
use crate::timestamp::Timestamp;

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

pub(super) async fn applied_keys(
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

pub(super) async fn record_applied(
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

/// Locks the conversation rows `ids` (sorted, distinct), creating the missing ones as stubs,
/// before anything of them is read: every writer of a conversation's messages or derived
/// columns holds this lock, so each statement after it sees every committed message.
pub(super) async fn lock_conversations(
    tx: &mut PgTx<'_>,
    ids: &[String],
    at: Timestamp,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    // One pass in key order that inserts the missing rows and locks the existing ones: ON
    // CONFLICT DO UPDATE locks the conflicting row even when its WHERE is false (and waits
    // for a concurrent insert of it to commit), so nothing is written to existing rows. A
    // separate INSERT ... DO NOTHING then SELECT ... FOR UPDATE would hold new stubs while
    // waiting for older rows (out of order: deadlocks), and one statement holding both
    // cannot lock a row another transaction committed after the statement began (its
    // snapshot cannot see it): the chunk would then read messages without the lock.
    tx.query(
        "INSERT INTO dm_conversations AS t (conversation_id, sync_source, mirrored_at)
         SELECT u.id, 'derived', $1 FROM UNNEST($2::text[]) WITH ORDINALITY AS u(id, n)
         ORDER BY u.n
         ON CONFLICT (conversation_id) DO UPDATE SET sync_source = t.sync_source WHERE false",
    )
    .bind(at.as_datetime())
    .bind(ids)
    .execute(&mut *tx.connection)
    .await?;
    // Checked, not trusted: a new statement (a new snapshot) sees every row, and re-locking
    // rows this transaction holds does not wait.
    let (locked,): (i64,) = tx
        .query_as(
            "SELECT count(*) FROM (SELECT 1 FROM dm_conversations WHERE conversation_id = ANY($1)
                              FOR NO KEY UPDATE) AS locked",
        )
        .bind(ids)
        .fetch_one(&mut *tx.connection)
        .await?;
    super::transaction::check_locked(locked, ids.len())
}

/// `recipient_id` is derived in the same statement from the (locked) conversation row.
pub(super) async fn upsert_messages(
    tx: &mut PgTx<'_>,
    rows: &[MessageRow<'_>],
    at: Timestamp,
) -> Result<HashSet<EntityKey>, StoreError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let returned: Vec<(String, String)> = tx.query_as(
        "INSERT INTO dm_messages AS t (conversation_id, message_id, author_id, recipient_id, body,
             media, created_at, updated_at, deleted_at, content_hash, sync_source, event_id,
             retry_count, mirrored_at)
         SELECT u.conversation_id, u.message_id, u.author_id,
                CASE WHEN u.deleted_at IS NULL THEN
                    CASE u.author_id WHEN c.dm_pair_low THEN c.dm_pair_high
                                     WHEN c.dm_pair_high THEN c.dm_pair_low END
                END,
                u.body, u.media::jsonb, u.created_at, u.updated_at, u.deleted_at, u.content_hash,
                u.sync_source, u.event_id, u.retry_count, $1
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::text[],
                     $11::text[], $12::text[], $13::int4[]) WITH ORDINALITY
              AS u(conversation_id, message_id, author_id, body, media, created_at, updated_at,
                   deleted_at, content_hash, sync_source, event_id, retry_count, n)
         LEFT JOIN dm_conversations c ON c.conversation_id = u.conversation_id
         ORDER BY u.n
         ON CONFLICT (conversation_id, message_id) DO UPDATE SET
             author_id = EXCLUDED.author_id, recipient_id = EXCLUDED.recipient_id,
             body = EXCLUDED.body, media = EXCLUDED.media, created_at = EXCLUDED.created_at,
             updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at,
             content_hash = EXCLUDED.content_hash, sync_source = EXCLUDED.sync_source,
             event_id = EXCLUDED.event_id, retry_count = EXCLUDED.retry_count,
             mirrored_at = EXCLUDED.mirrored_at
         WHERE (EXCLUDED.updated_at, EXCLUDED.deleted_at IS NOT NULL, EXCLUDED.content_hash)
             > (t.updated_at, t.deleted_at IS NOT NULL, t.content_hash)
         RETURNING t.conversation_id, t.message_id",
    )
    .bind(at.as_datetime())
    .bind(column(rows, |r| r.conversation_id))
    .bind(column(rows, |r| r.message_id))
    .bind(column(rows, |r| r.author_id))
    .bind(column(rows, |r| r.body))
    .bind(column(rows, |r| r.media))
    .bind(column(rows, |r| datetime(r.created_at)))
    .bind(column(rows, |r| datetime(r.common.updated_at)))
    .bind(column(rows, |r| datetime(r.common.deleted_at)))
    .bind(column(rows, |r| r.common.content_hash))
    .bind(column(rows, |r| r.common.sync_source))
    .bind(column(rows, |r| r.common.event_id))
    .bind(column(rows, |r| r.common.retry_count))
    .fetch_all(&mut *tx.connection)
    .await?;
    Ok(returned
        .into_iter()
        .map(|(conversation_id, message_id)| EntityKey::Message {
            conversation_id,
            message_id,
        })
        .collect())
}

/// A stub (no version yet) is overwritten by any event; otherwise only a greater rank wins.
pub(super) async fn upsert_conversations(
    tx: &mut PgTx<'_>,
    rows: &[ConversationRow<'_>],
    at: Timestamp,
) -> Result<HashSet<EntityKey>, StoreError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let returned: Vec<(String,)> = tx
        .query_as(
            "INSERT INTO dm_conversations AS t (conversation_id, owner_id, participant_ids,
             doc_last_message_id, doc_last_message_at, doc_last_message_preview,
             doc_last_message_author_id, dm_pair_low, dm_pair_high, created_at, updated_at,
             deleted_at, content_hash, sync_source, last_synced_event_id, retry_count, mirrored_at)
         SELECT u.conversation_id, u.owner_id,
                CASE WHEN u.participant_ids IS NOT NULL THEN
                    ARRAY(SELECT p.id FROM jsonb_array_elements_text(u.participant_ids::jsonb)
                          WITH ORDINALITY AS p(id, n) ORDER BY p.n)
                END,
                u.doc_last_message_id, u.doc_last_message_at, u.doc_last_message_preview,
                u.doc_last_message_author_id, u.dm_pair_low, u.dm_pair_high, u.created_at,
                u.updated_at, u.deleted_at, u.content_hash, u.sync_source, u.event_id,
                u.retry_count, $1
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[],
                     $12::timestamptz[], $13::timestamptz[], $14::text[], $15::text[],
                     $16::text[], $17::int4[]) WITH ORDINALITY
              AS u(conversation_id, owner_id, participant_ids, doc_last_message_id,
                   doc_last_message_at, doc_last_message_preview, doc_last_message_author_id,
                   dm_pair_low, dm_pair_high, created_at, updated_at, deleted_at, content_hash,
                   sync_source, event_id, retry_count, n)
         ORDER BY u.n
         ON CONFLICT (conversation_id) DO UPDATE SET
             owner_id = EXCLUDED.owner_id, participant_ids = EXCLUDED.participant_ids,
             doc_last_message_id = EXCLUDED.doc_last_message_id,
             doc_last_message_at = EXCLUDED.doc_last_message_at,
             doc_last_message_preview = EXCLUDED.doc_last_message_preview,
             doc_last_message_author_id = EXCLUDED.doc_last_message_author_id,
             dm_pair_low = EXCLUDED.dm_pair_low, dm_pair_high = EXCLUDED.dm_pair_high,
             created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
             deleted_at = EXCLUDED.deleted_at, content_hash = EXCLUDED.content_hash,
             sync_source = EXCLUDED.sync_source,
             last_synced_event_id = EXCLUDED.last_synced_event_id,
             retry_count = EXCLUDED.retry_count, mirrored_at = EXCLUDED.mirrored_at
         WHERE t.updated_at IS NULL
            OR (EXCLUDED.updated_at, EXCLUDED.deleted_at IS NOT NULL, EXCLUDED.content_hash)
             > (t.updated_at, t.deleted_at IS NOT NULL, t.content_hash)
         RETURNING t.conversation_id",
        )
        .bind(at.as_datetime())
        .bind(column(rows, |r| r.conversation_id))
        .bind(column(rows, |r| r.owner_id))
        .bind(column(rows, |r| r.participant_ids.as_deref()))
        .bind(column(rows, |r| r.doc_last_message_id))
        .bind(column(rows, |r| datetime(r.doc_last_message_at)))
        .bind(column(rows, |r| r.doc_last_message_preview))
        .bind(column(rows, |r| r.doc_last_message_author_id))
        .bind(column(rows, |r| r.dm_pair_low.as_deref()))
        .bind(column(rows, |r| r.dm_pair_high.as_deref()))
        .bind(column(rows, |r| datetime(r.created_at)))
        .bind(column(rows, |r| datetime(r.common.updated_at)))
        .bind(column(rows, |r| datetime(r.common.deleted_at)))
        .bind(column(rows, |r| r.common.content_hash))
        .bind(column(rows, |r| r.common.sync_source))
        .bind(column(rows, |r| r.common.event_id))
        .bind(column(rows, |r| r.common.retry_count))
        .fetch_all(&mut *tx.connection)
        .await?;
    Ok(returned
        .into_iter()
        .map(|(conversation_id,)| EntityKey::Conversation { conversation_id })
        .collect())
}

pub(super) async fn upsert_follow_edges(
    tx: &mut PgTx<'_>,
    rows: &[FollowEdgeRow<'_>],
    at: Timestamp,
) -> Result<HashSet<EntityKey>, StoreError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let returned: Vec<(String, String)> = tx
        .query_as(
            "INSERT INTO follow_edges AS t (user_id, target_id, edge_type, created_at, updated_at,
             deleted_at, content_hash, sync_source, event_id, retry_count, mirrored_at)
         SELECT u.user_id, u.target_id, u.edge_type, u.created_at, u.updated_at, u.deleted_at,
                u.content_hash, u.sync_source, u.event_id, u.retry_count, $1
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], $10::text[],
                     $11::int4[]) WITH ORDINALITY
              AS u(user_id, target_id, edge_type, created_at, updated_at, deleted_at,
                   content_hash, sync_source, event_id, retry_count, n)
         ORDER BY u.n
         ON CONFLICT (user_id, target_id) DO UPDATE SET
             edge_type = EXCLUDED.edge_type, created_at = EXCLUDED.created_at,
             updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at,
             content_hash = EXCLUDED.content_hash, sync_source = EXCLUDED.sync_source,
             event_id = EXCLUDED.event_id, retry_count = EXCLUDED.retry_count,
             mirrored_at = EXCLUDED.mirrored_at
         WHERE (EXCLUDED.updated_at, EXCLUDED.deleted_at IS NOT NULL, EXCLUDED.content_hash)
             > (t.updated_at, t.deleted_at IS NOT NULL, t.content_hash)
         RETURNING t.user_id, t.target_id",
        )
        .bind(at.as_datetime())
        .bind(column(rows, |r| r.user_id))
        .bind(column(rows, |r| r.target_id))
        .bind(column(rows, |r| r.edge_type))
        .bind(column(rows, |r| datetime(r.created_at)))
        .bind(column(rows, |r| datetime(r.common.updated_at)))
        .bind(column(rows, |r| datetime(r.common.deleted_at)))
        .bind(column(rows, |r| r.common.content_hash))
        .bind(column(rows, |r| r.common.sync_source))
        .bind(column(rows, |r| r.common.event_id))
        .bind(column(rows, |r| r.common.retry_count))
        .fetch_all(&mut *tx.connection)
        .await?;
    Ok(returned
        .into_iter()
        .map(|(user_id, target_id)| EntityKey::FollowEdge { user_id, target_id })
        .collect())
}

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
pub(super) async fn refresh_recipients(
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
pub(super) async fn refresh_conversations(
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

/// What the self-check finds among the conversations `ids` (and their messages), as
/// (kind, conversation id, message id or ""), in key order within each kind.
pub(super) async fn self_check(
    pool: &PgPool,
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
                       IS DISTINCT FROM (v.id_, v.at_, v.preview_, v.author_)
                 ORDER BY 1"
            ),
        ),
        (
            Inconsistency::RecipientWrong,
            concat!(
                "SELECT r.conversation_id, r.message_id FROM ",
                recipients_computed!(),
                " WHERE r.stored IS DISTINCT FROM r.recipient_id ORDER BY 1, 2"
            ),
        ),
        (
            Inconsistency::OldStub,
            "SELECT conversation_id, '' FROM dm_conversations
             WHERE conversation_id = ANY($1) AND sync_source = 'derived' AND mirrored_at < $2
             ORDER BY 1",
        ),
        (
            Inconsistency::DanglingLastMessage,
            "SELECT c.conversation_id, c.last_message_id FROM dm_conversations c
             WHERE c.conversation_id = ANY($1) AND c.last_message_id IS NOT NULL
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
             WHERE c.conversation_id = ANY($1) AND m.conversation_id = ANY($1)
               AND c.deleted_at IS NOT NULL AND m.deleted_at IS NULL
             ORDER BY 1, 2",
        ),
    ];
    let mut found = Vec::new();
    for (kind, sql) in queries {
        let mut query = sqlx::query_as::<_, (String, String)>(sql)
            .persistent(false)
            .bind(ids);
        if kind == Inconsistency::OldStub {
            query = query.bind(stub_before.as_datetime());
        }
        for (a, b) in query.fetch_all(pool).await? {
            found.push((kind, a, b));
        }
    }
    Ok(found)
}

/// Up to `limit` live follow edges from a user to the same user, after `after` in key order.
pub(super) async fn self_follows_after(
    pool: &PgPool,
    after: &(String, String),
    limit: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT user_id, target_id FROM follow_edges
         WHERE user_id = target_id AND deleted_at IS NULL AND (user_id, target_id) > ($1, $2)
         ORDER BY user_id, target_id LIMIT $3",
    )
    .bind(&after.0)
    .bind(&after.1)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Locks the existing conversation rows `ids` (sorted, distinct) in key order, as every
/// writer does, creating nothing; returns how many exist.
pub(super) async fn lock_existing_conversations(
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
pub(super) async fn analyze(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("ANALYZE dm_conversations, dm_messages, follow_edges")
        .execute(pool)
        .await?;
    Ok(())
}

/// Up to `limit` conversation ids after `after`, in key order.
pub(super) async fn conversation_ids_after(
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

pub(super) async fn current_ranks(
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

/// A row of `table` as one JSON object, in the text forms both stores share.
fn row_json(table: &Table) -> String {
    let fields: Vec<String> = table
        .columns
        .iter()
        .map(|(name, kind)| {
            let value = match kind {
                Kind::Time => format!(
                    "to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                ),
                Kind::TextList => format!("to_jsonb({name})"),
                Kind::Text | Kind::Integer | Kind::Json => name.to_string(),
            };
            format!("'{name}', {value}")
        })
        .collect();
    format!("json_build_object({})", fields.join(", "))
}

fn parse_rows(rows: Vec<(String,)>) -> Result<Vec<Value>, StoreError> {
    rows.into_iter()
        .map(|(text,)| {
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Other(format!("row is not JSON: {e}")))
        })
        .collect()
}

pub(super) async fn dump(pool: &PgPool, table: &Table) -> Result<Vec<Value>, StoreError> {
    let sql = format!(
        "SELECT {}::text FROM {} ORDER BY {}",
        row_json(table),
        table.name,
        table.key.join(", ")
    );
    // Run rarely and built at run time: never worth a named statement.
    parse_rows(
        sqlx::query_as(&sql)
            .persistent(false)
            .fetch_all(pool)
            .await?,
    )
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

/// The rows of `table` with these keys (each `(a, b)` as [`key_parts`] makes them), with
/// their `content_hash`.
pub(super) async fn rows_for_keys(
    c: &mut PgConnection,
    table: &Table,
    keys: &[(String, String)],
) -> Result<Vec<Value>, StoreError> {
    let (a, b) = key_pair(table);
    let sql = format!(
        "SELECT ({}::jsonb || jsonb_build_object('content_hash', t.content_hash))::text
         FROM {} t JOIN UNNEST($1::text[], $2::text[]) AS u(a, b) ON {a} = u.a AND {b} = u.b",
        row_json(table),
        table.name,
    );
    let (first, second): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(a, b)| (a.as_str(), b.as_str())).unzip();
    let rows = sqlx::query_as(&sql)
        .persistent(false)
        .bind(first)
        .bind(second)
        .fetch_all(c)
        .await?;
    parse_rows(rows)
}

/// The keys a `check --source` has seen, on its own connection: `TEMP`, so it vanishes with
/// the session and is never seen by another.
pub(super) async fn seen_reset(c: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TEMP TABLE IF NOT EXISTS mirror_check_seen (
             family text NOT NULL, a text COLLATE \"C\" NOT NULL, b text COLLATE \"C\" NOT NULL,
             PRIMARY KEY (family, a, b));
         TRUNCATE mirror_check_seen",
    )
    .execute(c)
    .await?;
    Ok(())
}

pub(super) async fn seen_add(
    c: &mut PgConnection,
    table: &Table,
    keys: &[(String, String)],
) -> Result<(), StoreError> {
    let (first, second): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(a, b)| (a.as_str(), b.as_str())).unzip();
    sqlx::query(
        "INSERT INTO mirror_check_seen (family, a, b)
         SELECT $1, u.a, u.b FROM UNNEST($2::text[], $3::text[]) AS u(a, b)
         ON CONFLICT DO NOTHING",
    )
    .bind(table.name)
    .bind(first)
    .bind(second)
    .execute(c)
    .await?;
    Ok(())
}

/// Up to `limit` keys of live rows of `table` (conversation stubs aside) after `after`, in
/// key order: an index range scan, whatever the table's size.
pub(super) async fn live_keys_after(
    c: &mut PgConnection,
    table: &Table,
    after: &(String, String),
    limit: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let (a, b) = key_pair(table);
    let after_key = match table.key.len() {
        1 => format!("{a} > $1 AND $2 = $2"),
        _ => format!("({a}, {b}) > ($1, $2)"),
    };
    let sql = format!(
        "SELECT {a}, {b} FROM {} t
         WHERE {after_key} AND t.deleted_at IS NULL AND t.updated_at IS NOT NULL
         ORDER BY {} LIMIT $3",
        table.name,
        table.key.join(", ")
    );
    Ok(sqlx::query_as(&sql)
        .persistent(false)
        .bind(&after.0)
        .bind(&after.1)
        .bind(limit)
        .fetch_all(c)
        .await?)
}

/// Which of `keys` of `table` were seen.
pub(super) async fn seen_among(
    c: &mut PgConnection,
    table: &Table,
    keys: &[(String, String)],
) -> Result<HashSet<(String, String)>, StoreError> {
    let (first, second): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(a, b)| (a.as_str(), b.as_str())).unzip();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.a, s.b FROM mirror_check_seen s
         JOIN UNNEST($2::text[], $3::text[]) AS u(a, b) ON s.a = u.a AND s.b = u.b
         WHERE s.family = $1",
    )
    .bind(table.name)
    .bind(first)
    .bind(second)
    .fetch_all(c)
    .await?;
    Ok(rows.into_iter().collect())
}

/// `mirrorctl bench --mode ceiling`: the rows of a batch written by plain upserts, one
/// statement a table plus the idempotency keys, in one transaction — the server's own cost
/// for the same rows, with none of the mirror's rules (no locks, no version guards, no
/// derived columns).
pub(super) async fn write_plain(
    pool: &PgPool,
    rows: &crate::bench::PlainRows,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let [c, m, a, b, cr, up, del, h] = &rows.messages;
    sqlx::query(
        "INSERT INTO dm_messages (conversation_id, message_id, author_id, body, created_at,
                                  updated_at, deleted_at, content_hash, sync_source, mirrored_at)
         SELECT c, m, a, b, cr::timestamptz, up::timestamptz, del::timestamptz, h, 'bench', now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[]) AS r(c, m, a, b, cr, up, del, h)
         ON CONFLICT (conversation_id, message_id) DO UPDATE SET
             author_id = EXCLUDED.author_id, body = EXCLUDED.body,
             created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
             deleted_at = EXCLUDED.deleted_at, content_hash = EXCLUDED.content_hash,
             mirrored_at = EXCLUDED.mirrored_at",
    )
    .bind(c)
    .bind(m)
    .bind(a)
    .bind(b)
    .bind(cr)
    .bind(up)
    .bind(del)
    .bind(h)
    .execute(&mut *tx)
    .await?;
    let [c, owner, p1, p2, cr, up, h] = &rows.conversations;
    sqlx::query(
        "INSERT INTO dm_conversations (conversation_id, owner_id, participant_ids, created_at,
                                       updated_at, dm_pair_low, dm_pair_high, content_hash,
                                       sync_source, mirrored_at)
         SELECT c, o, ARRAY[p1, p2], cr::timestamptz, up::timestamptz, least(p1, p2),
                greatest(p1, p2), h, 'bench', now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[]) AS r(c, o, p1, p2, cr, up, h)
         ON CONFLICT (conversation_id) DO UPDATE SET
             owner_id = EXCLUDED.owner_id, participant_ids = EXCLUDED.participant_ids,
             created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
             dm_pair_low = EXCLUDED.dm_pair_low, dm_pair_high = EXCLUDED.dm_pair_high,
             content_hash = EXCLUDED.content_hash, mirrored_at = EXCLUDED.mirrored_at",
    )
    .bind(c)
    .bind(owner)
    .bind(p1)
    .bind(p2)
    .bind(cr)
    .bind(up)
    .bind(h)
    .execute(&mut *tx)
    .await?;
    let [u, t, e, cr, up, del, h] = &rows.follows;
    sqlx::query(
        "INSERT INTO follow_edges (user_id, target_id, edge_type, created_at, updated_at,
                                   deleted_at, content_hash, sync_source, mirrored_at)
         SELECT u, t, e, cr::timestamptz, up::timestamptz, del::timestamptz, h, 'bench', now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[]) AS r(u, t, e, cr, up, del, h)
         ON CONFLICT (user_id, target_id) DO UPDATE SET
             edge_type = EXCLUDED.edge_type, created_at = EXCLUDED.created_at,
             updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at,
             content_hash = EXCLUDED.content_hash, mirrored_at = EXCLUDED.mirrored_at",
    )
    .bind(u)
    .bind(t)
    .bind(e)
    .bind(cr)
    .bind(up)
    .bind(del)
    .bind(h)
    .execute(&mut *tx)
    .await?;
    let [k, kind, entity] = &rows.keys;
    sqlx::query(
        "INSERT INTO mirror_applied_events (idempotency_key, event_type, entity_id, event_id, applied_at)
         SELECT k, t, e, k, now() FROM UNNEST($1::text[], $2::text[], $3::text[]) AS r(k, t, e)
         ON CONFLICT DO NOTHING",
    )
    .bind(k).bind(kind).bind(entity)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One statement outside the mirror's tables (`mirrorctl bench` creating and dropping its
/// scratch schema).
pub(super) async fn execute_admin(pool: &PgPool, sql: &str) -> Result<(), StoreError> {
    sqlx::raw_sql(sql).execute(pool).await?;
    Ok(())
}

/// `mirrorctl bench --mode no-ledger`: the scratch ledger discards every row inserted.
pub(super) const DISCARD_APPLIED_KEYS: &str =
    "CREATE FUNCTION mirror_bench_discard() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
     CREATE TRIGGER mirror_bench_discard BEFORE INSERT ON mirror_applied_events
         FOR EACH ROW EXECUTE FUNCTION mirror_bench_discard()";

/// Deletes up to `limit` applied keys older than `before`, oldest first; returns how many.
pub(super) async fn prune_applied_keys(
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

/// The authors of these messages as stored (`conversation_id`, `message_id` pairs): a
/// delete's announcement names the sender the tombstone no longer holds.
pub(super) async fn message_authors(
    tx: &mut PgTx<'_>,
    keys: &[(&str, &str)],
) -> Result<HashMap<(String, String), String>, StoreError> {
    let conversations: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let messages: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let rows: Vec<(String, String, String)> = tx
        .query_as(
            "SELECT m.conversation_id, m.message_id, m.author_id
             FROM UNNEST($1::text[], $2::text[]) AS u(c, m)
             JOIN dm_messages m ON m.conversation_id = u.c AND m.message_id = u.m
             WHERE m.author_id IS NOT NULL",
        )
        .bind(&conversations)
        .bind(&messages)
        .fetch_all(&mut *tx.connection)
        .await?;
    Ok(rows.into_iter().map(|(c, m, a)| ((c, m), a)).collect())
}

/// One outbox row per change and per user to notify: the conversation's participants and
/// the sender, each once, in the order of `changes`.
pub(super) async fn enqueue_announcements(
    tx: &mut PgTx<'_>,
    changes: &[Change<'_>],
    at: Timestamp,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    tx.query(
        "INSERT INTO mirror_stream_outbox (user_id, kind, conversation_id, message_id, sender_id,
             version, enqueued_at)
         SELECT u.user_id, m.kind, m.conversation_id, m.message_id, m.sender_id, m.version, $1
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY
              AS m(kind, conversation_id, message_id, sender_id, version, n)
         LEFT JOIN dm_conversations c ON c.conversation_id = m.conversation_id
         CROSS JOIN LATERAL (
             SELECT p COLLATE \"C\" FROM unnest(c.participant_ids) AS p
             UNION
             SELECT m.sender_id COLLATE \"C\" WHERE m.sender_id <> ''
         ) AS u(user_id)
         ORDER BY m.n, u.user_id",
    )
    .bind(at.as_datetime())
    .bind(column(changes, |c| c.kind))
    .bind(column(changes, |c| c.conversation_id))
    .bind(column(changes, |c| c.message_id))
    .bind(column(changes, |c| c.sender_id.as_str()))
    .bind(column(changes, |c| c.version.as_str()))
    .execute(&mut *tx.connection)
    .await?;
    Ok(())
}

/// Any number for the transaction-level advisory lock every outbox drainer takes.
const OUTBOX_LOCK: i64 = 0x6d69_7272_6f72_0003;

type AnnouncementRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
);

fn announcement(row: AnnouncementRow) -> Announcement {
    let (id, user_id, kind, conversation_id, message_id, sender_id, version, at) = row;
    Announcement {
        id,
        user_id,
        kind,
        conversation_id,
        message_id,
        sender_id,
        version,
        enqueued_at: Timestamp::new(at).unwrap_or_else(Timestamp::now),
    }
}

pub(super) async fn lease_outbox(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    limit: i64,
) -> Result<Vec<Announcement>, StoreError> {
    // A drainer stuck behind another for this long gives up; its rows wait for the next.
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .persistent(false)
        .execute(&mut **tx)
        .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .persistent(false)
        .bind(OUTBOX_LOCK)
        .execute(&mut **tx)
        .await?;
    let rows: Vec<AnnouncementRow> = sqlx::query_as(
        "SELECT id, user_id, kind, conversation_id, message_id, sender_id, version, enqueued_at
         FROM mirror_stream_outbox ORDER BY id LIMIT $1",
    )
    .persistent(false)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(announcement).collect())
}

pub(super) async fn delete_outbox(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    ids: &[i64],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mirror_stream_outbox WHERE id = ANY($1)")
        .persistent(false)
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn outbox_backlog(pool: &PgPool) -> Result<Backlog, StoreError> {
    let (rows, oldest): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT count(*), min(enqueued_at) FROM mirror_stream_outbox")
            .persistent(false)
            .fetch_one(pool)
            .await?;
    Ok(Backlog {
        rows: rows as u64,
        oldest: oldest.and_then(Timestamp::new),
    })
}

/// Which of these conversations have their participants (not a stub, not missing).
pub(super) async fn conversations_with_participants(
    tx: &mut PgTx<'_>,
    ids: &[String],
) -> Result<HashSet<String>, StoreError> {
    let rows: Vec<(String,)> = tx
        .query_as(
            "SELECT conversation_id FROM dm_conversations
             WHERE conversation_id = ANY($1) AND cardinality(participant_ids) > 0",
        )
        .bind(ids)
        .fetch_all(&mut *tx.connection)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Announces the live messages of conversations whose participants just became known to
/// every participant but the message's author (who heard it when it was applied), as
/// `message.created`, per conversation in version order.
pub(super) async fn announce_earlier_messages(
    tx: &mut PgTx<'_>,
    ids: &[String],
    at: Timestamp,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    tx.query(
        "INSERT INTO mirror_stream_outbox (user_id, kind, conversation_id, message_id, sender_id,
             version, enqueued_at)
         SELECT p, 'message.created', m.conversation_id, m.message_id, m.author_id,
                to_char(m.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), $1
         FROM dm_messages m
         JOIN dm_conversations c ON c.conversation_id = m.conversation_id
         CROSS JOIN LATERAL unnest(c.participant_ids) AS p
         WHERE m.conversation_id = ANY($2) AND m.deleted_at IS NULL AND p <> m.author_id
         ORDER BY m.conversation_id, m.updated_at, m.message_id, p",
    )
    .bind(at.as_datetime())
    .bind(ids)
    .execute(&mut *tx.connection)
    .await?;
    Ok(())
}
