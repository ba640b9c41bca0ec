//! Test support: a fresh, migrated mirror per test on either store, event builders and row
//! access. PostgreSQL is a real server (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`); each test gets a schema of its own.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

pub use realtime_mirror::batch::Counts;
use realtime_mirror::batch::{BatchOutcome, Outcome, Record, Route, Summary};
use realtime_mirror::config::Config;
use realtime_mirror::{Processor, Store};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, PgConnection};

pub use realtime_mirror;

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn test_database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string())
}

/// Runs each `async fn rule(m: Mirror) { … }` once on SQLite and once on PostgreSQL, as
/// `rule::sqlite` and `rule::postgres`.
#[macro_export]
macro_rules! on_both_stores {
    ($(async fn $name:ident($m:ident: Mirror) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn rule($m: $crate::Mirror) $body
                #[tokio::test]
                async fn sqlite() { rule($crate::Mirror::sqlite().await).await }
                #[tokio::test]
                async fn postgres() { rule($crate::Mirror::postgres().await).await }
            }
        )*
    };
}

/// A fresh mirror and the processor the functions would use on it.
pub struct Mirror {
    pub processor: Processor,
    /// A `DATABASE_URL` that reaches this very mirror (for running the binaries).
    pub url: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
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

/// A canonical envelope.
pub fn canonical(event_type: &str, occurred_at: &str, payload: Value) -> Value {
    json!({ "eventType": event_type, "occurredAt": occurred_at, "payload": payload })
}

/// Envelopes as a batch of records `r0`, `r1`, … (no receive count); a string is sent as is.
pub fn records(events: &[Value]) -> Vec<Record> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| Record {
            message_id: format!("r{i}"),
            body: Some(match e {
                Value::String(raw) => raw.clone(),
                other => other.to_string(),
            }),
            receive_count: None,
        })
        .collect()
}

/// A `dm.message.created` envelope at `created_at` (also its occurredAt).
pub fn message(
    conversation: &str,
    message: &str,
    author: &str,
    body: &str,
    created_at: &str,
) -> Value {
    canonical(
        "dm.message.created",
        created_at,
        json!({ "conversationId": conversation, "messageId": message, "authorId": author,
                "body": body, "createdAt": created_at }),
    )
}

/// A `dm.conversation.updated` envelope with these participants, at `updated_at`.
pub fn conversation(conversation: &str, participants: &[&str], updated_at: &str) -> Value {
    canonical(
        "dm.conversation.updated",
        updated_at,
        json!({ "conversationId": conversation, "ownerId": participants.first(),
                "participantIds": participants, "createdAt": "2025-01-01T00:00:00Z",
                "updatedAt": updated_at }),
    )
}

/// A `follow.edge.created` envelope.
pub fn follow(user: &str, target: &str, at: &str) -> Value {
    canonical(
        "follow.edge.created",
        at,
        json!({ "userId": user, "targetId": target, "createdAt": at }),
    )
}

/// A delete of `entity_id` of `family_prefix` (`dm.message`, …) with only the entity id.
pub fn delete(family_prefix: &str, entity_id: &str, at: &str) -> Value {
    json!({ "eventType": format!("{family_prefix}.deleted"), "occurredAt": at, "entityId": entity_id })
}

/// Sets `value[path…] = new` (path segments are object keys).
pub fn with(mut value: Value, path: &[&str], new: Value) -> Value {
    let mut target = &mut value;
    for key in &path[..path.len() - 1] {
        target = &mut target[*key];
    }
    target[path[path.len() - 1]] = new;
    value
}

/// Removes `value[path…]`.
pub fn without(mut value: Value, path: &[&str]) -> Value {
    let mut target = &mut value;
    for key in &path[..path.len() - 1] {
        target = &mut target[*key];
    }
    if let Value::Object(map) = target {
        map.remove(path[path.len() - 1]);
    }
    value
}

