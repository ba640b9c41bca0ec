//! The process: Redis checked, keys loaded, Socket.IO at `/socket.io/` beside `/healthz`,
//! `/metrics` and (when enabled) `/demo`, and a graceful stop on SIGTERM: handshakes
//! refused, every device told to reconnect elsewhere, exit within the grace period.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State as HttpState};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{json, Value};
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::SocketIo;

use crate::auth::Refusal;
use crate::config::Settings;
use crate::session::{self, Session};
use crate::{hub, metrics, presence, App};
use realtime_mirror::streams::connection::{self, Connection};
use realtime_mirror::streams::{is_entry_id, open_client, REDIS_TIMEOUT};

/// The demo page, served at `/demo` when `GATEWAY_DEMO=on`.
const DEMO_PAGE: &str = include_str!("demo.html");
/// The unchanged browser build of `socket.io-client` (MIT), for the demo page.
const SOCKET_IO_JS: &str = include_str!("../assets/socket.io.min.js");

/// The WebSocket read buffer of each device, in bytes.
const WS_READ_BUFFER: usize = 512;

/// Why a handshake is refused (the text the device's `connect_error` carries).
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("bad lastSeenId: expected the id of a stream entry (ms-seq)")]
    BadLastSeen,
    #[error("shutting down: connect again (another node takes over)")]
    ShuttingDown,
}

async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(app): State<Arc<App>>,
) -> Result<(), HandshakeError> {
    let refused = |app: &App, code: &str| {
        app.metrics.refused.with_label_values(&[code]).inc();
    };
    if app.draining.load(Ordering::SeqCst) {
        refused(&app, "shutting_down");
        return Err(HandshakeError::ShuttingDown);
    }
    let auth = auth.unwrap_or(Value::Null);
    let identity = match app.verifier.verify(&auth).await {
        Ok(identity) => identity,
        Err(refusal) => {
            refused(&app, refusal.code());
            tracing::info!(reason = refusal.code(), "handshake refused");
            return Err(refusal.into());
        }
    };
    let last_seen_id = match auth.get("lastSeenId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if is_entry_id(id) => Some(id.clone()),
        Some(_) => {
            refused(&app, "bad_last_seen");
            return Err(HandshakeError::BadLastSeen);
        }
    };
    socket
        .extensions
        .insert(Session::new(identity, last_seen_id));
    Ok(())
}

async fn on_connect(socket: SocketRef, State(app): State<Arc<App>>) {
    let Some(session) = socket.extensions.get::<Session>() else {
        return; // never: the middleware put it there
    };
    tracing::info!(device = %session.identity.device, transport = ?socket.transport_type(), "device connected");
    let for_acks = session.clone();
    socket.on(
        "ack",
        async move |TryData(data): TryData<Value>, ack: AckSender, State(app): State<Arc<App>>| {
            let data = data.unwrap_or(Value::Null);
            let reply = session::ack(&app, &for_acks, &data).await;
            let _ = ack.send(&reply);
        },
    );
    let ended = session.ended.clone();
    socket.on_disconnect(async move || ended.notify_one());
    tokio::spawn(session::run(app, socket, session));
}

async fn healthz(HttpState(app): HttpState<Arc<App>>) -> Response {
    if app.draining.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "draining"})),
        )
            .into_response();
    }
    let mut redis = app.redis.clone();
    let ping = tokio::time::timeout(
        REDIS_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut redis),
    )
    .await;
    let devices = app.metrics.connected.get();
    match ping {
        Ok(Ok(_)) => {
            axum::Json(json!({"status": "ok", "redis": "ok", "devices": devices})).into_response()
        }
        Ok(Err(e)) => unhealthy(format!("Redis failed: {e}")),
        Err(_) => unhealthy(format!("Redis did not answer within {REDIS_TIMEOUT:?}")),
    }
}

fn unhealthy(redis: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": "unhealthy", "redis": redis})),
    )
        .into_response()
}

