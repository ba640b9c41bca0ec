//! Timestamps as the contract takes them (RFC 3339, epoch milliseconds, Firestore timestamp
//! objects) and stores them: truncated, never rounded, to microseconds, because PostgreSQL's
//! `timestamptz` holds microseconds and both stores must hold the same instant.

use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};
use serde_json::Value;

/// An instant in UTC with microsecond precision, between years 1 and 9999 so that its
/// RFC 3339 text sorts in time order (SQLite compares it as text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Truncates to the microsecond; `None` outside years 1..=9999.
    pub fn new(at: DateTime<Utc>) -> Option<Self> {
        if !(1..=9999).contains(&at.year()) {
            return None;
        }
        let micros = at.timestamp_micros();
        Utc.timestamp_micros(micros).single().map(Timestamp)
    }

    pub fn now() -> Self {
        Timestamp::new(Utc::now()).expect("the clock reads a year between 1 and 9999")
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// Parses any accepted form; the error says what was wrong, never echoing more than a
    /// short prefix of the value.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(text) => Self::parse_rfc3339(text),
            Value::Number(number) => {
                let millis = number
                    .as_i64()
                    .map(|ms| ms as f64)
                    .or_else(|| number.as_f64())
                    .ok_or_else(|| "is not a number of epoch milliseconds".to_string())?;
                let micros = (millis * 1000.0).trunc();
                if !micros.is_finite() || micros.abs() > 1e17 {
                    return Err(format!("{number} is out of range as epoch milliseconds"));
                }
                // Integers up to 2^53 microseconds are exact in f64; integral inputs are taken
                // exactly to avoid any float error.
                let micros = match number.as_i64() {
                    Some(ms) => ms.checked_mul(1000).ok_or("is out of range")?,
                    None => micros as i64,
                };
                Self::from_micros(micros)
            }
            Value::Object(map) => {
                let (seconds, nanos) = match (map.get("_seconds"), map.get("seconds")) {
                    (Some(s), _) => (s, map.get("_nanoseconds")),
                    (None, Some(s)) => (s, map.get("nanos")),
                    (None, None) => {
                        return Err(
                            "is an object without _seconds/_nanoseconds or seconds/nanos".into(),
                        )
                    }
                };
                let seconds = integer(seconds).ok_or("has seconds that are not an integer")?;
                let nanos = match nanos {
                    None | Some(Value::Null) => 0,
                    Some(n) => integer(n).ok_or("has nanoseconds that are not an integer")?,
                };
                if !(0..1_000_000_000).contains(&nanos) {
                    return Err("has nanoseconds outside 0..999999999".into());
                }
                let micros = seconds
                    .checked_mul(1_000_000)
                    .and_then(|s| s.checked_add(nanos / 1000))
                    .ok_or("is out of range")?;
                Self::from_micros(micros)
            }
            other => Err(format!(
                "must be an RFC 3339 string, epoch milliseconds or a Firestore timestamp, not {}",
                json_kind(other)
            )),
        }
    }

    /// `age` before now; `None` when that is before year 1.
    pub fn ago(age: std::time::Duration) -> Option<Self> {
        chrono::Duration::from_std(age)
            .ok()
            .and_then(|age| Timestamp::now().as_datetime().checked_sub_signed(age))
            .and_then(Timestamp::new)
    }

    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        let parsed = DateTime::parse_from_rfc3339(text)
            .map_err(|e| format!("{:?} is not an RFC 3339 timestamp ({e})", clip(text)))?;
        Timestamp::new(parsed.with_timezone(&Utc))
            .ok_or_else(|| format!("{:?} is outside years 1 to 9999", clip(text)))
    }

    fn from_micros(micros: i64) -> Result<Self, String> {
        Utc.timestamp_micros(micros)
            .single()
            .and_then(Timestamp::new)
            .ok_or_else(|| "is outside years 1 to 9999".to_string())
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 UTC with exactly six fractional digits: the form hashed and stored in SQLite.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        // Protobuf's JSON mapping writes int64 as a string.
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A short, safe prefix of a value for an error message.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truncates_not_rounds_to_microseconds() {
        let t = Timestamp::parse_rfc3339("2025-10-08T12:34:00.1234569+02:00").unwrap();
        assert_eq!(t.to_string(), "2025-10-08T10:34:00.123456Z");
    }

    #[test]
    fn accepts_epoch_millis_and_firestore_objects() {
        let a = Timestamp::from_json(&json!(1759926840123_i64)).unwrap();
        let b = Timestamp::from_json(&json!({"_seconds": 1759926840, "_nanoseconds": 123999999}))
            .unwrap();
        let c =
            Timestamp::from_json(&json!({"seconds": "1759926840", "nanos": 123000000})).unwrap();
        assert_eq!(a.to_string(), "2025-10-08T12:34:00.123000Z");
        assert_eq!(b.to_string(), "2025-10-08T12:34:00.123999Z");
        assert_eq!(a, c);
    }

    #[test]
    fn rejects_other_forms_with_a_reason() {
        assert!(Timestamp::from_json(&json!(true))
            .unwrap_err()
            .contains("boolean"));
        assert!(Timestamp::from_json(&json!("yesterday"))
            .unwrap_err()
            .contains("RFC 3339"));
        assert!(
            Timestamp::from_json(&json!({"_seconds": 1, "_nanoseconds": 2_000_000_000})).is_err()
        );
    }
}
