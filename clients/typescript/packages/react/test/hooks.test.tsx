import { SwitchyardClient } from '@switchyard/client';
import { FakeSwitchyardServer } from '@switchyard/client/testing';
import { act, render, renderHook, screen } from '@testing-library/react';
import { StrictMode } from 'react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  ConnectionIndicator,
  describeTyping,
  OfflineBanner,
  SwitchyardProvider,
  useConnection,
  useCursors,
  useOutbox,
  usePresence,
  useRoom,
  useSwitchyardEvent,
  useTyping,
} from '../src/index.js';
import { advance, setup } from './helpers.js';

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe('SwitchyardProvider and useConnection', () => {
  it('connects the client and reports the state', async () => {
    const { wrapper, client } = setup();
    const { result } = renderHook(() => useConnection(), { wrapper });
    expect(['connecting', 'disconnected']).toContain(result.current.state);
    await advance();
    expect(result.current.state).toBe('connected');
    expect(result.current.isConnected).toBe(true);
    expect(result.current.welcome?.userId).toBe('alice');
    client.disconnect();
  });

  it('reports why the connection was closed for good', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => useConnection(), { wrapper });
    await advance();
    act(() => server.close(1008, 'kicked'));
    await advance();
    expect(result.current.state).toBe('disconnected');
    expect(result.current.lastError?.code).toBe('closed');
    expect(result.current.lastClose?.code).toBe(1008);
    expect(client.state).toBe('disconnected');
  });

  it('creates, connects and disconnects its own client from options, with one socket under StrictMode', async () => {
    const server = new FakeSwitchyardServer({ userId: 'bob' });
    const { result, unmount } = renderHook(() => useConnection(), {
      wrapper: ({ children }) => (
        <StrictMode>
          <SwitchyardProvider options={{ url: 'ws://x/ws', token: 't', WebSocket: server.WebSocket }}>{children}</SwitchyardProvider>
        </StrictMode>
      ),
    });
    await advance();
    expect(result.current.state).toBe('connected');
    expect(server.sockets).toHaveLength(1);
    const client = result.current.client;
    unmount();
    expect(client.state).toBe('disconnected');
  });

  it('leaves a client it was given alone with autoConnect={false}', async () => {
    const { client } = setup();
    const { result, unmount } = renderHook(() => useConnection(), {
      wrapper: ({ children }) => (
        <SwitchyardProvider client={client} autoConnect={false}>
          {children}
        </SwitchyardProvider>
      ),
    });
    await advance();
    expect(result.current.state).toBe('disconnected');
    act(() => result.current.client.connect());
    await advance();
    expect(result.current.state).toBe('connected');
    unmount();
    expect(client.state).toBe('connected'); // not the provider's to close
    client.disconnect();
  });

  it('throws a clear error outside a provider', () => {
    vi.spyOn(console, 'error').mockImplementation(() => undefined);
    expect(() => renderHook(() => useConnection())).toThrow(/SwitchyardProvider/);
  });

  it('calls the latest event handler without re-subscribing', async () => {
    const { wrapper, server, client } = setup();
    const calls: string[] = [];
    const { rerender } = renderHook(({ tag }) => useSwitchyardEvent('pong', () => calls.push(tag)), {
      wrapper,
      initialProps: { tag: 'first' },
    });
    await advance();
    rerender({ tag: 'second' });
    server.push({ type: 'pong', ts: 1 });
    await advance();
    expect(calls).toEqual(['second']);
    client.disconnect();
  });
});

