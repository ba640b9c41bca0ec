//! Message bodies never reach the logs, at any level: every sample event goes through the
//! handler, the dead-letter path and the worker with a TRACE-level JSON subscriber capturing
//! everything, and no body of the samples may appear in what was captured.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{Context, LambdaEvent};
use mirror_tests::realtime_mirror::lambda::{Function, MetricsSink};
use mirror_tests::realtime_mirror::queue::DeadLetterQueue;
use mirror_tests::realtime_mirror::worker::{self, WorkerSettings};
use mirror_tests::realtime_mirror::{telemetry, Family};
use mirror_tests::sample_event as sample;
use mirror_tests::{create_queue, drained, sqs, LogCapture, Mirror};
use serde_json::Value;

const FILES: [(&str, Family); 4] = [
    ("01-dm-conversation.json", Family::DmConversation),
    ("02-dm-message.json", Family::DmMessage),
    ("03-follow-edge.json", Family::FollowEdge),
    ("bad/dm-message-rejections.json", Family::DmMessage),
];

/// Every text a sample carries as message content, wherever it sits in the envelope.
fn private_texts() -> Vec<String> {
    fn collect(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    match (key.as_str(), item) {
                        ("body" | "content" | "text" | "lastMessagePreview", Value::String(s))
                            if s.len() > 3 =>
                        {
                            out.push(s.clone())
                        }
                        ("document" | "Message", Value::String(s)) => {
                            if let Ok(inner) = serde_json::from_str(s) {
                                collect(&inner, out)
                            }
                        }
                        _ => collect(item, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut texts = Vec::new();
    for (file, _) in FILES {
        for record in sample(file).records {
            if let Ok(value) = serde_json::from_str::<Value>(record.body.as_deref().unwrap_or("")) {
                collect(&value, &mut texts);
            }
        }
    }
    texts
}

#[tokio::test]
async fn no_message_body_appears_in_any_log_line_at_any_level() {
    let capture = LogCapture::default();
    let subscriber = telemetry::subscriber(
        capture.writer(),
        true,
        tracing_subscriber::EnvFilter::new("trace"),
    );
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber of this test binary");

    let client = sqs();
    for mirror in [Mirror::sqlite().await, Mirror::postgres().await] {
        let dead = create_queue(&client, "dlq", false, &[]).await;
        for (file, family) in FILES {
            let mut function = Function::new(family, mirror.processor.clone());
            function.metrics = MetricsSink::Memory(Arc::default());
            function.dead_letters = Some(DeadLetterQueue {
                client: client.clone(),
                url: dead.clone(),
                source_queue: "q".into(),
            });
            function
                .handle(LambdaEvent::new(sample(file), Context::default()))
                .await
                .unwrap();
        }
        // And through a worker.
        let queue = create_queue(&client, "dm-message", false, &[]).await;
        for record in sample("02-dm-message.json").records {
            client
                .send_message()
                .queue_url(&queue)
                .message_body(record.body.unwrap())
                .send()
                .await
                .unwrap();
        }
        let settings = WorkerSettings {
            wait_seconds: 1,
            ..WorkerSettings::new(Family::DmMessage, &queue)
        };
        worker::run(
            &mirror.processor,
            &client,
            &settings,
            drained(&client, &queue, Duration::from_secs(30)),
        )
        .await;
    }

    let logs = capture.text();
    // The capture is real: records are logged, by id.
    assert!(
        logs.contains("msg-c1-m1-created")
            && logs.contains("dm.message.created")
            && logs.contains("bad-nul-character")
    );
    assert!(
        logs.lines().count() > 100,
        "TRACE captured {} lines",
        logs.lines().count()
    );
    let texts = private_texts();
    assert!(texts.len() >= 7, "the samples hold 7 texts: {texts:?}");
    for text in texts {
        let escaped = serde_json::to_string(&text).unwrap();
        let escaped = &escaped[1..escaped.len() - 1];
        assert!(
            !logs.contains(&text) && !logs.contains(escaped),
            "a body reached the logs: {text:?}"
        );
    }
}
