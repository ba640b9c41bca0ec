//! The SQS-triggered function, shared by the three binaries: `SqsEvent` in,
//! `SqsBatchResponse` out, with the records to keep reported as batch item failures.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};

use crate::batch::{Processor, Record, Route};
use crate::config::Config;
use crate::event::Family;

pub fn records(event: SqsEvent) -> Vec<Record> {
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(i, message)| Record {
            message_id: message.message_id.unwrap_or_else(|| format!("record-{i}")),
            receive_count: message
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok()),
            body: message.body,
        })
        .collect()
}

/// Handles one invocation for `family`'s queue. Failed records are retried by the queue;
/// rejected ones are kept too, so that after the redrive policy's receives they land in the
/// dead-letter queue rather than being lost.
pub async fn handle(
    processor: &Processor,
    family: Family,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let outcome = processor
        .process(records(event.payload), Route::Only(family))
        .await;
    let mut response = SqsBatchResponse::default();
    for record in outcome.records_to_keep() {
        response.add_failure(record.message_id.clone());
    }
    Ok(response)
}

/// The whole of a function binary: read the settings, build the pool once, serve.
pub async fn run(family: Family) -> Result<(), Error> {
    crate::telemetry::init();
    let config = Config::from_env()?;
    let processor = Processor::connect(config).await?;
    tracing::info!(function = family.function_name(), "serving");
    lambda_runtime::run(service_fn(|event| handle(&processor, family, event))).await
}
