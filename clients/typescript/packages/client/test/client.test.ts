import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SwitchyardClient, type SwitchyardClientOptions } from '../src/client.js';
import { isSwitchyardError, SwitchyardError } from '../src/errors.js';
import { FakeSwitchyardServer } from '../src/testing/index.js';
import type { ConnectionState, HistoryResetEvent, NewMessage } from '../src/index.js';

let server: FakeSwitchyardServer;
let client: SwitchyardClient;

/** Lets timers due within `ms` and every microtask in between run. */
const advance = (ms = 0) => vi.advanceTimersByTimeAsync(ms);

function makeClient(options: Partial<SwitchyardClientOptions> = {}): SwitchyardClient {
  client = new SwitchyardClient({ url: 'ws://gateway.test/ws', token: 'tok', WebSocket: server.WebSocket, ...options });
  return client;
}

async function connected(options: Partial<SwitchyardClientOptions> = {}): Promise<SwitchyardClient> {
  const c = makeClient(options);
  c.connect();
  await advance();
  expect(c.state).toBe('connected');
  return c;
}

/** Records the states a client goes through. */
function states(c: SwitchyardClient): ConnectionState[] {
  const seen: ConnectionState[] = [];
  c.on('state', (e) => seen.push(e.state));
  return seen;
}

beforeEach(() => {
  vi.useFakeTimers();
  server = new FakeSwitchyardServer({ userId: 'alice', name: 'Alice' });
});

afterEach(() => {
  client?.disconnect();
  vi.useRealTimers();
});

