#!/usr/bin/env bash
# Runs a Switchyard cluster on loopback, without containers, from Debian's packages:
# Redis, 3 nodes, HAProxy in front (deploy/haproxy.cfg), Prometheus scraping the nodes with the
# alert rules of deploy/prometheus/alerts.yml. Prints the URLs, runs until Ctrl-C (or SIGTERM),
# then stops everything it started.
#
#   apt-get install redis-server haproxy prometheus
#   deploy/local-cluster.sh
#
# Settings (environment): SWITCHYARD_BIN (default: target/release/switchyard, built if missing),
# LB_PORT (18080), NODE_PORT_BASE (18080: nodes on 18081-18083), REDIS_PORT (16379),
# PROMETHEUS_PORT (19090), SWITCHYARD_JWT_SECRET (random), SWITCHYARD_API_KEYS (local-key).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

lb_port=${LB_PORT:-18080}
node_base=${NODE_PORT_BASE:-18080}
redis_port=${REDIS_PORT:-16379}
prom_port=${PROMETHEUS_PORT:-19090}
secret=${SWITCHYARD_JWT_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}
api_key=${SWITCHYARD_API_KEYS:-local-key}
bin=${SWITCHYARD_BIN:-$root/target/release/switchyard}

for tool in redis-server haproxy prometheus curl; do
  command -v "$tool" >/dev/null || { echo "local-cluster: $tool is missing (apt-get install redis-server haproxy prometheus curl)" >&2; exit 1; }
done
if [ ! -x "$bin" ]; then
  echo "local-cluster: building $bin" >&2
  cargo build --release --locked -p switchyard-gateway >&2
fi

run=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-cluster.XXXXXX")
pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$run"
  echo "local-cluster: stopped" >&2
}
trap stop EXIT
trap 'exit 0' INT TERM

# Waits until a URL answers 200 (at most 20 s).
wait_for() {
  local url=$1 what=$2
  for _ in $(seq 200); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "local-cluster: $what did not come up ($url); logs in $run" >&2
  exit 1
}

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$run" >"$run/redis.log" 2>&1 &
pids+=($!)

nodes=()
for i in 1 2 3; do
  port=$((node_base + i))
  SWITCHYARD_LISTEN=127.0.0.1:$port SWITCHYARD_NODE_ID=node-$i \
  SWITCHYARD_BROKER=redis://127.0.0.1:$redis_port SWITCHYARD_JWT_SECRET=$secret \
  SWITCHYARD_API_KEYS=$api_key SWITCHYARD_TRUSTED_PROXIES=127.0.0.1 SWITCHYARD_DEV=1 \
  SWITCHYARD_LOG_FORMAT=json "$bin" >"$run/node-$i.log" 2>&1 &
  pids+=($!)
  nodes+=("127.0.0.1:$port")
done
for node in "${nodes[@]}"; do wait_for "http://$node/readyz" "node $node"; done

SWITCHYARD_LB_BIND=127.0.0.1:$lb_port SWITCHYARD_NODE1=${nodes[0]} \
SWITCHYARD_NODE2=${nodes[1]} SWITCHYARD_NODE3=${nodes[2]} \
  haproxy -f "$root/deploy/haproxy.cfg" >"$run/haproxy.log" 2>&1 &
pids+=($!)

cat >"$run/prometheus.yml" <<YAML
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $root/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: switchyard
    static_configs:
      - targets: ["${nodes[0]}", "${nodes[1]}", "${nodes[2]}"]
YAML
prometheus --config.file="$run/prometheus.yml" --storage.tsdb.path="$run/prometheus" \
  --web.listen-address=127.0.0.1:$prom_port >"$run/prometheus.log" 2>&1 &
pids+=($!)

wait_for "http://127.0.0.1:$lb_port/readyz" "HAProxy"
wait_for "http://127.0.0.1:$prom_port/-/ready" "Prometheus"

cat <<INFO
Switchyard local cluster is up (Ctrl-C stops it):
  load balancer  http://127.0.0.1:$lb_port   (demo page at /, WebSocket ws://127.0.0.1:$lb_port/ws)
  nodes          ${nodes[*]}
  Prometheus     http://127.0.0.1:$prom_port
  Redis          redis://127.0.0.1:$redis_port
  API key        $api_key
  logs           $run
INFO
wait -n "${pids[@]}" || true
echo "local-cluster: a process exited; stopping (logs were in $run)" >&2
