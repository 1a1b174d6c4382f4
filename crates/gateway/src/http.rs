//! HTTP routes: the WebSocket handshake (`/ws`), the backend API (`/api/...`), operations
//! (`/healthz`, `/readyz`, `/metrics`) and, in development mode, `/` and `/dev/token`.
//!
//! Every refusal is a JSON body `{"error": code, "message": ...}` with its status.

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::Instrument;

use switchyard_broker::{DurableBody, DurableDraft, UserEvent};
use switchyard_protocol::{
    validate_event_name, validate_room_id, Encoding, ServerMessage, SharedFrame,
};

use crate::auth::{Claims, DEV_TOKEN_TTL_S};
use crate::metrics::{self as m, metrics as node_metrics};
use crate::server::App;
use crate::upgrade::{NotAnUpgrade, Upgrade};

/// Most bytes of an HTTP API request body (the `data` limit plus room for the envelope).
const API_BODY_SLACK: usize = 4 * 1024;
/// Default and largest `limit` of the history endpoint.
const HISTORY_DEFAULT_LIMIT: usize = 100;
const HISTORY_MAX_LIMIT: usize = 1_000;
/// Per-connection read buffer. tungstenite allocates it up front for every socket, so it is
/// most of an idle connection's memory; client frames are small, and a larger frame grows the
/// buffer as it arrives (up to the frame limit).
const READ_BUFFER_BYTES: usize = 512;

/// The demo app (React, `clients/typescript/demo`), built into `assets/demo/` and committed so
/// that `cargo run` serves it with no npm on the machine; CI checks the build is up to date.
static DEMO_PAGE: &str = include_str!("../assets/demo/index.html");
static DEMO_JS: &str = include_str!("../assets/demo/demo.js");
static DEMO_CSS: &str = include_str!("../assets/demo/demo.css");

/// A JSON error response.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

/// An HTTP API refusal.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_error(self.status, self.code, &self.message)
    }
}

impl From<switchyard_broker::BrokerError> for ApiError {
    fn from(e: switchyard_broker::BrokerError) -> Self {
        match e {
            switchyard_broker::BrokerError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            switchyard_broker::BrokerError::Internal(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

/// `GET /ws`: checks, in order, draining, handshake rate, origin, capacity, token, subprotocol;
/// then upgrades.
pub async fn websocket(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Result<Upgrade, NotAnUpgrade>,
) -> Response {
    if app.draining.load(Ordering::Relaxed) {
        m::connection_refused("draining");
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is shutting down; connect to another",
        );
    }
    let client_ip = app.config.trusted_proxies.client_ip(peer.ip(), &headers);
    if let Err(not_until) = app.handshakes.check_key(&client_ip) {
        m::connection_refused("rate_limited");
        m::rate_limited("handshake");
        let wait = not_until.wait_time_from(governor::clock::Clock::now(app.handshakes.clock()));
        let mut response = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many handshakes from this address",
        );
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return response;
    }
    if let (Some(allowed), Some(origin)) =
        (&app.config.allowed_origins, headers.get(header::ORIGIN))
    {
        let origin = origin.to_str().unwrap_or("");
        if !allowed.iter().any(|a| a == origin) {
            m::connection_refused("origin");
            return json_error(StatusCode::FORBIDDEN, "forbidden", "origin not allowed");
        }
    }
    if app.hub.connection_count() >= app.config.max_connections {
        m::connection_refused("capacity");
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "this node is at its connection limit",
        );
    }
    let token = bearer(&headers).or_else(|| query_token(query.as_deref()));
    let Some(token) = token else {
        m::connection_refused("unauthorized");
        m::auth_failure("missing");
        return json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing token: send Authorization: Bearer <jwt> or ?token=<jwt>",
        );
    };
    let identity = match app.auth.verify(&token) {
        Ok(identity) => identity,
        Err(e) => {
            m::connection_refused("unauthorized");
            m::auth_failure(e.reason);
            tracing::debug!(client = %client_ip, reason = %e, "handshake refused");
            return e.into_response();
        }
    };
    let encoding = match select_encoding(&headers) {
        Ok(encoding) => encoding,
        Err(offered) => {
            m::connection_refused("subprotocol");
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("none of the offered subprotocols ({offered}) is supported; use switchyard.v1.json or switchyard.v1.msgpack"),
            );
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(refused) => {
            m::connection_refused("not_websocket");
            return refused.into_response();
        }
    };
    // The chosen subprotocol is echoed only to a client that offered some.
    let protocol = headers
        .contains_key(header::SEC_WEBSOCKET_PROTOCOL)
        .then(|| encoding.subprotocol());
    let limits = app.config.limits;
    let config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_frame_bytes))
        .max_frame_size(Some(limits.max_frame_bytes))
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every frame is written as it is sent: the writer batches, not tungstenite.
        .write_buffer_size(0);
    let tracker = app.tracker.clone();
    // Boxed: what this closure captures stays in the connection's task for its whole life.
    let identity = Box::new(identity);
    upgrade.on_upgrade(protocol, config, move |socket| {
        tracker.track_future(crate::connection::serve(app, socket, *identity, encoding))
    })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

