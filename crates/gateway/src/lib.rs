//! The Switchyard gateway node: a WebSocket server that authenticates clients at the handshake,
//! keeps their rooms, presence, typing and cursors, and delivers room events from the broker.
//!
//! - [`config`]: settings from the environment, flags and a config file.
//! - [`auth`]: JWT verification and development tokens.
//! - [`client_ip`]: the client's address behind trusted proxies.
//! - [`server`]: shared state, router, [`run`] and the drain on shutdown.
//! - [`http_server`]: the accept loop (hyper, with a deadline for request heads).
//! - [`http`]: the handshake, the backend HTTP API and the operations routes.
//! - [`upgrade`]: the WebSocket upgrade itself (RFC 6455), onto a tokio-tungstenite socket.
//! - [`connection`]: one connection's reader and writer.
//! - [`outbound`]: the bounded per-connection queue and its policy.
//! - [`hub`]: local room and user tables and the fan-out loop.
//! - [`metrics`]: the `switchyard_*` metrics.
//! - [`telemetry`]: logging set-up.

pub mod auth;
pub mod client_ip;
pub mod config;
pub mod connection;
pub mod http;
pub mod http_server;
pub mod hub;
pub mod metrics;
pub mod outbound;
pub mod server;
pub mod telemetry;
pub mod upgrade;

pub use config::{Command, Config};
pub use server::{build, router, run, serve, App};
