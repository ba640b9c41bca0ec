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

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use aws_lambda_events::event::sqs::SqsMessage;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

pub use crate::batch::Skipped;
use crate::batch::{Outcome, Record, RecordOutcome};
use crate::envelope::MAX_BODY_BYTES;
use crate::rejection::Rejection;

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

/// One record a non-blank line, named `{file}:{line}`; a line longer than a body may be is
/// rejected without being kept.
fn read_json_lines(file: File, name: &str, inputs: &mut dyn Sink) {
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

enum SqsEventFile {
    /// The top level is an object with a `Records` array: every record was read.
    Read,
    /// Not an SQS event (no `Records` array at the top level); nothing was taken from it.
    No,
    /// An SQS event whose JSON breaks after record `after`; the records before it were read.
    Broken { after: usize, why: String },
}

/// Streams the file as an SQS event, one record at a time.
fn read_sqs_event(file: File, name: &str, inputs: &mut dyn Sink) -> SqsEventFile {
    let budget = Rc::new(Cell::new(0u64));
    let reader = Budgeted {
        inner: BufReader::new(file),
        used: budget.clone(),
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut state = Stream {
        name,
        inputs,
        budget,
        records: 0,
        found: false,
    };
    let result = de::Deserializer::deserialize_map(&mut de, TopLevel(&mut state));
    let result = result.and_then(|found| de.end().map(|()| found));
    match result {
        Ok(true) => SqsEventFile::Read,
        _ if !state.found => SqsEventFile::No,
        Ok(false) => SqsEventFile::Read,
        // serde's message can quote values; say where, not what.
        Err(e) => SqsEventFile::Broken {
            after: state.records,
            why: describe(&e),
        },
    }
}

/// An error's category and place, never the content it quotes.
fn describe(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => {
            format!("a record is more than {MAX_RECORD_JSON_BYTES} bytes of JSON")
        }
        serde_json::error::Category::Syntax => "a syntax error".into(),
        serde_json::error::Category::Data => "a value of the wrong type".into(),
        serde_json::error::Category::Eof => "it ends too early".into(),
    };
    format!("{what} at line {}, column {}", e.line(), e.column())
}

/// A reader that fails once more than [`MAX_RECORD_JSON_BYTES`] were read since the budget
/// was last reset (at the start of each record), so no record is buffered whole past it.
struct Budgeted<R> {
    inner: R,
    used: Rc<Cell<u64>>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = MAX_RECORD_JSON_BYTES.saturating_sub(self.used.get());
        if left == 0 {
            return Err(std::io::Error::other("record too large"));
        }
        let take = buf.len().min(left as usize);
        let n = self.inner.read(&mut buf[..take])?;
        self.used.set(self.used.get() + n as u64);
        Ok(n)
    }
}

struct Stream<'a> {
    name: &'a str,
    inputs: &'a mut dyn Sink,
    budget: Rc<Cell<u64>>,
    /// Records taken so far.
    records: usize,
    /// Whether a `Records` array was found.
    found: bool,
}

impl Stream<'_> {
    fn take(&mut self, raw: &RawValue) {
        let position = self.records;
        self.records += 1;
        let fallback = format!("{}#{position}", self.name);
        match serde_json::from_str::<SqsMessage>(raw.get()) {
            Ok(message) => self.inputs.record(Record::from_sqs(message, fallback)),
            Err(e) => {
                // Name it by its message id when that much can be read (the fields raw, so
                // that a bad value elsewhere, a lone surrogate say, does not hide it).
                let id = serde_json::from_str::<std::collections::HashMap<String, Box<RawValue>>>(
                    raw.get(),
                )
                .ok()
                .and_then(|m| serde_json::from_str::<String>(m.get("messageId")?.get()).ok());
                let why = format!(
                    "record {position} of {} (messageId {}) is not an SQS message: {}",
                    self.name,
                    id.as_deref().unwrap_or("absent"),
                    describe(&e)
                );
                self.inputs.problem(RecordOutcome::new(
                    id.unwrap_or(fallback),
                    Outcome::Rejected(Rejection::UnknownShape(why)),
                ));
            }
        }
        self.budget.set(0);
    }
}

/// The top-level object: `Records` is streamed; every other key is passed over unread.
struct TopLevel<'s, 'a>(&'s mut Stream<'a>);

