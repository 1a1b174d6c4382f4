//! The Redis broker: nodes share nothing but Redis (standalone, or a cluster with sharded
//! pub/sub), and any node delivers to any user.
//!
//! - **Durable publish** is one Lua script on the room's shard (`publish.lua`): dedupe by
//!   `tempId`, next seq, history stream append (bounded by count; entries older than the
//!   history TTL are not served), `SPUBLISH`. Every key of a room carries the hash tag
//!   `{roomId}`, so the script runs on a cluster.
//! - **Subscriptions** are reference counted ([`channels`]): a node subscribes a room's channel
//!   while it has local subscribers, a user's channel while that user is connected to it.
//! - **Receive path** ([`dispatch`]): one task reads every pub/sub message in order, notices a
//!   seq gap (a message lost between Redis and the node) and fills it from the history stream
//!   before going on; after a reconnect or a lag of fred's broadcast channel it resubscribes and
//!   catches every room up from the stream. A canary, published to the node's own channel every
//!   [`CANARY_INTERVAL`], keeps `/readyz` honest when pub/sub breaks silently.
//! - **Presence** ([`presence`]) lives in Redis per room: one entry per connection with an
//!   expiry, refreshed by each node's heartbeat; a dead node's entries expire and the next sweep
//!   publishes `presence:leave`.
//! - **Redis down**: publishes fail with [`BrokerError::Unavailable`] (never a false success),
//!   volatile events still reach this node's subscribers, fred reconnects by itself.

mod channels;
mod dispatch;
mod envelope;
mod presence;

use async_trait::async_trait;
use fred::clients::{Client, SubscriberClient};
use fred::error::ErrorKind;
use fred::interfaces::{ClientLike, EventInterface, LuaInterface, PubsubInterface};
use fred::prelude::{
    Builder, Config, ConnectionConfig, Options, PerformanceConfig, ReconnectPolicy, Server,
    ServerConfig, Value,
};
use fred::types::config::UnresponsiveConfig;
use fred::types::scripts::Script;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

use switchyard_protocol::{Member, Ref, ServerMessage, SharedFrame};

use crate::{
    lock, new_epoch, temp_id_key, Broker, BrokerError, DurableDraft, EventSink, HistoryPage,
    PresenceConn, PresenceSnapshot, Published, RoomEvent, UserEvent, IDEMPOTENCY_TTL_S,
};
use channels::Channels;
use presence::LocalPresence;

/// A Redis command that has not answered in this long fails (the publish answers `unavailable`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Pub/sub messages fred may hold for the receive task before it lags (lag is counted, logged
/// and repaired from the history streams). fred allocates every event channel of a client at
/// this size up front (about 8 MB each at 65,536), so only the subscriber gets it.
pub const BROADCAST_CAPACITY: usize = 16_384;
/// The command client's event channels (connection events only: it receives no pub/sub).
const COMMAND_CLIENT_BROADCAST_CAPACITY: usize = 64;

fn performance_config() -> PerformanceConfig {
    PerformanceConfig {
        default_command_timeout: COMMAND_TIMEOUT,
        broadcast_channel_capacity: BROADCAST_CAPACITY,
        ..PerformanceConfig::default()
    }
}
/// Connections that run scripts (durable publishes, presence, history reads). fred never
/// pipelines EVALSHA: a connection sends a script only once the previous one has answered, so
/// one connection runs at most one script per round trip, and a busy chat node queued its
/// publishes behind each other (tens of milliseconds at 1,000 publishes/s). A room's scripts
/// always use the same connection (chosen by the room's key), so they reach Redis in the order
/// the node sent them.
pub const SCRIPT_CONNECTIONS: usize = 4;
/// How often a node publishes its canary.
pub const CANARY_INTERVAL: Duration = Duration::from_secs(2);
/// A node whose canary has not come back for this long is not ready and reconnects pub/sub.
pub const CANARY_TIMEOUT: Duration = Duration::from_secs(6);
/// Reconnect delays: exponential from this...
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// ...to this, forever.
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// A connection that leaves a command unanswered this long is closed and reconnected.
pub const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(5);
/// Volatile events waiting to be published by a node; past it a new one is dropped (counted in
/// `switchyard_broker_volatile_unsent_total`), as volatile events may be.
pub const VOLATILE_QUEUE: usize = 16_384;
/// Most volatile events sent in one pipeline.
const VOLATILE_BATCH: usize = 256;
/// How long a join waits for the node's receive path to reach what it read from Redis (the
/// room's seq, its presence version). Past it (pub/sub is broken or far behind) the join goes
/// on, and the joining connection may see a message or a presence change twice.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(1);
/// How long [`Broker::close`] waits for Redis to answer the connections' `QUIT`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A room's seq and epoch outlive its last message by at least this long.
pub const ROOM_META_TTL: Duration = Duration::from_secs(86_400);

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisServer {
    /// `redis://[user:password@]host:port[/db]`
    Standalone(String),
    /// Seed nodes of a Redis Cluster (the others are discovered), with the credentials every
    /// node takes.
    Cluster {
        seeds: Vec<(String, u16)>,
        username: Option<String>,
        password: Option<String>,
    },
}

