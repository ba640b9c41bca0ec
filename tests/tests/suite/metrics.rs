//! The EMF documents a function writes per invocation, checked against the structure the
//! CloudWatch Embedded Metric Format specification requires.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use mirror_tests::realtime_mirror::lambda::{Function, MetricsSink};
use mirror_tests::realtime_mirror::Family;
use mirror_tests::sample_event as sample;
use mirror_tests::Mirror;
use serde_json::{json, Value};

const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Panics unless `doc` is a valid EMF document.
fn assert_emf(doc: &Value) {
    let root = doc.as_object().expect("an EMF document is a JSON object");
    let aws = root["_aws"].as_object().expect("_aws");
    let at = aws["Timestamp"]
        .as_i64()
        .expect("_aws.Timestamp is an integer of epoch milliseconds");
    assert!((chrono::Utc::now().timestamp_millis() - at).abs() < 60_000);
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .expect("CloudWatchMetrics");
    assert!(!directives.is_empty());
    for directive in directives {
        assert!(!directive["Namespace"]
            .as_str()
            .expect("Namespace")
            .is_empty());
        for set in directive["Dimensions"].as_array().expect("Dimensions") {
            let set = set.as_array().expect("a dimension set is an array");
            assert!(!set.is_empty() && set.len() <= 30);
            for key in set {
                let key = key.as_str().expect("dimension keys are strings");
                assert!(
                    root[key].is_string(),
                    "dimension {key} must be a string member of the root"
                );
            }
        }
        let metrics = directive["Metrics"].as_array().expect("Metrics");
        assert!(metrics.len() <= 100);
        for metric in metrics {
            let name = metric["Name"].as_str().expect("Name");
            if let Some(unit) = metric.get("Unit") {
                assert!(UNITS.contains(&unit.as_str().unwrap()), "unit {unit}");
            }
            match &root[name] {
                Value::Number(_) => {}
                Value::Array(values) => {
                    assert!(values.len() <= 100, "{name} has {} values", values.len());
                    assert!(values.iter().all(Value::is_number));
                }
                other => {
                    panic!("metric {name} must be a number or an array of numbers, not {other}")
                }
            }
        }
    }
}

async fn documents(
    function: &Function,
    buffer: &Arc<Mutex<Vec<u8>>>,
    event: SqsEvent,
) -> Vec<Value> {
    buffer.lock().unwrap().clear();
    function
        .handle(LambdaEvent::new(event, Context::default()))
        .await
        .unwrap();
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document a line"))
        .collect()
}

fn function(mirror: Mirror, family: Family) -> (Function, Arc<Mutex<Vec<u8>>>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let mut f = Function::new(family, mirror.processor);
    f.metrics = MetricsSink::Memory(buffer.clone());
    (f, buffer)
}

#[tokio::test]
async fn each_invocation_writes_one_emf_document_with_latencies_counts_and_cold_start() {
    let (f, buffer) = function(Mirror::sqlite().await, Family::DmMessage);
    let docs = documents(&f, &buffer, sample("02-dm-message.json")).await;
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    assert_emf(doc);
    let directive = &doc["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "RealtimeMirror");
    assert_eq!(
        directive["Dimensions"],
        json!([["Function", "EventFamily"]])
    );
    assert_eq!(
        (doc["Function"].clone(), doc["EventFamily"].clone()),
        (json!("dm-message"), json!("dm.message"))
    );
    let names: HashSet<&str> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    for name in [
        "sql_mirror_latency_ms",
        "source_to_commit_ms",
        "applied",
        "duplicate",
        "stale",
        "rejected",
        "failed",
        "batch_size",
        "cold_start",
    ] {
        assert!(names.contains(name), "{name}");
    }
    assert_eq!(
        (
            doc["applied"].clone(),
            doc["stale"].clone(),
            doc["batch_size"].clone()
        ),
        (json!(4), json!(2), json!(6))
    );
    assert_eq!(
        doc["sql_mirror_latency_ms"].as_array().unwrap().len(),
        4,
        "one value per applied record"
    );
    assert_eq!(doc["source_to_commit_ms"].as_array().unwrap().len(), 4);
    assert_eq!(doc["cold_start"], 1);

    let again = documents(&f, &buffer, sample("bad/dm-message-rejections.json")).await;
    assert_emf(&again[0]);
    assert_eq!(
        again[0]["cold_start"], 0,
        "only the first invocation is a cold start"
    );
    assert_eq!(
        (again[0]["rejected"].clone(), again[0]["applied"].clone()),
        (json!(12), json!(1))
    );
}

#[tokio::test]
async fn more_than_100_latencies_are_split_across_valid_documents() {
    let (f, buffer) = function(Mirror::sqlite().await, Family::FollowEdge);
    let mut event = sample("03-follow-edge.json");
    let template = event.records[0].clone();
    event.records = (0..250)
        .map(|i| {
            let mut r = template.clone();
            r.message_id = Some(format!("m{i}"));
            r.body = Some(
                mirror_tests::follow(&format!("u{i}"), "t", "2025-10-08T12:00:00Z").to_string(),
            );
            r
        })
        .collect();
    let docs = documents(&f, &buffer, event).await;
    assert_eq!(docs.len(), 3);
    docs.iter().for_each(assert_emf);
    let total: usize = docs
        .iter()
        .map(|d| d["sql_mirror_latency_ms"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 250);
    assert_eq!(docs[0]["applied"], 250);
    assert!(docs[1].get("applied").is_none(), "counts are written once");
}

#[tokio::test]
async fn metrics_go_to_the_namespace_the_stack_configures() {
    use mirror_tests::realtime_mirror::config::Config;
    use mirror_tests::realtime_mirror::Processor;

    let mirror = Mirror::sqlite().await;
    let config = Config::from_lookup(|name| {
        (name == "MIRROR_METRICS_NAMESPACE").then(|| "RealtimeMirror/staging".to_string())
    })
    .unwrap();
    let mut f = Function::new(
        Family::DmMessage,
        Processor::new(mirror.processor.store().clone(), config),
    );
    let buffer = Arc::new(Mutex::new(Vec::new()));
    f.metrics = MetricsSink::Memory(buffer.clone());
    let docs = documents(&f, &buffer, sample("02-dm-message.json")).await;
    assert_eq!(
        docs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "RealtimeMirror/staging"
    );
    let refused = Config::from_lookup(|name| {
        (name == "MIRROR_METRICS_NAMESPACE").then(|| "AWS/Lambda".to_string())
    })
    .unwrap_err()
    .to_string();
    assert!(refused.contains("MIRROR_METRICS_NAMESPACE"), "{refused}");
}
