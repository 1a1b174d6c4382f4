/**
 * Wire types of the Switchyard protocol, v1 (`switchyard.v1.json` / `switchyard.v1.msgpack`).
 *
 * Every server message is a member of the {@link ServerMessage} discriminated union, keyed by
 * `type`; every client message of {@link ClientMessage}. Field names are the wire names.
 *
 * @module
 */

/** A room id: 1 to 128 characters of `A-Z a-z 0-9 _ - : . @`. Ids starting `user:` are reserved. */
export type RoomId = string;

/** Request/reply correlation id: a string of at most 64 characters, or a 64-bit signed integer. */
export type Ref = string | number;

/**
 * Client-chosen id of a `message` or `publish`, unique per user and room. Resending the same
 * `tempId` within 5 minutes is idempotent: the server answers with the first `ack` again.
 */
export type TempId = string | number;

/** Error codes the server uses in `error` frames and refused `ack`s. */
export type ServerErrorCode =
  | 'bad_request'
  | 'unknown_type'
  | 'forbidden'
  | 'not_joined'
  | 'rate_limited'
  | 'too_large'
  | 'unavailable'
  | 'internal';

/** A member of a room's presence: one entry per user, whatever number of tabs it has open. */
export interface Member {
  userId: string;
  name?: string;
  avatar?: string;
  /** Milliseconds since the Unix epoch. */
  joinedAt: number;
}

/** The error object of a refused `ack`. */
export interface AckErrorBody {
  code: ServerErrorCode | (string & {});
  message: string;
  retryAfterMs?: number;
}

// ---------------------------------------------------------------------------------------------
// Server to client
// ---------------------------------------------------------------------------------------------

/** Always the first message on a connection. */
export interface WelcomeMessage {
  type: 'welcome';
  connectionId: string;
  userId: string;
  node: string;
  heartbeatMs: number;
}

/** Reply to `ping`; `ts` is the server clock. */
export interface PongMessage {
  type: 'pong';
  ts: number;
  ref?: Ref;
}

/** Reply to `join-room`. */
export interface RoomJoinedMessage {
  type: 'room-joined';
  roomId: RoomId;
  /** Newest seq already assigned in the room (0 for none): the value to resume from. */
  seq: number;
  epoch: string;
  members: Member[];
  /** Present only when `sinceSeq` was sent: whether the gap could be filled. */
  recovered?: boolean;
  ref?: Ref;
}

/** Reply to `leave-room`. */
export interface RoomLeftMessage {
  type: 'room-left';
  roomId: RoomId;
  ref?: Ref;
}

/** Reply to `subscribe` (a spectator membership, without presence). */
export interface SubscribedMessage {
  type: 'subscribed';
  roomId: RoomId;
  seq: number;
  epoch: string;
  recovered?: boolean;
  ref?: Ref;
}

/** Reply to `unsubscribe`. */
export interface UnsubscribedMessage {
  type: 'unsubscribed';
  roomId: RoomId;
  ref?: Ref;
}

/** A successful `ack` of a `message` or `publish`. */
export interface AckSuccess {
  type: 'ack';
  tempId: TempId;
  success: true;
  /** The `id` of the delivered message or event. */
  serverId: string;
  seq: number;
  ts: number;
  ref?: Ref;
}

/** A refused `ack` of a `message` or `publish`. */
export interface AckFailure {
  type: 'ack';
  tempId: TempId;
  success: false;
  error: AckErrorBody;
  ref?: Ref;
}

/** Answer to a `message` or `publish`. */
export type AckMessage = AckSuccess | AckFailure;

/** A durable chat message, delivered to every connection in the room (the sender's included). */
export interface NewMessage<TData = unknown> {
  type: 'new-message';
  roomId: RoomId;
  id: string;
  seq: number;
  userId: string;
  name?: string;
  text: string;
  data?: TData;
  ts: number;
  tempId: TempId;
}

/**
 * An application event: from a client `publish` or the HTTP API (with `roomId` and `seq`), or
 * targeted at a user (no `roomId`, no `seq`).
 */
export interface EventMessage<TData = unknown> {
  type: 'event';
  roomId?: RoomId;
  event: string;
  data: TData;
  seq?: number;
  userId?: string;
  id?: string;
  ts?: number;
  tempId?: TempId;
}

export interface PresenceJoinMessage {
  type: 'presence:join';
  roomId: RoomId;
  member: Member;
}

export interface PresenceLeaveMessage {
  type: 'presence:leave';
  roomId: RoomId;
  userId: string;
}

/** Reply to `presence:sync`: the full member list. */
export interface PresenceSyncMessage {
  type: 'presence:sync';
  roomId: RoomId;
  members: Member[];
  ref?: Ref;
}

