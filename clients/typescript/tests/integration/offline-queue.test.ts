/**
 * The offline queue against a real node that goes away: a message sent while the node is
 * stopped waits in the client, and is delivered once, with its tempId, after the node is back
 * on the same port.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { ClientPool, collect, nextEvent, reachState, uniq, wireLog, wireMessages } from '../support/clients.js';
import { SwitchyardNode, waitFor } from '../support/processes.js';

let node: SwitchyardNode;
const pool = new ClientPool();

beforeAll(async () => {
  node = await SwitchyardNode.start({ label: 'offline-queue', env: { SWITCHYARD_DRAIN_MS: '300' } });
});

afterEach(() => pool.disposeAll());

afterAll(async () => {
  await node?.stop();
});

it('queues a message sent while the node is down and delivers it once, with the same tempId, after the restart', async () => {
  const room = uniq('offline');
  const senderId = uniq('sam');
  const readerId = uniq('rita');

  // The memory broker's history starts afresh with the node, so a reader that rejoined after
  // the queued message went out could not replay it. The sender's token provider (called on
  // every reconnect) therefore holds its reconnection back until the reader is in the room
  // again: then the reader must get the message live, exactly once.
  let readerBack: Promise<unknown> = Promise.resolve();
  const senderWire = wireLog();
  const sender = pool.create({
    url: node.wsUrl,
    WebSocket: senderWire.WebSocket,
    token: async () => {
      await readerBack;
      const token = await node.devToken(senderId, 'Sam');
      await readerBack; // read again: it may have been set while the token was fetched
      return token;
    },
  });
  const readerWire = wireLog();
  const reader = pool.create({ url: node.wsUrl, WebSocket: readerWire.WebSocket, token: () => node.devToken(readerId, 'Rita') });
  sender.connect();
  reader.connect();
  const firstJoin = await reader.join(room);
  await sender.join(room);

  const readerGot = collect(reader, 'new-message', (m) => m.roomId === room);
  const senderGot = collect(sender, 'new-message', (m) => m.roomId === room);
  const warmup = await sender.sendMessage(room, 'before the restart');
  await waitFor('the reader to get the first message', () => readerGot.some((m) => m.id === warmup.serverId));

  // Stop the node (SIGTERM: it drains, the clients get 1001 and start reconnecting).
  const senderLost = nextEvent(sender, 'close', (c) => c.willReconnect);
  const readerLost = nextEvent(reader, 'close', (c) => c.willReconnect);
  await node.stop();
  expect((await senderLost).code).toBe(1001);
  expect((await readerLost).code).toBe(1001);
  expect(sender.state).toBe('reconnecting');

  // Sent while offline: it waits in the queue.
  const readerRejoined = nextEvent(reader, 'room-joined', (e) => e.roomId === room);
  readerBack = readerRejoined;
  const tempId = uniq('offline-msg');
  const acked = sender.sendMessage(room, 'sent while the node was down', { offline: true }, { tempId });
  expect(sender.getOutboxSnapshot()).toEqual({ queued: 1, inflight: 0 });
  expect(sender.isPending(room, tempId)).toBe(true);

  // The node comes back on the same port; both clients reconnect by themselves.
  await node.start();
  const rejoined = await readerRejoined;
  expect(rejoined.epoch).not.toBe(firstJoin.epoch); // a new history: the memory broker restarted
  const ack = await acked;
  expect(ack).toMatchObject({ success: true, tempId });
  expect(sender.isPending(room, tempId)).toBe(false);
  expect(sender.getOutboxSnapshot()).toEqual({ queued: 0, inflight: 0 });
  await reachState(sender, 'connected');

  // A marker after it: once it arrives, anything sent before it has arrived too.
  const marker = await sender.sendMessage(room, 'marker');
  await waitFor('the reader to get the marker', () => readerGot.some((m) => m.id === marker.serverId));
  await waitFor('the sender to get its marker back', () => senderGot.some((m) => m.id === marker.serverId));

  for (const got of [readerGot, senderGot]) {
    const copies = got.filter((m) => m.tempId === tempId);
    expect(copies).toHaveLength(1);
    expect(copies[0]).toMatchObject({ text: 'sent while the node was down', seq: ack.seq, id: ack.serverId, userId: senderId, name: 'Sam' });
  }
  // Below the SDK's de-duplication too: one copy on the wire, one `message` frame sent.
  const wireCopies = readerWire.connections.flatMap((c) => wireMessages(c, room)).filter((m) => m.tempId === tempId);
  expect(wireCopies).toHaveLength(1);
  const sends = senderWire.connections.flatMap((c) => c.sent).filter((m) => m.type === 'message' && m.tempId === tempId);
  expect(sends).toHaveLength(1);
  expect(senderWire.connections.length).toBeGreaterThanOrEqual(2);
});
