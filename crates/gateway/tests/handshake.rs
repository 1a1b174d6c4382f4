//! The handshake: tokens (header and query, HS256/RS256/ES256, iss/aud, refusals with a JSON
//! 401), subprotocols, the origin allowlist, the per-address handshake limit, `welcome` first.

mod common;

use common::*;
use serde_json::json;
use switchyard_client::{ConnectError, ConnectOptions};

fn opts(token: &str) -> ConnectOptions {
    ConnectOptions {
        token: Some(token.to_owned()),
        ..Default::default()
    }
}

async fn refused(node: &Node, options: ConnectOptions) -> (u16, serde_json::Value) {
    match node.connect_opts(options).await {
        Err(ConnectError::Refused { status, body, .. }) => (status, body),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the upgrade was accepted"),
    }
}

#[tokio::test]
async fn token_in_header_or_query_and_welcome_first() {
    let node = Node::start(&[]).await;
    let mut c = node
        .connect_opts(opts(&token("alice", json!({}))))
        .await
        .unwrap();
    let welcome = c.recv_timeout(SOON).await.unwrap();
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["userId"], "alice");
    assert_eq!(welcome["node"], "test-node");
    assert_eq!(welcome["heartbeatMs"], 25000);
    assert!(welcome["connectionId"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));

    let q = ConnectOptions {
        token: Some(token("bob", json!({}))),
        token_in_query: true,
        ..Default::default()
    };
    let mut c = node.connect_opts(q).await.unwrap();
    assert_eq!(c.recv_timeout(SOON).await.unwrap()["userId"], "bob");
    node.stop().await;
}

#[tokio::test]
async fn bad_tokens_get_401_with_json() {
    let node = Node::start(&[
        ("SWITCHYARD_JWT_ISSUER", "https://auth.example"),
        ("SWITCHYARD_JWT_AUDIENCE", "switchyard"),
    ])
    .await;
    let good = json!({"iss": "https://auth.example", "aud": "switchyard"});
    node.connect_with(token("ok", good.clone())).await;

    let none_alg = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64.encode(json!({"sub": "x", "exp": now_s() + 600, "iss": "https://auth.example", "aud": "switchyard"}).to_string().as_bytes());
        format!("{header}.{claims}.")
    };
    let forged = {
        let t = token("x", good.clone());
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[2] = parts[2].chars().rev().collect();
        parts.join(".")
    };
    let other_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "x", "exp": now_s() + 600, "iss": "https://auth.example", "aud": "switchyard"}),
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-0123456789"),
    )
    .unwrap();
    let cases = [
        ("missing", None),
        ("garbage", Some("not-a-jwt".to_owned())),
        ("alg none", Some(none_alg)),
        ("forged signature", Some(forged)),
        ("other secret", Some(other_secret)),
        (
            "expired",
            Some(token(
                "x",
                json!({"iss": "https://auth.example", "aud": "switchyard", "exp": now_s() - 120}),
            )),
        ),
        (
            "not yet valid",
            Some(token(
                "x",
                json!({"iss": "https://auth.example", "aud": "switchyard", "nbf": now_s() + 600}),
            )),
        ),
        (
            "wrong iss",
            Some(token(
                "x",
                json!({"iss": "https://evil.example", "aud": "switchyard"}),
            )),
        ),
        (
            "missing iss",
            Some(token("x", json!({"aud": "switchyard"}))),
        ),
        (
            "wrong aud",
            Some(token(
                "x",
                json!({"iss": "https://auth.example", "aud": "other"}),
            )),
        ),
        (
            "missing aud",
            Some(token("x", json!({"iss": "https://auth.example"}))),
        ),
        (
            "missing sub",
            Some(sign(
                &json!({"exp": now_s() + 600, "iss": "https://auth.example", "aud": "switchyard"}),
            )),
        ),
        (
            "missing exp",
            Some(sign(
                &json!({"sub": "x", "iss": "https://auth.example", "aud": "switchyard"}),
            )),
        ),
    ];
    for (what, token) in cases {
        let (status, body) = refused(
            &node,
            ConnectOptions {
                token,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["error"], "unauthorized", "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    node.stop().await;
}

/// Generates a key pair with the `openssl` command; returns (private PEM, public PEM).
fn keypair(kind: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("sy-keys-{kind}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let args: Vec<&str> = match kind {
        "rsa" => vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ],
        _ => vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ],
    };
    let ok = std::process::Command::new("openssl")
        .args(&args)
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(ok.success());
    let ok = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(ok.success());
    let keys = (
        std::fs::read(&private).unwrap(),
        std::fs::read(&public).unwrap(),
    );
    std::fs::remove_dir_all(&dir).ok();
    keys
}

