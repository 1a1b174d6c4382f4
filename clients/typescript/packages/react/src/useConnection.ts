import type { ConnectionSnapshot, OutboxSnapshot, SwitchyardClient } from '@switchyard/client';
import { useCallback, useMemo, useSyncExternalStore } from 'react';
import { useSwitchyardClient } from './context.js';

/** What {@link useConnection} returns. */
export interface ConnectionInfo extends ConnectionSnapshot {
  /** `state === 'connected'`. */
  readonly isConnected: boolean;
  /** The client, for `connect()`, `disconnect()`, `reconnect()`. */
  readonly client: SwitchyardClient;
}

/**
 * The connection state, the last error and close, the reconnect schedule. Re-renders on every
 * change of the client's connection snapshot; the returned object is stable between changes.
 *
 * @example
 * ```tsx
 * const { state, lastError } = useConnection();
 * ```
 */
export function useConnection(): ConnectionInfo {
  const client = useSwitchyardClient();
  const subscribe = useCallback((onChange: () => void) => client.on('connection', onChange), [client]);
  const snapshot = useSyncExternalStore(subscribe, client.getSnapshot, client.getSnapshot);
  return useMemo(() => ({ ...snapshot, isConnected: snapshot.state === 'connected', client }), [snapshot, client]);
}

/** How many durable sends wait for a connection (`queued`) or for their ack (`inflight`). */
export function useOutbox(): OutboxSnapshot {
  const client = useSwitchyardClient();
  const subscribe = useCallback((onChange: () => void) => client.on('outbox', onChange), [client]);
  return useSyncExternalStore(subscribe, client.getOutboxSnapshot, client.getOutboxSnapshot);
}
