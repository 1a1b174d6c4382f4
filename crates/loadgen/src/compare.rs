//! Reading results back: a one-line summary of a run, and `compare`, a side-by-side Markdown
//! table of two runs (Switchyard and the Socket.IO baseline) for `BENCHMARKS.md`.

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// One line: what a run delivered, how fast, at what cost.
pub(crate) fn summary(r: &Value) -> String {
    match r["scenario"].as_str() {
        Some("idle") => format!(
            "idle/{}: {} connections, {} bytes per connection",
            r["dialect"].as_str().unwrap_or("?"),
            r["connections"],
            r["bytes_per_connection"]
        ),
        Some("presence-churn") => format!(
            "presence-churn: {} cycles/s, join p50 {} ms p99 {} ms, {} errors",
            r["cycles_per_sec"], r["join_latency"]["p50_ms"], r["join_latency"]["p99_ms"], r["errors"]
        ),
        Some("reconnect-storm") => format!(
            "reconnect-storm: {} resumed of {} disconnected, resume p99 {} ms max {} ms after the kill, {} gaps, {} duplicates, {} behind",
            r["resumed"], r["disconnected"], r["resume_after_kill"]["p99_ms"], r["resume_after_kill"]["max_ms"],
            r["gaps"], r["duplicates"], r["clients_behind_at_end"]
        ),
        _ => format!(
            "{}/{}: {} deliveries/s, p50 {} ms p99 {} ms max {} ms, server CPU {} µs/delivery, lost {} of {}, {} duplicates, loadgen {:.2} cores",
            r["scenario"].as_str().unwrap_or("?"),
            r["dialect"].as_str().unwrap_or("?"),
            r["deliveries_per_sec"],
            r["latency"]["p50_ms"],
            r["latency"]["p99_ms"],
            r["latency"]["max_ms"],
            r["cpu"]["server_us_per_delivery"],
            r["lost"],
            r["deliveries_expected"],
            r["duplicates"],
            r["cpu"]["loadgen_cores"].as_f64().unwrap_or(0.0),
        ),
    }
}

/// The rows of the comparison: (label, JSON pointer).
const ROWS: &[(&str, &str)] = &[
    ("deliveries/s (measured window)", "/deliveries_per_sec"),
    ("latency p50 (ms)", "/latency/p50_ms"),
    ("latency p99 (ms)", "/latency/p99_ms"),
    ("latency max (ms)", "/latency/max_ms"),
    ("ack p99 (ms)", "/ack_latency/p99_ms"),
    (
        "server CPU per delivery (µs)",
        "/cpu/server_us_per_delivery",
    ),
    (
        "of which in the kernel (µs)",
        "/cpu/server_system_us_per_delivery",
    ),
    (
        "server + Redis CPU per delivery (µs)",
        "/cpu/server_and_redis_us_per_delivery",
    ),
    ("server cores busy", "/cpu/servers_cores"),
    ("load generator cores busy", "/cpu/loadgen_cores"),
    (
        "server RSS at the end of the window (MiB)",
        "/cpu/servers_rss_mib",
    ),
    ("deliveries expected", "/deliveries_expected"),
    ("lost", "/lost"),
    ("duplicates", "/duplicates"),
    ("idle bytes per connection", "/bytes_per_connection"),
];

pub(crate) fn table(a: &Value, b: &Value) -> String {
    let name = |r: &Value| r["dialect"].as_str().unwrap_or("?").to_owned();
    let mut out = format!(
        "| {} | {} | {} |\n|---|---:|---:|\n",
        a["scenario"].as_str().unwrap_or("?"),
        name(a),
        name(b)
    );
    let cell = |v: Option<&Value>| match v {
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 {
                format!("{f:.0}")
            } else {
                format!("{f:.3}")
            }
        }
        Some(Value::Null) | None => "–".into(),
        Some(other) => other.to_string(),
    };
    for (label, pointer) in ROWS {
        let (x, y) = (a.pointer(pointer), b.pointer(pointer));
        if x.is_none() && y.is_none() {
            continue;
        }
        out.push_str(&format!("| {label} | {} | {} |\n", cell(x), cell(y)));
    }
    out
}

pub(crate) fn main(mut args: impl Iterator<Item = String>) -> Result<()> {
    let (Some(a), Some(b)) = (args.next(), args.next()) else {
        bail!("usage: switchyard-loadgen compare A.json B.json [--out FILE.md]");
    };
    let read = |p: &str| -> Result<Value> {
        serde_json::from_str(&std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?)
            .with_context(|| format!("{p}: not a result"))
    };
    let text = table(&read(&a)?, &read(&b)?);
    match (args.next().as_deref(), args.next()) {
        (Some("--out"), Some(path)) => std::fs::write(&path, &text)?,
        (None, _) => print!("{text}"),
        _ => bail!("usage: switchyard-loadgen compare A.json B.json [--out FILE.md]"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_table_of_two_runs() {
        let a = json!({"scenario": "fanout", "dialect": "switchyard", "deliveries_per_sec": 1000.0, "latency": {"p99_ms": 1.5}});
        let b = json!({"scenario": "fanout", "dialect": "socket-io", "deliveries_per_sec": 10, "latency": {"p99_ms": 40}});
        let t = super::table(&a, &b);
        assert!(
            t.contains("| deliveries/s (measured window) | 1000 | 10 |"),
            "{t}"
        );
        assert!(t.contains("| latency p99 (ms) | 1.500 | 40 |"), "{t}");
        assert!(!t.contains("idle"), "rows neither has are left out");
    }
}
