//! Node configuration: one table of settings ([`SETTINGS`]), read from a config file, CLI flags
//! and the environment (the environment wins, then flags, then the file, then the default).
//! Every value is parsed and checked before the node starts; a bad one stops start-up with a
//! message that names the setting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use switchyard_broker::DurableFormat;
use switchyard_protocol::Limits;

/// One setting: its environment variable, CLI flag, default and help line.
pub struct Setting {
    pub env: &'static str,
    pub flag: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

macro_rules! settings {
    ($($env:literal, $flag:literal, $default:expr, $help:literal;)*) => {
        /// Every setting a node reads, in `--help` order.
        pub const SETTINGS: &[Setting] = &[$(Setting { env: $env, flag: $flag, default: $default, help: $help }),*];
    };
}

settings! {
    "SWITCHYARD_LISTEN", "listen", Some("127.0.0.1:8080"), "address:port to listen on";
    "SWITCHYARD_BROKER", "broker", Some("memory"), "memory, redis://host:port or redis-cluster://host:port,host:port";
    "SWITCHYARD_NODE_ID", "node-id", None, "this node's name (welcome.node, metrics, logs); generated when unset";
    "SWITCHYARD_JWT_SECRET", "jwt-secret", None, "HS256 shared secret";
    "SWITCHYARD_JWT_PUBLIC_KEY_FILE", "jwt-public-key-file", None, "PEM public key for RS256/ES256 tokens";
    "SWITCHYARD_JWT_ISSUER", "jwt-issuer", None, "required `iss` claim, checked when set";
    "SWITCHYARD_JWT_AUDIENCE", "jwt-audience", None, "required `aud` claim, checked when set";
    "SWITCHYARD_API_KEYS", "api-keys", None, "comma-separated keys for the HTTP API (unset: the API refuses all)";
    "SWITCHYARD_ALLOWED_ORIGINS", "allowed-origins", None, "comma-separated allowed Origins (unset: any)";
    "SWITCHYARD_DEV", "dev", None, "1: development mode (loopback only): generated secret, /dev/token, demo page at /";
    "SWITCHYARD_MAX_FRAME_BYTES", "max-frame-bytes", Some("65536"), "largest inbound frame; larger closes with 1009";
    "SWITCHYARD_MAX_TEXT_CHARS", "max-text-chars", Some("4000"), "longest message text, in code points";
    "SWITCHYARD_MAX_DATA_BYTES", "max-data-bytes", Some("16384"), "largest `data`, JSON-encoded";
    "SWITCHYARD_MAX_BATCH", "max-batch", Some("100"), "most messages in one client frame";
    "SWITCHYARD_RATE_PER_SEC", "rate-per-sec", Some("10"), "per-connection budget of durable messages (per second)";
    "SWITCHYARD_RATE_BURST", "rate-burst", Some("20"), "burst of that budget";
    "SWITCHYARD_VOLATILE_RATE_PER_SEC", "volatile-rate-per-sec", Some("60"), "per-connection budget of typing and cursor events";
    "SWITCHYARD_VOLATILE_RATE_BURST", "volatile-rate-burst", Some("120"), "burst of that budget";
    "SWITCHYARD_HANDSHAKE_PER_SEC", "handshake-per-sec", Some("100"), "WebSocket handshakes per client address (per second)";
    "SWITCHYARD_HANDSHAKE_BURST", "handshake-burst", Some("200"), "burst of that budget";
    "SWITCHYARD_TRUSTED_PROXIES", "trusted-proxies", None, "comma-separated proxy addresses or CIDRs whose X-Forwarded-For names the client (unset: none)";
    "SWITCHYARD_HANDSHAKE_TIMEOUT_MS", "handshake-timeout-ms", Some("10000"), "time a client has to send a whole HTTP request head; slower ones (slow loris) are dropped";
    "SWITCHYARD_HISTORY_SIZE", "history-size", Some("1000"), "durable messages kept per room for resume";
    "SWITCHYARD_HISTORY_TTL_S", "history-ttl-s", Some("600"), "how long durable messages are kept, in seconds";
    "SWITCHYARD_DURABLE_FORMAT", "durable-format", Some("json"), "how durable messages travel between nodes (Redis): json, or msgpack while nodes built before the JSON format share the Redis (a rolling upgrade from them)";
    "SWITCHYARD_QUEUE_MAX", "queue-max", Some("1024"), "outbound queue bound per connection, in messages";
    "SWITCHYARD_BATCH_MAX", "batch-max", Some("128"), "most messages the server writes in one frame";
    "SWITCHYARD_BATCH_DELAY_MS", "batch-delay-ms", Some("20"), "least time between two writes to a busy connection (over 2 messages per delay), so they fill batches; 0: always write at once";
    "SWITCHYARD_MAX_CONNECTIONS", "max-connections", Some("100000"), "connections per node; past it handshakes get 503";
    "SWITCHYARD_MAX_ROOMS_PER_CONNECTION", "max-rooms-per-connection", Some("100"), "rooms one connection may join or subscribe to";
    "SWITCHYARD_MAX_CONCURRENT_JOINS", "max-concurrent-joins", Some("16"), "joins and subscribes the node runs at once; more wait their turn (at most 10 s, then `unavailable`)";
    "SWITCHYARD_PRESENCE_TTL_S", "presence-ttl-s", Some("30"), "how long a dead node's presence entries live";
    "SWITCHYARD_HEARTBEAT_MS", "heartbeat-ms", Some("25000"), "protocol ping interval; silent peers are closed after two";
    "SWITCHYARD_DRAIN_MS", "drain-ms", Some("10000"), "how long SIGTERM spreads connection closes over";
    "SWITCHYARD_WORKER_THREADS", "worker-threads", None, "threads that run connections (unset: one per CPU the process may use, its cgroup's quota included)";
    "SWITCHYARD_LOG_FORMAT", "log-format", Some("text"), "text or json (level: RUST_LOG)";
}

/// Where the node's rooms are brokered.
#[derive(Clone, PartialEq, Eq)]
pub enum BrokerUrl {
    Memory,
    /// `redis://[user:password@]host:port[/db]`
    Redis(String),
    /// Seed nodes of a Redis Cluster, and the credentials every node takes.
    RedisCluster {
        seeds: Vec<(String, u16)>,
        username: Option<String>,
        password: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A token bucket: `per_sec` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    pub per_sec: u32,
    pub burst: u32,
}

/// A node's validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub broker: BrokerUrl,
    pub node_id: String,
    pub jwt_secret: Option<String>,
    /// PEM text of the public key, read at start-up.
    pub jwt_public_key: Option<Vec<u8>>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub api_keys: Vec<String>,
    pub allowed_origins: Option<Vec<String>>,
    /// Proxies whose `X-Forwarded-For` names the client (for the per-address limit and logs).
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    pub dev: bool,
    pub limits: Limits,
    pub rate: RateBudget,
    pub volatile_rate: RateBudget,
    pub handshake_rate: RateBudget,
    pub history_size: usize,
    pub history_ttl: Duration,
    /// How durable messages travel between nodes.
    pub durable_format: DurableFormat,
    pub queue_max: usize,
    pub batch_max: usize,
    pub batch_delay: Duration,
    pub max_connections: usize,
    pub max_rooms_per_connection: usize,
    pub max_concurrent_joins: usize,
    pub presence_ttl: Duration,
    pub heartbeat: Duration,
    pub drain: Duration,
    /// Time from a connection (or its previous response) to a complete request head.
    pub handshake_timeout: Duration,
    /// Threads of the node's runtime; `None`: one per CPU it may use.
    pub worker_threads: Option<usize>,
    pub log_format: LogFormat,
}

/// A configuration mistake; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{setting}={value:?} is invalid: {reason}")]
    Invalid {
        setting: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{0} (see --help)")]
    Usage(String),
    #[error("cannot read {what} {path}: {error}")]
    File {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help(String),
    Version,
}

impl Config {
    /// Reads the configuration from the process's arguments and environment.
    pub fn from_process() -> Result<Command, ConfigError> {
        Self::from_sources(std::env::args().skip(1), std::env::vars())
    }

    /// Builds a configuration from `KEY=value` pairs alone (the environment form), as tests do.
    pub fn from_env<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Config, ConfigError> {
        let env = pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned()));
        match Self::from_sources(std::iter::empty(), env)? {
            Command::Run(config) => Ok(*config),
            _ => Err(ConfigError::Usage("unexpected command".into())),
        }
    }

