/**
 * Ids and colours.
 *
 * @module
 */

function hex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/**
 * A random UUID (v4) for `tempId`s: `crypto.randomUUID` where available (it needs a secure
 * context in browsers), else built from `crypto.getRandomValues`, else from `Math.random`.
 */
export function randomId(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const h = hex(bytes);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The server's cursor palette (protocol docs, section 6). */
export const CURSOR_PALETTE = [
  '#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4',
  '#f032e6', '#9a6324', '#469990', '#800000', '#808000', '#000075',
] as const;

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const encoder = /* @__PURE__ */ new TextEncoder();

/**
 * The colour the server gives a user's cursor (64-bit FNV-1a of the UTF-8 bytes of the user id,
 * modulo 12, into {@link CURSOR_PALETTE}), so avatars can match cursors before any cursor moved.
 */
export function colorForUser(userId: string): string {
  let h = FNV_OFFSET;
  for (const b of encoder.encode(userId)) h = BigInt.asUintN(64, (h ^ BigInt(b)) * FNV_PRIME);
  return CURSOR_PALETTE[Number(h % BigInt(CURSOR_PALETTE.length))]!;
}