#[derive(Clone)]
pub struct RedisConfig {
    pub server: RedisServer,
    /// This node's name (logs, the canary channel).
    pub node_id: String,
    pub history_size: usize,
    pub history_ttl: Duration,
    /// How long the presence entries of a node that died without a word live.
    pub presence_ttl: Duration,
    /// How this node's durable messages travel to the other nodes.
    pub durable_format: DurableFormat,
}

/// How a node writes durable messages for the others (and into the history). Every node reads
/// both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DurableFormat {
    /// The message's JSON, passed on to JSON clients as it is: encoded once per cluster.
    #[default]
    Json,
    /// MessagePack, the only format nodes built before the JSON one read: for the time they
    /// share the Redis with newer ones (a rolling upgrade from them).
    MessagePack,
}

pub struct RedisBroker {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
    /// Set by [`Broker::close`]: the connections were ended, dropping has nothing left to do.
    closed: AtomicBool,
}

pub(crate) struct Inner {
    config: RedisConfig,
    sink: Arc<dyn EventSink>,
    /// [`SCRIPT_CONNECTIONS`] command clients; the first ([`Inner::client`]) also serves
    /// everything that is not a script.
    script_clients: Vec<Client>,
    subscriber: SubscriberClient,
    options: Options,
    /// This process's name on the bus: volatile events it published itself are skipped on
    /// receipt (they were delivered locally at once).
    instance: String,
    canary_channel: String,
    channels: Channels,
    /// Volatile events on their way to Redis: (channel, envelope), sent in order, pipelined.
    volatile: tokio::sync::mpsc::Sender<(String, Vec<u8>)>,
    /// Rooms with local subscribers: how far each has been delivered.
    rooms: Mutex<HashMap<Arc<str>, Track>>,
    /// Rooms whose gap could not be filled yet (Redis did not answer): retried by the
    /// receive task. At most one entry per tracked room.
    behind: Mutex<HashSet<Arc<str>>>,
    presence: LocalPresence,
    scripts: Scripts,
    started: Instant,
    /// Milliseconds since `started` when the canary last came back (0: never).
    canary_seen_ms: AtomicU64,
}

/// What the node has delivered of a room: durable messages up to `seq` of `epoch`.
#[derive(Default)]
struct Track {
    refs: usize,
    seq: Option<u64>,
    epoch: Option<Arc<str>>,
    /// The newest presence version received (a change or a mark).
    presence: u64,
    /// The room's members, once a join read them (see [`presence::MemberCache`]).
    members: Option<presence::MemberCache>,
    /// Woken when `seq` or `presence` moves, and when the room stops being served: what joins
    /// and publishes of this room wait on (per room, so a delivery wakes no other room's).
    reached: Arc<tokio::sync::Notify>,
}

struct Scripts {
    publish: Script,
    history: Script,
    presence: Script,
}

macro_rules! lua {
    ($file:literal) => {
        Script::from_lua(concat!(include_str!("lua/common.lua"), include_str!($file)))
    };
}

