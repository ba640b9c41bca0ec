//! The dead-letter tool behind `mirrorctl dlq`: look at what is there, move it back to its
//! source queue after a fix, or purge it. A message leaves the dead-letter queue only after
//! its copy was accepted by the destination.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use serde::Serialize;
use serde_json::{json, Value};

use crate::event::{sha256_hex, Event, Limits};
use crate::publish::{event_type_attribute, group_id, is_fifo};
use crate::queue::{
    describe, queue_arn, ATTR_ERROR_KIND, ATTR_REASON, ATTR_SOURCE_MESSAGE_ID, ATTR_SOURCE_QUEUE,
    SQS_BATCH,
};
use crate::timestamp::Timestamp;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DlqError(pub String);

fn sqs_error<E: std::error::Error + aws_sdk_sqs::error::ProvideErrorMetadata + 'static>(
    what: &str,
    error: aws_sdk_sqs::error::SdkError<E>,
) -> DlqError {
    DlqError(format!("{what}: {}", describe(&error)))
}

pub async fn stats(client: &Client, url: &str) -> Result<Value, DlqError> {
    let response = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| sqs_error(&format!("reading the attributes of {url}"), e))?;
    let attributes = response.attributes();
    let count = |name: QueueAttributeName| {
        attributes
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(json!({
        "queueUrl": url,
        "messages": count(QueueAttributeName::ApproximateNumberOfMessages),
        "inFlight": count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        "delayed": count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    }))
}

fn attribute(message: &Message, name: &str) -> Option<String> {
    message
        .message_attributes()?
        .get(name)?
        .string_value()
        .map(str::to_string)
}

async fn receive(
    client: &Client,
    url: &str,
    max: usize,
    visibility: i32,
) -> Result<Vec<Message>, DlqError> {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, SQS_BATCH) as i32)
        .wait_time_seconds(1)
        .visibility_timeout(visibility)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map(|r| r.messages().to_vec())
        .map_err(|e| sqs_error(&format!("receiving from {url}"), e))
}

/// Up to `max` messages with their reason and origin, left on the queue (each peek counts as
/// a receive). Bodies hold private content: shown only when asked for.
pub async fn peek(
    client: &Client,
    url: &str,
    max: usize,
    show_body: bool,
) -> Result<Vec<Value>, DlqError> {
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut held = Vec::new();
    while seen.len() < max {
        // Hidden for a short while so one peek does not see a message twice; released below.
        let messages = receive(client, url, max - seen.len(), 30).await?;
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let id = m.message_id().unwrap_or_default().to_string();
            let mut entry = json!({
                "messageId": id,
                "errorKind": attribute(&m, ATTR_ERROR_KIND),
                "reason": attribute(&m, ATTR_REASON),
                "sourceQueue": attribute(&m, ATTR_SOURCE_QUEUE),
                "sourceMessageId": attribute(&m, ATTR_SOURCE_MESSAGE_ID),
                "receiveCount": m.attributes().and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount)).cloned(),
            });
            if show_body {
                entry["body"] = json!(m.body());
            }
            if let Some(handle) = m.receipt_handle() {
                held.push(handle.to_string());
            }
            seen.insert(id, entry);
        }
    }
    release(client, url, &held).await;
    let mut entries: Vec<Value> = seen.into_values().collect();
    entries.sort_by(|a, b| a["messageId"].as_str().cmp(&b["messageId"].as_str()));
    Ok(entries)
}

/// Makes held messages visible again at once.
async fn release(client: &Client, url: &str, receipt_handles: &[String]) {
    for handle in receipt_handles {
        if let Err(error) = client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(handle)
            .visibility_timeout(0)
            .send()
            .await
        {
            tracing::warn!(queue = url, error = %describe(&error), "a message stays hidden until its visibility timeout");
        }
    }
}

#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Where to send every message; otherwise each message's `mirror.sourceQueue`.
    pub to: Option<String>,
    pub max: usize,
    /// Messages per second at most.
    pub rate: u32,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplaySummary {
    pub moved: usize,
    /// With `--dry-run`: what would have been moved.
    pub would_move: usize,
    /// Messages with no `mirror.sourceQueue` (dead-lettered by the redrive policy) and no `--to`.
    pub without_source: usize,
    pub failed: usize,
    pub failures: Vec<String>,
}

