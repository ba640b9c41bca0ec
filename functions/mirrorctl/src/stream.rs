//! `mirrorctl stream`: a user's stream, a device's replay and acknowledgement, the outbox
//! drained now (docs/streams.md).

use realtime_mirror::config::Config;

use crate::cli::*;
use crate::print_json;

pub(crate) async fn stream(config: &Config, action: StreamAction) -> Result<u8, String> {
    use realtime_mirror::streams;
    let settings =
        (config.streams.clone()).ok_or("MIRROR_REDIS_URL is not set: realtime delivery is off")?;
    let fanout = streams::Fanout::new(settings).await?;
    let mut connection = fanout.connection().await?;
    match action {
        StreamAction::Tail { user, after, count } => {
            for entry in streams::tail(&mut connection, &user, after.as_deref(), count).await? {
                print_json(&entry);
            }
            Ok(0)
        }
        StreamAction::Replay {
            user,
            device,
            count,
        } => {
            let replay = streams::replay(&mut connection, &user, &device, count).await?;
            print_json(&replay);
            Ok(match replay {
                streams::Replay::Entries { .. } => 0,
                streams::Replay::Resync { .. } => 3,
            })
        }
        StreamAction::Ack { device, id } => {
            let stored = streams::ack(&mut connection, &device, &id).await?;
            print_json(&serde_json::json!({ "device": device, "lastSeen": stored }));
            Ok(0)
        }
        StreamAction::Drain => unreachable!("drain needs the database"),
    }
}
