//! The device side: replay from the last acknowledged id, proven continuous by `prev`, or a
//! resync; acknowledgements that never move backwards (docs/streams.md).

use std::collections::BTreeMap;

use redis::aio::ConnectionLike;
use redis::Value;
use serde::Serialize;

use super::{device_key, stream_key};

/// One stream entry as a device sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: String,
    #[serde(flatten)]
    pub fields: BTreeMap<String, String>,
}

/// What a device gets when it reconnects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "replay",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Replay {
    /// Exactly the entries after its last acknowledged id (up to the count asked for; ask
    /// again after the last one for more).
    Entries { after: String, entries: Vec<Entry> },
    /// Entries it never saw are gone: load the user's state from SQL, then acknowledge
    /// `resume_from` and replay from there.
    Resync {
        reason: String,
        resume_from: String,
        /// Why, as a short word for metrics: one of [`Gap::code`].
        #[serde(skip)]
        code: &'static str,
    },
}

/// Why a replay cannot be given: each case a resync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gap {
    /// The device has acknowledged nothing yet.
    NeverAcknowledged,
    /// The stream does not exist although the device saw entries of it.
    StreamGone,
    /// The stream ends before the device's last seen id.
    StreamOlder,
    /// The first entry after the device's last seen id does not follow it (`prev`).
    Trimmed,
    /// Two entries of one replay or of the live feed do not follow each other.
    Hole,
    /// More entries were missed than one replay may hold.
    TooMany,
    /// The device was bound to another user before: what it acknowledged is not this
    /// user's.
    Rebound,
    /// The connection to Redis was lost and the stream may have lost entries meanwhile.
    RedisLost,
}

impl Gap {
    /// A short word, for metrics labels.
    pub fn code(self) -> &'static str {
        match self {
            Gap::NeverAcknowledged => "never_acknowledged",
            Gap::StreamGone => "stream_gone",
            Gap::StreamOlder => "stream_older",
            Gap::Trimmed => "trimmed",
            Gap::Hole => "hole",
            Gap::TooMany => "too_many",
            Gap::Rebound => "rebound",
            Gap::RedisLost => "redis_lost",
        }
    }

    /// What the device is told.
    pub fn reason(self) -> &'static str {
        match self {
            Gap::NeverAcknowledged => "the device has acknowledged nothing yet: load from SQL first",
            Gap::StreamGone => "the stream is gone (expired after StreamMaxAge without an entry, or Redis lost it): load from SQL",
            Gap::StreamOlder => "the stream is older than the device's last seen id (Redis lost data): load from SQL",
            Gap::Trimmed => "entries after the device's last seen id are gone (trimmed away, or lost by Redis): load from SQL",
            Gap::Hole => "an entry does not follow the one before it (prev): entries were lost; load from SQL",
            Gap::TooMany => "the device missed more entries than one replay holds: load from SQL",
            Gap::Rebound => "the device belonged to another user: load this user's state from SQL",
            Gap::RedisLost => "the connection to Redis was lost and entries may be gone: load from SQL",
        }
    }

    /// The resync for this gap, resuming from `newest` (the stream's last generated id).
    pub fn resync(self, newest: Option<&str>) -> Replay {
        Replay::Resync {
            reason: self.reason().to_string(),
            resume_from: newest.unwrap_or("0-0").to_string(),
            code: self.code(),
        }
    }
}

/// Whether `id` is a stream entry id (`ms-seq`, or `ms`).
pub fn is_entry_id(id: &str) -> bool {
    id_parts(id).is_some()
}

/// Whether entry id `a` comes after `b`; false when either is not an id.
pub fn is_after(a: &str, b: &str) -> bool {
    matches!((id_parts(a), id_parts(b)), (Some(a), Some(b)) if a > b)
}