describe('useRoom', () => {
  it('joins once under StrictMode and leaves on unmount', async () => {
    const { wrapper, server, client } = setup();
    const { unmount } = renderHook(() => useRoom('lobby'), { wrapper });
    await advance();
    expect(server.received.map((m) => m.type)).toEqual(['join-room']);
    unmount();
    await advance();
    expect(server.received.map((m) => m.type)).toEqual(['join-room', 'leave-room']);
    expect(client.getRoom('lobby')).toBeUndefined();
    client.disconnect();
  });

  it('shares one message list and one join between components', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => ({ a: useRoom('lobby'), b: useRoom('lobby') }), { wrapper });
    await advance();
    act(() => void result.current.a.send('hello'));
    await advance();
    expect(result.current.b.messages.map((m) => [m.text, m.status])).toEqual([['hello', 'sent']]);
    expect(server.receivedOf('join-room')).toHaveLength(1);
    client.disconnect();
  });

  it('shows a send as pending, then sent, reconciled by tempId (no duplicate)', async () => {
    const { wrapper, client } = setup();
    const { result } = renderHook(() => useRoom('lobby'), { wrapper });
    await advance();
    let tempId: unknown;
    act(() => {
      tempId = result.current.send('hi there', { mood: 'happy' });
    });
    const pending = result.current.messages[0]!;
    expect(pending).toMatchObject({ text: 'hi there', status: 'pending', own: true, name: 'Alice', data: { mood: 'happy' } });
    await advance();
    expect(result.current.messages).toHaveLength(1);
    const sent = result.current.messages[0]!;
    expect(sent).toMatchObject({ tempId, status: 'sent', seq: 1, userId: 'alice' });
    expect(sent.key).toBe(pending.key);
    client.disconnect();
  });

  it('orders messages by seq with pending ones last', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => useRoom('lobby'), { wrapper });
    await advance();
    server.autoReply = false;
    act(() => void result.current.send('mine'));
    server.deliverMessage('lobby', { userId: 'bob', name: 'Bob', text: 'one' });
    server.deliverMessage('lobby', { userId: 'bob', name: 'Bob', text: 'two' });
    await advance();
    expect(result.current.messages.map((m) => [m.text, m.status, m.own])).toEqual([
      ['one', 'sent', false],
      ['two', 'sent', false],
      ['mine', 'pending', true],
    ]);
    client.disconnect();
  });

  it('marks a refused send failed with the server error, and retry resends the same tempId', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => useRoom('lobby'), { wrapper });
    await advance();
    server.autoReply = false;
    let tempId: unknown;
    act(() => {
      tempId = result.current.send('too fast');
    });
    await advance();
    const request = server.receivedOf('message')[0]!;
    act(() =>
      server.push({
        type: 'ack',
        tempId: request.tempId,
        success: false,
        error: { code: 'rate_limited', message: 'slow down', retryAfterMs: 100 },
        ref: request.ref!,
      }),
    );
    await advance();
    const failed = result.current.messages[0]!;
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatchObject({ code: 'rate_limited', retryAfterMs: 100 });

    server.autoReply = true;
    act(() => void result.current.retry(tempId as string));
    expect(result.current.messages[0]!.status).toBe('pending');
    await advance();
    expect(result.current.messages[0]!.status).toBe('sent');
    expect(server.receivedOf('message').map((m) => m.tempId)).toEqual([tempId, tempId]);
    client.disconnect();
  });

  it('keeps sends made offline pending and sends them on reconnect', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => ({ room: useRoom('lobby'), outbox: useOutbox() }), { wrapper });
    await advance();
    act(() => server.close(1011));
    await advance();
    act(() => void result.current.room.send('while offline'));
    expect(result.current.room.messages[0]!.status).toBe('pending');
    expect(result.current.outbox.queued).toBe(1);
    await advance(1000);
    expect(result.current.room.messages[0]!.status).toBe('sent');
    expect(result.current.outbox).toEqual({ queued: 0, inflight: 0 });
    client.disconnect();
  });

  it('does not duplicate messages replayed after a reconnect', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => useRoom('lobby'), { wrapper });
    await advance();
    const first = server.deliverMessage('lobby', { userId: 'bob', text: 'one' });
    await advance();
    act(() => server.close(1011));
    await advance(1000);
    server.push(first); // a duplicate
    await advance();
    expect(result.current.messages.map((m) => m.text)).toEqual(['one']);
    client.disconnect();
  });

  it('clears confirmed messages on room-reset and calls onHistoryReset', async () => {
    const { wrapper, server, client } = setup();
    const onHistoryReset = vi.fn();
    const { result } = renderHook(() => useRoom('lobby', { onHistoryReset }), { wrapper });
    await advance();
    server.deliverMessage('lobby', { userId: 'bob', text: 'old epoch' });
    await advance();
    act(() => server.resetRoom('lobby'));
    server.deliverMessage('lobby', { userId: 'bob', text: 'new epoch' });
    await advance();
    expect(result.current.messages.map((m) => m.text)).toEqual(['new epoch']);
    expect(result.current.historyReset).toMatchObject({ reason: 'room-reset', roomId: 'lobby' });
    expect(onHistoryReset).toHaveBeenCalledTimes(1);
    client.disconnect();
  });

  it('merges fetched history without duplicates', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => useRoom('lobby'), { wrapper });
    await advance();
    const live = server.deliverMessage('lobby', { userId: 'bob', text: 'two' });
    await advance();
    act(() =>
      result.current.merge([
        { ...live, seq: 0, id: 'older', text: 'one' },
        live,
      ]),
    );
    expect(result.current.messages.map((m) => m.text)).toEqual(['one', 'two']);
    client.disconnect();
  });

  it('switches rooms: leaves the old one and joins the new one', async () => {
    const { wrapper, server, client } = setup();
    const { rerender } = renderHook(({ room }) => useRoom(room), { wrapper, initialProps: { room: 'a' } });
    await advance();
    rerender({ room: 'b' });
    await advance();
    expect(server.received.map((m) => `${m.type}:${'roomId' in m ? m.roomId : ''}`)).toEqual([
      'join-room:a',
      'leave-room:a',
      'join-room:b',
    ]);
    client.disconnect();
  });
});

