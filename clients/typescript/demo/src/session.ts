/**
 * The demo's identity and client: a user id per browser tab (sessionStorage), a display name,
 * and a token from the gateway's development endpoint, fetched anew on every (re)connect.
 */
import { sameOriginUrl, SwitchyardClient } from '@switchyard/client';

function stored(key: string, make: () => string): string {
  try {
    let value = sessionStorage.getItem(key);
    if (!value) {
      value = make();
      sessionStorage.setItem(key, value);
    }
    return value;
  } catch {
    return make(); // storage unavailable (privacy mode)
  }
}

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
}

const params = new URLSearchParams(location.search);

/** This tab's user id (`sub` of its tokens). */
export const userId = stored('switchyard.userId', () => `u-${randomHex(6)}`);

let displayName = params.get('name')?.trim() || stored('switchyard.name', () => `guest-${1000 + Math.floor(Math.random() * 9000)}`);

/** The room to start in: `?room=`, else `lobby`. */
export const initialRoom = params.get('room')?.trim() || 'lobby';

export function getName(): string {
  return displayName;
}

/** Changes the display name; the caller reconnects so that a new token carries it. */
export function setName(name: string): void {
  displayName = name;
  try {
    sessionStorage.setItem('switchyard.name', name);
  } catch {
    /* storage unavailable */
  }
}

async function fetchToken(): Promise<string> {
  const query = new URLSearchParams({ user: userId, name: displayName });
  const response = await fetch(`/dev/token?${query}`, { cache: 'no-store' });
  if (!response.ok) throw new Error(`/dev/token answered HTTP ${response.status}`);
  const body: unknown = await response.json();
  const token = (body as { token?: unknown } | null)?.token;
  if (typeof token !== 'string') throw new Error('/dev/token answered without a token');
  return token;
}

/** The one client of the page (exposed as `window.__switchyard` for end-to-end tests). */
export const client = new SwitchyardClient({ url: sameOriginUrl('/ws'), token: fetchToken });

declare global {
  interface Window {
    __switchyard?: SwitchyardClient;
  }
}
window.__switchyard = client;