/// A stream entry id, `<ms>-<seq>`, for comparing.
/// An entry id as its two numbers (`ms-seq`; a bare `ms` is `ms-0`).
pub fn id_parts(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Up to `count` entries of `user`'s stream after `after` (from the start without it).
pub async fn tail(
    connection: &mut (impl ConnectionLike + Send),
    user_id: &str,
    after: Option<&str>,
    count: usize,
) -> Result<Vec<Entry>, String> {
    if let Some(after) = after {
        id_parts(after).ok_or_else(|| format!("{after:?} is not a stream entry id (ms-seq)"))?;
    }
    let start = after.map_or("-".to_string(), |id| format!("({id}"));
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream_key(user_id))
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(connection)
        .await
        .map_err(|e| format!("XRANGE failed: {e}"))?;
    entries(reply)
}

/// A reply value as text: bulk and simple strings, integers.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The entries of an XRANGE reply (or of one stream of an XREAD reply).
pub fn entries(reply: Value) -> Result<Vec<Entry>, String> {
    let Value::Array(items) = reply else {
        return Err(format!("unexpected XRANGE reply {reply:?}"));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Array(mut parts) if parts.len() == 2 => {
                let fields = parts.pop().expect("two parts");
                let id = text(&parts[0]).ok_or("an entry without an id")?;
                let Value::Array(fields) = fields else {
                    return Err("an entry without fields".to_string());
                };
                let fields = fields
                    .chunks(2)
                    .filter_map(|kv| Some((text(&kv[0])?, text(kv.get(1)?)?)))
                    .collect();
                Ok(Entry { id, fields })
            }
            other => Err(format!("unexpected XRANGE entry {other:?}")),
        })
        .collect()
}

/// What `XINFO STREAM` says of `user_id`'s stream that a consumer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The newest id the stream ever generated (its entry may have been deleted since).
    pub last_generated: String,
    /// The id of the oldest entry kept; `None` when the stream is empty.
    pub first: Option<String>,
    /// The newest id ever removed by `XDEL` (`0-0` when none was; trimming does not set
    /// it); `None` from a Redis before 7.0, which does not report it.
    pub max_deleted: Option<String>,
    /// Whether any entry was ever removed (trimmed or deleted): `entries-added` above the
    /// length; `None` from a Redis before 7.0.
    pub removed_any: Option<bool>,
}

impl StreamInfo {
    /// Whether `id`, which the stream does not hold now, was certainly never one of its
    /// entries: nothing was ever removed; or it lies inside the kept range, after the
    /// newest id ever deleted (before 7.0: inside the kept range at all).
    pub fn never_held(&self, id: &str) -> bool {
        if self.removed_any == Some(false) {
            return true;
        }
        let inside = self
            .first
            .as_deref()
            .is_some_and(|first| !is_after(first, id));
        inside
            && self
                .max_deleted
                .as_deref()
                .is_none_or(|max_deleted| is_after(id, max_deleted))
    }
}

/// The stream's [`StreamInfo`]; `None` when the stream does not exist.
pub async fn stream_info(
    connection: &mut (impl ConnectionLike + Send),
    user_id: &str,
) -> Result<Option<StreamInfo>, String> {
    let reply: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream_key(user_id))
        .query_async(connection)
        .await;
    let pairs: Vec<(String, Value)> = match reply {
        Ok(Value::Array(items)) => items
            .chunks(2)
            .filter_map(|kv| Some((text(&kv[0])?, kv.get(1)?.clone())))
            .collect(),
        Ok(Value::Map(items)) => items
            .into_iter()
            .filter_map(|(k, v)| Some((text(&k)?, v)))
            .collect(),
        Ok(other) => return Err(format!("unexpected XINFO STREAM reply {other:?}")),
        Err(e) if e.to_string().contains("no such key") => return Ok(None),
        Err(e) => return Err(format!("XINFO STREAM failed: {e}")),
    };
    let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let number = |name: &str| {
        field(name)
            .and_then(text)
            .and_then(|n| n.parse::<u64>().ok())
    };
    let first = match field("first-entry") {
        Some(Value::Array(entry)) => entry.first().and_then(text),
        _ => None,
    };
    let removed_any = match (number("entries-added"), number("length")) {
        (Some(added), Some(length)) => Some(added > length),
        _ => None,
    };
    Ok(field("last-generated-id")
        .and_then(text)
        .map(|last_generated| StreamInfo {
            last_generated,
            first,
            max_deleted: field("max-deleted-entry-id").and_then(text),
            removed_any,
        }))
}

