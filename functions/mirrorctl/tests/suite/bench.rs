//! `mirrorctl bench` through the binary: a reproducible stream, every mode, the ratios of
//! one run, and no scratch schema left behind (BENCHMARKS.md).

use std::process::Command;

use serde_json::Value;
use sqlx::Connection;

/// `mirrorctl bench ARGS`: (exit code, JSON lines, stderr, process id).
fn bench(database_url: &str, args: &[&str]) -> (i32, Vec<Value>, String, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_mirrorctl"))
        .arg("bench")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mirrorctl runs");
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let lines = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    (
        output.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&output.stderr).into_owned(),
        pid,
    )
}

/// `mirrorctl bench` (BENCHMARKS.md): the same seed gives the same stream, so the same outcomes;
/// every event settles; the run's scratch schema or file is gone afterwards.
#[tokio::test]
async fn bench_applies_a_reproducible_stream_and_leaves_no_scratch_behind() {
    let base = mirror_tests::test_database_url();
    let dir = std::env::temp_dir().join(format!("bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = format!("sqlite://{}/mirror.db", dir.display());
    let mut pids = Vec::new();
    for url in [base.as_str(), sqlite.as_str()] {
        let args = ["--events", "1500", "--batch-size", "100", "--seed", "9"];
        let (code, first, stderr, pid) = bench(url, &args);
        assert_eq!(code, 0, "{stderr}");
        let (_, second, _, again) = bench(url, &args);
        pids.extend([pid, again]);
        let counts = |line: &Value| {
            ["applied", "duplicates", "stale", "rejected", "failed"].map(|k| line[k].clone())
        };
        assert_eq!(
            counts(&first[0]),
            counts(&second[0]),
            "{url}: the same seed"
        );
        let line = &first[0];
        let settled = ["applied", "duplicates", "stale"]
            .iter()
            .map(|k| line[k].as_u64().unwrap())
            .sum::<u64>();
        assert_eq!(settled, 1500, "{line}");
        assert!(line["duplicates"].as_u64().unwrap() > 0, "{line}");
        assert!(line["stale"].as_u64().unwrap() > 0, "{line}");
        assert!(line["events_per_s"].as_f64().unwrap() > 0.0, "{line}");
        assert!(
            line["batch_latency_ms"]["p99"].as_f64().unwrap() > 0.0,
            "{line}"
        );
        assert!(line["peak_rss_kib"].as_u64().unwrap() > 0, "{line}");
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    let names: Vec<String> = pids.iter().map(|p| format!("mirror_bench_{p}")).collect();
    let (schemas,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)")
            .bind(&names)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(schemas, 0, "scratch schemas left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_all_measures_ceiling_set_no_ledger_and_per_event_on_one_stream_and_prints_their_ratios() {
    let (code, lines, stderr, _) = bench(
        &mirror_tests::test_database_url(),
        &["--events", "600", "--batch-size", "50", "--mode", "all"],
    );
    assert_eq!(code, 0, "{stderr}");
    let modes: Vec<&str> = lines[..4]
        .iter()
        .map(|l| l["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["ceiling", "set", "no-ledger", "per-event"]);
    assert_eq!(
        lines[3]["chunk_size"], 1,
        "per-event: one event a transaction"
    );
    assert_eq!(
        lines[1]["applied"], lines[2]["applied"],
        "without the ledger the same rows are written"
    );
    let rate = |i: usize| lines[i]["events_per_s"].as_f64().unwrap();
    let ratios = &lines[4];
    assert_eq!(
        ratios["set_over_per_event"].as_f64().unwrap(),
        (rate(1) / rate(3) * 100.0).round() / 100.0
    );
    assert_eq!(
        ratios["set_over_no_ledger"].as_f64().unwrap(),
        (rate(1) / rate(2) * 100.0).round() / 100.0
    );
    assert!(
        ratios["set_over_ceiling"].as_f64().unwrap() > 0.0,
        "{ratios}"
    );
}

/// On SQLite `all` has no ceiling to measure: the other three, and no ceiling ratio.
#[test]
fn bench_all_on_sqlite_measures_set_no_ledger_and_per_event() {
    let dir = std::env::temp_dir().join(format!("bench-all-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/mirror.db", dir.display());
    let (code, lines, stderr, _) = bench(
        &url,
        &["--events", "300", "--batch-size", "50", "--mode", "all"],
    );
    assert_eq!(code, 0, "{stderr}");
    let modes: Vec<&str> = lines[..3]
        .iter()
        .map(|l| l["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["set", "no-ledger", "per-event"]);
    assert!(lines[3].get("set_over_ceiling").is_none(), "{}", lines[3]);
    assert!(lines[3]["set_over_no_ledger"].as_f64().unwrap() > 0.0);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "scratch left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_ceiling_on_sqlite_is_refused_with_the_reason() {
    let (code, _, stderr, _) = bench("sqlite:///tmp/never-created.db", &["--mode", "ceiling"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("needs") || stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    assert!(!std::path::Path::new("/tmp/never-created.db").exists());
}

/// `--preload N` (docs/operating.md): the history it writes is older than the stream, so the
/// stream's outcomes are those of a run without it; the line says how much was preloaded;
/// SQLite is refused with the reason, and no scratch schema is left behind.
#[tokio::test]
async fn bench_preload_writes_a_history_older_than_the_stream_and_changes_no_outcome() {
    let base = mirror_tests::test_database_url();
    let args = ["--events", "1200", "--batch-size", "300", "--seed", "4"];
    let (code, plain, stderr, _) = bench(&base, &args);
    assert_eq!(code, 0, "{stderr}");
    let mut preloaded_args = args.to_vec();
    preloaded_args.extend(["--preload", "5000"]);
    let (code, preloaded, stderr, pid) = bench(&base, &preloaded_args);
    assert_eq!(code, 0, "{stderr}");
    let counts = |line: &Value| {
        ["applied", "duplicates", "stale", "rejected", "failed"].map(|k| line[k].clone())
    };
    assert_eq!(counts(&plain[0]), counts(&preloaded[0]));
    assert_eq!(preloaded[0]["preloaded_messages"], 5000);
    assert!(preloaded[0]["preload_seconds"].as_f64().is_some());
    assert!(plain[0].get("preloaded_messages").is_none());
    assert!(
        stderr.contains("preloaded 5000 of 5000 messages"),
        "{stderr}"
    );
    let mut connection = sqlx::PgConnection::connect(&base).await.unwrap();
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(format!("mirror_bench_{pid}"))
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(left, 0, "the preloaded scratch schema is removed");

    let dir = std::env::temp_dir().join(format!("bench-preload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = format!("sqlite://{}/mirror.db", dir.display());
    let (code, _, stderr, _) = bench(&sqlite, &["--events", "10", "--preload", "10"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--preload fills a PostgreSQL schema"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
