//! The publisher: envelopes from files to the queue of their event family, in batches of
//! 10. On a FIFO queue the deduplication id is the idempotency key and the group id the
//! entity, so SQS itself drops a re-sent change and keeps one entity's changes in order.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use serde::Serialize;

use crate::batch::{Problem, Record};
use crate::event::{sha256_hex, Event, Family, Limits};
use crate::queue::{describe, ATTR_EVENT_TYPE, SQS_BATCH};

/// Where each family's events go.
#[derive(Clone, Debug, Default)]
pub struct Destinations {
    /// `--queue-url`: every event to this one queue.
    pub all: Option<String>,
    /// `MIRROR_DM_MESSAGE_QUEUE_URL`, `MIRROR_DM_CONVERSATION_QUEUE_URL`,
    /// `MIRROR_FOLLOW_EDGE_QUEUE_URL`.
    pub by_family: BTreeMap<Family, String>,
}

impl Destinations {
    pub fn variable(family: Family) -> String {
        format!(
            "MIRROR_{}_QUEUE_URL",
            family.function_name().replace('-', "_").to_uppercase()
        )
    }

    pub fn from_env(all: Option<String>) -> Self {
        let by_family = Family::ALL
            .into_iter()
            .filter_map(|f| {
                std::env::var(Self::variable(f))
                    .ok()
                    .filter(|u| !u.is_empty())
                    .map(|u| (f, u))
            })
            .collect();
        Destinations {
            all: all.filter(|u| !u.trim().is_empty()),
            by_family,
        }
    }

    fn url(&self, family: Family) -> Option<&str> {
        self.all
            .as_deref()
            .or_else(|| self.by_family.get(&family).map(String::as_str))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PublishSummary {
    pub sent: usize,
    pub rejected: usize,
    pub failed: usize,
    pub rejections: Vec<Problem>,
    pub failures: Vec<Problem>,
    /// As `apply`'s: directory entries that were not read.
    pub skipped: Vec<crate::inputs::Skipped>,
}

impl PublishSummary {
    /// As `apply`'s.
    pub fn exit_code(&self) -> i32 {
        crate::batch::exit_code(self.rejected, self.failed)
    }
}

pub fn is_fifo(queue_url: &str) -> bool {
    queue_url.ends_with(".fifo")
}

/// A FIFO `MessageGroupId`: the entity id when SQS allows it (at most 128 printable ASCII
/// characters), otherwise its SHA-256 in hex.
pub fn group_id(entity_id: &str) -> String {
    if entity_id.len() <= 128 && entity_id.bytes().all(|b| b.is_ascii_graphic()) {
        entity_id.to_string()
    } else {
        sha256_hex(entity_id.as_bytes())
    }
}

pub fn event_type_attribute(event: &Event) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(event.event_type.to_string())
        .build()
        .expect("data type and value are set")
}

/// Sends each record's body unchanged to its family's queue. A body the mirror would reject
/// is not sent (its reason is in the summary); one with no queue configured is a failure.
pub async fn publish(
    client: &Client,
    records: Vec<Record>,
    destinations: &Destinations,
    limits: Limits,
) -> PublishSummary {
    let mut summary = PublishSummary::default();
    let mut by_queue: BTreeMap<String, Vec<(Record, Event)>> = BTreeMap::new();
    for record in records {
        let parsed = match &record.body {
            None => Err(crate::rejection::Rejection::Empty),
            Some(body) => Event::parse(body, limits),
        };
        match parsed {
            Err(why) => {
                summary.rejected += 1;
                summary.rejections.push(Problem {
                    message_id: record.message_id,
                    reason: why.to_string(),
                });
            }
            Ok(event) => match destinations.url(event.family()) {
                Some(url) => by_queue
                    .entry(url.to_string())
                    .or_default()
                    .push((record, event)),
                None => {
                    summary.failed += 1;
                    summary.failures.push(Problem {
                        message_id: record.message_id,
                        reason: format!(
                            "no queue for {} events: set {} or pass --queue-url",
                            event.event_type,
                            Destinations::variable(event.family())
                        ),
                    });
                }
            },
        }
    }
    for (url, items) in by_queue {
        let fifo = is_fifo(&url);
        for batch in items.chunks(SQS_BATCH) {
            let entries: Vec<SendMessageBatchRequestEntry> = batch
                .iter()
                .enumerate()
                .map(|(i, (record, event))| {
                    let mut entry = SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(record.body.clone().unwrap_or_default())
                        .message_attributes(ATTR_EVENT_TYPE, event_type_attribute(event));
                    if fifo {
                        entry = entry
                            .message_deduplication_id(event.idempotency_key.as_str())
                            .message_group_id(group_id(&event.key.entity_id()));
                    }
                    entry.build().expect("id and body are set")
                })
                .collect();
            match client
                .send_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(response) => {
                    summary.sent += response.successful().len();
                    for failed in response.failed() {
                        let index: usize = failed.id().parse().unwrap_or(0);
                        summary.failed += 1;
                        summary.failures.push(Problem {
                            message_id: batch[index.min(batch.len() - 1)].0.message_id.clone(),
                            reason: format!(
                                "SQS refused it ({}): {}",
                                failed.code(),
                                failed.message().unwrap_or("")
                            ),
                        });
                    }
                }
                Err(error) => {
                    let reason = format!("sending to {url} failed: {}", describe(&error));
                    for (record, _) in batch {
                        summary.failed += 1;
                        summary.failures.push(Problem {
                            message_id: record.message_id.clone(),
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
    }
    summary
}
