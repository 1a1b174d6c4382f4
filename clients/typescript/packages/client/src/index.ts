/**
 * `@switchyard/client`: a framework-free TypeScript client for the Switchyard real-time gateway,
 * for browsers and Node.
 *
 * @packageDocumentation
 */
export { SwitchyardClient } from './client.js';
export type {
  Ack,
  ClientEventMap,
  ClientEventName,
  ClientLogger,
  CloseInfo,
  ConnectionSnapshot,
  ConnectionState,
  HistoryResetEvent,
  HistoryResetReason,
  Membership,
  OutboxSnapshot,
  PresenceChangeEvent,
  RoomInfo,
  SendOptions,
  StateChangeEvent,
  SwitchyardClientOptions,
  TokenProvider,
  UrlProvider,
} from './client.js';
export { SwitchyardError, isSwitchyardError } from './errors.js';
export type { ClientErrorCode, SwitchyardErrorCode, SwitchyardErrorDetails } from './errors.js';
export { Backoff } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { Outbox } from './queue.js';
export type { EnqueueResult, OutboxEntry, OutboxOptions, OutboxState, OverflowPolicy } from './queue.js';
export { RoomSeqs, SeqTracker } from './dedupe.js';
export type { ResumePosition, SeqTrackerOptions } from './dedupe.js';
export { codecFor, decodeFrame, FrameDecodeError, jsonCodec, msgpackCodec } from './codec.js';
export type { Codec, EncodedMessage } from './codec.js';
export { Emitter } from './emitter.js';
export type { Unsubscribe } from './emitter.js';
export { MemberList } from './members.js';
export { colorForUser, CURSOR_PALETTE, randomId } from './ids.js';
export { resolveUrl, sameOriginUrl, SOCKET_OPEN } from './transport.js';
export type { SocketCloseEvent, SocketMessageEvent, WebSocketConstructor, WebSocketLike } from './transport.js';
export * from './types.js';
