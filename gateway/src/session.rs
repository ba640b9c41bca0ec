//! One connected device: the replay of what it missed, then its user's live entries, each
//! proven to follow the one before it (`prev`), or a resync; its acknowledgements; the end
//! of its token or of the gateway (docs/realtime.md, "Events").

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use realtime_mirror::streams::{self, is_after, is_entry_id, stream_key, Entry, Gap, Replay};
use serde_json::{json, Value};
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use tokio::sync::Notify;

use crate::auth::Identity;
use crate::hub::Feed;
use crate::App;

/// Emitted entries not yet acknowledged, kept for measuring the acknowledgement lag: the
/// newest this many (an acknowledgement of an older one is not measured).
const SENT_KEPT: usize = 64;

/// Devices catching up at once (presence, binding, replay); the others wait their turn.
pub const CATCH_UP_IN_FLIGHT: usize = 128;

/// An entry sent: its id as numbers, and when.
type Sent = ((u64, u64), Instant);

/// What the connect handler hands a session, and the ack handler shares with it.
#[derive(Clone)]
pub struct Session {
    pub identity: Identity,
    /// The handshake's `lastSeenId`, when it sent one: what the device says it holds.
    pub last_seen_id: Option<String>,
    /// Notified when the socket disconnected.
    pub ended: Arc<Notify>,
    /// Sent and not yet acknowledged: (id as numbers, when), oldest first.
    sent: Arc<Mutex<VecDeque<Sent>>>,
}

impl Session {
    pub fn new(identity: Identity, last_seen_id: Option<String>) -> Session {
        Session {
            identity,
            last_seen_id,
            ended: Arc::new(Notify::new()),
            sent: Arc::new(Mutex::new(VecDeque::new())),
        }
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Emits `event`, waiting while the socket's buffer is full; false once it is closed.
async fn emit(socket: &SocketRef, event: &str, data: &impl serde::Serialize) -> bool {
    loop {
        match socket.emit(event, data) {
            Ok(()) => return true,
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "emit failed: the socket is gone");
                return false;
            }
        }
    }
}

/// Tells the device why the gateway is ending its connection, and ends it.
async fn goodbye(socket: &SocketRef, code: &str, reason: &str) {
    emit(
        socket,
        "bye",
        &json!({ "code": code, "reason": reason, "reconnect": true }),
    )
    .await;
    let _ = socket.clone().disconnect();
}

struct Delivery<'a> {
    app: &'a App,
    socket: &'a SocketRef,
    session: &'a Session,
    /// The id of the last entry the device has (delivered, or covered by a resync).
    position: String,
}

