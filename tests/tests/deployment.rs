//! What a deployed function relies on: database credentials read from Secrets Manager at
//! cold start (never a plain environment value), and the statement cache switch for RDS Proxy.

use std::time::Duration;

use mirror_tests::realtime_mirror::config::Config;
use mirror_tests::realtime_mirror::credentials::fetch_secret;
use mirror_tests::realtime_mirror::Store;
use mirror_tests::{
    create_queue, follow, new_schema, queue_depth, secrets, sqs, sqs_env, test_database_url,
    workspace_binary, Mirror,
};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;

/// A name no earlier run used.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{nanos}")
}

async fn create_secret(value: String) -> String {
    let name = unique("mirror-db-");
    secrets()
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("create the secret")
        .arn()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn credentials_in_the_rds_json_form_are_read_from_secrets_manager() {
    let test: PgConnectOptions = test_database_url().parse().unwrap();
    let arn = create_secret(json!({
        "engine": "postgres", "username": test.get_username(), "password": "unused-with-trust-auth",
        "host": test.get_host(), "port": test.get_port(), "dbname": test.get_database(),
    }).to_string()).await;
    let options = fetch_secret(&secrets(), &arn, &Default::default())
        .await
        .expect("the secret resolves");
    let schema = new_schema().await;
    let mirror = Mirror::postgres_in(options, &schema, Config::default()).await;
    assert_eq!(
        mirror
            .apply(&[follow("u1", "u2", "2025-10-08T12:00:00Z")])
            .await
            .summary()
            .applied,
        1
    );
    assert_eq!(mirror.rows("follow_edges").await.len(), 1);

    let missing = fetch_secret(
        &secrets(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope",
        &Default::default(),
    )
    .await
    .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("cannot read the database secret"),
        "{missing}"
    );
}

/// Starts the follow-edge binary as a worker with `env` (and no DATABASE_URL), feeds it one
/// event and stops it once the event is acknowledged.
async fn a_worker_applies_one_event(env: &[(&str, String)]) {
    let client = sqs();
    let queue = create_queue(&client, "follow-edge", false, &[]).await;
    client
        .send_message()
        .queue_url(&queue)
        .message_body(follow("u1", "u2", "2025-10-08T12:00:00Z").to_string())
        .send()
        .await
        .unwrap();
    let mut worker = std::process::Command::new(workspace_binary("follow-edge"))
        .envs(sqs_env())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("DATABASE_URL")
        .env("MIRROR_QUEUE_URL", &queue)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while queue_depth(&client, &queue).await != (0, 0) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the worker did not apply the event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(worker.wait().unwrap().success());
}

/// The function binary's own cold start: DATABASE_SECRET_ARN, no DATABASE_URL.
#[tokio::test]
async fn a_function_started_with_only_a_secret_arn_reaches_the_database() {
    let schema = new_schema().await;
    let separator = if test_database_url().contains('?') {
        '&'
    } else {
        '?'
    };
    let arn = create_secret(format!(
        "{}{separator}options=-c%20search_path%3D{schema}",
        test_database_url()
    ))
    .await;
    a_worker_applies_one_event(&[("DATABASE_SECRET_ARN", arn)]).await;
    let mirror = Mirror::postgres_in(
        test_database_url().parse().unwrap(),
        &schema,
        Config::default(),
    )
    .await;
    assert_eq!(
        mirror.row("follow_edges", &["u1", "u2"]).await["edge_type"],
        "follow"
    );
}

/// A secret RDS manages for its master user holds only `username` and `password`: the
/// endpoint comes from MIRROR_DB_HOST, MIRROR_DB_PORT and MIRROR_DB_NAME (the template's
/// DatabaseHost, DatabasePort and DatabaseName).
#[tokio::test]
async fn a_secret_with_only_user_and_password_reaches_the_database_named_by_the_endpoint_parameters(
) {
    use sqlx::{Connection, PgConnection};
    let admin_options: PgConnectOptions = test_database_url().parse().unwrap();
    let database = unique("rm_test_secret_");
    let mut admin = PgConnection::connect_with(&admin_options).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let arn = create_secret(
        json!({ "username": admin_options.get_username(), "password": "unused-with-trust-auth" })
            .to_string(),
    )
    .await;
    a_worker_applies_one_event(&[
        ("DATABASE_SECRET_ARN", arn),
        ("MIRROR_DB_HOST", admin_options.get_host().to_string()),
        ("MIRROR_DB_PORT", admin_options.get_port().to_string()),
        ("MIRROR_DB_NAME", database.clone()),
    ])
    .await;
    let mut mirror = PgConnection::connect_with(&admin_options.clone().database(&database))
        .await
        .unwrap();
    let edge: String = sqlx::query_scalar(
        "SELECT edge_type FROM follow_edges WHERE user_id = 'u1' AND target_id = 'u2'",
    )
    .fetch_one(&mut mirror)
    .await
    .unwrap();
    assert_eq!(edge, "follow");
    mirror.close().await.unwrap();
    sqlx::query(&format!("DROP DATABASE {database}"))
        .execute(&mut admin)
        .await
        .unwrap();
}

async fn prepared_statements(config: Config) -> i64 {
    let mirror = Mirror::postgres_with(Config {
        max_connections: 1,
        ..config
    })
    .await;
    mirror
        .apply(&[
            follow("u1", "u2", "2025-10-08T12:00:00Z"),
            mirror_tests::message("c1", "m1", "u1", "x", "2025-10-08T12:00:00Z"),
        ])
        .await;
    let Store::Postgres(pool, _) = mirror.store() else {
        unreachable!()
    };
    // sqlx::raw_sql is a simple query: it prepares nothing itself.
    let mut connection = pool.acquire().await.unwrap();
    use sqlx::Row;
    let rows = sqlx::raw_sql("SELECT count(*) FROM pg_prepared_statements")
        .fetch_all(&mut *connection)
        .await
        .unwrap();
    rows[0].get::<i64, _>(0)
}

#[tokio::test]
async fn the_statement_cache_can_be_switched_off_for_rds_proxy() {
    assert!(
        prepared_statements(Config::default()).await > 0,
        "by default statements are cached"
    );
    assert_eq!(
        prepared_statements(Config {
            statement_cache: false,
            ..Config::default()
        })
        .await,
        0
    );
    let from_env =
        Config::from_lookup(|n| (n == "MIRROR_STATEMENT_CACHE").then(|| "false".into())).unwrap();
    assert!(!from_env.statement_cache);
}

/// RDS rotates the secret while the functions keep what they read at cold start: when the
/// database refuses the password (28P01), the secret is read again and the chunk retried,
/// instead of every record failing until the execution environment is replaced.
#[tokio::test]
async fn a_rotated_secret_is_read_again_when_the_database_refuses_the_password() {
    use mirror_tests::realtime_mirror::batch::Outcome;
    use mirror_tests::realtime_mirror::config::DatabaseEndpoint;
    use mirror_tests::realtime_mirror::{Processor, Route};

    let cluster = mirror_tests::PrivateCluster::start();
    cluster.psql("CREATE ROLE mirror LOGIN PASSWORD 'first-password'");
    cluster.psql("CREATE DATABASE mirror OWNER mirror");
    let secret = |password: &str| json!({ "username": "mirror", "password": password }).to_string();
    let arn = create_secret(secret("first-password")).await;
    // The store reads the secret in this process, through the AWS SDK's environment.
    for (variable, value) in mirror_tests::sqs_env() {
        std::env::set_var(variable, value);
    }
    let processor = Processor::connect(Config {
        database_secret_arn: Some(arn.clone()),
        database_endpoint: DatabaseEndpoint {
            host: Some("127.0.0.1".into()),
            port: Some(cluster.port),
            name: Some("mirror".into()),
        },
        ..Config::default()
    })
    .await
    .expect("the first secret opens the database");
    let apply = |user: &'static str| {
        let processor = processor.clone();
        async move {
            let record = mirror_tests::realtime_mirror::Record {
                message_id: user.into(),
                body: Some(follow(user, "t", "2025-10-08T12:00:00Z").to_string()),
                receive_count: None,
            };
            processor
                .process(vec![record], Route::AllFamilies)
                .await
                .records
                .remove(0)
                .outcome
        }
    };
    assert_eq!(apply("u1").await, Outcome::Applied);

    // The rotation: a new password in the database and in the secret; old sessions end.
    cluster.psql("ALTER ROLE mirror PASSWORD 'second-password'");
    secrets()
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(secret("second-password"))
        .send()
        .await
        .unwrap();
    cluster.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'mirror'");
    assert_eq!(apply("u2").await, Outcome::Applied);
}

