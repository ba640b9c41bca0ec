//! What `check` and `backfill` read: the self-check's statements, rows as JSON, and the
//! seen-keys table of a source check.

use std::collections::HashSet;

use serde_json::Value;
use sqlx::{SqliteConnection, SqlitePool};

use crate::store::inconsistency::Inconsistency;
use crate::store::snapshot::{Kind, Table};
use crate::store::StoreError;
use crate::timestamp::Timestamp;

use super::json;

/// As PostgreSQL's.
pub(in crate::store) async fn self_check(
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
pub(in crate::store) async fn self_follows_after(
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

pub(in crate::store) async fn dump(
    pool: &SqlitePool,
    table: &Table,
) -> Result<Vec<Value>, StoreError> {
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
pub(in crate::store) async fn rows_for_keys(
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
pub(in crate::store) async fn seen_reset(c: &mut SqliteConnection) -> Result<(), StoreError> {
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
pub(in crate::store) async fn seen_add(
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
pub(in crate::store) async fn live_keys_after(
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
pub(in crate::store) async fn seen_among(
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

/// Where the scheduled self-check stopped, if a run left one.
pub(in crate::store) async fn check_cursor(
    pool: &SqlitePool,
) -> Result<Option<crate::store::CheckCursor>, StoreError> {
    let row: Option<(bool, String, String, String)> = sqlx::query_as(
        "SELECT follows, after_a, after_b, pass_started_at FROM mirror_check_progress WHERE id = 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(
        row.map(|(follows, a, b, started)| crate::store::CheckCursor {
            follows,
            after: (a, b),
            pass_started_at: started,
        }),
    )
}

/// Keeps where a self-check stopped (`None`: its pass is done, the next starts over).
pub(in crate::store) async fn save_check_cursor(
    pool: &SqlitePool,
    cursor: Option<&crate::store::CheckCursor>,
) -> Result<(), StoreError> {
    let Some(c) = cursor else {
        sqlx::query("DELETE FROM mirror_check_progress WHERE id = 1")
            .execute(pool)
            .await?;
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO mirror_check_progress (id, follows, after_a, after_b, pass_started_at)
         VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET follows = excluded.follows, after_a = excluded.after_a,
           after_b = excluded.after_b, pass_started_at = excluded.pass_started_at",
    )
    .bind(c.follows)
    .bind(&c.after.0)
    .bind(&c.after.1)
    .bind(&c.pass_started_at)
    .execute(pool)
    .await?;
    Ok(())
}