fn query_token(query: Option<&str>) -> Option<String> {
    #[derive(Deserialize)]
    struct Q {
        token: Option<String>,
    }
    serde_urlencoded::from_str::<Q>(query?)
        .ok()?
        .token
        .filter(|t| !t.is_empty())
}

/// The first subprotocol of the client's list that we support; JSON when none is offered.
fn select_encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(Encoding::Json);
    }
    offered
        .iter()
        .find_map(|p| Encoding::from_subprotocol(p))
        .ok_or_else(|| offered.join(", ").chars().take(200).collect())
}

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        let why = if app.draining.load(Ordering::Relaxed) {
            "draining"
        } else {
            "broker unavailable"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": why })),
        )
            .into_response()
    }
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = node_metrics();
    m.rooms.set(app.hub.room_count() as f64);
    let (mut total, mut longest) = (0, 0);
    for conn in app.hub.all_connections() {
        let len = conn.queue.len();
        total += len;
        longest = longest.max(len);
    }
    m.outbound_queue_depth.set(total as f64);
    m.outbound_queue_depth_max.set(longest as f64);
    m.ready.set(if app.is_ready() { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

pub async fn method_not_allowed() -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// A path parameter, or a JSON 400 when it does not decode (not axum's plain-text default).
pub struct Param(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Param {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Param(value)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

pub async fn demo_page() -> Html<&'static str> {
    Html(DEMO_PAGE)
}

pub async fn demo_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        DEMO_JS,
    )
        .into_response()
}

pub async fn demo_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        DEMO_CSS,
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct DevTokenQuery {
    user: Option<String>,
    name: Option<String>,
}

/// `GET /dev/token?user=ID&name=NAME` (development mode only).
pub async fn dev_token(
    State(app): State<Arc<App>>,
    axum::extract::Query(q): axum::extract::Query<DevTokenQuery>,
) -> Response {
    let Some(user) = q.user.filter(|u| !u.is_empty() && u.len() <= 128) else {
        return ApiError::bad_request("user is required (1 to 128 characters)").into_response();
    };
    let claims = Claims {
        sub: user,
        exp: switchyard_protocol::now_ms() / 1000 + DEV_TOKEN_TTL_S,
        name: q.name.filter(|n| !n.is_empty()),
        avatar: None,
        rooms: None,
        publish: true,
    };
    match app.auth.mint(&claims) {
        Some(token) => Json(json!({ "token": token })).into_response(),
        None => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot mint tokens",
        )
        .into_response(),
    }
}

