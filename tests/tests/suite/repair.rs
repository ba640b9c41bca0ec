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
