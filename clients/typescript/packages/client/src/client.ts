/**
 * {@link SwitchyardClient}: one logical connection to a Switchyard gateway that survives
 * network loss, node drains and token expiry.
 *
 * @module
 */
import { Backoff, type BackoffOptions } from './backoff.js';
import { codecFor, type Codec, type EncodedMessage } from './codec.js';
import { RoomSeqs, type ResumePosition } from './dedupe.js';
import { Emitter, type Unsubscribe } from './emitter.js';
import { SwitchyardError, type SwitchyardErrorCode } from './errors.js';
import { randomId } from './ids.js';
import { MemberList } from './members.js';
import { Outbox, type OutboxEntry, type OverflowPolicy } from './queue.js';
import {
  resolveUrl,
  SOCKET_OPEN,
  type SocketCloseEvent,
  type WebSocketConstructor,
  type WebSocketLike,
} from './transport.js';
import {
  CloseCode,
  ROOM_ID_PATTERN,
  SUBPROTOCOL,
  type AckMessage,
  type AckSuccess,
  type ClientMessage,
  type Encoding,
  type ErrorMessage,
  type Member,
  type MessageRequest,
  type PongMessage,
  type PresenceSyncMessage,
  type PublishRequest,
  type Ref,
  type RoomId,
  type RoomJoinedMessage,
  type ServerMessage,
  type ServerMessageMap,
  type SubscribedMessage,
  type TempId,
  type WelcomeMessage,
} from './types.js';

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/**
 * - `connecting`: first connection after {@link SwitchyardClient.connect} (token, handshake, welcome).
 * - `connected`: `welcome` received; frames flow.
 * - `reconnecting`: the connection was lost; waiting for the next attempt, or attempting.
 * - `disconnected`: not connected and not trying (initial state, {@link SwitchyardClient.disconnect},
 *   or a close code that must not be retried: see `lastError`).
 */
export type ConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

/** Returns the token for the next handshake. Called on every connect and reconnect. */
export type TokenProvider = () => string | Promise<string>;

/**
 * Returns the gateway URL for the next handshake (e.g. the next node of a list, or one from
 * service discovery). Called on every connect and reconnect.
 */
export type UrlProvider = () => string | URL | Promise<string | URL>;

/** A successful ack: what {@link SwitchyardClient.sendMessage} and `publish` resolve with. */
export type Ack = AckSuccess;

/** An immutable view of the connection, replaced on every change (fit for `useSyncExternalStore`). */
export interface ConnectionSnapshot {
  readonly state: ConnectionState;
  /** Why the connection was lost or could not be made; cleared by the next `welcome`. */
  readonly lastError: SwitchyardError | undefined;
  /** The last close of a socket, if any. */
  readonly lastClose: CloseInfo | undefined;
  /** Failed attempts since the last successful connection. */
  readonly attempt: number;
  /** When the scheduled reconnect fires (ms since the epoch), while `reconnecting` and waiting. */
  readonly nextRetryAt: number | undefined;
  /** The `welcome` of the current connection, while `connected`. */
  readonly welcome: WelcomeMessage | undefined;
}

/** A socket close, as seen by the client. */
export interface CloseInfo {
  /** The WebSocket close code; 4000 when the client itself gave up on a silent connection. */
  readonly code: number;
  readonly reason: string;
  readonly wasClean: boolean;
  /** Whether the client will reconnect. */
  readonly willReconnect: boolean;
  /** In how many ms, when it will. */
  readonly delayMs: number | undefined;
}

/** Payload of the `state` event. */
export interface StateChangeEvent {
  readonly state: ConnectionState;
  readonly previous: ConnectionState;
  readonly snapshot: ConnectionSnapshot;
}

/** Why a room's history can no longer be trusted to be complete. */
export type HistoryResetReason =
  /** The server sent `room-reset`: the history was lost, seqs restart in a new epoch. */
  | 'room-reset'
  /** A resume found another epoch: the history was lost while disconnected. */
  | 'epoch-changed'
  /** A resume got `recovered: false`: the missed messages are too old to replay. */
  | 'not-recovered';

/**
 * Payload of the `history-reset` event: the client forgot the room's seqs; fetch its history
 * again (from your backend or the HTTP history API) if you show it.
 */
export interface HistoryResetEvent {
  readonly roomId: RoomId;
  readonly reason: HistoryResetReason;
  readonly epoch: string;
  /** The room's current seq: live messages continue from `seq + 1`. */
  readonly seq: number;
}

/** Payload of the `presence` event: a room's member list changed. */
export interface PresenceChangeEvent {
  readonly roomId: RoomId;
  readonly members: readonly Member[];
}

/** The outbox counts, immutable (payload of the `outbox` event). */
export interface OutboxSnapshot {
  /** Durable sends waiting for a connection. */
  readonly queued: number;
  /** Durable sends sent and waiting for their ack. */
  readonly inflight: number;
}

/** What a room membership is. */
export type Membership = 'none' | 'joined' | 'subscribed';

/** A room as the client tracks it. */
export interface RoomInfo {
  readonly roomId: RoomId;
  /** What the app asked for (the strongest of its joins and subscriptions). */
  readonly desired: Membership;
  /** What the server confirmed on the current connection. */
  readonly membership: Membership;
  readonly joinCount: number;
  readonly subscribeCount: number;
  /** Highest seq seen (the next resume's `sinceSeq`) and its epoch, once known. */
  readonly position: ResumePosition | undefined;
  readonly members: readonly Member[];
}

/**
 * The events of {@link SwitchyardClient.on}: every server message type (already de-duplicated
 * by seq) plus client events.
 */
export interface ClientEventMap extends ServerMessageMap {
  /** Every server message, after de-duplication. */
  '*': ServerMessage;
  /** The connection state changed. */
  state: StateChangeEvent;
  /** Anything in the connection snapshot changed (state, error, retry time, welcome). */
  connection: ConnectionSnapshot;
  /** A socket closed. */
  close: CloseInfo;
  /** A room's seqs were forgotten: re-fetch its history. */
  'history-reset': HistoryResetEvent;
  /** A room's member list changed. */
  presence: PresenceChangeEvent;
  /** The outbox counts changed. */
  outbox: OutboxSnapshot;
}

/** The name of a client event. */
export type ClientEventName = keyof ClientEventMap;

