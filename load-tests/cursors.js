// cursors.js: high-frequency cursor:move in small rooms, counted with conflation in mind.
//
// Every user moves its cursor MOVE_HZ times a second; x is the user's move counter and y the
// send time (ms), so a receiver can tell order and latency. The server conflates (per room and
// user only the newest queued position is sent) and may drop cursors for slow clients, so fewer
// moves arriving than were sent is not a failure. What must hold:
//   - positions from one user never go backwards (cursor_out_of_order = 0);
//   - the newest position always arrives: when movers stop, each sends a last move and then a
//     durable "final" message carrying that x; every receiver's last x for that user must equal
//     it (cursor_final_position);
//   - latency of what does arrive (cursor_latency, send -> receive).
// cursor_delivered_fraction (moves received / moves sent, per receiver and mover, in %) shows
// how much conflation did; it has no threshold. Movers also send a durable checkpoint message
// every CHECKPOINT_MS, which feeds the shared ack and delivery metrics.
//
// Parameters (env):            default   SMOKE=1
//   VUS                        50        6       users (one connection each)
//   ROOM_SIZE                  5         3       users per room
//   MOVE_HZ                    30        20      cursor moves per second per user (the node's
//                                                volatile budget is 60/s by default)
//   CHECKPOINT_MS              1000      1000    durable checkpoint message interval
//   DURATION_S                 60        12      test length
//   RAMP_S                     10        2       connections start spread over this long;
//                                                moving starts 1 s after
//   DRAIN_MS                   3000      2000    movers stop this long (+1 s) before the end
//   CURSOR_P95_MS              250       250     threshold on cursor_latency (p95)
import { sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import { commonThresholds, envInt, newRunId, secs, wsUrl, URLS } from './lib/config.js';
import { recordDelivery, SeqTracker, Session } from './lib/switchyard.js';
import { roomResets } from './lib/metrics.js';

const VUS = envInt('VUS', 50, 6);
const ROOM_SIZE = Math.max(2, envInt('ROOM_SIZE', 5, 3));
const MOVE_HZ = envInt('MOVE_HZ', 30, 20);
const CHECKPOINT_MS = envInt('CHECKPOINT_MS', 1000);
const DURATION_S = envInt('DURATION_S', 60, 12);
const RAMP_S = envInt('RAMP_S', 10, 2);
const DRAIN_MS = envInt('DRAIN_MS', 3000, 2000);
const CURSOR_P95_MS = envInt('CURSOR_P95_MS', 250);

const cursorLatency = new Trend('cursor_latency', true);
const movesSent = new Counter('cursor_moves_sent');
const movesReceived = new Counter('cursor_moves_received');
const finalPosition = new Rate('cursor_final_position');
const outOfOrder = new Counter('cursor_out_of_order');
const deliveredFraction = new Trend('cursor_delivered_fraction');
const colorChanges = new Counter('cursor_color_changes');

export const options = {
  scenarios: {
    cursors: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: secs(DURATION_S + 30),
    },
  },
  thresholds: commonThresholds({
    cursor_latency: [`p(95)<${CURSOR_P95_MS}`],
    cursor_final_position: ['rate>0.99'],
    cursor_out_of_order: ['count<1'],
    cursor_color_changes: ['count<1'],
    cursor_moves_received: ['count>0'],
  }),
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  if (MOVE_HZ > 60) console.warn('MOVE_HZ is over the default volatile budget (60/s): moves will be dropped');
  console.log(
    `cursors: ${VUS} users in rooms of ${ROOM_SIZE}, ${MOVE_HZ} moves/s each, ${DURATION_S} s, nodes ${URLS.join(' ')}`,
  );
  return { t0: Date.now(), runId: newRunId() };
}

export default function (ctx) {
  const idx = exec.scenario.iterationInTest; // 0 .. VUS-1
  const roomId = `cursors-${ctx.runId}-${Math.floor(idx / ROOM_SIZE)}`;
  const user = `cursors-${ctx.runId}-${idx}`;
  sleep((RAMP_S * idx) / VUS);
  const moveStart = ctx.t0 + RAMP_S * 1000 + 1000;
  const moveEnd = ctx.t0 + DURATION_S * 1000 - DRAIN_MS - 1000;
  const checkAt = ctx.t0 + DURATION_S * 1000 - 1000;

  let tracker = null;
  let finalRef = 0;
  let x = 0;
  const lastX = {}; // mover -> newest x received
  const received = {}; // mover -> moves received
  const colors = {}; // mover -> color
  const finals = {}; // mover -> {x, moves} from its durable "final" message

  const s = new Session({
    url: wsUrl(idx),
    user,
    name: `Cursor ${idx}`,
    maxLifetimeMs: checkAt - Date.now() + 15000,
    on: {
      welcome: () => s.request({ type: 'join-room', roomId }),
      'room-joined': (msg) => {
        if (!tracker) {
          tracker = new SeqTracker(msg.seq);
          s.after(moveStart - Date.now(), startMoving);
          s.after(checkAt - Date.now(), () => {
            finalRef = s.request({ type: 'join-room', roomId });
          });
        } else if (msg.ref === finalRef) {
          tracker.finalize(msg.seq);
          for (const mover of Object.keys(finals)) {
            const f = finals[mover];
            const ok = lastX[mover] === f.x;
            finalPosition.add(ok);
            if (!ok) console.warn(`${user}: last cursor of ${mover} is x=${lastX[mover]}, its final was x=${f.x}`);
            deliveredFraction.add((100 * (received[mover] || 0)) / Math.max(1, f.moves));
          }
          s.request({ type: 'leave-room', roomId });
          s.after(200, () => s.close());
        }
      },
      'cursor:move': (msg) => {
        if (msg.roomId !== roomId) return;
        const mover = msg.userId;
        movesReceived.add(1);
        cursorLatency.add(Math.max(0, Date.now() - msg.y));
        if (lastX[mover] !== undefined && msg.x <= lastX[mover]) outOfOrder.add(1);
        else lastX[mover] = msg.x;
        received[mover] = (received[mover] || 0) + 1;
        if (colors[mover] === undefined) colors[mover] = msg.color;
        else if (colors[mover] !== msg.color) colorChanges.add(1);
      },
      'new-message': (msg) => {
        if (!tracker || finalRef || msg.roomId !== roomId) return;
        if (recordDelivery(tracker, msg) !== 'new') return;
        if (msg.data && msg.data.kind === 'final' && msg.userId !== user) {
          finals[msg.userId] = { x: msg.data.x, moves: msg.data.moves };
        }
      },
      'room-reset': (msg) => {
        roomResets.add(1);
        if (tracker) tracker.reset(msg.seq);
      },
    },
    onEnd: () => {
      outOfOrder.add(0);
      colorChanges.add(0);
    },
  });

  function move() {
    x += 1;
    s.send({ type: 'cursor:move', roomId, x, y: Date.now() });
    movesSent.add(1);
  }

  function startMoving() {
    const mover = s.every(Math.max(1, Math.round(1000 / MOVE_HZ)), () => {
      if (Date.now() < moveEnd) {
        move();
        return;
      }
      clearInterval(mover);
      clearInterval(checkpoint);
      move(); // the last position, which conflation must never lose
      s.message(roomId, 'final', { kind: 'final', x, moves: x });
    });
    const checkpoint = s.every(CHECKPOINT_MS, () => {
      if (Date.now() < moveEnd) s.message(roomId, 'checkpoint', { kind: 'checkpoint', x });
    });
  }
}