    /// Builds a configuration from CLI arguments (without the program name) and environment pairs.
    pub fn from_sources(
        args: impl IntoIterator<Item = String>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Command, ConfigError> {
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("SWITCHYARD_"))
            .collect();
        let mut flags: HashMap<&'static str, String> = HashMap::new();
        let mut config_file = env.get("SWITCHYARD_CONFIG").cloned();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Ok(Command::Help(help_text())),
                "-V" | "--version" => return Ok(Command::Version),
                _ => {}
            }
            let Some(name) = arg.strip_prefix("--") else {
                return Err(ConfigError::Usage(format!("unexpected argument {arg:?}")));
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (name, None),
            };
            let value = match inline.or_else(|| args.next()) {
                Some(v) => v,
                None => return Err(ConfigError::Usage(format!("--{name} needs a value"))),
            };
            if name == "config" {
                config_file.get_or_insert(value);
                continue;
            }
            let setting = SETTINGS
                .iter()
                .find(|s| s.flag == name)
                .ok_or_else(|| ConfigError::Usage(format!("unknown flag --{name}")))?;
            flags.insert(setting.env, value);
        }
        let file = match config_file {
            Some(path) => read_config_file(PathBuf::from(path))?,
            None => HashMap::new(),
        };
        let lookup = |env_name: &'static str| -> Option<String> {
            env.get(env_name)
                .or_else(|| flags.get(env_name))
                .or_else(|| file.get(env_name))
                .cloned()
                .filter(|v| !v.trim().is_empty())
        };
        Ok(Command::Run(Box::new(Self::resolve(lookup)?)))
    }

    fn resolve(lookup: impl Fn(&'static str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |env_name: &'static str| -> Option<String> {
            lookup(env_name).or_else(|| {
                SETTINGS
                    .iter()
                    .find(|s| s.env == env_name)
                    .and_then(|s| s.default)
                    .map(str::to_owned)
            })
        };
        let parse = |env_name: &'static str| -> Result<Option<(String, u64)>, ConfigError> {
            let Some(v) = get(env_name) else {
                return Ok(None);
            };
            let n = v
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid(env_name, &v, "expected a whole number"))?;
            Ok(Some((v, n)))
        };
        let number = |env_name: &'static str, min: u64, max: u64| -> Result<u64, ConfigError> {
            let (v, n) = parse(env_name)?.ok_or_else(|| invalid(env_name, "", "missing"))?;
            if n < min || n > max {
                return Err(invalid(
                    env_name,
                    &v,
                    &format!("must be between {min} and {max}"),
                ));
            }
            Ok(n)
        };
        let list = |env_name: &'static str| -> Option<Vec<String>> {
            get(env_name).map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
        };

        let listen_raw = get("SWITCHYARD_LISTEN").unwrap_or_default();
        let listen: SocketAddr = listen_raw.parse().map_err(|_| {
            invalid(
                "SWITCHYARD_LISTEN",
                &listen_raw,
                "expected address:port, like 127.0.0.1:8080",
            )
        })?;
        let broker_raw = get("SWITCHYARD_BROKER").unwrap_or_default();
        let broker = parse_broker(&broker_raw)?;
        let node_id = match get("SWITCHYARD_NODE_ID") {
            Some(id) => {
                if id.len() > 64
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(invalid(
                        "SWITCHYARD_NODE_ID",
                        &id,
                        "1 to 64 characters of A-Z a-z 0-9 - _ .",
                    ));
                }
                id
            }
            None => format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        };
        let jwt_public_key = match get("SWITCHYARD_JWT_PUBLIC_KEY_FILE") {
            Some(path) => Some(std::fs::read(&path).map_err(|error| ConfigError::File {
                what: "SWITCHYARD_JWT_PUBLIC_KEY_FILE",
                path: path.into(),
                error,
            })?),
            None => None,
        };
        let jwt_secret = get("SWITCHYARD_JWT_SECRET");
        if let Some(secret) = &jwt_secret {
            if secret.len() < 16 {
                return Err(invalid(
                    "SWITCHYARD_JWT_SECRET",
                    "<hidden>",
                    "must be at least 16 bytes",
                ));
            }
        }
        let has_key = jwt_secret.is_some() || jwt_public_key.is_some();
        let loopback = listen.ip().is_loopback();
        let dev = match get("SWITCHYARD_DEV").as_deref().map(str::trim) {
            None => !has_key && loopback,
            Some("1" | "true") if !loopback => {
                return Err(ConfigError::Refused(format!(
                    "SWITCHYARD_DEV=1 is only allowed on a loopback address, and SWITCHYARD_LISTEN is {listen}"
                )))
            }
            Some("1" | "true") => true,
            Some("0" | "false") => false,
            Some(other) => return Err(invalid("SWITCHYARD_DEV", other, "expected 1 or 0")),
        };
        if !has_key && !dev {
            return Err(ConfigError::Refused(format!(
                "no JWT key is configured: set SWITCHYARD_JWT_SECRET or SWITCHYARD_JWT_PUBLIC_KEY_FILE \
                 (without one, a node only starts in development mode on a loopback address; SWITCHYARD_LISTEN is {listen})"
            )));
        }
        let log_format = choice(
            "SWITCHYARD_LOG_FORMAT",
            get("SWITCHYARD_LOG_FORMAT").as_deref(),
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )?;
        let durable_format = choice(
            "SWITCHYARD_DURABLE_FORMAT",
            get("SWITCHYARD_DURABLE_FORMAT").as_deref(),
            &[
                ("json", DurableFormat::Json),
                ("msgpack", DurableFormat::MessagePack),
            ],
        )?;
        let max_frame_bytes =
            number("SWITCHYARD_MAX_FRAME_BYTES", 1024, 16 * 1024 * 1024)? as usize;
        let limits = Limits {
            max_frame_bytes,
            max_text_chars: number("SWITCHYARD_MAX_TEXT_CHARS", 1, 1_000_000)? as usize,
            max_data_bytes: number("SWITCHYARD_MAX_DATA_BYTES", 16, 16 * 1024 * 1024)? as usize,
            max_batch: number("SWITCHYARD_MAX_BATCH", 1, 10_000)? as usize,
        };
        let budget = |per: &'static str, burst: &'static str| -> Result<RateBudget, ConfigError> {
            Ok(RateBudget {
                per_sec: number(per, 1, 1_000_000)? as u32,
                burst: number(burst, 1, 1_000_000)? as u32,
            })
        };
        Ok(Config {
            listen,
            broker,
            node_id,
            jwt_secret,
            jwt_public_key,
            jwt_issuer: get("SWITCHYARD_JWT_ISSUER"),
            jwt_audience: get("SWITCHYARD_JWT_AUDIENCE"),
            api_keys: list("SWITCHYARD_API_KEYS").unwrap_or_default(),
            allowed_origins: list("SWITCHYARD_ALLOWED_ORIGINS"),
            trusted_proxies: trusted_proxies(list("SWITCHYARD_TRUSTED_PROXIES"))?,
            dev,
            limits,
            rate: budget("SWITCHYARD_RATE_PER_SEC", "SWITCHYARD_RATE_BURST")?,
            volatile_rate: budget(
                "SWITCHYARD_VOLATILE_RATE_PER_SEC",
                "SWITCHYARD_VOLATILE_RATE_BURST",
            )?,
            handshake_rate: budget("SWITCHYARD_HANDSHAKE_PER_SEC", "SWITCHYARD_HANDSHAKE_BURST")?,
            history_size: number("SWITCHYARD_HISTORY_SIZE", 1, 1_000_000)? as usize,
            history_ttl: Duration::from_secs(number("SWITCHYARD_HISTORY_TTL_S", 1, 30 * 86_400)?),
            durable_format,
            queue_max: number("SWITCHYARD_QUEUE_MAX", 8, 1_000_000)? as usize,
            batch_max: number("SWITCHYARD_BATCH_MAX", 1, 10_000)? as usize,
            batch_delay: Duration::from_millis(number("SWITCHYARD_BATCH_DELAY_MS", 0, 1_000)?),
            max_connections: number("SWITCHYARD_MAX_CONNECTIONS", 1, 10_000_000)? as usize,
            max_rooms_per_connection: number("SWITCHYARD_MAX_ROOMS_PER_CONNECTION", 1, 100_000)?
                as usize,
            max_concurrent_joins: number("SWITCHYARD_MAX_CONCURRENT_JOINS", 1, 100_000)? as usize,
            presence_ttl: Duration::from_secs(number("SWITCHYARD_PRESENCE_TTL_S", 1, 3_600)?),
            heartbeat: Duration::from_millis(number("SWITCHYARD_HEARTBEAT_MS", 100, 3_600_000)?),
            drain: Duration::from_millis(number("SWITCHYARD_DRAIN_MS", 0, 3_600_000)?),
            handshake_timeout: Duration::from_millis(number(
                "SWITCHYARD_HANDSHAKE_TIMEOUT_MS",
                100,
                600_000,
            )?),
            worker_threads: match parse("SWITCHYARD_WORKER_THREADS")? {
                None => None,
                Some(_) => Some(number("SWITCHYARD_WORKER_THREADS", 1, 1_024)? as usize),
            },
            log_format,
        })
    }
}

