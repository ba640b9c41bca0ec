//! The `follow-edge` function: applies the events of its SQS queue to SQL. All the logic is in the
//! shared crate; see `realtime_mirror::lambda`.

use realtime_mirror::Family;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    realtime_mirror::lambda::run(Family::FollowEdge).await
}
