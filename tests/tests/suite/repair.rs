//! `repair` (the operator's `mirrorctl repair`): derived columns made wrong on purpose are
//! recomputed from the rows, a second run changes nothing, and `--conversation` touches only
//! what it names.

use mirror_tests::realtime_mirror::store::Repaired;
use mirror_tests::{conversation, derived_column_disagreements, message, on_both_stores, Mirror};

async fn sample(m: &Mirror) {
    let events = [
        conversation("c1", &["u1", "u2"], "2025-01-01T00:00:01Z"),
        message("c1", "m1", "u1", "first", "2025-01-01T00:00:02Z"),
        message("c1", "m2", "u2", "second", "2025-01-01T00:00:03Z"),
        conversation("c2", &["u3", "u4"], "2025-01-01T00:00:01Z"),
        message("c2", "m1", "u3", "third", "2025-01-01T00:00:04Z"),
        message("c3", "m1", "u5", "a stub's", "2025-01-01T00:00:05Z"),
    ];
    let s = m.apply(&events).await.summary();
    assert_eq!(s.applied, events.len(), "{s:?}");
}

/// Makes every derived column wrong.
async fn corrupt(m: &Mirror) {
    let sql =
        "UPDATE dm_conversations SET last_message_id = 'wrong', last_message_preview = 'wrong';
               UPDATE dm_messages SET recipient_id = 'wrong';";
    m.execute(sql, sql).await;
}

on_both_stores! {
    async fn repair_recomputes_every_derived_column_and_a_second_run_changes_nothing(m: Mirror) {
        sample(&m).await;
        let right = m.state().await;
        corrupt(&m).await;
        assert!(!derived_column_disagreements(&m.state().await).is_empty());

        let repaired = m.store().repair(None, 2).await.unwrap();
        assert_eq!(
            repaired,
            Repaired { conversations: 3, conversations_changed: 3, messages_changed: 4 }
        );
        assert_eq!(m.state().await, right);
        assert_eq!(
            m.store().repair(None, 2).await.unwrap(),
            Repaired { conversations: 3, conversations_changed: 0, messages_changed: 0 }
        );
    }

    async fn repair_of_named_conversations_touches_only_those(m: Mirror) {
        sample(&m).await;
        let right = m.state().await;
        corrupt(&m).await;
        let repaired = m
            .store()
            .repair(Some(vec!["c2".into(), "missing".into(), "c2".into()]), 500)
            .await
            .unwrap();
        // c2 exists (one live message; its recipient was wrong); "missing" is not created.
        assert_eq!(
            repaired,
            Repaired { conversations: 1, conversations_changed: 1, messages_changed: 1 }
        );
        assert!(m.find("dm_conversations", &["missing"]).await.is_none());
        assert_eq!(m.row("dm_conversations", &["c1"]).await["last_message_id"], "wrong");
        m.store().repair(None, 500).await.unwrap();
        assert_eq!(m.state().await, right);
    }
}

mod scheduled_check {
    //! The scheduled self-check within a time budget (docs/operating.md): each run checks a
    //! slice and keeps where it stopped in the database, the next goes on from there, and
    //! over the runs of a pass every row is checked once.
    use std::time::Duration;

    use mirror_tests::realtime_mirror::check::SelfCheckOptions;
    use mirror_tests::realtime_mirror::scheduled::once;
    use mirror_tests::realtime_mirror::{Config, Processor};
    use mirror_tests::{conversation, follow, Mirror};

    async fn a_check_within_its_budget_resumes_where_the_last_run_stopped(m: Mirror) {
        let events: Vec<_> = (0..25)
            .map(|i| conversation(&format!("c{i:02}"), &["a", "b"], "2025-10-08T11:00:00Z"))
            .chain([follow("selfish", "selfish", "2025-10-08T11:00:00Z")])
            .collect();
        m.apply(&events).await;
        let processor = Processor::new(m.store().clone(), Config::default());
        // A budget spent at once: each run checks one page of 10.
        let options = SelfCheckOptions {
            page: 10,
            stub_age: Duration::from_secs(3600),
            budget: Some(Duration::ZERO),
        };
        let mut conversations = 0;
        let mut self_follows = 0;
        let mut runs = Vec::new();
        for _ in 0..10 {
            let report = once(&processor, &options, None, None).await.unwrap();
            conversations += report["conversations"].as_u64().unwrap();
            self_follows += report["found"]["selfFollow"]["count"].as_u64().unwrap();
            assert!(report["conversations"].as_u64().unwrap() <= 10, "{report}");
            runs.push(report.clone());
            if report["complete"] == true {
                break;
            }
        }
        let last = runs.last().unwrap();
        assert_eq!(last["complete"], true, "a pass ends: {runs:?}");
        assert!(runs.len() >= 3, "several runs, one slice each: {runs:?}");
        assert_eq!(runs[1]["resumedFrom"]["after"][0], "c09", "{runs:?}");
        assert_eq!(conversations, 25, "every conversation once in the pass");
        assert_eq!(self_follows, 1, "the self-follow found once in the pass");
        let next = once(&processor, &options, None, None).await.unwrap();
        assert!(
            next.get("resumedFrom").is_none(),
            "after a whole pass the next starts over: {next}"
        );
        assert_eq!(next["conversations"], 10, "{next}");
    }

    #[tokio::test]
    async fn a_scheduled_check_within_its_budget_resumes_where_the_last_run_stopped_sqlite() {
        a_check_within_its_budget_resumes_where_the_last_run_stopped(Mirror::sqlite().await).await;
    }

    #[tokio::test]
    async fn a_scheduled_check_within_its_budget_resumes_where_the_last_run_stopped_postgres() {
        a_check_within_its_budget_resumes_where_the_last_run_stopped(Mirror::postgres().await)
            .await;
    }
}
