//! What the database's errors mean for the batch processor: retry the chunk at once, let the
//! queue retry, isolate one record, or read a rotated secret again.

/// A failure of the database, sorted by what the batch processor should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Deadlock, serialization failure, SQLite busy: the same transaction may succeed at once.
    #[error("write conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached, timed out, or is shutting down: the queue retries later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused a value (a data exception or a constraint): it belongs to one
    /// record, which is isolated so that the rest of its chunk commits.
    #[error("{0}")]
    RecordRefused(String),
    /// The database refused the credentials (`28P01`): a rotated secret is read again
    /// before the chunk is retried; otherwise like [`StoreError::Unavailable`].
    #[error("database authentication failed: {0}")]
    AuthenticationFailed(String),
    /// Anything else (a missing table, a permission): retried by the queue, and an operator's
    /// business.
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let text = error.to_string();
        match &error {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => StoreError::Unavailable(text),
            E::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // Primary result codes: extended codes keep them in the low byte.
                    match code.parse::<i32>().map(|c| c & 0xff) {
                        Ok(5 | 6) => StoreError::Conflict(text),
                        Ok(18 | 19 | 20 | 25) => StoreError::RecordRefused(text),
                        Ok(10 | 13 | 14) => StoreError::Unavailable(text),
                        _ => StoreError::Other(text),
                    }
                } else {
                    match code.as_str() {
                        "40001" | "40P01" | "55P03" => StoreError::Conflict(text),
                        "28P01" => StoreError::AuthenticationFailed(text),
                        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") => {
                            StoreError::Unavailable(text)
                        }
                        c if c.starts_with("22") || c.starts_with("23") => {
                            StoreError::RecordRefused(text)
                        }
                        _ => StoreError::Other(text),
                    }
                }
            }
            _ => StoreError::Other(text),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            sqlx::migrate::MigrateError::Execute(inner) => StoreError::from(inner),
            other => StoreError::Other(format!("migration failed: {other}")),
        }
    }
}

impl From<crate::credentials::CredentialsError> for StoreError {
    fn from(error: crate::credentials::CredentialsError) -> Self {
        use crate::credentials::CredentialsError as C;
        match error {
            C::Invalid(why) => StoreError::Other(why),
            C::Unreadable(why) => StoreError::Unavailable(why),
        }
    }
}

/// Every row a chunk relies on must be locked before it is read: fewer than expected is a
/// conflict (the chunk is retried), never a chunk applied without its locks.
pub(super) fn check_locked(locked: i64, expected: usize) -> Result<(), StoreError> {
    if usize::try_from(locked).ok() == Some(expected) {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "locked {locked} of {expected} conversation rows; the chunk is retried"
        )))
    }
}
