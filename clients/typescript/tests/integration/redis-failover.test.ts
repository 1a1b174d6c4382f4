/**
 * Two real nodes on one real Redis. A client on node A is in a room with a publisher on node B;
 * node A is killed (SIGKILL: no drain, no close frame); the client's `url` function sends it to
 * node B, where it resumes with `sinceSeq` and misses nothing.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { ClientPool, collect, nextEvent, uniq, userToken, wireLog, wireMessages } from '../support/clients.js';
import { sleep, startRedis, SwitchyardNode, waitFor, type RedisServer } from '../support/processes.js';

const secret = randomBytes(24).toString('hex');
let redis: RedisServer | undefined;
let nodeA: SwitchyardNode | undefined;
let nodeB: SwitchyardNode | undefined;
const pool = new ClientPool();

beforeAll(async () => {
  redis = await startRedis('failover-redis');
  const env = (id: string) => ({
    SWITCHYARD_BROKER: redis!.url,
    SWITCHYARD_JWT_SECRET: secret,
    SWITCHYARD_NODE_ID: id,
    SWITCHYARD_PRESENCE_TTL_S: '5',
    SWITCHYARD_RATE_PER_SEC: '1000',
    SWITCHYARD_RATE_BURST: '1000',
  });
  nodeA = await SwitchyardNode.start({ label: 'failover-node-a', env: env('node-a') });
  nodeB = await SwitchyardNode.start({ label: 'failover-node-b', env: env('node-b') });
});

afterEach(() => pool.disposeAll());

afterAll(async () => {
  await Promise.all([nodeA?.kill(), nodeB?.stop()]);
  await redis?.stop();
});

it('a client whose node is killed reconnects to the other node and misses nothing', async () => {
  const a = nodeA!;
  const b = nodeB!;
  const room = uniq('failover');
  const readerId = uniq('rae');
  const publisherId = uniq('pia');

  // No load balancer: the reader's url function goes through the nodes in turn, A first.
  const nodes = [a.wsUrl, b.wsUrl];
  const urlsTried: string[] = [];
  const wire = wireLog();
  const reader = pool.create({
    url: () => {
      const url = nodes[urlsTried.length % nodes.length]!;
      urlsTried.push(url);
      return url;
    },
    token: () => userToken(secret, readerId, 'Rae'),
    WebSocket: wire.WebSocket,
    reconnect: { minDelayMs: 200, maxDelayMs: 1000 },
  });
  const publisher = pool.create({ url: b.wsUrl, token: () => userToken(secret, publisherId, 'Pia') });
  reader.connect();
  publisher.connect();
  await reader.join(room);
  expect(reader.getSnapshot().welcome?.node).toBe('node-a');
  const readerSeesPublisher = nextEvent(reader, 'presence:join', (e) => e.roomId === room && e.member.userId === publisherId);
  await publisher.join(room);
  expect(publisher.getSnapshot().welcome?.node).toBe('node-b');
  await readerSeesPublisher; // presence crosses the nodes through Redis

  const seen = collect(reader, 'new-message', (m) => m.roomId === room);
  const total = 80;
  const acks: number[] = [];
  const publishing = (async () => {
    for (let i = 1; i <= total; i++) {
      const ack = await publisher.sendMessage(room, `p${i}`, { i });
      acks.push(ack.seq);
      await sleep(20);
    }
  })();

  await waitFor('the reader to get 15 messages through node A', () => seen.length >= 15);
  const moved = nextEvent(reader, 'room-joined', (e) => e.roomId === room, 30_000);
  await a.kill();
  const rejoined = await moved;
  expect(reader.getSnapshot().welcome?.node).toBe('node-b');
  expect(rejoined.recovered).toBe(true);
  await publishing;
  await waitFor(`the reader to get all ${total} messages`, () => seen.length >= total, 30_000);

  // Every seq the publisher got an ack for, in order, once.
  expect(seen.map((m) => m.seq)).toEqual(acks);
  expect(seen.map((m) => m.text)).toEqual(Array.from({ length: total }, (_, i) => `p${i + 1}`));
  const first = acks[0]!;
  expect(acks).toEqual(Array.from({ length: total }, (_, i) => first + i));

  // On the wire: the last connection (to node B) resumed from the last seq the one to node A
  // delivered, and got every later seq exactly once.
  const last = wire.connections.at(-1)!;
  expect(last.url.startsWith(b.wsUrl)).toBe(true);
  const throughA = wire.connections[0]!;
  const lastThroughA = Math.max(...wireMessages(throughA, room).map((m) => m.seq));
  const join = last.sent.find((m) => m.type === 'join-room' && m.roomId === room);
  expect(join).toMatchObject({ sinceSeq: lastThroughA });
  expect(wireMessages(last, room).map((m) => m.seq)).toEqual(acks.filter((s) => s > lastThroughA));
  expect(lastThroughA).toBeLessThan(acks.at(-1)!);
});
