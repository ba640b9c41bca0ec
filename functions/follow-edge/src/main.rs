//! The `follow-edge` function: applies the events of its SQS queue to SQL. All the logic is in the
//! shared crate; see `realtime_mirror::lambda`.

use realtime_mirror::Family;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    realtime_mirror::lambda::main(Family::FollowEdge).await
}
