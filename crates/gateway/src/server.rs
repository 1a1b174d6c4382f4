//! The node: shared state ([`App`]), the router, and [`run`], which serves a bound listener
//! until `shutdown` is cancelled and then drains: `/readyz` turns 503, new upgrades get 503,
//! connections are closed with 1001 spread over the drain period, queues are flushed, and `run`
//! returns once every connection task is done (or the grace period is over).

use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use switchyard_broker::{
    Broker, MemoryBroker, MemoryConfig, RedisBroker, RedisConfig, RedisServer,
};

use crate::auth::Authenticator;
use crate::config::{BrokerUrl, Config};
use crate::hub::{close, Hub};
use crate::{http, http_server, metrics};

/// After the drain period, connection tasks get this long to finish before `run` returns anyway.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How often idle entries of the per-address handshake limiter are forgotten.
pub const HANDSHAKE_TABLE_SWEEP: Duration = Duration::from_secs(60);

pub type HandshakeLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// What every request and connection of the node shares.
pub struct App {
    pub config: Config,
    pub auth: Authenticator,
    pub broker: Arc<dyn Broker>,
    pub hub: Arc<Hub>,
    pub handshakes: HandshakeLimiter,
    pub draining: AtomicBool,
    /// Connection tasks, so the drain can wait for them (axum does not wait for upgraded sockets).
    pub tracker: TaskTracker,
    pub metrics: PrometheusHandle,
    /// Turns for joins and subscribes (`SWITCHYARD_MAX_CONCURRENT_JOINS`).
    pub joins: tokio::sync::Semaphore,
    started: Instant,
}

impl App {
    /// Milliseconds since the node started (a cheap monotonic clock for heartbeats).
    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.broker.is_ready()
    }
}

/// Errors that stop a node from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot serve: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds the node's state: broker, hub, authenticator, metrics.
pub fn build(config: Config) -> Result<Arc<App>, StartError> {
    let metrics_handle = metrics::install(&config.node_id);
    let hub = Arc::new(Hub::default());
    let broker: Arc<dyn Broker> = match &config.broker {
        BrokerUrl::Memory => Arc::new(MemoryBroker::new(
            MemoryConfig {
                history_size: config.history_size,
                history_ttl: config.history_ttl,
            },
            hub.clone(),
        )),
        BrokerUrl::Redis(url) => redis_broker(&config, RedisServer::Standalone(url.clone()), &hub)?,
        BrokerUrl::RedisCluster {
            seeds,
            username,
            password,
        } => {
            let server = RedisServer::Cluster {
                seeds: seeds.clone(),
                username: username.clone(),
                password: password.clone(),
            };
            redis_broker(&config, server, &hub)?
        }
    };
    let auth = Authenticator::from_config(&config).map_err(StartError::Config)?;
    let handshake_quota = governor::Quota::per_second(
        std::num::NonZeroU32::new(config.handshake_rate.per_sec)
            .unwrap_or(std::num::NonZeroU32::MIN),
    )
    .allow_burst(
        std::num::NonZeroU32::new(config.handshake_rate.burst).unwrap_or(std::num::NonZeroU32::MIN),
    );
    Ok(Arc::new(App {
        auth,
        broker,
        hub,
        handshakes: governor::RateLimiter::keyed(handshake_quota),
        draining: AtomicBool::new(false),
        tracker: TaskTracker::new(),
        metrics: metrics_handle,
        joins: tokio::sync::Semaphore::new(config.max_concurrent_joins),
        started: Instant::now(),
        config,
    }))
}

fn redis_broker(
    config: &Config,
    server: RedisServer,
    hub: &Arc<Hub>,
) -> Result<Arc<dyn Broker>, StartError> {
    let redis = RedisConfig {
        server,
        node_id: config.node_id.clone(),
        history_size: config.history_size,
        history_ttl: config.history_ttl,
        presence_ttl: config.presence_ttl,
        durable_format: config.durable_format,
    };
    let broker = RedisBroker::new(redis, hub.clone())
        .map_err(|e| StartError::Config(format!("SWITCHYARD_BROKER: {e}")))?;
    Ok(Arc::new(broker))
}

/// The HTTP routes of a node.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new()
        .route("/ws", get(http::websocket))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .route("/api/rooms/{room_id}/publish", post(http::api_room_publish))
        .route(
            "/api/rooms/{room_id}/presence",
            get(http::api_room_presence),
        )
        .route("/api/rooms/{room_id}/history", get(http::api_room_history))
        .route("/api/users/{user_id}/publish", post(http::api_user_publish))
        .route(
            "/api/users/{user_id}/disconnect",
            post(http::api_user_disconnect),
        );
    if app.config.dev {
        router = router
            .route("/", get(http::demo_page))
            .route("/demo.js", get(http::demo_js))
            .route("/demo.css", get(http::demo_css))
            .route("/dev/token", get(http::dev_token));
    }
    router
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .with_state(app)
}

/// Serves the node on `listener` until `shutdown` is cancelled, then drains and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let app = build(config)?;
    serve(listener, app, shutdown).await
}

/// Like [`run`], with the state already built.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let addr = listener.local_addr()?;
    tracing::info!(
        node = %app.config.node_id,
        %addr,
        dev = app.config.dev,
        broker = %app.config.broker,
        "switchyard listening{}",
        if app.config.dev { format!("; demo at http://{addr}/") } else { String::new() }
    );
    let upkeep = tokio::spawn(upkeep(app.clone()));
    let http_stop = CancellationToken::new();
    let server = tokio::spawn(http_server::serve(
        listener,
        router(app.clone()),
        app.config.handshake_timeout,
        http_stop.clone(),
    ));

    shutdown.cancelled().await;
    drain(&app).await;
    http_stop.cancel();
    upkeep.abort();
    if let Err(e) = server.await {
        tracing::error!(error = %e, "HTTP server task failed");
    }
    app.broker.close().await;
    tracing::info!(node = %app.config.node_id, "drained; bye");
    Ok(())
}

/// Closes every connection with 1001, spread evenly over the drain period, then waits for the
/// connection tasks (which flush their queues before the close frame).
async fn drain(app: &App) {
    app.draining.store(true, Ordering::Relaxed);
    let connections = app.hub.all_connections();
    tracing::info!(
        connections = connections.len(),
        drain_ms = app.config.drain.as_millis() as u64,
        "draining"
    );
    let step = app
        .config
        .drain
        .checked_div(connections.len().max(1) as u32)
        .unwrap_or_default();
    let started = tokio::time::Instant::now();
    for (i, conn) in connections.iter().enumerate() {
        tokio::time::sleep_until(started + step * i as u32).await;
        conn.close(close::GOING_AWAY, "node draining");
    }
    app.tracker.close();
    if tokio::time::timeout(
        DRAIN_GRACE + crate::connection::CLOSE_REPLY_TIMEOUT,
        app.tracker.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!(
            left = app.tracker.len(),
            "drain grace period over; exiting with connections open"
        );
    }
}

/// Periodic housekeeping: metrics upkeep and forgetting idle handshake-limiter entries.
async fn upkeep(app: Arc<App>) {
    let mut tick = tokio::time::interval(metrics::UPKEEP_INTERVAL);
    let mut last_sweep = Instant::now();
    loop {
        tick.tick().await;
        app.metrics.run_upkeep();
        if last_sweep.elapsed() >= HANDSHAKE_TABLE_SWEEP {
            app.handshakes.retain_recent();
            app.handshakes.shrink_to_fit();
            last_sweep = Instant::now();
        }
    }
}