/// A key of a room, `sy:{<room>}:<part>`: all of a room's keys carry the hash tag `{roomId}`
/// (room ids cannot contain braces). Built by hand: `format!` costs several times more, and a
/// publish makes three.
fn room_key(room_id: &str, part: &str) -> String {
    let mut key = String::with_capacity(6 + room_id.len() + part.len());
    key.push_str("sy:{");
    key.push_str(room_id);
    key.push_str("}:");
    key.push_str(part);
    key
}

fn room_channel(room_id: &str) -> String {
    room_key(room_id, "events")
}

fn room_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("sy:{")?.strip_suffix("}:events")
}

fn user_channel(user_id: &str) -> String {
    format!("sy:user:{user_id}")
}

/// The idempotency key of a tempId: user and tempId length-prefixed, so no two pairs collide.
fn dedupe_key(room_id: &str, user_id: &str, temp_id: &Ref) -> String {
    room_key(
        room_id,
        &format!("tempid:{}:{user_id}{}", user_id.len(), temp_id_key(temp_id)),
    )
}

/// Sorts fred's errors into "Redis is not there" (answer `unavailable`) and the rest.
pub(crate) fn redis_error(e: fred::error::Error) -> BrokerError {
    let details = e.details();
    let transient = [
        "LOADING",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "MASTERDOWN",
        "READONLY",
        "BUSY",
        // Redis is full (maxmemory): it takes nothing until it has room again.
        "OOM",
    ]
    .iter()
    .any(|p| details.starts_with(p))
        // fred, with `fail_fast`, when the connection just dropped.
        || details.contains("Failed to route");
    match e.kind() {
        ErrorKind::IO
        | ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Routing
        | ErrorKind::Cluster
        | ErrorKind::Backpressure => BrokerError::Unavailable(e.to_string()),
        _ if transient => BrokerError::Unavailable(e.to_string()),
        _ => BrokerError::Internal(e.to_string()),
    }
}

/// How long a room's seq and epoch outlive the last publish, join or heartbeat that touched it.
fn meta_ttl(config: &RedisConfig) -> Duration {
    ROOM_META_TTL.max(config.history_ttl * 2)
}

fn bad_reply(what: &str) -> BrokerError {
    BrokerError::Internal(format!("unexpected reply from Redis ({what})"))
}

impl RedisBroker {
    /// Creates the broker and starts connecting (in the background: a node starts while Redis
    /// is down, not ready until it is up). Errors name a configuration mistake.
    pub fn new(config: RedisConfig, sink: Arc<dyn EventSink>) -> Result<Self, BrokerError> {
        let mut fred_config = match &config.server {
            RedisServer::Standalone(url) => Config::from_url(url)
                .map_err(|e| BrokerError::Internal(format!("bad Redis URL {url}: {e}")))?,
            RedisServer::Cluster {
                seeds,
                username,
                password,
            } => Config {
                server: ServerConfig::new_clustered(seeds.clone()),
                username: username.clone(),
                password: password.clone(),
                ..Config::default()
            },
        };
        // Keep trying when Redis is not up yet at start-up, as after any disconnect.
        fred_config.fail_fast = false;
        let performance = performance_config();
        let connection = ConnectionConfig {
            connection_timeout: COMMAND_TIMEOUT,
            internal_command_timeout: COMMAND_TIMEOUT,
            // A script cut off mid-flight is not sent again: its caller gets `unavailable`
            // and retries with its tempId, which the script deduplicates.
            max_command_attempts: 1,
            unresponsive: UnresponsiveConfig {
                max_timeout: Some(UNRESPONSIVE_AFTER),
                interval: Duration::from_secs(1),
            },
            ..ConnectionConfig::default()
        };
        let policy = ReconnectPolicy::new_exponential(
            0,
            RECONNECT_MIN.as_millis() as u32,
            RECONNECT_MAX.as_millis() as u32,
            2,
        );
        let mut builder = Builder::from_config(fred_config);
        builder
            .set_performance_config(performance)
            .set_connection_config(connection)
            .set_policy(policy);
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| BrokerError::Internal(format!("Redis subscriber: {e}")))?;
        builder.set_performance_config(PerformanceConfig {
            broadcast_channel_capacity: COMMAND_CLIENT_BROADCAST_CAPACITY,
            ..performance_config()
        });
        let script_clients = (0..SCRIPT_CONNECTIONS)
            .map(|_| builder.build())
            .collect::<Result<Vec<Client>, _>>()
            .map_err(|e| BrokerError::Internal(format!("Redis client: {e}")))?;

