/**
 * Frame encoding: JSON text frames or MessagePack binary frames.
 *
 * A frame holds one message or an array of messages (a batch). The server sends in the encoding
 * of the negotiated subprotocol but the decoder accepts both kinds of frame at any time.
 *
 * @module
 */
import { decode as msgpackDecode, encode as msgpackEncode } from '@msgpack/msgpack';
import type { ClientMessage, Encoding, ServerMessage } from './types.js';

/** One encoded message: a JSON string or MessagePack bytes. */
export type EncodedMessage = string | Uint8Array;

/** Encodes client messages and decodes server frames. */
export interface Codec {
  readonly encoding: Encoding;
  /** Encodes one message: a frame of its own, or a part of a batch. */
  encodeMessage(message: ClientMessage): EncodedMessage;
  /** Joins encoded messages into one frame: the message itself for one, an array for several. */
  batch(parts: readonly EncodedMessage[]): EncodedMessage;
  /** Size of an encoded message in bytes (UTF-8 for JSON). */
  byteLength(part: EncodedMessage): number;
  /** The messages of a frame; throws {@link FrameDecodeError} on a frame that does not decode. */
  decode(data: unknown): ServerMessage[];
}

/** Thrown by {@link Codec.decode} for a frame that is not a message or a batch of messages. */
export class FrameDecodeError extends Error {
  override readonly name = 'FrameDecodeError';
}

function isArrayBufferView(value: unknown): value is ArrayBufferView {
  return ArrayBuffer.isView(value);
}

function toBytes(data: unknown): Uint8Array | undefined {
  if (data instanceof Uint8Array) return data; // includes Node's Buffer
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (isArrayBufferView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  // `ws` may hand out fragmented binary messages as an array of Buffers.
  if (Array.isArray(data) && data.every((d) => d instanceof Uint8Array)) {
    const parts = data as Uint8Array[];
    const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
  return undefined;
}

function asMessages(value: unknown): ServerMessage[] {
  const list = Array.isArray(value) ? value : [value];
  const out: ServerMessage[] = [];
  for (const item of list) {
    if (item !== null && typeof item === 'object' && typeof (item as { type?: unknown }).type === 'string') {
      out.push(item as ServerMessage);
    } else {
      throw new FrameDecodeError('frame holds something other than a message object');
    }
  }
  return out;
}

/** Decodes a frame of either encoding: a string is JSON, bytes are MessagePack. */
export function decodeFrame(data: unknown): ServerMessage[] {
  if (typeof data === 'string') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch (e) {
      throw new FrameDecodeError(`invalid JSON frame: ${(e as Error).message}`);
    }
    return asMessages(parsed);
  }
  const bytes = toBytes(data);
  if (!bytes) {
    throw new FrameDecodeError(
      typeof Blob !== 'undefined' && data instanceof Blob
        ? 'binary frame arrived as a Blob: set binaryType to "arraybuffer"'
        : 'unsupported frame data type',
    );
  }
  let parsed: unknown;
  try {
    parsed = msgpackDecode(bytes);
  } catch (e) {
    throw new FrameDecodeError(`invalid MessagePack frame: ${(e as Error).message}`);
  }
  return asMessages(parsed);
}

/** UTF-8 length of a string, without allocating. */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i += 1;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

function bytesOf(part: EncodedMessage): Uint8Array {
  if (typeof part === 'string') throw new TypeError('msgpack codec given a JSON part');
  return part;
}

/** JSON text frames (`switchyard.v1.json`). */
export const jsonCodec: Codec = {
  encoding: 'json',
  encodeMessage: (message) => JSON.stringify(message),
  batch: (parts) => (parts.length === 1 ? parts[0]! : `[${parts.join(',')}]`),
  byteLength: (part) => (typeof part === 'string' ? utf8Length(part) : part.byteLength),
  decode: decodeFrame,
};

/**
 * MessagePack binary frames (`switchyard.v1.msgpack`). `undefined` fields are left out, as JSON
 * does. The server refuses MessagePack `bin` and `ext` values, so `data` must not contain
 * `Uint8Array`s or `Date`s.
 */
export const msgpackCodec: Codec = {
  encoding: 'msgpack',
  encodeMessage: (message) => msgpackEncode(message, { ignoreUndefined: true }),
  batch: (parts) => {
    if (parts.length === 1) return parts[0]!;
    const n = parts.length;
    // Array header: fixarray up to 15 entries, else array 16 (batches never reach 65,536).
    const header = n < 16 ? Uint8Array.of(0x90 | n) : Uint8Array.of(0xdc, (n >> 8) & 0xff, n & 0xff);
    const bodies = parts.map(bytesOf);
    const out = new Uint8Array(header.byteLength + bodies.reduce((t, b) => t + b.byteLength, 0));
    out.set(header, 0);
    let at = header.byteLength;
    for (const b of bodies) {
      out.set(b, at);
      at += b.byteLength;
    }
    return out;
  },
  byteLength: (part) => (typeof part === 'string' ? utf8Length(part) : part.byteLength),
  decode: decodeFrame,
};

/** The codec of an encoding. */
export function codecFor(encoding: Encoding): Codec {
  return encoding === 'msgpack' ? msgpackCodec : jsonCodec;
}
