/** The protocol's room id rule. */
export const ROOM_RE = /^[A-Za-z0-9_\-:.@]{1,128}$/;

/** "14:05" in the user's locale, or '' for a missing time. */
export function formatTime(ts: number | undefined): string {
  return typeof ts === 'number' ? new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
}

/** The first letter of a name, for an avatar. */
export function initial(name: string): string {
  return ([...name.trim()][0] ?? '?').toUpperCase();
}

/** Keeps a value between 0 and 1. */
export const clamp01 = (v: number): number => Math.min(1, Math.max(0, v));
