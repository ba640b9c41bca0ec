//! The `realtime-gateway` server: delivers each user's stream to their connected devices
//! over Socket.IO (docs/realtime.md). All the logic is in the gateway crate; see
//! `mirror_gateway::main`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    mirror_gateway::main().await
}
