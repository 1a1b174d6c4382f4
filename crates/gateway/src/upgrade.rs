//! The WebSocket upgrade (RFC 6455 §4.2), done here rather than by axum's `WebSocketUpgrade` so
//! that a connection owns a tokio-tungstenite socket: axum's wrapper cannot send a message as
//! fragments, and without fragments tungstenite's write buffer keeps, for the connection's whole
//! life, the capacity of the largest frame it ever wrote (a `room-joined` with 1,000 members is
//! 70 KB). See [`crate::connection`] for how large frames are written.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// An upgraded connection.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A request that asks for a WebSocket upgrade the right way (HTTP/1.1 `GET`, `Connection:
/// upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13`, a key).
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade: its status and the message of the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAnUpgrade {
    pub status: StatusCode,
    pub message: &'static str,
}

impl NotAnUpgrade {
    fn new(status: StatusCode, message: &'static str) -> Self {
        NotAnUpgrade { status, message }
    }
}

impl axum::response::IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        crate::http::json_error(self.status, "bad_request", self.message)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let bad = |message| NotAnUpgrade::new(StatusCode::BAD_REQUEST, message);
        if parts.version > Version::HTTP_11 {
            return Err(bad("WebSocket upgrades need HTTP/1.1"));
        }
        if parts.method != Method::GET {
            return Err(NotAnUpgrade::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade is a GET request",
            ));
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(bad("the Connection header does not include `upgrade`"));
        }
        if !header_has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(bad("the Upgrade header is not `websocket`"));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(bad("Sec-WebSocket-Version must be 13"));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or_else(|| bad("the Sec-WebSocket-Key header is missing"))?;
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
            NotAnUpgrade::new(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            )
        })?;
        Ok(Upgrade { key, on_upgrade })
    }
}

impl Upgrade {
    /// Answers `101 Switching Protocols` (with the chosen subprotocol, if any) and runs
    /// `serve` on the socket once hyper hands the connection over.
    pub fn on_upgrade<F, Fut>(
        self,
        protocol: Option<&'static str>,
        config: WebSocketConfig,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    serve(socket).await;
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        response
    }
}

/// Whether a comma-separated header holds `token` (case-insensitive), as `Connection: keep-alive,
/// Upgrade` does.
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_are_found_in_lists_and_any_case() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(header_has_token(&headers, header::CONNECTION, "upgrade"));
        assert!(!header_has_token(&headers, header::CONNECTION, "close"));
        assert!(!header_has_token(&headers, header::UPGRADE, "websocket"));
    }
}
