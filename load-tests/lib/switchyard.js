// A Switchyard connection for k6: handshake with a token, the JSON subprotocol, batched frames,
// refs, durable messages with tempIds and acks, timers tied to the connection, and the
// bookkeeping behind the shared metrics (see metrics.js).
import { sleep } from 'k6';
import exec from 'k6/execution';
import http from 'k6/http';
import { tokenFor } from './token.js';
import * as m from './metrics.js';

// k6 >= 1.2 has the module as k6/websockets; k6 1.0/1.1 only as k6/experimental/websockets.
let wsModule;
try {
  wsModule = require('k6/websockets');
} catch (e) {
  wsModule = require('k6/experimental/websockets');
}
const WebSocket = wsModule.WebSocket;

const SUBPROTOCOL = 'switchyard.v1.json';

// Per VU: sessions in a row that never got their welcome (refused handshake, node down).
let failedInARow = 0;
let diagnosed = false;
// Per VU: sessions opened so far. A user's tempIds must not repeat across its sessions (the same
// tempId in the same room within 5 minutes is a retry, acked again and not delivered).
let sessionsOpened = 0;

// k6 only says "bad handshake": ask once per VU, over plain HTTP, what the node answers.
function diagnoseHandshake(url, token) {
  if (diagnosed) return;
  diagnosed = true;
  const res = http.get(url.replace(/^ws/i, 'http'), {
    headers: { Authorization: `Bearer ${token}` },
    tags: { name: 'handshake-diagnosis' },
  });
  console.warn(`handshake to ${url} refused: HTTP ${res.status} ${String(res.body || '').slice(0, 200)}`);
}

// Call before opening a session in a loop: after failed ones, waits 0.25 s, 0.5 s, 1 s ... up
// to 5 s, so a refusing node is not hammered with handshakes.
export function backoffAfterFailures() {
  if (failedInARow > 0) sleep(Math.min(5, 0.25 * Math.pow(2, failedInARow - 1)));
}

function closeCodeOf(errorText) {
  const match = /close (\d{3,4})/.exec(String(errorText || ''));
  return match ? Number(match[1]) : 0;
}

// Session options:
//   url, user, name           where to connect and as whom
//   on: {type: fn(msg)}       handlers per server message type ('welcome', 'new-message', ...)
//   onAck(msg, sentAt)        after a successful or refused ack has been recorded
//   onEnd({unexpected, code}) once, when the socket is closed (or never opened)
//   maxLifetimeMs             safety net: the session is closed after this long whatever happens
//   expectedErrors            error codes that do not count as a session error
export class Session {
  constructor(opts) {
    this.url = opts.url;
    this.user = opts.user;
    this.on = opts.on || {};
    this.onAck = opts.onAck;
    this.onEnd = opts.onEnd;
    this.expectedErrors = opts.expectedErrors || [];
    this.timers = [];
    this.pending = new Map(); // tempId -> sentAt (ms)
    this.nextRef = 1;
    this.nextTemp = 1;
    this.tempPrefix = `${exec.vu.idInTest}.${++sessionsOpened}`;
    this.opened = false;
    this.welcomed = false;
    this.closing = false;
    this.ended = false;
    this.hadError = false;
    this.closeCode = 0;
    this.startedAt = Date.now();

    const tok = tokenFor(this.url, opts.user, opts.name || opts.user);
    if (!tok) {
      this.hadError = true;
      m.wsHandshakeFailures.add(1, { reason: 'token' });
      this.finish(false);
      return;
    }
    this.tokenExpMs = tok.expMs;
    this.token = tok.token;
    this.ws = new WebSocket(this.url, [SUBPROTOCOL], {
      headers: { Authorization: `Bearer ${tok.token}` },
    });
    this.ws.addEventListener('open', () => {
      this.opened = true;
    });
    this.ws.addEventListener('message', (e) => this.onFrame(e.data));
    this.ws.addEventListener('error', (e) => this.onError(e.error));
    this.ws.addEventListener('close', () => this.finish(!this.closing));
    if (opts.maxLifetimeMs) {
      this.after(opts.maxLifetimeMs, () => {
        console.warn(`${this.user}: session still open after ${opts.maxLifetimeMs} ms, closing it`);
        this.hadError = true;
        this.close();
      });
    }
  }

