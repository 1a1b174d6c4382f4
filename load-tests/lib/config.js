// Environment parsing shared by every script: the target URLs, smoke mode, numeric parameters
// and the threshold limits. Every value can be overridden with `-e NAME=value` (or the
// environment); SMOKE=1 switches every default to a small, ~10-15 s run.

export const SMOKE = /^(1|true|yes|on)$/i.test(__ENV.SMOKE || '');

function raw(name) {
  const v = __ENV[name];
  return v === undefined || v === '' ? undefined : v;
}

// A string setting; `smokeDefault` applies in SMOKE mode when it is given.
export function envStr(name, fullDefault, smokeDefault) {
  const v = raw(name);
  if (v !== undefined) return v;
  return SMOKE && smokeDefault !== undefined ? smokeDefault : fullDefault;
}

export function envNum(name, fullDefault, smokeDefault) {
  const v = raw(name);
  if (v !== undefined) {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(`${name}=${v} is not a number`);
    return n;
  }
  return SMOKE && smokeDefault !== undefined ? smokeDefault : fullDefault;
}

export function envInt(name, fullDefault, smokeDefault) {
  return Math.round(envNum(name, fullDefault, smokeDefault));
}

export function envBool(name, fullDefault, smokeDefault) {
  const v = raw(name);
  if (v !== undefined) return /^(1|true|yes|on)$/i.test(v);
  return SMOKE && smokeDefault !== undefined ? smokeDefault : fullDefault;
}

// Accepts ws://host:port/ws, ws://host:port (the /ws path is added), http(s)://host:port.
function normalizeUrl(u) {
  let url = u.trim();
  if (!url) return '';
  url = url.replace(/^http:\/\//i, 'ws://').replace(/^https:\/\//i, 'wss://');
  if (!/^wss?:\/\//i.test(url)) url = `ws://${url}`;
  const m = url.match(/^(wss?:\/\/[^/?#]+)(\/[^?#]*)?(.*)$/i);
  const path = m[2] && m[2] !== '/' ? m[2] : '/ws';
  return `${m[1]}${path}${m[3] || ''}`;
}

// SWITCHYARD_URLS: comma-separated WebSocket URLs of the nodes (or of a load balancer).
// Connections are spread over them round-robin, so every node of a cluster gets load and room
// members sit on different nodes.
export const URLS = (raw('SWITCHYARD_URLS') || 'ws://127.0.0.1:8080/ws')
  .split(',')
  .map(normalizeUrl)
  .filter((u) => u !== '');

export function wsUrl(index) {
  return URLS[((index % URLS.length) + URLS.length) % URLS.length];
}

// ws://host:port/ws -> http://host:port (for /dev/token and /metrics).
export function httpBase(url) {
  const m = url.match(/^(wss?):\/\/([^/?#]+)/i);
  return `${m[1].toLowerCase() === 'wss' ? 'https' : 'http'}://${m[2]}`;
}

// Threshold limits (same names in every script).
export const LIMITS = {
  ackP95: envNum('ACK_P95_MS', 250),
  ackP99: envNum('ACK_P99_MS', 500),
  deliveryP95: envNum('DELIVERY_P95_MS', 250),
  deliveryP99: envNum('DELIVERY_P99_MS', 500),
  minDeliveryRatio: envNum('MIN_DELIVERY_RATIO', 0.99),
  minAckSuccess: envNum('MIN_ACK_SUCCESS', 0.99),
  maxWsErrors: envNum('MAX_WS_ERROR_RATE', 0.01),
};

// The thresholds every script shares: ack latency (p95/p99), delivery latency, delivery ratio,
// ack success, sessions with an error, no duplicate delivery, and at least some traffic (a
// threshold on a metric without samples would pass vacuously).
export function commonThresholds(extra) {
  return Object.assign(
    {
      ack_latency: [`p(95)<${LIMITS.ackP95}`, `p(99)<${LIMITS.ackP99}`],
      delivery_latency: [`p(95)<${LIMITS.deliveryP95}`, `p(99)<${LIMITS.deliveryP99}`],
      delivery_ratio: [`rate>${LIMITS.minDeliveryRatio}`],
      ack_success: [`rate>${LIMITS.minAckSuccess}`],
      ws_errors: [`rate<${LIMITS.maxWsErrors}`],
      deliveries_duplicate: ['count<1'],
      acks_received: ['count>0'],
      deliveries_received: ['count>0'],
    },
    extra || {},
  );
}

// Seconds to a k6 duration string.
export function secs(s) {
  return `${Math.max(1, Math.round(s))}s`;
}

// A random id for this run, so room names, user ids and tempIds never collide with an earlier
// run against the same node (tempIds are idempotent for 5 minutes, history lives 10).
export function newRunId() {
  return (
    raw('RUN_ID') ||
    `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`
  );
}

export function jitter(ms, fraction) {
  const f = fraction === undefined ? 0.5 : fraction;
  return Math.max(1, Math.round(ms * (1 - f + Math.random() * 2 * f)));
}
