//! What a chunk writes, decided without the database.

use std::collections::HashMap;

use super::{Pending, Written};
use crate::event::EntityKey;

/// Decides, without the database, which events of a chunk are written: per entity the
/// greatest by rank (the first of equals); the rest are duplicates (equal rank) or stale.
/// Returns the known outcomes and the winners' indexes.
pub fn plan(chunk: &[Pending]) -> (Vec<Option<Written>>, Vec<usize>) {
    let mut written: Vec<Option<Written>> = vec![None; chunk.len()];
    let mut best: HashMap<&EntityKey, usize> = HashMap::new();
    let mut order: Vec<&EntityKey> = Vec::new();
    for (i, pending) in chunk.iter().enumerate() {
        let event = &pending.event;
        match best.get(&event.key) {
            None => {
                order.push(&event.key);
                best.insert(&event.key, i);
            }
            Some(&j) if event.rank() > chunk[j].event.rank() => {
                best.insert(&event.key, i);
            }
            Some(_) => {}
        }
    }
    for (i, pending) in chunk.iter().enumerate() {
        let winner = best[&pending.event.key];
        if i != winner {
            written[i] = Some(if pending.event.rank() == chunk[winner].event.rank() {
                Written::Duplicate
            } else {
                Written::Stale
            });
        }
    }
    let winners = order.into_iter().map(|k| best[k]).collect();
    (written, winners)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow(user: &str, at: &str, operation: &str, edge_type: &str) -> Pending {
        let body = serde_json::json!({
            "eventType": format!("follow.edge.{operation}"),
            "occurredAt": at,
            "payload": {"userId": user, "targetId": "t", "edgeType": edge_type, "createdAt": at},
        });
        Pending::of(&body)
    }

    const T0: &str = "2025-10-08T12:00:00Z";
    const T1: &str = "2025-10-08T12:01:00Z";

    #[test]
    fn per_entity_the_greatest_rank_is_written_and_the_rest_are_stale_or_duplicates() {
        let chunk = [
            follow("a", T0, "created", "follow"),
            follow("b", T0, "created", "follow"),
            follow("a", T1, "updated", "follow"),
            follow("b", T0, "created", "follow"),
            follow("c", T0, "created", "follow"),
        ];
        let (written, winners) = plan(&chunk);
        assert_eq!(
            winners,
            [2, 1, 4],
            "one per entity, in order of first appearance"
        );
        assert_eq!(
            written,
            [
                Some(Written::Stale),
                None,
                None,
                Some(Written::Duplicate),
                None
            ]
        );
    }

    #[test]
    fn on_equal_versions_a_delete_and_then_the_greater_content_hash_win_the_plan() {
        let upsert = follow("a", T0, "created", "follow");
        let delete = follow("a", T0, "deleted", "follow");
        assert_eq!(plan(&[upsert.clone(), delete.clone()]).1, [1]);
        assert_eq!(plan(&[delete, upsert]).1, [0]);

        let x = follow("a", T0, "created", "follow");
        let y = follow("a", T0, "created", "mute");
        let greater = if x.event.content_hash > y.event.content_hash {
            0
        } else {
            1
        };
        assert_eq!(plan(&[x.clone(), y.clone()]).1, [greater]);
        assert_eq!(plan(&[y, x]).1, [1 - greater], "whatever the order");
    }
}
