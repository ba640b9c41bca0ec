//! The SQL store: PostgreSQL in production, SQLite as the embedded default, one behaviour.
//!
//! A chunk of events of one family is applied in one transaction with set-based statements
//! (this module decides *what* to write; `postgres.rs` and `sqlite.rs` hold each dialect's
//! SQL and nothing else):
//! 1. per entity, the greatest event by the contract's total order is the chunk's winner;
//! 2. winners are upserted with a guard that only lets a greater rank overwrite a row, so
//!    concurrent writers and any arrival order converge on the same rows (and an event
//!    applied before cannot be applied again);
//! 3. the denormalised columns (`last_message_*`, `recipient_id`, stub conversations) are
//!    recomputed for what changed, inside the same transaction;
//! 4. only when some event did not apply: its key is looked up in `mirror_applied_events`
//!    (applied before: a duplicate) and its entity's stored rank (equal: a duplicate, lower:
//!    stale) — so the common case costs no look-up round trip;
//! 5. the applied keys are recorded.

mod postgres;
mod sqlite;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, PgConnection, PgPool, SqliteConnection, SqlitePool};

use crate::config::{Config, DatabaseUrl};
use crate::event::{Document, EntityKey, Event, Family, Rank};
use crate::timestamp::Timestamp;

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

/// An accepted event waiting to be written, with the bookkeeping of its SQS record.
#[derive(Clone, Debug)]
pub struct Pending {
    pub event: Event,
    /// The SQS receive count − 1 (`retry_count`).
    pub retry_count: i32,
}

/// What became of an accepted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Applied,
    /// Its key was applied before, or an event of the same rank was.
    Duplicate,
    /// A greater event of the same entity is already in the row (or in the same chunk).
    Stale,
}

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

#[derive(Clone, Debug)]
pub enum Store {
    Postgres(PgPool, PgSettings),
    Sqlite(SqlitePool),
}