  onFrame(data) {
    if (typeof data !== 'string') {
      this.error('binary frame on the JSON subprotocol');
      return;
    }
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch (e) {
      this.error(`frame is not JSON: ${data.slice(0, 100)}`);
      return;
    }
    if (Array.isArray(parsed)) {
      for (const msg of parsed) this.dispatch(msg);
    } else {
      this.dispatch(parsed);
    }
  }

  dispatch(msg) {
    switch (msg.type) {
      case 'welcome':
        this.welcomed = true;
        this.welcome = msg;
        m.wsConnectTime.add(Date.now() - this.startedAt);
        break;
      case 'ack':
        this.recordAck(msg);
        break;
      case 'error':
        m.errorFrames.add(1, { code: String(msg.code) });
        if (this.expectedErrors.indexOf(msg.code) < 0) {
          this.hadError = true;
          console.warn(`${this.user}: error frame ${JSON.stringify(msg)}`);
        }
        break;
      default:
        break;
    }
    const handler = this.on[msg.type];
    if (handler) handler(msg);
  }

  recordAck(msg) {
    const key = String(msg.tempId);
    const sentAt = this.pending.get(key);
    if (sentAt === undefined) return; // a retry's repeated ack, or not ours
    this.pending.delete(key);
    const now = Date.now();
    m.ackLatency.add(now - sentAt);
    m.ackSuccess.add(msg.success === true);
    if (msg.success) {
      m.acksReceived.add(1);
    } else {
      const code = msg.error && msg.error.code ? String(msg.error.code) : 'unknown';
      m.acksRefused.add(1, { code });
      if (code !== 'rate_limited') console.warn(`${this.user}: refused ack ${JSON.stringify(msg)}`);
    }
    if (this.onAck) this.onAck(msg, sentAt);
  }

  onError(text) {
    const code = closeCodeOf(text);
    if (code) this.closeCode = code;
    if (this.closing) {
      // After our own close: the server should have answered with a close frame.
      if (code === 1006) m.wsCloseNotEchoed.add(1);
      return;
    }
    this.hadError = true;
    if (!this.opened) {
      m.wsHandshakeFailures.add(1, { reason: 'http' });
      diagnoseHandshake(this.url, this.token);
    } else {
      m.wsUnexpectedCloses.add(1, { code: String(code || 'unknown') });
      console.warn(`${this.user}: connection lost: ${text}`);
    }
  }

  error(text) {
    this.hadError = true;
    console.warn(`${this.user}: ${text}`);
  }

  finish(unexpected) {
    if (this.ended) return;
    this.ended = true;
    this.clearTimers();
    failedInARow = this.welcomed ? 0 : failedInARow + 1;
    if (unexpected && this.opened && this.closeCode === 0) {
      // Closed by the server with a clean close we did not ask for.
      this.hadError = true;
      m.wsUnexpectedCloses.add(1, { code: 'clean' });
    }
    m.wsErrors.add(this.hadError);
    if (this.onEnd) this.onEnd({ unexpected: unexpected && !this.closing, code: this.closeCode });
  }

  get isOpen() {
    return !this.ended && !this.closing && this.ws && this.ws.readyState === 1;
  }

  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  // Sends a request with a fresh ref and returns the ref.
  request(obj) {
    const ref = this.nextRef++;
    obj.ref = ref;
    this.send(obj);
    return ref;
  }

  // Sends a durable chat message; its ack is timed and counted. Returns the tempId.
  message(roomId, text, data) {
    const tempId = `${this.tempPrefix}.${this.nextTemp++}`;
    const sentAt = Date.now();
    const frame = { type: 'message', roomId, tempId, text };
    if (data !== undefined) frame.data = Object.assign({ sentAt }, data);
    if (!this.send(frame)) return null;
    this.pending.set(tempId, sentAt);
    m.messagesSent.add(1);
    return tempId;
  }

