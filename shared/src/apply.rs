//! Streaming application of event files (`mirrorctl apply`, and `backfill` after it turns
//! documents into events): records are read on a thread of their own a bounded distance
//! ahead, applied window by window through the functions' own [`Processor`], and counted
//! into a [`Summary`] of bounded size. Memory depends on the window, never on the input.

use std::io::Write;

use tokio::sync::mpsc::Receiver;

use crate::batch::{BatchOutcome, Outcome, Processor, Record, RecordOutcome, Route, Summary};
use crate::inputs::Item;

/// How many items the reading thread may be ahead of the writers.
pub const READ_AHEAD: usize = 256;
/// A window is cut when its bodies reach this many bytes, whatever its length.
pub const WINDOW_BYTES: usize = 32 << 20;

/// Where the records go: the mirror, or — when it could not be opened — nowhere, every
/// record then failing with the reason (still one bounded summary, and exit 1).
pub enum Target<'a> {
    Mirror(&'a Processor),
    Unreachable(String),
}

/// Where a run stands after a window: everything read up to `last` (an item's id) is
/// settled — committed, or counted as rejected or failed — and `first_failed` is the first
/// item that failed (to be applied again), if any did.
#[derive(Clone, Debug, Default)]
pub struct Position {
    pub last: String,
    pub first_failed: Option<String>,
}

/// What a caller hears after each window: the summary so far and the position.
pub type Progress<'a> = &'a mut (dyn FnMut(&Summary, &Position) + Send);

/// Applies every item of `items`. A window is `chunk_size × max_connections × 2` records
/// (so every connection has a chunk and the next is ready), or fewer when its bodies reach
/// [`WINDOW_BYTES`]. Every record's outcome goes to `details` (one JSON line each) when
/// given. An error writing the details stops the run.
pub async fn apply(
    target: Target<'_>,
    mut items: Receiver<Item>,
    route: Route,
    mut details: Option<&mut (dyn Write + Send)>,
    progress: Progress<'_>,
) -> Result<Summary, String> {
    let window_records = match &target {
        Target::Mirror(p) => {
            p.config().chunk_size * p.store().max_connections().max(1) as usize * 2
        }
        Target::Unreachable(_) => 1000,
    };
    let mut summary = Summary::default();
    let mut position = Position::default();
    let mut window: Vec<Record> = Vec::with_capacity(window_records);
    // Records that could not be read are settled with the window they were read in.
    let mut problems: Vec<RecordOutcome> = Vec::new();
    let mut bytes = 0usize;
    loop {
        let item = items.recv().await;
        let end = item.is_none();
        match item {
            Some(Item::Record(record)) => {
                position.last.clone_from(&record.message_id);
                bytes += record.body.as_ref().map_or(0, String::len);
                window.push(record);
            }
            Some(Item::Problem(problem)) => {
                position.last.clone_from(&problem.message_id);
                problems.push(problem)
            }
            Some(Item::Skipped(skipped)) => summary.skipped.push(skipped),
            None => {}
        }
        let full = window.len() >= window_records || bytes >= WINDOW_BYTES;
        if !(end || full || problems.len() >= window_records) {
            continue;
        }
        let records = std::mem::take(&mut window);
        let mut outcome = match &target {
            Target::Mirror(processor) if !records.is_empty() => {
                processor.process(records, route).await
            }
            Target::Mirror(_) => BatchOutcome::default(),
            Target::Unreachable(reason) => BatchOutcome {
                records: (records.into_iter())
                    .map(|r| RecordOutcome::new(r.message_id, Outcome::Failed(reason.clone())))
                    .collect(),
                ..BatchOutcome::default()
            },
        };
        outcome.records.append(&mut problems);
        summary.retries += outcome.conflict_retries;
        if let Some(delivery) = outcome.delivery.take() {
            (summary.streams.get_or_insert_with(Default::default)).add(delivery);
        }
        for r in &outcome.records {
            summary.add(r);
            if position.first_failed.is_none() && matches!(r.outcome, Outcome::Failed(_)) {
                position.first_failed = Some(r.message_id.clone());
            }
            if let Some(out) = details.as_mut() {
                writeln!(out, "{}", r.details())
                    .map_err(|e| format!("cannot write the details: {e}"))?;
            }
        }
        bytes = 0;
        progress(&summary, &position);
        if end {
            break;
        }
    }
    if let Some(out) = details {
        out.flush()
            .map_err(|e| format!("cannot write the details: {e}"))?;
    }
    Ok(summary)
}
