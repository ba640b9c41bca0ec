//! The `mirror-check` function: the mirror's self-check on a schedule (EventBridge), its
//! findings as EMF metrics. All the logic is in the shared crate; see
//! `realtime_mirror::scheduled`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    realtime_mirror::scheduled::main().await
}
