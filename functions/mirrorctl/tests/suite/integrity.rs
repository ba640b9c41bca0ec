//! Integrity at size, through the binary: streaming `apply` in bounded memory, bounded
//! summaries, `check` (self and against a source snapshot) finding exactly what was made
//! wrong, `repair` making it right, and `backfill` converging however it is run.
//!
//! Peak memory is the child's own peak RSS, as it reports it (`MIRRORCTL_REPORT_PEAK_RSS`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mirror_tests::Mirror;
use serde_json::{json, Value};

const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events");

/// What a run printed, its exit code and its own peak RSS in KiB.
pub(super) struct Run {
    pub(super) code: i32,
    pub(super) json: Value,
    pub(super) stderr: String,
    /// None when it stopped before running (a usage error).
    pub(super) peak_kib: Option<u64>,
}

pub(super) fn command(database_url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirrorctl"));
    command
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("MIRROR_DB_TIMEOUT", "2s")
        .env("MIRRORCTL_REPORT_PEAK_RSS", "1")
        .env("RUST_LOG", "warn");
    command
}

/// Runs mirrorctl. Its peak RSS is the one it reports itself (`VmHWM`): wait4's `ru_maxrss`
/// would count this test process too, whose memory the child starts from when spawned.
pub(super) fn run(database_url: &str, args: &[&str]) -> Run {
    let output = command(database_url, args)
        .output()
        .expect("mirrorctl runs");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let peak_kib = stderr
        .lines()
        .find_map(|l| l.strip_prefix("mirrorctl: peak RSS "))
        .and_then(|l| l.strip_suffix(" KiB"))
        .and_then(|n| n.parse().ok());
    Run {
        code: output.status.code().unwrap_or(-1),
        json: serde_json::from_str(String::from_utf8(output.stdout).unwrap().trim())
            .unwrap_or(Value::Null),
        stderr,
        peak_kib,
    }
}

pub(super) fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mirrorctl-integrity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

pub(super) fn write_lines(path: &Path, lines: impl Iterator<Item = String>) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for line in lines {
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
}

