//! Event files for `mirrorctl apply` and `publish`: a file holding an SQS event
//! (`{"Records": [...]}`), a JSON-lines file (one envelope a line), a file holding one
//! envelope in any accepted shape, or a directory of such files, read in name order.
//!
//! Every record stands alone: a malformed record of an SQS event or a bad line is rejected by
//! itself, with its position (and message id when it has one), and the others are read. No
//! file is read further than the largest thing it may validly hold: only regular files are
//! opened (a FIFO would block, a device never end), an SQS event is streamed one record at a
//! time (each at most [`MAX_RECORD_JSON_BYTES`]), a line or a single envelope at most
//! [`MAX_BODY_BYTES`].

mod lines;
mod sqs_event;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;

pub use crate::batch::Skipped;
use crate::batch::{Outcome, Record, RecordOutcome};
use crate::envelope::MAX_BODY_BYTES;
use crate::rejection::Rejection;
use lines::read_json_lines;
use sqs_event::{read_sqs_event, SqsEventFile};

/// The most JSON one record of an SQS event may take: a 1 MiB body written with escapes
/// (`\u00XX` is six bytes for one) and its attributes.
pub const MAX_RECORD_JSON_BYTES: u64 = 8 << 20;

/// What the paths held: the records in order, an outcome for each file or record that could
/// not be read, and the directory entries passed over.
#[derive(Debug, Default)]
pub struct Inputs {
    pub records: Vec<Record>,
    pub problems: Vec<RecordOutcome>,
    pub skipped: Vec<Skipped>,
}

/// One thing read from the paths, in input order.
#[derive(Debug)]
pub enum Item {
    Record(Record),
    /// A file or record that could not be read, with its outcome.
    Problem(RecordOutcome),
    Skipped(Skipped),
}

/// Where reading puts what it finds.
pub trait Sink {
    fn item(&mut self, item: Item);
    fn record(&mut self, record: Record) {
        self.item(Item::Record(record))
    }
    fn problem(&mut self, problem: RecordOutcome) {
        self.item(Item::Problem(problem))
    }
    fn skipped(&mut self, skipped: Skipped) {
        self.item(Item::Skipped(skipped))
    }
}

impl<F: FnMut(Item)> Sink for F {
    fn item(&mut self, item: Item) {
        self(item)
    }
}

/// Reads every path, handing each record, problem and skipped entry to `sink` as it is
/// read: nothing is kept here, so memory does not grow with the input.
pub fn each(paths: &[PathBuf], sink: &mut dyn Sink) {
    for path in paths {
        for file in files(path, sink) {
            read_file(&file, sink);
        }
    }
}

/// Everything the paths hold, at once (for inputs known to be small).
pub fn read_paths(paths: &[PathBuf]) -> Inputs {
    let mut inputs = Inputs::default();
    each(paths, &mut |item| match item {
        Item::Record(r) => inputs.records.push(r),
        Item::Problem(p) => inputs.problems.push(p),
        Item::Skipped(s) => inputs.skipped.push(s),
    });
    inputs
}

/// Reads the paths on a thread of their own, at most `read_ahead` items ahead of the
/// receiver: the bounded read-ahead of a streaming `apply`. Once the receiver is dropped,
/// what is still read is dropped with it.
pub fn stream(paths: Vec<PathBuf>, read_ahead: usize) -> tokio::sync::mpsc::Receiver<Item> {
    let (sender, receiver) = tokio::sync::mpsc::channel(read_ahead.max(1));
    std::thread::spawn(move || {
        let mut open = true;
        let mut send = |item: Item| {
            open = open && sender.blocking_send(item).is_ok();
        };
        each(&paths, &mut send);
    });
    receiver
}

/// What a path is, in words, when it is not a regular file.
fn not_a_file(metadata: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = metadata.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_block_device() || t.is_char_device() {
        Some("a device")
    } else {
        Some("not a regular file")
    }
}

