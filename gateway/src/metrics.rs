//! What `/metrics` shows, in the Prometheus text format (docs/realtime.md names each one).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// `gateway_connected_devices`
    pub connected: IntGauge,
    /// `gateway_users_followed`: users whose stream this node's reader follows.
    pub users: IntGauge,
    /// `gateway_entries_delivered_total`: entries emitted to devices (replayed and live).
    pub delivered: IntCounter,
    /// `gateway_replay_entries`: entries per replay on connect.
    pub replay_size: Histogram,
    /// `gateway_resyncs_total{reason}`
    pub resyncs: IntCounterVec,
    /// `gateway_handshakes_refused_total{reason}`
    pub refused: IntCounterVec,
    /// `gateway_delivery_latency_seconds`: XADD (the entry id's time) → emit, live entries.
    pub latency: Histogram,
    /// `gateway_ack_lag_seconds`: emit → the device's acknowledgement.
    pub ack_lag: Histogram,
    /// `gateway_acks_total{result}`: `ok` or the refusal.
    pub acks: IntCounterVec,
    /// `gateway_redis_reads_total`: XREAD calls of the reader (one per node, not per device).
    pub reads: IntCounter,
    /// `gateway_redis_errors_total`
    pub redis_errors: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
        ];
        let m = Metrics {
            connected: IntGauge::new("gateway_connected_devices", "Devices connected now")
                .expect("valid"),
            users: IntGauge::new("gateway_users_followed", "Users whose stream is followed")
                .expect("valid"),
            delivered: IntCounter::new("gateway_entries_delivered_total", "Entries emitted")
                .expect("valid"),
            replay_size: Histogram::with_opts(
                HistogramOpts::new("gateway_replay_entries", "Entries per replay on connect")
                    .buckets(vec![
                        0.0, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 10000.0,
                    ]),
            )
            .expect("valid"),
            resyncs: IntCounterVec::new(
                Opts::new("gateway_resyncs_total", "Resyncs sent, by reason"),
                &["reason"],
            )
            .expect("valid"),
            refused: IntCounterVec::new(
                Opts::new(
                    "gateway_handshakes_refused_total",
                    "Handshakes refused, by reason",
                ),
                &["reason"],
            )
            .expect("valid"),
            latency: Histogram::with_opts(
                HistogramOpts::new(
                    "gateway_delivery_latency_seconds",
                    "XADD to emit, live entries",
                )
                .buckets(latency_buckets.clone()),
            )
            .expect("valid"),
            ack_lag: Histogram::with_opts(
                HistogramOpts::new("gateway_ack_lag_seconds", "Emit to acknowledgement")
                    .buckets(latency_buckets),
            )
            .expect("valid"),
            acks: IntCounterVec::new(
                Opts::new("gateway_acks_total", "Acknowledgements, by result"),
                &["result"],
            )
            .expect("valid"),
            reads: IntCounter::new("gateway_redis_reads_total", "XREAD calls of the reader")
                .expect("valid"),
            redis_errors: IntCounter::new("gateway_redis_errors_total", "Redis errors")
                .expect("valid"),
            registry,
        };
        for collector in [
            Box::new(m.connected.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.users.clone()),
            Box::new(m.delivered.clone()),
            Box::new(m.replay_size.clone()),
            Box::new(m.resyncs.clone()),
            Box::new(m.refused.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.ack_lag.clone()),
            Box::new(m.acks.clone()),
            Box::new(m.reads.clone()),
            Box::new(m.redis_errors.clone()),
        ] {
            m.registry.register(collector).expect("registered once");
        }
        m
    }

    /// The text of `/metrics`.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding does not fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
