//! Opening a store: the PostgreSQL pool (lazy, capped, with the statement cache and timeout
//! as configured) or the SQLite file, from `DATABASE_URL` or the database secret.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use super::{Store, StoreError};
use crate::config::{Config, DatabaseUrl};

/// Whether PostgreSQL statements are prepared once per connection and reused, or sent as
/// unnamed statements (`MIRROR_STATEMENT_CACHE=false`): RDS Proxy pins a session to its
/// client for as long as the session holds a named prepared statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreparedStatements {
    Cached,
    Unnamed,
}

/// How each PostgreSQL transaction is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgSettings {
    pub statements: PreparedStatements,
    /// `SET LOCAL statement_timeout`, in milliseconds, sent with BEGIN in one round trip
    /// (transaction-scoped, so RDS Proxy does not pin the session for it).
    pub statement_timeout_ms: u128,
}

impl Store {
    /// Builds the pool once per process. PostgreSQL connects lazily, so a cold start with the
    /// database down still answers (with retryable failures) instead of crashing.
    pub async fn connect(config: &Config) -> Result<Store, StoreError> {
        if let Some(arn) = &config.database_secret_arn {
            return Ok(Store::postgres(
                crate::credentials::options_from_secret_arn(arn, &config.database_endpoint).await?,
                config,
            ));
        }
        let url = config.database_url.expose();
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
            // Never looked up as a host, and never printed whole: it may hold a password.
            return Err(StoreError::Other(format!(
                "DATABASE_URL: the scheme {scheme:?} is not supported; use postgres://… \
                 (or postgresql://…) or sqlite://…"
            )));
        }
        if DatabaseUrl::is_sqlite(url) {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Other(format!("DATABASE_URL is not a SQLite URL: {e}")))?;
            Ok(Store::sqlite(options).await?)
        } else {
            let options = PgConnectOptions::from_str(url).map_err(|e| {
                StoreError::Other(format!("DATABASE_URL is not a PostgreSQL URL: {e}"))
            })?;
            let options = crate::credentials::tls_off_loopback(
                options,
                crate::credentials::names_root_cert(url),
            )?;
            Ok(Store::postgres(options, config))
        }
    }

    /// After an authentication failure: reads the database secret again (it may have been
    /// rotated since the cold start) and opens every new connection with what it holds now.
    /// Connections already open stay as they are. Returns false when there is no secret.
    pub async fn reload_credentials(&self, config: &Config) -> Result<bool, StoreError> {
        let (Store::Postgres(pool, _), Some(arn)) = (self, &config.database_secret_arn) else {
            return Ok(false);
        };
        let options =
            crate::credentials::options_from_secret_arn(arn, &config.database_endpoint).await?;
        pool.set_connect_options(pg_options(options, config));
        Ok(true)
    }

    pub fn postgres(options: PgConnectOptions, config: &Config) -> Store {
        let statements = if config.statement_cache {
            PreparedStatements::Cached
        } else {
            PreparedStatements::Unnamed
        };
        let options = pg_options(options, config);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.db_timeout)
            .connect_lazy_with(options);
        Store::Postgres(
            pool,
            PgSettings {
                statements,
                statement_timeout_ms: config.statement_timeout.as_millis(),
            },
        )
    }

    /// SQLite allows one writer at a time, so the pool holds one connection whatever the cap;
    /// it also keeps an in-memory database alive for the life of the pool.
    pub async fn sqlite(options: SqliteConnectOptions) -> Result<Store, StoreError> {
        let in_memory = options.get_filename().as_os_str().is_empty()
            || options
                .get_filename()
                .to_string_lossy()
                .contains(":memory:");
        let mut options = options
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        if !in_memory {
            options = options.journal_mode(SqliteJournalMode::Wal);
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Ok(Store::Sqlite(pool))
    }
}

/// The statement cache as configured: off, every statement is sent unnamed.
fn pg_options(options: PgConnectOptions, config: &Config) -> PgConnectOptions {
    if config.statement_cache {
        options
    } else {
        options.statement_cache_capacity(0)
    }
}