/// One of a setting's named values; unset, the first.
fn choice<T: Copy>(
    setting: &'static str,
    raw: Option<&str>,
    options: &[(&str, T)],
) -> Result<T, ConfigError> {
    let Some(raw) = raw else {
        return Ok(options[0].1);
    };
    options
        .iter()
        .find(|(name, _)| *name == raw)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
            invalid(setting, raw, &format!("expected {}", names.join(" or ")))
        })
}

fn invalid(setting: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn trusted_proxies(
    entries: Option<Vec<String>>,
) -> Result<crate::client_ip::TrustedProxies, ConfigError> {
    let mut blocks = Vec::new();
    for entry in entries.unwrap_or_default() {
        let block = crate::client_ip::Cidr::parse(&entry).ok_or_else(|| {
            invalid(
                "SWITCHYARD_TRUSTED_PROXIES",
                &entry,
                "expected IP addresses or CIDR blocks, such as 10.0.0.0/8,127.0.0.1",
            )
        })?;
        blocks.push(block);
    }
    Ok(crate::client_ip::TrustedProxies(blocks))
}

fn parse_broker(raw: &str) -> Result<BrokerUrl, ConfigError> {
    let raw = raw.trim();
    if raw == "memory" {
        return Ok(BrokerUrl::Memory);
    }
    if raw.starts_with("rediss://") {
        return Err(invalid(
            "SWITCHYARD_BROKER",
            raw,
            "TLS to Redis (rediss://) is not part of this build; use redis:// on a private network",
        ));
    }
    if raw.starts_with("redis://") {
        return Ok(BrokerUrl::Redis(raw.to_owned()));
    }
    if let Some(rest) = raw.strip_prefix("redis-cluster://") {
        let expected = "expected redis-cluster://[user:password@]host:port,host:port,...";
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, rest),
        };
        let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
            Some((user, password)) => (
                (!user.is_empty()).then(|| user.to_owned()),
                (!password.is_empty()).then(|| password.to_owned()),
            ),
            None => (None, None),
        };
        let mut seeds = Vec::new();
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let (name, port) = host
                .rsplit_once(':')
                .and_then(|(name, port)| Some((name, port.parse::<u16>().ok()?)))
                .filter(|(name, port)| !name.is_empty() && *port > 0)
                .ok_or_else(|| invalid("SWITCHYARD_BROKER", raw, expected))?;
            let name = name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(name);
            seeds.push((name.to_owned(), port));
        }
        if seeds.is_empty() {
            return Err(invalid("SWITCHYARD_BROKER", raw, expected));
        }
        return Ok(BrokerUrl::RedisCluster {
            seeds,
            username,
            password,
        });
    }
    Err(invalid(
        "SWITCHYARD_BROKER",
        raw,
        "expected memory, redis://host:port or redis-cluster://host:port,...",
    ))
}