#[tokio::test]
async fn rs256_and_es256_with_a_public_key() {
    for (kind, alg) in [
        ("rsa", jsonwebtoken::Algorithm::RS256),
        ("ec", jsonwebtoken::Algorithm::ES256),
    ] {
        let (private, public) = keypair(kind);
        let path = std::env::temp_dir().join(format!("sy-pub-{kind}-{}.pem", std::process::id()));
        std::fs::write(&path, &public).unwrap();
        let node = Node::start(&[("SWITCHYARD_JWT_PUBLIC_KEY_FILE", path.to_str().unwrap())]).await;
        let key = match kind {
            "rsa" => jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => jsonwebtoken::EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let claims = json!({"sub": format!("{kind}-user"), "exp": now_s() + 600});
        let t = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap();
        let mut c = node.connect_with(t).await;
        c.send(json!({"type": "ping"})).await.unwrap();
        c.recv_type("pong", SOON).await.unwrap();

        // Algorithm confusion: the public key used as an HMAC secret is refused.
        let confused = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&public),
        )
        .unwrap();
        let (status, _) = refused(&node, opts(&confused)).await;
        assert_eq!(status, 401, "{kind}: HS256 signed with the public key");
        // HS256 with the shared secret is still accepted alongside the public key.
        node.connect_with(token("hs-user", json!({}))).await;
        node.stop().await;
        std::fs::remove_file(&path).ok();
    }
}

