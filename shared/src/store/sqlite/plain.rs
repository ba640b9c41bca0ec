//! `mirrorctl bench`: the scratch schema's statements (no-ops on SQLite).

use sqlx::SqlitePool;

use crate::store::StoreError;

/// One statement outside the mirror's rules (`mirrorctl bench`'s scratch file).
pub(in crate::store) async fn execute_admin(
    pool: &SqlitePool,
    sql: &str,
) -> Result<(), StoreError> {
    sqlx::raw_sql(sql).execute(pool).await?;
    Ok(())
}