/** Options of {@link SwitchyardClient}. Only `url` and `token` are required. */
export interface SwitchyardClientOptions {
  /**
   * The gateway's WebSocket endpoint, e.g. `wss://rt.example.com/ws`. `http(s):` URLs are turned
   * into `ws(s):`; in a browser a relative URL (`/ws`) is resolved against the page.
   *
   * Or a function returning one (sync or async), called before every (re)connect, like `token`:
   * with several nodes and no load balancer in front of them, it can pick another node when
   * one is gone. When it throws (or returns an invalid URL), the attempt fails and is retried
   * with backoff.
   */
  url: string | URL | UrlProvider;
  /** A JWT, or a function returning one (sync or async), called before every (re)connect. */
  token: string | TokenProvider;
  /**
   * The WebSocket implementation. Default `globalThis.WebSocket` (browsers, Node 22+). On
   * Node 20 pass `WebSocket` from the `ws` package.
   */
  WebSocket?: WebSocketConstructor;
  /** Frame encoding the server should use (the subprotocol offered). Default `'json'`. */
  protocol?: Encoding;
  /** Connect from the constructor. Default `false`: call {@link SwitchyardClient.connect}. */
  autoConnect?: boolean;
  /** Reconnect automatically; `false`, or backoff options. Default `{ minDelayMs: 1000, maxDelayMs: 30000, jitter: 0.25 }`. */
  reconnect?: boolean | BackoffOptions;
  /** Send `ping` this often, in ms (`0` disables). Capped by the server's `heartbeatMs`. Default `25000`. */
  pingIntervalMs?: number;
  /** After a `ping`, give up on the connection if no frame at all arrives within this, in ms. Default `5000`. */
  pongTimeoutMs?: number;
  /** Give up on a handshake that has not produced a `welcome` within this, in ms. Default `10000`. */
  connectTimeoutMs?: number;
  /** Reject `sendMessage`/`publish` with `timeout` if the ack takes longer than this once sent, in ms. Default `10000`. */
  ackTimeoutMs?: number;
  /** Timeout of other requests (`ping`, `presenceSync`, `request`), in ms. Default `10000`. */
  requestTimeoutMs?: number;
  /** Most durable sends waiting for a connection. Default `100`. */
  maxQueueSize?: number;
  /** Most time a durable send may wait for a connection, in ms; older ones fail with `queue_expired`. Default `60000`. */
  maxQueueAgeMs?: number;
  /** At `maxQueueSize`: fail the oldest waiting send (`'drop-oldest'`, default) or the new one (`'reject-new'`), with `queue_full`. */
  queueOverflow?: OverflowPolicy;
  /** Largest frame the client sends, in bytes (the server's `SWITCHYARD_MAX_FRAME_BYTES`). Default `65536`. */
  maxFrameBytes?: number;
  /** Most messages the client puts in one batch frame (the server's `SWITCHYARD_MAX_BATCH`). Default `100`. */
  maxBatch?: number;
  /** In a browser, reconnect at once when the `online` event fires. Default `true`. */
  reconnectOnOnline?: boolean;
  /** Generates `tempId`s. Default: random UUIDs. */
  generateTempId?: () => TempId;
  /** Optional diagnostics. */
  logger?: ClientLogger;
  /**
   * Receives errors thrown by event handlers. Default: rethrown in a microtask, so they reach
   * `window.onerror` / `uncaughtException` without breaking the client.
   */
  onHandlerError?: (error: unknown) => void;
}

/** Diagnostics sink (e.g. `console`). */
export interface ClientLogger {
  debug?(message: string, ...details: unknown[]): void;
  warn?(message: string, ...details: unknown[]): void;
}

/** Options of a single send. */
export interface SendOptions {
  /** Reuse a tempId to retry a send idempotently. Default: a new random id. */
  tempId?: TempId;
}

// ---------------------------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------------------------

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

type Timer = ReturnType<typeof setTimeout>;

interface PendingSend {
  readonly frame: MessageRequest | PublishRequest;
  readonly deferred: Deferred<Ack>;
  ref?: string;
  ackTimer?: Timer;
}

interface PendingRequest {
  resolve(message: ServerMessage): void;
  reject(error: SwitchyardError): void;
  timer: Timer;
}

interface RoomEntry {
  readonly roomId: RoomId;
  joinCount: number;
  subscribeCount: number;
  /** What was requested on the current connection. */
  requested: Membership;
  /** Whether the server answered that request. */
  confirmed: boolean;
  /** The position sent with the request (a resume), if any. */
  resumedFrom: ResumePosition | undefined;
  /** The `ref` of the request in flight, to tell its error from a superseded one's. */
  requestRef: string | undefined;
  lastReply: RoomJoinedMessage | SubscribedMessage | undefined;
  joinWaiters: Deferred<RoomJoinedMessage>[];
  subscribeWaiters: Deferred<RoomJoinedMessage | SubscribedMessage>[];
  readonly members: MemberList;
  /** Set while a request the server refused for a passing reason waits to be sent again. */
  retryTimer: Timer | undefined;
}

type Outgoing =
  | { readonly kind: 'frame'; readonly message: ClientMessage }
  | { readonly kind: 'room'; readonly roomId: RoomId; desired: Membership };

/** Close codes after which reconnecting would only fail again (or is not wanted). */
const TERMINAL_CLOSE_CODES = new Set<number>([
  CloseCode.NORMAL,
  CloseCode.PROTOCOL_ERROR,
  CloseCode.UNSUPPORTED_DATA,
  CloseCode.INVALID_PAYLOAD,
  CloseCode.POLICY_VIOLATION,
  CloseCode.MESSAGE_TOO_BIG,
]);

/** Close codes after which the client reconnects at once instead of backing off. */
const IMMEDIATE_CLOSE_CODES = new Set<number>([CloseCode.GOING_AWAY, CloseCode.TOKEN_EXPIRED]);

/** A connection that lasted less than this is not trusted for an immediate reconnect. */
const MIN_STABLE_MS = 1000;

const INITIAL_SNAPSHOT: ConnectionSnapshot = Object.freeze({
  state: 'disconnected',
  lastError: undefined,
  lastClose: undefined,
  attempt: 0,
  nextRetryAt: undefined,
  welcome: undefined,
});

function desiredOf(room: RoomEntry): Membership {
  return room.joinCount > 0 ? 'joined' : room.subscribeCount > 0 ? 'subscribed' : 'none';
}

