//! `mirrorctl dlq`: a dead-letter queue's stats, peek, replay and purge.

use std::io::{BufRead, Write};

use realtime_mirror::dlq::{self, ReplayOptions};

use crate::cli::*;
use crate::print_json;

pub(crate) async fn dead_letters(
    client: &aws_sdk_sqs::Client,
    url: &str,
    action: DlqAction,
) -> Result<u8, dlq::DlqError> {
    match action {
        DlqAction::Stats => print_json(&dlq::stats(client, url).await?),
        DlqAction::Peek { max, show_body } => {
            print_json(&dlq::peek(client, url, max, show_body).await?)
        }
        DlqAction::Replay {
            native: true,
            to,
            rate,
            ..
        } => {
            let task = dlq::replay_native(client, url, to.as_deref(), rate).await?;
            print_json(&serde_json::json!({ "taskHandle": task }));
        }
        DlqAction::Replay {
            to,
            max,
            rate,
            dry_run,
            native: false,
        } => {
            let summary = dlq::replay(
                client,
                url,
                &ReplayOptions {
                    to,
                    max,
                    rate,
                    dry_run,
                },
            )
            .await?;
            print_json(&summary);
            if summary.failed > 0 {
                return Ok(1);
            }
        }
        DlqAction::Purge { yes } => {
            let waiting = dlq::stats(client, url).await?["messages"]
                .as_u64()
                .unwrap_or(0);
            if !yes && !confirmed(url, waiting) {
                eprintln!("mirrorctl: not purged (confirm by typing 'purge', or pass --yes)");
                return Ok(1);
            }
            dlq::purge(client, url).await?;
            print_json(&serde_json::json!({ "purged": url, "messagesBefore": waiting }));
        }
    }
    Ok(0)
}

/// Asks on stderr, reads one line of stdin; no answer (closed stdin) is a no.
pub(crate) fn confirmed(url: &str, waiting: u64) -> bool {
    eprint!("Delete every message of {url} (about {waiting})? Type 'purge' to confirm: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let read = std::io::stdin().lock().read_line(&mut answer);
    matches!(read, Ok(n) if n > 0) && answer.trim() == "purge"
}