impl Store {
    /// Builds the pool once per process. PostgreSQL connects lazily, so a cold start with the
    /// database down still answers (with retryable failures) instead of crashing.
    pub async fn connect(config: &Config) -> Result<Store, StoreError> {
        if let Some(arn) = &config.database_secret_arn {
            return Ok(Store::postgres(
                Store::secret_options(arn, config).await?,
                config,
            ));
        }
        let url = config.database_url.expose();
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

    /// The connect options the secret gives now.
    async fn secret_options(arn: &str, config: &Config) -> Result<PgConnectOptions, StoreError> {
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let client = aws_sdk_secretsmanager::Client::new(&aws);
        crate::credentials::fetch_secret(&client, arn, &config.database_endpoint).await
    }

    /// After an authentication failure: reads the database secret again (it may have been
    /// rotated since the cold start) and opens every new connection with what it holds now.
    /// Connections already open stay as they are. Returns false when there is no secret.
    pub async fn reload_credentials(&self, config: &Config) -> Result<bool, StoreError> {
        let (Store::Postgres(pool, _), Some(arn)) = (self, &config.database_secret_arn) else {
            return Ok(false);
        };
        let options = Store::secret_options(arn, config).await?;
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

    pub fn dialect(&self) -> &'static str {
        match self {
            Store::Postgres(..) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// The most connections (and so statements in flight) this process will hold.
    pub fn max_connections(&self) -> u32 {
        match self {
            Store::Postgres(pool, _) => pool.options().get_max_connections(),
            Store::Sqlite(pool) => pool.options().get_max_connections(),
        }
    }

    /// Creates or upgrades the schema (migrations are embedded in the binary).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool, _) => {
                // On a connection of its own that is closed afterwards: the migrator's named
                // prepared statements must not stay on a pooled connection (RDS Proxy pins).
                let mut connection = pool.acquire().await?;
                sqlx::migrate!("../migrations/postgres")
                    .run(&mut *connection)
                    .await?;
                connection.close().await?;
            }
            Store::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    /// Applies one chunk of events of one family in one transaction; on error nothing of the
    /// chunk is committed.
    pub async fn apply(&self, chunk: &[Pending]) -> Result<Vec<Written>, StoreError> {
        if chunk.is_empty() {
            return Ok(Vec::new());
        }
        match self.transact(Work::Apply(chunk)).await? {
            Done::Written(written) => Ok(written),
            Done::Repaired(_) => unreachable!("apply writes events"),
        }
    }

    /// Recomputes the derived columns (`last_message_*`, `recipient_id`) of `only` these
    /// conversations, or of all of them, in key order, `page` conversations per
    /// transaction. Each transaction takes the writers' locks in their order, so it is safe
    /// while live writers run; it writes only what differs, so a second run changes nothing.
    /// Never announces anything: it changes no event's effect, only derived values.
    pub async fn repair(
        &self,
        only: Option<Vec<String>>,
        page: usize,
    ) -> Result<Repaired, StoreError> {
        let page = page.max(1);
        let mut total = Repaired::default();
        let mut add = |done: Done| {
            if let Done::Repaired(r) = done {
                total.conversations += r.conversations;
                total.conversations_changed += r.conversations_changed;
                total.messages_changed += r.messages_changed;
            }
        };
        match only {
            Some(ids) => {
                let ids: Vec<String> = ids
                    .into_iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                for ids in ids.chunks(page) {
                    add(self.transact(Work::Repair(ids)).await?);
                }
            }
            None => {
                let mut after = String::new();
                loop {
                    let limit = i64::try_from(page).unwrap_or(i64::MAX);
                    let ids = match self {
                        Store::Postgres(pool, _) => {
                            postgres::conversation_ids_after(pool, &after, limit).await?
                        }
                        Store::Sqlite(pool) => {
                            sqlite::conversation_ids_after(pool, &after, limit).await?
                        }
                    };
                    let Some(last) = ids.last() else { break };
                    after = last.clone();
                    add(self.transact(Work::Repair(&ids)).await?);
                }
            }
        }
        Ok(total)
    }

    /// Runs `work` in one transaction. The connection goes back to the pool only if its
    /// transaction was ended cleanly.
    async fn transact(&self, work: Work<'_>) -> Result<Done, StoreError> {
        match self {
            Store::Postgres(pool, settings) => {
                let mut connection = pool.acquire().await?;
                let persistent = settings.statements == PreparedStatements::Cached;
                let mut tx = connection
                    .begin_with(format!(
                        "BEGIN; SET LOCAL statement_timeout = {}",
                        settings.statement_timeout_ms
                    ))
                    .await?;
                let result = work.run(&mut Tx::Postgres(&mut tx, persistent)).await;
                let ended = end(tx, result).await;
                if ended.is_err() && !connection.is_clean() {
                    connection.close_on_drop();
                }
                ended
            }
            Store::Sqlite(pool) => {
                let mut connection = pool.acquire().await?;
                // IMMEDIATE takes the write lock up front, so two writers never deadlock
                // upgrading a read lock.
                let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
                let result = work.run(&mut Tx::Sqlite(&mut tx)).await;
                let ended = end(tx, result).await;
                if ended.is_err() && !connection.is_clean() {
                    connection.close_on_drop();
                }
                ended
            }
        }
    }

    /// Forgets the idempotency keys applied before `before`; returns how many. Safe at any
    /// age: a later copy of a forgotten event still cannot change a row (the rank guard keeps
    /// it out); it is then counted as a duplicate or stale by rank instead of by key.
    pub async fn prune_applied_keys(&self, before: Timestamp) -> Result<u64, StoreError> {
        let deleted = match self {
            Store::Postgres(pool, _) => {
                sqlx::query("DELETE FROM mirror_applied_events WHERE applied_at < $1")
                    .bind(before.as_datetime())
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
            Store::Sqlite(pool) => {
                sqlx::query("DELETE FROM mirror_applied_events WHERE applied_at < ?1")
                    .bind(before.to_string())
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        };
        Ok(deleted)
    }

    /// Every mirrored row, as JSON objects with one text form for both stores (timestamps as
    /// RFC 3339 UTC with microseconds, `participant_ids` and `media` as JSON), ordered by key.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot::default();
        for table in &TABLES {
            let rows = match self {
                Store::Postgres(pool, _) => postgres::dump(pool, table).await?,
                Store::Sqlite(pool) => sqlite::dump(pool, table).await?,
            };
            snapshot.tables.insert(table.name.to_string(), rows);
        }
        Ok(snapshot)
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

/// Commits on success; on failure rolls back, and reports whether that worked. SQLite rolls a
/// transaction back by itself on some errors (a full disk during a statement it cannot undo
/// alone, or at commit), after which the driver's own ROLLBACK fails and the driver still
/// counts the transaction as open: such a connection must not serve another chunk.
async fn end<DB: sqlx::Database, T>(
    tx: sqlx::Transaction<'_, DB>,
    result: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match result {
        Ok(written) => {
            tx.commit().await?;
            Ok(written)
        }
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(%rollback, "the failed chunk could not be rolled back; its connection is closed");
            }
            Err(error)
        }
    }
}

/// Whether a pooled connection can serve the next chunk: no transaction left open.
trait Clean {
    fn is_clean(&self) -> bool;
}

impl<DB: sqlx::Database> Clean for sqlx::pool::PoolConnection<DB> {
    fn is_clean(&self) -> bool {
        !sqlx::Connection::is_in_transaction(&**self)
    }
}

/// One open transaction of either dialect; each method is one set-based statement.
enum Tx<'t> {
    /// With whether statements are named (cached) or unnamed.
    Postgres(&'t mut PgConnection, bool),
    Sqlite(&'t mut SqliteConnection),
}

macro_rules! dispatch {
    ($tx:expr, $f:ident ( $($arg:expr),* )) => {
        match $tx {
            Tx::Postgres(c, persistent) => postgres::$f(c, *persistent, $($arg),*).await,
            Tx::Sqlite(c) => sqlite::$f(c, $($arg),*).await,
        }
    };
}

/// What one transaction does.
enum Work<'a> {
    Apply(&'a [Pending]),
    /// Conversation ids, sorted and distinct.
    Repair(&'a [String]),
}

enum Done {
    Written(Vec<Written>),
    Repaired(Repaired),
}

impl Work<'_> {
    async fn run(self, tx: &mut Tx<'_>) -> Result<Done, StoreError> {
        match self {
            Work::Apply(chunk) => apply_in(tx, chunk).await.map(Done::Written),
            Work::Repair(ids) => {
                // The writers' locks, in their order: conversations first, in key order.
                let conversations = dispatch!(tx, lock_existing_conversations(ids))?;
                let messages_changed = dispatch!(tx, refresh_recipients(ids))?;
                let conversations_changed = dispatch!(tx, refresh_conversations(ids))?;
                Ok(Done::Repaired(Repaired {
                    conversations,
                    conversations_changed,
                    messages_changed,
                }))
            }
        }
    }
}

/// What `repair` looked at and changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Repaired {
    /// Conversations whose derived columns were recomputed.
    pub conversations: u64,
    /// Conversations whose `last_message_*` were wrong and were rewritten.
    pub conversations_changed: u64,
    /// Messages whose `recipient_id` was wrong and was rewritten.
    pub messages_changed: u64,
}

async fn apply_in(tx: &mut Tx<'_>, chunk: &[Pending]) -> Result<Vec<Written>, StoreError> {
    let family = chunk[0].event.family();
    debug_assert!(chunk.iter().all(|p| p.event.family() == family));
    let (mut written, winners) = plan(chunk);
    let winner_at: HashSet<usize> = winners.iter().copied().collect();
    let mirrored_at = Timestamp::now();

    // Sorted by key so that concurrent transactions lock rows in the same order.
    let mut winners: Vec<&Pending> = winners.iter().map(|&i| &chunk[i]).collect();
    winners.sort_by(|a, b| a.event.key.cmp(&b.event.key));
    let applied: HashSet<EntityKey> = match family {
        Family::DmMessage => {
            let conversations = conversation_ids(winners.iter().map(|p| &p.event.key));
            // A message row needs its conversation row: a stub until the conversation's own
            // events arrive. Locking the conversations first serialises every writer of one
            // conversation, so the summaries below see all committed messages.
            dispatch!(tx, lock_conversations(&conversations, mirrored_at))?;
            let rows: Vec<MessageRow> = winners.iter().map(|p| MessageRow::new(p)).collect();
            let applied = dispatch!(tx, upsert_messages(&rows, mirrored_at))?;
            let touched = conversation_ids(applied.iter());
            dispatch!(tx, refresh_conversations(&touched))?;
            applied
        }
        Family::DmConversation => {
            let rows: Vec<ConversationRow> =
                winners.iter().map(|p| ConversationRow::new(p)).collect();
            let applied = dispatch!(tx, upsert_conversations(&rows, mirrored_at))?;
            let touched = conversation_ids(applied.iter());
            dispatch!(tx, refresh_recipients(&touched))?;
            dispatch!(tx, refresh_conversations(&touched))?;
            applied
        }
        Family::FollowEdge => {
            let rows: Vec<FollowEdgeRow> = winners.iter().map(|p| FollowEdgeRow::new(p)).collect();
            dispatch!(tx, upsert_follow_edges(&rows, mirrored_at))?
        }
    };

    // Every event but the winners that were written: a key applied before is a duplicate; a
    // winner the guard kept out lost to the stored row (equal rank is the same write, a
    // duplicate; lower is stale).
    let not_applied: Vec<&Pending> = chunk
        .iter()
        .enumerate()
        .filter(|(i, p)| !(winner_at.contains(i) && applied.contains(&p.event.key)))
        .map(|(_, p)| p)
        .collect();
    let (seen, stored): (HashSet<String>, HashMap<EntityKey, Rank>) = if not_applied.is_empty() {
        (HashSet::new(), HashMap::new())
    } else {
        let keys: Vec<&str> = not_applied
            .iter()
            .map(|p| p.event.idempotency_key.as_str())
            .collect();
        let lost: Vec<&EntityKey> = winners
            .iter()
            .map(|p| &p.event.key)
            .filter(|k| !applied.contains(*k))
            .collect();
        let seen = dispatch!(tx, applied_keys(&keys))?;
        let stored = if lost.is_empty() {
            HashMap::new()
        } else {
            dispatch!(tx, current_ranks(family, &lost))?
        };
        (seen, stored)
    };
    let mut newly_applied: Vec<&Event> = Vec::new();
    for (i, pending) in chunk.iter().enumerate() {
        let event = &pending.event;
        if seen.contains(&event.idempotency_key) {
            written[i] = Some(Written::Duplicate);
            continue;
        }
        if written[i].is_some() {
            continue;
        }
        written[i] = Some(if applied.contains(&event.key) {
            newly_applied.push(event);
            Written::Applied
        } else if stored.get(&event.key) == Some(&event.rank()) {
            Written::Duplicate
        } else {
            Written::Stale
        });
    }
    // In key order, like every other write, so two chunks can never wait on each other here.
    newly_applied.sort_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
    dispatch!(tx, record_applied(&newly_applied, mirrored_at))?;
    Ok(written
        .into_iter()
        .map(|w| w.expect("every event classified"))
        .collect())
}

/// Decides, without the database, which events of a chunk are written: per entity the
/// greatest by rank (the first of equals); the rest are duplicates (equal rank) or stale.
/// Returns the known outcomes and the winners' indexes.
pub fn plan(chunk: &[Pending]) -> (Vec<Option<Written>>, Vec<usize>) {
    let mut written: Vec<Option<Written>> = vec![None; chunk.len()];
    let mut best: HashMap<&EntityKey, usize> = HashMap::new();
    let mut order: Vec<&EntityKey> = Vec::new();
    for (i, pending) in chunk.iter().enumerate() {
        let event = &pending.event;
        match best.get(&event.key) {
            None => {
                order.push(&event.key);
                best.insert(&event.key, i);
            }
            Some(&j) if event.rank() > chunk[j].event.rank() => {
                best.insert(&event.key, i);
            }
            Some(_) => {}
        }
    }
    for (i, pending) in chunk.iter().enumerate() {
        let winner = best[&pending.event.key];
        if i != winner {
            written[i] = Some(if pending.event.rank() == chunk[winner].event.rank() {
                Written::Duplicate
            } else {
                Written::Stale
            });
        }
    }
    let winners = order.into_iter().map(|k| best[k]).collect();
    (written, winners)
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

/// A key as the two text columns both dialects bind (the second empty for a conversation).
pub(super) fn key_parts(key: &EntityKey) -> (String, String) {
    match key {
        EntityKey::Conversation { conversation_id } => (conversation_id.clone(), String::new()),
        EntityKey::Message {
            conversation_id,
            message_id,
        } => (conversation_id.clone(), message_id.clone()),
        EntityKey::FollowEdge { user_id, target_id } => (user_id.clone(), target_id.clone()),
    }
}
pub(super) fn entity_key(family: Family, a: String, b: String) -> EntityKey {
    match family {
        Family::DmConversation => EntityKey::Conversation { conversation_id: a },
        Family::DmMessage => EntityKey::Message {
            conversation_id: a,
            message_id: b,
        },
        Family::FollowEdge => EntityKey::FollowEdge {
            user_id: a,
            target_id: b,
        },
    }
}

fn conversation_ids<'a>(keys: impl Iterator<Item = &'a EntityKey>) -> Vec<String> {
    let ids: BTreeSet<&str> = keys.filter_map(|k| k.conversation_id()).collect();
    ids.into_iter().map(str::to_string).collect()
}

/// Serialises a [`Timestamp`] as the RFC 3339 text SQLite stores.
fn timestamp_text<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.to_string()),
        None => s.serialize_none(),
    }
}