/// A summary's counts, to compare by name: `Counts { applied: 2, ..Counts::default() }`.
pub fn counts(summary: &Summary) -> Counts {
    Counts {
        applied: summary.applied,
        duplicate: summary.duplicates,
        stale: summary.stale,
        rejected: summary.rejected,
        failed: summary.failed,
    }
}

/// The SQS-compatible server the queue tests use (`MIRROR_TEST_SQS_ENDPOINT`; scripts/test
/// starts moto's server and sets it).
pub fn sqs_endpoint() -> String {
    std::env::var("MIRROR_TEST_SQS_ENDPOINT").unwrap_or_else(|_| {
        panic!("MIRROR_TEST_SQS_ENDPOINT is unset: run the tests with scripts/test, which starts an SQS-compatible server (moto)")
    })
}

pub fn sqs() -> aws_sdk_sqs::Client {
    realtime_mirror::queue::client_for_endpoint(&sqs_endpoint(), "us-east-1")
}

/// The environment a spawned binary needs to reach the test SQS server.
pub fn sqs_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", sqs_endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "local".into()),
        ("AWS_SECRET_ACCESS_KEY", "local".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// Creates a queue with a unique name (`fifo` adds the `.fifo` suffix) and these attributes.
pub async fn create_queue(
    client: &aws_sdk_sqs::Client,
    prefix: &str,
    fifo: bool,
    attributes: &[(aws_sdk_sqs::types::QueueAttributeName, String)],
) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let mut name = unique(prefix).replace('_', "-");
    let mut request = client.create_queue();
    if fifo {
        name.push_str(".fifo");
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    for (key, value) in attributes {
        request = request.attributes(key.clone(), value);
    }
    request
        .queue_name(name)
        .send()
        .await
        .expect("create the queue")
        .queue_url()
        .unwrap()
        .to_string()
}

pub async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> String {
    realtime_mirror::queue::queue_arn(client, url)
        .await
        .expect("a queue ARN")
}

/// (visible, in flight) messages.
pub async fn queue_depth(client: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let stats = realtime_mirror::dlq::stats(client, url)
        .await
        .expect("queue attributes");
    (
        stats["messages"].as_u64().unwrap(),
        stats["inFlight"].as_u64().unwrap(),
    )
}

/// Resolves once the queue holds nothing, visible or in flight, on two checks in a row;
/// panics after `limit`.
pub async fn drained(client: &aws_sdk_sqs::Client, url: &str, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    let mut empty_checks = 0;
    while empty_checks < 2 {
        assert!(
            start.elapsed() < limit,
            "{url} still holds messages after {limit:?}: {:?}",
            queue_depth(client, url).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        empty_checks = if queue_depth(client, url).await == (0, 0) {
            empty_checks + 1
        } else {
            0
        };
    }
}

/// Log lines captured in memory: give [`LogCapture::writer`] to a subscriber, read
/// [`LogCapture::text`] afterwards.
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// A `MakeWriter` for `tracing_subscriber` that appends here.
    pub fn writer(&self) -> impl Fn() -> LogCapture + Send + Sync + 'static {
        let capture = self.clone();
        move || capture.clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("UTF-8 logs")
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs a command line tool (its binary, arguments and environment set in `command`) with
/// `stdin` as its input: (exit code, stdout as one JSON value or null, stderr).
pub fn run_for_json(
    command: &mut std::process::Command,
    stdin: Option<&str>,
) -> (i32, Value, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command runs");
    if let Some(text) = stdin {
        let mut input = child.stdin.take().expect("stdin is piped");
        input.write_all(text.as_bytes()).expect("stdin written");
    }
    let output = child.wait_with_output().expect("the command ends");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 stdout");
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    )
}

/// A sample SQS event of the repository's `events/` directory, by its path there.
pub fn sample_event(name: &str) -> aws_lambda_events::event::sqs::SqsEvent {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not an SQS event: {e}"))
}

/// The path of a workspace binary built beside the running test.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = dir.join(name);
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {name}");
    }
    path
}

