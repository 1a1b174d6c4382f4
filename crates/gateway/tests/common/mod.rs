//! Test harness: real gateway nodes on port 0 (in-process, or the `switchyard` binary), tokens
//! signed the way a real backend would, and real WebSocket clients.
#![allow(dead_code, unreachable_pub)]

pub mod process;
pub mod redis;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use switchyard_client::{Client, ConnectOptions};
use switchyard_gateway::Config;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-0123456789abcdef";
pub const API_KEY: &str = "test-api-key";
/// Deadline for an event that should come promptly.
pub const SOON: Duration = Duration::from_secs(5);
/// How long to wait to be sure something does *not* come.
pub const QUIET: Duration = Duration::from_millis(300);

pub struct Node {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    /// The node's own Redis, when the suite runs on the Redis broker.
    redis: Option<redis::Redis>,
}

/// `SWITCHYARD_TEST_BROKER=redis` runs the single-node suites on the Redis broker: each node
/// gets its own `redis-server`, so the same tests hold for both brokers.
fn suite_on_redis() -> bool {
    std::env::var("SWITCHYARD_TEST_BROKER").as_deref() == Ok("redis")
}

impl Node {
    /// Starts an in-process node with the test secret and API key, plus `env` overrides.
    pub async fn start(env: &[(&str, &str)]) -> Node {
        let mut pairs = vec![
            ("SWITCHYARD_LISTEN", "127.0.0.1:0"),
            ("SWITCHYARD_JWT_SECRET", SECRET),
            ("SWITCHYARD_API_KEYS", API_KEY),
            ("SWITCHYARD_NODE_ID", "test-node"),
            ("SWITCHYARD_DRAIN_MS", "100"),
        ];
        let own_redis = (suite_on_redis() && !env.iter().any(|(k, _)| *k == "SWITCHYARD_BROKER"))
            .then(redis::Redis::start);
        let redis_url = own_redis.as_ref().map(redis::Redis::url);
        if let Some(url) = &redis_url {
            pairs.push(("SWITCHYARD_BROKER", url));
        }
        pairs.extend_from_slice(env);
        let config = Config::from_env(pairs).expect("valid test config");
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            switchyard_gateway::run(listener, config, stop)
                .await
                .expect("node runs");
        });
        let node = Node {
            addr,
            shutdown,
            task,
            redis: own_redis,
        };
        if node.redis.is_some() {
            node.wait_ready().await;
        }
        node
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connects user `sub` (default claims) and reads its `welcome`.
    pub async fn connect(&self, sub: &str) -> Client {
        self.connect_with(token(sub, json!({}))).await
    }

    /// Connects with a token and reads the `welcome`.
    pub async fn connect_with(&self, token: String) -> Client {
        let mut client = Client::connect(
            &self.ws_url(),
            ConnectOptions {
                token: Some(token),
                ..Default::default()
            },
        )
        .await
        .expect("handshake accepted");
        let welcome = client.recv_timeout(SOON).await.expect("welcome");
        assert_eq!(
            welcome["type"], "welcome",
            "the first frame is welcome: {welcome}"
        );
        client
    }

    pub async fn connect_opts(
        &self,
        options: ConnectOptions,
    ) -> Result<Client, switchyard_client::ConnectError> {
        Client::connect(&self.ws_url(), options).await
    }

    /// Waits until `/readyz` answers 200 (a Redis-backed node is ready once its canary is back).
    pub async fn wait_ready(&self) {
        wait_ready(&self.http("/readyz")).await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `sub`, valid for an hour, with `extra` claims merged in.
pub fn token(sub: &str, extra: Value) -> String {
    let mut claims = json!({ "sub": sub, "exp": now_s() + 3600, "name": format!("{sub} name"), "publish": true });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    sign(&claims)
}

pub fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Joins a room and returns the `room-joined` reply.
pub async fn join(client: &mut Client, room: &str) -> Value {
    client
        .send(json!({ "type": "join-room", "roomId": room }))
        .await
        .unwrap();
    let reply = client
        .recv_until(|v| v["type"] == "room-joined" || v["type"] == "error", SOON)
        .await
        .unwrap();
    assert_eq!(reply["type"], "room-joined", "{reply}");
    reply
}

/// Sends a chat message and returns its ack.
pub async fn say(client: &mut Client, room: &str, temp_id: &str, text: &str) -> Value {
    client
        .send(json!({ "type": "message", "roomId": room, "tempId": temp_id, "text": text }))
        .await
        .unwrap();
    client
        .recv_until(|v| v["type"] == "ack" && v["tempId"] == temp_id, SOON)
        .await
        .unwrap()
}

/// Asserts that nothing matching `predicate` arrives within [`QUIET`].
pub async fn assert_quiet(client: &mut Client, predicate: impl Fn(&Value) -> bool) {
    match client.recv_until(&predicate, QUIET).await {
        Err(switchyard_client::RecvError::Timeout) => {}
        other => panic!("expected nothing, got {other:?}"),
    }
}

/// An HTTP client for the API with the test key.
pub fn api() -> reqwest::Client {
    reqwest::Client::new()
}

/// How long a node may take to become ready (connect to Redis, subscribe, see its canary).
pub const READY: Duration = Duration::from_secs(15);

/// Polls a `/readyz` URL until it answers 200, for at most [`READY`].
pub async fn wait_ready(url: &str) {
    wait_status(url, 200, READY).await;
}

/// Polls `url` until it answers `status`, for at most `within`.
pub async fn wait_status(url: &str, status: u16, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(r) = api().get(url).send().await {
            if r.status() == status {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} did not answer {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects user `sub` to a node at `ws_url` and reads its `welcome`.
pub async fn connect_to(ws_url: &str, sub: &str) -> Client {
    let mut client = Client::connect(
        ws_url,
        ConnectOptions {
            token: Some(token(sub, json!({}))),
            ..Default::default()
        },
    )
    .await
    .expect("handshake accepted");
    client.recv_type("welcome", SOON).await.expect("welcome");
    client
}

/// GET with the test API key; the JSON answer (null when it is not JSON).
pub async fn api_get(url: &str) -> Value {
    let res = api().get(url).bearer_auth(API_KEY).send().await.unwrap();
    res.json().await.unwrap_or(Value::Null)
}

/// POST with the test API key and an optional JSON body; the status and the JSON answer.
pub async fn api_post(url: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = api().post(url).bearer_auth(API_KEY);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A GET's body as text (`/metrics`, say).
pub async fn get_text(url: &str) -> String {
    api().get(url).send().await.unwrap().text().await.unwrap()
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
