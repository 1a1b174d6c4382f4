// presence.js: join/leave churn, watched.
//
// Watchers join every room at the start and stay. Churners connect as a fresh user, then for a
// few cycles: join a room, send a durable "hello", stay a moment, send a durable "bye", and leave
// (`leave-room`); every other session ends its last cycle by dropping the connection instead, so
// a disconnect must produce the presence:leave too. Watchers count, per churning user, the
// hellos and byes (durable, seq-checked: what must have happened) against the presence:join and
// presence:leave they saw, and at the end compare the member list they built from events with
// `presence:sync`.
//
// Measures: presence_join_seen / presence_leave_seen (Rates: each join/leave a watcher had to
// see), presence_consistent (watcher's list == presence:sync), presence_members_ok (a churner's
// room-joined lists every watcher), presence_join_latency (member.joinedAt -> presence:join;
// same clock on loopback only), presence_leave_latency ("bye" sent -> presence:leave, which
// includes the bye's ack round trip), no duplicate join or unknown leave, plus the shared ack and
// delivery metrics on the hello/bye messages.
//
// Parameters (env):            default   SMOKE=1
//   ROOMS                      10        2       rooms
//   WATCHERS_PER_ROOM          3         2       watchers in each room
//   CHURNERS                   50        4       churning VUs (one connection at a time each)
//   CYCLES                     3         2       join/leave cycles per connection
//   HOLD_MS                    2000      600     mean time in the room per cycle (+-50%)
//   DURATION_S                 60        14      test length
//   DRAIN_MS                   3000      2000    quiet time between the last churn and the checks
//   PRESENCE_P95_MS            500       500     threshold on both presence latencies (p95)
import { sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import { commonThresholds, envInt, jitter, newRunId, secs, wsUrl, URLS } from './lib/config.js';
import { backoffAfterFailures, recordDelivery, SeqTracker, Session } from './lib/switchyard.js';
import { roomResets } from './lib/metrics.js';

const ROOMS = Math.max(1, envInt('ROOMS', 10, 2));
const WATCHERS_PER_ROOM = Math.max(1, envInt('WATCHERS_PER_ROOM', 3, 2));
const CHURNERS = Math.max(1, envInt('CHURNERS', 50, 4));
const CYCLES = Math.max(1, envInt('CYCLES', 3, 2));
const HOLD_MS = envInt('HOLD_MS', 2000, 600);
const DURATION_S = envInt('DURATION_S', 60, 14);
const DRAIN_MS = envInt('DRAIN_MS', 3000, 2000);
const PRESENCE_P95_MS = envInt('PRESENCE_P95_MS', 500);

const WATCHERS = ROOMS * WATCHERS_PER_ROOM;
const CHURN_START_S = 2;
// Churners are gone by CHECK_AT (ms after t0); watchers check at CHECK_AT + DRAIN_MS.
const CHURN_END_MS = DURATION_S * 1000 - 2000 - DRAIN_MS;

const joinSeen = new Rate('presence_join_seen');
const leaveSeen = new Rate('presence_leave_seen');
const consistent = new Rate('presence_consistent');
const membersOk = new Rate('presence_members_ok');
const joinLatency = new Trend('presence_join_latency', true);
const leaveLatency = new Trend('presence_leave_latency', true);
const dupJoins = new Counter('presence_duplicate_joins');
const unknownLeaves = new Counter('presence_unknown_leaves');

export const options = {
  scenarios: {
    watchers: {
      executor: 'per-vu-iterations',
      exec: 'watcher',
      vus: WATCHERS,
      iterations: 1,
      maxDuration: secs(DURATION_S + 30),
    },
    churners: {
      executor: 'constant-vus',
      exec: 'churner',
      vus: CHURNERS,
      startTime: secs(CHURN_START_S),
      duration: secs(CHURN_END_MS / 1000 - CHURN_START_S),
      gracefulStop: '10s',
    },
  },
  thresholds: commonThresholds({
    presence_join_seen: ['rate>0.99'],
    presence_leave_seen: ['rate>0.99'],
    presence_consistent: ['rate>0.99'],
    presence_members_ok: ['rate>0.99'],
    presence_join_latency: [`p(95)<${PRESENCE_P95_MS}`],
    presence_leave_latency: [`p(95)<${PRESENCE_P95_MS}`],
    presence_duplicate_joins: ['count<1'],
    presence_unknown_leaves: ['count<1'],
  }),
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  if (CHURN_END_MS / 1000 - CHURN_START_S < 3) throw new Error('DURATION_S is too short');
  console.log(
    `presence: ${ROOMS} rooms x ${WATCHERS_PER_ROOM} watchers, ${CHURNERS} churners x ${CYCLES} cycles of ~${HOLD_MS} ms, ${DURATION_S} s, nodes ${URLS.join(' ')}`,
  );
  return { t0: Date.now(), runId: newRunId() };
}

const roomName = (ctx, r) => `presence-${ctx.runId}-${r}`;
const watcherId = (ctx, r, k) => `presence-${ctx.runId}-w-${r}-${k}`;
const churnPrefix = (ctx) => `presence-${ctx.runId}-c-`;

export function watcher(ctx) {
  const w = exec.scenario.iterationInTest;
  const r = w % ROOMS;
  const roomId = roomName(ctx, r);
  const prefix = churnPrefix(ctx);
  sleep(w / WATCHERS); // joins spread over the first second
  const checkAt = ctx.t0 + CHURN_END_MS + DRAIN_MS;

  const members = new Set();
  const stats = {}; // churning user -> {hellos, byes, joins, leaves}
  const byeAt = {}; // `${user}#${cycle}` -> bye sentAt
  const leftAt = {}; // `${user}#${leaveIndex}` -> time presence:leave was seen
  const st = (u) => stats[u] || (stats[u] = { hellos: 0, byes: 0, joins: 0, leaves: 0 });
  let tracker = null;
  let syncRef = 0;
  let finalRef = 0;

  const pairLeave = (key) => {
    if (byeAt[key] !== undefined && leftAt[key] !== undefined) {
      leaveLatency.add(Math.max(0, leftAt[key] - byeAt[key]));
      delete byeAt[key];
      delete leftAt[key];
    }
  };

  const s = new Session({
    url: wsUrl(w),
    user: watcherId(ctx, r, Math.floor(w / ROOMS)),
    name: `Watcher ${w}`,
    maxLifetimeMs: checkAt - Date.now() + 15000,
    on: {
      welcome: () => s.request({ type: 'join-room', roomId }),
      'room-joined': (msg) => {
        if (!tracker) {
          tracker = new SeqTracker(msg.seq);
          for (const mb of msg.members) members.add(mb.userId);
          s.after(checkAt - Date.now(), () => {
            syncRef = s.request({ type: 'presence:sync', roomId });
          });
        } else if (msg.ref === finalRef) {
          tracker.finalize(msg.seq);
          for (const u of Object.keys(stats)) {
            const x = stats[u];
            for (let i = 0; i < x.hellos; i++) joinSeen.add(i < x.joins);
            for (let i = 0; i < x.byes; i++) leaveSeen.add(i < x.leaves);
            if (x.joins < x.hellos || x.leaves < x.byes) {
              console.warn(`${roomId} watcher ${w}: ${u} ${JSON.stringify(x)}`);
            }
          }
          s.request({ type: 'leave-room', roomId });
          s.after(200, () => s.close());
        }
      },
      'presence:join': (msg) => {
        const u = msg.member.userId;
        if (members.has(u)) {
          dupJoins.add(1);
          console.warn(`${roomId} watcher ${w}: presence:join for ${u}, already a member`);
        }
        members.add(u);
        if (u.startsWith(prefix)) {
          st(u).joins += 1;
          joinLatency.add(Math.max(0, Date.now() - msg.member.joinedAt));
        }
      },
      'presence:leave': (msg) => {
        const u = msg.userId;
        if (!members.has(u)) {
          unknownLeaves.add(1);
          console.warn(`${roomId} watcher ${w}: presence:leave for ${u}, not a member`);
        }
        members.delete(u);
        if (u.startsWith(prefix)) {
          const key = `${u}#${st(u).leaves}`;
          st(u).leaves += 1;
          leftAt[key] = Date.now();
          pairLeave(key);
        }
      },
      'new-message': (msg) => {
        if (!tracker || finalRef || msg.roomId !== roomId) return;
        if (recordDelivery(tracker, msg) !== 'new' || !msg.data) return;
        if (msg.data.kind === 'hello') st(msg.userId).hellos += 1;
        if (msg.data.kind === 'bye') {
          const key = `${msg.userId}#${msg.data.cycle}`;
          st(msg.userId).byes += 1;
          byeAt[key] = msg.data.sentAt;
          pairLeave(key);
        }
      },
      'presence:sync': (msg) => {
        if (msg.ref !== syncRef) return;
        const theirs = msg.members.map((mb) => mb.userId).sort();
        const ours = Array.from(members).sort();
        const same = theirs.length === ours.length && theirs.every((u, i) => u === ours[i]);
        consistent.add(same);
        if (!same) {
          console.warn(
            `${roomId} watcher ${w}: members from events ${JSON.stringify(ours)} != presence:sync ${JSON.stringify(theirs)}`,
          );
        }
        // Joining again answers the room's final seq (and sends no second presence:join).
        finalRef = s.request({ type: 'join-room', roomId });
      },
      'room-reset': (msg) => {
        roomResets.add(1);
        if (tracker) tracker.reset(msg.seq);
      },
    },
  });
}

export function churner(ctx) {
  const vu = exec.vu.idInTest;
  const iter = exec.vu.iterationInScenario;
  const churnEnd = ctx.t0 + CHURN_END_MS;
  if (Date.now() > churnEnd - HOLD_MS) {
    sleep(Math.max(1, (churnEnd - Date.now()) / 1000 + 1));
    return;
  }
  backoffAfterFailures();
  const user = `${churnPrefix(ctx)}${vu}-${iter}`;
  const dropConnection = iter % 2 === 1; // the last cycle ends with a disconnect, not a leave
  let cycle = -1;
  let roomId = '';
  let byeTemp = null;

  const s = new Session({
    url: wsUrl(vu + iter),
    user,
    name: `Churner ${vu}`,
    maxLifetimeMs: churnEnd - Date.now() + 5000,
    on: {
      welcome: () => nextCycle(),
      'room-joined': (msg) => {
        if (msg.roomId !== roomId) return;
        const r = Number(roomId.slice(roomId.lastIndexOf('-') + 1));
        const present = new Set(msg.members.map((mb) => mb.userId));
        let all = true;
        for (let k = 0; k < WATCHERS_PER_ROOM; k++) all = all && present.has(watcherId(ctx, r, k));
        membersOk.add(all);
        s.message(roomId, 'hello', { kind: 'hello', cycle });
        const hold = Math.min(jitter(HOLD_MS), Math.max(0, churnEnd - Date.now() - 500));
        s.after(hold, () => {
          byeTemp = s.message(roomId, 'bye', { kind: 'bye', cycle });
        });
      },
      'room-left': (msg) => {
        if (msg.roomId === roomId) nextCycle();
      },
    },
    onAck: (msg) => {
      if (msg.tempId !== byeTemp) return;
      byeTemp = null;
      if (cycle === CYCLES - 1 && dropConnection) s.close();
      else s.request({ type: 'leave-room', roomId });
    },
  });

  function nextCycle() {
    cycle += 1;
    if (cycle >= CYCLES || Date.now() > churnEnd - HOLD_MS / 2) {
      s.close();
      return;
    }
    roomId = roomName(ctx, (vu + iter + cycle) % ROOMS);
    s.request({ type: 'join-room', roomId });
  }
}