/// The values one winning event writes to `dm_messages` (the derived `recipient_id` aside).
#[derive(Debug, Serialize)]
struct MessageRow<'a> {
    conversation_id: &'a str,
    message_id: &'a str,
    author_id: Option<&'a str>,
    body: Option<&'a str>,
    media: Option<&'a str>,
    #[serde(serialize_with = "timestamp_text")]
    created_at: Option<Timestamp>,
    #[serde(serialize_with = "timestamp_text")]
    updated_at: Option<Timestamp>,
    #[serde(serialize_with = "timestamp_text")]
    deleted_at: Option<Timestamp>,
    content_hash: &'a str,
    sync_source: &'a str,
    event_id: &'a str,
    retry_count: i32,
}

impl<'a> MessageRow<'a> {
    fn new(p: &'a Pending) -> Self {
        let EntityKey::Message {
            conversation_id,
            message_id,
        } = &p.event.key
        else {
            unreachable!("a dm.message event has a message key")
        };
        let (message, deleted_at) = match &p.event.document {
            Document::Message(m) => (Some(m), None),
            Document::Tombstone { deleted_at } => (None, Some(*deleted_at)),
            other => unreachable!("a dm.message event carries {other:?}"),
        };
        MessageRow {
            conversation_id,
            message_id,
            author_id: message.map(|m| m.author_id.as_str()),
            body: message.and_then(|m| m.body.as_deref()),
            media: message.and_then(|m| m.media.as_deref()),
            created_at: message.map(|m| m.created_at),
            updated_at: Some(p.event.version),
            deleted_at,
            content_hash: &p.event.content_hash,
            sync_source: &p.event.source,
            event_id: &p.event.event_id,
            retry_count: p.retry_count,
        }
    }
}