/// Checks the API key (`Authorization: Bearer <key>`), in constant time per key.
fn api_auth(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if app.config.api_keys.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the HTTP API is disabled: no SWITCHYARD_API_KEYS",
        ));
    }
    let given = bearer(headers).unwrap_or_default();
    let ok = app.config.api_keys.iter().fold(false, |ok, key| {
        ok | constant_time_eq(key.as_bytes(), given.as_bytes())
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn room_param(room_id: &str) -> Result<(), ApiError> {
    validate_room_id(room_id).map_err(ApiError::bad_request)
}

#[derive(Deserialize)]
struct EventBody {
    event: String,
    data: Value,
}

/// Reads a JSON body with our own limits and errors (400, 413), not axum's defaults.
async fn read_event_body(app: &App, body: Body) -> Result<EventBody, ApiError> {
    let limit = app.config.limits.max_data_bytes + API_BODY_SLACK;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body over {limit} bytes"),
        )
    })?;
    let body: EventBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    validate_event_name(&body.event).map_err(ApiError::bad_request)?;
    let size = switchyard_protocol::client::json_len(&body.data);
    if size > app.config.limits.max_data_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "data is {size} bytes; the limit is {}",
                app.config.limits.max_data_bytes
            ),
        ));
    }
    Ok(body)
}

/// `POST /api/rooms/{roomId}/publish` `{event, data}`: a durable event; `200 {seq}`.
pub async fn api_room_publish(
    State(app): State<Arc<App>>,
    Param(room_id): Param,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    api_auth(&app, &headers)?;
    room_param(&room_id)?;
    let body = read_event_body(&app, body).await?;
    let draft = DurableDraft {
        user_id: None,
        name: None,
        temp_id: None,
        body: DurableBody::Event {
            event: body.event,
            data: body.data,
        },
    };
    let span = tracing::debug_span!("publish", room = %room_id, via = "api");
    let published = app
        .broker
        .publish_durable(&room_id, draft)
        .instrument(span)
        .await?;
    Ok(Json(json!({ "seq": published.seq, "id": published.id })).into_response())
}

/// `POST /api/users/{userId}/publish` `{event, data}`: an event to every connection of the user.
pub async fn api_user_publish(
    State(app): State<Arc<App>>,
    Param(user_id): Param,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    api_auth(&app, &headers)?;
    let body = read_event_body(&app, body).await?;
    let message = ServerMessage::Event {
        room_id: None,
        event: body.event,
        data: body.data,
        seq: None,
        user_id: None,
        id: None,
        ts: Some(switchyard_protocol::now_ms()),
        temp_id: None,
    };
    app.broker
        .publish_user(
            &user_id,
            UserEvent::Event(Arc::new(SharedFrame::new(message))),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}

/// `GET /api/rooms/{roomId}/presence`: `{members}`.
pub async fn api_room_presence(
    State(app): State<Arc<App>>,
    Param(room_id): Param,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api_auth(&app, &headers)?;
    room_param(&room_id)?;
    let members = app.broker.presence_members(&room_id).await?;
    Ok(Json(json!({ "members": members })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryQuery {
    since_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/rooms/{roomId}/history?sinceSeq=N&limit=M`: `{messages, seq, epoch}`.
pub async fn api_room_history(
    State(app): State<Arc<App>>,
    Param(room_id): Param,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    api_auth(&app, &headers)?;
    room_param(&room_id)?;
    let q: HistoryQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let limit = q.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
    if limit == 0 || limit > HISTORY_MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {HISTORY_MAX_LIMIT}"
        )));
    }
    let page = app
        .broker
        .history(&room_id, Some(q.since_seq.unwrap_or(0)), None, limit)
        .await?;
    let messages: Vec<&ServerMessage> = page.messages.iter().map(|m| m.message()).collect();
    Ok(Json(json!({ "messages": messages, "seq": page.seq, "epoch": &*page.epoch, "complete": page.complete })).into_response())
}

/// `POST /api/users/{userId}/disconnect`: closes the user's connections everywhere with 1008.
pub async fn api_user_disconnect(
    State(app): State<Arc<App>>,
    Param(user_id): Param,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api_auth(&app, &headers)?;
    let event = UserEvent::Disconnect {
        reason: "disconnected by the server".into(),
    };
    app.broker.publish_user(&user_id, event).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}
