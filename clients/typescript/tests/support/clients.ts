/**
 * SDK clients for the integration tests: real `SwitchyardClient`s over the `ws` package's real
 * WebSocket, a wire log of every frame each socket sent and received (to check the server's
 * side of things below the client's de-duplication), HS256 tokens signed with node:crypto, and
 * helpers that wait for events with a deadline.
 */
import { createHmac, randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import {
  decodeFrame,
  SwitchyardClient,
  type ClientEventMap,
  type ClientEventName,
  type ClientMessage,
  type ServerMessage,
  type SwitchyardClientOptions,
  type WebSocketConstructor,
} from '@switchyard/client';

/** A short random suffix for user and room ids, so tests never share state on a node. */
export const uniq = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;

const b64url = (data: string | Buffer) => Buffer.from(data).toString('base64url');

/** Signs an HS256 JWT. */
export function signJwt(secret: string, claims: Record<string, unknown>): string {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${signature}`;
}

/** A token for `sub`, valid `ttlS` seconds from now. */
export function userToken(secret: string, sub: string, name: string | undefined, ttlS = 3600, extra: Record<string, unknown> = {}): string {
  return signJwt(secret, { sub, ...(name ? { name } : {}), exp: Math.floor(Date.now() / 1000) + ttlS, ...extra });
}

// ---------------------------------------------------------------------------------------------
// Wire log
// ---------------------------------------------------------------------------------------------

/** What one socket carried, decoded, in order. */
export interface WireConnection {
  readonly url: string;
  /** The subprotocol the server chose (once open). */
  protocol: string;
  readonly sent: ClientMessage[];
  readonly received: ServerMessage[];
  textFrames: number;
  binaryFrames: number;
}

function bytesOf(data: unknown): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[]);
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(String(data));
}

/**
 * The `ws` WebSocket, recording every frame of every socket it makes into `connections` (one
 * entry per socket, in creation order). It is the real socket: the recording only listens.
 */
export function wireLog(): { WebSocket: WebSocketConstructor; connections: WireConnection[] } {
  const connections: WireConnection[] = [];
  class LoggedWebSocket extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      const log: WireConnection = { url, protocol: '', sent: [], received: [], textFrames: 0, binaryFrames: 0 };
      connections.push(log);
      this.on('open', () => (log.protocol = this.protocol));
      this.on('message', (data, isBinary) => {
        const bytes = bytesOf(data);
        if (isBinary) log.binaryFrames += 1;
        else log.textFrames += 1;
        log.received.push(...decodeFrame(isBinary ? bytes : bytes.toString('utf8')));
      });
      const send = this.send.bind(this) as (data: unknown, ...rest: unknown[]) => void;
      (this as { send: unknown }).send = (data: unknown, ...rest: unknown[]) => {
        const frame = typeof data === 'string' ? data : bytesOf(data);
        log.sent.push(...(decodeFrame(frame) as unknown as ClientMessage[]));
        send(data, ...rest);
      };
    }
  }
  return { WebSocket: LoggedWebSocket as unknown as WebSocketConstructor, connections };
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/** Creates clients and disposes of every one of them in `disposeAll()` (call it in afterEach). */
export class ClientPool {
  private readonly clients: SwitchyardClient[] = [];

  /** A client over `ws` (or `WebSocket` given), with a quick reconnect backoff. */
  create(options: Omit<SwitchyardClientOptions, 'WebSocket'> & { WebSocket?: WebSocketConstructor }): SwitchyardClient {
    const client = new SwitchyardClient({
      WebSocket: WebSocket as unknown as WebSocketConstructor,
      reconnect: { minDelayMs: 100, maxDelayMs: 1000 },
      ...options,
    });
    this.clients.push(client);
    return client;
  }

  disposeAll(): void {
    for (const c of this.clients.splice(0)) c.dispose();
  }
}

/** Resolves with the first `type` event that passes `filter`; rejects after `timeoutMs`. */
export function nextEvent<K extends ClientEventName>(
  client: SwitchyardClient,
  type: K,
  filter: (payload: ClientEventMap[K]) => boolean = () => true,
  timeoutMs = 15_000,
): Promise<ClientEventMap[K]> {
  const promise = new Promise<ClientEventMap[K]>((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for a "${String(type)}" event (user ${client.userId ?? '?'})`));
    }, timeoutMs);
    const off = client.on(type, (payload) => {
      if (!filter(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
  // Not awaited when a test fails before it: no unhandled rejection then. Awaiting still throws.
  promise.catch(() => undefined);
  return promise;
}

/** Collects every `type` event that passes `filter`, from now on. */
export function collect<K extends ClientEventName>(
  client: SwitchyardClient,
  type: K,
  filter: (payload: ClientEventMap[K]) => boolean = () => true,
): ClientEventMap[K][] {
  const seen: ClientEventMap[K][] = [];
  client.on(type, (payload) => {
    if (filter(payload)) seen.push(payload);
  });
  return seen;
}

/** Waits until the client's state is `state`. */
export function reachState(client: SwitchyardClient, state: SwitchyardClient['state'], timeoutMs = 15_000): Promise<unknown> {
  if (client.state === state) return Promise.resolve();
  return nextEvent(client, 'state', (e) => e.state === state, timeoutMs);
}

/** The `new-message`s a connection received for a room (raw, before any de-duplication). */
export function wireMessages(connection: WireConnection, roomId: string) {
  return connection.received.filter((m) => m.type === 'new-message' && m.roomId === roomId) as Extract<ServerMessage, { type: 'new-message' }>[];
}
