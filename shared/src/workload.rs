//! A reproducible stream of events like a DM app's queues carry, for `mirrorctl bench` and
//! the fault tests: mostly new messages, with edits, deletes, conversation and follow
//! changes, redelivered duplicates and stale (out-of-order) versions, bodies of realistic
//! sizes. The same seed and count give the same bodies, byte for byte, on any machine.

use serde_json::{json, Value};

/// How the stream is made.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub events: usize,
    pub seed: u64,
    /// How many conversations the messages spread over (at least 1).
    pub conversations: usize,
}

impl Spec {
    /// `events` events over one conversation per 50 events (at least 10).
    pub fn new(events: usize, seed: u64) -> Spec {
        Spec {
            events,
            seed,
            conversations: (events / 50).max(10),
        }
    }
}

/// SplitMix64: a tiny, well-known generator with a fixed output for a seed (no dependency
/// needed for a benchmark's or a test's reproducible choices).
pub struct Random(pub u64);

impl Random {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// The share of each kind of event, in percent (the rest are new messages).
const DUPLICATE: usize = 5;
const STALE: usize = 5;
const CONVERSATION: usize = 8;
const FOLLOW: usize = 12;
const MESSAGE_DELETE: usize = 3;
const MESSAGE_EDIT: usize = 10;
/// How far back duplicates and edits reach.
const RECENT: usize = 1024;

/// A message the stream has sent, to edit, delete or send again.
#[derive(Clone)]
struct Sent {
    conversation: usize,
    message: usize,
    author: String,
    created_ms: i64,
    version_ms: i64,
}

/// The generator: an iterator of envelope texts.
pub struct Stream {
    spec: Spec,
    random: Random,
    emitted: usize,
    /// Recent bodies (for duplicates) and messages (for edits, deletes, stale copies), as
    /// rings of at most [`RECENT`].
    recent_bodies: Vec<String>,
    recent_messages: Vec<Sent>,
}

/// The stream of `spec`.
pub fn stream(spec: Spec) -> Stream {
    Stream {
        spec,
        random: Random(spec.seed),
        emitted: 0,
        recent_bodies: Vec::new(),
        recent_messages: Vec::new(),
    }
}

/// 2025-01-01T00:00:00Z, and one event every 10 ms after it.
const START_MS: i64 = 1_735_689_600_000;

fn at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("benchmark times are in range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn remember<T>(ring: &mut Vec<T>, item: T, index: usize) {
    if ring.len() < RECENT {
        ring.push(item);
    } else {
        ring[index % RECENT] = item;
    }
}

impl Stream {
    /// A body of a realistic length: most a few words, some a paragraph, a few long.
    fn body(&mut self) -> String {
        let length = match self.random.below(100) {
            0..=59 => 10 + self.random.below(50),
            60..=89 => 60 + self.random.below(140),
            _ => 200 + self.random.below(800),
        };
        const WORDS: [&str; 8] = ["see", "you", "at", "the", "café", "tonight", "ok", "👍"];
        let mut text = String::with_capacity(length + 8);
        while text.len() < length {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(WORDS[self.random.below(WORDS.len())]);
        }
        text
    }

    fn participants(conversation: usize) -> [String; 2] {
        [
            format!("u{}", conversation % 997),
            format!("u{}", 1000 + conversation % 991),
        ]
    }

    fn message(&mut self, sent: &Sent, event_type: &str, body: Option<String>) -> Value {
        let mut payload = json!({
            "conversationId": format!("c{}", sent.conversation),
            "messageId": format!("m{}", sent.message),
            "authorId": sent.author,
            "createdAt": at(sent.created_ms),
            "updatedAt": at(sent.version_ms),
        });
        match body {
            Some(body) => payload["body"] = body.into(),
            None => payload["deletedAt"] = at(sent.version_ms).into(),
        }
        json!({"eventType": event_type, "occurredAt": at(sent.version_ms), "payload": payload})
    }

