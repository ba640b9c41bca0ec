//! Event files for `mirrorctl apply`: a file holding an SQS event (`{"Records": [...]}`), a
//! file holding one envelope in any accepted shape, or a directory of such files, read in
//! name order.

use std::path::{Path, PathBuf};

use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::Value;

use crate::batch::{Outcome, Record, RecordOutcome};
use crate::rejection::Rejection;

/// The records of every file, in order, and an outcome for each file that could not be read.
pub fn read_paths(paths: &[PathBuf]) -> (Vec<Record>, Vec<RecordOutcome>) {
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        for file in files(path, &mut problems) {
            read_file(&file, &mut records, &mut problems);
        }
    }
    (records, problems)
}

fn files(path: &Path, problems: &mut Vec<RecordOutcome>) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                // Every file (hidden ones aside); subdirectories are not entered.
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            files.sort();
            files
        }
        Err(e) => {
            problems.push(RecordOutcome::new(
                path.display().to_string(),
                Outcome::Failed(format!("cannot read directory {}: {e}", path.display())),
            ));
            Vec::new()
        }
    }
}

fn read_file(path: &Path, records: &mut Vec<Record>, problems: &mut Vec<RecordOutcome>) {
    let name = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            problems.push(RecordOutcome::new(
                &name,
                Outcome::Failed(format!("cannot read {name}: {e}")),
            ));
            return;
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        problems.push(RecordOutcome::new(
            &name,
            Outcome::Rejected(Rejection::NotJson("the file is not UTF-8".into())),
        ));
        return;
    };
    let is_sqs_event = matches!(
        serde_json::from_str::<Value>(&text),
        Ok(Value::Object(ref map)) if map.get("Records").is_some_and(Value::is_array)
    );
    if !is_sqs_event {
        records.push(Record {
            message_id: name,
            body: Some(text),
            receive_count: None,
        });
        return;
    }
    match serde_json::from_str::<SqsEvent>(&text) {
        Ok(event) => records.extend(crate::lambda::records_named(event, |i| {
            format!("{name}#{i}")
        })),
        // serde's message can quote values; say where, not what.
        Err(e) => problems.push(RecordOutcome::new(
            &name,
            Outcome::Rejected(Rejection::UnknownShape(format!(
                "{name} has Records but is not an SQS event (line {}, column {})",
                e.line(),
                e.column()
            ))),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_read_in_name_order_without_entering_subdirectories_or_hidden_files() {
        let dir = std::env::temp_dir().join(format!("mirror-inputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        std::fs::write(dir.join("b-envelope"), "{}").unwrap();
        std::fs::write(
            dir.join("a.json"),
            r#"{"Records": [{"messageId": "m1", "body": "x"}, {"body": "y"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.join(".hidden.json"), "{}").unwrap();
        std::fs::write(dir.join("nested/c.json"), "{}").unwrap();
        let (records, problems) = read_paths(std::slice::from_ref(&dir));
        let ids: Vec<String> = records.iter().map(|r| r.message_id.clone()).collect();
        let a = dir.join("a.json").display().to_string();
        assert_eq!(
            ids,
            vec![
                "m1".to_string(),
                format!("{a}#1"),
                dir.join("b-envelope").display().to_string()
            ]
        );
        assert!(problems.is_empty());
        let (_, problems) = read_paths(&[dir.join("missing.json")]);
        assert!(
            matches!(&problems[0].outcome, Outcome::Failed(why) if why.contains("missing.json"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