impl<'de> Visitor<'de> for TopLevel<'_, '_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "Records" && !found {
                found = map.next_value_seed(RecordList(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct RecordList<'s, 'a>(&'s mut Stream<'a>);

impl<'de> DeserializeSeed<'de> for RecordList<'_, '_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordList<'_, '_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of SQS messages")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        self.0.found = true;
        self.0.budget.set(0);
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            self.0.take(&raw);
        }
        Ok(true)
    }
    // `Records` that is not a list: not an SQS event.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mirror-inputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", path.display());
    }

    fn rejection(outcome: &RecordOutcome) -> String {
        match &outcome.outcome {
            Outcome::Rejected(why) => why.to_string(),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_directory_is_read_in_name_order_and_every_entry_passed_over_is_named() {
        let dir = temp_dir("dir");
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        std::fs::write(dir.join("b-envelope"), "{}").unwrap();
        std::fs::write(
            dir.join("a.json"),
            r#"{"Records": [{"messageId": "m1", "body": "x"}, {"body": "y"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.join(".hidden.json"), "{}").unwrap();
        std::fs::write(dir.join("nested/c.json"), "{}").unwrap();
        let fifo = dir.join("c-fifo");
        mkfifo(&fifo);
        let inputs = read_paths(std::slice::from_ref(&dir));
        let ids: Vec<String> = inputs
            .records
            .iter()
            .map(|r| r.message_id.clone())
            .collect();
        let a = dir.join("a.json").display().to_string();
        assert_eq!(
            ids,
            vec![
                "m1".to_string(),
                format!("{a}#1"),
                dir.join("b-envelope").display().to_string()
            ]
        );
        assert!(inputs.problems.is_empty());
        let skipped: Vec<(String, String)> = inputs
            .skipped
            .iter()
            .map(|s| {
                (
                    s.path.rsplit('/').next().unwrap().to_string(),
                    s.reason.clone(),
                )
            })
            .collect();
        assert_eq!(
            skipped,
            vec![
                (".hidden.json".into(), "hidden".into()),
                ("c-fifo".into(), "a FIFO, not a regular file".into()),
                (
                    "nested".into(),
                    "a directory: subdirectories are not entered".into()
                ),
            ]
        );
        let inputs = read_paths(&[dir.join("missing.json")]);
        assert!(
            matches!(&inputs.problems[0].outcome, Outcome::Failed(why) if why.contains("missing.json"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_is_not_a_regular_file_is_refused_unread() {
        let dir = temp_dir("special");
        let fifo = dir.join("fifo");
        mkfifo(&fifo);
        // A FIFO with no writer would block an open forever; /dev/zero never ends.
        for path in [fifo, PathBuf::from("/dev/zero")] {
            let inputs = read_paths(std::slice::from_ref(&path));
            assert!(inputs.records.is_empty());
            let why = rejection(&inputs.problems[0]);
            assert!(why.contains("not a regular file"), "{why}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_record_of_an_sqs_event_stands_alone() {
        let dir = temp_dir("records");
        let file = dir.join("event.json");
        let good = |id: &str| format!(r#"{{"messageId": "{id}", "body": "{{}}"}}"#);
        std::fs::write(
            &file,
            format!(
                r#"{{"Records": [{}, {{"messageId":"bad","body":5}}, {}, {{"messageId": 7, "body": "x"}}, 42,
                    {{"messageId": "count", "body": "x", "attributes": {{"ApproximateReceiveCount": 3}}}},
                    {{"messageId": "surrogate", "body": "\ud800"}}, {}]}}"#,
                good("g1"),
                good("g2"),
                good("g3")
            ),
        )
        .unwrap();
        let inputs = read_paths(std::slice::from_ref(&file));
        let ids: Vec<&str> = inputs
            .records
            .iter()
            .map(|r| r.message_id.as_str())
            .collect();
        assert_eq!(ids, ["g1", "g2", "g3"]);
        let name = file.display().to_string();
        let rejected: Vec<(&str, String)> = inputs
            .problems
            .iter()
            .map(|p| (p.message_id.as_str(), rejection(p)))
            .collect();
        let ids: Vec<&str> = rejected.iter().map(|(id, _)| *id).collect();
        let (p3, p4) = (format!("{name}#3"), format!("{name}#4"));
        assert_eq!(ids, ["bad", &p3, &p4, "count", "surrogate"]);
        assert!(rejected[0].1.contains("record 1 of"), "{}", rejected[0].1);
        assert!(rejected[0].1.contains("messageId bad"), "{}", rejected[0].1);
        assert!(rejected[4].1.contains("record 6 of"), "{}", rejected[4].1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn json_lines_are_one_record_a_line_and_a_bad_line_stands_alone() {
        let dir = temp_dir("lines");
        let file = dir.join("events.jsonl");
        let long = format!("{{\"x\": \"{}\"}}", "a".repeat(MAX_BODY_BYTES + 10));
        std::fs::write(
            &file,
            format!("{{\"a\": 1}}\n\n{{\"b\": 2}}\r\nnot json\n{long}\n{{\"c\": 3}}"),
        )
        .unwrap();
        let inputs = read_paths(std::slice::from_ref(&file));
        let name = file.display().to_string();
        let records: Vec<(String, String)> = inputs
            .records
            .iter()
            .map(|r| (r.message_id.clone(), r.body.clone().unwrap()))
            .collect();
        assert_eq!(
            records,
            vec![
                (format!("{name}:1"), r#"{"a": 1}"#.to_string()),
                (format!("{name}:3"), r#"{"b": 2}"#.to_string()),
                (format!("{name}:4"), "not json".to_string()),
                (format!("{name}:6"), r#"{"c": 3}"#.to_string()),
            ]
        );
        assert_eq!(inputs.problems.len(), 1);
        assert_eq!(inputs.problems[0].message_id, format!("{name}:5"));
        assert!(rejection(&inputs.problems[0]).starts_with("too large"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_single_envelope_larger_than_a_body_is_refused_without_reading_it_whole() {
        let dir = temp_dir("large");
        let file = dir.join("big.json");
        // Pretty-printed (not JSON lines), and 3 MiB.
        std::fs::write(
            &file,
            format!("{{\n\"payload\": \"{}\"\n}}", "a".repeat(3 << 20)),
        )
        .unwrap();
        let inputs = read_paths(std::slice::from_ref(&file));
        assert!(inputs.records.is_empty());
        assert!(rejection(&inputs.problems[0]).starts_with("too large"));
        // A small one is read as it is.
        std::fs::write(&file, "{\n  \"eventType\": \"x\"\n}\n").unwrap();
        let inputs = read_paths(std::slice::from_ref(&file));
        assert_eq!(inputs.records.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