impl std::fmt::Debug for BrokerUrl {
    /// As [`Display`](std::fmt::Display): never a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for BrokerUrl {
    /// The broker for logs: a password in a Redis URL is shown as `***`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerUrl::Memory => f.write_str("memory"),
            BrokerUrl::Redis(url) => match url.rsplit_once('@') {
                Some((_, host)) => write!(f, "redis://***@{host}"),
                None => f.write_str(url),
            },
            BrokerUrl::RedisCluster {
                seeds,
                username,
                password,
            } => {
                f.write_str("redis-cluster://")?;
                if username.is_some() || password.is_some() {
                    f.write_str("***@")?;
                }
                for (i, (host, port)) in seeds.iter().enumerate() {
                    let comma = if i > 0 { "," } else { "" };
                    if host.contains(':') {
                        write!(f, "{comma}[{host}]:{port}")?;
                    } else {
                        write!(f, "{comma}{host}:{port}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Reads a config file: `KEY=value` lines, where KEY is an environment name
/// (`SWITCHYARD_LISTEN`) or a flag name (`listen`); `#` starts a comment.
fn read_config_file(path: PathBuf) -> Result<HashMap<&'static str, String>, ConfigError> {
    let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::File {
        what: "config file",
        path: path.clone(),
        error,
    })?;
    let mut values = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            ConfigError::Usage(format!("{}:{}: expected KEY=value", path.display(), n + 1))
        })?;
        let key = key.trim();
        let setting = SETTINGS
            .iter()
            .find(|s| s.env == key || s.flag == key)
            .ok_or_else(|| {
                ConfigError::Usage(format!(
                    "{}:{}: unknown setting {key:?}",
                    path.display(),
                    n + 1
                ))
            })?;
        let value = value.trim().trim_matches('"').to_owned();
        values.insert(setting.env, value);
    }
    Ok(values)
}

