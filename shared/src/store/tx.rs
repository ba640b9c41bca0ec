//! An open transaction of either dialect, as the statements of `postgres/` and `sqlite/`
//! take it.

use sqlx::SqliteConnection;

use super::postgres;

/// One open transaction of either dialect; each method is one set-based statement.
pub(super) enum Tx<'t> {
    Postgres(postgres::PgTx<'t>),
    Sqlite(&'t mut SqliteConnection),
}
