//! Prometheus metrics (`switchyard_*`). Handles are created once and kept in [`Metrics`], so
//! the hot paths bump an atomic instead of looking a name up. Every series carries the `node`
//! label (a global label of the recorder).
//!
//! The recorder is process-wide: when several nodes run in one process (tests), they share it
//! and the first node's id labels the series.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;
use switchyard_protocol::client::CLIENT_TYPES;

/// How often the exporter's histograms are compacted.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

pub struct Metrics {
    pub connections: Gauge,
    pub connections_accepted: Counter,
    pub messages_in: Vec<Counter>,
    pub messages_in_invalid: Counter,
    pub messages_out: Counter,
    pub frames_out: Counter,
    pub batch_size: Histogram,
    pub deliveries_durable: Counter,
    pub deliveries_volatile: Counter,
    pub volatile_dropped: Counter,
    pub slow_consumer_closes: Counter,
    pub outbound_queue_depth: Gauge,
    /// The longest outbound queue of the node, in messages (at scrape time).
    pub outbound_queue_depth_max: Gauge,
    /// Joined (present) memberships of this node's connections: one per connection and room.
    pub presence_members: Gauge,
    pub rooms: Gauge,
    pub broker_publish_seconds: Histogram,
    /// Joins and subscribes waiting for their turn (`SWITCHYARD_MAX_CONCURRENT_JOINS`).
    pub joins_waiting: Gauge,
    /// Joins and subscribes refused after waiting [`crate::connection::JOIN_WAIT_MAX`].
    pub joins_refused_busy: Counter,
    /// 1 when the node takes traffic (`/readyz` 200), 0 when draining or the broker is down.
    pub ready: Gauge,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            connections: gauge!("switchyard_connections"),
            connections_accepted: counter!("switchyard_connections_accepted_total"),
            messages_in: CLIENT_TYPES
                .iter()
                .map(|t| counter!("switchyard_messages_in_total", "type" => *t))
                .collect(),
            messages_in_invalid: counter!("switchyard_messages_in_total", "type" => "invalid"),
            messages_out: counter!("switchyard_messages_out_total"),
            frames_out: counter!("switchyard_frames_out_total"),
            batch_size: histogram!("switchyard_batch_size"),
            deliveries_durable: counter!("switchyard_deliveries_total", "kind" => "durable"),
            deliveries_volatile: counter!("switchyard_deliveries_total", "kind" => "volatile"),
            volatile_dropped: counter!("switchyard_volatile_dropped_total"),
            slow_consumer_closes: counter!("switchyard_slow_consumer_closes_total"),
            outbound_queue_depth: gauge!("switchyard_outbound_queue_depth"),
            outbound_queue_depth_max: gauge!("switchyard_outbound_queue_depth_max"),
            presence_members: gauge!("switchyard_presence_members"),
            rooms: gauge!("switchyard_rooms"),
            broker_publish_seconds: histogram!("switchyard_broker_publish_seconds"),
            joins_waiting: gauge!("switchyard_joins_waiting"),
            joins_refused_busy: counter!("switchyard_joins_refused_busy_total"),
            ready: gauge!("switchyard_ready"),
        }
    }

    /// Counts an inbound message by its type.
    pub fn message_in(&self, type_name: &str) {
        match CLIENT_TYPES.iter().position(|t| *t == type_name) {
            Some(i) => self.messages_in[i].increment(1),
            None => self.messages_in_invalid.increment(1),
        }
    }
}

/// A connection refused at the handshake, by reason (`unauthorized`, `rate_limited`, ...).
pub fn connection_refused(reason: &'static str) {
    counter!("switchyard_connections_refused_total", "reason" => reason).increment(1);
}

/// A token refused at the handshake, by reason (`missing`, `expired`, `bad_signature`, ...).
pub fn auth_failure(reason: &'static str) {
    counter!("switchyard_auth_failures_total", "reason" => reason).increment(1);
}

/// A rate-limited event, by budget (`durable`, `volatile`, `handshake`).
pub fn rate_limited(kind: &'static str) {
    counter!("switchyard_rate_limited_total", "kind" => kind).increment(1);
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders `/metrics`.
pub fn install(node_id: &str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .add_global_label("node", node_id)
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("switchyard_batch_size".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            "switchyard_broker_publish_seconds".into(),
                        ),
                        &[
                            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                            0.25, 1.0,
                        ],
                    )
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (a host program's): keep ours for rendering.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The node's metric handles.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}
