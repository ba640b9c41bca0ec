//! Running the workspace's binaries as processes, sample events, and logs captured in memory.

use serde_json::Value;

/// Log lines captured in memory: give [`LogCapture::writer`] to a subscriber, read
/// [`LogCapture::text`] afterwards.
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// A `MakeWriter` for `tracing_subscriber` that appends here.
    pub fn writer(&self) -> impl Fn() -> LogCapture + Send + Sync + 'static {
        let capture = self.clone();
        move || capture.clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("UTF-8 logs")
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs a command line tool (its binary, arguments and environment set in `command`) with
/// `stdin` as its input: (exit code, stdout as one JSON value or null, stderr).
pub fn run_for_json(
    command: &mut std::process::Command,
    stdin: Option<&str>,
) -> (i32, Value, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command runs");
    if let Some(text) = stdin {
        let mut input = child.stdin.take().expect("stdin is piped");
        input.write_all(text.as_bytes()).expect("stdin written");
    }
    let output = child.wait_with_output().expect("the command ends");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 stdout");
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    )
}

/// A sample SQS event of the repository's `events/` directory, by its path there.
pub fn sample_event(name: &str) -> aws_lambda_events::event::sqs::SqsEvent {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not an SQS event: {e}"))
}

/// The path of a workspace binary built beside the running test.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = dir.join(name);
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {name}");
    }
    path
}