describe('connection', () => {
  it('connects with the token in the query and the JSON subprotocol', async () => {
    const c = makeClient();
    const seen = states(c);
    expect(c.state).toBe('disconnected');
    c.connect();
    await advance();
    expect(seen).toEqual(['connecting', 'connected']);
    expect(server.socket!.token).toBe('tok');
    expect(server.socket!.protocols).toEqual(['switchyard.v1.json']);
    expect(c.userId).toBe('alice');
    expect(c.getSnapshot().welcome?.node).toBe('fake-node');
  });

  it('creates no socket and no timer in the constructor', () => {
    makeClient();
    expect(server.sockets).toHaveLength(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('calls the token provider on every connect', async () => {
    let n = 0;
    const token = vi.fn(async () => `tok-${++n}`);
    const c = await connected({ token });
    await advance(2000);
    server.close(1011, 'oops');
    await advance(1250);
    expect(c.state).toBe('connected');
    expect(token).toHaveBeenCalledTimes(2);
    expect(server.sockets.map((s) => s.token)).toEqual(['tok-1', 'tok-2']);
  });

  it('gets a fresh token and reconnects at once on 4001', async () => {
    let n = 0;
    const c = await connected({ token: () => `tok-${++n}` });
    await advance(5000);
    server.close(4001, 'token expired');
    await advance(0);
    expect(c.state).toBe('connected');
    expect(server.socket!.token).toBe('tok-2');
  });

  it('reconnects at once on 1001 (drain) and resumes its rooms', async () => {
    const c = await connected();
    await c.join('lobby');
    server.deliverMessage('lobby', { userId: 'bob', text: 'hi' });
    await advance(5000);
    server.close(1001, 'node draining');
    await advance(0);
    expect(c.state).toBe('connected');
    const joins = server.receivedOf('join-room');
    expect(joins).toHaveLength(2);
    expect(joins[1]).toMatchObject({ roomId: 'lobby', sinceSeq: 1, epoch: 'epoch-1' });
  });

  it('backs off on 1001 when the connection did not last', async () => {
    const c = await connected();
    server.close(1001, 'node draining');
    await advance(0);
    expect(c.state).toBe('reconnecting');
    expect(c.getSnapshot().nextRetryAt).toBeGreaterThan(Date.now());
  });

  it.each([1000, 1002, 1003, 1007, 1008, 1009])('does not reconnect after close code %i', async (code) => {
    const c = await connected();
    const closes: number[] = [];
    c.on('close', (info) => closes.push(info.code));
    server.close(code, 'bye');
    await advance(0);
    expect(c.state).toBe('disconnected');
    expect(c.getSnapshot().lastError).toMatchObject({ code: 'closed', closeCode: code });
    expect(c.getSnapshot().lastClose).toMatchObject({ code, reason: 'bye', willReconnect: false });
    expect(closes).toEqual([code]);
    expect(c.userId).toBe('alice'); // the last connection's user, also while disconnected
    await advance(120_000);
    expect(server.sockets).toHaveLength(1);
  });

  it.each([1006, 1011, 1013, 4009])('reconnects with backoff after close code %i', async (code) => {
    const c = await connected();
    server.close(code);
    await advance(0);
    expect(c.state).toBe('reconnecting');
    expect(c.getSnapshot().lastClose).toMatchObject({ code, willReconnect: true });
    const delay = c.getSnapshot().lastClose!.delayMs!;
    expect(delay).toBeGreaterThanOrEqual(750);
    expect(delay).toBeLessThanOrEqual(1250);
    await advance(delay - 1);
    expect(server.sockets).toHaveLength(1);
    await advance(1);
    expect(server.sockets).toHaveLength(2);
    expect(c.state).toBe('connected');
  });

  it('grows the delay while attempts fail, and resets it after a success', async () => {
    const c = await connected({ reconnect: { jitter: 0 } });
    server.refuseConnections = 3;
    server.close(1011);
    await advance(0);
    expect(c.getSnapshot().lastClose!.delayMs).toBe(1000);
    await advance(1000); // refused
    expect(c.getSnapshot().lastClose!.delayMs).toBe(2000);
    expect(c.getSnapshot().attempt).toBe(2);
    await advance(2000); // refused
    expect(c.getSnapshot().lastClose!.delayMs).toBe(4000);
    await advance(4000); // refused
    expect(c.getSnapshot().lastClose!.delayMs).toBe(8000);
    await advance(8000); // accepted
    expect(c.state).toBe('connected');
    expect(c.getSnapshot().attempt).toBe(0);
    server.close(1011);
    await advance(0);
    expect(c.getSnapshot().lastClose!.delayMs).toBe(1000);
  });

  it('uses "reconnecting" after a loss and "connecting" after an explicit connect', async () => {
    const c = await connected({ reconnect: { jitter: 0 } });
    const seen = states(c);
    server.close(1011);
    await advance(1000);
    c.disconnect();
    c.connect();
    await advance(0);
    expect(seen).toEqual(['reconnecting', 'connected', 'disconnected', 'connecting', 'connected']);
  });

  it('gives up on a silent connection after a ping without answer, then reconnects', async () => {
    server.autoReply = false;
    const c = await connected({ reconnect: { jitter: 0 } });
    await advance(25_000);
    expect(server.receivedOf('ping')).toHaveLength(1);
    await advance(4_999);
    expect(c.state).toBe('connected');
    await advance(1);
    expect(c.state).toBe('reconnecting');
    expect(c.getSnapshot().lastClose).toMatchObject({ code: 4000, reason: 'heartbeat timeout' });
    expect(server.sockets[0]!.clientClose?.code).toBe(4000);
    await advance(1000);
    expect(c.state).toBe('connected');
  });

  it('stays connected while pongs come back', async () => {
    const c = await connected();
    await advance(25_000 * 4);
    expect(server.receivedOf('ping')).toHaveLength(4);
    expect(c.state).toBe('connected');
    expect(server.sockets).toHaveLength(1);
  });

  it('pings at the server heartbeat when it is shorter', async () => {
    server.heartbeatMs = 10_000;
    await connected();
    await advance(20_000);
    expect(server.receivedOf('ping')).toHaveLength(2);
  });

  it('gives up on a handshake without welcome', async () => {
    server.autoWelcome = false;
    const c = makeClient({ connectTimeoutMs: 3000 });
    c.connect();
    await advance(2999);
    expect(c.state).toBe('connecting');
    await advance(1);
    expect(c.state).toBe('reconnecting');
  });

  it('retries when the token provider fails, with the error in the snapshot', async () => {
    let calls = 0;
    const c = makeClient({
      reconnect: { jitter: 0 },
      token: async () => {
        calls += 1;
        if (calls === 1) throw new Error('auth service down');
        return 'ok';
      },
    });
    c.connect();
    await advance(0);
    expect(c.state).toBe('reconnecting');
    expect(c.getSnapshot().lastError).toMatchObject({ code: 'token' });
    await advance(1000);
    expect(c.state).toBe('connected');
    expect(c.getSnapshot().lastError).toBeUndefined();
  });

  it.each([
    ['token', 'tok'],
    ['url', 'ws://late.test/ws'],
  ] as const)('does not open a socket when disconnected while the %s is fetched', async (option, value) => {
    let release!: (v: string) => void;
    const c = makeClient({ [option]: () => new Promise<string>((r) => (release = r)) });
    c.connect();
    c.disconnect();
    release(value);
    await advance(0);
    expect(server.sockets).toHaveLength(0);
    expect(c.state).toBe('disconnected');
  });

  it('opens one socket across connect/disconnect/connect in one tick (StrictMode)', async () => {
    const c = makeClient();
    c.connect();
    c.disconnect();
    c.connect();
    await advance(0);
    expect(server.sockets).toHaveLength(1);
    expect(c.state).toBe('connected');
  });

  it('dispose() fails waiting sends, forgets rooms and handlers, and leaves no timer', async () => {
    const c = makeClient();
    const states: string[] = [];
    c.on('state', (e) => states.push(e.state));
    void c.join('lobby');
    const p = c.sendMessage('lobby', 'never sent').catch((e: unknown) => e);
    c.dispose();
    expect(await p).toMatchObject({ code: 'closed' });
    expect(c.getRooms()).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
    c.connect();
    await advance(0);
    expect(states).toEqual([]); // handlers were removed
    expect(server.received).toEqual([]); // no room to rejoin, nothing to flush
  });

  it('reconnect() makes a new connection with a fresh token', async () => {
    let n = 0;
    const c = await connected({ token: () => `tok-${++n}` });
    c.reconnect();
    await advance(0);
    expect(c.state).toBe('connected');
    expect(server.sockets.map((s) => s.token)).toEqual(['tok-1', 'tok-2']);
    expect(server.sockets[0]!.clientClose?.code).toBe(1000);
  });

  it('reports a missing WebSocket implementation', async () => {
    const c = new SwitchyardClient({ url: 'ws://x/ws', token: 't' });
    const hadGlobal = 'WebSocket' in globalThis;
    const saved = (globalThis as { WebSocket?: unknown }).WebSocket;
    delete (globalThis as { WebSocket?: unknown }).WebSocket;
    try {
      c.connect();
      await advance(0);
      expect(c.state).toBe('disconnected');
      expect(c.getSnapshot().lastError?.message).toMatch(/WebSocket/);
    } finally {
      if (hadGlobal) (globalThis as { WebSocket?: unknown }).WebSocket = saved;
    }
  });

  it('accepts http(s) URLs and refuses other schemes', () => {
    expect(() => new SwitchyardClient({ url: 'ftp://x/ws', token: 't' })).toThrow(TypeError);
    const c = new SwitchyardClient({ url: 'https://x.test/ws', token: 't', WebSocket: server.WebSocket });
    c.connect();
    return advance(0).then(() => {
      expect(server.socket!.url.startsWith('wss://x.test/ws?token=')).toBe(true);
      c.disconnect();
    });
  });

  it('calls a URL provider on every connect, e.g. to try the next node', async () => {
    const nodes = ['ws://node-a.test/ws', 'http://node-b.test/ws'];
    let n = 0;
    const url = vi.fn(async () => nodes[n++ % nodes.length]!);
    const c = makeClient({ url, reconnect: { jitter: 0 } });
    expect(url).not.toHaveBeenCalled(); // the constructor has no side effects
    c.connect();
    await advance(0);
    expect(c.state).toBe('connected');
    server.close(1011, 'node gone');
    await advance(1000);
    expect(c.state).toBe('connected');
    expect(url).toHaveBeenCalledTimes(2);
    expect(server.sockets.map((s) => s.url.replace(/\?.*$/, ''))).toEqual(['ws://node-a.test/ws', 'ws://node-b.test/ws']);
    expect(server.sockets.every((s) => s.token === 'tok')).toBe(true);
  });

  it('retries with backoff when the URL provider fails or gives an invalid URL', async () => {
    const answers: Array<() => string> = [
      () => {
        throw new Error('discovery down');
      },
      () => 'ftp://nope.test/ws',
      () => 'ws://ok.test/ws',
    ];
    let calls = 0;
    const c = makeClient({ reconnect: { jitter: 0 }, url: () => answers[calls++]!() });
    c.connect();
    await advance(0);
    expect(c.state).toBe('reconnecting');
    expect(c.getSnapshot().lastError).toMatchObject({ code: 'connection_lost' });
    expect(c.getSnapshot().lastError?.message).toMatch(/discovery down/);
    await advance(1000);
    expect(c.state).toBe('reconnecting');
    expect(c.getSnapshot().lastError?.message).toMatch(/scheme must be ws/);
    await advance(2000);
    expect(c.state).toBe('connected');
    expect(server.sockets).toHaveLength(1);
    expect(server.socket!.url.startsWith('ws://ok.test/ws?token=')).toBe(true);
  });
});

describe('acks and the offline queue', () => {
  it('resolves sendMessage with the ack', async () => {
    const c = await connected();
    await c.join('lobby');
    const ack = await c.sendMessage('lobby', 'hello', { x: 1 }, { tempId: 't-1' });
    expect(ack).toMatchObject({ type: 'ack', success: true, tempId: 't-1', seq: 1 });
    expect(server.receivedOf('message')[0]).toMatchObject({ roomId: 'lobby', tempId: 't-1', text: 'hello', data: { x: 1 } });
  });

  it('rejects with the server error code and retryAfterMs', async () => {
    server.autoReply = false;
    const c = await connected();
    const p = c.sendMessage('lobby', 'hello', undefined, { tempId: 't-1' });
    await advance(0);
    const sent = server.receivedOf('message')[0]!;
    server.push({
      type: 'ack',
      tempId: 't-1',
      success: false,
      error: { code: 'rate_limited', message: 'slow down', retryAfterMs: 250 },
      ref: sent.ref!,
    });
    const error = await p.catch((e: unknown) => e);
    expect(isSwitchyardError(error)).toBe(true);
    expect(error).toMatchObject({ code: 'rate_limited', retryAfterMs: 250, tempId: 't-1', roomId: 'lobby', fromServer: true });
    expect((error as SwitchyardError).retryable).toBe(true);
  });

  it('rejects with timeout when no ack comes', async () => {
    server.autoReply = false;
    const c = await connected({ ackTimeoutMs: 2000, pingIntervalMs: 0 });
    const p = c.sendMessage('lobby', 'hello');
    const result = p.catch((e: unknown) => e);
    await advance(2000);
    expect(await result).toMatchObject({ code: 'timeout' });
    expect(c.getOutboxSnapshot()).toEqual({ queued: 0, inflight: 0 });
  });

  it('queues while offline and flushes on connect with the same tempId, after the join', async () => {
    const c = makeClient();
    void c.join('lobby');
    const p1 = c.sendMessage('lobby', 'one', undefined, { tempId: 'a' });
    const p2 = c.sendMessage('lobby', 'two', undefined, { tempId: 'b' });
    expect(c.getOutboxSnapshot()).toEqual({ queued: 2, inflight: 0 });
    c.connect();
    await advance(0);
    expect(await p1).toMatchObject({ tempId: 'a', seq: 1 });
    expect(await p2).toMatchObject({ tempId: 'b', seq: 2 });
    expect(server.received.map((m) => m.type)).toEqual(['join-room', 'message', 'message']);
    expect(server.receivedOf('message').map((m) => m.tempId)).toEqual(['a', 'b']);
    // one frame: the join and both messages were batched
    expect(server.socket!.frames).toHaveLength(1);
  });

  it('fails the oldest queued send at the bound', async () => {
    const c = makeClient({ maxQueueSize: 2 });
    const p1 = c.sendMessage('lobby', 'one').catch((e: unknown) => e);
    const p2 = c.sendMessage('lobby', 'two');
    const p3 = c.sendMessage('lobby', 'three');
    expect(await p1).toMatchObject({ code: 'queue_full' });
    expect(c.getOutboxSnapshot().queued).toBe(2);
    void p2.catch(() => undefined);
    void p3.catch(() => undefined);
  });

  it('refuses the new send at the bound with queueOverflow "reject-new"', async () => {
    const c = makeClient({ maxQueueSize: 1, queueOverflow: 'reject-new' });
    const p1 = c.sendMessage('lobby', 'one');
    const p2 = c.sendMessage('lobby', 'two').catch((e: unknown) => e);
    expect(await p2).toMatchObject({ code: 'queue_full' });
    void p1.catch(() => undefined);
  });

  it('fails queued sends older than maxQueueAgeMs, even while offline', async () => {
    const c = makeClient({ maxQueueAgeMs: 60_000 });
    const p1 = c.sendMessage('lobby', 'old').catch((e: unknown) => e);
    await advance(30_000);
    const p2 = c.sendMessage('lobby', 'young').catch((e: unknown) => e);
    await advance(30_000);
    expect(await p1).toMatchObject({ code: 'queue_expired' });
    expect(c.getOutboxSnapshot().queued).toBe(1);
    await advance(30_000);
    expect(await p2).toMatchObject({ code: 'queue_expired' });
  });

  it('resends sends in flight after a reconnect, with the same tempId, and the server answers once', async () => {
    const c = await connected({ reconnect: { jitter: 0 } });
    await c.join('lobby');
    server.autoReply = false; // the ack is lost with the connection
    const p = c.sendMessage('lobby', 'hello', undefined, { tempId: 'x' });
    await advance(0);
    expect(c.getOutboxSnapshot()).toEqual({ queued: 0, inflight: 1 });
    server.close(1006);
    await advance(0);
    expect(c.getOutboxSnapshot()).toEqual({ queued: 1, inflight: 0 });
    server.autoReply = true;
    await advance(1000);
    const ack = await p;
    expect(ack.tempId).toBe('x');
    const sends = server.receivedOf('message');
    expect(sends.map((m) => m.tempId)).toEqual(['x', 'x']);
  });

  it('returns the pending promise for a duplicate tempId', async () => {
    const c = makeClient();
    const p1 = c.sendMessage('lobby', 'one', undefined, { tempId: 'same' });
    const p2 = c.sendMessage('lobby', 'one', undefined, { tempId: 'same' });
    expect(p2).toBe(p1);
    expect(c.isPending('lobby', 'same')).toBe(true);
    void p1.catch(() => undefined);
  });

  it('validates arguments', async () => {
    const c = makeClient();
    await expect(c.sendMessage('bad room!', 'x')).rejects.toMatchObject({ code: 'invalid' });
    await expect(c.sendMessage('lobby', '')).rejects.toMatchObject({ code: 'invalid' });
    await expect(c.join('user:bob'.repeat(30))).rejects.toMatchObject({ code: 'invalid' });
    await expect(c.sendMessage('lobby', 'x'.repeat(70_000))).rejects.toMatchObject({ code: 'too_large' });
    expect(() => c.moveCursor('lobby', Number.NaN, 0)).toThrow(SwitchyardError);
  });

  it('publishes events with acks', async () => {
    const c = await connected();
    await c.subscribe('board');
    const events: unknown[] = [];
    c.on('event', (e) => events.push(e.data));
    const ack = await c.publish('board', 'task-updated', { id: 7 });
    expect(ack.success).toBe(true);
    await advance(0);
    expect(events).toEqual([{ id: 7 }]);
  });
});

describe('rooms, resume and de-duplication', () => {
  it('resumes with sinceSeq and epoch and drops seqs already seen', async () => {
    const c = await connected({ reconnect: { jitter: 0 } });
    const got: number[] = [];
    c.on('new-message', (m) => got.push(m.seq));
    await c.join('lobby');
    server.deliverMessage('lobby', { userId: 'bob', text: 'one' });
    server.deliverMessage('lobby', { userId: 'bob', text: 'two' });
    await advance(0);
    server.close(1011);
    await advance(0);
    // a message while we are away, kept in the history
    const room = server.room('lobby');
    room.seq += 1;
    room.history.push({ ...room.history[1]!, seq: 3, id: 'm3', text: 'three' });
    await advance(1000);
    expect(server.receivedOf('join-room')[1]).toMatchObject({ sinceSeq: 2, epoch: 'epoch-1' });
    // a duplicate of seq 2 arrives too: it must be dropped
    server.push({ ...(room.history[1] as NewMessage) });
    await advance(0);
    expect(got).toEqual([1, 2, 3]);
    expect(c.getRoom('lobby')?.position).toEqual({ sinceSeq: 3, epoch: 'epoch-1' });
  });

  it('emits history-reset and forgets seqs on room-reset', async () => {
    const c = await connected();
    const resets: HistoryResetEvent[] = [];
    const got: number[] = [];
    c.on('history-reset', (e) => resets.push(e));
    c.on('new-message', (m) => got.push(m.seq));
    await c.join('lobby');
    server.deliverMessage('lobby', { userId: 'bob', text: 'one' });
    await advance(0);
    server.resetRoom('lobby');
    server.deliverMessage('lobby', { userId: 'bob', text: 'new one' });
    await advance(0);
    expect(resets).toEqual([{ roomId: 'lobby', reason: 'room-reset', epoch: 'epoch-2', seq: 0 }]);
    expect(got).toEqual([1, 1]);
  });

  it('emits history-reset when a resume is not recovered', async () => {
    const c = await connected({ reconnect: { jitter: 0 } });
    const resets: HistoryResetEvent[] = [];
    c.on('history-reset', (e) => resets.push(e));
    await c.join('lobby');
    server.deliverMessage('lobby', { userId: 'bob', text: 'one' });
    await advance(0);
    server.close(1011);
    await advance(0);
    server.deliverMessage('lobby', { userId: 'bob', text: 'missed' }); // nobody is connected
    server.forgetHistory('lobby');
    await advance(1000);
    expect(resets).toEqual([{ roomId: 'lobby', reason: 'not-recovered', epoch: 'epoch-1', seq: 2 }]);
  });

  it('emits history-reset with epoch-changed when the epoch moved while away', async () => {
    const c = await connected({ reconnect: { jitter: 0 } });
    const resets: HistoryResetEvent[] = [];
    c.on('history-reset', (e) => resets.push(e));
    await c.join('lobby');
    server.close(1011);
    await advance(0);
    server.room('lobby').epoch = 'epoch-new';
    await advance(1000);
    expect(resets.map((r) => r.reason)).toEqual(['epoch-changed']);
  });

  it('reference counts joins: one server join for many holders', async () => {
    const c = await connected();
    const a = c.join('lobby');
    const b = c.join('lobby');
    expect((await a).roomId).toBe('lobby');
    expect((await b).roomId).toBe('lobby');
    const third = await c.join('lobby'); // already joined: answered at once
    expect(third.members.map((m) => m.userId)).toEqual(['alice']);
    expect(server.receivedOf('join-room')).toHaveLength(1);
    c.leave('lobby');
    c.leave('lobby');
    await advance(0);
    expect(server.receivedOf('leave-room')).toHaveLength(0);
    c.leave('lobby');
    await advance(0);
    expect(server.receivedOf('leave-room')).toHaveLength(1);
    expect(c.getRoom('lobby')).toBeUndefined();
  });

  it('coalesces a leave and a join in the same tick (StrictMode double effects)', async () => {
    const c = await connected();
    void c.join('lobby');
    c.leave('lobby');
    void c.join('lobby');
    await advance(0);
    expect(server.received.map((m) => m.type)).toEqual(['join-room']);
    c.leave('lobby');
    void c.join('lobby');
    await advance(0);
    expect(server.received.map((m) => m.type)).toEqual(['join-room']);
  });

  it('keeps frames in order around joins and leaves', async () => {
    const c = await connected();
    await c.join('lobby');
    void c.sendMessage('lobby', 'bye').catch(() => undefined);
    c.leave('lobby');
    await advance(0);
    expect(server.received.map((m) => m.type)).toEqual(['join-room', 'message', 'leave-room']);
  });

  it('moves from joined to subscribed with leave-room + subscribe from its position', async () => {
    const c = await connected();
    await c.join('lobby');
    await c.subscribe('lobby'); // joined covers subscribed
    expect(server.receivedOf('subscribe')).toHaveLength(0);
    server.deliverMessage('lobby', { userId: 'bob', text: 'x' });
    await advance(0);
    c.leave('lobby');
    await advance(0);
    expect(server.received.slice(-2)).toMatchObject([
      { type: 'leave-room', roomId: 'lobby' },
      { type: 'subscribe', roomId: 'lobby', sinceSeq: 1, epoch: 'epoch-1' },
    ]);
    expect(c.getRoom('lobby')?.membership).toBe('subscribed');
    c.unsubscribe('lobby');
    await advance(0);
    expect(server.received.at(-1)).toMatchObject({ type: 'unsubscribe', roomId: 'lobby' });
  });

  it('rejects join with the server error', async () => {
    server.autoReply = false;
    const c = await connected();
    const p = c.join('secret');
    await advance(0);
    const sent = server.receivedOf('join-room')[0]!;
    server.push({ type: 'error', code: 'forbidden', message: 'not for you', ref: sent.ref! });
    await expect(p).rejects.toMatchObject({ code: 'forbidden', roomId: 'secret', fromServer: true });
  });

  it('asks again for a room refused as unavailable, after retryAfterMs, while it is wanted', async () => {
    server.autoReply = false;
    const c = await connected();
    const p = c.join('busy');
    await advance(0);
    const first = server.receivedOf('join-room')[0]!;
    server.push({ type: 'error', code: 'unavailable', message: 'the node is busy', ref: first.ref!, retryAfterMs: 1000 });
    await expect(p).rejects.toMatchObject({ code: 'unavailable', retryAfterMs: 1000 });
    await advance(999);
    expect(server.receivedOf('join-room')).toHaveLength(1);
    await advance(501);
    const joins = server.receivedOf('join-room');
    expect(joins).toHaveLength(2);
    expect(joins[1]).toMatchObject({ roomId: 'busy' });
    expect(joins[1]!.ref).not.toBe(first.ref);
    // Not for a refusal that would only repeat, nor for a room no longer wanted.
    server.push({ type: 'error', code: 'forbidden', message: 'no', ref: joins[1]!.ref! });
    await advance(5000);
    expect(server.receivedOf('join-room')).toHaveLength(2);
    c.join('busy').catch(() => {});
    await advance(0);
    const third = server.receivedOf('join-room')[2]!;
    server.push({ type: 'error', code: 'unavailable', message: 'busy', ref: third.ref!, retryAfterMs: 1000 });
    c.leave('busy');
    c.leave('busy');
    await advance(5000);
    expect(server.receivedOf('join-room')).toHaveLength(3);
  });

  it('keeps presence from room-joined, presence:join/leave and presence:sync', async () => {
    const c = await connected();
    const changes: string[][] = [];
    c.on('presence', (e) => changes.push(e.members.map((m) => m.userId)));
    await c.join('lobby');
    server.push({ type: 'presence:join', roomId: 'lobby', member: { userId: 'bob', joinedAt: Date.now() + 1 } });
    server.push({ type: 'presence:join', roomId: 'lobby', member: { userId: 'bob', joinedAt: Date.now() + 1 } }); // idempotent
    await advance(0);
    expect(c.getMembers('lobby').map((m) => m.userId)).toEqual(['alice', 'bob']);
    server.push({ type: 'presence:leave', roomId: 'lobby', userId: 'alice' });
    await advance(0);
    expect(c.getMembers('lobby').map((m) => m.userId)).toEqual(['bob']);
    const sync = await c.presenceSync('lobby');
    expect(sync.members.map((m) => m.userId)).toEqual(['alice']);
    expect(changes).toEqual([['alice'], ['alice', 'bob'], ['bob'], ['alice']]);
  });
});

describe('volatile messages, requests, encodings', () => {
  it('sends typing and cursors only when connected', async () => {
    const c = makeClient();
    expect(c.startTyping('lobby')).toBe(false);
    c.connect();
    await advance(0);
    expect(c.startTyping('lobby')).toBe(true);
    expect(c.moveCursor('lobby', 0.5, 0.25)).toBe(true);
    expect(c.leaveCursor('lobby')).toBe(true);
    expect(c.stopTyping('lobby')).toBe(true);
    await advance(0);
    expect(server.received).toEqual([
      { type: 'typing:start', roomId: 'lobby' },
      { type: 'cursor:move', roomId: 'lobby', x: 0.5, y: 0.25 },
      { type: 'cursor:leave', roomId: 'lobby' },
      { type: 'typing:stop', roomId: 'lobby' },
    ]);
  });

  it('correlates replies by ref, and errors reject', async () => {
    const c = await connected();
    const pong = await c.ping();
    expect(pong.type).toBe('pong');
    server.autoReply = false;
    const p = c.request({ type: 'presence:sync', roomId: 'user:x' });
    await advance(0);
    const ref = server.received.at(-1)!.ref!;
    server.push({ type: 'error', code: 'forbidden', message: 'reserved', ref });
    await expect(p).rejects.toMatchObject({ code: 'forbidden' });
  });

  it('rejects requests waiting when the connection drops', async () => {
    server.autoReply = false;
    const c = await connected();
    const p = c.ping();
    await advance(0);
    server.close(1011);
    await expect(p).rejects.toMatchObject({ code: 'connection_lost' });
  });

  it('speaks MessagePack when asked', async () => {
    const c = await connected({ protocol: 'msgpack' });
    expect(server.socket!.protocols).toEqual(['switchyard.v1.msgpack']);
    await c.join('lobby');
    const ack = await c.sendMessage('lobby', 'binary hello');
    expect(ack.success).toBe(true);
    expect(server.socket!.frames.every((f) => f instanceof Uint8Array)).toBe(true);
  });

  it('splits batches at maxBatch', async () => {
    const c = await connected({ maxBatch: 3 });
    for (let i = 0; i < 7; i++) c.moveCursor('lobby', i, i);
    await advance(0);
    expect(server.socket!.frames).toHaveLength(3);
    expect(server.receivedOf('cursor:move')).toHaveLength(7);
  });

  it('splits batches at maxFrameBytes', async () => {
    const c = await connected({ maxFrameBytes: 2000 });
    for (let i = 0; i < 4; i++) void c.sendMessage('lobby', 'x'.repeat(800)).catch(() => undefined);
    await advance(0);
    expect(server.socket!.frames).toHaveLength(2);
    for (const f of server.socket!.frames) expect((f as string).length).toBeLessThanOrEqual(2000);
  });

  it('keeps dispatching when a handler throws, and reports the error', async () => {
    const errors: unknown[] = [];
    const c = await connected({ onHandlerError: (e) => errors.push(e) });
    const seen: string[] = [];
    c.on('pong', () => {
      throw new Error('handler bug');
    });
    c.on('pong', () => seen.push('second'));
    await c.ping();
    expect(seen).toEqual(['second']);
    expect(errors).toMatchObject([{ message: 'handler bug' }]);
  });
});