    fn next_event(&mut self) -> String {
        let i = self.emitted;
        let now = START_MS + 10 * i as i64;
        let roll = self.random.below(100);
        let recent_message = (!self.recent_messages.is_empty()).then(|| {
            let k = self.random.below(self.recent_messages.len());
            self.recent_messages[k].clone()
        });
        // Cumulative bands of the roll.
        let duplicate = DUPLICATE;
        let stale = duplicate + STALE;
        let conversation = stale + CONVERSATION;
        let follow = conversation + FOLLOW;
        let delete = follow + MESSAGE_DELETE;
        let edit = delete + MESSAGE_EDIT;
        let event = if roll < duplicate && !self.recent_bodies.is_empty() {
            let k = self.random.below(self.recent_bodies.len());
            return self.recent_bodies[k].clone();
        } else if let (true, Some(sent)) = (roll < stale, &recent_message) {
            // An edit older than the version already sent: stale on arrival.
            let older = Sent {
                version_ms: sent.version_ms - 1,
                ..sent.clone()
            };
            let body = self.body();
            self.message(&older, "dm.message.updated", Some(body))
        } else if roll < conversation {
            let c = self.random.below(self.spec.conversations);
            json!({"eventType": "dm.conversation.updated", "occurredAt": at(now), "payload": {
                "conversationId": format!("c{c}"), "ownerId": Self::participants(c)[0],
                "participantIds": Self::participants(c), "createdAt": at(START_MS),
                "updatedAt": at(now)}})
        } else if roll < follow {
            let user = self.random.below(5000);
            let target = self.random.below(5000);
            let ids = json!({"userId": format!("u{user}"), "targetId": format!("u{target}")});
            if self.random.below(10) == 0 {
                json!({"eventType": "follow.edge.deleted", "occurredAt": at(now), "payload": ids})
            } else {
                let mut payload = ids;
                payload["edgeType"] = "follow".into();
                payload["createdAt"] = at(now).into();
                json!({"eventType": "follow.edge.created", "occurredAt": at(now), "payload": payload})
            }
        } else if let (true, Some(sent)) = (roll < edit, recent_message) {
            let newer = Sent {
                version_ms: now,
                ..sent
            };
            let body = (roll >= delete).then(|| self.body());
            let event_type = if body.is_some() {
                "dm.message.updated"
            } else {
                "dm.message.deleted"
            };
            let event = self.message(&newer, event_type, body);
            remember(&mut self.recent_messages, newer, i);
            event
        } else {
            let c = self.random.below(self.spec.conversations);
            let author = Self::participants(c)[self.random.below(2)].clone();
            let sent = Sent {
                conversation: c,
                message: i,
                author,
                created_ms: now,
                version_ms: now,
            };
            let body = self.body();
            let event = self.message(&sent, "dm.message.created", Some(body));
            remember(&mut self.recent_messages, sent, i);
            event
        };
        let text = event.to_string();
        remember(&mut self.recent_bodies, text.clone(), i);
        text
    }
}

impl Iterator for Stream {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.emitted >= self.spec.events {
            return None;
        }
        let text = self.next_event();
        self.emitted += 1;
        Some(text)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.spec.events - self.emitted;
        (left, Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Limits};
    use crate::timestamp::Timestamp;

    #[test]
    fn the_same_seed_gives_the_same_stream_and_every_event_is_valid() {
        let a: Vec<String> = stream(Spec::new(3000, 7)).collect();
        let b: Vec<String> = stream(Spec::new(3000, 7)).collect();
        let c: Vec<String> = stream(Spec::new(3000, 8)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let limits = Limits {
            now: Timestamp::now(),
            max_future_skew: std::time::Duration::from_secs(900),
        };
        let mut types = std::collections::BTreeMap::new();
        for body in &a {
            let event = Event::parse(body, limits).unwrap_or_else(|e| panic!("{e}: {body}"));
            *types.entry(event.event_type.to_string()).or_insert(0) += 1;
        }
        let distinct: std::collections::HashSet<&String> = a.iter().collect();
        assert!(distinct.len() < a.len(), "some duplicates");
        for t in [
            "dm.message.created",
            "dm.message.updated",
            "dm.message.deleted",
            "dm.conversation.updated",
            "follow.edge.created",
            "follow.edge.deleted",
        ] {
            assert!(types.get(t).copied().unwrap_or(0) > 10, "{t}: {types:?}");
        }
    }
}