        let instance = format!(
            "{}/{}",
            config.node_id,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let canary_channel = format!("sy:canary:{instance}");
        let channels = Channels::new(subscriber.clone());
        channels.hold(&canary_channel);
        let (volatile, volatile_rx) = tokio::sync::mpsc::channel(VOLATILE_QUEUE);
        let inner = Arc::new(Inner {
            presence: LocalPresence::new(config.presence_ttl, meta_ttl(&config)),
            config,
            sink,
            options: Options {
                fail_fast: true,
                timeout: Some(COMMAND_TIMEOUT),
                ..Options::default()
            },
            instance,
            canary_channel,
            channels,
            volatile,
            rooms: Mutex::default(),
            behind: Mutex::default(),
            scripts: Scripts {
                publish: lua!("lua/publish.lua"),
                history: lua!("lua/history.lua"),
                presence: lua!("lua/presence.lua"),
            },
            started: Instant::now(),
            canary_seen_ms: AtomicU64::new(0),
            script_clients,
            subscriber,
        });
        // Subscribe to the receive path before connecting: nothing published is missed.
        let messages = inner.subscriber.message_rx();
        let reconnects = inner.subscriber.reconnect_rx();
        let subscriber_errors = inner.subscriber.error_rx();
        let mut tasks = vec![spawn_connection(&inner.subscriber)];
        for client in &inner.script_clients {
            tasks.push(spawn_connection(client));
            tasks.push(tokio::spawn(log_errors(client.error_rx())));
        }
        tasks.push(tokio::spawn(dispatch::run(
            Arc::downgrade(&inner),
            messages,
            reconnects,
            subscriber_errors,
        )));
        tasks.push(tokio::spawn(dispatch::canary(Arc::downgrade(&inner))));
        tasks.push(tokio::spawn(send_volatile(
            Arc::downgrade(&inner),
            volatile_rx,
        )));
        tasks.push(tokio::spawn(presence::heartbeat(Arc::downgrade(&inner))));
        Ok(RedisBroker {
            inner,
            tasks,
            closed: AtomicBool::new(false),
        })
    }

    /// Number of pub/sub channels this node holds (rooms, users, its canary).
    pub fn channel_count(&self) -> usize {
        self.inner.channels.len()
    }
}

/// Which script connection serves a key: chosen by its hash slot (the room's `{room}` tag), so
/// every script of a room goes through the same connection, in order.
fn script_slot(first_key: Option<&String>, connections: usize) -> usize {
    first_key.map_or(0, |key| {
        usize::from(fred::util::redis_keyslot(key.as_bytes())) % connections
    })
}

/// Ends a connection that is up. A `QUIT` to one that is down would wait in fred's queue for a
/// reconnection; at shutdown there is nothing of it to end.
async fn quit_if_connected(client: &impl ClientLike) {
    if client.is_connected() {
        let _ = client.quit().await;
    }
}

fn spawn_connection(client: &impl ClientLike) -> JoinHandle<()> {
    let handle = client.connect();
    tokio::spawn(async move {
        if let Ok(Err(e)) = handle.await {
            tracing::error!(error = %e, "the Redis connection task ended");
        }
    })
}

