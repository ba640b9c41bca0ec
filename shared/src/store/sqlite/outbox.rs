//! The outbox of realtime delivery: rows written in the applying transaction, leased under
//! the database's write lock in id order, deleted once delivered (docs/streams.md).

use sqlx::{SqliteConnection, SqlitePool};

use crate::store::announcement::{Announcement, Backlog, Change};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

use super::json;

/// One outbox row per change and per user to notify; see the PostgreSQL dialect.
pub(in crate::store) async fn enqueue_announcements(
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

pub(in crate::store) async fn lease_outbox(
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

pub(in crate::store) async fn delete_outbox(
    c: &mut SqliteConnection,
    ids: &[i64],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mirror_stream_outbox WHERE id IN (SELECT value FROM json_each(?1))")
        .bind(json(&ids))
        .execute(c)
        .await?;
    Ok(())
}

pub(in crate::store) async fn outbox_backlog(pool: &SqlitePool) -> Result<Backlog, StoreError> {
    let (rows, oldest): (i64, Option<String>) =
        sqlx::query_as("SELECT count(*), min(enqueued_at) FROM mirror_stream_outbox")
            .fetch_one(pool)
            .await?;
    Ok(Backlog {
        rows: rows as u64,
        oldest: oldest.and_then(|t| Timestamp::parse_rfc3339(&t).ok()),
    })
}

/// The live messages of conversations whose participants just became known, to every
/// participant but the author; see the PostgreSQL dialect.
pub(in crate::store) async fn announce_earlier_messages(
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
