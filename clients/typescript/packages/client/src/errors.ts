/**
 * The one error class of the SDK, discriminated by `code`.
 *
 * @module
 */
import type { Ref, ServerErrorCode, TempId } from './types.js';

/**
 * Codes raised by the client itself (the server's are {@link ServerErrorCode}):
 *
 * - `timeout`: no ack (or reply) within `ackTimeoutMs` / `requestTimeoutMs`.
 * - `queue_full`: the offline queue was at its bound (`maxQueueSize`); see `queueOverflow`.
 * - `queue_expired`: waited longer than `maxQueueAgeMs` for a connection.
 * - `connection_lost`: a request's connection closed before its reply (requests other than
 *   `message`/`publish`, which are resent instead).
 * - `closed`: the connection was closed for good (close codes 1000, 1002, 1003, 1007, 1008, 1009),
 *   or {@link SwitchyardClient.disconnect} was called while a request waited.
 * - `token`: the token provider threw or returned something that is not a non-empty string.
 * - `invalid`: a call with invalid arguments (bad room id, empty text, non-finite coordinates).
 * - `protocol`: the server sent something the client could not decode.
 */
export type ClientErrorCode =
  | 'timeout'
  | 'queue_full'
  | 'queue_expired'
  | 'connection_lost'
  | 'closed'
  | 'token'
  | 'invalid'
  | 'protocol';

/** Every code a {@link SwitchyardError} may carry. Unknown server codes pass through as strings. */
export type SwitchyardErrorCode = ServerErrorCode | ClientErrorCode | (string & {});

/** Extra fields of a {@link SwitchyardError}. */
export interface SwitchyardErrorDetails {
  /** For `rate_limited`: how long to wait before a retry may be accepted. */
  retryAfterMs?: number;
  /** The `ref` of the request this error answers. */
  ref?: Ref;
  /** The `tempId` of the `message`/`publish` this error answers. */
  tempId?: TempId;
  /** The room concerned, when there is one. */
  roomId?: string;
  /** For `closed` / `connection_lost`: the WebSocket close code. */
  closeCode?: number;
  /** `true` when the error came from the server (an `error` frame or a refused `ack`). */
  fromServer?: boolean;
  cause?: unknown;
}

/**
 * An error of the Switchyard SDK. Server refusals keep the server's `code` and `retryAfterMs`.
 *
 * @example
 * ```ts
 * try {
 *   await client.sendMessage('lobby', 'hello');
 * } catch (e) {
 *   if (isSwitchyardError(e) && e.code === 'rate_limited') retryIn(e.retryAfterMs ?? 1000);
 * }
 * ```
 */
export class SwitchyardError extends Error {
  override readonly name = 'SwitchyardError';
  readonly code: SwitchyardErrorCode;
  readonly retryAfterMs: number | undefined;
  readonly ref: Ref | undefined;
  readonly tempId: TempId | undefined;
  readonly roomId: string | undefined;
  readonly closeCode: number | undefined;
  readonly fromServer: boolean;

  constructor(code: SwitchyardErrorCode, message: string, details: SwitchyardErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.retryAfterMs = details.retryAfterMs;
    this.ref = details.ref;
    this.tempId = details.tempId;
    this.roomId = details.roomId;
    this.closeCode = details.closeCode;
    this.fromServer = details.fromServer ?? false;
  }

  /** `true` for failures that may succeed when tried again later (rate limits, outages, timeouts). */
  get retryable(): boolean {
    return (
      this.code === 'rate_limited' ||
      this.code === 'unavailable' ||
      this.code === 'internal' ||
      this.code === 'timeout' ||
      this.code === 'queue_full' ||
      this.code === 'queue_expired' ||
      this.code === 'connection_lost'
    );
  }
}

/** Type guard for {@link SwitchyardError}. */
export function isSwitchyardError(value: unknown): value is SwitchyardError {
  return value instanceof SwitchyardError;
}
