//! Integrity at size, through the binary: streaming `apply` in bounded memory, bounded
//! summaries, `check` (self and against a source snapshot) finding exactly what was made
//! wrong, `repair` making it right, and `backfill` converging however it is run.
//!
//! Peak memory is the child's own peak RSS, as it reports it (`MIRRORCTL_REPORT_PEAK_RSS`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mirror_tests::Mirror;
use serde_json::{json, Value};

const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events");

/// What a run printed, its exit code and its own peak RSS in KiB.
struct Run {
    code: i32,
    json: Value,
    stderr: String,
    /// None when it stopped before running (a usage error).
    peak_kib: Option<u64>,
}

fn command(database_url: &str, args: &[&str]) -> Command {
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
fn run(database_url: &str, args: &[&str]) -> Run {
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

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mirrorctl-integrity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for line in lines {
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
}

fn at(seconds: u64) -> String {
    chrono::DateTime::from_timestamp(1_700_000_000 + seconds as i64, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A follow edge event, the cheapest row to write.
fn follow_event(i: u64) -> String {
    json!({"eventType": "follow.edge.created", "occurredAt": at(i),
           "payload": {"userId": format!("u{i}"), "targetId": format!("t{}", i % 1000), "createdAt": at(i)}})
    .to_string()
}

/// Document `i` of a generated source: every fourth a conversation, two messages in it,
/// then a follow edge; `edit` > 0 gives a newer version with other content.
fn document(i: u64, edit: u64) -> (String, Value) {
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

fn snapshot_line(i: u64, edit: u64) -> String {
    let (family, document) = document(i, edit);
    json!({"family": family, "document": document}).to_string()
}

fn live_event(i: u64, edit: u64) -> String {
    let (family, document) = document(i, edit);
    json!({"eventType": format!("{family}.updated"), "occurredAt": document["updatedAt"], "payload": document})
        .to_string()
}

fn family_of(i: u64) -> &'static str {
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

/// Injects drift of known size into a generated snapshot of `n` documents and checks that
/// `check --source` reports exactly it; returns the check's peak RSS.
async fn drift_is_reported_exactly(mirror: &Mirror, n: u64) -> u64 {
    let base = temp(&format!("base-{n}-{}.jsonl", mirror.is_postgres()));
    write_lines(&base, (0..n).map(|i| snapshot_line(i, 0)));
    let backfill = run(
        &mirror.url,
        &["backfill", "--source", base.to_str().unwrap()],
    );
    assert_eq!(
        (backfill.code, backfill.json["applied"].clone()),
        (0, json!(n)),
        "{}",
        backfill.stderr
    );

    // Live events newer than the snapshot: i ≡ 5 (mod 100), messages and follow edges only
    // (a newer conversation would also be newer, but keep each family's count simple).
    let newer: Vec<u64> = (0..n).filter(|i| i % 100 == 5 || i % 100 == 7).collect();
    let live = temp(&format!("live-{n}.jsonl"));
    write_lines(&live, newer.iter().map(|&i| live_event(i, 1)));
    let applied = run(&mirror.url, &["apply", live.to_str().unwrap()]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);

    // The source as checked: i ≡ 11 dropped (extra in SQL), i ≡ 22 edited to a newer
    // version (mismatched), and documents past n added (missing).
    let missing: Vec<u64> = (n..n + n / 50).collect();
    let source = temp(&format!("source-{n}.jsonl"));
    write_lines(
        &source,
        (0..n)
            .filter(|i| i % 100 != 11)
            .map(|i| snapshot_line(i, if i % 100 == 22 { 2 } else { 0 }))
            .chain(missing.iter().map(|&i| snapshot_line(i, 0))),
    );
    let details = temp(&format!("drift-{n}.jsonl"));
    let check = run(
        &mirror.url,
        &[
            "check",
            "--source",
            source.to_str().unwrap(),
            "--details",
            details.to_str().unwrap(),
        ],
    );
    assert_eq!(check.code, 3, "{}", check.stderr);
    let report = &check.json;
    let count = |pred: &dyn Fn(u64) -> bool, family: &str, ids: &mut dyn Iterator<Item = u64>| {
        ids.filter(|i| pred(*i) && family_of(*i) == family).count() as u64
    };
    for family in ["dm.conversation", "dm.message", "follow.edge"] {
        let f = &report["families"][family];
        let expect = |pred: &dyn Fn(u64) -> bool| count(pred, family, &mut (0..n));
        assert_eq!(
            f["extra"]["count"],
            expect(&|i| i % 100 == 11),
            "{family} extra: {f}"
        );
        assert_eq!(
            f["mismatched"]["count"],
            expect(&|i| i % 100 == 22),
            "{family} mismatched: {f}"
        );
        assert_eq!(
            f["mirrorNewer"]["count"],
            expect(&|i| i % 100 == 5 || i % 100 == 7),
            "{family} newer: {f}"
        );
        assert_eq!(
            f["missing"]["count"],
            count(&|_| true, family, &mut missing.iter().copied()),
            "{family} missing: {f}"
        );
        assert_eq!(
            f["matched"].as_u64().unwrap(),
            expect(&|i| ![5, 7, 11, 22].contains(&(i % 100))),
            "{family} matched: {f}"
        );
    }
    assert_eq!(
        report["families"]["dm.message"]["mismatchedFields"],
        json!({"body": n / 100, "updated_at": n / 100})
    );
    assert_eq!(
        report["families"]["follow.edge"]["mismatchedFields"],
        json!({})
    );
    let drift = report["drift"].as_u64().unwrap();
    assert_eq!(drift, n / 100 * 2 + n / 50);
    assert_eq!(report["alert"], true);
    assert_eq!(
        std::fs::read_to_string(&details).unwrap().lines().count() as u64,
        drift + newer.len() as u64
    );
    for path in [base, live, source, details] {
        std::fs::remove_file(path).unwrap();
    }
    check.peak_kib.expect("mirrorctl reports its peak RSS")
}

/// The bound `check --source` keeps to, stated in the README.
const CHECK_PEAK_KIB: u64 = 64 * 1024;

#[tokio::test]
async fn check_source_reports_exactly_the_injected_drift_in_bounded_memory() {
    let sqlite = Mirror::sqlite().await;
    drift_is_reported_exactly(&sqlite, 4_000).await;
    let postgres = Mirror::postgres().await;
    let peak_100k = drift_is_reported_exactly(&postgres, 100_000).await;
    // A million documents against the same mirror: 900,000 of them missing.
    let source = temp("million.jsonl");
    write_lines(&source, (0..1_000_000).map(|i| snapshot_line(i, 0)));
    let million = run(
        &postgres.url,
        &[
            "check",
            "--source",
            source.to_str().unwrap(),
            "--max-missing",
            "1000000",
            "--max-drift",
            "100%",
        ],
    );
    assert_eq!(million.code, 0, "{}", million.stderr);
    let missing: u64 = ["dm.conversation", "dm.message", "follow.edge"]
        .iter()
        .map(|f| {
            million.json["families"][f]["missing"]["count"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(missing, 900_000, "{}", million.json);
    let peak_1m = million.peak_kib.unwrap();
    eprintln!(
        "check --source peak RSS: 100,000 documents {peak_100k} KiB, 1,000,000 {peak_1m} KiB"
    );
    assert!(
        peak_100k < CHECK_PEAK_KIB && peak_1m < CHECK_PEAK_KIB,
        "{peak_100k} / {peak_1m} KiB"
    );
    std::fs::remove_file(source).unwrap();
}

#[tokio::test]
async fn check_source_gate_answers_the_cut_over_question() {
    let mirror = Mirror::sqlite().await;
    let source = temp("gate.jsonl");
    write_lines(&source, (0..2_000).map(|i| snapshot_line(i, 0)));
    let r = run(
        &mirror.url,
        &["backfill", "--source", source.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // With n source documents, n − 2,000 missing: 2 of 2,002 is within 0.1 %, 3 of 2,003 not.
    let gated = |n: u64| {
        write_lines(&source, (0..n).map(|i| snapshot_line(i, 0)));
        run(
            &mirror.url,
            &[
                "check",
                "--source",
                source.to_str().unwrap(),
                "--gate",
                "0.1%",
            ],
        )
    };
    let within = gated(2_002);
    assert_eq!(within.code, 0, "{}", within.json);
    assert_eq!(
        within.json["gate"],
        json!({"maxDrift": 0.001, "passed": true})
    );
    let over = gated(2_003);
    assert_eq!(over.code, 3);
    assert_eq!(over.json["gate"]["passed"], false);
    assert_eq!(over.json["alert"], false, "0.15 % is under the 0.5 % alert");
    let bad = run(
        &mirror.url,
        &[
            "check",
            "--source",
            source.to_str().unwrap(),
            "--max-drift",
            "lots",
        ],
    );
    assert_eq!(bad.code, 2, "clap's usage error");
    assert!(bad.stderr.contains("0.5%"), "{}", bad.stderr);
}

#[tokio::test]
async fn backfill_twice_and_interleaved_with_newer_live_events_converges() {
    let n = 3_000;
    let source = temp("converge-source.jsonl");
    write_lines(&source, (0..n).map(|i| snapshot_line(i, 0)));
    let live = temp("converge-live.jsonl");
    write_lines(
        &live,
        (0..n).filter(|i| i % 3 == 0).map(|i| live_event(i, 1)),
    );
    let (s, l) = (source.to_str().unwrap(), live.to_str().unwrap());
    let orders: [&[(&str, &str)]; 3] = [
        &[("backfill", s), ("apply", l)],
        &[("apply", l), ("backfill", s)],
        &[("backfill", s), ("apply", l), ("backfill", s)],
    ];
    let mut states = Vec::new();
    for (n_order, order) in orders.iter().enumerate() {
        for mirror in [Mirror::sqlite().await, Mirror::postgres().await] {
            for (verb, path) in order.iter() {
                let args: Vec<&str> = if *verb == "backfill" {
                    vec!["backfill", "--source", path]
                } else {
                    vec!["apply", path]
                };
                let r = run(&mirror.url, &args);
                assert_eq!(r.code, 0, "{verb}: {}", r.stderr);
            }
            let state = mirror.state().await.without_bookkeeping();
            states.push((n_order, mirror.is_postgres(), state));
        }
    }
    for (order, postgres, state) in &states[1..] {
        assert!(
            state == &states[0].2,
            "order {order} on {} differs",
            if *postgres { "PostgreSQL" } else { "SQLite" }
        );
    }
    // Newer live events won: every third document carries its edit.
    let messages = states[0].2.rows("dm_messages");
    let m3 = messages.iter().find(|r| r["message_id"] == "m1").unwrap();
    assert_eq!(m3["body"], "message 1 edit 0");
    let m2 = messages.iter().find(|r| r["message_id"] == "m6").unwrap();
    assert_eq!(m2["body"], "message 6 edit 1");
    // And a second backfill changes nothing.
    let mirror = Mirror::sqlite().await;
    run(&mirror.url, &["backfill", "--source", s]);
    let again = run(&mirror.url, &["backfill", "--source", s]);
    assert_eq!(
        (
            again.json["applied"].clone(),
            again.json["duplicates"].clone()
        ),
        (json!(0), json!(n))
    );
    assert!(mirror
        .rows("dm_messages")
        .await
        .iter()
        .all(|r| r["sync_source"] == "backfill"));
}

#[tokio::test]
async fn a_backfill_killed_halfway_and_resumed_gives_the_rows_of_one_clean_run() {
    let n = 40_000;
    let source = temp("resume.jsonl");
    write_lines(&source, (0..n).map(|i| snapshot_line(i, 0)));
    let path = source.to_str().unwrap();
    let clean = Mirror::postgres().await;
    assert_eq!(run(&clean.url, &["backfill", "--source", path]).code, 0);

    let killed = Mirror::postgres().await;
    let mut child = command(
        &killed.url,
        &["backfill", "--source", path, "--progress-every", "0"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Killed after its second progress line: some windows committed, the rest not.
    let mut resume = None;
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = 0;
    while let Some(Ok(line)) = lines.next() {
        if let Some((_, n)) = line.split_once("--resume-from ") {
            resume = Some(n.trim_end_matches(')').to_string());
            seen += 1;
            if seen == 2 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let resume = resume.expect("a progress line naming where to resume");
    let line: u64 = resume.parse().unwrap();
    assert!(line > 1 && line <= n, "resume at {line}");
    let rest = run(
        &killed.url,
        &["backfill", "--source", path, "--resume-from", &resume],
    );
    assert_eq!(rest.code, 0, "{}", rest.stderr);
    assert_eq!(
        killed.state().await.without_bookkeeping(),
        clean.state().await.without_bookkeeping()
    );
    std::fs::remove_file(source).unwrap();
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
