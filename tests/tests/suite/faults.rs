//! Faults that must leave nothing behind: after a failed transaction the next chunk works.

use mirror_tests::realtime_mirror::batch::Outcome;
use mirror_tests::realtime_mirror::{Config, Store};
use mirror_tests::{message, Mirror};
use serde_json::Value;

/// Messages each in a conversation of its own, so that the chunk's last statement, the
/// `last_message_*` refresh, grows every conversation row.
fn messages(round: usize, count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let body = format!("{round}-{i} {}", "b".repeat(140));
            message(
                &format!("c{round}-{i}"),
                "m",
                "u1",
                &body,
                "2025-01-01T00:00:00Z",
            )
        })
        .collect()
}

async fn sqlite_pragma(mirror: &Mirror, pragma: &str) -> i64 {
    let Store::Sqlite(pool) = mirror.store() else {
        unreachable!("a SQLite mirror")
    };
    sqlx::query_scalar(&format!("PRAGMA {pragma}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

const ROUNDS: usize = 40;

/// The size limit (`PRAGMA max_page_count`) is moved across many page offsets, so that the
/// database fills in each statement of a chunk in turn; after each, the space is freed and
/// the same pool applies the chunk. (Every statement of a chunk has a statement journal, so
/// here SQLite undoes only the failing statement: this passed before the fix too. The real
/// full disk below is what made SQLite roll back the whole transaction by itself.)
#[tokio::test]
async fn a_full_sqlite_disk_fails_its_chunks_and_the_next_chunk_works_once_space_is_freed() {
    let mirror = Mirror::sqlite_with(Config {
        chunk_size: 100,
        ..Config::default()
    })
    .await;
    let mut full = 0;
    for round in 0..ROUNDS {
        let pages = sqlite_pragma(&mirror, "page_count").await;
        // The pool's one connection may grow the file by `round % 40` pages only.
        sqlite_pragma(
            &mirror,
            &format!("max_page_count = {}", pages + round as i64 % 40),
        )
        .await;
        let events = messages(round, 100);
        let filled = mirror.apply(&events).await;
        for r in &filled.records {
            match &r.outcome {
                Outcome::Failed(why) => {
                    assert!(why.contains("full"), "round {round}: {why}");
                    full += 1;
                }
                Outcome::Applied => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        // Space is freed: the same pool must apply the rest.
        sqlite_pragma(&mirror, "max_page_count = 1073741823").await;
        let again = mirror.apply(&events).await.summary();
        assert_eq!(
            again.failed,
            0,
            "round {round}: {:?}",
            again.failures.first()
        );
        assert_eq!(again.applied + again.duplicates, 100, "round {round}");
    }
    assert!(full > 0, "the disk never filled");
    assert_eq!(mirror.rows("dm_messages").await.len(), ROUNDS * 100);
}

/// A real full disk: the mirror's SQLite file on a 16 MiB tmpfs (mounted for the test; the
/// project's machines and CI run as root), filled by a filler file until chunks fail, then
/// freed. Every later chunk must work on the same pool.
#[tokio::test]
async fn a_really_full_disk_leaves_no_sqlite_connection_in_a_bad_state() {
    let dir = std::env::temp_dir().join(format!("mirror-full-disk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&dir)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "this test mounts a 16 MiB tmpfs at {} and needs root to do it",
        dir.display()
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _unmount = Unmount(dir.clone());

    let url = format!("sqlite://{}/mirror.db", dir.display());
    let store = Store::sqlite(url.parse().unwrap()).await.unwrap();
    store.migrate().await.unwrap();
    let mirror = Mirror {
        processor: mirror_tests::realtime_mirror::Processor::new(
            store,
            Config {
                chunk_size: 20,
                ..Config::default()
            },
        ),
        url,
    };
    // Leave about 200 KiB free.
    let free = {
        let stat = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&stat.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    let filler = dir.join("filler");
    std::fs::write(&filler, vec![0u8; free.saturating_sub(200 << 10)]).unwrap();

    let mut failed = 0;
    let mut rounds = Vec::new();
    for round in 0..40 {
        let events = messages(round, 20);
        let s = mirror.apply(&events).await.summary();
        failed += s.failed;
        if let Some(f) = s.failures.first() {
            assert!(f.reason.contains("full"), "round {round}: {}", f.reason);
        }
        rounds.push(events);
    }
    assert!(failed > 0, "the disk never filled");

    std::fs::remove_file(&filler).unwrap();
    for (round, events) in rounds.iter().enumerate() {
        let s = mirror.apply(events).await.summary();
        assert_eq!(
            s.failed,
            0,
            "round {round} after freeing: {:?}",
            s.failures.first()
        );
    }
    assert_eq!(mirror.rows("dm_messages").await.len(), 40 * 20);
}

/// A statement blocked longer than MIRROR_STATEMENT_TIMEOUT is cancelled by PostgreSQL: its
/// records fail (and are redelivered) instead of holding the invocation.
#[tokio::test]
async fn a_statement_blocked_past_the_statement_timeout_fails_its_records() {
    use sqlx::Connection;
    let mirror = Mirror::postgres_with(Config {
        statement_timeout: std::time::Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let c1 = mirror_tests::conversation("c1", &["u1", "u2"], "2025-01-01T00:00:01Z");
    mirror.apply(&[c1]).await;
    let mut blocker = sqlx::PgConnection::connect(&mirror.url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT 1 FROM dm_conversations WHERE conversation_id = 'c1' FOR UPDATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let blocked = message("c1", "m1", "u1", "hi", "2025-01-01T00:00:02Z");
    // Bounded so that a regression fails instead of hanging (the blocker never lets go).
    let s = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        mirror.apply(std::slice::from_ref(&blocked)),
    )
    .await
    .expect("the blocked statement was cancelled")
    .summary();
    assert_eq!(s.failed, 1, "{s:?}");
    assert!(
        s.failures[0].reason.contains("statement timeout"),
        "{}",
        s.failures[0].reason
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    assert_eq!(mirror.apply(&[blocked]).await.summary().applied, 1);
}
