/**
 * The WebSocket the client drives: the browser's, Node 22's global one, or `ws` on Node 20.
 *
 * @module
 */

// Handlers are declared bivariantly (as React's types do), so that implementations whose event
// types are richer than these minimal shapes (the DOM's, `ws`'s) are assignable.
type Listener<E> = { bivarianceHack(event: E): void }['bivarianceHack'];

/** The part of a WebSocket event the client reads. */
export interface SocketMessageEvent {
  data: unknown;
}

/** The part of a close event the client reads. */
export interface SocketCloseEvent {
  code: number;
  reason: string;
  wasClean?: boolean;
}

/**
 * The WebSocket surface the client uses: a subset of the WHATWG `WebSocket`, which the browser's
 * implementation, Node 22's global one and the `ws` package all provide.
 */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  onopen: Listener<unknown> | null;
  onmessage: Listener<SocketMessageEvent> | null;
  onclose: Listener<SocketCloseEvent> | null;
  onerror: Listener<unknown> | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor: `globalThis.WebSocket`, or `WebSocket` from the `ws` package. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** `WebSocket.OPEN`. */
export const SOCKET_OPEN = 1;

/**
 * Resolves the gateway URL: an absolute `ws:`/`wss:` URL is kept; `http:`/`https:` become
 * `ws:`/`wss:`; a relative URL (like `/ws`) is resolved against the page's location in a browser.
 */
export function resolveUrl(url: string | URL): URL {
  const base =
    typeof globalThis.location !== 'undefined' && typeof globalThis.location.href === 'string'
      ? globalThis.location.href
      : undefined;
  let resolved: URL;
  try {
    resolved = base === undefined ? new URL(url) : new URL(url, base);
  } catch {
    throw new TypeError(`invalid Switchyard URL ${String(url)}: give an absolute ws(s):// URL`);
  }
  if (resolved.protocol === 'http:') resolved.protocol = 'ws:';
  else if (resolved.protocol === 'https:') resolved.protocol = 'wss:';
  if (resolved.protocol !== 'ws:' && resolved.protocol !== 'wss:') {
    throw new TypeError(`invalid Switchyard URL ${resolved.href}: the scheme must be ws: or wss:`);
  }
  return resolved;
}

/**
 * The gateway URL of the page's own origin, `ws(s)://<location.host><path>`. Browser only.
 *
 * @example
 * ```ts
 * new SwitchyardClient({ url: sameOriginUrl(), token });
 * ```
 */
export function sameOriginUrl(path = '/ws'): string {
  if (typeof globalThis.location === 'undefined') {
    throw new TypeError('sameOriginUrl() needs a browser location; give an absolute URL instead');
  }
  const scheme = globalThis.location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${globalThis.location.host}${path}`;
}
