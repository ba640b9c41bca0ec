//! The function binaries' whole logic: in Lambda, an SQS-triggered handler
//! (`SqsEvent` → `SqsBatchResponse`); outside Lambda, with a queue URL, a worker
//! (see [`crate::worker`]). Both run the same batch processor.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use clap::Parser;
use lambda_runtime::{service_fn, Error, LambdaEvent};

use crate::batch::{BatchOutcome, Processor, Record, Route};
use crate::config::Config;
use crate::event::Family;
use crate::metrics::InvocationMetrics;
use crate::queue::DeadLetterQueue;
use crate::timestamp::Timestamp;
use crate::worker::{self, WorkerSettings};

pub fn records(event: SqsEvent) -> Vec<Record> {
    event
        .records
        .into_iter()
        .enumerate()
        .map(|(i, message)| Record::from_sqs(message, format!("record-{i}")))
        .collect()
}

/// Where a function writes its EMF metric documents.
#[derive(Clone, Debug, Default)]
pub enum MetricsSink {
    /// Lambda: CloudWatch Logs reads them from stdout.
    #[default]
    Stdout,
    /// Tests.
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl MetricsSink {
    fn write(&self, metrics: &InvocationMetrics) {
        let at = Timestamp::now().as_datetime().timestamp_millis();
        let written = match self {
            MetricsSink::Stdout => metrics.write(at, &mut std::io::stdout().lock()),
            MetricsSink::Memory(buffer) => {
                metrics.write(at, &mut *buffer.lock().expect("metrics buffer"))
            }
        };
        if let Err(error) = written {
            tracing::warn!(%error, "metrics could not be written");
        }
    }
}

/// One family's function: the processor, where its rejected records go, where its metrics go.
#[derive(Debug)]
pub struct Function {
    pub family: Family,
    pub processor: Processor,
    /// `MIRROR_DLQ_URL`: rejected records are sent there at once and acknowledged. Without
    /// it they are reported as batch item failures, so the redrive policy moves them there.
    pub dead_letters: Option<DeadLetterQueue>,
    pub metrics: MetricsSink,
    /// Set once this process has handled its first invocation (the cold start).
    warm: AtomicBool,
}

impl Function {
    pub fn new(family: Family, processor: Processor) -> Self {
        Function {
            family,
            processor,
            dead_letters: None,
            metrics: MetricsSink::Stdout,
            warm: AtomicBool::new(false),
        }
    }

    /// Handles one invocation: failed records are retried by the queue; rejected ones are
    /// dead-lettered, or kept when that is not possible — never dropped. Writes one EMF
    /// document with the invocation's metrics.
    pub async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
        let sent_at: HashMap<String, i64> = event
            .payload
            .records
            .iter()
            .filter_map(|m| {
                Some((
                    m.message_id.clone()?,
                    m.attributes.get("SentTimestamp")?.parse().ok()?,
                ))
            })
            .collect();
        let records = records(event.payload);
        // Kept only where a rejection can be dead-lettered with its body.
        let bodies: HashMap<String, Option<String>> = match &self.dead_letters {
            Some(_) => records
                .iter()
                .map(|r| (r.message_id.clone(), r.body.clone()))
                .collect(),
            None => HashMap::new(),
        };
        let deadline = self.processor.deadline(event.context.deadline);
        let outcome = self
            .processor
            .process_until(records, Route::Only(self.family), deadline)
            .await;
        let cold_start = !self.warm.swap(true, Ordering::Relaxed);
        self.metrics.write(&InvocationMetrics::measure(
            &self.processor.config().metrics_namespace,
            self.family,
            &outcome,
            &sent_at,
            Timestamp::now(),
            cold_start,
        ));
        let dead_lettered: HashSet<String> = match &self.dead_letters {
            Some(dlq) if outcome.has_rejections() => dlq
                .send_rejections(&outcome, &bodies)
                .await
                .into_iter()
                .collect(),
            _ => HashSet::new(),
        };
        Ok(batch_response(&outcome, &dead_lettered))
    }
}

fn batch_response(outcome: &BatchOutcome, dead_lettered: &HashSet<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in &outcome.records {
        if record.stays_on_queue(dead_lettered) {
            response.add_failure(record.message_id.clone());
        }
    }
    response
}

/// The command line of a function binary (all of it optional inside Lambda).
#[derive(Parser, Debug)]
#[command(
    about = "A realtime-mirror function: an AWS Lambda handler, or with --queue-url a long-polling SQS worker"
)]
struct FunctionArgs {
    /// Run as a worker that long-polls this SQS queue (outside Lambda).
    #[arg(long, env = "MIRROR_QUEUE_URL")]
    queue_url: Option<String>,
    /// Send rejected records to this dead-letter queue at once, with their reason.
    #[arg(long, env = "MIRROR_DLQ_URL")]
    dlq_url: Option<String>,
    /// The queue recorded as the source of dead-lettered records, in Lambda (where the
    /// function does not poll the queue itself).
    #[arg(long, env = "MIRROR_SOURCE_QUEUE_URL")]
    source_queue_url: Option<String>,
}

/// A function binary's `main`: runs [`run`] and reports a failure to start in one line.
pub async fn main(family: Family) -> std::process::ExitCode {
    match run(family).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}: {error}", family.function_name());
            std::process::ExitCode::FAILURE
        }
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// The whole of a function binary: read the settings, build the pool once, then serve
/// Lambda invocations (when `AWS_LAMBDA_RUNTIME_API` is set) or run as a worker.
pub async fn run(family: Family) -> Result<(), Error> {
    crate::telemetry::init();
    let args = FunctionArgs::parse();
    let (queue_url, dlq_url) = (non_empty(args.queue_url), non_empty(args.dlq_url));
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    if !in_lambda && queue_url.is_none() {
        return Err(
            "not running in Lambda (AWS_LAMBDA_RUNTIME_API is unset) and no queue to poll: \
             pass --queue-url or set MIRROR_QUEUE_URL to run as a worker"
                .into(),
        );
    }
    let config = Config::from_env()?;
    let processor = Processor::connect(config).await?;
    let mut function = Function::new(family, processor);
    let client = if dlq_url.is_some() || !in_lambda {
        Some(crate::queue::client_from_env().await)
    } else {
        None
    };
    if let (Some(url), Some(client)) = (&dlq_url, &client) {
        function.dead_letters = Some(DeadLetterQueue {
            client: client.clone(),
            url: url.clone(),
            source_queue: queue_url
                .clone()
                .or_else(|| non_empty(args.source_queue_url.clone()))
                .unwrap_or_else(|| family.function_name().to_string()),
        });
    }
    if in_lambda {
        tracing::info!(
            function = family.function_name(),
            "serving Lambda invocations"
        );
        let function = &function;
        return lambda_runtime::run(service_fn(|event| function.handle(event))).await;
    }
    let client = client.expect("a worker has a client");
    let queue_url = queue_url.expect("checked above");
    crate::queue::check_queue(&client, &queue_url).await?;
    if let Some(dlq) = &function.dead_letters {
        crate::queue::check_queue(&client, &dlq.url).await?;
    }
    let mut settings = WorkerSettings::new(family, queue_url);
    settings.dead_letters = function.dead_letters.clone();
    let totals = worker::run(
        &function.processor,
        &client,
        &settings,
        worker::shutdown_signal(),
    )
    .await;
    println!(
        "{}",
        serde_json::to_string(&totals).expect("totals serialise")
    );
    Ok(())
}