/// The values one winning event writes to `dm_conversations` (the derived `last_message_*`
/// columns aside).
#[derive(Debug, Serialize)]
struct ConversationRow<'a> {
    conversation_id: &'a str,
    owner_id: Option<&'a str>,
    /// JSON array text.
    participant_ids: Option<String>,
    doc_last_message_id: Option<&'a str>,
    #[serde(serialize_with = "timestamp_text")]
    doc_last_message_at: Option<Timestamp>,
    doc_last_message_preview: Option<&'a str>,
    doc_last_message_author_id: Option<&'a str>,
    dm_pair_low: Option<String>,
    dm_pair_high: Option<String>,
    #[serde(serialize_with = "timestamp_text")]
    created_at: Option<Timestamp>,
    #[serde(serialize_with = "timestamp_text")]
    updated_at: Option<Timestamp>,
    #[serde(serialize_with = "timestamp_text")]
    deleted_at: Option<Timestamp>,
    content_hash: &'a str,
    sync_source: &'a str,
    event_id: &'a str,
    retry_count: i32,
}

impl<'a> ConversationRow<'a> {
    fn new(p: &'a Pending) -> Self {
        let EntityKey::Conversation { conversation_id } = &p.event.key else {
            unreachable!("a dm.conversation event has a conversation key")
        };
        let (c, deleted_at) = match &p.event.document {
            Document::Conversation(c) => (Some(c), None),
            Document::Tombstone { deleted_at } => (None, Some(*deleted_at)),
            other => unreachable!("a dm.conversation event carries {other:?}"),
        };
        let pair = c.and_then(|c| c.pair());
        ConversationRow {
            conversation_id,
            owner_id: c.and_then(|c| c.owner_id.as_deref()),
            participant_ids: c
                .and_then(|c| c.participant_ids.as_ref())
                .map(|ids| serde_json::to_string(ids).expect("ids serialise")),
            doc_last_message_id: c.and_then(|c| c.last_message_id.as_deref()),
            doc_last_message_at: c.and_then(|c| c.last_message_at),
            doc_last_message_preview: c.and_then(|c| c.last_message_preview.as_deref()),
            doc_last_message_author_id: c.and_then(|c| c.last_message_author_id.as_deref()),
            dm_pair_low: pair.as_ref().map(|p| p.0.clone()),
            dm_pair_high: pair.map(|p| p.1),
            created_at: c.and_then(|c| c.created_at),
            updated_at: Some(p.event.version),
            deleted_at,
            content_hash: &p.event.content_hash,
            sync_source: &p.event.source,
            event_id: &p.event.event_id,
            retry_count: p.retry_count,
        }
    }
}

