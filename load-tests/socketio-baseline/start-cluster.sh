#!/usr/bin/env bash
# Starts two instances of the Socket.IO baseline on one Redis, in the background, and returns
# once both answer /healthz. Each instance stops by itself after MAX_SECONDS.
#
#   ./start-cluster.sh [PORT_A] [PORT_B]     start (default ports 3001 and 3002)
#   ./start-cluster.sh stop                  stop the instances started last (pids in RUN_DIR)
#
# Environment:
#   REDIS_URL         the shared Redis (default redis://127.0.0.1:6379); start it yourself, e.g.
#                     redis-server --port 6379 --save '' --appendonly no
#   HOST              address to bind (default 127.0.0.1)
#   MAX_SECONDS       lifetime bound of each instance (default 3600)
#   RUN_DIR           where the pid file and logs go (default /tmp/socketio-baseline)
#   JWT_SECRET, PING_INTERVAL_MS, PING_TIMEOUT_MS
#                     passed to the instances (see server.mjs)
# Prints the instances' pids and URLs. Needs `npm ci` first.
set -euo pipefail
cd "$(dirname "$0")"

run_dir=${RUN_DIR:-/tmp/socketio-baseline}
pid_file=$run_dir/pids

if [ "${1:-}" = stop ]; then
  if [ ! -f "$pid_file" ]; then
    echo "start-cluster: nothing to stop ($pid_file is missing)" >&2
    exit 0
  fi
  while read -r pid; do
    if kill "$pid" 2>/dev/null; then echo "start-cluster: stopped $pid"; fi
  done <"$pid_file"
  rm -f "$pid_file"
  exit 0
fi

if [ ! -d node_modules ]; then
  echo "start-cluster: run 'npm ci' in $(pwd) first" >&2
  exit 1
fi

port_a=${1:-3001}
port_b=${2:-3002}
host=${HOST:-127.0.0.1}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
max_seconds=${MAX_SECONDS:-3600}
mkdir -p "$run_dir"
: >"$pid_file"

pids=()
for port in "$port_a" "$port_b"; do
  NODE_ENV=production PORT=$port HOST=$host REDIS_URL=$redis_url \
    timeout "$max_seconds" node server.mjs >"$run_dir/instance-$port.log" 2>&1 &
  pids+=($!)
  echo $! >>"$pid_file"
done

for port in "$port_a" "$port_b"; do
  ok=0
  for _ in $(seq 100); do
    if curl -fsS -o /dev/null "http://$host:$port/healthz" 2>/dev/null; then ok=1; break; fi
    sleep 0.1
  done
  if [ "$ok" != 1 ]; then
    echo "start-cluster: the instance on port $port did not come up (is Redis at $redis_url?); log:" >&2
    tail -5 "$run_dir/instance-$port.log" >&2
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -f "$pid_file"
    exit 1
  fi
done

echo "start-cluster: pids ${pids[*]} (stop with: $0 stop, or kill ${pids[*]}; each stops by itself after ${max_seconds}s)"
echo "start-cluster: ws://$host:$port_a/socket.io/?EIO=4&transport=websocket"
echo "start-cluster: ws://$host:$port_b/socket.io/?EIO=4&transport=websocket"
echo "start-cluster: redis $redis_url, logs in $run_dir"
