//! Hostile input (docs/contract.md §1, §3 "Rejected events"): whatever a queue or a file
//! hands the mirror — arbitrary bytes, arbitrary JSON, a valid envelope with any field
//! replaced by anything — is either accepted or rejected with a reason that says what was
//! wrong, never a panic, never a transient failure that would be retried forever. The
//! committed corpus in `tests/corpus/hostile/` (with its expected outcomes) pins the nasty
//! cases by name, applied the way an operator would, with `mirrorctl apply`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use mirror_tests::realtime_mirror::config::Config;
use mirror_tests::realtime_mirror::event::{Event, Limits};
use mirror_tests::realtime_mirror::inputs::{self, Item};
use mirror_tests::realtime_mirror::timestamp::Timestamp;
use mirror_tests::realtime_mirror::{Outcome, Rejection};
use mirror_tests::{run_for_json, workspace_binary, Mirror};
use proptest::prelude::*;
use serde_json::{json, Value};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/hostile");

fn limits() -> Limits {
    Limits {
        now: Timestamp::now(),
        max_future_skew: std::time::Duration::from_secs(900),
    }
}

/// A rejection's text starts with its kind and goes on to say what was wrong.
fn assert_explained(why: &Rejection) {
    let text = why.to_string();
    let kind = why.kind();
    assert!(
        text.starts_with(kind) && text.len() > kind.len() + 4,
        "a rejection without a reason: {text:?}"
    );
}

fn parse(body: &str) -> Result<(), TestCaseError> {
    if let Err(why) = Event::parse(body, limits()) {
        assert_explained(&why);
    }
    Ok(())
}

/// Arbitrary JSON, nested up to a few levels, with the awkward scalars: huge and negative
/// numbers, floats, strings with control characters, NULs and non-BMP characters.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        "[a-z0-9_]{1,8}".prop_map(Value::from),
        Just(Value::from("2025-10-08T12:34:00Z")),
        Just(Value::from("\u{0}")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,10}|.{0,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Valid bodies of every shape and family, to be spoiled one field at a time.
fn templates() -> Vec<Value> {
    let message = json!({"eventType": "dm.message.created", "eventId": "e1", "occurredAt": "2025-10-08T12:34:00Z",
        "entityId": "c1/m1", "source": "firestore", "attempt": 1,
        "payload": {"conversationId": "c1", "messageId": "m1", "authorId": "u1", "body": "hi",
                    "media": {"kind": "image"}, "createdAt": "2025-10-08T12:34:00Z",
                    "updatedAt": "2025-10-08T12:34:00Z"}});
    let conversation = json!({"eventType": "dm.conversation.updated", "occurredAt": "2025-10-08T12:34:00Z",
        "payload": {"conversationId": "c1", "ownerId": "u1", "participantIds": ["u1", "u2"],
                    "lastMessageAt": "2025-10-08T12:34:00Z", "lastMessagePreview": "hi",
                    "lastMessageAuthorId": "u1", "createdAt": "2025-10-08T12:34:00Z",
                    "updatedAt": "2025-10-08T12:34:00Z"}});
    let follow = json!({"eventType": "follow.edge.created", "occurredAt": "2025-10-08T12:34:00Z",
        "payload": {"userId": "u1", "targetId": "u2", "edgeType": "follow",
                    "createdAt": "2025-10-08T12:34:00Z", "updatedAt": "2025-10-08T12:34:00Z"}});
    let cloud_event = json!({"specversion": "1.0", "type": "dm.message.update", "id": "ce-1",
        "source": "//firestore", "time": "2025-10-08T12:34:00Z",
        "data": {"operation": "update", "conversationId": "c1", "messageId": "m1",
                 "document": {"conversationId": "c1", "messageId": "m1", "authorId": "u1",
                              "body": "hi", "createdAt": "2025-10-08T12:34:00Z"},
                 "previousDocument": {"conversationId": "c1", "messageId": "m1"}}});
    let delete = json!({"eventType": "dm.message.deleted", "occurredAt": "2025-10-08T12:34:00Z",
        "entityId": "c1/m1"});
    let sns = json!({"Type": "Notification", "Message": follow.to_string()});
    let eventbridge =
        json!({"detail-type": "change", "source": "app", "detail": conversation.clone()});
    vec![
        message,
        conversation,
        follow,
        cloud_event,
        delete,
        sns,
        eventbridge,
    ]
}

/// Every path to a value in `value` (object keys and array indexes), the root excluded.
fn paths(value: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    let children: Vec<(Value, &Value)> = match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (Value::from(k.clone()), v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (Value::from(i), v))
            .collect(),
        _ => return,
    };
    for (key, child) in children {
        prefix.push(key);
        out.push(prefix.clone());
        paths(child, prefix, out);
        prefix.pop();
    }
}