/// Moves up to `max` messages back to their source queue, deleting each from the dead-letter
/// queue only after its send succeeded.
pub async fn replay(
    client: &Client,
    dlq_url: &str,
    options: &ReplayOptions,
) -> Result<ReplaySummary, DlqError> {
    let mut summary = ReplaySummary::default();
    let mut held = Vec::new();
    let mut resolved: HashMap<String, String> = HashMap::new();
    let pause = Duration::from_secs_f64(1.0 / options.rate.max(1) as f64);
    let mut handled = 0;
    'receiving: while handled < options.max {
        let messages = receive(client, dlq_url, options.max - handled, 60).await?;
        if messages.is_empty() {
            break;
        }
        for m in messages {
            if handled >= options.max {
                held.extend(m.receipt_handle().map(str::to_string));
                break 'receiving;
            }
            handled += 1;
            let receipt = m.receipt_handle().unwrap_or_default().to_string();
            let Some(source) = options
                .to
                .clone()
                .or_else(|| attribute(&m, ATTR_SOURCE_QUEUE))
            else {
                summary.without_source += 1;
                held.push(receipt);
                continue;
            };
            if options.dry_run {
                summary.would_move += 1;
                held.push(receipt);
                continue;
            }
            let target = match resolved.get(&source) {
                Some(url) => url.clone(),
                None => {
                    let url = queue_url(client, &source).await?;
                    resolved.insert(source.clone(), url.clone());
                    url
                }
            };
            tokio::time::sleep(pause).await;
            match send_copy(client, &target, &m).await {
                Ok(()) => match client
                    .delete_message()
                    .queue_url(dlq_url)
                    .receipt_handle(&receipt)
                    .send()
                    .await
                {
                    Ok(_) => summary.moved += 1,
                    Err(e) => {
                        // Sent but not deleted: it would be replayed twice, which the mirror
                        // takes as a duplicate. Say so.
                        summary.moved += 1;
                        summary.failures.push(format!(
                            "{}: sent to {target} but not deleted from the dead-letter queue ({})",
                            m.message_id().unwrap_or_default(),
                            describe(&e)
                        ));
                    }
                },
                Err(reason) => {
                    summary.failed += 1;
                    summary
                        .failures
                        .push(format!("{}: {reason}", m.message_id().unwrap_or_default()));
                    held.push(receipt);
                }
            }
        }
    }
    release(client, dlq_url, &held).await;
    Ok(summary)
}

/// A queue named by URL, or by ARN (`arn:aws:sqs:region:account:name`).
async fn queue_url(client: &Client, queue: &str) -> Result<String, DlqError> {
    let Some(rest) = queue.strip_prefix("arn:aws:sqs:") else {
        return Ok(queue.to_string());
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let [_, account, name] = parts.as_slice() else {
        return Err(DlqError(format!("{queue} is not an SQS queue ARN")));
    };
    client
        .get_queue_url()
        .queue_name(*name)
        .queue_owner_aws_account_id(*account)
        .send()
        .await
        .map_err(|e| sqs_error(&format!("finding the URL of {queue}"), e))?
        .queue_url()
        .map(str::to_string)
        .ok_or_else(|| DlqError(format!("no URL for {queue}")))
}

async fn send_copy(client: &Client, target: &str, m: &Message) -> Result<(), String> {
    let body = m.body().unwrap_or_default();
    let limits = Limits {
        now: Timestamp::now(),
        max_future_skew: Duration::from_secs(u32::MAX as u64),
    };
    let event = Event::parse(body, limits).ok();
    let mut send = client.send_message().queue_url(target).message_body(body);
    if let Some(event) = &event {
        send = send.message_attributes(crate::queue::ATTR_EVENT_TYPE, event_type_attribute(event));
    }
    if is_fifo(target) {
        let (dedup, group) = match &event {
            Some(e) => (e.idempotency_key.to_string(), group_id(&e.key.entity_id())),
            None => (sha256_hex(body.as_bytes()), "unparsed".to_string()),
        };
        send = send.message_deduplication_id(dedup).message_group_id(group);
    }
    send.send()
        .await
        .map(|_| ())
        .map_err(|e| format!("sending to {target} failed: {}", describe(&e)))
}

/// SQS's own redrive (`StartMessageMoveTask`) from the dead-letter queue back to its source
/// queues, or to `to`. Returns the task handle.
pub async fn replay_native(
    client: &Client,
    dlq_url: &str,
    to: Option<&str>,
    rate: u32,
) -> Result<String, DlqError> {
    let source = queue_arn(client, dlq_url).await.map_err(DlqError)?;
    let destination = match to {
        Some(url) => Some(queue_arn(client, url).await.map_err(DlqError)?),
        None => None,
    };
    let response = client
        .start_message_move_task()
        .source_arn(source)
        .set_destination_arn(destination)
        .max_number_of_messages_per_second(rate.clamp(1, 500) as i32)
        .send()
        .await
        .map_err(|e| {
            DlqError(format!(
                "native redrive (StartMessageMoveTask) failed: {}. A server without it (such as a \
                 local SQS emulator) needs `mirrorctl dlq replay` without --native",
                describe(&e)
            ))
        })?;
    Ok(response.task_handle().unwrap_or_default().to_string())
}

/// Deletes every message of the queue (SQS PurgeQueue).
pub async fn purge(client: &Client, url: &str) -> Result<(), DlqError> {
    client
        .purge_queue()
        .queue_url(url)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| sqs_error(&format!("purging {url}"), e))
}
