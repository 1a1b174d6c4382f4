import type { SwitchyardClient } from '@switchyard/client';
import { useEffect } from 'react';

/** How a hook holds its room: `join` (with presence, the default) or `subscribe` (a spectator). */
export type RoomMode = 'join' | 'subscribe';

const ignore = (): void => undefined;

/**
 * Holds a join (or subscription) of `roomId` while mounted. The client counts references, so
 * every hook on the same room shares one server membership, and StrictMode's unmount/re-mount
 * sends nothing. `null`/`undefined` holds nothing.
 */
export function useRoomMembership(client: SwitchyardClient, roomId: string | null | undefined, mode: RoomMode = 'join'): void {
  useEffect(() => {
    if (!roomId) return undefined;
    if (mode === 'subscribe') {
      client.subscribe(roomId).catch(ignore);
      return () => client.unsubscribe(roomId);
    }
    client.join(roomId).catch(ignore);
    return () => client.leave(roomId);
  }, [client, roomId, mode]);
}
