// soak.js: long-lived connections, heartbeats, a low message rate, for minutes (or hours).
//
// Each user holds one connection for the whole test (reconnecting only if it is lost or its
// token is about to expire), joined to a small room. Talkers send a message every
// MSG_INTERVAL_MS, an application `ping` every PING_INTERVAL_MS and a WebSocket ping every
// WS_PING_INTERVAL_MS; every SILENT_EVERY-th user is silent: after joining it sends nothing and
// stays alive only by answering the server's heartbeat pings (SWITCHYARD_HEARTBEAT_MS), which
// checks that the node counts pongs as life. What must hold, from the client's side:
//   - no connection is lost (ws_unexpected_closes = 0, ws_errors);
//   - every message reaches every member (delivery_ratio, seq-checked over the whole soak);
//   - every ping is answered in time (heartbeat_ok), with ping_rtt (application ping) and k6's
//     own ws_ping (WebSocket ping) as latencies; ws_server_pings counts the node's heartbeats;
//   - latency stays flat: ping_rtt is tagged with `phase` (first, middle or last third of the
//     run) and the summary shows its p95 for the first and the last;
//   - the load generator itself holds no growing state (client_tracked_items: pending acks,
//     out-of-order seqs and pings in flight, sampled every 5 s, stays bounded).
// The node's own memory is not visible to k6: watch its RSS alongside (smoke.sh --start prints
// the node's RSS before and after; in a cluster use the dashboards).
//
// Parameters (env):            default   SMOKE=1
//   VUS                        50        6       users (one connection each)
//   ROOM_SIZE                  5         3       users per room
//   DURATION_S                 600       15      test length
//   MSG_INTERVAL_MS            10000     2000    mean time between a talker's messages (+-50%)
//   PING_INTERVAL_MS           5000      1000    application ping interval (talkers)
//   WS_PING_INTERVAL_MS        10000     2000    WebSocket ping interval (talkers)
//   PONG_TIMEOUT_MS            5000      2000    a ping unanswered this long fails heartbeat_ok
//   SILENT_EVERY               5         3       every Nth user is silent (0: none)
//   RAMP_S                     30        2       connections start spread over this long
//   DRAIN_MS                   3000      2000    talkers stop this long (+1 s) before the end
//   PING_P95_MS                250       250     threshold on ping_rtt and ws_ping (p95)
import { sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import { commonThresholds, envInt, jitter, newRunId, secs, wsUrl, URLS } from './lib/config.js';
import { backoffAfterFailures, recordDelivery, SeqTracker, Session } from './lib/switchyard.js';
import { roomResets } from './lib/metrics.js';

const VUS = envInt('VUS', 50, 6);
const ROOM_SIZE = Math.max(2, envInt('ROOM_SIZE', 5, 3));
const DURATION_S = envInt('DURATION_S', 600, 15);
const MSG_INTERVAL_MS = envInt('MSG_INTERVAL_MS', 10000, 2000);
const PING_INTERVAL_MS = envInt('PING_INTERVAL_MS', 5000, 1000);
const WS_PING_INTERVAL_MS = envInt('WS_PING_INTERVAL_MS', 10000, 2000);
const PONG_TIMEOUT_MS = envInt('PONG_TIMEOUT_MS', 5000, 2000);
const SILENT_EVERY = envInt('SILENT_EVERY', 5, 3);
const RAMP_S = envInt('RAMP_S', 30, 2);
const DRAIN_MS = envInt('DRAIN_MS', 3000, 2000);
const PING_P95_MS = envInt('PING_P95_MS', 250);

const pingRtt = new Trend('ping_rtt', true);
const heartbeatOk = new Rate('heartbeat_ok');
const serverPings = new Counter('ws_server_pings');
const trackedItems = new Trend('client_tracked_items');
const reconnects = new Counter('soak_reconnects');

export const options = {
  scenarios: {
    soak: {
      executor: 'constant-vus',
      vus: VUS,
      duration: secs(DURATION_S),
      gracefulStop: secs(DRAIN_MS / 1000 + 10),
    },
  },
  thresholds: commonThresholds({
    ping_rtt: [`p(95)<${PING_P95_MS}`],
    // Per third of the run, so drift shows in the summary.
    'ping_rtt{phase:first}': [`p(95)<${PING_P95_MS}`],
    'ping_rtt{phase:last}': [`p(95)<${PING_P95_MS}`],
    ws_ping: [`p(95)<${PING_P95_MS}`],
    heartbeat_ok: ['rate>0.999'],
    ws_unexpected_closes: ['count<1'],
    client_tracked_items: ['max<1000'],
  }),
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  console.log(
    `soak: ${VUS} users in rooms of ${ROOM_SIZE} (every ${SILENT_EVERY || 'no'}th silent), a message every ~${MSG_INTERVAL_MS} ms, ${DURATION_S} s, nodes ${URLS.join(' ')}`,
  );
  return { t0: Date.now(), runId: newRunId() };
}

export default function (ctx) {
  const vu = exec.vu.idInTest;
  const iter = exec.vu.iterationInScenario;
  const testEnd = ctx.t0 + DURATION_S * 1000;
  const stopAt = testEnd - DRAIN_MS - 1000; // talkers stop sending
  const checkAt = testEnd - 1000; // final seq check
  if (iter === 0) sleep((RAMP_S * (vu - 1)) / VUS);
  if (Date.now() > stopAt - 1000) {
    sleep(Math.max(1, (testEnd - Date.now()) / 1000));
    return;
  }
  backoffAfterFailures();
  if (iter > 0) reconnects.add(1); // the previous session was lost or its token ran out

  const silent = SILENT_EVERY > 0 && vu % SILENT_EVERY === 0;
  const roomId = `soak-${ctx.runId}-${Math.floor((vu - 1) / ROOM_SIZE)}`;
  const user = `soak-${ctx.runId}-${vu}`;
  const third = (DURATION_S * 1000) / 3;
  const phase = () => {
    const t = Date.now() - ctx.t0;
    return t < third ? 'first' : t < 2 * third ? 'middle' : 'last';
  };
  let tracker = null;
  let finalRef = 0;
  let finalized = false;
  let stopped = false;
  const appPings = new Map(); // ref -> sentAt
  const wsPings = []; // sentAt of WebSocket pings awaiting their pong, oldest first

  const finalize = (upTo) => {
    if (finalized || !tracker) return;
    finalized = true;
    tracker.finalize(upTo);
  };

  let tokenExpMs = Infinity;
  const s = new Session({
    url: wsUrl(vu - 1 + iter),
    user,
    name: `Soak ${vu}`,
    maxLifetimeMs: testEnd - Date.now() + 15000,
    on: {
      welcome: () => {
        tokenExpMs = s.tokenExpMs || Infinity;
        s.request({ type: 'join-room', roomId });
      },
      'room-joined': (msg) => {
        if (!tracker) {
          tracker = new SeqTracker(msg.seq);
          start();
        } else if (msg.ref === finalRef) {
          finalize(msg.seq);
          s.request({ type: 'leave-room', roomId });
          s.after(200, () => s.close());
        }
      },
      'new-message': (msg) => {
        if (!tracker || finalRef || msg.roomId !== roomId) return;
        recordDelivery(tracker, msg);
      },
      pong: (msg) => {
        const sentAt = appPings.get(msg.ref);
        if (sentAt === undefined) return;
        appPings.delete(msg.ref);
        const rtt = Date.now() - sentAt;
        pingRtt.add(rtt, { phase: phase() });
        heartbeatOk.add(rtt <= PONG_TIMEOUT_MS);
      },
      'room-reset': (msg) => {
        roomResets.add(1);
        if (tracker) tracker.reset(msg.seq);
      },
    },
    onEnd: () => {
      // A lost connection: count what is known; pings in flight were never answered.
      finalize(tracker ? tracker.maxSeen : 0);
      for (let i = 0; i < appPings.size + wsPings.length; i++) heartbeatOk.add(false);
    },
  });
  if (s.ws) {
    s.ws.addEventListener('ping', () => serverPings.add(1)); // the node's heartbeat
    s.ws.addEventListener('pong', () => {
      const sentAt = wsPings.shift();
      if (sentAt === undefined) return;
      heartbeatOk.add(Date.now() - sentAt <= PONG_TIMEOUT_MS); // k6 records ws_ping itself
    });
  }

  function start() {
    // Reconnect (a new iteration) a minute before a short-lived token expires.
    const sessionEnd = Math.min(checkAt, tokenExpMs - 60000);
    if (sessionEnd < checkAt) {
      s.after(sessionEnd - Date.now(), () => {
        stopped = true;
        s.waitUntil(() => s.pending.size === 0, DRAIN_MS, () => {
          finalize(tracker.maxSeen);
          s.request({ type: 'leave-room', roomId });
          s.after(200, () => s.close());
        });
      });
    } else {
      s.after(checkAt - Date.now(), () => {
        finalRef = s.request({ type: 'join-room', roomId });
      });
    }
    s.every(5000, () => trackedItems.add(s.pending.size + tracker.ahead.size + appPings.size + wsPings.length));
    if (silent) return;
    const talking = () => !stopped && Date.now() < stopAt;
    const sendOne = () => {
      if (!talking()) return;
      s.message(roomId, 'soak', { vu });
      s.after(jitter(MSG_INTERVAL_MS), sendOne);
    };
    s.after(jitter(MSG_INTERVAL_MS), sendOne);
    s.every(PING_INTERVAL_MS, () => {
      if (!talking()) return;
      expire(appPings);
      appPings.set(s.request({ type: 'ping' }), Date.now());
    });
    s.every(WS_PING_INTERVAL_MS, () => {
      if (!talking() || !s.isOpen) return;
      while (wsPings.length && Date.now() - wsPings[0] > PONG_TIMEOUT_MS * 2) {
        wsPings.shift();
        heartbeatOk.add(false);
      }
      wsPings.push(Date.now());
      s.ws.ping();
    });
  }

  // Pings unanswered for twice the timeout are failures, and forgotten.
  function expire(map) {
    const now = Date.now();
    for (const [ref, sentAt] of map) {
      if (now - sentAt > PONG_TIMEOUT_MS * 2) {
        map.delete(ref);
        heartbeatOk.add(false);
      }
    }
  }
}
