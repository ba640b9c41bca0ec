//! The outbox of realtime delivery: rows written in the applying transaction, leased under
//! one lock in id order, deleted once delivered (docs/streams.md).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres};

use crate::store::announcement::{Announcement, Backlog, Change};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

use super::{column, PgTx};

/// One outbox row per change and per user to notify: the conversation's participants and
/// the sender, each once, in the order of `changes`.
pub(in crate::store) async fn enqueue_announcements(
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

/// Takes the oldest `limit` rows out of the outbox, in id order, under the one drainer
/// lock: deleted in this transaction, so committing it is the delivery's acknowledgement and
/// rolling it back (a failed `XADD`, a dropped lease) puts them back. The commit does not
/// wait for the disk: a crash that lost it would deliver the rows again, which a failure
/// between `XADD` and commit does anyway (at least once), and each page saves a flush.
pub(in crate::store) async fn lease_outbox(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    limit: i64,
) -> Result<Vec<Announcement>, StoreError> {
    // A drainer stuck behind another for this long gives up; its rows wait for the next.
    sqlx::query(
        "SELECT set_config('lock_timeout', '5s', true),
                set_config('synchronous_commit', 'off', true)",
    )
    .persistent(false)
    .execute(&mut **tx)
    .await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .persistent(false)
        .bind(OUTBOX_LOCK)
        .execute(&mut **tx)
        .await?;
    let rows: Vec<AnnouncementRow> = sqlx::query_as(
        "DELETE FROM mirror_stream_outbox
         WHERE id IN (SELECT id FROM mirror_stream_outbox ORDER BY id LIMIT $1)
         RETURNING id, user_id, kind, conversation_id, message_id, sender_id, version,
                   enqueued_at",
    )
    .persistent(false)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    let mut announcements: Vec<Announcement> = rows.into_iter().map(announcement).collect();
    announcements.sort_unstable_by_key(|a| a.id);
    Ok(announcements)
}

pub(in crate::store) async fn outbox_backlog(pool: &PgPool) -> Result<Backlog, StoreError> {
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

/// Announces the live messages of conversations whose participants just became known to
/// every participant but the message's author (who heard it when it was applied), as
/// `message.created`, per conversation in version order.
pub(in crate::store) async fn announce_earlier_messages(
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