export interface TypingStartMessage {
  type: 'typing:start';
  roomId: RoomId;
  userId: string;
}

export interface TypingStopMessage {
  type: 'typing:stop';
  roomId: RoomId;
  userId: string;
}

export interface CursorMoveMessage {
  type: 'cursor:move';
  roomId: RoomId;
  userId: string;
  x: number;
  y: number;
  /** A CSS colour, stable per user. */
  color: string;
}

export interface CursorLeaveMessage {
  type: 'cursor:leave';
  roomId: RoomId;
  userId: string;
}

/** The room's history was lost on the server: seqs restart in a new epoch after `seq`. */
export interface RoomResetMessage {
  type: 'room-reset';
  roomId: RoomId;
  epoch: string;
  seq: number;
}

/** A refused request (other than `message`/`publish`), or a frame-level error. */
export interface ErrorMessage {
  type: 'error';
  code: ServerErrorCode | (string & {});
  message: string;
  ref?: Ref;
  retryAfterMs?: number;
}

/** Every message the server sends, discriminated by `type`. */
export type ServerMessage =
  | WelcomeMessage
  | PongMessage
  | RoomJoinedMessage
  | RoomLeftMessage
  | SubscribedMessage
  | UnsubscribedMessage
  | AckMessage
  | NewMessage
  | EventMessage
  | PresenceJoinMessage
  | PresenceLeaveMessage
  | PresenceSyncMessage
  | TypingStartMessage
  | TypingStopMessage
  | CursorMoveMessage
  | CursorLeaveMessage
  | RoomResetMessage
  | ErrorMessage;

/** The `type` of every server message. */
export type ServerMessageType = ServerMessage['type'];

/** Maps each server message type to its message. */
export type ServerMessageMap = { [K in ServerMessageType]: Extract<ServerMessage, { type: K }> };

// ---------------------------------------------------------------------------------------------
// Client to server
// ---------------------------------------------------------------------------------------------

interface WithRef {
  ref?: Ref;
}

export interface PingRequest extends WithRef {
  type: 'ping';
}
export interface JoinRoomRequest extends WithRef {
  type: 'join-room';
  roomId: RoomId;
  sinceSeq?: number;
  epoch?: string;
}
export interface LeaveRoomRequest extends WithRef {
  type: 'leave-room';
  roomId: RoomId;
}
export interface SubscribeRequest extends WithRef {
  type: 'subscribe';
  roomId: RoomId;
  sinceSeq?: number;
  epoch?: string;
}
export interface UnsubscribeRequest extends WithRef {
  type: 'unsubscribe';
  roomId: RoomId;
}
export interface MessageRequest extends WithRef {
  type: 'message';
  roomId: RoomId;
  tempId: TempId;
  text: string;
  data?: unknown;
}
export interface PublishRequest extends WithRef {
  type: 'publish';
  roomId: RoomId;
  tempId: TempId;
  event: string;
  data: unknown;
}
export interface TypingRequest extends WithRef {
  type: 'typing:start' | 'typing:stop';
  roomId: RoomId;
}
export interface CursorMoveRequest extends WithRef {
  type: 'cursor:move';
  roomId: RoomId;
  x: number;
  y: number;
}
export interface CursorLeaveRequest extends WithRef {
  type: 'cursor:leave';
  roomId: RoomId;
}
export interface PresenceSyncRequest extends WithRef {
  type: 'presence:sync';
  roomId: RoomId;
}

/** Every message a client may send, discriminated by `type`. */
export type ClientMessage =
  | PingRequest
  | JoinRoomRequest
  | LeaveRoomRequest
  | SubscribeRequest
  | UnsubscribeRequest
  | MessageRequest
  | PublishRequest
  | TypingRequest
  | CursorMoveRequest
  | CursorLeaveRequest
  | PresenceSyncRequest;

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

/** WebSocket subprotocol names. */
export const SUBPROTOCOL = {
  json: 'switchyard.v1.json',
  msgpack: 'switchyard.v1.msgpack',
} as const;

/** The encoding frames are sent in. */
export type Encoding = keyof typeof SUBPROTOCOL;

/** WebSocket close codes with a meaning in the protocol. */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  NO_STATUS: 1005,
  ABNORMAL: 1006,
  INVALID_PAYLOAD: 1007,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  TRY_AGAIN_LATER: 1013,
  /** Closed by this client: no `pong` (or any other frame) in time. Never sent by the server. */
  HEARTBEAT_TIMEOUT: 4000,
  TOKEN_EXPIRED: 4001,
  SLOW_CONSUMER: 4009,
} as const;

/** `roomId` rule of the protocol. */
export const ROOM_ID_PATTERN = /^[A-Za-z0-9_\-:.@]{1,128}$/;