fn replaced(mut value: Value, path: &[Value], new: Value) -> Value {
    let mut at = &mut value;
    for key in path {
        at = match key {
            Value::String(k) => &mut at[k.as_str()],
            Value::Number(i) => &mut at[i.as_u64().unwrap() as usize],
            _ => unreachable!(),
        };
    }
    *at = new;
    value
}

fn spoiled() -> impl Strategy<Value = Value> {
    let cases: Vec<(Value, Vec<Value>)> = templates()
        .into_iter()
        .flat_map(|t| {
            let mut all = Vec::new();
            paths(&t, &mut Vec::new(), &mut all);
            all.into_iter().map(move |p| (t.clone(), p))
        })
        .collect();
    (prop::sample::select(cases), any_json())
        .prop_map(|((template, path), new)| replaced(template, &path, new))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_accepted_or_rejected_with_a_reason(body in ".{0,300}") {
        parse(&body)?;
    }

    #[test]
    fn arbitrary_json_is_accepted_or_rejected_with_a_reason(value in any_json()) {
        parse(&value.to_string())?;
    }

    /// Bytes as a JSON-lines file that `mirrorctl apply` reads: every line is a record or a
    /// problem with a reason (not UTF-8, too large), and reading never panics.
    #[test]
    fn arbitrary_bytes_in_an_input_file_are_read_or_rejected_with_a_reason(
        bytes in prop::collection::vec(any::<u8>(), 0..600)
    ) {
        let dir = std::env::temp_dir().join(format!("hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.jsonl", bytes.len()));
        std::fs::write(&path, &bytes).unwrap();
        inputs::each(std::slice::from_ref(&path), &mut |item: Item| match item {
            Item::Record(r) => {
                if let Some(body) = r.body {
                    parse(&body).unwrap();
                }
            }
            Item::Problem(p) => match p.outcome {
                Outcome::Rejected(why) => assert_explained(&why),
                other => panic!("a problem reading {}: {other:?}", p.message_id),
            },
            Item::Skipped(_) => {}
        });
        std::fs::remove_file(&path).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A valid body of any shape with one field (at any depth) replaced by arbitrary JSON,
    /// applied through the functions' processor on SQLite: applied, duplicate, stale or
    /// rejected with a reason — never a failure, which the queue would retry five times
    /// and then dead-letter without one.
    #[test]
    fn any_field_of_any_shape_replaced_by_anything_is_applied_or_rejected_with_a_reason(
        bodies in prop::collection::vec(spoiled(), 1..8)
    ) {
        let outcomes = runtime().block_on(async {
            let mirror = Mirror::sqlite_in_memory_with(Config::default()).await;
            mirror.apply(&bodies).await.records
        });
        for (record, body) in outcomes.iter().zip(&bodies) {
            match &record.outcome {
                Outcome::Rejected(why) => assert_explained(why),
                Outcome::Failed(why) => panic!("{body} failed: {why}"),
                Outcome::Applied | Outcome::Duplicate | Outcome::Stale => {}
            }
        }
    }
}

/// What each payload field accepts besides `null` (absent): the wrong types are all others.
const FIELDS: [(&str, &str, &[&str]); 17] = [
    ("dm.message", "conversationId", &["string"]),
    ("dm.message", "messageId", &["string"]),
    ("dm.message", "authorId", &["string"]),
    ("dm.message", "body", &["string"]),
    (
        "dm.message",
        "media",
        &["bool", "number", "string", "array", "object"],
    ),
    ("dm.message", "createdAt", &["string", "number"]),
    ("dm.message", "updatedAt", &["string", "number"]),
    ("dm.conversation", "ownerId", &["string"]),
    ("dm.conversation", "participantIds", &["array"]),
    ("dm.conversation", "lastMessageAt", &["string", "number"]),
    ("dm.conversation", "lastMessagePreview", &["string"]),
    ("dm.conversation", "lastMessageAuthorId", &["string"]),
    ("dm.conversation", "createdAt", &["string", "number"]),
    ("follow.edge", "userId", &["string"]),
    ("follow.edge", "targetId", &["string"]),
    ("follow.edge", "edgeType", &["string"]),
    ("follow.edge", "createdAt", &["string", "number"]),
];

/// A value of each JSON type that no field takes when it is of another type.
fn of_type(name: &str) -> Value {
    match name {
        "bool" => json!(true),
        "number" => json!(1_759_926_840_000_u64),
        "string" => json!("2025-10-08T12:34:00Z"),
        "array" => json!(["u1", "u2"]),
        _ => json!({"unexpected": 1}),
    }
}

#[tokio::test]
async fn every_field_with_every_wrong_type_is_rejected_naming_the_field() {
    let mirror = Mirror::sqlite_in_memory_with(Config::default()).await;
    let templates = templates();
    let mut checked = 0;
    for (family, field, accepted) in FIELDS {
        let template = templates
            .iter()
            .find(|t| t["eventType"].as_str().unwrap_or("").starts_with(family))
            .unwrap();
        for wrong in ["bool", "number", "string", "array", "object"] {
            if accepted.contains(&wrong) {
                continue;
            }
            let body = replaced(
                template.clone(),
                &["payload".into(), field.into()],
                of_type(wrong),
            );
            match mirror.outcome_of(body.clone()).await {
                Outcome::Rejected(why) => {
                    assert_explained(&why);
                    assert!(
                        why.to_string().contains(field),
                        "{family}.{field} as a {wrong}: the reason does not name the field: {why}"
                    );
                }
                other => panic!("{family}.{field} as a {wrong}: {other:?}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked} cases");
}

/// The corpus, plus cases too big to commit (generated here), as files in one directory.
fn corpus_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hostile-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(CORPUS).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name != "expected.json" && name != "README.md" {
            std::fs::copy(&path, dir.join(name)).unwrap();
        }
    }
    let message = |id: &str, body: Value| {
        json!({"eventType": "dm.message.created", "occurredAt": "2025-10-08T12:34:00Z",
               "payload": {"conversationId": "big", "messageId": id, "authorId": "u1",
                           "body": body, "createdAt": "2025-10-08T12:34:00Z"}})
        .to_string()
    };
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    // A body just under the 1 MiB limit once enveloped, and one just over it.
    write(
        "generated-body-just-under-1-mib.json",
        message("m-under", "é".repeat(520_000).into()),
    );
    write(
        "generated-body-over-1-mib.json",
        message("m-over", "x".repeat(1 << 20).into()),
    );
    // Nesting far past any parser's recursion limit, in the body and in media.
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    write("generated-deep-nesting.json", deep.clone());
    write(
        "generated-deep-nesting-in-media.json",
        message("m-deep", "x".into()).replace("\"x\"", &format!("\"x\", \"media\": {deep}")),
    );
    write(
        "generated-nesting-at-the-limit-in-media.json",
        message("m-nested", "x".into()).replace(
            "\"x\"",
            &format!("\"x\", \"media\": {}1{}", "[".repeat(100), "]".repeat(100)),
        ),
    );
    dir
}

fn details(path: &Path) -> BTreeMap<String, Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            let id = value["messageId"].as_str().unwrap();
            let file = Path::new(id.split(':').next().unwrap())
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            (file, value)
        })
        .collect()
}