/// The stream's `last-generated-id`; `None` when the stream does not exist.
pub async fn last_generated(
    connection: &mut (impl ConnectionLike + Send),
    user_id: &str,
) -> Result<Option<String>, String> {
    Ok(stream_info(connection, user_id)
        .await?
        .map(|info| info.last_generated))
}

/// What device `device_id` of `user_id` missed: [`replay_after`] its last acknowledged id.
pub async fn replay(
    connection: &mut (impl ConnectionLike + Send),
    user_id: &str,
    device_id: &str,
    count: usize,
) -> Result<Replay, String> {
    let last_seen: Option<String> = redis::cmd("GET")
        .arg(device_key(device_id))
        .query_async(connection)
        .await
        .map_err(|e| format!("GET failed: {e}"))?;
    if let Some(seen) = &last_seen {
        if !is_entry_id(seen) {
            return Err(format!(
                "{} holds {seen:?}, not an entry id",
                device_key(device_id)
            ));
        }
    }
    replay_after(connection, user_id, last_seen.as_deref(), count).await
}

/// The entries of `user_id`'s stream after `last_seen` — exactly those: the first one's
/// `prev` must be `last_seen`, and each next one's `prev` the one before it — or, when some
/// of them are gone (trimmed away, or lost by Redis), nothing was seen yet, or the stream
/// is newer than what was seen, a resync. Never a replay with a hole.
pub async fn replay_after(
    connection: &mut (impl ConnectionLike + Send),
    user_id: &str,
    last_seen: Option<&str>,
    count: usize,
) -> Result<Replay, String> {
    let newest = last_generated(connection, user_id).await?;
    let resync = |gap: Gap| Ok(gap.resync(newest.as_deref()));
    let Some(last_seen) = last_seen else {
        return resync(Gap::NeverAcknowledged);
    };
    let seen =
        id_parts(last_seen).ok_or_else(|| format!("{last_seen:?} is not an entry id (ms-seq)"))?;
    match newest.as_deref().and_then(id_parts) {
        None if seen == (0, 0) => {}
        None => return resync(Gap::StreamGone),
        Some(newest) if seen > newest => return resync(Gap::StreamOlder),
        Some(_) => {}
    }
    let entries = tail(connection, user_id, Some(last_seen), count).await?;
    let mut before = last_seen;
    for (i, entry) in entries.iter().enumerate() {
        if entry.fields.get("prev").map(String::as_str) != Some(before) {
            return resync(if i == 0 { Gap::Trimmed } else { Gap::Hole });
        }
        before = &entry.id;
    }
    Ok(Replay::Entries {
        entries,
        after: last_seen.to_string(),
    })
}

/// Records that `device_id` has seen everything up to `id`; never moves backwards (an old
/// acknowledgement arriving late changes nothing). Returns the id now stored.
pub async fn ack(
    connection: &mut (impl ConnectionLike + Send),
    device_id: &str,
    id: &str,
) -> Result<String, String> {
    id_parts(id).ok_or_else(|| format!("{id:?} is not a stream entry id (ms-seq)"))?;
    let script = redis::Script::new(
        r"
        local function parts(id)
            local ms, seq = string.match(id, '^(%d+)-(%d+)$')
            if not ms then ms, seq = string.match(id, '^(%d+)$'), '0' end
            return tonumber(ms), tonumber(seq)
        end
        local current = redis.call('GET', KEYS[1])
        if current then
            local cm, cs = parts(current)
            local nm, ns = parts(ARGV[1])
            if cm and (nm < cm or (nm == cm and ns <= cs)) then return current end
        end
        redis.call('SET', KEYS[1], ARGV[1])
        return ARGV[1]
        ",
    );
    script
        .key(device_key(device_id))
        .arg(id)
        .invoke_async(connection)
        .await
        .map_err(|e| format!("acknowledging failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_as_numbers() {
        assert!(id_parts("10-0") > id_parts("9-5"));
        assert!(id_parts("10-2") > id_parts("10-1"));
        assert_eq!(id_parts("7"), Some((7, 0)));
        assert_eq!(id_parts("x-1"), None);
    }
}
