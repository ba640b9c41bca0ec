//! The oracle: the derived columns recomputed from the rows themselves.

use serde_json::{json, Value};

use crate::*;

/// The derived columns recomputed from the rows themselves; one line per disagreement.
pub fn derived_column_disagreements(snapshot: &realtime_mirror::store::Snapshot) -> Vec<String> {
    let mut wrong = Vec::new();
    let messages = snapshot.rows("dm_messages");
    for c in snapshot.rows("dm_conversations") {
        let id = &c["conversation_id"];
        let of_conversation: Vec<&Value> = messages
            .iter()
            .filter(|m| &m["conversation_id"] == id)
            .collect();
        if of_conversation.is_empty() {
            continue;
        }
        let newest = of_conversation
            .iter()
            .filter(|m| m["deleted_at"].is_null())
            .max_by(|x, y| {
                let key = |m: &Value| {
                    (
                        m["created_at"].as_str().unwrap().to_string(),
                        m["message_id"].as_str().unwrap().to_string(),
                    )
                };
                key(x).cmp(&key(y))
            });
        let expected = match (c["deleted_at"].is_null(), newest) {
            (true, Some(m)) => json!([
                m["message_id"],
                m["created_at"],
                m["author_id"],
                m["body"]
                    .as_str()
                    .map(|b| b.chars().take(140).collect::<String>())
            ]),
            _ => json!([null, null, null, null]),
        };
        let actual = json!([
            c["last_message_id"],
            c["last_message_at"],
            c["last_message_author_id"],
            c["last_message_preview"]
        ]);
        if expected != actual {
            wrong.push(format!(
                "conversation {id}: last_message_* {actual} but the rows say {expected}"
            ));
        }
        let participants: Vec<&str> = c["participant_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut distinct = participants.clone();
        distinct.sort_unstable();
        distinct.dedup();
        for m in &of_conversation {
            let author = m["author_id"].as_str();
            let expected = match author {
                Some(author) if m["deleted_at"].is_null() && distinct.len() == 2 => distinct
                    .iter()
                    .position(|p| *p == author)
                    .map(|i| distinct[1 - i]),
                _ => None,
            };
            if m["recipient_id"].as_str() != expected {
                wrong.push(format!(
                    "message {id}/{}: recipient_id {} but participants {participants:?} say {expected:?}",
                    m["message_id"], m["recipient_id"]
                ));
            }
        }
    }
    wrong
}
