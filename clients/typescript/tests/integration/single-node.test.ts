/**
 * The SDK against one real node in development mode (tokens from GET /dev/token): chat both
 * ways with acks, presence, typing and cursors; JSON and MessagePack clients together; resume
 * after a disconnection with `sinceSeq`.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { colorForUser, type NewMessage } from '@switchyard/client';
import { ClientPool, collect, nextEvent, uniq, wireLog, wireMessages } from '../support/clients.js';
import { sleep, SwitchyardNode, waitFor } from '../support/processes.js';

let node: SwitchyardNode;
const pool = new ClientPool();

beforeAll(async () => {
  // A high durable-message budget: the resume test publishes faster than the default 10/s.
  node = await SwitchyardNode.start({
    label: 'single-node',
    env: { SWITCHYARD_RATE_PER_SEC: '1000', SWITCHYARD_RATE_BURST: '1000' },
  });
});

afterEach(() => pool.disposeAll());

afterAll(async () => {
  await node?.stop();
});

/** A connected client of a fresh user, named `name`. */
function user(name: string, options: { protocol?: 'json' | 'msgpack'; wire?: ReturnType<typeof wireLog> } = {}) {
  const userId = uniq(name.toLowerCase());
  const client = pool.create({
    url: node.wsUrl,
    token: () => node.devToken(userId, name),
    protocol: options.protocol ?? 'json',
    ...(options.wire ? { WebSocket: options.wire.WebSocket } : {}),
  });
  client.connect();
  return { client, userId, name };
}

describe('two clients on one node', () => {
  it('chat both ways with acks, and see presence, typing and cursors', async () => {
    const room = uniq('chat');
    const ann = user('Ann');
    const bob = user('Bob');

    const annJoined = await ann.client.join(room);
    expect(annJoined.members.map((m) => m.userId)).toEqual([ann.userId]);
    expect(ann.client.getSnapshot().welcome?.userId).toBe(ann.userId);

    // Bob joins: Ann sees presence:join, Bob's room-joined lists both.
    const annSeesBob = nextEvent(ann.client, 'presence:join', (e) => e.roomId === room && e.member.userId === bob.userId);
    const bobJoined = await bob.client.join(room);
    expect(bobJoined.members.map((m) => m.userId).sort()).toEqual([ann.userId, bob.userId].sort());
    expect((await annSeesBob).member.name).toBe('Bob');
    await waitFor('Ann to list Bob', () => ann.client.getMembers(room).some((m) => m.userId === bob.userId));

    // Ann -> Bob: the ack resolves with the seq that Bob (and Ann herself) receive.
    const bobGets = nextEvent(bob.client, 'new-message', (m) => m.roomId === room && m.userId === ann.userId);
    const annEcho = nextEvent(ann.client, 'new-message', (m) => m.roomId === room && m.userId === ann.userId);
    const ack1 = await ann.client.sendMessage(room, 'hello Bob', { mood: 'cheerful' }, { tempId: 'ann-1' });
    expect(ack1).toMatchObject({ type: 'ack', success: true, tempId: 'ann-1' });
    const atBob = await bobGets;
    expect(atBob).toMatchObject({ text: 'hello Bob', name: 'Ann', seq: ack1.seq, id: ack1.serverId, tempId: 'ann-1', data: { mood: 'cheerful' } });
    expect((await annEcho).seq).toBe(ack1.seq);

    // Bob -> Ann: the next seq.
    const annGets = nextEvent(ann.client, 'new-message', (m) => m.roomId === room && m.userId === bob.userId);
    const ack2 = await bob.client.sendMessage(room, 'hi Ann ✋');
    expect(ack2.seq).toBe(ack1.seq + 1);
    expect(await annGets).toMatchObject({ text: 'hi Ann ✋', name: 'Bob', seq: ack2.seq, id: ack2.serverId, tempId: ack2.tempId });

    // Typing: start and stop reach the other one.
    const typingStart = nextEvent(bob.client, 'typing:start', (e) => e.roomId === room && e.userId === ann.userId);
    expect(ann.client.startTyping(room)).toBe(true);
    await typingStart;
    const typingStop = nextEvent(bob.client, 'typing:stop', (e) => e.roomId === room && e.userId === ann.userId);
    expect(ann.client.stopTyping(room)).toBe(true);
    await typingStop;

    // Cursors: a move arrives with the position and the user's colour; leave removes it.
    const cursor = nextEvent(ann.client, 'cursor:move', (e) => e.roomId === room && e.userId === bob.userId);
    expect(bob.client.moveCursor(room, 0.25, 0.75)).toBe(true);
    expect(await cursor).toMatchObject({ x: 0.25, y: 0.75, color: colorForUser(bob.userId) });
    const cursorLeave = nextEvent(ann.client, 'cursor:leave', (e) => e.roomId === room && e.userId === bob.userId);
    expect(bob.client.leaveCursor(room)).toBe(true);
    await cursorLeave;

    // Bob leaves: Ann sees presence:leave and her member list shrinks.
    const annSeesLeave = nextEvent(ann.client, 'presence:leave', (e) => e.roomId === room && e.userId === bob.userId);
    bob.client.leave(room);
    await annSeesLeave;
    expect(ann.client.getMembers(room).map((m) => m.userId)).toEqual([ann.userId]);

    // Bob comes back and disconnects: a disconnection is a leave too.
    const annSeesJoin = nextEvent(ann.client, 'presence:join', (e) => e.roomId === room && e.member.userId === bob.userId);
    await bob.client.join(room);
    await annSeesJoin;
    const annSeesGone = nextEvent(ann.client, 'presence:leave', (e) => e.roomId === room && e.userId === bob.userId);
    bob.client.disconnect();
    await annSeesGone;
  });

  it('JSON and MessagePack clients talk to each other', async () => {
    const room = uniq('codecs');
    const jsonWire = wireLog();
    const packWire = wireLog();
    const jay = user('Jay', { protocol: 'json', wire: jsonWire });
    const max = user('Max', { protocol: 'msgpack', wire: packWire });
    await jay.client.join(room);
    await max.client.join(room);

    const data = { n: 42, big: 2 ** 40, neg: -7, half: 1.5, ok: true, none: null, list: [1, 'two', { three: 3 }], text: 'héllo 🚂 <b>' };
    const maxGets = nextEvent(max.client, 'new-message', (m) => m.roomId === room && m.userId === jay.userId);
    const jayAck = await jay.client.sendMessage(room, 'from JSON: ünïcödé ✓', data);
    expect(await maxGets).toMatchObject({ text: 'from JSON: ünïcödé ✓', data, seq: jayAck.seq, name: 'Jay' });

    const jayGets = nextEvent(jay.client, 'new-message', (m) => m.roomId === room && m.userId === max.userId);
    const maxAck = await max.client.sendMessage(room, 'from MessagePack: 日本語 ✓', data);
    expect(await jayGets).toMatchObject({ text: 'from MessagePack: 日本語 ✓', data, seq: maxAck.seq, name: 'Max' });

    // Volatile messages cross the encodings too.
    const cursor = nextEvent(jay.client, 'cursor:move', (e) => e.roomId === room && e.userId === max.userId);
    max.client.moveCursor(room, 0.5, 0.125);
    expect(await cursor).toMatchObject({ x: 0.5, y: 0.125 });

    // Each side really spoke its encoding: the server chose the offered subprotocol and sent
    // text frames to one, binary frames to the other.
    expect(jsonWire.connections).toHaveLength(1);
    expect(packWire.connections).toHaveLength(1);
    const [j, m] = [jsonWire.connections[0]!, packWire.connections[0]!];
    expect(j.protocol).toBe('switchyard.v1.json');
    expect(m.protocol).toBe('switchyard.v1.msgpack');
    expect(j.textFrames).toBeGreaterThan(0);
    expect(j.binaryFrames).toBe(0);
    expect(m.binaryFrames).toBeGreaterThan(0);
    expect(m.textFrames).toBe(0);
  });
});

