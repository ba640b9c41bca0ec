//! The SQS-compatible server (moto) the queue tests use: clients, queues, depths, sends; and
//! Secrets Manager beside it.

use crate::*;

/// The SQS-compatible server the queue tests use (`MIRROR_TEST_SQS_ENDPOINT`; scripts/test
/// starts moto's server and sets it).
pub fn sqs_endpoint() -> String {
    std::env::var("MIRROR_TEST_SQS_ENDPOINT").unwrap_or_else(|_| {
        panic!("MIRROR_TEST_SQS_ENDPOINT is unset: run the tests with scripts/test, which starts an SQS-compatible server (moto)")
    })
}

pub fn sqs() -> aws_sdk_sqs::Client {
    realtime_mirror::queue::client_for_endpoint(&sqs_endpoint(), "us-east-1")
}

/// The environment a spawned binary needs to reach the test SQS server.
pub fn sqs_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", sqs_endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "local".into()),
        ("AWS_SECRET_ACCESS_KEY", "local".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// Creates a queue with a unique name (`fifo` adds the `.fifo` suffix) and these attributes.
pub async fn create_queue(
    client: &aws_sdk_sqs::Client,
    prefix: &str,
    fifo: bool,
    attributes: &[(aws_sdk_sqs::types::QueueAttributeName, String)],
) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let mut name = unique(prefix).replace('_', "-");
    let mut request = client.create_queue();
    if fifo {
        name.push_str(".fifo");
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    for (key, value) in attributes {
        request = request.attributes(key.clone(), value);
    }
    request
        .queue_name(name)
        .send()
        .await
        .expect("create the queue")
        .queue_url()
        .unwrap()
        .to_string()
}

pub async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> String {
    realtime_mirror::queue::queue_arn(client, url)
        .await
        .expect("a queue ARN")
}

/// (visible, in flight) messages.
pub async fn queue_depth(client: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let stats = realtime_mirror::dlq::stats(client, url)
        .await
        .expect("queue attributes");
    (
        stats["messages"].as_u64().unwrap(),
        stats["inFlight"].as_u64().unwrap(),
    )
}

/// Resolves once the queue holds nothing, visible or in flight, on two checks in a row;
/// panics after `limit`.
pub async fn drained(client: &aws_sdk_sqs::Client, url: &str, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    let mut empty_checks = 0;
    while empty_checks < 2 {
        assert!(
            start.elapsed() < limit,
            "{url} still holds messages after {limit:?}: {:?}",
            queue_depth(client, url).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        empty_checks = if queue_depth(client, url).await == (0, 0) {
            empty_checks + 1
        } else {
            0
        };
    }
}

/// A Secrets Manager client for the test server (moto serves it beside SQS).
pub fn secrets() -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .endpoint_url(sqs_endpoint())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "local", "local", None, None, "static",
        ))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// Sends each body to the queue as a plain message.
pub async fn send_all(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    bodies: impl IntoIterator<Item = String>,
) {
    for body in bodies {
        client
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .expect("send");
    }
}
