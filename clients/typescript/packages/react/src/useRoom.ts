import type { HistoryResetEvent, NewMessage, TempId } from '@switchyard/client';
import { useCallback, useEffect, useMemo, useRef, useSyncExternalStore } from 'react';
import { useSwitchyardClient } from './context.js';
import { useRoomMembership, type RoomMode } from './membership.js';
import { RoomStore, type RoomMessage, type RoomStoreOptions } from './roomStore.js';
import { getSharedStore, useRetainedStore } from './store.js';
import { useIsomorphicLayoutEffect } from './useSwitchyardEvent.js';

/** Options of {@link useRoom}. */
export interface UseRoomOptions extends RoomStoreOptions {
  /** `join` (with presence, default) or `subscribe` (a spectator: it can read, and `send` gets `not_joined`). */
  mode?: RoomMode;
  /**
   * Called when the room's history was reset (`room-reset`, another epoch, or a resume that
   * could not be recovered): re-fetch what you show, then `merge()` it. The latest function
   * is called; it need not be memoised.
   */
  onHistoryReset?: (event: HistoryResetEvent) => void;
}

/** What {@link useRoom} returns. */
export interface UseRoomResult<TData = unknown> {
  /** Confirmed messages in seq order, then this client's pending/failed ones. */
  messages: readonly RoomMessage<TData>[];
  /** Sends a message (optimistically shown as `pending`). Returns its tempId, or `undefined` for an empty text. */
  send: (text: string, data?: TData) => TempId | undefined;
  /** Sends a `failed` message again with the same tempId. Returns `false` if there is no such failed message. */
  retry: (tempId: TempId) => boolean;
  /** Removes a pending or failed message from the list. */
  discard: (tempId: TempId) => boolean;
  /** Merges messages fetched elsewhere (e.g. the HTTP history API), de-duplicated by id. */
  merge: (messages: readonly NewMessage[]) => void;
  /** The last history reset, if any. */
  historyReset: HistoryResetEvent | undefined;
}

const NO_ROOM = '\u0000none';

/**
 * A room's chat: joins it while mounted and keeps its messages, with optimistic sends
 * reconciled by tempId, and de-duplication by seq across reconnects. Every `useRoom` of the
 * same room shares one message list (and one server join).
 *
 * @example
 * ```tsx
 * const { messages, send, retry } = useRoom('lobby');
 * ```
 */
export function useRoom<TData = unknown>(roomId: string, options: UseRoomOptions = {}): UseRoomResult<TData> {
  const client = useSwitchyardClient();
  const key = roomId || NO_ROOM;
  const maxMessages = options.maxMessages;
  const store = getSharedStore(client, 'room', key, (c, id) => new RoomStore(c, id, { maxMessages }));
  useRetainedStore(client, 'room', key, store);
  useRoomMembership(client, roomId, options.mode);

  const onReset = useRef(options.onHistoryReset);
  useIsomorphicLayoutEffect(() => {
    onReset.current = options.onHistoryReset;
  });
  useEffect(() => store.onHistoryReset((event) => onReset.current?.(event)), [store]);

  const snapshot = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  const send = useCallback((text: string, data?: TData) => store.send(text, data), [store]);
  const retry = useCallback((tempId: TempId) => store.retry(tempId), [store]);
  const discard = useCallback((tempId: TempId) => store.discard(tempId), [store]);
  const merge = useCallback((messages: readonly NewMessage[]) => store.merge(messages), [store]);

  return useMemo(
    () => ({
      messages: snapshot.messages as readonly RoomMessage<TData>[],
      historyReset: snapshot.historyReset,
      send,
      retry,
      discard,
      merge,
    }),
    [snapshot, send, retry, discard, merge],
  );
}
