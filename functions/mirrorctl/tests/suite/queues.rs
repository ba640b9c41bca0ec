//! `mirrorctl publish` and `mirrorctl dlq` against an SQS-compatible server (moto).

use std::process::Command;

use mirror_tests::{create_queue, queue_depth, run_for_json, sqs, sqs_env};
use serde_json::Value;

const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events");

/// Runs mirrorctl with `stdin` as its input; (exit code, stdout as JSON, stderr).
fn mirrorctl(args: &[&str], stdin: Option<&str>) -> (i32, Value, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mirrorctl"));
    command.args(args).envs(sqs_env()).env("RUST_LOG", "warn");
    run_for_json(&mut command, stdin)
}

#[tokio::test]
async fn publish_sends_what_the_mirror_accepts_and_exits_2_listing_the_rest() {
    let client = sqs();
    let queue = create_queue(&client, "all", false, &[]).await;
    let (code, summary, stderr) = mirrorctl(
        &["publish", "--queue-url", &queue, &format!("{EVENTS}/bad")],
        None,
    );
    assert_eq!(code, 2, "{stderr}");
    // The good message and the follow edge (misrouted only on a dm-message queue) are sent.
    assert_eq!(
        (summary["sent"].clone(), summary["rejected"].clone()),
        (2.into(), 11.into()),
        "{summary}"
    );
    assert_eq!(queue_depth(&client, &queue).await.0, 2);
}

#[tokio::test]
async fn publish_routes_each_family_to_its_queue_from_the_environment() {
    let client = sqs();
    let messages = create_queue(&client, "dm-message", false, &[]).await;
    let output = Command::new(env!("CARGO_BIN_EXE_mirrorctl"))
        .args([
            "publish",
            &format!("{EVENTS}/02-dm-message.json"),
            &format!("{EVENTS}/03-follow-edge.json"),
        ])
        .envs(sqs_env())
        .env("MIRROR_DM_MESSAGE_QUEUE_URL", &messages)
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "follow edges have no queue");
    assert_eq!(
        (summary["sent"].clone(), summary["failed"].clone()),
        (6.into(), 5.into()),
        "{summary}"
    );
    assert_eq!(queue_depth(&client, &messages).await.0, 6);
}

#[tokio::test]
async fn dlq_purge_asks_for_confirmation_unless_yes() {
    let client = sqs();
    let dead = create_queue(&client, "dlq", false, &[]).await;
    for i in 0..3 {
        client
            .send_message()
            .queue_url(&dead)
            .message_body(format!("m{i}"))
            .send()
            .await
            .unwrap();
    }
    let (code, stats, _) = mirrorctl(&["dlq", "--queue-url", &dead, "stats"], None);
    assert_eq!((code, stats["messages"].clone()), (0, 3.into()));

    let (code, _, stderr) = mirrorctl(&["dlq", "--queue-url", &dead, "purge"], Some("no\n"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Type 'purge' to confirm") && stderr.contains("not purged"),
        "{stderr}"
    );
    let (code, _, _) = mirrorctl(&["dlq", "--queue-url", &dead, "purge"], None);
    assert_eq!(code, 1, "no answer is a no");
    assert_eq!(queue_depth(&client, &dead).await.0, 3);

    let (code, out, _) = mirrorctl(&["dlq", "--queue-url", &dead, "purge"], Some("purge\n"));
    assert_eq!((code, out["messagesBefore"].clone()), (0, 3.into()));
    assert_eq!(queue_depth(&client, &dead).await.0, 0);
    // SQS allows one purge a minute per queue: --yes on another.
    let other = create_queue(&client, "dlq", false, &[]).await;
    client
        .send_message()
        .queue_url(&other)
        .message_body("again")
        .send()
        .await
        .unwrap();
    let (code, _, _) = mirrorctl(&["dlq", "--queue-url", &other, "purge", "--yes"], None);
    assert_eq!(code, 0);
    assert_eq!(queue_depth(&client, &other).await.0, 0);
}

#[tokio::test]
async fn dlq_peek_hides_bodies_unless_asked_and_native_replay_fails_clearly() {
    let client = sqs();
    let dead = create_queue(&client, "dlq", false, &[]).await;
    client
        .send_message()
        .queue_url(&dead)
        .message_body("private words")
        .send()
        .await
        .unwrap();
    let (code, peeked, _) = mirrorctl(&["dlq", "--queue-url", &dead, "peek"], None);
    assert_eq!(code, 0);
    assert_eq!(peeked.as_array().unwrap().len(), 1);
    assert!(!peeked.to_string().contains("private words"));
    let (_, peeked, _) = mirrorctl(&["dlq", "--queue-url", &dead, "peek", "--show-body"], None);
    assert_eq!(peeked[0]["body"], "private words");
    let (code, _, stderr) = mirrorctl(&["dlq", "--queue-url", &dead, "replay", "--native"], None);
    assert_eq!(code, 1);
    assert!(stderr.contains("StartMessageMoveTask"), "{stderr}");
    assert_eq!(
        queue_depth(&client, &dead).await,
        (1, 0),
        "nothing moved, nothing hidden"
    );
}
