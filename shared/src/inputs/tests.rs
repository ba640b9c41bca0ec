//! Reading event files: every format, every refusal by its reason.

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