/// A Secrets Manager client for the test server (moto serves it beside SQS).
pub fn secrets() -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .endpoint_url(sqs_endpoint())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "local", "local", None, None, "static",
        ))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
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

/// Sends each body to the queue as a plain message.
pub async fn send_all(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    bodies: impl IntoIterator<Item = String>,
) {
    for body in bodies {
        client
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }
}

/// The derived columns recomputed from the rows themselves; one line per disagreement.
pub fn derived_column_disagreements(snapshot: &realtime_mirror::store::Snapshot) -> Vec<String> {
    let mut wrong = Vec::new();
    let messages = snapshot.rows("dm_messages");
    for c in snapshot.rows("dm_conversations") {
        let id = &c["conversation_id"];
        let of_conversation: Vec<&Value> = messages
            .iter()
            .filter(|m| &m["conversation_id"] == id)
            .collect();
        if of_conversation.is_empty() {
            continue;
        }
        let newest = of_conversation
            .iter()
            .filter(|m| m["deleted_at"].is_null())
            .max_by(|x, y| {
                let key = |m: &Value| {
                    (
                        m["created_at"].as_str().unwrap().to_string(),
                        m["message_id"].as_str().unwrap().to_string(),
                    )
                };
                key(x).cmp(&key(y))
            });
        let expected = match (c["deleted_at"].is_null(), newest) {
            (true, Some(m)) => json!([
                m["message_id"],
                m["created_at"],
                m["author_id"],
                m["body"]
                    .as_str()
                    .map(|b| b.chars().take(140).collect::<String>())
            ]),
            _ => json!([null, null, null, null]),
        };
        let actual = json!([
            c["last_message_id"],
            c["last_message_at"],
            c["last_message_author_id"],
            c["last_message_preview"]
        ]);
        if expected != actual {
            wrong.push(format!(
                "conversation {id}: last_message_* {actual} but the rows say {expected}"
            ));
        }
        let participants: Vec<&str> = c["participant_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut distinct = participants.clone();
        distinct.sort_unstable();
        distinct.dedup();
        for m in &of_conversation {
            let author = m["author_id"].as_str();
            let expected = match author {
                Some(author) if m["deleted_at"].is_null() && distinct.len() == 2 => distinct
                    .iter()
                    .position(|p| *p == author)
                    .map(|i| distinct[1 - i]),
                _ => None,
            };
            if m["recipient_id"].as_str() != expected {
                wrong.push(format!(
                    "message {id}/{}: recipient_id {} but participants {participants:?} say {expected:?}",
                    m["message_id"], m["recipient_id"]
                ));
            }
        }
    }
    wrong
}

/// A PostgreSQL cluster of the test's own (`initdb` into a temporary directory, run as the
/// `postgres` user on a free loopback port), for what the shared server cannot do: check
/// passwords (it trusts every local connection), or be stopped and restarted. Stopped and
/// removed on drop.
pub struct PrivateCluster {
    pub port: u16,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
}

impl PrivateCluster {
    /// Local socket connections are trusted (for the test's own set-up, through
    /// [`PrivateCluster::psql`]); TCP connections must give a SCRAM password.
    pub fn start() -> PrivateCluster {
        PrivateCluster::start_with("127.0.0.1", |_| Vec::new())
    }

    /// As [`PrivateCluster::start`], listening on `address` (any of 127.0.0.0/8), with more
    /// server settings (`-c name=value`), which `settings` makes from the cluster's own
    /// directory (for files it writes there first, such as a certificate).
    pub fn start_with(
        address: &str,
        settings: impl FnOnce(&std::path::Path) -> Vec<String>,
    ) -> PrivateCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("initdb").exists())
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = std::env::temp_dir().join(unique("mirror_cluster"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let run = |args: &[&str]| {
            let status = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("runuser runs");
            assert!(status.success(), "{args:?} failed");
        };
        let chown = std::process::Command::new("chown")
            .args(["postgres", dir.to_str().unwrap()])
            .status()
            .expect("chown runs");
        assert!(chown.success(), "chown postgres {}", dir.display());
        let data = dir.join("data");
        run(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ]);
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("initdb wrote pg_hba.conf");
        rules.push_str("host all all 127.0.0.0/8 scram-sha-256\n");
        std::fs::write(&hba, rules).unwrap();
        let mut options = format!(
            "-p {port} -c listen_addresses={address} -c unix_socket_directories={}",
            dir.display()
        );
        for setting in settings(&dir) {
            options.push_str(&format!(" -c {setting}"));
        }
        run(&[
            bin.join("pg_ctl").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-o",
            &options,
            "-l",
            dir.join("log").to_str().unwrap(),
            "-w",
            "start",
        ]);
        PrivateCluster { port, dir, bin }
    }

    /// The cluster's own directory (its data directory is `data` inside).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// `pg_ctl restart` (fast shutdown: open transactions are rolled back, connections
    /// closed), with the options it was started with; waits until it accepts connections.
    pub fn restart(&self) {
        let status = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "60", "-l"])
            .arg(self.dir.join("log"))
            .arg("restart")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl restart failed");
    }

    /// A superuser URL over TCP (setting the superuser's password on first use).
    pub fn url(&self) -> String {
        self.psql("ALTER USER postgres PASSWORD 'private-cluster'");
        format!(
            "postgres://postgres:private-cluster@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// A migrated mirror in a schema of its own on this cluster.
    pub async fn mirror(&self, config: Config) -> Mirror {
        let url = self.url();
        let schema = unique("rm_private");
        self.psql(&format!("CREATE SCHEMA {schema}"));
        let options = PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let store = Store::postgres(options, &config);
        store.migrate().await.expect("PostgreSQL migrates");
        Mirror {
            processor: Processor::new(store, config),
            url: format!("{url}?options=-c%20search_path%3D{schema}"),
        }
    }

    /// Runs SQL as the superuser over the trusted local socket.
    pub fn psql(&self, sql: &str) {
        let status = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .args([
                "-h",
                self.dir.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
            ])
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                sql,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("psql runs");
        assert!(status.success(), "psql failed: {sql}");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .stdout(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Redis the realtime tests use: `TEST_REDIS_URL`, or the machine's own on 6379.
pub fn test_redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A name no other test (or earlier run) uses: for users and devices on the shared Redis.
pub fn unique_name(prefix: &str) -> String {
    unique(prefix)
}

impl Mirror {
    /// A processor on this mirror that announces to the Redis at `redis_url`, as a function
    /// with `MIRROR_REDIS_URL` set would.
    pub async fn announcing(&self, redis_url: &str, config: Config) -> Processor {
        let config = Config {
            database_url: realtime_mirror::config::DatabaseUrl::new(self.url.clone()),
            migrate_on_start: false,
            streams: Some(
                realtime_mirror::streams::StreamSettings::new(redis_url).expect("a Redis URL"),
            ),
            ..config
        };
        Processor::connect(config)
            .await
            .expect("the announcing processor connects")
    }
}

/// A Redis server of a test's own (so that stopping it disturbs nothing else), on a free
/// port, appending every write to a file in its directory so that a restart keeps the data.
pub struct PrivateRedis {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let dir = std::env::temp_dir().join(unique("mirror_redis"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut redis = PrivateRedis {
            port,
            dir,
            child: None,
        };
        redis.resume();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again), and waits until it answers.
    pub fn resume(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian package redis-server)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!(
            "the private redis-server did not start on port {}",
            self.port
        );
    }

    /// Stops the server (SIGTERM: it finishes its append-only file first) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: connections stay open, nothing is
    /// answered.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = &self.child {
            signal(child.id(), if frozen { "STOP" } else { "CONT" });
        }
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.freeze(false);
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
