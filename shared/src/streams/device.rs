//! The device side: replay from the last acknowledged id, proven continuous by `prev`, or a
//! resync; acknowledgements that never move backwards (docs/streams.md).

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;
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
    Resync { reason: String, resume_from: String },
}

/// A stream entry id, `<ms>-<seq>`, for comparing.
fn id_parts(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Up to `count` entries of `user`'s stream after `after` (from the start without it).
pub async fn tail(
    connection: &mut MultiplexedConnection,
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

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn entries(reply: Value) -> Result<Vec<Entry>, String> {
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

/// The id of the newest entry a stream ever had (`last-generated-id`), or None when the
/// stream does not exist.
async fn last_generated(
    connection: &mut MultiplexedConnection,
    user_id: &str,
) -> Result<Option<String>, String> {
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
    Ok(pairs
        .into_iter()
        .find(|(k, _)| k == "last-generated-id")
        .and_then(|(_, v)| text(&v)))
}

/// What device `device_id` of `user_id` missed: the entries after its last acknowledged
/// id — exactly those: the first one's `prev` must be that id — or, when some of them are
/// gone (trimmed away, or lost by Redis), the device never acknowledged anything, or the
/// stream is newer than what it saw, a resync. Never a replay with a hole.
pub async fn replay(
    connection: &mut MultiplexedConnection,
    user_id: &str,
    device_id: &str,
    count: usize,
) -> Result<Replay, String> {
    let last_seen: Option<String> = redis::cmd("GET")
        .arg(device_key(device_id))
        .query_async(connection)
        .await
        .map_err(|e| format!("GET failed: {e}"))?;
    let newest = last_generated(connection, user_id).await?;
    let resync = |reason: &str| {
        Ok(Replay::Resync {
            reason: reason.to_string(),
            resume_from: newest.clone().unwrap_or_else(|| "0-0".to_string()),
        })
    };
    let Some(last_seen) = last_seen else {
        return resync("the device has acknowledged nothing yet: load from SQL first");
    };
    let seen = id_parts(&last_seen).ok_or_else(|| {
        format!(
            "{} holds {last_seen:?}, not an entry id",
            device_key(device_id)
        )
    })?;
    match newest.as_deref().and_then(id_parts) {
        None if seen == (0, 0) => {}
        None => return resync("the stream is gone (Redis lost it): load from SQL"),
        Some(newest) if seen > newest => return resync(
            "the stream is older than the device's last seen id (Redis lost data): load from SQL",
        ),
        Some(_) => {}
    }
    let entries = tail(connection, user_id, Some(&last_seen), count).await?;
    if let Some(first) = entries.first() {
        if first.fields.get("prev") != Some(&last_seen) {
            return resync(
                "entries after the device's last seen id are gone (trimmed away, or lost by Redis): load from SQL",
            );
        }
    }
    Ok(Replay::Entries {
        entries,
        after: last_seen,
    })
}

/// Records that `device_id` has seen everything up to `id`; never moves backwards (an old
/// acknowledgement arriving late changes nothing). Returns the id now stored.
pub async fn ack(
    connection: &mut MultiplexedConnection,
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