describe('usePresence', () => {
  it('keeps the member list from room-joined, presence events and sync', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => usePresence('lobby'), { wrapper });
    await advance();
    expect(result.current.members.map((m) => m.userId)).toEqual(['alice']);
    expect(result.current.self?.name).toBe('Alice');
    act(() => server.push({ type: 'presence:join', roomId: 'lobby', member: { userId: 'bob', name: 'Bob', joinedAt: Date.now() + 5 } }));
    await advance();
    expect(result.current.members.map((m) => m.name)).toEqual(['Alice', 'Bob']);
    act(() => server.push({ type: 'presence:leave', roomId: 'lobby', userId: 'bob' }));
    await advance();
    expect(result.current.members.map((m) => m.userId)).toEqual(['alice']);
    act(() => server.close(1011));
    await advance();
    expect(result.current.stale).toBe(true);
    expect(result.current.self?.userId).toBe('alice'); // still known while reconnecting
    await advance(1000);
    expect(result.current.stale).toBe(false);
    act(() => server.push({ type: 'presence:sync', roomId: 'lobby', members: [] }));
    await advance();
    expect(result.current.members).toEqual([]);
    act(() => server.close(1011));
    await advance();
    expect(result.current.stale).toBe(true);
    expect(result.current.self).toBeUndefined(); // the last sync emptied the list
    client.disconnect();
  });

  it('asks for the list when it only subscribes', async () => {
    const { wrapper, server, client } = setup();
    server.room('stage').members.set('bob', { userId: 'bob', joinedAt: 1 });
    const { result } = renderHook(() => usePresence('stage', { mode: 'subscribe' }), { wrapper });
    await advance();
    expect(server.received.map((m) => m.type)).toEqual(['subscribe', 'presence:sync']);
    expect(result.current.members.map((m) => m.userId)).toEqual(['bob']);
    client.disconnect();
  });
});