pub(super) fn at(seconds: u64) -> String {
    chrono::DateTime::from_timestamp(1_700_000_000 + seconds as i64, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A follow edge event, the cheapest row to write.
pub(super) fn follow_event(i: u64) -> String {
    json!({"eventType": "follow.edge.created", "occurredAt": at(i),
           "payload": {"userId": format!("u{i}"), "targetId": format!("t{}", i % 1000), "createdAt": at(i)}})
    .to_string()
}

/// Document `i` of a generated source: every fourth a conversation, two messages in it,
/// then a follow edge; `edit` > 0 gives a newer version with other content.
pub(super) fn document(i: u64, edit: u64) -> (String, Value) {
    let base = i - i % 4;
    let version = at(i + edit * 1_000_000);
    match i % 4 {
        0 => (
            "dm.conversation".into(),
            json!({"conversationId": format!("c{i}"), "ownerId": format!("u{}", i % 97),
               "participantIds": [format!("u{}", i % 97), format!("u{}", (i + 1) % 97 + 100)],
               "createdAt": at(i), "updatedAt": version}),
        ),
        1 | 2 => (
            "dm.message".into(),
            json!({"conversationId": format!("c{base}"), "messageId": format!("m{i}"),
                   "authorId": format!("u{}", base % 97), "body": format!("message {i} edit {edit}"),
                   "createdAt": at(i), "updatedAt": version}),
        ),
        _ => (
            "follow.edge".into(),
            json!({"userId": format!("u{i}"), "targetId": format!("u{}", i + 1),
               "edgeType": if edit == 0 { "follow" } else { "mute" }, "createdAt": at(i), "updatedAt": version}),
        ),
    }
}

pub(super) fn snapshot_line(i: u64, edit: u64) -> String {
    let (family, document) = document(i, edit);
    json!({"family": family, "document": document}).to_string()
}

pub(super) fn live_event(i: u64, edit: u64) -> String {
    let (family, document) = document(i, edit);
    json!({"eventType": format!("{family}.updated"), "occurredAt": document["updatedAt"], "payload": document})
        .to_string()
}

pub(super) fn family_of(i: u64) -> &'static str {
    match i % 4 {
        0 => "dm.conversation",
        1 | 2 => "dm.message",
        _ => "follow.edge",
    }
}

#[tokio::test]
async fn apply_streams_a_million_events_in_no_more_memory_than_ten_thousand() {
    let mirror = Mirror::postgres().await;
    let small = temp("apply-10k.jsonl");
    let large = temp("apply-1m.jsonl");
    write_lines(&small, (0..10_000).map(follow_event));
    write_lines(&large, (10_000..1_010_000).map(follow_event));
    let first = run(&mirror.url, &["apply", small.to_str().unwrap()]);
    assert_eq!(
        (first.code, first.json["applied"].clone()),
        (0, json!(10_000)),
        "{}",
        first.stderr
    );
    let second = run(&mirror.url, &["apply", large.to_str().unwrap()]);
    assert_eq!(
        (second.code, second.json["applied"].clone()),
        (0, json!(1_000_000)),
        "{}",
        second.stderr
    );
    let (small_kib, large_kib) = (first.peak_kib.unwrap(), second.peak_kib.unwrap());
    eprintln!("peak RSS: 10,000 events {small_kib} KiB, 1,000,000 events {large_kib} KiB");
    // The same windows, whatever the length: equal up to allocator noise (4 MiB).
    assert!(
        large_kib <= small_kib + 4096,
        "1,000,000 events peaked at {large_kib} KiB, 10,000 at {small_kib} KiB"
    );
    std::fs::remove_file(small).unwrap();
    std::fs::remove_file(large).unwrap();
}

#[tokio::test]
async fn apply_summary_groups_failures_by_reason_and_details_hold_every_record() {
    let events = temp("unreachable.jsonl");
    write_lines(&events, (0..50_000).map(follow_event));
    let details = temp("unreachable-details.jsonl");
    let run = run(
        "postgres://postgres@127.0.0.1:1/test",
        &[
            "apply",
            events.to_str().unwrap(),
            "--details",
            details.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 1);
    let summary = &run.json;
    assert_eq!(summary["failed"], 50_000, "{summary}");
    let reasons = summary["failuresByReason"].as_object().unwrap();
    assert_eq!(reasons.len(), 1, "{summary}");
    assert_eq!(reasons.values().next().unwrap(), 50_000);
    assert_eq!(
        summary["failures"].as_array().unwrap().len(),
        realtime_mirror::batch::LISTED_PER_REASON
    );
    assert_eq!(
        summary["notListed"]["failures"],
        50_000 - realtime_mirror::batch::LISTED_PER_REASON
    );
    assert!(
        summary.to_string().len() < 4_000,
        "{} bytes",
        summary.to_string().len()
    );
    let lines: Vec<Value> = std::fs::read_to_string(&details)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 50_000);
    assert!(lines.iter().all(|l| l["outcome"] == "failed"));
    assert_eq!(lines[7]["messageId"], format!("{}:8", events.display()));
    std::fs::remove_file(events).unwrap();
    std::fs::remove_file(details).unwrap();
}

#[test]
fn an_unsupported_url_scheme_is_named_as_such_and_its_password_never_printed() {
    let run = run(
        "mysql://admin:hunter2@db.example.com/app",
        &["apply", EVENTS],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("the scheme \"mysql\" is not supported"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2") && !run.json.to_string().contains("hunter2"));
    assert!(
        !run.stderr.contains("lookup") && !run.stderr.contains("resolve"),
        "{}",
        run.stderr
    );
}

/// Makes the mirror wrong in every way the self-check knows, on events/; returns what each
/// kind should find.
async fn make_wrong(mirror: &Mirror) -> Vec<(&'static str, Vec<&'static str>)> {
    let (code, stderr) = {
        let r = run(&mirror.url, &["apply", EVENTS]);
        (r.code, r.stderr)
    };
    assert_eq!(code, 0, "{stderr}");
    let extra = temp(&format!("wrong-{}.jsonl", mirror.is_postgres()));
    write_lines(
        &extra,
        [
            json!({"eventType": "follow.edge.created", "occurredAt": "2025-10-09T00:00:00Z",
                   "payload": {"userId": "u5", "targetId": "u5", "createdAt": "2025-10-09T00:00:00Z"}}),
            json!({"eventType": "dm.conversation.deleted", "occurredAt": "2025-10-09T00:00:00Z", "entityId": "c2"}),
            json!({"eventType": "dm.message.created", "occurredAt": "2025-10-08T11:00:00Z",
                   "payload": {"conversationId": "c2", "messageId": "m7", "authorId": "u3", "body": "early", "createdAt": "2025-10-08T11:00:00Z"}}),
        ]
        .into_iter()
        .map(|v| v.to_string()),
    );
    let r = run(&mirror.url, &["apply", extra.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Derived columns gone wrong: c1's preview, m1's recipient, c3's last message pointing
    // at c1's deleted m3 (c3 has no messages of its own: not dangling, but wrong).
    mirror
        .execute(
            "UPDATE dm_conversations SET last_message_preview = 'wrong' WHERE conversation_id = 'c1';
             UPDATE dm_messages SET recipient_id = 'u9' WHERE conversation_id = 'c1' AND message_id = 'm1';
             UPDATE dm_conversations SET last_message_id = 'm3' WHERE conversation_id = 'c9'",
            "UPDATE dm_conversations SET last_message_preview = 'wrong' WHERE conversation_id = 'c1';
             UPDATE dm_messages SET recipient_id = 'u9' WHERE conversation_id = 'c1' AND message_id = 'm1';
             UPDATE dm_conversations SET last_message_id = 'm3' WHERE conversation_id = 'c9'",
        )
        .await;
    vec![
        ("lastMessageWrong", vec!["c1", "c9"]),
        ("recipientWrong", vec!["c1/m1"]),
        ("danglingLastMessage", vec!["c9/m3"]),
        ("oldStub", vec!["c9"]),
        ("liveMessageOfDeletedConversation", vec!["c2/m7"]),
        ("selfFollow", vec!["u5/u5"]),
    ]
}

#[tokio::test]
async fn self_check_finds_every_kind_and_repair_from_its_details_makes_the_mirror_right() {
    for mirror in [Mirror::sqlite().await, Mirror::postgres().await] {
        let expected = make_wrong(&mirror).await;
        let details = temp(&format!("self-{}.jsonl", mirror.is_postgres()));
        let check = run(
            &mirror.url,
            &[
                "check",
                "--stub-age",
                "0s",
                "--details",
                details.to_str().unwrap(),
            ],
        );
        assert_eq!(check.code, 3, "{}", check.stderr);
        for (kind, ids) in &expected {
            assert_eq!(
                check.json["found"][kind]["sample"],
                json!(ids),
                "{kind}: {}",
                check.json
            );
            assert_eq!(check.json["found"][kind]["count"], ids.len(), "{kind}");
        }
        assert_eq!(check.json["inconsistent"], 7);
        assert_eq!(check.json["repairable"], 4);
        assert_eq!(
            std::fs::read_to_string(&details).unwrap().lines().count(),
            7
        );
        // The stub is young by default.
        let young = run(&mirror.url, &["check"]);
        assert_eq!(young.json["found"]["oldStub"]["count"], 0);

        let repair = run(
            &mirror.url,
            &["repair", "--from-details", details.to_str().unwrap()],
        );
        assert_eq!(repair.code, 0, "{}", repair.stderr);
        assert_eq!(
            repair.json["conversations"], 2,
            "c1 and c9: {}",
            repair.json
        );
        assert_eq!(repair.json["conversationsChanged"], 2);
        assert_eq!(repair.json["messagesChanged"], 1);
        let after = run(&mirror.url, &["check", "--stub-age", "0s"]);
        assert_eq!(after.json["repairable"], 0, "{}", after.json);
        assert_eq!(
            after.json["inconsistent"], 3,
            "what only the source can fix stays: {}",
            after.json
        );
        let again = run(
            &mirror.url,
            &["repair", "--from-details", details.to_str().unwrap()],
        );
        assert_eq!(again.json["conversationsChanged"], 0);
        // A file that is not check's details is refused, naming the line.
        let bad = temp("not-details.jsonl");
        std::fs::write(
            &bad,
            "{\"kind\": \"lastMessageWrong\", \"conversationId\": \"c1\"}\nnot json\n",
        )
        .unwrap();
        let refused = run(
            &mirror.url,
            &["repair", "--from-details", bad.to_str().unwrap()],
        );
        assert_eq!(refused.code, 1);
        assert!(refused.stderr.contains("line 2"), "{}", refused.stderr);
    }
}

/// The `mirror-check` binary run once outside Lambda: (its EMF document, its report).
fn mirror_check(database_url: &str, env: &[(&str, &str)]) -> (Value, Value) {
    let output = Command::new(mirror_tests::workspace_binary("mirror-check"))
        .env("DATABASE_URL", database_url)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines[0].clone(), lines[1].clone())
}

#[tokio::test]
async fn the_scheduled_check_publishes_a_count_per_kind_as_emf_metrics() {
    let mirror = Mirror::sqlite().await;
    make_wrong(&mirror).await;
    let (emf, report) = &mirror_check(
        &mirror.url,
        &[
            ("MIRROR_CHECK_STUB_AGE", "0s"),
            ("MIRROR_METRICS_NAMESPACE", "RealtimeMirror/test-stack"),
        ],
    );
    let directive = &emf["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "RealtimeMirror/test-stack");
    assert_eq!(directive["Dimensions"], json!([["Function"]]));
    assert_eq!(emf["Function"], "mirror-check");
    for metric in directive["Metrics"].as_array().unwrap() {
        let name = metric["Name"].as_str().unwrap();
        assert!(emf[name].is_u64(), "{name} has a value");
    }
    assert_eq!(
        (emf["inconsistent"].clone(), emf["repairable"].clone()),
        (json!(7), json!(4))
    );
    assert_eq!(
        (emf["lastMessageWrong"].clone(), emf["selfFollow"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(report["inconsistent"], 7);
}

/// The applied-key ledger's upkeep (docs/contract.md): the scheduled check deletes the keys older
/// than MIRROR_APPLIED_KEYS_RETENTION — more than one prune transaction's worth here — and
/// keeps the newer ones; `off` keeps every key.
#[tokio::test]
async fn the_scheduled_check_prunes_applied_keys_older_than_the_retention_and_keeps_the_rest() {
    const OLD: i64 = 45_000;
    for mirror in [Mirror::sqlite().await, Mirror::postgres().await] {
        let events: Vec<Value> = (0..30)
            .map(|i| serde_json::from_str(&follow_event(i)).unwrap())
            .collect();
        assert_eq!(mirror.apply(&events).await.summary().applied, 30);
        // Keys applied 30 days ago, as a long-running deployment has them.
        mirror
            .execute(
                &format!(
                    "INSERT INTO mirror_applied_events (idempotency_key, event_type, entity_id, event_id, applied_at)
                     SELECT 'old-' || i, 'follow.edge.created', 'u/v', 'e', now() - interval '30 days'
                     FROM generate_series(1, {OLD}) AS i"
                ),
                &format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {OLD})
                     INSERT INTO mirror_applied_events (idempotency_key, event_type, entity_id, event_id, applied_at)
                     SELECT 'old-' || i, 'follow.edge.created', 'u/v', 'e',
                            strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-30 days') FROM n"
                ),
            )
            .await;
        let check =
            |retention| mirror_check(&mirror.url, &[("MIRROR_APPLIED_KEYS_RETENTION", retention)]);
        let (_, report) = check("off");
        assert_eq!(report["appliedKeysPruned"], Value::Null);
        assert_eq!(mirror.applied_keys().await, OLD as u64 + 30);
        let (emf, report) = check("14d");
        assert_eq!(report["appliedKeysPruned"], OLD, "{report}");
        assert_eq!(emf["applied_keys_pruned"], OLD);
        assert_eq!(
            mirror.applied_keys().await,
            30,
            "the keys of the last 14 days stay"
        );
    }
}

#[tokio::test]
async fn repair_racing_live_writers_converges_to_the_rows_of_one_clean_application() {
    // Messages of 40 conversations and the conversations' own changes of participants: the
    // writers and repair lock the same conversations over and over.
    let events = temp("race.jsonl");
    write_lines(
        &events,
        (0..20_000u64).map(|i| {
            let conversation = format!("c{}", i % 40);
            if i % 10 == 0 {
                json!({"eventType": "dm.conversation.updated", "occurredAt": at(i),
                       "payload": {"conversationId": conversation, "ownerId": "u1",
                                   "participantIds": ["u1", format!("u{}", 2 + (i / 10) % 3)], "updatedAt": at(i)}})
            } else {
                json!({"eventType": "dm.message.created", "occurredAt": at(i),
                       "payload": {"conversationId": conversation, "messageId": format!("m{i}"),
                                   "authorId": format!("u{}", 1 + i % 4), "body": format!("body {i}"), "createdAt": at(i)}})
            }
            .to_string()
        }),
    );
    let path = events.to_str().unwrap();
    let clean = Mirror::postgres().await;
    assert_eq!(run(&clean.url, &["apply", path]).code, 0);

    let raced = Mirror::postgres().await;
    let mut writer = command(&raced.url, &["apply", path])
        .env("MIRROR_CHUNK_SIZE", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut repairs = 0;
    while writer.try_wait().unwrap().is_none() {
        let r = run(&raced.url, &["repair"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        repairs += 1;
    }
    assert!(writer.wait().unwrap().success());
    assert!(
        repairs >= 2,
        "repair ran {repairs} times while the writer ran"
    );
    let check = run(&raced.url, &["check"]);
    assert_eq!(check.json["inconsistent"], 0, "{}", check.json);
    assert_eq!(
        raced.state().await.without_bookkeeping(),
        clean.state().await.without_bookkeeping()
    );
    std::fs::remove_file(events).unwrap();
}
