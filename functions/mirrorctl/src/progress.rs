//! Progress of a long run on stderr: a bar on a terminal (indicatif), otherwise a plain line
//! at most every few seconds, each naming the line to resume from.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use realtime_mirror::apply::Position;
use realtime_mirror::source::line_of;
use realtime_mirror::Summary;

pub struct Progress {
    what: &'static str,
    every: Duration,
    bar: Option<ProgressBar>,
    started: Instant,
    printed: Instant,
    resume: u64,
}

fn settled(s: &Summary) -> usize {
    s.applied + s.duplicates + s.stale + s.rejected + s.failed
}

impl Progress {
    pub fn new(what: &'static str, every: Duration) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} {pos} records ({per_sec}) {msg}",
                )
                .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            what,
            every,
            bar,
            started: Instant::now(),
            printed: Instant::now(),
            resume: 1,
        }
    }

    /// The line to resume from: the first that failed, else the one after the last settled.
    fn resume_line(position: &Position) -> u64 {
        match &position.first_failed {
            Some(id) => line_of(id),
            None => line_of(&position.last) + 1,
        }
    }

    pub fn update(&mut self, summary: &Summary, position: &Position) {
        self.resume = Self::resume_line(position);
        let counts = format!(
            "applied {}, duplicates {}, stale {}, rejected {}, failed {}; resume with --resume-from {}",
            summary.applied, summary.duplicates, summary.stale, summary.rejected, summary.failed, self.resume
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(settled(summary) as u64);
                bar.set_message(counts);
            }
            None if self.printed.elapsed() >= self.every => {
                self.printed = Instant::now();
                eprintln!(
                    "{}: {} records settled ({counts})",
                    self.what,
                    settled(summary)
                );
            }
            None => {}
        }
    }

    pub fn finish(&self, summary: &Summary) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "{}: done, {} records in {:.1} s{}",
            self.what,
            settled(summary),
            self.started.elapsed().as_secs_f64(),
            if summary.failed > 0 {
                format!(
                    "; {} failed: run again with --resume-from {} once the cause is fixed",
                    summary.failed, self.resume
                )
            } else {
                String::new()
            }
        );
    }
}