/// Publishes volatile events in the order they came, as many per pipeline as are waiting: one
/// round trip per batch, and the connection that sent them never waits for Redis.
async fn send_volatile(
    inner: std::sync::Weak<Inner>,
    mut queue: tokio::sync::mpsc::Receiver<(String, Vec<u8>)>,
) {
    let mut batch = Vec::with_capacity(VOLATILE_BATCH);
    while queue.recv_many(&mut batch, VOLATILE_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else { return };
        let pipeline = inner.client().pipeline();
        for (channel, payload) in batch.drain(..) {
            let _: Result<(), _> = pipeline.spublish(channel, payload).await;
        }
        let failed = pipeline
            .try_all::<Value>()
            .await
            .iter()
            .filter(|r| r.is_err())
            .count();
        if failed > 0 {
            metrics::counter!("switchyard_broker_volatile_unsent_total").increment(failed as u64);
            tracing::debug!(failed, "volatile events reached this node only");
        }
    }
}

async fn log_errors(
    mut errors: tokio::sync::broadcast::Receiver<(fred::error::Error, Option<Server>)>,
) {
    loop {
        match errors.recv().await {
            Ok((e, server)) => {
                metrics::counter!("switchyard_broker_connection_errors_total").increment(1);
                tracing::warn!(error = %e, server = ?server.map(|s| s.to_string()), "Redis connection error; reconnecting");
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Drop for RedisBroker {
    /// A broker dropped without [`Broker::close`] (a test's node, say) still ends its
    /// connections, as far as a runtime is there to run the `QUIT`s.
    fn drop(&mut self) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        for task in &self.tasks {
            task.abort();
        }
        let clients = self.inner.script_clients.clone();
        let subscriber = self.inner.subscriber.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for client in clients {
                    let _ = client.quit().await;
                }
                let _ = subscriber.quit().await;
            });
        }
    }
}

