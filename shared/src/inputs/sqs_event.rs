//! Files holding an SQS event (`{"Records": [...]}`), streamed one record at a time: each
//! record is read under a budget of [`MAX_RECORD_JSON_BYTES`], and a malformed one is
//! rejected alone with its position.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::rc::Rc;

use aws_lambda_events::event::sqs::SqsMessage;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::batch::{Outcome, Record, RecordOutcome};
use crate::rejection::Rejection;

use super::{Sink, MAX_RECORD_JSON_BYTES};

pub(super) enum SqsEventFile {
    /// The top level is an object with a `Records` array: every record was read.
    Read,
    /// Not an SQS event (no `Records` array at the top level); nothing was taken from it.
    No,
    /// An SQS event whose JSON breaks after record `after`; the records before it were read.
    Broken { after: usize, why: String },
}

/// Streams the file as an SQS event, one record at a time.
pub(super) fn read_sqs_event(file: File, name: &str, inputs: &mut dyn Sink) -> SqsEventFile {
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
pub(super) fn describe(e: &serde_json::Error) -> String {
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
pub(super) struct Budgeted<R> {
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

pub(super) struct Stream<'a> {
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
pub(super) struct TopLevel<'s, 'a>(&'s mut Stream<'a>);

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

pub(super) struct RecordList<'s, 'a>(&'s mut Stream<'a>);

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