describe('useTyping', () => {
  it('shows who is typing, with names, and expires after 6 s without news', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => useTyping('lobby'), { wrapper });
    await advance();
    act(() => {
      server.push({ type: 'presence:join', roomId: 'lobby', member: { userId: 'bob', name: 'Bob', joinedAt: 2 } });
      server.push({ type: 'typing:start', roomId: 'lobby', userId: 'bob' });
    });
    await advance();
    expect(result.current.typing.map((t) => t.name)).toEqual(['Bob']);
    expect(describeTyping(result.current.typing)).toBe('Bob is typing…');
    await advance(5999);
    expect(result.current.typing).toHaveLength(1);
    await advance(1);
    expect(result.current.typing).toHaveLength(0);
    client.disconnect();
  });

  it('clears a typer on typing:stop and on their message', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => useTyping('lobby'), { wrapper });
    await advance();
    act(() => {
      server.push({ type: 'typing:start', roomId: 'lobby', userId: 'bob' });
      server.push({ type: 'typing:start', roomId: 'lobby', userId: 'carol' });
    });
    await advance();
    expect(result.current.typing.map((t) => t.userId)).toEqual(['bob', 'carol']);
    act(() => server.push({ type: 'typing:stop', roomId: 'lobby', userId: 'bob' }));
    server.deliverMessage('lobby', { userId: 'carol', text: 'done' });
    await advance();
    expect(result.current.typing).toEqual([]);
    client.disconnect();
  });

  it('debounces notifyTyping: start at most every 2 s, stop after 3 s idle', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => useTyping('lobby'), { wrapper });
    await advance();
    const typingFrames = () => server.received.filter((m) => m.type.startsWith('typing:')).map((m) => m.type);
    for (let i = 0; i < 10; i++) {
      act(() => result.current.notifyTyping());
      await advance(250); // typing for 2.5 s
    }
    expect(typingFrames()).toEqual(['typing:start', 'typing:start']);
    await advance(2749); // 3 s after the last keystroke, minus 1 ms
    expect(typingFrames()).toHaveLength(2);
    await advance(1);
    expect(typingFrames()).toEqual(['typing:start', 'typing:start', 'typing:stop']);
    act(() => result.current.notifyTyping());
    act(() => result.current.stopTyping());
    await advance();
    expect(typingFrames()).toEqual(['typing:start', 'typing:start', 'typing:stop', 'typing:start', 'typing:stop']);
    client.disconnect();
  });

  it('sends typing:stop on unmount while typing', async () => {
    const { wrapper, server, client } = setup();
    const { result, unmount } = renderHook(() => useTyping('lobby'), { wrapper });
    await advance();
    act(() => result.current.notifyTyping());
    unmount();
    await advance();
    expect(server.received.map((m) => m.type)).toEqual(['join-room', 'typing:start', 'typing:stop', 'leave-room']);
    client.disconnect();
  });
});

describe('useCursors', () => {
  it('shows other cursors with their colour and name, and removes them on cursor:leave', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => useCursors('lobby'), { wrapper });
    await advance();
    act(() => {
      server.push({ type: 'presence:join', roomId: 'lobby', member: { userId: 'bob', name: 'Bob', joinedAt: 2 } });
      server.push({ type: 'cursor:move', roomId: 'lobby', userId: 'bob', x: 0.25, y: 0.75, color: '#e6194b' });
    });
    await advance();
    expect(result.current.cursors.get('bob')).toMatchObject({ x: 0.25, y: 0.75, color: '#e6194b', name: 'Bob' });
    act(() => server.push({ type: 'cursor:leave', roomId: 'lobby', userId: 'bob' }));
    await advance();
    expect(result.current.cursors.size).toBe(0);
    client.disconnect();
  });

  it('throttles moves to 20 per second and always sends the last position', async () => {
    const { wrapper, server, client } = setup();
    const { result, unmount } = renderHook(() => useCursors('lobby'), { wrapper });
    await advance();
    for (let i = 1; i <= 100; i++) {
      act(() => result.current.move(i / 100, 0.5));
      await advance(10); // 100 moves over 1 s
    }
    await advance(100);
    const moves = server.receivedOf('cursor:move');
    expect(moves.length).toBeGreaterThanOrEqual(19);
    expect(moves.length).toBeLessThanOrEqual(21);
    expect(moves.at(-1)).toMatchObject({ x: 1, y: 0.5 });
    unmount();
    await advance();
    expect(server.received.at(-2)).toMatchObject({ type: 'cursor:leave' });
    client.disconnect();
  });

  it('ignores non-finite coordinates', async () => {
    const { wrapper, server, client } = setup();
    const { result } = renderHook(() => useCursors('lobby'), { wrapper });
    await advance();
    act(() => result.current.move(Number.NaN, 1));
    await advance(100);
    expect(server.receivedOf('cursor:move')).toHaveLength(0);
    client.disconnect();
  });
});

