/**
 * An in-memory stand-in for a Switchyard server, for UNIT tests of code built on the client
 * (hooks, stores, components) without a network. It speaks the protocol's happy path — welcome,
 * rooms with presence, acks with idempotent tempIds, seqs, resume with `sinceSeq`, typing and
 * cursor fan-out is left to the test — and lets a test drive everything else by hand: push any
 * server message, close with any code, refuse connections.
 *
 * It is not the real server: integration tests belong against a real node.
 *
 * @example
 * ```ts
 * import { FakeSwitchyardServer } from '@switchyard/client/testing';
 *
 * const server = new FakeSwitchyardServer({ userId: 'alice' });
 * const client = new SwitchyardClient({ url: 'ws://test/ws', token: 't', WebSocket: server.WebSocket });
 * client.connect();
 * await server.waitForConnection();
 * server.close(1001, 'node draining');
 * ```
 *
 * @module
 */
import { decode, encode } from '@msgpack/msgpack';
import type {
  ClientMessage,
  Member,
  NewMessage,
  ServerMessage,
  TempId,
} from '../types.js';
import { SUBPROTOCOL } from '../types.js';
import type { SocketCloseEvent, SocketMessageEvent, WebSocketConstructor, WebSocketLike } from '../transport.js';

/** Options of {@link FakeSwitchyardServer}. */
export interface FakeServerOptions {
  /** The user every connection authenticates as (`welcome.userId`). Default `'user-1'`. */
  userId?: string;
  /** The user's display name, in presence and on messages. */
  name?: string;
  /** `welcome.heartbeatMs`. Default `25000`. */
  heartbeatMs?: number;
  /** Send `welcome` as soon as a socket opens. Default `true`. */
  autoWelcome?: boolean;
  /** Answer requests like the server does. Default `true`; `false` leaves every reply to the test. */
  autoReply?: boolean;
}

interface FakeRoom {
  seq: number;
  epoch: string;
  history: NewMessage[];
  members: Map<string, Member>;
  /** tempId (typed) -> the first ack's fields */
  acks: Map<string, { serverId: string; seq: number; ts: number }>;
}

/** One fake WebSocket (the client's side of it is the WebSocket interface). */
export class FakeSocket implements WebSocketLike {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;

  readyState = FakeSocket.CONNECTING;
  protocol = '';
  binaryType = 'blob';
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: SocketMessageEvent) => void) | null = null;
  onclose: ((event: SocketCloseEvent) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  /** Every message the client sent on this socket, decoded, batches flattened. */
  readonly received: ClientMessage[] = [];
  /** Every raw frame the client sent on this socket. */
  readonly frames: (string | Uint8Array)[] = [];
  /** The close the client asked for, if it closed this socket. */
  clientClose: { code?: number; reason?: string } | undefined;
  readonly url: string;
  readonly protocols: string[];
  readonly token: string | null;

  constructor(
    private readonly server: FakeSwitchyardServer,
    url: string,
    protocols?: string | string[],
  ) {
    this.url = url;
    this.protocols = protocols === undefined ? [] : Array.isArray(protocols) ? protocols : [protocols];
    this.token = new URL(url).searchParams.get('token');
  }

  /** `true` when the client asked for MessagePack frames. */
  get msgpack(): boolean {
    return this.protocol === SUBPROTOCOL.msgpack;
  }

  send(data: string | Uint8Array): void {
    if (this.readyState !== FakeSocket.OPEN) throw new Error('FakeSocket: send() while not open');
    this.frames.push(data);
    const value: unknown = typeof data === 'string' ? JSON.parse(data) : decode(data);
    for (const message of (Array.isArray(value) ? value : [value]) as ClientMessage[]) {
      this.received.push(message);
      this.server.onClientMessage(this, message);
    }
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= FakeSocket.CLOSING) return;
    this.clientClose = { code, reason };
    this.readyState = FakeSocket.CLOSING;
    queueMicrotask(() => this.finish(code ?? 1005, reason ?? '', true));
  }

  // ---- server side

  /** Opens the socket (fires `open`, then `welcome` if `autoWelcome`). */
  accept(): void {
    if (this.readyState !== FakeSocket.CONNECTING) return;
    const offered = this.protocols.find((p) => p === SUBPROTOCOL.json || p === SUBPROTOCOL.msgpack);
    this.protocol = offered ?? '';
    this.readyState = FakeSocket.OPEN;
    this.onopen?.({ type: 'open' });
    this.server.onOpen(this);
  }

  /** Fails the handshake the way a browser reports it: close 1006 without `open`. */
  refuse(): void {
    this.finish(1006, '', false);
  }

  /** Sends server messages (several make one batch frame), asynchronously like a real socket. */
  push(message: ServerMessage | ServerMessage[]): void {
    if (this.readyState !== FakeSocket.OPEN) return;
    const data: string | ArrayBuffer = this.msgpack
      ? (() => {
          const bytes = encode(message, { ignoreUndefined: true });
          return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
        })()
      : JSON.stringify(message);
    queueMicrotask(() => {
      if (this.readyState === FakeSocket.OPEN) this.onmessage?.({ data });
    });
  }

  /** Closes from the server side with a code. */
  serverClose(code: number, reason = ''): void {
    if (this.readyState >= FakeSocket.CLOSING) return;
    this.readyState = FakeSocket.CLOSING;
    queueMicrotask(() => this.finish(code, reason, code !== 1006));
  }

  private finish(code: number, reason: string, wasClean: boolean): void {
    if (this.readyState === FakeSocket.CLOSED) return;
    this.readyState = FakeSocket.CLOSED;
    this.server.onSocketClosed(this);
    this.onclose?.({ code, reason, wasClean });
  }
}

