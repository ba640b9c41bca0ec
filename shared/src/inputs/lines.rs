//! JSON-lines files: one envelope a non-blank line, named `{file}:{line}`; a line longer
//! than a body may be is rejected without being kept.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use crate::batch::{Outcome, Record, RecordOutcome};
use crate::envelope::MAX_BODY_BYTES;
use crate::rejection::Rejection;

use super::Sink;

/// One record a non-blank line, named `{file}:{line}`; a line longer than a body may be is
/// rejected without being kept.
pub(super) fn read_json_lines(file: File, name: &str, inputs: &mut dyn Sink) {
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = (&mut reader)
            .take(MAX_BODY_BYTES as u64 + 1)
            .read_until(b'\n', &mut line);
        let id = format!("{name}:{number}");
        match read {
            Err(e) => {
                inputs.problem(RecordOutcome::new(
                    id,
                    Outcome::Failed(format!("cannot read {name} at line {number}: {e}")),
                ));
                return;
            }
            Ok(0) => return,
            Ok(_) => {}
        }
        if line.len() > MAX_BODY_BYTES && !line.ends_with(b"\n") {
            // Pass over the rest of the line without keeping it.
            let mut length = line.len() as u64;
            while let Ok(buffer) = reader.fill_buf() {
                if buffer.is_empty() {
                    break;
                }
                let (used, done) = match buffer.iter().position(|b| *b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (buffer.len(), false),
                };
                reader.consume(used);
                length += used as u64;
                if done {
                    break;
                }
            }
            inputs.problem(RecordOutcome::new(
                id,
                Outcome::Rejected(Rejection::TooLarge(length as usize)),
            ));
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        match String::from_utf8(std::mem::take(&mut line)) {
            Ok(text) => inputs.record(Record {
                message_id: id,
                body: Some(text),
                receive_count: None,
            }),
            Err(_) => inputs.problem(RecordOutcome::new(
                id,
                Outcome::Rejected(Rejection::NotJson(format!(
                    "line {number} of {name} is not UTF-8"
                ))),
            )),
        }
    }
}