  every(ms, fn) {
    const id = setInterval(fn, ms);
    this.timers.push({ id, interval: true });
    return id;
  }

  after(ms, fn) {
    const id = setTimeout(fn, Math.max(0, ms));
    this.timers.push({ id, interval: false });
    return id;
  }

  clearTimers() {
    for (const t of this.timers) {
      if (t.interval) clearInterval(t.id);
      else clearTimeout(t.id);
    }
    this.timers = [];
  }

  // Calls `then(done)` once `cond()` holds or `timeoutMs` has passed (done = whether it held).
  waitUntil(cond, timeoutMs, then) {
    const deadline = Date.now() + timeoutMs;
    const check = () => {
      if (this.ended) return;
      const ok = cond();
      if (ok || Date.now() >= deadline) {
        clearInterval(id);
        then(ok);
      }
    };
    const id = this.every(25, check);
  }

  close() {
    if (this.ended || this.closing) return;
    this.closing = true;
    this.clearTimers();
    // Safety net: should the close handshake hang, the event loop still ends.
    this.timers.push({ id: setTimeout(() => this.finish(false), 5000), interval: false });
    if (this.ws) this.ws.close();
    else this.finish(false);
  }
}

// Per room and connection: which seqs arrived, against the range the connection must see (from
// its join position, exclusive, to a final seq known at the end).
export class SeqTracker {
  constructor(base) {
    this.reset(base);
  }

  reset(base) {
    this.base = base;
    this.hw = base; // every seq in (base, hw] has arrived
    this.ahead = new Set(); // arrived seqs above hw + 1
    this.maxSeen = base;
  }

  // Returns 'new', 'old' (at or below the join position), or 'dup'; counts the metrics.
  add(seq) {
    if (typeof seq !== 'number' || seq <= this.base) return 'old';
    if (seq <= this.hw || this.ahead.has(seq)) {
      m.deliveriesDuplicate.add(1);
      return 'dup';
    }
    if (seq < this.maxSeen) m.deliveriesOutOfOrder.add(1);
    if (seq > this.maxSeen) this.maxSeen = seq;
    if (seq === this.hw + 1) {
      this.hw = seq;
      while (this.ahead.has(this.hw + 1)) {
        this.ahead.delete(this.hw + 1);
        this.hw += 1;
      }
    } else {
      this.ahead.add(seq);
      if (this.ahead.size > 20000) {
        // A gap that never filled: stop holding every later seq for it.
        const lowest = Math.min.apply(null, Array.from(this.ahead));
        this.lost = (this.lost || 0) + (lowest - this.hw - 1);
        this.base += lowest - this.hw - 1; // the lost ones are counted separately
        this.hw = lowest - 1;
        this.add(lowest);
      }
    }
    return 'new';
  }

  receivedUpTo(upTo) {
    let n = Math.max(0, Math.min(this.hw, upTo) - this.base);
    for (const s of this.ahead) if (s <= upTo) n += 1;
    return n;
  }

  // Records delivery_ratio samples for (base, upTo]: one true per arrived seq, one false per
  // missing one. Call once per tracker, at the end.
  finalize(upTo) {
    const top = Math.max(upTo, this.base);
    const got = this.receivedUpTo(top);
    const expected = top - this.base + (this.lost || 0);
    const missing = Math.max(0, expected - got);
    m.deliveriesExpected.add(expected);
    m.deliveriesMissing.add(missing);
    for (let i = 0; i < got; i++) m.deliveryRatio.add(true);
    for (let i = 0; i < missing; i++) m.deliveryRatio.add(false);
    m.deliveriesDuplicate.add(0);
    m.deliveriesOutOfOrder.add(0);
    return { expected, got, missing };
  }
}

// Records a delivered `new-message`: counts it, its latency (from data.sentAt) and its seq.
export function recordDelivery(tracker, msg) {
  const verdict = tracker.add(msg.seq);
  if (verdict === 'new') {
    m.deliveriesReceived.add(1);
    if (msg.data && typeof msg.data.sentAt === 'number') {
      m.deliveryLatency.add(Date.now() - msg.data.sentAt);
    }
  }
  return verdict;
}