function validRoomId(roomId: unknown): roomId is RoomId {
  return typeof roomId === 'string' && ROOM_ID_PATTERN.test(roomId);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/**
 * A Switchyard client: connection state, reconnect with backoff, heartbeats, an offline queue,
 * acks as promises, resume of rooms with `sinceSeq`, de-duplication by seq, and typed events.
 *
 * The constructor has no side effects (no socket, no timer): call {@link connect}, or pass
 * `autoConnect: true`.
 *
 * @example
 * ```ts
 * import { SwitchyardClient } from '@switchyard/client';
 *
 * const client = new SwitchyardClient({
 *   url: 'wss://rt.example.com/ws',
 *   token: () => fetch('/api/switchyard-token').then((r) => r.json()).then((b) => b.token),
 * });
 * client.on('new-message', (m) => console.log(`${m.name ?? m.userId}: ${m.text}`));
 * client.connect();
 * await client.join('lobby');
 * await client.sendMessage('lobby', 'hello');
 * ```
 */
export class SwitchyardClient {
  private readonly options: Required<
    Omit<SwitchyardClientOptions, 'WebSocket' | 'logger' | 'reconnect' | 'url' | 'token' | 'onHandlerError'>
  >;
  private readonly urlSource: URL | UrlProvider;
  private readonly tokenSource: string | TokenProvider;
  private readonly WebSocketImpl: WebSocketConstructor | undefined;
  private readonly logger: ClientLogger | undefined;
  private readonly reconnectEnabled: boolean;
  private readonly backoff: Backoff;
  private readonly codec: Codec;
  private readonly emitter: Emitter<ClientEventMap>;

  private snapshot: ConnectionSnapshot = INITIAL_SNAPSHOT;
  private outboxSnapshot: OutboxSnapshot = Object.freeze({ queued: 0, inflight: 0 });

  /** Whether the app wants to be connected (connect() called, no terminal close since). */
  private wanted = false;
  /** Bumped whenever a connection attempt is superseded or cancelled. */
  private generation = 0;
  private socket: WebSocketLike | undefined;
  private connectedAt = 0;
  private lastUserId: string | undefined;
  private connectedOnce = false;
  private reconnectTimer: Timer | undefined;
  private connectTimer: Timer | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private pongTimer: Timer | undefined;
  private expiryTimer: Timer | undefined;
  private onlineListener: (() => void) | undefined;

  private refCounter = 0;
  private readonly requests = new Map<string, PendingRequest>();
  private readonly roomRequests = new Map<string, RoomId>();

  private readonly outbox: Outbox<PendingSend>;
  private readonly sendRefs = new Map<string, string>();

  private readonly rooms = new Map<RoomId, RoomEntry>();
  private readonly seqs = new RoomSeqs();

  private outgoing: Outgoing[] = [];
  private flushScheduled = false;

  constructor(options: SwitchyardClientOptions) {
    if (!options || (typeof options.token !== 'string' && typeof options.token !== 'function')) {
      throw new TypeError('SwitchyardClient: `token` must be a string or a function returning one');
    }
    // A fixed URL is checked now (a TypeError for a bad one); a provider's on every connect.
    this.urlSource = typeof options.url === 'function' ? options.url : resolveUrl(options.url);
    this.tokenSource = options.token;
    this.emitter = new Emitter<ClientEventMap>(options.onHandlerError);
    this.WebSocketImpl = options.WebSocket;
    this.logger = options.logger;
    this.reconnectEnabled = options.reconnect !== false;
    this.backoff = new Backoff(typeof options.reconnect === 'object' ? options.reconnect : {});
    this.options = {
      protocol: options.protocol ?? 'json',
      autoConnect: options.autoConnect ?? false,
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 5_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      ackTimeoutMs: options.ackTimeoutMs ?? 10_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      maxQueueSize: options.maxQueueSize ?? 100,
      maxQueueAgeMs: options.maxQueueAgeMs ?? 60_000,
      queueOverflow: options.queueOverflow ?? 'drop-oldest',
      maxFrameBytes: options.maxFrameBytes ?? 65_536,
      maxBatch: options.maxBatch ?? 100,
      reconnectOnOnline: options.reconnectOnOnline ?? true,
      generateTempId: options.generateTempId ?? randomId,
    };
    if (this.options.protocol !== 'json' && this.options.protocol !== 'msgpack') {
      throw new TypeError(`SwitchyardClient: unknown protocol ${String(this.options.protocol)}`);
    }
    this.codec = codecFor(this.options.protocol);
    this.outbox = new Outbox<PendingSend>({
      maxSize: this.options.maxQueueSize,
      maxAgeMs: this.options.maxQueueAgeMs,
      overflow: this.options.queueOverflow,
    });
    if (this.options.autoConnect) this.connect();
  }

  // ------------------------------------------------------------------ state & events

  /** The connection state. */
  get state(): ConnectionState {
    return this.snapshot.state;
  }

  /** `true` while `connected`. */
  get isConnected(): boolean {
    return this.snapshot.state === 'connected';
  }

  /**
   * The user id of the current connection, or of the last one while disconnected (from
   * `welcome`); `undefined` before the first connection.
   */
  get userId(): string | undefined {
    return this.snapshot.welcome?.userId ?? this.lastUserId;
  }

  /** The encoding in use. */
  get protocol(): Encoding {
    return this.options.protocol;
  }

  /** The connection snapshot (a stable object until something changes). */
  getSnapshot = (): ConnectionSnapshot => this.snapshot;

  /** The outbox counts (a stable object until they change). */
  getOutboxSnapshot = (): OutboxSnapshot => this.outboxSnapshot;

  /**
   * Subscribes to an event: a server message type (`'new-message'`, `'presence:join'`, …, `'*'`
   * for all) or a client event (`'state'`, `'connection'`, `'close'`, `'history-reset'`,
   * `'presence'`, `'outbox'`). Returns the function that unsubscribes.
   */
  on<K extends ClientEventName>(type: K, handler: (payload: ClientEventMap[K]) => void): Unsubscribe {
    return this.emitter.on(type, handler);
  }

  /** Like {@link on}, for one event only. */
  once<K extends ClientEventName>(type: K, handler: (payload: ClientEventMap[K]) => void): Unsubscribe {
    return this.emitter.once(type, handler);
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * Starts connecting (and reconnecting after losses) until {@link disconnect} or a close code
   * that must not be retried. Does nothing when already connecting or connected.
   */
  connect(): void {
    if (this.wanted) return;
    this.wanted = true;
    this.connectedOnce = false;
    this.backoff.reset();
    this.listenOnline(true);
    void this.open();
  }

  /**
   * Closes the connection and stops reconnecting. Rooms, the offline queue (within its age
   * limit) and seqs are kept: a later {@link connect} rejoins and resumes. Pending requests
   * (`ping`, `presenceSync`, `request`) reject with `closed`.
   */
  disconnect(code: number = CloseCode.NORMAL, reason = 'client disconnect'): void {
    this.wanted = false;
    this.generation += 1;
    this.listenOnline(false);
    this.clearTimer('reconnectTimer');
    const socket = this.socket;
    this.teardownSocket(new SwitchyardError('closed', 'disconnected by the client', { closeCode: code }));
    if (socket) this.closeQuietly(socket, code, reason);
    this.setSnapshot({ state: 'disconnected', lastError: undefined, nextRetryAt: undefined, welcome: undefined });
  }

  /**
   * Ends the client's work for good (e.g. on logout): disconnects, fails every waiting send
   * with `closed`, forgets every room and removes every event handler. `connect()` would start
   * afresh, with no rooms.
   */
  dispose(): void {
    this.disconnect();
    this.clearTimer('expiryTimer');
    this.failEntries(this.outbox.clear(), 'closed', 'the client was disposed');
    for (const room of [...this.rooms.values()]) this.dropRoom(room, 'the client was disposed');
    this.emitter.clear();
  }

  /**
   * Drops the current connection (if any) and connects again at once, with a fresh token:
   * for example after the user's name or permissions changed.
   */
  reconnect(): void {
    if (!this.wanted) {
      this.connect();
      return;
    }
    const socket = this.socket;
    this.generation += 1;
    this.clearTimer('reconnectTimer');
    this.teardownSocket(new SwitchyardError('connection_lost', 'reconnecting'));
    if (socket) this.closeQuietly(socket, CloseCode.NORMAL, 'client reconnect');
    void this.open();
  }

  // ------------------------------------------------------------------ rooms

  /**
   * Joins a room (with presence). Reference counted: every `join` needs its {@link leave}; the
   * server sees one join while any is held, and rejoins (resuming with `sinceSeq`) after every
   * reconnect. Resolves with the `room-joined` reply (at once if already joined); waits across
   * reconnects; rejects with the server's error (e.g. `forbidden`) or `closed` if left first.
   */
  join(roomId: RoomId): Promise<RoomJoinedMessage> {
    const room = this.retainRoom(roomId);
    if (!room) return Promise.reject(this.invalidRoom(roomId));
    room.joinCount += 1;
    const wait = deferred<RoomJoinedMessage>();
    if (room.requested === 'joined' && room.confirmed && room.lastReply?.type === 'room-joined') {
      wait.resolve({ ...room.lastReply, members: [...room.members.list] });
    } else {
      room.joinWaiters.push(wait);
    }
    this.markRoom(room);
    return handled(wait.promise);
  }

  /** Releases one {@link join}. The server is told to leave when the last one is released. */
  leave(roomId: RoomId): void {
    const room = this.rooms.get(roomId);
    if (!room || room.joinCount === 0) return;
    room.joinCount -= 1;
    this.markRoom(room);
  }

  /**
   * Subscribes to a room without presence (a spectator). Reference counted like {@link join};
   * a room both joined and subscribed is joined. Resolves with the reply that established the
   * membership (`subscribed`, or `room-joined` when the room is joined).
   */
  subscribe(roomId: RoomId): Promise<SubscribedMessage | RoomJoinedMessage> {
    const room = this.retainRoom(roomId);
    if (!room) return Promise.reject(this.invalidRoom(roomId));
    room.subscribeCount += 1;
    const wait = deferred<SubscribedMessage | RoomJoinedMessage>();
    if (room.requested !== 'none' && room.confirmed && room.lastReply) wait.resolve(room.lastReply);
    else room.subscribeWaiters.push(wait);
    this.markRoom(room);
    return handled(wait.promise);
  }

  /** Releases one {@link subscribe}. */
  unsubscribe(roomId: RoomId): void {
    const room = this.rooms.get(roomId);
    if (!room || room.subscribeCount === 0) return;
    room.subscribeCount -= 1;
    this.markRoom(room);
  }

  /** The room as the client tracks it, or `undefined` if neither joined nor subscribed. */
  getRoom(roomId: RoomId): RoomInfo | undefined {
    const room = this.rooms.get(roomId);
    if (!room) return undefined;
    return {
      roomId,
      desired: desiredOf(room),
      membership: room.confirmed ? room.requested : 'none',
      joinCount: room.joinCount,
      subscribeCount: room.subscribeCount,
      position: this.seqs.position(roomId),
      members: room.members.list,
    };
  }

  /** Every room the client tracks. */
  getRooms(): RoomInfo[] {
    return [...this.rooms.keys()].map((id) => this.getRoom(id)!);
  }

  /**
   * A room's members, kept from `room-joined`, `presence:join`/`leave` and `presence:sync`.
   * An immutable array, replaced on change. Empty for rooms the client does not track. While
   * not connected it is the last known list.
   */
  getMembers(roomId: RoomId): readonly Member[] {
    return this.rooms.get(roomId)?.members.list ?? EMPTY_MEMBERS;
  }

  /** Asks the server for a room's full member list (needs no join). */
  presenceSync(roomId: RoomId): Promise<PresenceSyncMessage> {
    if (!validRoomId(roomId)) return Promise.reject(this.invalidRoom(roomId));
    return this.request({ type: 'presence:sync', roomId }) as Promise<PresenceSyncMessage>;
  }

  // ------------------------------------------------------------------ durable sends

  /**
   * Sends a chat message to a joined room. Resolves with the ack; rejects with a
   * {@link SwitchyardError}: the server's code (`rate_limited` with `retryAfterMs`, `not_joined`,
   * `too_large`, …), `timeout`, `queue_full` or `queue_expired`.
   *
   * While not connected the message waits in the offline queue and is sent on reconnect; a
   * message in flight when the connection drops is sent again. Both keep their `tempId`, so
   * the server delivers it once. Sending the same `tempId` again while it is pending returns
   * the pending promise.
   */
  sendMessage(roomId: RoomId, text: string, data?: unknown, options: SendOptions = {}): Promise<Ack> {
    if (!validRoomId(roomId)) return Promise.reject(this.invalidRoom(roomId));
    if (typeof text !== 'string' || text.length === 0) {
      return Promise.reject(new SwitchyardError('invalid', 'text must be a non-empty string', { roomId }));
    }
    const tempId = options.tempId ?? this.options.generateTempId();
    const frame: MessageRequest = { type: 'message', roomId, tempId, text };
    if (data !== undefined && data !== null) frame.data = data;
    return this.enqueueSend(frame);
  }

  /** Publishes a custom durable event (the token needs `publish: true`). Same delivery rules as {@link sendMessage}. */
  publish(roomId: RoomId, event: string, data: unknown = null, options: SendOptions = {}): Promise<Ack> {
    if (!validRoomId(roomId)) return Promise.reject(this.invalidRoom(roomId));
    if (typeof event !== 'string' || event.length === 0) {
      return Promise.reject(new SwitchyardError('invalid', 'event must be a non-empty string', { roomId }));
    }
    const tempId = options.tempId ?? this.options.generateTempId();
    return this.enqueueSend({ type: 'publish', roomId, tempId, event, data: data === undefined ? null : data });
  }

  /** Whether a send with that tempId is waiting (queued or in flight). */
  isPending(roomId: RoomId, tempId: TempId): boolean {
    return this.outbox.has(outboxKey(roomId, tempId));
  }

  // ------------------------------------------------------------------ volatile sends

  /** Tells the room this user is typing. Dropped (returns `false`) when not connected. */
  startTyping(roomId: RoomId): boolean {
    return validRoomId(roomId) && this.sendVolatile({ type: 'typing:start', roomId });
  }

  /** Tells the room this user stopped typing. Dropped (returns `false`) when not connected. */
  stopTyping(roomId: RoomId): boolean {
    return validRoomId(roomId) && this.sendVolatile({ type: 'typing:stop', roomId });
  }

  /**
   * Moves this user's cursor in a room (throttle it yourself, or use the React `useCursors`).
   * Throws `invalid` for a non-finite coordinate; returns `false` when not connected.
   */
  moveCursor(roomId: RoomId, x: number, y: number): boolean {
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      throw new SwitchyardError('invalid', 'cursor coordinates must be finite numbers', { roomId });
    }
    return validRoomId(roomId) && this.sendVolatile({ type: 'cursor:move', roomId, x, y });
  }

  /** Removes this user's cursor from a room. Returns `false` when not connected. */
  leaveCursor(roomId: RoomId): boolean {
    return validRoomId(roomId) && this.sendVolatile({ type: 'cursor:leave', roomId });
  }

  // ------------------------------------------------------------------ requests

  /** Round trip to the server: resolves with its `pong` (`ts` is the server clock). */
  ping(): Promise<PongMessage> {
    return this.request({ type: 'ping' }) as Promise<PongMessage>;
  }

  /**
   * Sends a message with a fresh `ref` and resolves with the server's reply carrying that `ref`
   * (or rejects with its `error`, `timeout` after `requestTimeoutMs`, `connection_lost`). For
   * `message`/`publish` use {@link sendMessage}/{@link publish}; for rooms {@link join} etc.
   */
  request(message: ClientMessage): Promise<ServerMessage> {
    if (!this.isOpen()) {
      return Promise.reject(new SwitchyardError('connection_lost', 'not connected'));
    }
    const ref = this.nextRef('q');
    return new Promise<ServerMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.requests.delete(ref);
        reject(new SwitchyardError('timeout', `no reply to ${message.type} within ${this.options.requestTimeoutMs} ms`, { ref }));
      }, this.options.requestTimeoutMs);
      this.requests.set(ref, { resolve, reject, timer });
      this.pushFrame({ ...message, ref } as ClientMessage);
    });
  }

  /**
   * Sends any client message as is, when connected (returns `false` otherwise). An escape hatch:
   * prefer the typed methods, which keep the client's bookkeeping (rooms, outbox) right.
   */
  send(message: ClientMessage): boolean {
    if (!this.isOpen()) return false;
    this.pushFrame(message);
    return true;
  }

  // =====================================================================================
  // Connection internals
  // =====================================================================================

  private async open(): Promise<void> {
    const generation = ++this.generation;
    this.clearTimer('reconnectTimer');
    this.setSnapshot({
      state: this.connectedOnce ? 'reconnecting' : 'connecting',
      nextRetryAt: undefined,
      welcome: undefined,
    });

    let endpoint: URL;
    try {
      endpoint = typeof this.urlSource === 'function' ? resolveUrl(await this.urlSource()) : this.urlSource;
    } catch (cause) {
      if (generation !== this.generation) return;
      this.log('warn', 'URL provider failed', cause);
      this.retryLater(new SwitchyardError('connection_lost', `could not get the gateway URL: ${describe(cause)}`, { cause }));
      return;
    }
    if (generation !== this.generation || !this.wanted) return;

    let token: string;
    try {
      const value = typeof this.tokenSource === 'function' ? await this.tokenSource() : await this.tokenSource;
      if (typeof value !== 'string' || value.length === 0) {
        throw new TypeError('the token provider returned no token');
      }
      token = value;
    } catch (cause) {
      if (generation !== this.generation) return;
      this.log('warn', 'token provider failed', cause);
      this.retryLater(new SwitchyardError('token', `could not get a token: ${describe(cause)}`, { cause }));
      return;
    }
    if (generation !== this.generation || !this.wanted) return;

    const Impl = this.WebSocketImpl ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Impl) {
      this.wanted = false;
      this.setSnapshot({
        state: 'disconnected',
        lastError: new SwitchyardError(
          'invalid',
          'no WebSocket implementation: pass the `WebSocket` option (e.g. from the `ws` package on Node 20)',
        ),
      });
      return;
    }
    const url = new URL(endpoint.href);
    url.searchParams.set('token', token);
    let socket: WebSocketLike;
    try {
      socket = new Impl(url.href, [SUBPROTOCOL[this.options.protocol]]);
    } catch (cause) {
      this.retryLater(new SwitchyardError('connection_lost', `could not open the WebSocket: ${describe(cause)}`, { cause }));
      return;
    }
    this.socket = socket;
    try {
      socket.binaryType = 'arraybuffer';
    } catch {
      /* not settable on this implementation: decodeFrame copes with Uint8Array/Buffer */
    }
    socket.onopen = () => this.log('debug', 'socket open');
    socket.onmessage = (event) => {
      if (this.socket === socket) this.onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (this.socket === socket) this.onSocketClose(event);
    };
    socket.onerror = () => {
      /* a close event always follows */
    };
    this.connectTimer = setTimeout(() => {
      if (this.socket === socket) this.abandonSocket('connect timeout: no welcome from the server');
    }, this.options.connectTimeoutMs);
  }

  /** Gives up on a socket that stopped answering, without waiting for the close handshake. */
  private abandonSocket(reason: string): void {
    const socket = this.socket;
    if (!socket) return;
    this.closeQuietly(socket, CloseCode.HEARTBEAT_TIMEOUT, reason);
    this.onSocketClose({ code: CloseCode.HEARTBEAT_TIMEOUT, reason, wasClean: false });
  }

  private onSocketClose(event: SocketCloseEvent): void {
    const hadWelcome = this.snapshot.welcome !== undefined;
    const lived = hadWelcome ? Date.now() - this.connectedAt : 0;
    const code = typeof event.code === 'number' ? event.code : CloseCode.ABNORMAL;
    const reason = typeof event.reason === 'string' ? event.reason : '';
    const wasClean = event.wasClean ?? code !== CloseCode.ABNORMAL;
    const detail = `${code}${reason ? ` ${reason}` : ''}`;
    this.log('debug', `socket closed: ${detail}`);

    const terminal = TERMINAL_CLOSE_CODES.has(code) || !this.reconnectEnabled;
    const error = new SwitchyardError(
      terminal ? 'closed' : 'connection_lost',
      hadWelcome ? `connection closed (${detail})` : `could not connect (${detail})`,
      { closeCode: code },
    );
    this.teardownSocket(error);

    if (terminal || !this.wanted) {
      this.wanted = false;
      this.listenOnline(false);
      const info: CloseInfo = { code, reason, wasClean, willReconnect: false, delayMs: undefined };
      this.setSnapshot({ state: 'disconnected', lastError: error, lastClose: info, welcome: undefined, nextRetryAt: undefined });
      this.emitter.emit('close', info);
      return;
    }
    const immediate = IMMEDIATE_CLOSE_CODES.has(code) && hadWelcome && lived >= MIN_STABLE_MS;
    const delayMs = immediate ? 0 : this.backoff.next();
    const info: CloseInfo = { code, reason, wasClean, willReconnect: true, delayMs };
    this.scheduleReconnect(delayMs, error, info);
    this.emitter.emit('close', info);
  }

  /** A failed attempt before any socket: back off and try again. */
  private retryLater(error: SwitchyardError): void {
    if (!this.wanted) return;
    if (!this.reconnectEnabled) {
      this.wanted = false;
      this.setSnapshot({ state: 'disconnected', lastError: error });
      return;
    }
    this.scheduleReconnect(this.backoff.next(), error);
  }

  private scheduleReconnect(delayMs: number, error: SwitchyardError, lastClose?: CloseInfo): void {
    this.clearTimer('reconnectTimer');
    this.setSnapshot({
      ...(lastClose ? { lastClose } : {}),
      state: 'reconnecting',
      lastError: error,
      attempt: this.backoff.attempt,
      nextRetryAt: Date.now() + delayMs,
      welcome: undefined,
    });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.wanted) void this.open();
    }, delayMs);
  }

  /**
   * Forgets the current socket (its events are ignored from now on) and resets what belonged to
   * it: timers, requests waiting for a reply, room states; durable sends in flight go back to
   * the queue.
   */
  private teardownSocket(error: SwitchyardError): void {
    const socket = this.socket;
    this.socket = undefined;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    }
    this.clearTimer('connectTimer');
    this.clearTimer('pongTimer');
    if (this.pingTimer !== undefined) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
    this.outgoing = [];

    for (const [ref, pending] of this.requests) {
      clearTimeout(pending.timer);
      pending.reject(new SwitchyardError(error.code === 'closed' ? 'closed' : 'connection_lost', error.message, { ref, closeCode: error.closeCode }));
    }
    this.requests.clear();
    this.roomRequests.clear();
    this.sendRefs.clear();

    for (const room of this.rooms.values()) {
      room.requested = 'none';
      room.confirmed = false;
      room.resumedFrom = undefined;
      room.requestRef = undefined;
    }
    for (const entry of this.outbox.list()) {
      if (entry.state === 'inflight') {
        clearTimeout(entry.payload.ackTimer);
        entry.payload.ackTimer = undefined;
        entry.payload.ref = undefined;
      }
    }
    this.failEntries(this.outbox.requeueInflight(), 'queue_full', 'the offline queue is full');
    this.armExpiry();
    this.publishOutbox();
  }

  private closeQuietly(socket: WebSocketLike, code: number, reason: string): void {
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(code, reason);
    } catch {
      try {
        socket.close();
      } catch {
        /* already closed */
      }
    }
  }

  private isOpen(): boolean {
    return this.socket !== undefined && this.snapshot.welcome !== undefined && this.socket.readyState === SOCKET_OPEN;
  }

  private listenOnline(on: boolean): void {
    const target = globalThis as { addEventListener?: typeof addEventListener; removeEventListener?: typeof removeEventListener };
    if (typeof target.addEventListener !== 'function' || !this.options.reconnectOnOnline) return;
    if (on && !this.onlineListener) {
      this.onlineListener = () => {
        if (this.wanted && this.reconnectTimer !== undefined) {
          this.log('debug', 'back online: reconnecting now');
          void this.open();
        }
      };
      target.addEventListener('online', this.onlineListener);
    } else if (!on && this.onlineListener) {
      target.removeEventListener?.('online', this.onlineListener);
      this.onlineListener = undefined;
    }
  }

  private startHeartbeat(heartbeatMs: number): void {
    const every = this.options.pingIntervalMs;
    if (!(every > 0)) return;
    const interval = heartbeatMs > 0 ? Math.min(every, heartbeatMs) : every;
    this.pingTimer = setInterval(() => {
      if (!this.isOpen()) return;
      this.pushFrame({ type: 'ping' });
      if (this.pongTimer === undefined) {
        this.pongTimer = setTimeout(() => {
          this.pongTimer = undefined;
          this.abandonSocket('heartbeat timeout');
        }, this.options.pongTimeoutMs);
      }
    }, interval);
  }

  private clearTimer(name: 'reconnectTimer' | 'connectTimer' | 'pongTimer' | 'expiryTimer'): void {
    const timer = this[name];
    if (timer !== undefined) clearTimeout(timer);
    this[name] = undefined;
  }

  private setSnapshot(patch: Partial<ConnectionSnapshot>): void {
    const previous = this.snapshot;
    const next = { ...previous, ...patch };
    let changed = false;
    for (const key of Object.keys(next) as (keyof ConnectionSnapshot)[]) {
      if (next[key] !== previous[key]) {
        changed = true;
        break;
      }
    }
    if (!changed) return;
    this.snapshot = Object.freeze(next);
    this.emitter.emit('connection', this.snapshot);
    if (next.state !== previous.state) {
      this.emitter.emit('state', { state: next.state, previous: previous.state, snapshot: this.snapshot });
    }
  }

  private log(level: 'debug' | 'warn', message: string, ...details: unknown[]): void {
    this.logger?.[level]?.(`[switchyard] ${message}`, ...details);
  }

  // =====================================================================================
  // Incoming
  // =====================================================================================

  private onFrame(data: unknown): void {
    this.clearTimer('pongTimer'); // any frame proves the connection alive
    let messages: ServerMessage[];
    try {
      messages = this.codec.decode(data);
    } catch (cause) {
      this.log('warn', 'undecodable frame from the server', cause);
      return;
    }
    const socket = this.socket;
    for (const message of messages) {
      // A handler may have closed or replaced the socket mid-batch: the rest belongs to it.
      if (this.socket !== socket) break;
      this.handle(message);
    }
  }

  private handle(message: ServerMessage): void {
    switch (message.type) {
      case 'welcome':
        this.onWelcome(message);
        break;
      case 'room-joined':
      case 'subscribed':
        this.onRoomReply(message);
        break;
      case 'ack':
        this.onAck(message);
        break;
      case 'new-message':
        if (!this.seqs.accept(message.roomId, message.seq)) return; // duplicate
        break;
      case 'event':
        if (message.roomId !== undefined && typeof message.seq === 'number' && !this.seqs.accept(message.roomId, message.seq)) {
          return;
        }
        break;
      case 'room-reset':
        this.seqs.tracker(message.roomId).reset(message.epoch, message.seq);
        this.emitter.emit('history-reset', { roomId: message.roomId, reason: 'room-reset', epoch: message.epoch, seq: message.seq });
        break;
      case 'presence:join':
        this.updateMembers(message.roomId, (list) => list.upsert(message.member));
        break;
      case 'presence:leave':
        this.updateMembers(message.roomId, (list) => list.remove(message.userId));
        break;
      case 'presence:sync':
        this.updateMembers(message.roomId, (list) => list.replace(message.members));
        break;
      case 'error':
        this.onErrorReply(message);
        break;
      default:
        break;
    }
    if ('ref' in message && message.ref !== undefined && message.type !== 'error') {
      this.settleRequest(message.ref, message);
    }
    this.emitter.emit(message.type, message as never);
    this.emitter.emit('*', message);
  }

  private onWelcome(welcome: WelcomeMessage): void {
    this.clearTimer('connectTimer');
    this.backoff.reset();
    this.connectedAt = Date.now();
    this.connectedOnce = true;
    this.lastUserId = welcome.userId;
    this.setSnapshot({
      state: 'connected',
      welcome,
      lastError: undefined,
      attempt: 0,
      nextRetryAt: undefined,
    });
    this.startHeartbeat(welcome.heartbeatMs);
    // Rooms first (with their resume positions), then the queued sends, in order.
    for (const room of [...this.rooms.values()]) {
      if (desiredOf(room) === 'none') this.dropRoom(room, 'left before the connection was made');
      else this.markRoom(room);
    }
    this.failEntries(this.outbox.expire(), 'queue_expired', 'waited too long for a connection');
    for (const entry of this.outbox.takeQueued()) this.transmitSend(entry);
    this.armExpiry();
    this.publishOutbox();
  }

  private onRoomReply(reply: RoomJoinedMessage | SubscribedMessage): void {
    if (reply.ref !== undefined) this.roomRequests.delete(String(reply.ref));
    const room = this.rooms.get(reply.roomId);
    const expected = reply.type === 'room-joined' ? 'joined' : 'subscribed';
    if (!room || room.requested !== expected) return; // superseded by a later request
    const tracker = this.seqs.tracker(reply.roomId);
    const resumed = room.resumedFrom;
    let reset: HistoryResetEvent | undefined;
    if (tracker.epoch !== undefined && tracker.epoch !== reply.epoch) {
      reset = { roomId: reply.roomId, reason: 'epoch-changed', epoch: reply.epoch, seq: reply.seq };
    } else if (resumed && reply.recovered === false) {
      reset = { roomId: reply.roomId, reason: 'not-recovered', epoch: reply.epoch, seq: reply.seq };
    }
    if (reset) {
      tracker.reset(reply.epoch, reply.seq);
    } else {
      tracker.epoch = reply.epoch;
      tracker.advanceTo(reply.seq);
    }
    room.confirmed = true;
    room.lastReply = reply;
    if (reply.type === 'room-joined') {
      room.members.replace(reply.members);
      this.emitter.emit('presence', { roomId: room.roomId, members: room.members.list });
    }
    if (reset) this.emitter.emit('history-reset', reset);
    if (reply.type === 'room-joined') {
      for (const w of room.joinWaiters.splice(0)) w.resolve(reply);
    }
    for (const w of room.subscribeWaiters.splice(0)) w.resolve(reply);
  }

  private onErrorReply(error: ErrorMessage): void {
    if (error.ref === undefined) {
      this.log('warn', `server error: ${error.code}: ${error.message}`);
      return;
    }
    const ref = String(error.ref);
    const roomId = this.roomRequests.get(ref);
    if (roomId !== undefined) {
      this.roomRequests.delete(ref);
      const room = this.rooms.get(roomId);
      if (room && room.requestRef === ref) {
        room.requested = 'none';
        room.requestRef = undefined;
        room.confirmed = false;
        const err = this.serverError(error, roomId);
        for (const w of room.joinWaiters.splice(0)) w.reject(err);
        for (const w of room.subscribeWaiters.splice(0)) w.reject(err);
        if (err.retryable && desiredOf(room) !== 'none') this.retryRoomLater(room, error.retryAfterMs);
      }
      return;
    }
    const pending = this.requests.get(ref);
    if (pending) {
      this.requests.delete(ref);
      clearTimeout(pending.timer);
      pending.reject(this.serverError(error));
    }
  }

  private settleRequest(ref: Ref, message: ServerMessage): void {
    const key = String(ref);
    const pending = this.requests.get(key);
    if (!pending) return;
    this.requests.delete(key);
    clearTimeout(pending.timer);
    pending.resolve(message);
  }

  private serverError(error: ErrorMessage, roomId?: RoomId): SwitchyardError {
    return new SwitchyardError(error.code as SwitchyardErrorCode, error.message, {
      ref: error.ref,
      retryAfterMs: error.retryAfterMs,
      roomId,
      fromServer: true,
    });
  }

  private updateMembers(roomId: RoomId, change: (list: MemberList) => boolean): void {
    const room = this.rooms.get(roomId);
    if (!room) return;
    if (change(room.members)) this.emitter.emit('presence', { roomId, members: room.members.list });
  }

  // =====================================================================================
  // Rooms
  // =====================================================================================

  private retainRoom(roomId: RoomId): RoomEntry | undefined {
    if (!validRoomId(roomId)) return undefined;
    let room = this.rooms.get(roomId);
    if (!room) {
      room = {
        roomId,
        joinCount: 0,
        subscribeCount: 0,
        requested: 'none',
        confirmed: false,
        resumedFrom: undefined,
        requestRef: undefined,
        lastReply: undefined,
        joinWaiters: [],
        subscribeWaiters: [],
        retryTimer: undefined,
        members: new MemberList(),
      };
      this.rooms.set(roomId, room);
    }
    return room;
  }

  private invalidRoom(roomId: unknown): SwitchyardError {
    return new SwitchyardError('invalid', `invalid room id ${JSON.stringify(roomId)}: 1 to 128 characters of A-Z a-z 0-9 _ - : . @`);
  }

  /**
   * Records that a room's wanted membership may have changed. Joins and leaves are sent in a
   * microtask, in order with the frames around them, and coalesced: a leave followed by a join
   * in the same tick (React StrictMode's double effects) sends nothing.
   */
  private markRoom(room: RoomEntry): void {
    const desired = desiredOf(room);
    if (!this.isOpen()) {
      if (desired === 'none' && room.requested === 'none') this.dropRoom(room, 'left before it was joined');
      return;
    }
    for (let i = this.outgoing.length - 1; i >= 0; i--) {
      const item = this.outgoing[i]!;
      const itemRoom = item.kind === 'room' ? item.roomId : 'roomId' in item.message ? item.message.roomId : undefined;
      if (itemRoom !== room.roomId) continue;
      if (item.kind === 'room') {
        item.desired = desired;
        return;
      }
      break;
    }
    this.outgoing.push({ kind: 'room', roomId: room.roomId, desired });
    this.scheduleFlush();
  }

  /** The frames that take a room from its requested membership to `desired`. */
  private reconcileRoom(roomId: RoomId, desired: Membership): ClientMessage[] {
    const room = this.rooms.get(roomId);
    if (!room) return [];
    const current = room.requested;
    const frames: ClientMessage[] = [];
    if (desired === 'none') {
      if (current !== 'none') {
        frames.push(current === 'joined' ? { type: 'leave-room', roomId } : { type: 'unsubscribe', roomId });
      }
      this.dropRoom(room, 'left before the join completed');
      return frames;
    }
    if (desired === current) {
      // Nothing to change on the server; a new join() may still be waiting for a reply.
    } else {
      if (desired === 'subscribed' && current === 'joined') {
        // The server has no "leave presence but stay": leave, then subscribe from where we are.
        frames.push({ type: 'leave-room', roomId });
      }
      const position = this.seqs.position(roomId);
      const ref = this.nextRef('r');
      this.roomRequests.set(ref, roomId);
      room.requested = desired;
      room.confirmed = false;
      room.resumedFrom = position;
      room.requestRef = ref;
      const request = desired === 'joined' ? ('join-room' as const) : ('subscribe' as const);
      frames.push(position ? { type: request, roomId, sinceSeq: position.sinceSeq, epoch: position.epoch, ref } : { type: request, roomId, ref });
    }
    if (desired === current && room.confirmed && room.lastReply) {
      // Already there: answer join()/subscribe() calls made while it was.
      if (room.lastReply.type === 'room-joined') {
        const reply = { ...room.lastReply, members: [...room.members.list] };
        for (const w of room.joinWaiters.splice(0)) w.resolve(reply);
      }
      for (const w of room.subscribeWaiters.splice(0)) w.resolve(room.lastReply);
    }
    return frames;
  }

  /**
   * Asks again for a room the server refused for a passing reason (`unavailable`: a node busy
   * with a reconnect storm, or its broker down), while the room is still wanted: after the
   * server's `retryAfterMs` (1 s without), plus up to half that again so that the clients of a
   * storm do not all come back together. A reconnect meanwhile asks anyway.
   */
  private retryRoomLater(room: RoomEntry, retryAfterMs: number | undefined): void {
    if (room.retryTimer !== undefined) return;
    const delay = Math.max(retryAfterMs ?? 1000, 100) * (1 + Math.random() / 2);
    room.retryTimer = setTimeout(() => {
      room.retryTimer = undefined;
      if (this.rooms.get(room.roomId) === room && room.requested === 'none') this.markRoom(room);
    }, delay);
  }

  private dropRoom(room: RoomEntry, why: string): void {
    if (this.rooms.get(room.roomId) !== room) return;
    clearTimeout(room.retryTimer);
    room.retryTimer = undefined;
    this.rooms.delete(room.roomId);
    this.seqs.forget(room.roomId);
    const error = new SwitchyardError('closed', why, { roomId: room.roomId });
    for (const w of room.joinWaiters.splice(0)) w.reject(error);
    for (const w of room.subscribeWaiters.splice(0)) w.reject(error);
    if (room.members.clear()) this.emitter.emit('presence', { roomId: room.roomId, members: room.members.list });
  }

  // =====================================================================================
  // Outgoing
  // =====================================================================================

  private nextRef(prefix: string): string {
    this.refCounter += 1;
    return `${prefix}${this.refCounter}`;
  }

  private pushFrame(message: ClientMessage): void {
    this.outgoing.push({ kind: 'frame', message });
    this.scheduleFlush();
  }

  private sendVolatile(message: ClientMessage): boolean {
    if (!this.isOpen()) return false;
    this.pushFrame(message);
    return true;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    const items = this.outgoing;
    this.outgoing = [];
    const socket = this.socket;
    if (!socket || !this.isOpen() || items.length === 0) return;
    const messages: ClientMessage[] = [];
    for (const item of items) {
      if (item.kind === 'frame') messages.push(item.message);
      else messages.push(...this.reconcileRoom(item.roomId, item.desired));
    }
    this.transmit(socket, messages);
  }

  /** Sends messages in as few frames as the batch and frame limits allow. */
  private transmit(socket: WebSocketLike, messages: readonly ClientMessage[]): void {
    let parts: EncodedMessage[] = [];
    let bytes = 2;
    const sendParts = () => {
      if (parts.length === 0) return;
      socket.send(this.codec.batch(parts));
      parts = [];
      bytes = 2;
    };
    try {
      for (const message of messages) {
        const part = this.codec.encodeMessage(message);
        const size = this.codec.byteLength(part) + 1;
        if (parts.length >= this.options.maxBatch || (parts.length > 0 && bytes + size > this.options.maxFrameBytes)) {
          sendParts();
        }
        parts.push(part);
        bytes += size;
      }
      sendParts();
    } catch (cause) {
      // The socket closed under us: its close event (or the heartbeat) takes it from here.
      this.log('warn', 'send failed', cause);
    }
  }

  private enqueueSend(frame: MessageRequest | PublishRequest): Promise<Ack> {
    const key = outboxKey(frame.roomId, frame.tempId);
    const existing = this.outbox.get(key);
    if (existing) return existing.payload.deferred.promise;
    const size = this.codec.byteLength(this.codec.encodeMessage({ ...frame, ref: 'r0000000000' }));
    if (size > this.options.maxFrameBytes) {
      return Promise.reject(
        new SwitchyardError('too_large', `${frame.type} is ${size} bytes, over the ${this.options.maxFrameBytes}-byte frame limit`, {
          roomId: frame.roomId,
          tempId: frame.tempId,
        }),
      );
    }
    const pending: PendingSend = { frame, deferred: deferred<Ack>() };
    const { entry, evicted } = this.outbox.enqueue(key, pending);
    this.failEntries(evicted, 'queue_full', 'dropped from the full offline queue to make room for a newer send');
    if (!entry) {
      this.publishOutbox();
      return Promise.reject(
        new SwitchyardError('queue_full', `the offline queue is full (${this.options.maxQueueSize} sends waiting)`, {
          roomId: frame.roomId,
          tempId: frame.tempId,
        }),
      );
    }
    if (this.isOpen()) {
      this.outbox.markInflight(key);
      this.transmitSend(entry);
    } else {
      this.armExpiry();
    }
    this.publishOutbox();
    return pending.deferred.promise;
  }

  private transmitSend(entry: OutboxEntry<PendingSend>): void {
    const pending = entry.payload;
    const ref = this.nextRef('m');
    pending.ref = ref;
    this.sendRefs.set(ref, entry.key);
    clearTimeout(pending.ackTimer);
    pending.ackTimer = setTimeout(() => {
      if (this.outbox.get(entry.key) !== entry) return;
      this.outbox.settle(entry.key);
      this.sendRefs.delete(ref);
      this.publishOutbox();
      pending.deferred.reject(
        new SwitchyardError('timeout', `no ack within ${this.options.ackTimeoutMs} ms`, {
          roomId: pending.frame.roomId,
          tempId: pending.frame.tempId,
          ref,
        }),
      );
    }, this.options.ackTimeoutMs);
    this.pushFrame({ ...pending.frame, ref });
  }

  private onAck(ack: AckMessage): void {
    let key: string | undefined;
    if (ack.ref !== undefined) {
      key = this.sendRefs.get(String(ack.ref));
      this.sendRefs.delete(String(ack.ref));
    }
    if (key === undefined) {
      // No ref echoed: match the tempId among the sends in flight.
      key = this.outbox.list().find((e) => e.state === 'inflight' && e.payload.frame.tempId === ack.tempId)?.key;
    }
    if (key === undefined) return;
    const entry = this.outbox.settle(key);
    if (!entry) return;
    const pending = entry.payload;
    clearTimeout(pending.ackTimer);
    this.publishOutbox();
    if (ack.success) {
      pending.deferred.resolve(ack);
    } else {
      const body = ack.error ?? { code: 'internal', message: 'refused without a reason' };
      pending.deferred.reject(
        new SwitchyardError(body.code as SwitchyardErrorCode, body.message, {
          retryAfterMs: body.retryAfterMs,
          ref: ack.ref,
          tempId: ack.tempId,
          roomId: pending.frame.roomId,
          fromServer: true,
        }),
      );
    }
  }

  private failEntries(entries: readonly OutboxEntry<PendingSend>[], code: SwitchyardErrorCode, message: string): void {
    for (const entry of entries) {
      clearTimeout(entry.payload.ackTimer);
      entry.payload.deferred.reject(
        new SwitchyardError(code, message, { roomId: entry.payload.frame.roomId, tempId: entry.payload.frame.tempId }),
      );
    }
    if (entries.length > 0) this.publishOutbox();
  }

  /** Keeps a timer on the next queued send to expire, so stale sends fail even while offline. */
  private armExpiry(): void {
    this.clearTimer('expiryTimer');
    const at = this.outbox.nextExpiry();
    if (at === undefined) return;
    this.expiryTimer = setTimeout(() => {
      this.expiryTimer = undefined;
      this.failEntries(this.outbox.expire(), 'queue_expired', `waited more than ${this.options.maxQueueAgeMs} ms for a connection`);
      this.armExpiry();
    }, Math.max(0, at - Date.now()));
  }

  private publishOutbox(): void {
    const queued = this.outbox.queuedCount;
    const inflight = this.outbox.size - queued;
    if (queued === this.outboxSnapshot.queued && inflight === this.outboxSnapshot.inflight) return;
    this.outboxSnapshot = Object.freeze({ queued, inflight });
    this.emitter.emit('outbox', this.outboxSnapshot);
  }
}

const EMPTY_MEMBERS: readonly Member[] = Object.freeze([]);

/**
 * Marks a promise as handled, so that a caller who does not await it (a fire-and-forget
 * `join`) causes no unhandled-rejection report; callers who await it still see the rejection.
 */
function handled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

function outboxKey(roomId: RoomId, tempId: TempId): string {
  return `${roomId}\u0000${typeof tempId}:${String(tempId)}`;
}
