//! A replay proves every entry it returns follows the one before it (docs/streams.md, "The
//! consumer contract"): not only the first entry's `prev` is checked, so an entry lost in
//! the middle of the range (deleted, or lost by a failover) is a resync, never a replay
//! with a hole. Against the machine's Redis, with a stream written here entry by entry.

use mirror_tests::{test_redis_url, unique_name};
use realtime_mirror::streams::{self, stream_key, Fanout, Replay, StreamSettings};

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
    let url = test_redis_url();
    let mut conn = Fanout::new(StreamSettings::new(&url).unwrap())
        .await
        .unwrap()
        .connection()
        .await
        .unwrap_or_else(|e| panic!("{e}: scripts/test starts the machine's Redis"));
    let user = unique_name("u-hole");
    let ids = chain(&mut conn, &user, 5).await;

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