async fn metrics_page(HttpState(app): HttpState<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn demo_token(
    HttpState(app): HttpState<Arc<App>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let user = query.get("user").map(String::as_str).unwrap_or("");
    if user.is_empty() || user.len() > 128 {
        return (StatusCode::BAD_REQUEST, "expected ?user=<user id>").into_response();
    }
    match crate::auth::demo_token(&app.settings, user) {
        Ok(token) => axum::Json(json!({ "token": token })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// Connects to Redis, or to every node of a Redis Cluster (which must send the keyspace
/// notifications of streams: docs/realtime.md, "Redis Cluster").
async fn connect(
    settings: &Settings,
) -> Result<(redis::Client, Connection<ConnectionManager>), String> {
    let client = open_client(&settings.streams).await?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(2);
    let mut redis = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(|e| format!("cannot reach Redis at {}: {e}", settings.streams.shown()))?;
    if !connection::is_cluster_node(&mut redis).await? {
        return Ok((client, Connection::Single(redis)));
    }
    let mut cluster = connection::cluster_connection(&client).await?;
    hub::check_notifications(&client, &mut cluster, &settings.node_id)
        .await
        .map_err(|e| format!("{}: {e}", settings.streams.shown()))?;
    tracing::info!(redis = %settings.streams.shown(), "Redis is a cluster: one read per slot, on keyspace notifications");
    Ok((client, Connection::Cluster(cluster)))
}

/// Serves until SIGTERM or SIGINT, then stops gracefully.
pub async fn serve(settings: Settings) -> Result<(), String> {
    let (client, redis) = connect(&settings).await?;
    let verifier = crate::auth::Verifier::new(&settings).await?;
    let metrics = Arc::new(metrics::Metrics::new());
    let hub = Arc::new(hub::Hub::new(client, redis.clone(), metrics.clone()));
    let presence = Arc::new(presence::Presence::new(
        settings.node_id.clone(),
        settings.presence_ttl,
        redis.clone(),
    ));
    let (shutdown, _) = tokio::sync::watch::channel(false);
    let app = Arc::new(App {
        settings: settings.clone(),
        metrics,
        verifier,
        hub: hub.clone(),
        presence: presence.clone(),
        redis,
        catch_up: tokio::sync::Semaphore::new(session::CATCH_UP_IN_FLIGHT),
        draining: false.into(),
        shutdown,
    });
    tokio::spawn(hub.run());
    presence.start().await?;
    tokio::spawn(presence.clone().run());

    let (layer, io) = SocketIo::builder()
        .with_state(app.clone())
        // A replay of up to the cap is emitted at once; session::emit waits when even this
        // is full.
        .max_buffer_size(settings.replay_cap + 1_024)
        // What a device sends is acknowledgements and pongs of a few dozen bytes: a 512-byte
        // WebSocket read buffer (it grows for a longer frame) instead of 4 KiB saves 3.5 KB
        // per connected device (massif; BENCHMARKS.md, "Realtime gateway").
        .ws_read_buffer_size(WS_READ_BUFFER)
        .build_layer();
    io.ns("/", on_connect.with(authenticate));

    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_page));
    if settings.demo {
        tracing::warn!("GATEWAY_DEMO is on: /demo mints tokens for any user; never in production");
        router = router
            .route("/demo", get(|| async { Html(DEMO_PAGE) }))
            .route("/demo/token", get(demo_token))
            .route(
                "/demo/socket.io.min.js",
                get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SOCKET_IO_JS) }),
            );
    }
    let router = router
        .with_state(app.clone())
        .layer(layer)
        .layer(axum::middleware::map_request(detached));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("GATEWAY_LISTEN {}: cannot listen: {e}", settings.listen))?;
    tracing::info!(listen = %settings.listen, node = %settings.node_id, redis = %settings.streams.shown(), "the gateway is listening");

    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped_rx.await;
            })
            .await
    });
    stop_signal().await;
    let started = Instant::now();
    let grace = settings.shutdown_grace;
    let devices = app.metrics.connected.get();
    tracing::info!(
        devices,
        grace_s = grace.as_secs(),
        "stopping: devices are told to reconnect elsewhere"
    );
    app.draining.store(true, Ordering::SeqCst);
    let _ = app.shutdown.send(true);
    while app.metrics.connected.get() > 0 && started.elapsed() < grace / 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tokio::time::timeout(grace / 4, io.close()).await;
    let _ = stopped_tx.send(());
    let left = grace.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(format!("the HTTP server failed: {e}")),
        Ok(Err(e)) => return Err(format!("the HTTP server task failed: {e}")),
        Err(_) => tracing::warn!("connections still open at the end of the grace period; exiting"),
    }
    presence.stop().await;
    tracing::info!(
        devices_told = devices,
        took_ms = started.elapsed().as_millis() as u64,
        "stopped"
    );
    Ok(())
}

/// The request with its URI and headers copied out of the connection's read buffer. hyper
/// parses them as slices of that buffer (8 to 16 KiB), and socketioxide keeps a socket's
/// request for as long as the socket lives, and with it the whole buffer: copying the few
/// headers frees about 16 KB per connected device (BENCHMARKS.md, "Realtime gateway").
async fn detached(mut request: axum::extract::Request) -> axum::extract::Request {
    let headers = std::mem::take(request.headers_mut());
    let copy = request.headers_mut();
    copy.reserve(headers.len());
    for (name, value) in &headers {
        let (Ok(name), Ok(mut owned)) = (
            header::HeaderName::from_bytes(name.as_str().as_bytes()),
            header::HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            continue; // it parsed once; a copy cannot fail
        };
        owned.set_sensitive(value.is_sensitive());
        copy.append(name, owned);
    }
    if let Ok(uri) = request.uri().to_string().parse() {
        *request.uri_mut() = uri;
    }
    request
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