fn files(path: &Path, inputs: &mut dyn Sink) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            inputs.problem(RecordOutcome::new(
                path.display().to_string(),
                Outcome::Failed(format!("cannot read directory {}: {e}", path.display())),
            ));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut files = Vec::new();
    for entry in paths {
        let skip = |reason: String| Skipped {
            path: entry.display().to_string(),
            reason,
        };
        let hidden = entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        // Follows links, as opening would: a link to a FIFO is a FIFO.
        match std::fs::metadata(&entry) {
            Err(e) => inputs.skipped(skip(format!("cannot be read: {e}"))),
            Ok(_) if hidden => inputs.skipped(skip("hidden".into())),
            Ok(m) if m.is_dir() => {
                inputs.skipped(skip("a directory: subdirectories are not entered".into()))
            }
            Ok(m) => match not_a_file(&m) {
                Some(what) => inputs.skipped(skip(format!("{what}, not a regular file"))),
                None => files.push(entry),
            },
        }
    }
    files
}

fn read_file(path: &Path, inputs: &mut dyn Sink) {
    let name = path.display().to_string();
    let reject = |inputs: &mut dyn Sink, message_id: String, why: Rejection| {
        inputs.problem(RecordOutcome::new(message_id, Outcome::Rejected(why)));
    };
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            inputs.problem(RecordOutcome::new(
                &name,
                Outcome::Failed(format!("cannot read {name}: {e}")),
            ));
            return;
        }
    };
    if let Some(what) = not_a_file(&metadata) {
        let why = format!("{name} is {what}, not a regular file; it was not read");
        return reject(inputs, name, Rejection::Unreadable(why));
    }
    let open = || File::open(path).map_err(|e| format!("cannot read {name}: {e}"));
    let failed = |inputs: &mut dyn Sink, why: String| {
        inputs.problem(RecordOutcome::new(&name, Outcome::Failed(why)));
    };

    match open().map(|file| read_sqs_event(file, &name, inputs)) {
        Err(why) => return failed(inputs, why),
        Ok(SqsEventFile::Read) => return,
        Ok(SqsEventFile::Broken { after, why }) => {
            let why = format!(
                "{name} stops being valid JSON after its record {after} ({why}); the records \
                 after it were not read"
            );
            return reject(inputs, format!("{name}#{after}+"), Rejection::NotJson(why));
        }
        Ok(SqsEventFile::No) => {}
    }

    let first_line = match open()
        .and_then(|file| first_line_is_json(file).map_err(|e| format!("cannot read {name}: {e}")))
    {
        Ok(first_line) => first_line,
        Err(why) => return failed(inputs, why),
    };
    if first_line == FirstLine::JsonWithMore {
        return match open() {
            Ok(file) => read_json_lines(file, &name, inputs),
            Err(why) => failed(inputs, why),
        };
    }

    // One envelope: never read past the largest body there may be.
    let mut body = Vec::new();
    let read = open().and_then(|file| {
        file.take(MAX_BODY_BYTES as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("cannot read {name}: {e}"))
    });
    if let Err(why) = read {
        return failed(inputs, why);
    }
    if body.len() > MAX_BODY_BYTES {
        let why = Rejection::TooLarge(metadata.len() as usize);
        return reject(inputs, name, why);
    }
    match String::from_utf8(body) {
        Ok(text) => inputs.record(Record {
            message_id: name,
            body: Some(text),
            receive_count: None,
        }),
        Err(_) => reject(
            inputs,
            name,
            Rejection::NotJson("the file is not UTF-8".into()),
        ),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum FirstLine {
    /// A complete JSON value, and more non-blank lines after it: JSON lines.
    JsonWithMore,
    Other,
}

fn first_line_is_json(file: File) -> std::io::Result<FirstLine> {
    let mut reader = BufReader::new(file);
    let mut lines = Vec::new();
    let mut line = Vec::new();
    while lines.len() < 2 {
        line.clear();
        let read = (&mut reader)
            .take(MAX_BODY_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 || line.len() > MAX_BODY_BYTES {
            break;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push(std::mem::take(&mut line));
        }
    }
    let json = |l: &[u8]| serde_json::from_slice::<IgnoredAny>(l).is_ok();
    Ok(match lines.as_slice() {
        [first, _] if json(first) => FirstLine::JsonWithMore,
        _ => FirstLine::Other,
    })
}