#[tokio::test]
async fn subprotocol_selection() {
    let node = Node::start(&[]).await;
    let t = token("p", json!({}));
    let with = |p: &str| ConnectOptions {
        token: Some(t.clone()),
        subprotocols: Some(p.to_owned()),
        ..Default::default()
    };

    let c = node
        .connect_opts(with("switchyard.v1.msgpack"))
        .await
        .unwrap();
    assert_eq!(c.protocol.as_deref(), Some("switchyard.v1.msgpack"));
    let c = node
        .connect_opts(with("chat, switchyard.v1.json, switchyard.v1.msgpack"))
        .await
        .unwrap();
    assert_eq!(
        c.protocol.as_deref(),
        Some("switchyard.v1.json"),
        "the client's first supported choice"
    );
    let c = node
        .connect_opts(with("switchyard.v1.msgpack, switchyard.v1.json"))
        .await
        .unwrap();
    assert_eq!(c.protocol.as_deref(), Some("switchyard.v1.msgpack"));
    let c = node.connect_opts(opts(&t)).await.unwrap();
    assert_eq!(c.protocol, None, "none offered: JSON, nothing echoed");
    let (status, body) = refused(&node, with("mqtt, v2.switchyard")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    node.stop().await;
}

/// A request to `/ws` that is not a proper WebSocket upgrade gets a JSON 400 naming what is
/// wrong (checked after the token, like every other refusal of the handshake).
#[tokio::test]
async fn requests_that_are_not_upgrades_get_400() {
    let node = Node::start(&[]).await;
    let url = format!("{}?token={}", node.http("/ws"), token("u", json!({})));
    let get = |headers: &[(&'static str, &'static str)]| {
        let mut request = reqwest::Client::new().get(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let upgrade = [("connection", "Upgrade"), ("upgrade", "websocket")];
    for (headers, says) in [
        (&[][..], "Connection"),
        (&upgrade[..], "Sec-WebSocket-Version"),
        (
            &[upgrade[0], upgrade[1], ("sec-websocket-version", "8")][..],
            "Sec-WebSocket-Version",
        ),
        (
            &[upgrade[0], upgrade[1], ("sec-websocket-version", "13")][..],
            "Sec-WebSocket-Key",
        ),
    ] {
        let response = get(headers).await.unwrap();
        assert_eq!(response.status(), 400, "{headers:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "bad_request");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{headers:?}: {body}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn origin_allowlist() {
    let node = Node::start(&[(
        "SWITCHYARD_ALLOWED_ORIGINS",
        "https://app.example, http://localhost:3000",
    )])
    .await;
    let t = token("o", json!({}));
    let from = |o: &str| ConnectOptions {
        token: Some(t.clone()),
        origin: Some(o.to_owned()),
        ..Default::default()
    };
    node.connect_opts(from("https://app.example"))
        .await
        .unwrap();
    node.connect_opts(from("http://localhost:3000"))
        .await
        .unwrap();
    let (status, body) = refused(&node, from("https://evil.example")).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    node.connect_opts(opts(&t))
        .await
        .expect("no Origin (not a browser) is not refused for that");
    node.stop().await;
}

#[tokio::test]
async fn too_many_handshakes_get_429_with_retry_after() {
    let node = Node::start(&[
        ("SWITCHYARD_HANDSHAKE_PER_SEC", "1"),
        ("SWITCHYARD_HANDSHAKE_BURST", "3"),
    ])
    .await;
    let t = token("h", json!({}));
    for _ in 0..3 {
        node.connect_opts(opts(&t)).await.unwrap();
    }
    match node.connect_opts(opts(&t)).await {
        Err(ConnectError::Refused {
            status,
            body,
            retry_after,
        }) => {
            assert_eq!(status, 429);
            assert_eq!(body["error"], "rate_limited");
            let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
            assert!((1..=2).contains(&secs), "{secs}");
        }
        other => panic!("expected 429, got {:?}", other.map(|_| ())),
    }
    node.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_handshake_budget() {
    let via = |xff: &str| ConnectOptions {
        token: Some(token("p", json!({}))),
        headers: vec![("X-Forwarded-For".into(), xff.into())],
        ..Default::default()
    };
    let limited = [
        ("SWITCHYARD_HANDSHAKE_PER_SEC", "1"),
        ("SWITCHYARD_HANDSHAKE_BURST", "1"),
    ];
    // The test's loopback address plays the load balancer.
    let mut env = limited.to_vec();
    env.push(("SWITCHYARD_TRUSTED_PROXIES", "127.0.0.1,::1"));
    let node = Node::start(&env).await;
    node.connect_opts(via("203.0.113.1")).await.unwrap();
    let refused = node.connect_opts(via("203.0.113.1")).await;
    assert!(matches!(
        refused,
        Err(ConnectError::Refused { status: 429, .. })
    ));
    // Another client behind the same proxy has its own budget, even if it forges the header.
    node.connect_opts(via("203.0.113.1, 198.51.100.7"))
        .await
        .unwrap();
    node.stop().await;

    // Without trusted proxies the header is ignored: one budget for the peer.
    let node = Node::start(&limited).await;
    node.connect_opts(via("203.0.113.1")).await.unwrap();
    let refused = node.connect_opts(via("198.51.100.7")).await;
    assert!(matches!(
        refused,
        Err(ConnectError::Refused { status: 429, .. })
    ));
    node.stop().await;
}

#[tokio::test]
async fn connection_limit_gives_503() {
    let node = Node::start(&[("SWITCHYARD_MAX_CONNECTIONS", "2")]).await;
    let _a = node.connect("a").await;
    let _b = node.connect("b").await;
    let (status, _) = refused(&node, opts(&token("c", json!({})))).await;
    assert_eq!(status, 503);
    node.stop().await;
}

/// Reads from `stream` until the server closes it; returns what it sent and how long it took.
async fn until_closed(stream: &mut tokio::net::TcpStream) -> (String, std::time::Duration) {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(SOON, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept a slow client for more than {SOON:?}"),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn slow_loris_clients_are_dropped() {
    use tokio::io::AsyncWriteExt;
    let node = Node::start(&[("SWITCHYARD_HANDSHAKE_TIMEOUT_MS", "400")]).await;

    // Connects and says nothing.
    let mut silent = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let (_, took) = until_closed(&mut silent).await;
    assert!(
        took < std::time::Duration::from_secs(2),
        "dropped after {took:?}"
    );

    // Dribbles a header line every 100 ms and never ends the head.
    let mut dribbler = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    dribbler
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let dribbling = async {
        for i in 0.. {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if dribbler
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return i;
            }
            if i > 100 {
                panic!("the server kept reading a head for 10 s");
            }
        }
        unreachable!()
    };
    let lines = dribbling.await;
    assert!(lines < 20, "dropped after {lines} header lines");

    // A normal client is not affected, and a keep-alive request gets its answer.
    let mut client = node.connect("normal").await;
    client
        .send(json!({"type": "ping", "ref": 1}))
        .await
        .unwrap();
    client.recv_type("pong", SOON).await.unwrap();
    let mut http = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    http.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut http).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let timeouts = || async {
        let metrics = get_text(&node.http("/metrics")).await;
        metrics
            .lines()
            .find(|l| l.contains(r#"reason="handshake_timeout""#))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(timeouts().await, 2.0, "the two slow clients are counted");

    // A keep-alive connection left idle after its request is closed, and is not a refusal.
    let mut idle = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(timeouts().await, 2.0, "an idle keep-alive is not counted");
    node.stop().await;
}