/// A processor announcing to `redis` with the auth token of secret `arn`, the AWS SDK
/// pointed at the test's Secrets Manager (moto).
async fn announcing_with_secret(
    mirror: &Mirror,
    url: &str,
    arn: &str,
) -> mirror_tests::realtime_mirror::Processor {
    use mirror_tests::realtime_mirror::config::SecretForm;
    for (variable, value) in mirror_tests::sqs_env() {
        std::env::set_var(variable, value);
    }
    let mut settings = mirror_tests::realtime_mirror::streams::StreamSettings::new(url).unwrap();
    settings.auth_secret_arn = Some(arn.to_string());
    settings.auth_secret_form = SecretForm::Field("authToken");
    mirror.announcing_with(settings, Config::default()).await
}

async fn stream_ids(url: &str, password: &str, user: &str) -> Vec<String> {
    let url = url.replacen("redis://", &format!("redis://:{password}@"), 1);
    let mut connection = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    mirror_tests::realtime_mirror::streams::tail(&mut connection, user, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.fields["messageId"].clone())
        .collect()
}

/// The Redis auth token rotates (ElastiCache's `AuthTokenUpdateStrategy`) while the
/// functions keep what they read: when Redis refuses it on a new connection, the secret is
/// read again, so delivery resumes without a cold start.
#[tokio::test]
async fn a_rotated_redis_token_is_read_again_when_redis_refuses_it() {
    use mirror_tests::{conversation, message, unique_name, PrivateRedis};
    let redis = PrivateRedis::start_with(&["--requirepass", "first-token-0123456789"]);
    let arn = create_secret(json!({ "authToken": "first-token-0123456789" }).to_string()).await;
    let mirror = Mirror::postgres().await;
    let processor = announcing_with_secret(&mirror, &redis.url(), &arn).await;
    let (a, b, conv) = (unique_name("a"), unique_name("b"), unique_name("conv"));
    let at = |s: u32| format!("2025-10-08T12:00:{s:02}Z");
    let events = [
        conversation(&conv, &[&a, &b], &at(0)),
        message(&conv, "m1", &a, "x", &at(1)),
    ];
    let first = processor
        .process(
            mirror_tests::records(&events),
            mirror_tests::realtime_mirror::Route::AllFamilies,
        )
        .await;
    assert_eq!(first.delivery.unwrap().error, None);

    // The rotation: a new token in Redis and in the secret; every connection is dropped.
    let admin = redis
        .url()
        .replacen("redis://", "redis://:first-token-0123456789@", 1);
    let mut admin = redis::Client::open(admin)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("second-token-0123456789")
        .query_async(&mut admin)
        .await
        .unwrap();
    secrets()
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(json!({ "authToken": "second-token-0123456789" }).to_string())
        .send()
        .await
        .unwrap();
    let _: redis::RedisResult<()> = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await;

    let second = [message(&conv, "m2", &a, "x", &at(2))];
    processor
        .process(
            mirror_tests::records(&second),
            mirror_tests::realtime_mirror::Route::AllFamilies,
        )
        .await;
    // The dead connection fails one drain (delivery pauses, the rows wait); the next one
    // connects, is refused the old token, reads the secret again and delivers.
    let fanout = processor.fanout().unwrap();
    let mut last = None;
    for _ in 0..4 {
        let delivery = fanout.drain(processor.store()).await;
        if delivery.error.is_none() && delivery.backlog == 0 {
            last = None;
            break;
        }
        last = delivery.error;
        tokio::time::sleep(mirror_tests::realtime_mirror::streams::RETRY_AFTER).await;
    }
    assert_eq!(last, None, "delivery resumed with the rotated token");
    assert_eq!(
        stream_ids(&redis.url(), "second-token-0123456789", &b).await,
        ["m1", "m2"]
    );
}

/// A Redis secret the function cannot read (another KMS key, a wrong ARN) stops delivery
/// only: the SQL mirror starts and applies, and the changes wait in the outbox.
#[tokio::test]
async fn an_unreadable_redis_secret_never_stops_the_sql_mirror() {
    use mirror_tests::realtime_mirror::{Outcome, Route};
    use mirror_tests::{conversation, message, unique_name, PrivateRedis};
    let redis = PrivateRedis::start();
    let mirror = Mirror::postgres().await;
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-redis-token";
    let processor = announcing_with_secret(&mirror, &redis.url(), missing).await;
    let (a, b, conv) = (unique_name("a"), unique_name("b"), unique_name("conv"));
    let outcome = processor
        .process(
            mirror_tests::records(&[
                conversation(&conv, &[&a, &b], "2025-10-08T12:00:00Z"),
                message(&conv, "m1", &a, "x", "2025-10-08T12:00:01Z"),
            ]),
            Route::AllFamilies,
        )
        .await;
    for record in &outcome.records {
        assert_eq!(record.outcome, Outcome::Applied);
    }
    let error = outcome.delivery.unwrap().error.unwrap_or_default();
    assert!(
        error.contains("cannot read the Redis auth token secret"),
        "{error}"
    );
}
