import type { Member } from '@switchyard/client';
import { useCallback, useEffect, useMemo, useSyncExternalStore } from 'react';
import { useSwitchyardClient } from './context.js';
import { useRoomMembership, type RoomMode } from './membership.js';
import { useConnection } from './useConnection.js';

/** Options of {@link usePresence}. */
export interface UsePresenceOptions {
  /**
   * `join` (the default: this user is a member too) or `subscribe` (watch the members without
   * being one; the list comes from `presence:sync`).
   */
  mode?: RoomMode;
}

/** What {@link usePresence} returns. */
export interface UsePresenceResult {
  /** One entry per user, ordered by `joinedAt`. */
  members: readonly Member[];
  /** This user's own entry, when a member. */
  self: Member | undefined;
  /** `true` while not connected: the list is the last one known. */
  stale: boolean;
  /** A member by user id. */
  get: (userId: string) => Member | undefined;
}

const ignore = (): void => undefined;

/**
 * A room's members, kept from `room-joined`, `presence:join`, `presence:leave` and
 * `presence:sync`. Joins the room while mounted (see `mode`).
 *
 * @example
 * ```tsx
 * const { members } = usePresence('lobby');
 * ```
 */
export function usePresence(roomId: string, options: UsePresenceOptions = {}): UsePresenceResult {
  const client = useSwitchyardClient();
  const mode = options.mode ?? 'join';
  useRoomMembership(client, roomId, mode);

  const subscribe = useCallback(
    (onChange: () => void) =>
      client.on('presence', (e) => {
        if (e.roomId === roomId) onChange();
      }),
    [client, roomId],
  );
  const getSnapshot = useCallback(() => client.getMembers(roomId), [client, roomId]);
  const members = useSyncExternalStore(subscribe, getSnapshot, getSnapshot);

  // A spectator gets no member list with its `subscribed`: ask for one on every (re)subscribe.
  useEffect(() => {
    if (mode !== 'subscribe' || !roomId) return undefined;
    if (client.getRoom(roomId)?.membership === 'subscribed') client.presenceSync(roomId).catch(ignore);
    return client.on('subscribed', (m) => {
      if (m.roomId === roomId) client.presenceSync(roomId).catch(ignore);
    });
  }, [client, roomId, mode]);

  const { isConnected, welcome } = useConnection();
  const userId = welcome?.userId ?? client.userId;
  return useMemo(() => {
    const byId = new Map(members.map((m) => [m.userId, m]));
    return {
      members,
      self: userId === undefined ? undefined : byId.get(userId),
      stale: !isConnected,
      get: (id: string) => byId.get(id),
    };
  }, [members, userId, isConnected]);
}
