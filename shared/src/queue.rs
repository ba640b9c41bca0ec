//! SQS: the client, records from received messages, routing rejected records to the
//! dead-letter queue with their reason, and enqueue → commit latency.

use std::collections::HashMap;

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use crate::batch::{BatchOutcome, Outcome, Record};

/// The message attributes a dead-lettered record carries (SQS attribute names).
pub const ATTR_ERROR_KIND: &str = "mirror.errorKind";
pub const ATTR_REASON: &str = "mirror.reason";
pub const ATTR_SOURCE_QUEUE: &str = "mirror.sourceQueue";
pub const ATTR_SOURCE_MESSAGE_ID: &str = "mirror.sourceMessageId";
pub const ATTR_EVENT_TYPE: &str = "eventType";

/// SQS takes at most 10 entries a batch call and 10 messages a receive.
pub const SQS_BATCH: usize = 10;

/// A client from the standard AWS configuration chain (`AWS_REGION`, credentials,
/// `AWS_ENDPOINT_URL` for a local SQS-compatible server).
pub async fn client_from_env() -> Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Client::new(&config)
}

/// A client for an explicit endpoint with static credentials (local servers and tests).
pub fn client_for_endpoint(endpoint: &str, region: &str) -> Client {
    let credentials = aws_sdk_sqs::config::Credentials::new("local", "local", None, None, "static");
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_sqs::config::Region::new(region.to_string()))
        .credentials_provider(credentials)
        .build();
    Client::from_conf(config)
}

/// An SQS failure in one line: the service's code and message, or the transport's error
/// (timeouts, refused connections) with its causes.
pub fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_sdk_sqs::error::DisplayErrorContext(error).to_string(),
    }
}

/// Fails unless `url` names a queue this process can read: a worker with a wrong URL should
/// stop at once with a clear reason, not poll an error forever.
pub async fn check_queue(client: &Client, url: &str) -> Result<(), String> {
    queue_arn(client, url).await.map(|_| ())
}

/// The ARN of the queue at `url`.
pub async fn queue_arn(client: &Client, url: &str) -> Result<String, String> {
    client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| format!("cannot read the ARN of {url}: {}", describe(&e)))?
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .ok_or_else(|| format!("{url} has no QueueArn"))
}

/// A received message as a record, and what is needed to acknowledge it.
#[derive(Clone, Debug)]
pub struct Received {
    pub record: Record,
    pub receipt_handle: String,
    /// `SentTimestamp`: when SQS accepted the message.
    pub sent_at_millis: Option<i64>,
}

impl Received {
    pub fn from_message(message: Message) -> Option<Received> {
        let attributes = message.attributes();
        let attribute =
            |name: MessageSystemAttributeName| attributes.and_then(|a| a.get(&name)).cloned();
        Some(Received {
            record: Record {
                message_id: message.message_id()?.to_string(),
                receive_count: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|c| c.parse().ok()),
                body: message.body().map(str::to_string),
            },
            receipt_handle: message.receipt_handle()?.to_string(),
            sent_at_millis: attribute(MessageSystemAttributeName::SentTimestamp)
                .and_then(|t| t.parse().ok()),
        })
    }
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data type and value are set")
}

/// Where rejected records go at once (`MIRROR_DLQ_URL`), with their reason attached.
#[derive(Clone, Debug)]
pub struct DeadLetterQueue {
    pub client: Client,
    pub url: String,
    /// Recorded as the source queue of what is sent here (a URL or an ARN).
    pub source_queue: String,
}

impl DeadLetterQueue {
    /// Sends every rejected record of `outcome` to the dead-letter queue; returns the message
    /// ids that reached it. A record whose send failed is not among them, so the caller
    /// keeps it on its queue: never dropped.
    pub async fn send_rejections(
        &self,
        outcome: &BatchOutcome,
        bodies: &HashMap<String, Option<String>>,
    ) -> Vec<String> {
        let rejected: Vec<(&str, &crate::rejection::Rejection)> = outcome
            .records
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Rejected(why) => Some((r.message_id.as_str(), why)),
                _ => None,
            })
            .collect();
        let mut delivered = Vec::new();
        for batch in rejected.chunks(SQS_BATCH) {
            let entries: Vec<SendMessageBatchRequestEntry> = batch
                .iter()
                .enumerate()
                .map(|(i, (message_id, why))| {
                    // SQS refuses an empty body; the reason says it was empty.
                    let body = bodies
                        .get(*message_id)
                        .cloned()
                        .flatten()
                        .filter(|b| !b.is_empty());
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body.unwrap_or_else(|| "(empty)".to_string()))
                        .message_attributes(ATTR_ERROR_KIND, string_attribute(why.kind()))
                        .message_attributes(ATTR_REASON, string_attribute(&why.to_string()))
                        .message_attributes(ATTR_SOURCE_QUEUE, string_attribute(&self.source_queue))
                        .message_attributes(ATTR_SOURCE_MESSAGE_ID, string_attribute(message_id))
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            match self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(response) => {
                    for ok in response.successful() {
                        if let Ok(i) = ok.id().parse::<usize>() {
                            delivered.push(batch[i].0.to_string());
                        }
                    }
                    for failed in response.failed() {
                        tracing::error!(dlq = %self.url, code = failed.code(), reason = failed.message().unwrap_or(""),
                            "a rejected record could not be dead-lettered; it stays on its queue");
                    }
                }
                Err(error) => {
                    tracing::error!(dlq = %self.url, error = %describe(&error),
                    "rejected records could not be dead-lettered; they stay on their queue")
                }
            }
        }
        delivered
    }
}