describe('components', () => {
  it('ConnectionIndicator reflects the state, with a countdown while waiting', async () => {
    const { wrapper, server, client } = setup();
    render(<ConnectionIndicator id="status" />, { wrapper });
    await advance();
    const status = document.getElementById('status')!;
    expect(status.dataset.state).toBe('connected');
    expect(screen.getByRole('status').textContent).toBe('connected');
    act(() => server.close(1011));
    await advance();
    expect(status.dataset.state).toBe('reconnecting');
    expect(status.textContent).toBe('reconnecting in 1s…');
    await advance(1000);
    expect(status.dataset.state).toBe('connected');
    client.disconnect();
  });

  it('OfflineBanner appears while offline with the queued count, and reconnects on demand', async () => {
    const { wrapper, server, client } = setup({ reconnect: { jitter: 0, minDelayMs: 10_000 } });
    const Room = () => {
      const { send } = useRoom('lobby');
      return (
        <>
          <OfflineBanner data-testid="offline" />
          <button onClick={() => send('queued one')}>send</button>
        </>
      );
    };
    render(<Room />, { wrapper });
    await advance();
    expect(screen.queryByTestId('offline')).toBeNull();
    act(() => server.close(1006));
    await advance();
    act(() => screen.getByText('send').click());
    const banner = screen.getByTestId('offline');
    expect(banner.textContent).toContain('Reconnecting in 10s');
    expect(banner.textContent).toContain('1 message will be sent');
    act(() => screen.getByRole('button', { name: 'Retry now' }).click());
    await advance();
    expect(screen.queryByTestId('offline')).toBeNull();
    expect(client.getOutboxSnapshot().queued).toBe(0);
    client.disconnect();
  });
});

describe('cleanup', () => {
  it('leaves no listeners and no timers behind after unmount', async () => {
    const server = new FakeSwitchyardServer({ userId: 'alice' });
    const client = new SwitchyardClient({ url: 'ws://x/ws', token: 't', WebSocket: server.WebSocket, pingIntervalMs: 0 });
    const spy = vi.spyOn(client, 'on');
    const offs: ReturnType<typeof vi.fn>[] = [];
    spy.mockImplementation(function (this: SwitchyardClient, ...args: Parameters<SwitchyardClient['on']>) {
      const off = vi.fn(SwitchyardClient.prototype.on.apply(this, args));
      offs.push(off);
      return off;
    } as never);
    const App = () => {
      useRoom('lobby');
      usePresence('lobby');
      useTyping('lobby');
      useCursors('lobby');
      useConnection();
      return <ConnectionIndicator />;
    };
    const { unmount } = render(
      <StrictMode>
        <SwitchyardProvider client={client}>
          <App />
        </SwitchyardProvider>
      </StrictMode>,
    );
    await advance();
    unmount();
    await advance();
    client.disconnect();
    expect(offs.length).toBeGreaterThan(0);
    for (const off of offs) expect(off).toHaveBeenCalled();
    expect(vi.getTimerCount()).toBe(0);
  });
});
