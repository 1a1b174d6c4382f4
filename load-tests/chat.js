// chat.js: many small rooms; every user sends messages with tempIds and awaits their acks.
//
// Measures ack latency (send -> ack), delivery latency (data.sentAt -> new-message at each member,
// the sender's own connection included) and the delivery ratio: each connection must receive
// every seq of its room from its join to its own last acknowledged message, exactly once.
// Users reconnect every SESSION_S (a new session joins the room again), so joins, leaves and
// presence go on in the background.
//
// Parameters (env):            default   SMOKE=1
//   VUS                        100       6       users (one connection each)
//   DURATION_S                 60        12      test length
//   ROOM_SIZE                  5         3       users per room (rooms = VUS / ROOM_SIZE)
//   MSG_INTERVAL_MS            2000      500     mean time between a user's messages (+-50%)
//   SESSION_S                  30        60      mean session length before reconnecting (+-25%)
//   RAMP_S                     10        2       connections start spread over this long
//   DRAIN_MS                   3000      3000    at a session's end: wait this long at most for
//                                                acks and the user's own last message
//   TEXT_CHARS                 64        64      length of each message's text
// Thresholds: see lib/config.js (ACK_P95_MS, ACK_P99_MS, DELIVERY_P95_MS, DELIVERY_P99_MS,
// MIN_DELIVERY_RATIO, MIN_ACK_SUCCESS, MAX_WS_ERROR_RATE).
import { sleep } from 'k6';
import exec from 'k6/execution';
import { commonThresholds, envInt, jitter, newRunId, secs, wsUrl, URLS } from './lib/config.js';
import { backoffAfterFailures, recordDelivery, SeqTracker, Session } from './lib/switchyard.js';
import { roomResets } from './lib/metrics.js';

const VUS = envInt('VUS', 100, 6);
const DURATION_S = envInt('DURATION_S', 60, 12);
const ROOM_SIZE = Math.max(1, envInt('ROOM_SIZE', 5, 3));
const MSG_INTERVAL_MS = envInt('MSG_INTERVAL_MS', 2000, 500);
const SESSION_S = envInt('SESSION_S', 30, 60);
const RAMP_S = envInt('RAMP_S', 10, 2);
const DRAIN_MS = envInt('DRAIN_MS', 3000);
const TEXT_CHARS = envInt('TEXT_CHARS', 64);

export const options = {
  scenarios: {
    chat: {
      executor: 'constant-vus',
      vus: VUS,
      duration: secs(DURATION_S),
      gracefulStop: secs(DRAIN_MS / 1000 + 10),
    },
  },
  thresholds: commonThresholds(),
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
};

const TEXT = 'x'.repeat(TEXT_CHARS);

export function setup() {
  console.log(
    `chat: ${VUS} users in ${Math.ceil(VUS / ROOM_SIZE)} rooms of ${ROOM_SIZE}, a message every ~${MSG_INTERVAL_MS} ms each, ${DURATION_S} s, nodes ${URLS.join(' ')}`,
  );
  return { t0: Date.now(), runId: newRunId() };
}

export default function (ctx) {
  const vu = exec.vu.idInTest;
  const iter = exec.vu.iterationInScenario;
  const testEnd = ctx.t0 + DURATION_S * 1000;
  // Sessions end early enough for their drain to fit in the test.
  const lastEnd = testEnd - DRAIN_MS - 1000;
  if (iter === 0) sleep((RAMP_S * (vu - 1)) / VUS); // spread the first handshakes
  if (Date.now() > lastEnd - 1000) {
    sleep(Math.max(1, (testEnd - Date.now()) / 1000)); // idle until the scenario ends
    return;
  }

  backoffAfterFailures();
  const roomId = `chat-${ctx.runId}-${Math.floor((vu - 1) / ROOM_SIZE)}`;
  const user = `chat-${ctx.runId}-${vu}`;
  const sessionEnd = Math.min(lastEnd, Date.now() + jitter(SESSION_S * 1000, 0.25));
  let tracker = null;
  let ownFinalSeq = 0; // seq of this session's last acknowledged message
  let stopped = false;
  let finalized = false;
  const finalize = () => {
    if (finalized || !tracker) return;
    finalized = true;
    // Delivery is in seq order, so everything up to the highest seq seen must have arrived.
    tracker.finalize(Math.max(ownFinalSeq, tracker.maxSeen));
  };

  const s = new Session({
    url: wsUrl(vu - 1 + iter),
    user,
    name: `Chat user ${vu}`,
    maxLifetimeMs: sessionEnd - Date.now() + DRAIN_MS + 10000,
    on: {
      welcome: () => s.request({ type: 'join-room', roomId }),
      'room-joined': (msg) => {
        if (tracker) return;
        tracker = new SeqTracker(msg.seq);
        const sendOne = () => {
          if (stopped) return;
          s.message(roomId, TEXT, { vu });
          s.after(jitter(MSG_INTERVAL_MS), sendOne);
        };
        s.after(jitter(MSG_INTERVAL_MS), sendOne);
        s.after(sessionEnd - Date.now(), finish);
      },
      'new-message': (msg) => {
        if (tracker && msg.roomId === roomId) recordDelivery(tracker, msg);
      },
      'room-reset': (msg) => {
        roomResets.add(1);
        if (tracker) tracker.reset(msg.seq);
      },
    },
    onAck: (msg) => {
      if (msg.success && msg.seq > ownFinalSeq) ownFinalSeq = msg.seq;
    },
    onEnd: finalize,
  });

  function finish() {
    stopped = true;
    // All acks in, and our own last message delivered back to us (it comes after every earlier
    // seq of the room), or DRAIN_MS passed.
    s.waitUntil(
      () => s.pending.size === 0 && tracker.hw >= ownFinalSeq,
      DRAIN_MS,
      () => {
        finalize();
        s.request({ type: 'leave-room', roomId });
        s.after(100, () => s.close());
      },
    );
  }
}
