//! A fresh, migrated mirror per test on either store (a schema of its own on PostgreSQL),
//! the processor the functions would use on it, and its rows.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use realtime_mirror::batch::{BatchOutcome, Outcome, Route, Summary};
use realtime_mirror::config::Config;
use realtime_mirror::{Processor, Store};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::*;

/// A fresh mirror and the processor the functions would use on it.
pub struct Mirror {
    pub processor: Processor,
    /// A `DATABASE_URL` that reaches this very mirror (for running the binaries).
    pub url: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Mirror {
    pub async fn sqlite() -> Mirror {
        Mirror::sqlite_with(Config::default()).await
    }

    /// A SQLite file in the temporary directory, so a binary can open it too.
    pub async fn sqlite_with(config: Config) -> Mirror {
        let path = std::env::temp_dir().join(format!("{}.db", unique("mirror_test")));
        let url = format!("sqlite://{}", path.display());
        let store = Store::sqlite(SqliteConnectOptions::from_str(&url).expect("a SQLite URL"))
            .await
            .expect("SQLite opens");
        store.migrate().await.expect("SQLite migrates");
        Mirror {
            processor: Processor::new(store, config),
            url,
        }
    }

    /// A private in-memory SQLite database: the cheapest fresh mirror, for property tests.
    pub async fn sqlite_in_memory_with(config: Config) -> Mirror {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").expect("a SQLite URL");
        let store = Store::sqlite(options).await.expect("SQLite opens");
        store.migrate().await.expect("SQLite migrates");
        Mirror {
            processor: Processor::new(store, config),
            url: "sqlite::memory:".into(),
        }
    }

    pub async fn postgres() -> Mirror {
        Mirror::postgres_with(Config::default()).await
    }

    pub async fn postgres_with(config: Config) -> Mirror {
        let schema = new_schema().await;
        let options = PgConnectOptions::from_str(&test_database_url()).expect("a PostgreSQL URL");
        Mirror::postgres_in(options, &schema, config).await
    }

    /// A mirror in `schema` (which exists) of the database `options` reach.
    pub async fn postgres_in(options: PgConnectOptions, schema: &str, config: Config) -> Mirror {
        let admin_url = test_database_url();
        let options = options.options([("search_path", schema)]);
        let store = Store::postgres(options, &config);
        store.migrate().await.expect("PostgreSQL migrates");
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
        Mirror {
            processor: Processor::new(store, config),
            url,
        }
    }

    pub fn store(&self) -> &Store {
        self.processor.store()
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.store(), Store::Postgres(..))
    }

    /// Applies envelopes as one batch of records `r0`, `r1`, … (no receive count).
    pub async fn apply(&self, events: &[Value]) -> BatchOutcome {
        self.processor
            .process(records(events), Route::AllFamilies)
            .await
    }

    /// Applies envelopes, each in a batch of its own, in order.
    pub async fn apply_each(&self, events: &[Value]) -> Summary {
        let mut all = BatchOutcome::default();
        for event in events {
            all.extend(self.apply(std::slice::from_ref(event)).await);
        }
        all.summary()
    }

    pub async fn outcome_of(&self, event: Value) -> Outcome {
        self.apply(&[event]).await.records.remove(0).outcome
    }

    /// The reason a single envelope is rejected; panics if it is not.
    pub async fn rejection_of(&self, event: Value) -> String {
        match self.outcome_of(event).await {
            Outcome::Rejected(why) => why.to_string(),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// The rows without bookkeeping: what convergence is about.
    pub async fn state(&self) -> realtime_mirror::store::Snapshot {
        self.store()
            .snapshot()
            .await
            .expect("snapshot")
            .without_bookkeeping()
    }

    pub async fn rows(&self, table: &str) -> Vec<Value> {
        self.store()
            .snapshot()
            .await
            .expect("snapshot")
            .rows(table)
            .to_vec()
    }

    /// The row whose key columns hold `key`, if any.
    pub async fn find(&self, table: &str, key: &[&str]) -> Option<Value> {
        let columns: &[&str] = match table {
            "dm_conversations" => &["conversation_id"],
            "dm_messages" => &["conversation_id", "message_id"],
            "follow_edges" => &["user_id", "target_id"],
            other => panic!("no table {other}"),
        };
        self.rows(table)
            .await
            .into_iter()
            .find(|row| columns.iter().zip(key).all(|(c, k)| row[*c] == json!(k)))
    }

    pub async fn row(&self, table: &str, key: &[&str]) -> Value {
        self.find(table, key)
            .await
            .unwrap_or_else(|| panic!("no {table} row {key:?}"))
    }

    /// Runs dialect-specific SQL on this mirror.
    /// How many idempotency keys the ledger holds.
    pub async fn applied_keys(&self) -> u64 {
        let sql = "SELECT count(*) FROM mirror_applied_events";
        let n: i64 = match self.store() {
            Store::Postgres(pool, _) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .expect("the ledger is readable");
        n as u64
    }

    pub async fn execute(&self, postgres: &str, sqlite: &str) {
        match self.store() {
            Store::Postgres(pool, _) => sqlx::raw_sql(postgres).execute(pool).await.map(|_| ()),
            Store::Sqlite(pool) => sqlx::raw_sql(sqlite).execute(pool).await.map(|_| ()),
        }
        .expect("test SQL runs");
    }
}

/// A fresh, empty schema in the test database; its name.
pub async fn new_schema() -> String {
    let admin_url = test_database_url();
    let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {admin_url}: {e}. Run the tests with scripts/test, \
             which starts it (pg_ctlcluster … main start), or set TEST_DATABASE_URL."
        )
    });
    let schema = unique("rm_test");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("CREATE SCHEMA");
    schema
}

impl Mirror {
    /// A processor on this mirror that announces to the Redis at `redis_url`, as a function
    /// with `MIRROR_REDIS_URL` set would.
    pub async fn announcing(&self, redis_url: &str, config: Config) -> Processor {
        let settings =
            realtime_mirror::streams::StreamSettings::new(redis_url).expect("a Redis URL");
        self.announcing_with(settings, config).await
    }

    /// As [`Mirror::announcing`], with stream settings of the test's own (an age, a secret).
    pub async fn announcing_with(
        &self,
        settings: realtime_mirror::streams::StreamSettings,
        config: Config,
    ) -> Processor {
        let config = Config {
            database_url: realtime_mirror::config::DatabaseUrl::new(self.url.clone()),
            migrate_on_start: false,
            streams: Some(settings),
            ..config
        };
        Processor::connect(config)
            .await
            .expect("the announcing processor connects")
    }
}
