// fanout.js: few rooms, many subscribers, a few publishers.
//
// Subscribers `subscribe` (no presence) and stay for the whole test; publishers `join-room` and
// send durable messages at a steady rate. Measures delivery latency (data.sentAt -> new-message
// at each subscriber), ack latency at the publishers, and delivered vs expected: once the
// publishers have stopped and DRAIN_MS has passed, each subscriber subscribes again, which
// answers the room's final seq, and every seq between its first subscribe and that one must
// have arrived exactly once (deliveries_expected / deliveries_received / delivery_ratio).
//
// Parameters (env):            default   SMOKE=1
//   SUB_VUS                    50        4       VUs holding subscriber connections
//   CONNS_PER_VU               10        3       subscriber connections per VU
//                                                (subscribers = SUB_VUS x CONNS_PER_VU)
//   PUBLISHERS                 4         2       publisher connections (one VU each)
//   ROOMS                      2         2       rooms; subscribers and publishers spread evenly
//   PUB_RATE                   5         5       messages per second per publisher (stay under
//                                                the node's SWITCHYARD_RATE_PER_SEC, default 10)
//   DURATION_S                 60        12      test length
//   RAMP_S                     10        2       subscribers connect spread over this long;
//                                                publishers start 1 s after
//   DRAIN_MS                   3000      3000    publishers stop this long (+1 s) before the end
//   TEXT_CHARS                 64        64      length of each message's text
import { sleep } from 'k6';
import exec from 'k6/execution';
import { commonThresholds, envInt, envNum, newRunId, secs, wsUrl, URLS } from './lib/config.js';
import { recordDelivery, SeqTracker, Session } from './lib/switchyard.js';
import { roomResets } from './lib/metrics.js';

const SUB_VUS = envInt('SUB_VUS', 50, 4);
const CONNS_PER_VU = Math.max(1, envInt('CONNS_PER_VU', 10, 3));
const PUBLISHERS = Math.max(1, envInt('PUBLISHERS', 4, 2));
const ROOMS = Math.max(1, envInt('ROOMS', 2, 2));
const PUB_RATE = envNum('PUB_RATE', 5);
const DURATION_S = envInt('DURATION_S', 60, 12);
const RAMP_S = envInt('RAMP_S', 10, 2);
const DRAIN_MS = envInt('DRAIN_MS', 3000);
const TEXT_CHARS = envInt('TEXT_CHARS', 64);

const PUB_START_S = RAMP_S + 1;

export const options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      exec: 'subscriber',
      vus: SUB_VUS,
      iterations: 1,
      maxDuration: secs(DURATION_S + 30),
    },
    publishers: {
      executor: 'per-vu-iterations',
      exec: 'publisher',
      vus: PUBLISHERS,
      iterations: 1,
      startTime: secs(PUB_START_S),
      maxDuration: secs(DURATION_S + 30 - PUB_START_S),
    },
  },
  thresholds: commonThresholds(),
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
};

const TEXT = 'f'.repeat(TEXT_CHARS);

export function setup() {
  if (DURATION_S * 1000 - DRAIN_MS - 1000 <= PUB_START_S * 1000) {
    throw new Error('DURATION_S is too short for RAMP_S + DRAIN_MS');
  }
  console.log(
    `fanout: ${SUB_VUS * CONNS_PER_VU} subscribers, ${PUBLISHERS} publishers x ${PUB_RATE}/s, ${ROOMS} rooms, ${DURATION_S} s, nodes ${URLS.join(' ')}`,
  );
  return { t0: Date.now(), runId: newRunId() };
}

function roomName(ctx, index) {
  return `fanout-${ctx.runId}-${index % ROOMS}`;
}

// One VU, CONNS_PER_VU subscriber connections, each until the end of the test.
export function subscriber(ctx) {
  const idx = exec.scenario.iterationInTest; // 0 .. SUB_VUS-1
  sleep((RAMP_S * idx) / SUB_VUS);
  const finalAt = ctx.t0 + DURATION_S * 1000 - 1000;
  for (let c = 0; c < CONNS_PER_VU; c++) {
    const g = idx * CONNS_PER_VU + c;
    // Neighbouring subscribers of one room sit on different nodes.
    openSubscriber(ctx, g, wsUrl(g), roomName(ctx, Math.floor(g / URLS.length)), finalAt);
  }
}

function openSubscriber(ctx, g, url, roomId, finalAt) {
  let tracker = null;
  let finalRef = 0;
  let finalized = false;
  const finalize = (upTo) => {
    if (finalized || !tracker) return;
    finalized = true;
    tracker.finalize(upTo);
  };
  const s = new Session({
    url,
    user: `fanout-${ctx.runId}-sub-${g}`,
    maxLifetimeMs: finalAt - Date.now() + DRAIN_MS + 10000,
    on: {
      welcome: () => s.request({ type: 'subscribe', roomId }),
      subscribed: (msg) => {
        if (!tracker) {
          tracker = new SeqTracker(msg.seq);
          s.after(finalAt - Date.now(), () => {
            // Publishers have stopped: the reply to a second subscribe carries the room's final seq.
            finalRef = s.request({ type: 'subscribe', roomId });
          });
        } else if (msg.ref === finalRef) {
          finalize(msg.seq);
          s.request({ type: 'unsubscribe', roomId });
          s.after(100, () => s.close());
        }
      },
      'new-message': (msg) => {
        // Only what arrived live before the final check counts.
        if (tracker && !finalRef && msg.roomId === roomId) recordDelivery(tracker, msg);
      },
      'room-reset': (msg) => {
        roomResets.add(1);
        if (tracker) tracker.reset(msg.seq);
      },
    },
    onEnd: () => finalize(tracker ? tracker.maxSeen : 0),
  });
}

export function publisher(ctx) {
  const p = exec.scenario.iterationInTest; // 0 .. PUBLISHERS-1
  const roomId = roomName(ctx, p);
  const stopAt = ctx.t0 + DURATION_S * 1000 - DRAIN_MS - 1000;
  const intervalMs = Math.max(1, Math.round(1000 / PUB_RATE));
  let sent = 0;
  const s = new Session({
    url: wsUrl(p + 1),
    user: `fanout-${ctx.runId}-pub-${p}`,
    name: `Publisher ${p}`,
    maxLifetimeMs: stopAt - Date.now() + DRAIN_MS + 10000,
    on: {
      welcome: () => s.request({ type: 'join-room', roomId }),
      'room-joined': () => {
        if (sent > 0) return;
        // Publishers start out of phase with each other.
        s.after(Math.random() * intervalMs, () => {
          const tick = s.every(intervalMs, () => {
            if (Date.now() >= stopAt) {
              clearInterval(tick);
              s.waitUntil(
                () => s.pending.size === 0,
                DRAIN_MS / 2,
                () => {
                  s.request({ type: 'leave-room', roomId });
                  s.after(100, () => s.close());
                },
              );
              return;
            }
            s.message(roomId, TEXT, { pub: p, n: ++sent });
          });
        });
      },
    },
  });
}