describe('resume', () => {
  it('a client disconnected while another publishes gets the missed messages in order, once, after reconnecting', async () => {
    const room = uniq('resume');
    const wire = wireLog();
    const sub = user('Sue', { wire });
    const pub = user('Pat');
    await sub.client.join(room);
    await pub.client.join(room);

    const seen = collect(sub.client, 'new-message', (m) => m.roomId === room);
    const total = 60;
    const acks: number[] = [];
    // The publisher sends one message after the other the whole time (paced, so that the
    // subscriber's absence falls in the middle of the stream).
    const publishing = (async () => {
      for (let i = 1; i <= total; i++) {
        const ack = await pub.client.sendMessage(room, `m${i}`, { i });
        acks.push(ack.seq);
        await sleep(20);
      }
    })();

    // The subscriber drops out after it has seen some of them, and comes back while the
    // publisher is still going.
    await waitFor('the subscriber to see 10 messages', () => seen.length >= 10);
    sub.client.disconnect();
    const sawBeforeDisconnect = seen.length;
    await waitFor('the publisher to get 15 more acks while the subscriber is away', () => acks.length >= sawBeforeDisconnect + 15);
    const rejoined = nextEvent(sub.client, 'room-joined', (e) => e.roomId === room);
    sub.client.connect();
    expect((await rejoined).recovered).toBe(true);
    await publishing;
    await waitFor(`the subscriber to see all ${total} messages`, () => seen.length >= total);

    // As the app sees them: every message, in order, once.
    expect(seen.map((m) => m.text)).toEqual(Array.from({ length: total }, (_, i) => `m${i + 1}`));
    const first = seen[0]!.seq;
    expect(seen.map((m) => m.seq)).toEqual(Array.from({ length: total }, (_, i) => first + i));
    expect(seen.map((m) => m.seq)).toEqual(acks);

    // On the wire, below the SDK's de-duplication: the second connection resumed from the last
    // seq the first one delivered, and the server sent every later one exactly once, the
    // missed ones before `room-joined`.
    expect(wire.connections).toHaveLength(2);
    const [before, after] = wire.connections as [(typeof wire.connections)[0], (typeof wire.connections)[0]];
    const lastBefore = seen[sawBeforeDisconnect - 1]!.seq;
    const join = after.sent.find((m) => m.type === 'join-room' && m.roomId === room);
    expect(join).toMatchObject({ sinceSeq: lastBefore });
    const replayed = wireMessages(after, room).map((m) => m.seq);
    expect(replayed).toEqual(Array.from({ length: first + total - 1 - lastBefore }, (_, i) => lastBefore + 1 + i));
    const joinedAt = after.received.findIndex((m) => m.type === 'room-joined' && m.roomId === room);
    const joinedSeq = (after.received[joinedAt] as { seq: number }).seq;
    const replayedBeforeJoin = after.received.slice(0, joinedAt).filter((m): m is NewMessage => m.type === 'new-message');
    expect(replayedBeforeJoin.map((m) => m.seq)).toEqual(replayed.filter((s) => s <= joinedSeq));
    expect(replayedBeforeJoin.length).toBeGreaterThanOrEqual(10); // it did miss the 15 published while away
    expect(new Set(wireMessages(before, room).map((m) => m.seq)).size).toBe(wireMessages(before, room).length);
  });
});
