//! `switchyard-loadgen`: load scenarios against Switchyard nodes, or the Socket.IO baseline, on
//! this machine. Every run is bounded in connections and time and targets loopback only. See
//! `load-tests/README.md` and `BENCHMARKS.md`.

mod args;
mod auth;
mod chart;
mod compare;
mod procs;
mod scenario;
mod stats;
mod wire;

use anyhow::{bail, Context, Result};

use args::{check_loopback, Flags};
use scenario::rooms::{RoomLoad, Shape};
use scenario::Common;

/// The same allocator as the gateway (mimalloc v2): a cheaper load generator leaves more of the
/// shared cores to what it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HELP: &str = "\
usage: switchyard-loadgen SCENARIO [--flag value]...

scenarios:
  fanout           R rooms x M members, P publishers per room at --rate msg/s in total
                   (defaults: 1 room x 1000 members, 4 publishers, 2000 msg/s)
  chat             many small rooms where every member talks, with acks
                   (defaults: 100 rooms x 10 members, all publishing, 1000 msg/s)
  cursors          high-frequency cursor moves (defaults: 20 rooms x 10, 2 movers, 2000/s)
  presence-churn   members join and leave over and over while others watch
                   (--rooms 10 --watchers 10 --churners 5)
  idle             --connections N held open; the node's RSS per connection (--pids PID)
  reconnect-storm  --clients N over the nodes; the first node (--kill-pid) is killed after
                   --after S; time until all resumed, and any loss (--signal kill|term)
  compare A.json B.json [--out FILE.md]   a side-by-side table of two results

common flags:
  --dialect switchyard|socketio   (switchyard)
  --urls ws://127.0.0.1:8080,...  node base URLs, connections spread round-robin
  --secret S       sign HS256 tokens (else they come from each node's /dev/token)
  --pids P1,P2     server processes whose CPU time (and, for idle, memory) is measured
  --redis-pid P    Redis, to report its CPU too
  --duration S (10) --warmup S (2)
  --drain S (30)   after the last send, wait while deliveries still arrive (2 s stall ends it)
  --out FILE.json  write the result there (else stdout); --chart FILE.png beside it
  --threads N (2)  load generator worker threads
limits: at most 50,000 connections and 600 s per run; loopback addresses only.";

const MAX_CONNECTIONS: usize = 50_000;
const MAX_SECONDS: f64 = 600.0;

fn main() -> Result<()> {
    let mut argv = std::env::args().skip(1);
    let Some(scenario) = argv.next() else {
        bail!("{HELP}");
    };
    if matches!(scenario.as_str(), "help" | "--help" | "-h") {
        println!("{HELP}");
        return Ok(());
    }
    if scenario == "compare" {
        return compare::main(argv);
    }
    let mut flags = Flags::parse(argv)?;
    let threads: usize = flags.get("threads", 2)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.clamp(1, 64))
        .enable_all()
        .build()?
        .block_on(run(&scenario, flags))
}

async fn run(scenario: &str, mut flags: Flags) -> Result<()> {
    let dialect = flags.get("dialect", wire::Dialect::Switchyard)?;
    let default_url = match dialect {
        wire::Dialect::Switchyard => "ws://127.0.0.1:8080",
        wire::Dialect::SocketIo => "ws://127.0.0.1:3000",
    };
    let urls = flags.list("urls", default_url);
    for url in &urls {
        check_loopback(url)?;
    }
    let pids = flags
        .list("pids", "")
        .iter()
        .map(|p| p.parse::<u32>().with_context(|| format!("--pids {p}")))
        .collect::<Result<Vec<_>>>()?;
    let redis = flags
        .opt("redis-pid")
        .map(|p| p.parse())
        .transpose()
        .context("--redis-pid")?;
    let common = Common {
        dialect,
        urls,
        tokens: auth::Tokens::new(flags.opt("secret")),
        watched: procs::Watched {
            servers: pids,
            redis,
        },
    };
    common.watched.check()?;
    let duration = flags.secs("duration", 10.0)?;
    if duration.as_secs_f64() > MAX_SECONDS {
        bail!("--duration: at most {MAX_SECONDS} s");
    }
    let out = flags.opt("out");
    let chart = flags.opt("chart");
    let connections = |n: usize| -> Result<usize> {
        if n == 0 || n > MAX_CONNECTIONS {
            bail!("at most {MAX_CONNECTIONS} connections per run (and at least one)");
        }
        Ok(n)
    };
    let result = match scenario {
        "fanout" | "chat" | "cursors" => {
            let (shape, rooms, members, publishers, rate) = match scenario {
                "fanout" => (Shape::Fanout, 1, 1000, 4, 2000.0),
                "chat" => (Shape::Chat, 100, 10, 10, 1000.0),
                _ => (Shape::Cursors, 20, 10, 2, 2000.0),
            };
            let load = RoomLoad {
                shape,
                rooms: flags.get("rooms", rooms)?,
                members: flags.get("members", members)?,
                publishers: flags.get("publishers", publishers)?,
                rate: flags.get("rate", rate)?,
                duration,
                warmup: flags.secs("warmup", 2.0)?,
                drain: flags.secs("drain", 30.0)?,
            };
            connections(load.rooms * load.members)?;
            flags.finish()?;
            scenario::rooms::run(&common, load).await?
        }
        "presence-churn" => {
            let rooms = flags.get("rooms", 10)?;
            let watchers = flags.get("watchers", 10)?;
            let churners = flags.get("churners", 5)?;
            connections(rooms * (watchers + churners))?;
            flags.finish()?;
            scenario::churn::run(&common, rooms, watchers, churners, duration).await?
        }
        "idle" => {
            let n = connections(flags.get("connections", 1000)?)?;
            let hold = flags.secs("hold", 5.0)?;
            flags.finish()?;
            scenario::idle::run(&common, n, hold).await?
        }
        "reconnect-storm" => {
            let storm = scenario::reconnect::Storm {
                clients: connections(flags.get("clients", 1000)?)?,
                rooms: flags.get("rooms", 10)?,
                rate: flags.get("rate", 100.0)?,
                after: flags.secs("after", 3.0)?,
                duration,
                kill_pid: flags.get("kill-pid", 0)?,
                signal: flags.get("signal", "kill".to_owned())?,
            };
            if storm.kill_pid == 0 {
                bail!("reconnect-storm: --kill-pid PID (the first node's process) is required");
            }
            if !matches!(storm.signal.as_str(), "kill" | "term") {
                bail!("--signal: kill or term");
            }
            flags.finish()?;
            scenario::reconnect::run(&common, storm).await?
        }
        other => bail!("unknown scenario {other}\n\n{HELP}"),
    };
    let text = serde_json::to_string_pretty(&result)?;
    match &out {
        Some(path) => std::fs::write(path, &text).with_context(|| format!("writing {path}"))?,
        None => println!("{text}"),
    }
    if let Some(path) = chart {
        chart::draw(&result, std::path::Path::new(&path))?;
    }
    eprintln!("{}", compare::summary(&result));
    Ok(())
}
