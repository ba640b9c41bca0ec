//! A replay proves every entry it returns follows the one before it (docs/streams.md, "The
//! consumer contract"): not only the first entry's `prev` is checked, so an entry lost in
//! the middle of the range (deleted, or lost by a failover) is a resync, never a replay
//! with a hole. Against the machine's Redis, with a stream written here entry by entry.

use mirror_tests::{test_redis_url, unique_name};
use realtime_mirror::streams::{self, stream_key, Replay};

async fn connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(test_redis_url().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}: scripts/test starts the machine's Redis"))
}

/// Adds `n` entries chained by `prev` to `user`'s stream; returns their ids.
async fn chain(conn: &mut redis::aio::MultiplexedConnection, user: &str, n: usize) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for i in 0..n {
        let prev = ids.last().cloned().unwrap_or_else(|| "0-0".to_string());
        let id: String = redis::cmd("XADD")
            .arg(stream_key(user))
            .arg("*")
            .arg(&[
                "type",
                "message.created",
                "messageId",
                &format!("m{i}"),
                "conversationId",
                "c",
            ])
            .arg(&[
                "senderId",
                "s",
                "version",
                "2026-01-01T00:00:00.000000Z",
                "ts",
                "1",
                "prev",
                &prev,
            ])
            .query_async(conn)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn a_replay_checks_the_prev_of_every_entry_not_only_the_first() {
    let mut conn = connection().await;
    let user = unique_name("u-hole");
    let ids = chain(&mut conn, &user, 5).await;
    let info = streams::stream_info(&mut conn, &user)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info.max_deleted.as_deref(),
        Some("0-0"),
        "nothing removed yet"
    );

    match streams::replay_after(&mut conn, &user, Some(&ids[0]), 100)
        .await
        .unwrap()
    {
        Replay::Entries { entries, after } => {
            assert_eq!(after, ids[0]);
            let got: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(got, ids[1..].iter().map(String::as_str).collect::<Vec<_>>());
        }
        other => panic!("a whole chain replays: {other:?}"),
    }

    let _: i64 = redis::cmd("XDEL")
        .arg(stream_key(&user))
        .arg(&ids[3])
        .query_async(&mut conn)
        .await
        .unwrap();
    match streams::replay_after(&mut conn, &user, Some(&ids[0]), 100)
        .await
        .unwrap()
    {
        Replay::Resync {
            code, resume_from, ..
        } => {
            assert_eq!(code, "hole");
            assert_eq!(
                resume_from, ids[4],
                "a resync resumes from the stream's newest id"
            );
        }
        other => panic!("a replay with an entry missing in its middle: {other:?}"),
    }
    // the part before the hole is whole on its own: a device at ids[1] is missing ids[3] too
    assert!(matches!(
        streams::replay_after(&mut conn, &user, Some(&ids[1]), 100)
            .await
            .unwrap(),
        Replay::Resync { code: "hole", .. }
    ));
    // from just before the last entry, what is left is whole
    assert!(matches!(
        streams::replay_after(&mut conn, &user, Some(&ids[3]), 100).await.unwrap(),
        Replay::Entries { ref entries, .. } if entries.len() == 1
    ));
}

/// What the gateway's acknowledgement check relies on (docs/realtime.md, "Events": `ack`):
/// an id the stream does not hold is refused only when it certainly never held it.
#[tokio::test]
async fn an_id_is_never_held_only_when_no_removal_could_explain_its_absence() {
    let mut conn = connection().await;
    let user = unique_name("u-held");
    let ids = chain(&mut conn, &user, 5).await;
    let info = |conn: &mut redis::aio::MultiplexedConnection| {
        let user = user.clone();
        let mut conn = conn.clone();
        async move {
            streams::stream_info(&mut conn, &user)
                .await
                .unwrap()
                .unwrap()
        }
    };

    let untouched = info(&mut conn).await;
    assert_eq!(untouched.last_generated, ids[4]);
    assert_eq!(untouched.first.as_deref(), Some(ids[0].as_str()));
    assert_eq!(
        untouched.removed_any,
        Some(false),
        "Redis 7 reports entries-added"
    );
    assert_eq!(untouched.max_deleted.as_deref(), Some("0-0"));
    assert!(
        untouched.never_held("0-1"),
        "before the first entry of a stream that lost none"
    );

    let _: i64 = redis::cmd("XDEL")
        .arg(stream_key(&user))
        .arg(&ids[3])
        .query_async(&mut conn)
        .await
        .unwrap();
    // one more entry, 5 ms after the newest: the ids between those two were never entries
    let (ms, seq) = ids[4].split_once('-').unwrap();
    let later = format!("{}-0", ms.parse::<u64>().unwrap() + 5);
    let _: String = redis::cmd("XADD")
        .arg(stream_key(&user))
        .arg(&later)
        .arg(&["prev", ids[4].as_str()])
        .query_async(&mut conn)
        .await
        .unwrap();
    let between = format!("{ms}-{}", seq.parse::<u64>().unwrap() + 1);

    let deleted = info(&mut conn).await;
    assert_eq!(deleted.removed_any, Some(true));
    assert_eq!(deleted.max_deleted.as_deref(), Some(ids[3].as_str()));
    assert!(!deleted.never_held(&ids[3]), "a deleted entry was one");
    assert!(
        !deleted.never_held("0-1"),
        "once entries were removed, the past cannot be ruled out"
    );
    assert!(
        deleted.never_held(&between),
        "inside the kept range, after the newest deleted id"
    );

    let _: i64 = redis::cmd("XTRIM")
        .arg(stream_key(&user))
        .arg("MAXLEN")
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();
    let trimmed = info(&mut conn).await;
    assert_eq!(trimmed.first.as_deref(), Some(ids[4].as_str()));
    assert!(
        !trimmed.never_held(&ids[1]),
        "trimmed away: it may have been an entry"
    );
    assert!(trimmed.never_held(&between), "still inside the kept range");
}
