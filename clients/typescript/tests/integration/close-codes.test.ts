/**
 * Close codes from a real node and what the SDK does with them: 1008 (kicked through the HTTP
 * API) ends the session for good; 4001 (the token expired) gets a fresh token and reconnects.
 * The node has a JWT secret, so the tests sign their own tokens, with the expiry they need.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClientPool, nextEvent, reachState, uniq, userToken } from '../support/clients.js';
import { sleep, SwitchyardNode, waitFor } from '../support/processes.js';

const secret = randomBytes(24).toString('hex');
const apiKey = 'k';
let node: SwitchyardNode;
const pool = new ClientPool();

beforeAll(async () => {
  node = await SwitchyardNode.start({
    label: 'close-codes',
    env: { SWITCHYARD_JWT_SECRET: secret, SWITCHYARD_API_KEYS: apiKey },
  });
});

afterEach(() => pool.disposeAll());

afterAll(async () => {
  await node?.stop();
});

async function presence(room: string): Promise<string[]> {
  const res = await node.api(`/api/rooms/${room}/presence`, { key: apiKey });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { members: { userId: string }[] };
  return body.members.map((m) => m.userId);
}

describe('close codes', () => {
  it('1008 (kicked through the HTTP API): disconnected, and no reconnect', async () => {
    const room = uniq('kick');
    const userId = uniq('kim');
    let tokens = 0;
    const client = pool.create({
      url: node.wsUrl,
      token: () => {
        tokens += 1;
        return userToken(secret, userId, 'Kim');
      },
    });
    client.connect();
    await client.join(room);
    expect(await presence(room)).toEqual([userId]);

    const closed = nextEvent(client, 'close');
    const res = await node.api(`/api/users/${encodeURIComponent(userId)}/disconnect`, { method: 'POST', key: apiKey });
    expect(res.status).toBe(202);
    const close = await closed;
    expect(close).toMatchObject({ code: 1008, willReconnect: false });
    expect(client.state).toBe('disconnected');
    expect(client.getSnapshot().lastError).toMatchObject({ code: 'closed', closeCode: 1008 });
    await waitFor('the kicked user to leave the presence list', async () => (await presence(room)).length === 0);

    // Nothing comes back by itself: over many backoff periods (100 ms here) no token is asked
    // for and the state stays put. (Watching for something not to happen needs a window.)
    const states: string[] = [];
    client.on('state', (e) => states.push(e.state));
    await sleep(1500);
    expect(tokens).toBe(1);
    expect(states).toEqual([]);
    expect(client.state).toBe('disconnected');
  });

  it('4001 (the token expired): the token function is called again and the client reconnects', async () => {
    const room = uniq('expiry');
    const userId = uniq('tom');
    const issued: number[] = [];
    const client = pool.create({
      url: node.wsUrl,
      token: () => {
        // The first token expires in 3 s; the next ones in an hour.
        const ttl = issued.length === 0 ? 3 : 3600;
        issued.push(ttl);
        return userToken(secret, userId, 'Tom', ttl);
      },
    });
    const closed = nextEvent(client, 'close', () => true, 20_000);
    client.connect();
    const firstJoin = await client.join(room);
    const firstConnection = client.getSnapshot().welcome!.connectionId;
    const rejoined = nextEvent(client, 'room-joined', (e) => e.roomId === room, 20_000);

    const close = await closed;
    expect(close).toMatchObject({ code: 4001, willReconnect: true, delayMs: 0 });
    await rejoined;
    await reachState(client, 'connected');
    expect(issued).toEqual([3, 3600]);
    expect(client.getSnapshot().welcome!.connectionId).not.toBe(firstConnection);
    expect(client.getSnapshot().welcome!.userId).toBe(userId);

    // The new session works, and resumed where the first one was.
    const ack = await client.sendMessage(room, 'still here');
    expect(ack.seq).toBe(firstJoin.seq + 1);
    expect(client.state).toBe('connected');
  });
});
