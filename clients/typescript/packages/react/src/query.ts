/**
 * `@switchyard/react/query`: keep TanStack Query caches in step with Switchyard events.
 * Needs `@tanstack/react-query` v5 (an optional peer dependency, imported only here).
 *
 * @module
 */
import type { ClientEventMap, ClientEventName } from '@switchyard/client';
import { hashKey, useQueryClient, type QueryClient, type QueryKey } from '@tanstack/react-query';
import { useEffect, useRef } from 'react';
import { useSwitchyardClient } from './context.js';
import { useIsomorphicLayoutEffect } from './useSwitchyardEvent.js';

type Payload<K extends ClientEventName> = ClientEventMap[K];

/** One rule of {@link useSwitchyardQueryInvalidation}, for events of type `K`. */
export interface QueryRuleFor<K extends ClientEventName> {
  /** The event: a server message type (`'event'`, `'new-message'`, …) or a client event (`'history-reset'`, …). */
  on: K;
  /** Only events of this room (compared with the payload's `roomId`). */
  roomId?: string;
  /** Only events for which this returns `true`. */
  filter?: (payload: Payload<K>) => boolean;
  /**
   * Queries to invalidate (prefix match, as `invalidateQueries`): a query key, an array of
   * query keys, or a function of the event returning either (or nothing to skip).
   */
  invalidate?: QueryKey | readonly QueryKey[] | ((payload: Payload<K>) => QueryKey | readonly QueryKey[] | null | undefined | false);
  /** Which matching queries refetch at once (TanStack's `refetchType`). Default `'active'`. */
  refetchType?: 'active' | 'inactive' | 'all' | 'none';
  /** Updates a cached query in place (`setQueryData`) instead of, or besides, invalidating. */
  update?: {
    queryKey: QueryKey | ((payload: Payload<K>) => QueryKey | null | undefined | false);
    /** Returns the new data; return `old` unchanged to leave it. Not called when nothing is cached. */
    updater: (old: never, payload: Payload<K>) => unknown;
  };
}

/** A rule for any event type (discriminated by `on`, so callbacks get the right payload type). */
export type QueryInvalidationRule = { [K in ClientEventName]: QueryRuleFor<K> }[ClientEventName];

/** Options of {@link useSwitchyardQueryInvalidation}. */
export interface QueryInvalidationOptions {
  /** Default: the `QueryClient` of the nearest `QueryClientProvider`. */
  queryClient?: QueryClient;
  /** Turn the rules off without unmounting. Default `true`. */
  enabled?: boolean;
  /** Invalidations that arrive within this many ms are merged into one per key. Default `50`. */
  batchMs?: number;
}

function isKeyList(value: QueryKey | readonly QueryKey[]): value is readonly QueryKey[] {
  return value.length > 0 && value.every((k) => Array.isArray(k));
}

/** Defines a rule with its payload type inferred from `on` (handy outside an inline array). */
export function queryRule<K extends ClientEventName>(rule: QueryRuleFor<K>): QueryRuleFor<K> {
  return rule;
}

/**
 * Invalidates or updates TanStack Query caches when Switchyard events arrive. The rules may
 * change on every render (the latest are used); the client is subscribed once per event type.
 *
 * @example
 * ```tsx
 * useSwitchyardQueryInvalidation([
 *   { on: 'event', filter: (e) => e.event === 'task-updated', invalidate: (e) => ['tasks', (e.data as Task).id] },
 *   { on: 'history-reset', invalidate: (e) => ['messages', e.roomId] },
 *   {
 *     on: 'new-message', roomId: 'lobby',
 *     update: { queryKey: ['messages', 'lobby'], updater: (old: Message[], m) => [...old, m] },
 *   },
 * ]);
 * ```
 */
export function useSwitchyardQueryInvalidation(
  rules: readonly QueryInvalidationRule[],
  options: QueryInvalidationOptions = {},
): void {
  const client = useSwitchyardClient();
  const contextQueryClient = useQueryClient(options.queryClient);
  const queryClient = options.queryClient ?? contextQueryClient;
  const enabled = options.enabled ?? true;
  const batchMs = options.batchMs ?? 50;

  const rulesRef = useRef(rules);
  useIsomorphicLayoutEffect(() => {
    rulesRef.current = rules;
  });

  const types = [...new Set(rules.map((r) => r.on))].sort().join('|');

  useEffect(() => {
    if (!enabled || types === '') return undefined;
    const pending = new Map<string, { queryKey: QueryKey; refetchType: QueryRuleFor<never>['refetchType'] }>();
    let timer: ReturnType<typeof setTimeout> | undefined;

    const flush = () => {
      timer = undefined;
      const batch = [...pending.values()];
      pending.clear();
      for (const { queryKey, refetchType } of batch) {
        void queryClient.invalidateQueries({ queryKey, refetchType: refetchType ?? 'active' });
      }
    };

    const apply = (type: ClientEventName, payload: unknown) => {
      for (const rule of rulesRef.current as readonly QueryRuleFor<ClientEventName>[]) {
        if (rule.on !== type) continue;
        if (rule.roomId !== undefined && (payload as { roomId?: unknown }).roomId !== rule.roomId) continue;
        if (rule.filter && !rule.filter(payload as never)) continue;
        if (rule.update) {
          const key = typeof rule.update.queryKey === 'function' ? rule.update.queryKey(payload as never) : rule.update.queryKey;
          if (key) {
            const updater = rule.update.updater;
            queryClient.setQueryData(key, (old: unknown) => (old === undefined ? old : updater(old as never, payload as never)));
          }
        }
        if (rule.invalidate) {
          const value = typeof rule.invalidate === 'function' ? rule.invalidate(payload as never) : rule.invalidate;
          if (!value) continue;
          for (const queryKey of isKeyList(value) ? value : [value as QueryKey]) {
            pending.set(hashKey(queryKey), { queryKey, refetchType: rule.refetchType });
          }
          if (timer === undefined) timer = setTimeout(flush, batchMs);
        }
      }
    };

    const offs = types.split('|').map((type) => client.on(type as ClientEventName, (payload) => apply(type as ClientEventName, payload)));
    return () => {
      for (const off of offs) off();
      if (timer !== undefined) {
        clearTimeout(timer);
        flush();
      }
    };
  }, [client, queryClient, enabled, types, batchMs]);
}
