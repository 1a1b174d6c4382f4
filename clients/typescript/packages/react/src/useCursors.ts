import { useCallback, useMemo, useSyncExternalStore } from 'react';
import { useSwitchyardClient } from './context.js';
import { CursorStore, type CursorOptions, type CursorPosition } from './cursorStore.js';
import { useRoomMembership } from './membership.js';
import { getSharedStore, useRetainedStore } from './store.js';
import { usePresence } from './usePresence.js';

/** A cursor with the name from the room's presence when known. */
export interface NamedCursor extends CursorPosition {
  readonly name: string | undefined;
}

/** What {@link useCursors} returns. */
export interface UseCursorsResult {
  /** Other users' cursors by user id (coordinates as they were sent: the app picks the space, e.g. 0..1). */
  cursors: ReadonlyMap<string, NamedCursor>;
  /** Moves this user's cursor, throttled (default 20 per second, the last position always sent). */
  move: (x: number, y: number) => void;
  /** Removes this user's cursor for the others. */
  leave: () => void;
}

/**
 * Live cursors of a room. Joins the room while mounted; this user's cursor is removed for
 * the others on unmount.
 *
 * @example
 * ```tsx
 * const { cursors, move, leave } = useCursors('board');
 * <div onPointerMove={(e) => move(e.nativeEvent.offsetX / width, e.nativeEvent.offsetY / height)}
 *      onPointerLeave={leave} />
 * ```
 */
export function useCursors(roomId: string, options: CursorOptions = {}): UseCursorsResult {
  const client = useSwitchyardClient();
  const key = roomId || '\u0000none';
  const store = getSharedStore(client, 'cursors', key, (c, id) => new CursorStore(c, id, options));
  useRetainedStore(client, 'cursors', key, store);
  useRoomMembership(client, roomId, 'join');
  const positions = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  const { get } = usePresence(roomId);
  const cursors = useMemo(() => {
    const named = new Map<string, NamedCursor>();
    for (const [userId, c] of positions) named.set(userId, { ...c, name: get(userId)?.name });
    return named as ReadonlyMap<string, NamedCursor>;
  }, [positions, get]);
  const move = useCallback((x: number, y: number) => store.move(x, y), [store]);
  const leave = useCallback(() => store.leave(), [store]);
  return { cursors, move, leave };
}
