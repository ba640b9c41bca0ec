//! `mirrorctl bench`: plain upserts for the ceiling, and the scratch schema's statements.

use sqlx::PgPool;

use crate::store::rows::PlainRows;
use crate::store::StoreError;

/// `mirrorctl bench --mode ceiling`: the rows of a batch written by plain upserts, one
/// statement a table plus the idempotency keys, in one transaction — the server's own cost
/// for the same rows, with none of the mirror's rules (no locks, no version guards, no
/// derived columns).
pub(in crate::store) async fn write_plain(
    pool: &PgPool,
    rows: &PlainRows,
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
pub(in crate::store) async fn execute_admin(pool: &PgPool, sql: &str) -> Result<(), StoreError> {
    sqlx::raw_sql(sql).execute(pool).await?;
    Ok(())
}

/// Rows per statement of [`preload`]: a slice of history is one transaction.
const PRELOAD_SLICE: i64 = 1_000_000;

/// `mirrorctl bench --preload N`: a history of `messages` messages, spread evenly over the
/// conversations `c0` … `c{conversations − 1}` (with the participants the workload gives
/// them), all older than the workload's first event, and their applied keys; then their
/// `last_message_*` and fresh planner statistics, as a mirror that has run for a while has.
/// `progress` hears how many messages are in after each slice.
pub(in crate::store) async fn preload(
    pool: &PgPool,
    messages: i64,
    conversations: i64,
    progress: &mut (dyn FnMut(i64) + Send),
) -> Result<(), StoreError> {
    let k = conversations.max(1);
    sqlx::query(
        "INSERT INTO dm_conversations (conversation_id, owner_id, participant_ids, dm_pair_low,
             dm_pair_high, created_at, updated_at, content_hash, sync_source, mirrored_at)
         SELECT 'c' || c, a, ARRAY[a, b], least(a, b), greatest(a, b),
                timestamptz '2024-12-01', timestamptz '2024-12-01', md5(c::text), 'preload', now()
         FROM generate_series(0, $1 - 1) AS c,
              LATERAL (SELECT ('u' || c % 997) COLLATE \"C\",
                              ('u' || 1000 + c % 991) COLLATE \"C\") AS p(a, b)",
    )
    .bind(k)
    .execute(pool)
    .await?;
    let mut done = 0;
    while done < messages {
        let end = (done + PRELOAD_SLICE).min(messages);
        let mut tx = pool.begin().await?;
        // Message i is in conversation i mod k, by one of its two participants, i ms before
        // the end of the history (2024-12-31).
        sqlx::query(
            "INSERT INTO dm_messages (conversation_id, message_id, author_id, recipient_id, body,
                 created_at, updated_at, content_hash, sync_source, event_id, mirrored_at)
             SELECT 'c' || c, 'p' || i, CASE WHEN i / $4 % 2 = 0 THEN a ELSE b END,
                    CASE WHEN i / $4 % 2 = 0 THEN b ELSE a END,
                    'an earlier message, number ' || i, at, at, md5(i::text), 'preload',
                    'preload-' || i, now()
             FROM generate_series($1, $2 - 1) AS i,
                  LATERAL (SELECT i % $4,
                                  timestamptz '2024-12-31' - ($3 - i) * interval '1 ms') AS x(c, at),
                  LATERAL (SELECT ('u' || c % 997) COLLATE \"C\",
                                  ('u' || 1000 + c % 991) COLLATE \"C\") AS p(a, b)",
        )
        .bind(done)
        .bind(end)
        .bind(messages)
        .bind(k)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO mirror_applied_events (idempotency_key, event_type, entity_id, event_id,
                 applied_at)
             SELECT encode(sha256(('preload-' || i)::bytea), 'hex'), 'dm.message.created',
                    'c' || i % $3 || '/p' || i, 'preload-' || i, now()
             FROM generate_series($1, $2 - 1) AS i",
        )
        .bind(done)
        .bind(end)
        .bind(k)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        done = end;
        progress(done);
    }
    sqlx::query(
        "UPDATE dm_conversations c SET last_message_id = n.message_id,
             last_message_at = n.created_at, last_message_preview = left(n.body, 140),
             last_message_author_id = n.author_id
         FROM (SELECT DISTINCT ON (conversation_id) conversation_id, message_id, created_at,
                      body, author_id
               FROM dm_messages ORDER BY conversation_id, created_at DESC, message_id DESC) n
         WHERE c.conversation_id = n.conversation_id",
    )
    .execute(pool)
    .await?;
    super::analyze(pool).await
}