/// The `--help` text, generated from [`SETTINGS`].
pub fn help_text() -> String {
    let mut out = String::from(
        "switchyard: a real-time WebSocket gateway node\n\n\
         Usage: switchyard [--config FILE] [--FLAG VALUE]...\n\n\
         Every setting is read from the environment variable, the flag, or the config file (KEY=value lines),\n\
         in that order of precedence.\n\nSettings:\n",
    );
    for s in SETTINGS {
        let default = s
            .default
            .map(|d| format!(" [default: {d}]"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  --{:<26} {:<36} {}{}\n",
            s.flag, s.env, s.help, default
        ));
    }
    out.push_str(
        "\n  --config FILE                (or SWITCHYARD_CONFIG) read settings from FILE\n",
    );
    out.push_str("  -h, --help                   print this help\n  -V, --version                print the version\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_dev_on_loopback() {
        let c = Config::from_env([]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(c.dev && c.broker == BrokerUrl::Memory);
        assert_eq!((c.rate.per_sec, c.rate.burst, c.queue_max), (10, 20, 1024));
        assert_eq!(c.worker_threads, None);
    }

    #[test]
    fn worker_threads_are_a_count_from_1() {
        let threads = |raw: &str| {
            Config::from_env([("SWITCHYARD_WORKER_THREADS", raw)]).map(|c| c.worker_threads)
        };
        assert_eq!(threads("1").unwrap(), Some(1));
        assert_eq!(threads(" ").unwrap(), None);
        for bad in ["0", "two", "1025"] {
            let e = threads(bad).unwrap_err().to_string();
            assert!(e.contains("SWITCHYARD_WORKER_THREADS"), "{e}");
        }
    }

    #[test]
    fn durable_format_is_json_or_msgpack() {
        let format = |raw: &str| {
            Config::from_env([("SWITCHYARD_DURABLE_FORMAT", raw)]).map(|c| c.durable_format)
        };
        assert_eq!(
            Config::from_env([]).unwrap().durable_format,
            DurableFormat::Json
        );
        assert_eq!(format("msgpack").unwrap(), DurableFormat::MessagePack);
        assert_eq!(format("json").unwrap(), DurableFormat::Json);
        let e = format("MessagePack").unwrap_err().to_string();
        assert!(e.contains("SWITCHYARD_DURABLE_FORMAT"), "{e}");
    }

    #[test]
    fn errors_name_the_setting() {
        let e = Config::from_env([("SWITCHYARD_QUEUE_MAX", "lots")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SWITCHYARD_QUEUE_MAX"), "{e}");
        let e = Config::from_env([("SWITCHYARD_LISTEN", "0.0.0.0:80")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SWITCHYARD_JWT_SECRET"), "{e}");
        let e = Config::from_env([("SWITCHYARD_LISTEN", "0.0.0.0:80"), ("SWITCHYARD_DEV", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SWITCHYARD_DEV"), "{e}");
        let e = Config::from_env([("SWITCHYARD_BROKER", "nats://x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SWITCHYARD_BROKER"), "{e}");
    }

    #[test]
    fn broker_urls() {
        let broker = |raw: &str| Config::from_env([("SWITCHYARD_BROKER", raw)]).map(|c| c.broker);
        assert_eq!(
            broker("redis://:s3cret@10.0.0.5:6379/2").unwrap(),
            BrokerUrl::Redis("redis://:s3cret@10.0.0.5:6379/2".into())
        );
        let cluster = broker("redis-cluster://r1:7000, r2:7001,[::1]:7002").unwrap();
        assert_eq!(
            cluster,
            BrokerUrl::RedisCluster {
                seeds: vec![
                    ("r1".into(), 7000),
                    ("r2".into(), 7001),
                    ("::1".into(), 7002)
                ],
                username: None,
                password: None,
            }
        );
        let secured = broker("redis-cluster://:s3cret@r1:7000").unwrap();
        assert_eq!(
            secured,
            BrokerUrl::RedisCluster {
                seeds: vec![("r1".into(), 7000)],
                username: None,
                password: Some("s3cret".into()),
            }
        );
        assert_eq!(secured.to_string(), "redis-cluster://***@r1:7000");
        assert!(!format!("{secured:?}").contains("s3cret"));
        assert_eq!(
            cluster.to_string(),
            "redis-cluster://r1:7000,r2:7001,[::1]:7002"
        );
        for bad in [
            "redis-cluster://",
            "redis-cluster://r1",
            "redis-cluster://r1:port",
            "redis-cluster://:7000",
            "rediss://host:6380",
        ] {
            let e = broker(bad).unwrap_err().to_string();
            assert!(e.contains("SWITCHYARD_BROKER"), "{bad}: {e}");
        }
        // Logs show the broker without its password.
        let shown = broker("redis://user:s3cret@host:6379").unwrap().to_string();
        assert_eq!(shown, "redis://***@host:6379");
    }

    #[test]
    fn environment_beats_flags_beats_file() {
        let dir = std::env::temp_dir().join(format!("sy-config-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# test\nqueue-max = 50\nSWITCHYARD_BATCH_MAX=7\nSWITCHYARD_RATE_BURST=9\n",
        )
        .unwrap();
        let args = [
            "--config",
            dir.to_str().unwrap(),
            "--rate-burst=8",
            "--heartbeat-ms",
            "1000",
        ]
        .map(String::from);
        let env = [("SWITCHYARD_RATE_BURST".to_owned(), "30".to_owned())];
        let Command::Run(c) = Config::from_sources(args, env).unwrap() else {
            panic!()
        };
        std::fs::remove_file(&dir).ok();
        assert_eq!((c.queue_max, c.batch_max, c.rate.burst), (50, 7, 30));
        assert_eq!(c.heartbeat, Duration::from_secs(1));
        assert!(matches!(
            Config::from_sources(["--nope=1".to_owned()], []),
            Err(ConfigError::Usage(_))
        ));
        assert!(matches!(
            Config::from_sources(["--help".to_owned()], []),
            Ok(Command::Help(_))
        ));
    }
}