#[test]
fn the_hostile_corpus_is_applied_or_rejected_as_expected_by_mirrorctl_apply() {
    let dir = corpus_dir();
    let expected: BTreeMap<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(Path::new(CORPUS).join("expected.json")).unwrap(),
    )
    .unwrap();
    let database = std::env::temp_dir().join(format!("hostile-{}.db", std::process::id()));
    let details_path = std::env::temp_dir().join(format!("hostile-{}.jsonl", std::process::id()));
    let mut command = Command::new(workspace_binary("mirrorctl"));
    command
        .args(["apply", dir.to_str().unwrap(), "--details"])
        .arg(&details_path)
        .env("DATABASE_URL", format!("sqlite://{}", database.display()))
        .env("RUST_LOG", "debug");
    let (code, summary, stderr) = run_for_json(&mut command, None);
    assert_eq!(code, 2, "rejections and no failures: {summary} {stderr}");
    let outcomes = details(&details_path);
    let mut wrong = Vec::new();
    for file in expected.keys().chain(outcomes.keys()) {
        let (Some(want), Some(got)) = (expected.get(file), outcomes.get(file)) else {
            wrong.push(format!(
                "{file}: expected {:?}, got {:?}",
                expected.get(file),
                outcomes.get(file)
            ));
            continue;
        };
        let reason = got["reason"].as_str().unwrap_or("");
        let agrees = got["outcome"] == want["outcome"]
            && want.get("kind").is_none_or(|kind| &got["kind"] == kind)
            && (want.get("reasonContains").and_then(Value::as_str))
                .is_none_or(|text| reason.contains(text));
        if !agrees {
            wrong.push(format!("{file}: expected {want}, got {got}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Bodies are private: no text of any corpus body appears in a reason or a log line.
    let everything = format!(
        "{stderr}{}",
        std::fs::read_to_string(&details_path).unwrap()
    );
    for secret in ["s3cr3t", "漢"] {
        assert!(!everything.contains(secret), "{secret:?} leaked");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&details_path).unwrap();
    let _ = std::fs::remove_file(&database);
}