impl Inner {
    /// Waits, at most `within`, until the room's track satisfies `reached` (or the room is no
    /// longer served); false when the wait ran out.
    async fn wait_for_track(
        &self,
        room_id: &str,
        within: Duration,
        reached: impl Fn(&Track) -> bool,
    ) -> bool {
        let done = || lock(&self.rooms).get(room_id).is_none_or(&reached);
        let wait = async {
            loop {
                let signal = match lock(&self.rooms).get(room_id) {
                    Some(track) if !reached(track) => track.reached.clone(),
                    _ => return,
                };
                let notified = signal.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // A move between the check above and `enable` did not wake us: look again.
                if done() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    /// Stops following every room's members: a presence change may have been missed (pub/sub
    /// reconnected or lagged). The next join of each room reads them from Redis again.
    fn forget_members(&self) {
        for track in lock(&self.rooms).values_mut() {
            track.members = None;
        }
    }

    /// The command client for everything but scripts (and the first script connection).
    fn client(&self) -> &Client {
        &self.script_clients[0]
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis().max(1) as u64
    }

    fn meta_ttl_s(&self) -> u64 {
        meta_ttl(&self.config).as_secs()
    }

    /// Runs one of our scripts, loading it first where Redis does not know it (a restarted
    /// server, a new cluster node).
    async fn eval(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> Result<Value, BrokerError> {
        let script_client =
            &self.script_clients[script_slot(keys.first(), self.script_clients.len())];
        if !script_client.is_connected() {
            return Err(BrokerError::Unavailable(
                "not connected to Redis (reconnecting)".into(),
            ));
        }
        let client = script_client.with_options(&self.options);
        match client
            .evalsha::<Value, _, _, _>(script.sha1().clone(), keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                let lua = script.lua().cloned().unwrap_or_default();
                self.client()
                    .script_load_cluster::<Value, _>(lua)
                    .await
                    .map_err(|e| self.classify(e))?;
                client
                    .evalsha(script.sha1().clone(), keys, args)
                    .await
                    .map_err(|e| self.classify(e))
            }
            result => result.map_err(|e| self.classify(e)),
        }
    }

    /// A failure while the connection is down is `unavailable`, whatever fred calls it.
    fn classify(&self, e: fred::error::Error) -> BrokerError {
        match redis_error(e) {
            BrokerError::Internal(m) if !self.client().is_connected() => {
                BrokerError::Unavailable(m)
            }
            other => other,
        }
    }

    /// Reads a room's position and the messages after `since_seq` (see `history.lua`).
    async fn read_history(
        &self,
        room_id: &str,
        since_seq: Option<u64>,
        epoch: Option<&str>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        let keys = vec![room_key(room_id, "meta"), room_key(room_id, "history")];
        let since = since_seq.map_or(-1, |s| s.min(i64::MAX as u64) as i64);
        let args: Vec<Value> = vec![
            new_epoch().to_string().into(),
            since.into(),
            (limit.max(1) as i64).into(),
            (self.config.history_ttl.as_millis() as i64).into(),
            (self.meta_ttl_s() as i64).into(),
        ];
        let reply = self
            .eval(&self.scripts.history, keys, args)
            .await?
            .into_array();
        let mut items = reply.into_iter();
        let (Some(epoch_now), Some(seq), Some(first)) = (
            items.next().and_then(|v| v.as_string()),
            items.next().and_then(|v| v.as_u64()),
            items.next().and_then(|v| v.as_u64()),
        ) else {
            return Err(bad_reply("history"));
        };
        let epoch_now: Arc<str> = Arc::from(epoch_now);
        let mut page = HistoryPage {
            messages: Vec::new(),
            seq,
            epoch: epoch_now.clone(),
            complete: true,
            caught_up: true,
        };
        let Some(since) = since_seq else {
            return Ok(page);
        };
        if epoch.is_some_and(|e| *e != *epoch_now) || since > seq {
            page.complete = false;
            return Ok(page);
        }
        page.complete = since == seq || first == since + 1;
        for item in items {
            let Some(bytes) = item.as_bytes() else {
                return Err(bad_reply("history entry"));
            };
            match envelope::decode(bytes) {
                Ok(envelope::Envelope::Durable { seq, body, .. }) => {
                    page.messages.push(Arc::new(body.into_frame(seq)));
                }
                Ok(_) | Err(_) => {
                    tracing::warn!(room = room_id, "skipping a malformed history entry");
                    page.complete = false;
                }
            }
        }
        Ok(page)
    }

    async fn spublish(&self, channel: String, payload: Vec<u8>) -> Result<(), BrokerError> {
        if !self.client().is_connected() {
            return Err(BrokerError::Unavailable(
                "not connected to Redis (reconnecting)".into(),
            ));
        }
        self.client()
            .with_options(&self.options)
            .spublish::<Value, _, _>(channel, payload)
            .await
            .map(|_| ())
            .map_err(|e| self.classify(e))
    }

    fn is_ready(&self) -> bool {
        let seen = self.canary_seen_ms.load(Ordering::Relaxed);
        self.client().is_connected()
            && self.subscriber.is_connected()
            && seen > 0
            && self.elapsed_ms().saturating_sub(seen) < CANARY_TIMEOUT.as_millis() as u64
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn close(&self) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        // The receive path first: a connection that ends is not news to log or recover from.
        for task in &self.tasks {
            task.abort();
        }
        let inner = &self.inner;
        let quits = futures_util::future::join(
            futures_util::future::join_all(inner.script_clients.iter().map(quit_if_connected)),
            quit_if_connected(&inner.subscriber),
        );
        if tokio::time::timeout(CLOSE_TIMEOUT, quits).await.is_err() {
            tracing::warn!("Redis did not answer QUIT in time; closing anyway");
        }
    }

    async fn publish_durable(
        &self,
        room_id: &str,
        draft: DurableDraft,
    ) -> Result<Published, BrokerError> {
        let inner = &self.inner;
        let dedupe = draft
            .temp_id
            .as_ref()
            .map(|t| dedupe_key(room_id, draft.user_id.as_deref().unwrap_or(""), t));
        let id = crate::random_uuid().simple().to_string();
        // seq and ts are placeholders: the script assigns them, receivers fill them in.
        let message = draft.into_message(room_id, id.clone(), 0, 0);
        let keys = vec![
            room_key(room_id, "meta"),
            room_key(room_id, "history"),
            room_channel(room_id),
            dedupe
                .clone()
                .unwrap_or_else(|| room_key(room_id, "tempid")),
        ];
        let args: Vec<Value> = vec![
            new_epoch().to_string().into(),
            bytes::Bytes::from(envelope::durable_body(message, inner.config.durable_format)).into(),
            (inner.config.history_size as i64).into(),
            (inner.config.history_ttl.as_millis() as i64).into(),
            (inner.meta_ttl_s() as i64).into(),
            (if dedupe.is_some() {
                IDEMPOTENCY_TTL_S
            } else {
                0
            } as i64)
                .into(),
            id.into(),
        ];
        let reply = inner
            .eval(&inner.scripts.publish, keys, args)
            .await?
            .into_array();
        let duplicate = reply.first().and_then(|v| v.as_u64());
        let place = reply.get(1).and_then(|v| v.as_string());
        let (Some(duplicate), Some(place)) = (duplicate, place) else {
            return Err(bad_reply("publish"));
        };
        let mut parts = place.splitn(3, ':');
        let (Some(seq), Some(ts), Some(id)) = (
            parts.next().and_then(|s| s.parse().ok()),
            parts.next().and_then(|s| s.parse().ok()),
            parts.next(),
        ) else {
            return Err(bad_reply("publish place"));
        };
        Ok(Published {
            id: id.to_owned(),
            seq,
            ts,
            duplicate: duplicate == 1,
        })
    }

    async fn publish_volatile(
        &self,
        room_id: &str,
        message: ServerMessage,
        exclude_user: Option<Arc<str>>,
    ) -> Result<(), BrokerError> {
        let inner = &self.inner;
        let payload = envelope::volatile(&inner.instance, exclude_user.as_deref(), &message);
        // This node's subscribers get it at once, Redis or not; other nodes through Redis.
        let event = RoomEvent::volatile(Arc::new(SharedFrame::new(message)), exclude_user);
        inner.sink.room_event(room_id, &event);
        let queued = inner.client().is_connected()
            && inner
                .volatile
                .try_send((room_channel(room_id), payload))
                .is_ok();
        if !queued {
            metrics::counter!("switchyard_broker_volatile_unsent_total").increment(1);
        }
        Ok(())
    }

    async fn publish_user(&self, user_id: &str, event: UserEvent) -> Result<(), BrokerError> {
        let payload = match &event {
            UserEvent::Event(frame) => envelope::user_event(user_id, frame.message()),
            UserEvent::Disconnect { reason } => envelope::user_disconnect(user_id, reason),
        };
        self.inner.spublish(user_channel(user_id), payload).await
    }

    async fn history(
        &self,
        room_id: &str,
        since_seq: Option<u64>,
        epoch: Option<&str>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        let mut page = self
            .inner
            .read_history(room_id, since_seq, epoch, limit)
            .await?;
        // A join buffers the room's live events from before this read and skips those the
        // page covers; it must also not get one of them live after it: wait until the node's
        // receive path has delivered up to the page's seq.
        let reached = |track: &Track| match (&track.epoch, track.seq) {
            (Some(epoch), Some(seq)) => *epoch != page.epoch || seq >= page.seq,
            _ => false,
        };
        if !self
            .inner
            .wait_for_track(room_id, CATCH_UP_WAIT, reached)
            .await
        {
            metrics::counter!("switchyard_broker_seq_catch_up_timeouts_total").increment(1);
            page.caught_up = false;
        }
        Ok(page)
    }

    async fn delivered_locally(&self, room_id: &str, seq: u64, within: Duration) {
        // The receive path moves the room's position after handing the message on. The
        // script's reply and its SPUBLISH leave Redis together, on two connections: the
        // message is often there already, and otherwise usually comes soon after.
        let there = |track: &Track| track.seq.is_some_and(|delivered| delivered >= seq);
        if !self.inner.wait_for_track(room_id, within, there).await {
            metrics::counter!("switchyard_broker_echo_wait_timeouts_total").increment(1);
        }
    }

    async fn subscribe_room(&self, room_id: &str) -> Result<(), BrokerError> {
        let inner = &self.inner;
        lock(&inner.rooms)
            .entry(Arc::from(room_id))
            .or_default()
            .refs += 1;
        // The first local subscriber: the node delivers the room from its position now (read
        // after SSUBSCRIBE, so nothing falls between) and later subscribers find it set.
        let start_tracking = || async {
            let page = inner.read_history(room_id, None, None, 1).await?;
            // Joins of the room that read the position meanwhile wait for it to be set.
            inner.change_track(room_id, |track| {
                if track.seq.is_none() {
                    track.seq = Some(page.seq);
                    track.epoch = Some(page.epoch);
                }
            });
            Ok(())
        };
        let result = inner
            .channels
            .acquire(&room_channel(room_id), false, start_tracking)
            .await;
        if result.is_err() {
            inner.forget_room(room_id);
        }
        result.map(|_| ())
    }

    async fn unsubscribe_room(&self, room_id: &str) {
        let inner = &self.inner;
        // The last local subscriber: what the node delivered no longer holds once it stops
        // listening; the next first subscriber starts again from the room's position.
        let stop_tracking = || {
            if let Some(track) = lock(&inner.rooms).get_mut(room_id) {
                track.seq = None;
                track.epoch = None;
            }
        };
        inner
            .channels
            .release(&room_channel(room_id), stop_tracking)
            .await;
        inner.forget_room(room_id);
    }

    async fn subscribe_user(&self, user_id: &str) -> Result<(), BrokerError> {
        self.inner
            .channels
            .acquire(&user_channel(user_id), true, || async { Ok(()) })
            .await
            .map(|_| ())
    }

    async fn unsubscribe_user(&self, user_id: &str) {
        self.inner
            .channels
            .release(&user_channel(user_id), || {})
            .await;
    }

    async fn presence_join(
        &self,
        room_id: &str,
        conn: &PresenceConn,
        member: Member,
    ) -> Result<PresenceSnapshot, BrokerError> {
        presence::join(&self.inner, room_id, conn, member).await
    }

    async fn presence_leave(&self, room_id: &str, conn: &PresenceConn) -> Result<(), BrokerError> {
        presence::leave(&self.inner, room_id, conn).await
    }

    async fn presence_members(&self, room_id: &str) -> Result<Vec<Member>, BrokerError> {
        presence::members(&self.inner, room_id).await
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }
}

impl Inner {
    /// Changes a served room's track, then wakes whatever waits on it (outside the lock: a
    /// woken wait takes it to look). `None` when the node does not serve the room.
    fn change_track<R>(&self, room_id: &str, change: impl FnOnce(&mut Track) -> R) -> Option<R> {
        let (result, reached) = {
            let mut rooms = lock(&self.rooms);
            let track = rooms.get_mut(room_id)?;
            (change(track), track.reached.clone())
        };
        reached.notify_waiters();
        Some(result)
    }

    fn forget_room(&self, room_id: &str) {
        let mut rooms = lock(&self.rooms);
        let Some(track) = rooms.get_mut(room_id) else {
            return;
        };
        track.refs = track.refs.saturating_sub(1);
        if track.refs > 0 {
            return;
        }
        let gone = rooms.remove(room_id);
        lock(&self.behind).remove(room_id);
        drop(rooms);
        // Whoever waits on the room sees it no longer served, and stops waiting.
        if let Some(track) = gone {
            track.reached.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_room_hash_tag() {
        let room = "doc:42.a@b";
        for key in [
            room_key(room, "meta"),
            room_key(room, "history"),
            room_channel(room),
            dedupe_key(room, "u{1}", &Ref::Str("t".into())),
        ] {
            assert_eq!(
                fred::util::redis_keyslot(key.as_bytes()),
                fred::util::redis_keyslot(room.as_bytes()),
                "{key}"
            );
        }
        assert_eq!(room_of_channel(&room_channel(room)), Some(room));
        assert_ne!(
            dedupe_key("r", "a:1", &Ref::Str("2".into())),
            dedupe_key("r", "a", &Ref::Str("1:2".into()))
        );
        assert_ne!(
            dedupe_key("r", "a", &Ref::Int(7)),
            dedupe_key("r", "a", &Ref::Str("7".into()))
        );
    }
}
