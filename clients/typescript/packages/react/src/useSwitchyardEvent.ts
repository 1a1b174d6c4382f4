import type { ClientEventMap, ClientEventName } from '@switchyard/client';
import { useEffect, useLayoutEffect, useRef } from 'react';
import { useSwitchyardClient } from './context.js';

// useLayoutEffect warns during server rendering; effects do not run there anyway.
const useIsomorphicLayoutEffect = typeof window === 'undefined' ? useEffect : useLayoutEffect;

/**
 * Calls `handler` for every `type` event of the client while mounted. The latest `handler` is
 * always called (it is kept in a ref), so it may close over props and state freely without
 * re-subscribing.
 *
 * @example
 * ```tsx
 * useSwitchyardEvent('event', (e) => {
 *   if (e.event === 'task-updated') toast(`Task ${e.data.id} changed`);
 * });
 * ```
 */
export function useSwitchyardEvent<K extends ClientEventName>(
  type: K,
  handler: (payload: ClientEventMap[K]) => void,
): void {
  const client = useSwitchyardClient();
  const ref = useRef(handler);
  useIsomorphicLayoutEffect(() => {
    ref.current = handler;
  });
  useEffect(() => client.on(type, (payload) => ref.current(payload)), [client, type]);
}

export { useIsomorphicLayoutEffect };