#[derive(Debug, Serialize)]
struct FollowEdgeRow<'a> {
    user_id: &'a str,
    target_id: &'a str,
    edge_type: Option<&'a str>,
    #[serde(serialize_with = "timestamp_text")]
    created_at: Option<Timestamp>,
    #[serde(serialize_with = "timestamp_text")]
    updated_at: Option<Timestamp>,
    #[serde(serialize_with = "timestamp_text")]
    deleted_at: Option<Timestamp>,
    content_hash: &'a str,
    sync_source: &'a str,
    event_id: &'a str,
    retry_count: i32,
}

impl<'a> FollowEdgeRow<'a> {
    fn new(p: &'a Pending) -> Self {
        let EntityKey::FollowEdge { user_id, target_id } = &p.event.key else {
            unreachable!("a follow.edge event has a follow-edge key")
        };
        let (e, deleted_at) = match &p.event.document {
            Document::FollowEdge(e) => (Some(e), None),
            Document::Tombstone { deleted_at } => (None, Some(*deleted_at)),
            other => unreachable!("a follow.edge event carries {other:?}"),
        };
        FollowEdgeRow {
            user_id,
            target_id,
            edge_type: e.map(|e| e.edge_type.as_str()),
            created_at: e.and_then(|e| e.created_at),
            updated_at: Some(p.event.version),
            deleted_at,
            content_hash: &p.event.content_hash,
            sync_source: &p.event.source,
            event_id: &p.event.event_id,
            retry_count: p.retry_count,
        }
    }
}