impl Delivery<'_> {
    async fn entry(&mut self, entry: &Entry, live: bool) -> bool {
        if !emit(self.socket, "entry", entry).await {
            return false;
        }
        self.position = entry.id.clone();
        self.app.metrics.delivered.inc();
        if live {
            if let Some(ms) = entry
                .id
                .split('-')
                .next()
                .and_then(|ms| ms.parse::<u128>().ok())
            {
                let latency = now_ms().saturating_sub(ms) as f64 / 1000.0;
                self.app.metrics.latency.observe(latency);
            }
        }
        let mut sent = self.session.sent.lock().expect("not poisoned");
        if sent.len() == SENT_KEPT {
            sent.pop_front();
        }
        if let Some(id) = streams::id_parts(&entry.id) {
            sent.push_back((id, Instant::now()));
        }
        true
    }

    /// A resync: the device loads its user's state from SQL and acknowledges
    /// `lastGeneratedId`; what comes after it is delivered live.
    async fn resync(&mut self, reason: &str, code: &str, newest: Option<String>) -> bool {
        let newest = newest.unwrap_or_else(|| "0-0".to_string());
        self.app.metrics.resyncs.with_label_values(&[code]).inc();
        tracing::info!(device = %self.session.identity.device, code, last_generated_id = %newest, "resync");
        self.position = newest.clone();
        emit(
            self.socket,
            "resync",
            &json!({ "reason": reason, "code": code, "lastGeneratedId": newest }),
        )
        .await
    }

    /// A resync for `gap`, from the stream's newest id now.
    async fn resync_now(&mut self, gap: Gap) -> Result<bool, String> {
        let mut connection = self.app.redis.clone();
        let user = &self.session.identity.user;
        let newest = streams::last_generated(&mut connection, user).await?;
        Ok(self.resync(gap.reason(), gap.code(), newest).await)
    }

    /// What the device missed since `start`: all of it, or a resync.
    async fn replay(&mut self, start: Option<&str>) -> Result<bool, String> {
        let mut connection = self.app.redis.clone();
        let cap = self.app.settings.replay_cap;
        let user = &self.session.identity.user;
        match streams::replay_after(&mut connection, user, start, cap + 1).await? {
            Replay::Entries { entries, .. } if entries.len() > cap => {
                self.resync_now(Gap::TooMany).await
            }
            Replay::Entries { entries, after } => {
                self.position = after;
                self.app.metrics.replay_size.observe(entries.len() as f64);
                for entry in &entries {
                    if !self.entry(entry, false).await {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Replay::Resync {
                reason,
                resume_from,
                code,
            } => Ok(self.resync(&reason, code, Some(resume_from)).await),
        }
    }
}

/// The life of one connected device.
pub async fn run(app: Arc<App>, socket: SocketRef, session: Session) {
    let identity = &session.identity;
    app.metrics.connected.inc();
    let outcome = serve(&app, &socket, &session).await;
    if let Err(e) = outcome {
        tracing::warn!(device = %identity.device, error = %e, "Redis failed during a session; the device is told to reconnect");
        goodbye(
            &socket,
            "unavailable",
            "the gateway lost Redis: connect again",
        )
        .await;
    }
    app.presence.leave(&identity.device).await;
    app.metrics.connected.dec();
}

async fn serve(app: &Arc<App>, socket: &SocketRef, session: &Session) -> Result<(), String> {
    let identity = &session.identity;
    let mut connection = app.redis.clone();
    // A reconnect storm queues here, not in Redis: the commands of thousands of catch-ups
    // at once on the one connection would each wait past their timeout.
    let catching_up = tokio::select! {
        permit = app.catch_up.acquire() => permit.map_err(|_| "the gateway is stopping".to_string())?,
        () = session.ended.notified() => return Ok(()),
    };
    app.presence.arrive(&identity.device).await?;
    let rebound = crate::presence::bind(&mut connection, &identity.user, &identity.device).await?;
    let (mut subscription, _) = app.hub.join(&identity.user).await?;
    let mut delivery = Delivery {
        app,
        socket,
        session,
        position: "0-0".to_string(),
    };
    let delivered = if rebound {
        delivery.resync_now(Gap::Rebound).await?
    } else {
        let start = match &session.last_seen_id {
            Some(id) => Some(id.clone()),
            None => redis::cmd("GET")
                .arg(streams::device_key(&identity.device))
                .query_async::<Option<String>>(&mut connection)
                .await
                .map_err(|e| format!("GET lastSeen failed: {e}"))?
                .filter(|id| is_entry_id(id)),
        };
        delivery.replay(start.as_deref()).await?
    };
    drop(catching_up);
    if !delivered {
        return Ok(());
    }
    let expiry = Duration::from_secs(
        identity
            .expires_at
            .saturating_add(app.settings.leeway.as_secs())
            .saturating_sub(crate::auth::now_secs()),
    );
    let expired = tokio::time::sleep(expiry);
    tokio::pin!(expired);
    let mut shutdown = app.shutdown.subscribe();
    loop {
        tokio::select! {
            feed = subscription.feed.recv() => match feed {
                Some(Feed::Entry(entry)) => {
                    if !is_after(&entry.id, &delivery.position) {
                        continue; // replayed already, or covered by a resync
                    }
                    let ok = if entry.fields.get("prev") == Some(&delivery.position) {
                        delivery.entry(&entry, true).await
                    } else {
                        delivery.resync_now(Gap::Hole).await?
                    };
                    if !ok {
                        return Ok(());
                    }
                }
                Some(Feed::Lost) => {
                    if !delivery.resync_now(Gap::RedisLost).await? {
                        return Ok(());
                    }
                }
                None => return Ok(()),
            },
            () = &mut expired => {
                goodbye(socket, "expired", "expired: the token's exp has passed; connect again with a fresh token").await;
                return Ok(());
            }
            _ = shutdown.changed() => {
                goodbye(socket, "shutdown", "this gateway is shutting down: connect again (another node takes over)").await;
                return Ok(());
            }
            () = session.ended.notified() => return Ok(()),
        }
    }
}

/// An acknowledgement: `{id}` of an entry of the device's own user's stream. Never moves
/// the device backwards; refuses an id its stream never had.
pub async fn ack(app: &App, session: &Session, data: &Value) -> Value {
    let refuse = |reason: String| {
        app.metrics.acks.with_label_values(&["refused"]).inc();
        json!({ "ok": false, "reason": reason })
    };
    let Some(id) = data.get("id").and_then(Value::as_str) else {
        return refuse("expected {\"id\": \"<ms>-<seq>\"}: the id of an entry".to_string());
    };
    if !is_entry_id(id) {
        return refuse(format!("{id:?} is not a stream entry id (ms-seq)"));
    }
    let identity = &session.identity;
    let mut connection = app.redis.clone();
    let checked = async {
        let Some(info) = streams::stream_info(&mut connection, &identity.user).await? else {
            return Ok(Some("this user's stream has no entries".to_string()));
        };
        if is_after(id, &info.last_generated) {
            return Ok(Some(format!(
                "{id} is after the newest entry of this user's stream ({})",
                info.last_generated
            )));
        }
        let exact: redis::Value = redis::cmd("XRANGE")
            .arg(stream_key(&identity.user))
            .arg(id)
            .arg(id)
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("XRANGE failed: {e}"))?;
        // Not there now, and certainly never an entry; one that may have been removed
        // (trimmed or deleted) is taken: a replay from it resyncs when what follows is gone.
        if streams::entries(exact)?.is_empty() && info.never_held(id) {
            return Ok(Some(format!("{id} is not an entry of this user's stream")));
        }
        streams::ack(&mut connection, &identity.device, id)
            .await
            .map(|_| None)
    };
    match checked.await {
        Ok(Some(reason)) => refuse(reason),
        Err(e) => {
            tracing::warn!(device = %identity.device, error = %e, "an acknowledgement failed");
            refuse("the gateway could not record it (Redis failed): send it again".to_string())
        }
        Ok(None) => {
            app.metrics.acks.with_label_values(&["ok"]).inc();
            // Acknowledged up to `id`: what was sent up to it is no longer waited for.
            let acked = streams::id_parts(id);
            let mut sent = session.sent.lock().expect("not poisoned");
            while let Some(&(sent_id, at)) = sent.front() {
                if Some(sent_id) > acked {
                    break;
                }
                sent.pop_front();
                if Some(sent_id) == acked {
                    app.metrics.ack_lag.observe(at.elapsed().as_secs_f64());
                }
            }
            json!({ "ok": true })
        }
    }
}
