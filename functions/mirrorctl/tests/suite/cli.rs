//! `mirrorctl` as an operator runs it: the binary, its JSON summary and its exit codes.

use std::process::Command;

use mirror_tests::{run_for_json, Mirror};
use serde_json::Value;

const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events");

fn mirrorctl(database_url: &str, args: &[&str]) -> (i32, Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirrorctl"));
    command
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("MIRROR_DB_TIMEOUT", "1s")
        .env("RUST_LOG", "info");
    run_for_json(&mut command, None)
}

#[tokio::test]
async fn apply_gives_the_same_rows_on_sqlite_and_postgres() {
    let sqlite = Mirror::sqlite().await;
    let postgres = Mirror::postgres().await;
    for mirror in [&sqlite, &postgres] {
        let (code, summary, stderr) = mirrorctl(&mirror.url, &["apply", EVENTS]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(summary["applied"], 11, "{summary}");
        assert_eq!(summary["stale"], 4, "a created superseded in its own batch");
        assert_eq!(summary["rejected"], 0);
        assert_eq!(summary["failed"], 0);
        assert_eq!(summary["rejections"], serde_json::json!([]));
    }
    let a = sqlite.state().await;
    let b = postgres.state().await;
    assert_eq!(a, b);
    assert_eq!(a.rows("dm_messages").len(), 4);
    // Again: what was applied is a duplicate; what lost in its batch was never applied, and
    // is stale against the rows.
    let (code, again, _) = mirrorctl(&sqlite.url, &["apply", EVENTS]);
    assert_eq!(code, 0);
    assert_eq!(
        (
            again["applied"].clone(),
            again["duplicates"].clone(),
            again["stale"].clone()
        ),
        (0.into(), 11.into(), 4.into())
    );
}

#[tokio::test]
async fn apply_exits_2_and_lists_each_rejection_when_records_are_rejected() {
    let mirror = Mirror::sqlite().await;
    let (code, summary, stderr) = mirrorctl(&mirror.url, &["apply", &format!("{EVENTS}/bad")]);
    assert_eq!(code, 2, "{stderr}");
    // mirrorctl takes every family, so the record a dm-message function calls misrouted is
    // applied here, beside the one good message.
    assert_eq!(summary["applied"], 2);
    assert_eq!(summary["rejected"], 11);
    let rejections = summary["rejections"].as_array().unwrap();
    assert_eq!(summary["rejected"], rejections.len());
    assert!(rejections
        .iter()
        .all(|r| r["messageId"].as_str().unwrap().starts_with("bad-")
            && !r["reason"].as_str().unwrap().is_empty()));
    assert!(
        !stderr.contains("before\u{0}after") && !stderr.contains("Hi! Are we"),
        "no bodies in the logs"
    );
}

#[tokio::test]
async fn apply_exits_1_with_every_record_failed_when_the_database_is_unreachable() {
    let (code, summary, stderr) =
        mirrorctl("postgres://postgres@127.0.0.1:1/test", &["apply", EVENTS]);
    assert_eq!(code, 1);
    assert_eq!(summary["failed"], 15, "{summary}");
    assert!(stderr.contains("cannot open the mirror"), "{stderr}");
}

#[tokio::test]
async fn apply_takes_single_envelopes_and_reports_unreadable_paths() {
    let mirror = Mirror::postgres().await;
    let (code, summary, _) = mirrorctl(
        &mirror.url,
        &[
            "apply",
            &format!("{EVENTS}/envelopes/follow-edge-cloudevent.json"),
        ],
    );
    assert_eq!((code, summary["applied"].clone()), (0, Value::from(1)));
    assert_eq!(
        mirror.row("follow_edges", &["u9", "u1"]).await["edge_type"],
        "follow"
    );
    let (code, summary, _) = mirrorctl(&mirror.url, &["apply", "/no/such/file.json"]);
    assert_eq!(code, 1);
    assert!(summary["failures"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("/no/such/file.json"));
}

#[tokio::test]
async fn migrate_creates_the_schema_on_a_new_sqlite_file() {
    let path = std::env::temp_dir().join(format!("mirrorctl-migrate-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let url = format!("sqlite://{}", path.display());
    let (code, _, stderr) = mirrorctl(&url, &["migrate"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, tables, _) = mirrorctl(&url, &["dump"]);
    assert_eq!(code, 0);
    for table in ["dm_conversations", "dm_messages", "follow_edges"] {
        assert_eq!(
            tables[table],
            serde_json::json!([]),
            "{table} exists and is empty"
        );
    }
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn prune_forgets_old_idempotency_keys_without_letting_old_events_back_in() {
    for mirror in [Mirror::sqlite().await, Mirror::postgres().await] {
        let (code, _, _) = mirrorctl(&mirror.url, &["apply", EVENTS]);
        assert_eq!(code, 0);
        let (code, kept, _) = mirrorctl(&mirror.url, &["prune", "--older-than", "1d"]);
        assert_eq!(
            (code, kept["pruned"].clone()),
            (0, 0.into()),
            "nothing is a day old"
        );
        let (code, pruned, _) = mirrorctl(&mirror.url, &["prune", "--older-than", "0s"]);
        assert_eq!((code, pruned["pruned"].clone()), (0, 11.into()));
        let before = mirror.state().await;
        let (code, again, _) = mirrorctl(&mirror.url, &["apply", EVENTS]);
        assert_eq!(code, 0);
        assert_eq!(
            (again["applied"].clone(), again["duplicates"].clone()),
            (0.into(), 11.into()),
            "equal rank: still duplicates"
        );
        assert_eq!(mirror.state().await, before);
        let (code, _, stderr) = mirrorctl(&mirror.url, &["prune", "--older-than", "soon"]);
        assert_eq!(code, 1);
        assert!(stderr.contains("--older-than"), "{stderr}");
    }
}

fn follow_body(i: usize) -> String {
    serde_json::json!({"eventType": "follow.edge.created", "occurredAt": "2025-01-01T00:00:00Z",
                       "payload": {"userId": format!("u{i}"), "targetId": "t", "createdAt": "2025-01-01T00:00:00Z"}})
    .to_string()
}

/// `apply FILE` exits 2 with `applied` records applied and the one record `rejected`.
fn applied_and_rejected(mirror: &Mirror, file: &std::path::Path, applied: u64, rejected: &str) {
    let (code, summary, stderr) = mirrorctl(&mirror.url, &["apply", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        (summary["applied"].as_u64(), summary["rejected"].as_u64()),
        (Some(applied), Some(1)),
        "{summary}"
    );
    assert_eq!(summary["rejections"][0]["messageId"], rejected);
}

#[tokio::test]
async fn each_record_of_a_records_file_stands_alone_and_a_malformed_one_is_rejected_by_itself() {
    let mirror = Mirror::sqlite().await;
    let dir = std::env::temp_dir().join(format!("mirrorctl-records-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Three valid records and one whose body is a number.
    let mut records: Vec<Value> = (0..3)
        .map(|i| serde_json::json!({"messageId": format!("ok{i}"), "body": follow_body(i)}))
        .collect();
    records.insert(1, serde_json::json!({"messageId": "bad", "body": 5}));
    let file = dir.join("four.json");
    std::fs::write(&file, serde_json::json!({ "Records": records }).to_string()).unwrap();
    applied_and_rejected(&mirror, &file, 3, "bad");

    // 2,500 records, one of them with a lone surrogate escape in its body.
    let mut text = String::from("{\"Records\": [");
    for i in 0..2500 {
        if i > 0 {
            text.push(',');
        }
        let body = if i == 1234 {
            "\"{\\\"eventType\\\": \\\"\\ud800\\\"}\"".to_string()
        } else {
            serde_json::to_string(&follow_body(10 + i)).unwrap()
        };
        text.push_str(&format!("{{\"messageId\": \"m{i}\", \"body\": {body}}}"));
    }
    text.push_str("]}");
    let file = dir.join("many.json");
    std::fs::write(&file, text).unwrap();
    applied_and_rejected(&mirror, &file, 2499, "m1234");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn settings_out_of_range_stop_mirrorctl_with_the_variable_and_its_range_never_a_panic() {
    for (variable, value) in [
        ("MIRROR_MAX_FUTURE_SKEW", "100000000000000"),
        ("MIRROR_MAX_FUTURE_SKEW", "5124095576030432h"),
        ("MIRROR_CHUNK_SIZE", "0"),
        ("MIRROR_MAX_CONNECTIONS", "100000"),
        ("MIRROR_DB_TIMEOUT", "1ms"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_mirrorctl"))
            .args(["apply", &format!("{EVENTS}/envelopes")])
            .env("DATABASE_URL", "sqlite::memory:")
            .env(variable, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{variable}={value}: {stderr}"
        );
        assert!(
            stderr.contains(variable) && stderr.contains("expected"),
            "{stderr}"
        );
    }
    for age in ["99999999999999999d", "9223372036854775807s"] {
        let output = Command::new(env!("CARGO_BIN_EXE_mirrorctl"))
            .args(["prune", "--older-than", age])
            .env("DATABASE_URL", "sqlite::memory:")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{age}: {stderr}");
        assert!(stderr.contains("--older-than"), "{stderr}");
    }
}

#[tokio::test]
async fn dump_is_identical_on_both_stores_whatever_numbers_media_holds() {
    let dir = std::env::temp_dir().join(format!("mirrorctl-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let media = [
        r#"{"duration": -0.0}"#,
        r#"{"big": 1.5e300, "small": 1e-7, "tiny": 5e-324, "max": 1.7976931348623157e308}"#,
        r#"{"count": 9007199254740991, "negative": -9007199254740991, "ratio": 4.50}"#,
        r#"[0.1, 1E30, 333333333.33333329, -1e-7, 100, 1e21, 1e20]"#,
        r#"{"nested": {"b": [1.0, {"a": -0}], "a": "\u00e9\ud83d\ude00"}}"#,
    ];
    let lines: Vec<String> = media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                r#"{{"eventType": "dm.message.created", "occurredAt": "2025-01-01T00:00:00Z", "payload": {{"conversationId": "c", "messageId": "m{i}", "authorId": "u", "media": {m}, "createdAt": "2025-01-01T00:00:0{i}Z"}}}}"#
            )
        })
        .collect();
    let file = dir.join("media.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let sqlite = Mirror::sqlite().await;
    let postgres = Mirror::postgres().await;
    let mut dumps = Vec::new();
    for mirror in [&sqlite, &postgres] {
        let (code, summary, stderr) = mirrorctl(&mirror.url, &["apply", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{summary} {stderr}");
        assert_eq!(summary["applied"], media.len(), "{summary}");
        let output = Command::new(env!("CARGO_BIN_EXE_mirrorctl"))
            .arg("dump")
            .env("DATABASE_URL", &mirror.url)
            .output()
            .unwrap();
        let dump: Value = serde_json::from_slice(&output.stdout).unwrap();
        // Bookkeeping (mirrored_at) differs by design.
        let rows: Vec<Value> = dump["dm_messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| serde_json::json!([r["message_id"], r["media"]]))
            .collect();
        dumps.push(serde_json::to_string(&rows).unwrap());
    }
    assert_eq!(
        dumps[0], dumps[1],
        "dump differs between SQLite and PostgreSQL"
    );
    assert!(dumps[0].contains(r#"{"duration":0}"#), "{}", dumps[0]);

    // What each store keeps is the canonical text that was hashed: SQLite the text itself,
    // PostgreSQL's jsonb the same values.
    let canonical: Vec<String> = media
        .iter()
        .map(|m| {
            mirror_tests::realtime_mirror::event::canonical_json(&serde_json::from_str(m).unwrap())
        })
        .collect();
    let mirror_tests::realtime_mirror::Store::Sqlite(pool) = sqlite.store() else {
        unreachable!()
    };
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT media FROM dm_messages ORDER BY message_id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(stored, canonical);
    assert_eq!(stored[0], r#"{"duration":0}"#);
    assert_eq!(
        stored[1],
        r#"{"big":1.5e+300,"max":1.7976931348623157e+308,"small":1e-7,"tiny":5e-324}"#
    );
    let mirror_tests::realtime_mirror::Store::Postgres(pool, _) = postgres.store() else {
        unreachable!()
    };
    for (i, text) in canonical.iter().enumerate() {
        let equal: bool =
            sqlx::query_scalar("SELECT media = $1::jsonb FROM dm_messages WHERE message_id = $2")
                .bind(text)
                .bind(format!("m{i}"))
                .fetch_one(pool)
                .await
                .unwrap();
        assert!(equal, "PostgreSQL keeps other values than {text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn repair_prints_what_it_changed_and_a_second_run_changes_nothing() {
    let mirror = Mirror::sqlite().await;
    let (code, _, stderr) = mirrorctl(&mirror.url, &["apply", EVENTS]);
    assert_eq!(code, 0, "{stderr}");
    let right = mirror.state().await;
    mirror
        .execute("", "UPDATE dm_conversations SET last_message_preview = 'wrong' WHERE last_message_id IS NOT NULL")
        .await;
    let (code, first, stderr) = mirrorctl(&mirror.url, &["repair"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(first["conversationsChanged"].as_u64() > Some(0), "{first}");
    assert_eq!(mirror.state().await, right);
    let (code, second, _) = mirrorctl(&mirror.url, &["repair"]);
    assert_eq!(code, 0);
    assert_eq!(
        (
            second["conversationsChanged"].as_u64(),
            second["messagesChanged"].as_u64()
        ),
        (Some(0), Some(0)),
        "{second}"
    );
    assert_eq!(second["conversations"], first["conversations"]);
}