/** In-memory fake of a Switchyard node, for unit tests. See the module docs. */
export class FakeSwitchyardServer {
  /** Pass this as the client's `WebSocket` option. */
  readonly WebSocket: WebSocketConstructor;
  /** Every socket ever created, oldest first. */
  readonly sockets: FakeSocket[] = [];
  /** Every message received from clients, all sockets, in order. */
  readonly received: ClientMessage[] = [];
  /** The rooms the fake knows, by id. */
  readonly rooms = new Map<string, FakeRoom>();
  userId: string;
  name: string | undefined;
  heartbeatMs: number;
  autoWelcome: boolean;
  autoReply: boolean;
  /** While `> 0`, new connections are refused (close 1006) and this counts down. */
  refuseConnections = 0;
  /** Set to hold new sockets in CONNECTING until {@link FakeSocket.accept} is called. */
  holdConnections = false;
  private epochCounter = 0;
  private idCounter = 0;
  private readonly waiters: ((socket: FakeSocket) => void)[] = [];

  constructor(options: FakeServerOptions = {}) {
    this.userId = options.userId ?? 'user-1';
    this.name = options.name;
    this.heartbeatMs = options.heartbeatMs ?? 25_000;
    this.autoWelcome = options.autoWelcome ?? true;
    this.autoReply = options.autoReply ?? true;
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const server = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(server, url, protocols);
        server.sockets.push(this);
        queueMicrotask(() => {
          if (server.refuseConnections > 0) {
            server.refuseConnections -= 1;
            this.refuse();
          } else if (!server.holdConnections) {
            this.accept();
          }
        });
      }
    };
  }

  /** The newest socket, whatever its state. */
  get socket(): FakeSocket | undefined {
    return this.sockets[this.sockets.length - 1];
  }

  /** The newest socket if it is open. */
  get openSocket(): FakeSocket | undefined {
    const s = this.socket;
    return s && s.readyState === FakeSocket.OPEN ? s : undefined;
  }

  /** Resolves with the next socket that opens (or the open one, if any). */
  waitForConnection(): Promise<FakeSocket> {
    const open = this.openSocket;
    if (open) return Promise.resolve(open);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Sends server messages on the newest open socket. */
  push(message: ServerMessage | ServerMessage[]): void {
    this.openSocket?.push(message);
  }

  /** Closes the newest open socket from the server side. */
  close(code: number, reason = ''): void {
    this.openSocket?.serverClose(code, reason);
  }

  /** The messages of a type the clients sent. */
  receivedOf<T extends ClientMessage['type']>(type: T): Extract<ClientMessage, { type: T }>[] {
    return this.received.filter((m): m is Extract<ClientMessage, { type: T }> => m.type === type);
  }

  /** A room, created on first use (seq 0, a fresh epoch). */
  room(roomId: string): FakeRoom {
    let room = this.rooms.get(roomId);
    if (!room) {
      room = { seq: 0, epoch: this.newEpoch(), history: [], members: new Map(), acks: new Map() };
      this.rooms.set(roomId, room);
    }
    return room;
  }

  /**
   * Delivers a durable chat message from another user to the open socket (as if they sent it),
   * with the room's next seq. Returns it.
   */
  deliverMessage(roomId: string, from: { userId: string; name?: string; text: string; data?: unknown; tempId?: TempId }): NewMessage {
    const room = this.room(roomId);
    room.seq += 1;
    const message: NewMessage = {
      type: 'new-message',
      roomId,
      id: this.nextId(),
      seq: room.seq,
      userId: from.userId,
      ...(from.name !== undefined ? { name: from.name } : {}),
      text: from.text,
      ...(from.data !== undefined ? { data: from.data } : {}),
      ts: Date.now(),
      tempId: from.tempId ?? this.nextId(),
    };
    room.history.push(message);
    this.push(message);
    return message;
  }

  /** Loses the room's history (a new epoch, seqs from 0) and sends `room-reset`. */
  resetRoom(roomId: string): void {
    const room = this.room(roomId);
    room.epoch = this.newEpoch();
    room.seq = 0;
    room.history = [];
    room.acks.clear();
    this.push({ type: 'room-reset', roomId, epoch: room.epoch, seq: 0 });
  }

  /** Drops the room's stored history (a resume from before now gets `recovered: false`). */
  forgetHistory(roomId: string): void {
    this.room(roomId).history = [];
  }

  // ---- internals, called by FakeSocket

  /** @internal */
  onOpen(socket: FakeSocket): void {
    if (this.autoWelcome) {
      socket.push({
        type: 'welcome',
        connectionId: this.nextId(),
        userId: this.userId,
        node: 'fake-node',
        heartbeatMs: this.heartbeatMs,
      });
    }
    for (const resolve of this.waiters.splice(0)) resolve(socket);
  }

  /** @internal */
  onSocketClosed(_socket: FakeSocket): void {
    /* presence is left to the test */
  }

  /** @internal */
  onClientMessage(socket: FakeSocket, message: ClientMessage): void {
    this.received.push(message);
    if (!this.autoReply) return;
    const ref = message.ref !== undefined ? { ref: message.ref } : {};
    switch (message.type) {
      case 'ping':
        socket.push({ type: 'pong', ts: Date.now(), ...ref });
        break;
      case 'join-room':
      case 'subscribe': {
        const room = this.room(message.roomId);
        const replies: ServerMessage[] = [];
        let recovered: boolean | undefined;
        if (message.sinceSeq !== undefined) {
          const missed = room.history.filter((m) => m.seq > message.sinceSeq!);
          const complete =
            (message.epoch === undefined || message.epoch === room.epoch) &&
            message.sinceSeq <= room.seq &&
            (missed.length === room.seq - message.sinceSeq);
          recovered = complete;
          if (complete) replies.push(...missed);
        }
        if (message.type === 'join-room') {
          if (!room.members.has(this.userId)) {
            room.members.set(this.userId, {
              userId: this.userId,
              ...(this.name !== undefined ? { name: this.name } : {}),
              joinedAt: Date.now(),
            });
          }
          replies.push({
            type: 'room-joined',
            roomId: message.roomId,
            seq: room.seq,
            epoch: room.epoch,
            members: [...room.members.values()],
            ...(recovered !== undefined ? { recovered } : {}),
            ...ref,
          });
        } else {
          replies.push({
            type: 'subscribed',
            roomId: message.roomId,
            seq: room.seq,
            epoch: room.epoch,
            ...(recovered !== undefined ? { recovered } : {}),
            ...ref,
          });
        }
        socket.push(replies);
        break;
      }
      case 'leave-room':
        this.room(message.roomId).members.delete(this.userId);
        socket.push({ type: 'room-left', roomId: message.roomId, ...ref });
        break;
      case 'unsubscribe':
        this.room(message.roomId).members.delete(this.userId);
        socket.push({ type: 'unsubscribed', roomId: message.roomId, ...ref });
        break;
      case 'presence:sync':
        socket.push({ type: 'presence:sync', roomId: message.roomId, members: [...this.room(message.roomId).members.values()], ...ref });
        break;
      case 'message':
      case 'publish': {
        const room = this.room(message.roomId);
        const key = `${typeof message.tempId}:${String(message.tempId)}`;
        const first = room.acks.get(key);
        if (first) {
          socket.push({ type: 'ack', tempId: message.tempId, success: true, ...first, ...ref });
          break;
        }
        room.seq += 1;
        const stored = { serverId: this.nextId(), seq: room.seq, ts: Date.now() };
        room.acks.set(key, stored);
        const ack: ServerMessage = { type: 'ack', tempId: message.tempId, success: true, ...stored, ...ref };
        let delivered: ServerMessage;
        if (message.type === 'message') {
          const m: NewMessage = {
            type: 'new-message',
            roomId: message.roomId,
            id: stored.serverId,
            seq: stored.seq,
            userId: this.userId,
            ...(this.name !== undefined ? { name: this.name } : {}),
            text: message.text,
            ...(message.data !== undefined ? { data: message.data } : {}),
            ts: stored.ts,
            tempId: message.tempId,
          };
          room.history.push(m);
          delivered = m;
        } else {
          delivered = {
            type: 'event',
            roomId: message.roomId,
            event: message.event,
            data: message.data,
            seq: stored.seq,
            userId: this.userId,
            id: stored.serverId,
            ts: stored.ts,
            tempId: message.tempId,
          };
        }
        socket.push([ack, delivered]);
        break;
      }
      default:
        break; // typing and cursors: nothing comes back to the sender
    }
  }

  private newEpoch(): string {
    this.epochCounter += 1;
    return `epoch-${this.epochCounter}`;
  }

  private nextId(): string {
    this.idCounter += 1;
    return `id-${this.idCounter}`;
  }
}
