//! `check --source` and `backfill` through the binary, at size: exactly the injected drift
//! in bounded memory, the cut-over gate, and backfills that converge however they are run.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use mirror_tests::Mirror;
use serde_json::json;

use super::integrity::{command, family_of, live_event, run, snapshot_line, temp, write_lines};

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
