import { decode, encode } from '@msgpack/msgpack';
import { describe, expect, it } from 'vitest';
import { decodeFrame, FrameDecodeError, jsonCodec, msgpackCodec, utf8Length } from '../src/codec.js';
import type { ClientMessage } from '../src/types.js';

const a: ClientMessage = { type: 'ping', ref: 'r1' };
const b: ClientMessage = { type: 'typing:start', roomId: 'lobby' };

describe('codecs', () => {
  it('JSON: one message alone, several as an array', () => {
    expect(jsonCodec.batch([jsonCodec.encodeMessage(a)])).toBe('{"type":"ping","ref":"r1"}');
    expect(JSON.parse(jsonCodec.batch([a, b].map(jsonCodec.encodeMessage)) as string)).toEqual([a, b]);
  });

  it('MessagePack: batches decode as arrays, undefined fields are left out', () => {
    const parts = Array.from({ length: 20 }, (_, i) => msgpackCodec.encodeMessage({ type: 'ping', ref: i }));
    expect(decode(msgpackCodec.batch(parts) as Uint8Array)).toEqual(Array.from({ length: 20 }, (_, i) => ({ type: 'ping', ref: i })));
    const one = msgpackCodec.encodeMessage({ type: 'join-room', roomId: 'x', sinceSeq: undefined });
    expect(decode(one as Uint8Array)).toEqual({ type: 'join-room', roomId: 'x' });
  });

  it('decodes either kind of frame, single or batch', () => {
    expect(decodeFrame('{"type":"pong","ts":1}')).toEqual([{ type: 'pong', ts: 1 }]);
    const bytes = encode([{ type: 'pong', ts: 1 }, { type: 'pong', ts: 2 }]);
    expect(decodeFrame(bytes)).toHaveLength(2);
    expect(decodeFrame(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))).toHaveLength(2);
  });

  it('refuses frames that are not messages', () => {
    expect(() => decodeFrame('not json')).toThrow(FrameDecodeError);
    expect(() => decodeFrame('[1,2]')).toThrow(FrameDecodeError);
    expect(() => decodeFrame(42)).toThrow(FrameDecodeError);
  });

  it('measures UTF-8 lengths', () => {
    for (const s of ['', 'abc', 'é', '€', '😀', 'a😀b€', '\ud800x']) {
      expect(utf8Length(s)).toBe(new TextEncoder().encode(s).byteLength);
    }
  });
});