/// How a column is rendered in a [`Snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Time,
    Integer,
    /// `text[]` in PostgreSQL, a JSON array in SQLite.
    TextList,
    /// `jsonb` in PostgreSQL, JSON text in SQLite.
    Json,
}

struct Table {
    name: &'static str,
    key: &'static [&'static str],
    columns: &'static [(&'static str, Kind)],
}

const BOOKKEEPING: [&str; 5] = [
    "sync_source",
    "event_id",
    "last_synced_event_id",
    "retry_count",
    "mirrored_at",
];

const TABLES: [Table; 3] = [
    Table {
        name: "dm_conversations",
        key: &["conversation_id"],
        columns: &[
            ("conversation_id", Kind::Text),
            ("owner_id", Kind::Text),
            ("participant_ids", Kind::TextList),
            ("last_message_id", Kind::Text),
            ("last_message_at", Kind::Time),
            ("last_message_preview", Kind::Text),
            ("last_message_author_id", Kind::Text),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
            ("deleted_at", Kind::Time),
            ("sync_source", Kind::Text),
            ("last_synced_event_id", Kind::Text),
            ("retry_count", Kind::Integer),
            ("mirrored_at", Kind::Time),
        ],
    },
    Table {
        name: "dm_messages",
        key: &["conversation_id", "message_id"],
        columns: &[
            ("conversation_id", Kind::Text),
            ("message_id", Kind::Text),
            ("author_id", Kind::Text),
            ("recipient_id", Kind::Text),
            ("body", Kind::Text),
            ("media", Kind::Json),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
            ("deleted_at", Kind::Time),
            ("sync_source", Kind::Text),
            ("event_id", Kind::Text),
            ("retry_count", Kind::Integer),
            ("mirrored_at", Kind::Time),
        ],
    },
    Table {
        name: "follow_edges",
        key: &["user_id", "target_id"],
        columns: &[
            ("user_id", Kind::Text),
            ("target_id", Kind::Text),
            ("edge_type", Kind::Text),
            ("created_at", Kind::Time),
            ("updated_at", Kind::Time),
            ("deleted_at", Kind::Time),
            ("sync_source", Kind::Text),
            ("event_id", Kind::Text),
            ("retry_count", Kind::Integer),
            ("mirrored_at", Kind::Time),
        ],
    },
];

/// The contract's columns of every mirrored row, comparable across stores.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub tables: std::collections::BTreeMap<String, Vec<Value>>,
}

impl Snapshot {
    /// Without `mirrored_at`, `retry_count`, `event_id` and `sync_source`: the part of the
    /// state that the contract makes a function of the set of accepted events.
    pub fn without_bookkeeping(&self) -> Snapshot {
        let mut copy = self.clone();
        for rows in copy.tables.values_mut() {
            for row in rows.iter_mut() {
                if let Value::Object(map) = row {
                    for column in BOOKKEEPING {
                        map.remove(column);
                    }
                }
            }
        }
        copy
    }

    pub fn rows(&self, table: &str) -> &[Value] {
        self.tables.get(table).map(Vec::as_slice).unwrap_or(&[])
    }
}
