import { useCallback, useMemo, useSyncExternalStore } from 'react';
import { useSwitchyardClient } from './context.js';
import { useRoomMembership } from './membership.js';
import { getSharedStore, useRetainedStore } from './store.js';
import { TypingStore, type TypingOptions, type TypingUser } from './typingStore.js';
import { usePresence } from './usePresence.js';

/** A typing user, with the name from the room's presence when known. */
export interface Typist extends TypingUser {
  readonly name: string | undefined;
}

/** What {@link useTyping} returns. */
export interface UseTypingResult {
  /** Other users typing now, in the order they started. */
  typing: readonly Typist[];
  /** Call on every keystroke (debounced: see {@link TypingOptions}). */
  notifyTyping: () => void;
  /** Call when the text is sent or cleared. */
  stopTyping: () => void;
}

/**
 * "X is typing…": who is typing in a room (expiring after `expireMs` without news), and
 * debounced notifications of this user's typing. Joins the room while mounted.
 *
 * @example
 * ```tsx
 * const { typing, notifyTyping, stopTyping } = useTyping('lobby');
 * <input onChange={(e) => { setText(e.target.value); notifyTyping(); }} />
 * ```
 */
export function useTyping(roomId: string, options: TypingOptions = {}): UseTypingResult {
  const client = useSwitchyardClient();
  const key = roomId || '\u0000none';
  const store = getSharedStore(client, 'typing', key, (c, id) => new TypingStore(c, id, options));
  useRetainedStore(client, 'typing', key, store);
  useRoomMembership(client, roomId, 'join');
  const typers = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  const { get } = usePresence(roomId);
  const typing = useMemo(() => typers.map((t) => ({ ...t, name: get(t.userId)?.name })), [typers, get]);
  const notifyTyping = useCallback(() => store.notifyTyping(), [store]);
  const stopTyping = useCallback(() => store.stopTyping(), [store]);
  return { typing, notifyTyping, stopTyping };
}

/**
 * A sentence for a typing line: "Ann is typing…", "Ann and Bob are typing…", "Several people
 * are typing…", or `''`.
 */
export function describeTyping(typing: readonly { userId: string; name?: string | undefined }[]): string {
  const names = typing.map((t) => t.name || t.userId);
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}
