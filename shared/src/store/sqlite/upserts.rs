//! The guarded upserts of the three tables, and the conversation locks taken first.

use std::collections::{HashMap, HashSet};

use sqlx::SqliteConnection;

use crate::event::EntityKey;
use crate::store::newest::{Summary, SummaryRow};
use crate::store::rows::{
    ConversationRow, FollowEdgeRow, MessageRow, StoredConversation, StoredRow,
};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

use super::json;

/// SQLite has one writer at a time (`BEGIN IMMEDIATE`), so creating the stubs is all the
/// locking there is to do. Returns what each row's `last_message_*` were, as PostgreSQL's.
pub(in crate::store) async fn lock_conversations(
    c: &mut SqliteConnection,
    ids: &[String],
    at: Timestamp,
) -> Result<HashMap<String, Summary>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids = json(&ids);
    sqlx::query(
        "INSERT INTO dm_conversations (conversation_id, sync_source, mirrored_at)
         SELECT value, 'derived', ?2 FROM json_each(?1) WHERE true
         ON CONFLICT (conversation_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(at.to_string())
    .execute(&mut *c)
    .await?;
    let rows: Vec<SummaryRow<String>> = sqlx::query_as(
        "SELECT conversation_id, deleted_at IS NOT NULL,
                last_message_id IS NULL AND last_message_at IS NULL
                    AND last_message_preview IS NULL AND last_message_author_id IS NULL,
                (last_message_id, last_message_at, last_message_preview, last_message_author_id)
                    IS (doc_last_message_id, doc_last_message_at, doc_last_message_preview,
                        doc_last_message_author_id),
                last_message_id, last_message_at
         FROM dm_conversations WHERE conversation_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&ids)
    .fetch_all(c)
    .await?;
    Ok(Summary::by_id(rows, |at| {
        Timestamp::parse_rfc3339(&at).ok()
    }))
}

pub(in crate::store) async fn upsert_messages(
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

pub(in crate::store) async fn upsert_conversations(
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

pub(in crate::store) async fn upsert_follow_edges(
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

/// The authors of these messages as stored; see the PostgreSQL dialect.
pub(in crate::store) async fn message_authors(
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

/// What these conversations hold before the chunk's own events; see the PostgreSQL dialect.
pub(in crate::store) async fn conversation_states(
    c: &mut SqliteConnection,
    ids: &[String],
) -> Result<HashMap<String, StoredConversation>, StoreError> {
    let rows: Vec<StoredRow> = sqlx::query_as(
        "SELECT conversation_id, coalesce(json_array_length(participant_ids), 0) > 0,
                dm_pair_low, dm_pair_high
         FROM dm_conversations WHERE conversation_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json(&ids))
    .fetch_all(c)
    .await?;
    Ok(StoredConversation::by_id(rows))
}
