//! The backend HTTP API (`/api/...`), the operations routes and development mode.

mod common;

use common::*;
use serde_json::{json, Value};

async fn call(
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let mut req = api().request(method, url);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.header("content-type", "application/json").body(body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn post(node: &Node, path: &str, body: Value) -> impl std::future::Future<Output = (u16, Value)> {
    call(
        reqwest::Method::POST,
        node.http(path),
        Some(API_KEY),
        Some(body.to_string()),
    )
}

#[tokio::test]
async fn room_publish_history_and_presence() {
    let node = Node::start(&[]).await;
    let mut c = node.connect("u1").await;
    join(&mut c, "board").await;
    let (status, body) = post(
        &node,
        "/api/rooms/board/publish",
        json!({"event": "task-updated", "data": {"id": 1}}),
    )
    .await;
    assert_eq!((status, body["seq"].as_u64()), (200, Some(1)), "{body}");
    let ev = c.recv_type("event", SOON).await.unwrap();
    assert_eq!(
        (
            ev["event"].as_str(),
            ev["seq"].as_u64(),
            ev["roomId"].as_str()
        ),
        (Some("task-updated"), Some(1), Some("board"))
    );
    say(&mut c, "board", "m1", "hello").await;

    let (status, page) = call(
        reqwest::Method::GET,
        node.http("/api/rooms/board/history?sinceSeq=0&limit=10"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["seq"], 2);
    assert!(page["epoch"].as_str().is_some());
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["type"], "event");
    assert_eq!(msgs[1]["type"], "new-message");
    assert_eq!(msgs[1]["text"], "hello");
    let (_, page) = call(
        reqwest::Method::GET,
        node.http("/api/rooms/board/history?sinceSeq=1"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    let (status, _) = call(
        reqwest::Method::GET,
        node.http("/api/rooms/board/history?limit=0"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 400);

    let (status, presence) = call(
        reqwest::Method::GET,
        node.http("/api/rooms/board/presence"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(presence["members"][0]["userId"], "u1");
    node.stop().await;
}

#[tokio::test]
async fn api_errors() {
    let node = Node::start(&[]).await;
    let publish = |key: Option<&'static str>, body: &str| {
        call(
            reqwest::Method::POST,
            node.http("/api/rooms/r/publish"),
            key,
            Some(body.to_owned()),
        )
    };
    assert_eq!(publish(None, r#"{"event":"e","data":1}"#).await.0, 401);
    let (status, body) = publish(Some("wrong"), r#"{"event":"e","data":1}"#).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = publish(Some(API_KEY), "{not json").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    assert_eq!(
        publish(Some(API_KEY), r#"{"event":"e"}"#).await.0,
        400,
        "data is required"
    );
    assert_eq!(
        publish(Some(API_KEY), r#"{"data":1}"#).await.0,
        400,
        "event is required"
    );
    let big = json!({"event": "e", "data": "x".repeat(64 * 1024)}).to_string();
    let (status, body) = publish(Some(API_KEY), &big).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")));
    let (status, _) = post(
        &node,
        "/api/rooms/bad%20room/publish",
        json!({"event": "e", "data": 1}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = call(
        reqwest::Method::GET,
        node.http("/api/nowhere"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = call(
        reqwest::Method::GET,
        node.http("/api/rooms/r/publish"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, body) = call(
        reqwest::Method::GET,
        node.http("/api/rooms/%FF/presence"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "undecodable path: JSON 400"
    );
    node.stop().await;

    let closed = Node::start(&[("SWITCHYARD_API_KEYS", "")]).await;
    let (status, body) = call(
        reqwest::Method::GET,
        closed.http("/api/rooms/r/presence"),
        Some(""),
        None,
    )
    .await;
    assert_eq!(
        status, 401,
        "no keys configured: the API refuses all ({body})"
    );
    closed.stop().await;
}

#[tokio::test]
async fn user_events_and_disconnect() {
    let node = Node::start(&[]).await;
    let mut tab1 = node.connect("target").await;
    let mut tab2 = node.connect("target").await;
    let mut other = node.connect("other").await;
    let (status, _) = post(
        &node,
        "/api/users/target/publish",
        json!({"event": "notify", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(status, 202);
    for tab in [&mut tab1, &mut tab2] {
        let ev = tab.recv_type("event", SOON).await.unwrap();
        assert_eq!(ev["event"], "notify");
        assert_eq!(ev["data"]["n"], 1);
        assert!(ev.get("roomId").is_none());
    }
    assert_quiet(&mut other, |v| v["type"] == "event").await;

    let (status, _) = post(&node, "/api/users/target/disconnect", json!({})).await;
    assert_eq!(status, 202);
    for tab in [&mut tab1, &mut tab2] {
        assert_eq!(tab.closed(SOON).await.unwrap().0, 1008);
    }
    other.send(json!({"type": "ping"})).await.unwrap();
    other.recv_type("pong", SOON).await.unwrap();
    node.stop().await;
}

#[tokio::test]
async fn operations_routes() {
    let node = Node::start(&[("SWITCHYARD_RATE_BURST", "1")]).await;
    let mut c = node.connect("m").await;
    let get = |path: &str| api().get(node.http(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);

    // Some traffic, so that every series of docs/metrics.md has happened at least once: a
    // refused token, a message, a rate-limited one, a typing event.
    let refused = node
        .connect_opts(switchyard_client::ConnectOptions {
            token: Some("not-a-jwt".into()),
            ..Default::default()
        })
        .await;
    assert!(refused.is_err());
    join(&mut c, "r").await;
    say(&mut c, "r", "m1", "one").await;
    let limited = say(&mut c, "r", "m2", "two").await;
    assert_eq!(limited["error"]["code"], "rate_limited");
    c.send(json!({"type": "typing:start", "roomId": "r"}))
        .await
        .unwrap();

    let res = get("/metrics").await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let doc = include_str!("../../../docs/metrics.md");
    let gateway =
        &doc[doc.find("## The gateway").unwrap()..doc.find("## The Redis broker").unwrap()];
    let documented: Vec<&str> = gateway
        .split('`')
        .filter(|w| w.starts_with("switchyard_") && !w.contains(['(', '[', '{']))
        .collect();
    assert!(documented.len() >= 18, "{documented:?}");
    for name in documented {
        assert!(
            text.contains(name),
            "{name} (docs/metrics.md) missing from /metrics"
        );
    }
    assert!(text.contains(r#"reason="invalid""#) || text.contains(r#"reason="malformed""#));
    assert!(text.contains("node=\""), "series carry the node label");
    // Not in development mode (a key is configured): no demo, no token minting.
    assert_eq!(get("/dev/token?user=x").await.unwrap().status(), 404);
    assert_eq!(get("/").await.unwrap().status(), 404);
    node.stop().await;
}

#[tokio::test]
async fn development_mode_serves_the_demo_and_tokens() {
    let node = Node::start(&[("SWITCHYARD_DEV", "1")]).await;
    let page = api().get(node.http("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    for id in [
        "id=\"messages\"",
        "id=\"members\"",
        "id=\"typing\"",
        "id=\"cursor-area\"",
        "id=\"status\"",
    ] {
        assert!(html.contains(id), "demo page lacks {id}");
    }
    // The app (React) and its styles, by absolute paths, with the types browsers require of
    // a module script and a stylesheet. That user text is shown as text, never run as HTML, is
    // checked in Chromium by the SDK's end-to-end tests.
    for (path, kind) in [("/demo.js", "text/javascript"), ("/demo.css", "text/css")] {
        assert!(
            html.contains(&format!("\"{path}\"")),
            "the page loads {path}"
        );
        let res = api().get(node.http(path)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(res.text().await.unwrap().len() > 1000);
    }
    let res: Value = api()
        .get(node.http("/dev/token?user=dev-1&name=Dev"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut c = node
        .connect_with(res["token"].as_str().unwrap().to_owned())
        .await;
    let joined = join(&mut c, "lobby").await;
    assert_eq!(joined["members"][0]["name"], "Dev");
    assert_eq!(
        api()
            .get(node.http("/dev/token"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    node.stop().await;
}
