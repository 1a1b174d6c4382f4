import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { renderHook } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SwitchyardProvider } from '../src/index.js';
import { queryRule, useSwitchyardQueryInvalidation, type QueryInvalidationRule } from '../src/query.js';
import { advance, setup } from './helpers.js';

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

function withQuery() {
  const env = setup({ strict: true });
  const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
  const Inner = env.wrapper;
  const wrapper = ({ children }: { children: ReactNode }) => (
    <QueryClientProvider client={queryClient}>
      <Inner>{children}</Inner>
    </QueryClientProvider>
  );
  return { ...env, queryClient, wrapper };
}

describe('useSwitchyardQueryInvalidation', () => {
  it('invalidates matching queries once per batch', async () => {
    const { wrapper, server, client, queryClient } = withQuery();
    const invalidate = vi.spyOn(queryClient, 'invalidateQueries');
    const rules: QueryInvalidationRule[] = [
      { on: 'event', filter: (e) => e.event === 'task-updated', invalidate: (e) => ['task', (e.data as { id: number }).id] },
      { on: 'event', roomId: 'board', invalidate: [['tasks'], ['stats']] },
    ];
    renderHook(() => useSwitchyardQueryInvalidation(rules), { wrapper });
    await advance();
    server.push({ type: 'event', roomId: 'board', event: 'task-updated', data: { id: 7 } });
    server.push({ type: 'event', roomId: 'board', event: 'task-updated', data: { id: 7 } });
    server.push({ type: 'event', roomId: 'other', event: 'task-created', data: { id: 8 } });
    await advance(0);
    expect(invalidate).not.toHaveBeenCalled(); // batched
    await advance(50);
    const keys = invalidate.mock.calls.map(([filters]) => filters?.queryKey);
    expect(keys).toEqual([['task', 7], ['tasks'], ['stats']]);
    client.disconnect();
  });

  it('updates cached data in place', async () => {
    const { wrapper, server, client, queryClient } = withQuery();
    queryClient.setQueryData(['messages', 'lobby'], [] as string[]);
    renderHook(
      () =>
        useSwitchyardQueryInvalidation([
          queryRule({
            on: 'new-message',
            roomId: 'lobby',
            update: { queryKey: ['messages', 'lobby'], updater: (old: string[], m) => [...old, m.text] },
          }),
        ]),
      { wrapper },
    );
    await advance();
    server.deliverMessage('lobby', { userId: 'bob', text: 'hello' });
    server.deliverMessage('elsewhere', { userId: 'bob', text: 'ignored' });
    await advance();
    expect(queryClient.getQueryData(['messages', 'lobby'])).toEqual(['hello']);
    client.disconnect();
  });

  it('uses the latest rules and stops on unmount', async () => {
    const { wrapper, server, client, queryClient } = withQuery();
    const invalidate = vi.spyOn(queryClient, 'invalidateQueries');
    const { rerender, unmount } = renderHook(
      ({ key }) => useSwitchyardQueryInvalidation([{ on: 'history-reset', invalidate: (e) => [key, e.roomId] }]),
      { wrapper, initialProps: { key: 'v1' } },
    );
    await advance();
    rerender({ key: 'v2' });
    await client.join('lobby');
    server.resetRoom('lobby');
    await advance(50);
    expect(invalidate.mock.calls.map(([f]) => f?.queryKey)).toEqual([['v2', 'lobby']]);
    unmount();
    server.resetRoom('lobby');
    await advance(50);
    expect(invalidate).toHaveBeenCalledTimes(1);
    client.disconnect();
  });

  it('accepts an explicit QueryClient', async () => {
    const env = setup();
    const queryClient = new QueryClient();
    const invalidate = vi.spyOn(queryClient, 'invalidateQueries');
    renderHook(() => useSwitchyardQueryInvalidation([{ on: 'pong', invalidate: ['clock'] }], { queryClient, batchMs: 0 }), {
      wrapper: ({ children }) => <SwitchyardProvider client={env.client}>{children}</SwitchyardProvider>,
    });
    await advance();
    env.server.push({ type: 'pong', ts: 1 });
    await advance(0);
    expect(invalidate).toHaveBeenCalledWith({ queryKey: ['clock'], refetchType: 'active' });
    env.client.disconnect();
  });
});
