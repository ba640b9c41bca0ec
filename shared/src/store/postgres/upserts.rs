//! The guarded upserts of the three tables, and the conversation locks taken first.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::event::EntityKey;
use crate::store::newest::{Summary, SummaryRow};
use crate::store::rows::{
    ConversationRow, FollowEdgeRow, MessageRow, StoredConversation, StoredRow,
};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

use super::{column, datetime, PgTx};

/// Locks the conversation rows `ids` (sorted, distinct), creating the missing ones as stubs,
/// before anything of them is read: every writer of a conversation's messages or derived
/// columns holds this lock, so each statement after it sees every committed message. Returns
/// what each row's `last_message_*` were, as the lock found them.
pub(in crate::store) async fn lock_conversations(
    tx: &mut PgTx<'_>,
    ids: &[String],
    at: Timestamp,
) -> Result<HashMap<String, Summary>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
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
    let rows: Vec<SummaryRow<DateTime<Utc>>> = tx
        .query_as(
            "SELECT conversation_id, deleted_at IS NOT NULL,
                    last_message_id IS NULL AND last_message_at IS NULL
                        AND last_message_preview IS NULL AND last_message_author_id IS NULL,
                    (last_message_id, last_message_at, last_message_preview,
                     last_message_author_id)
                        IS NOT DISTINCT FROM (doc_last_message_id, doc_last_message_at,
                                              doc_last_message_preview,
                                              doc_last_message_author_id),
                    last_message_id, last_message_at
             FROM dm_conversations WHERE conversation_id = ANY($1) FOR NO KEY UPDATE",
        )
        .bind(ids)
        .fetch_all(&mut *tx.connection)
        .await?;
    crate::store::error::check_locked(rows.len() as i64, ids.len())?;
    Ok(Summary::by_id(rows, Timestamp::new))
}

/// `recipient_id` is derived in the same statement from the (locked) conversation row.
pub(in crate::store) async fn upsert_messages(
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
pub(in crate::store) async fn upsert_conversations(
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

pub(in crate::store) async fn upsert_follow_edges(
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

/// The authors of these messages as stored (`conversation_id`, `message_id` pairs): a
/// delete's announcement names the sender the tombstone no longer holds.
pub(in crate::store) async fn message_authors(
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

/// What these conversations hold before the chunk's own events: whether their participants
/// are known (not a stub) and their pair, by id; a conversation with no row is missing.
pub(in crate::store) async fn conversation_states(
    tx: &mut PgTx<'_>,
    ids: &[String],
) -> Result<HashMap<String, StoredConversation>, StoreError> {
    let rows: Vec<StoredRow> = tx
        .query_as(
            "SELECT conversation_id, coalesce(cardinality(participant_ids), 0) > 0,
                    dm_pair_low, dm_pair_high
             FROM dm_conversations WHERE conversation_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&mut *tx.connection)
        .await?;
    Ok(StoredConversation::by_id(rows))
}
