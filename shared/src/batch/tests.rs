//! The batch's rules, each by its name.

use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::config::Config;
use crate::rejection::Rejection;
use crate::store::Store;
use crate::timestamp::Timestamp;

#[test]
fn the_queue_keeps_failures_and_rejections_not_yet_dead_lettered_and_nothing_else() {
    let outcome = BatchOutcome {
        records: vec![
            RecordOutcome::new("applied", Outcome::Applied),
            RecordOutcome::new("duplicate", Outcome::Duplicate),
            RecordOutcome::new("stale", Outcome::Stale),
            RecordOutcome::new("failed", Outcome::Failed("database unreachable".into())),
            RecordOutcome::new("rejected", Outcome::Rejected(Rejection::Empty)),
            RecordOutcome::new("dead-lettered", Outcome::Rejected(Rejection::Empty)),
        ],
        ..BatchOutcome::default()
    };
    let dead_lettered: HashSet<String> = ["dead-lettered".to_string()].into();
    let kept: Vec<&str> = (outcome.records.iter())
        .filter(|r| r.stays_on_queue(&dead_lettered))
        .map(|r| r.message_id.as_str())
        .collect();
    assert_eq!(kept, ["failed", "rejected"]);
    assert_eq!(
        outcome.counts(),
        Counts {
            applied: 1,
            duplicate: 1,
            stale: 1,
            rejected: 2,
            failed: 1
        }
    );
    assert!(outcome.has_rejections());
}

#[test]
fn a_summary_counts_every_record_and_lists_a_bounded_few_per_reason() {
    let mut outcome = BatchOutcome::default();
    for i in 0..100_000 {
        outcome.records.push(RecordOutcome::new(
            format!("f{i}"),
            Outcome::Failed(format!("database unreachable ({})", i % 60)),
        ));
        outcome.records.push(RecordOutcome::new(
            format!("r{i}"),
            Outcome::Rejected(if i % 2 == 0 {
                Rejection::Empty
            } else {
                Rejection::NotJson(format!("line {i} is not UTF-8"))
            }),
        ));
    }
    outcome
        .records
        .push(RecordOutcome::new("ok", Outcome::Applied));
    let s = outcome.summary();
    assert_eq!((s.applied, s.rejected, s.failed), (1, 100_000, 100_000));
    assert_eq!(
        s.rejections_by_kind,
        BTreeMap::from([("empty".into(), 50_000), ("not JSON".into(), 50_000)])
    );
    let ids: Vec<&str> = s.rejections.iter().map(|p| p.message_id.as_str()).collect();
    assert_eq!(
        ids,
        ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"]
    );
    assert_eq!(s.rejections[1].reason, "not JSON: line 1 is not UTF-8");
    // 60 reasons: 50 counted apart, 10 together.
    assert_eq!(s.failures_by_reason.len(), REASONS_MAX + 1);
    // Reasons 50..59 come 1,666 times each (100,000 = 60 × 1,666 + 40).
    assert_eq!(s.failures_by_reason[OTHER_REASONS], 16_660);
    assert_eq!(s.failures_by_reason.values().sum::<usize>(), 100_000);
    assert_eq!(s.failures.len(), LISTED_MAX);
    assert_eq!(s.not_listed.failures + s.failures.len(), 100_000);
    assert_eq!(s.not_listed.rejections + s.rejections.len(), 100_000);
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.len() < 20_000, "{} bytes", json.len());
}

#[tokio::test]
async fn only_a_deadline_in_the_future_is_used_less_the_margin() {
    let options = "sqlite::memory:".parse().unwrap();
    let processor = Processor::new(Store::sqlite(options).await.unwrap(), Config::default());
    let now_ms = Timestamp::now().as_datetime().timestamp_millis() as u64;
    assert_eq!(processor.deadline(0), None, "no Lambda context");
    assert_eq!(processor.deadline(600_000), None, "cargo-lambda's emulator");
    assert_eq!(processor.deadline(now_ms - 1), None, "already past");
    let at = processor
        .deadline(now_ms + 10_000)
        .expect("a deadline 10 s ahead");
    let left = at - tokio::time::Instant::now();
    // 10 s less the default 2 s margin (and the few ms this test took).
    assert!(left <= std::time::Duration::from_secs(8), "{left:?}");
    assert!(left > std::time::Duration::from_secs(7), "{left:?}");
}
