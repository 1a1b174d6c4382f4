import { SwitchyardClient, type SwitchyardClientOptions } from '@switchyard/client';
import { FakeSwitchyardServer } from '@switchyard/client/testing';
import { act } from '@testing-library/react';
import { StrictMode, type ReactNode } from 'react';
import { vi } from 'vitest';
import { SwitchyardProvider } from '../src/index.js';

/** Advances fake time (and the microtasks in between) inside act(). */
export async function advance(ms = 0): Promise<void> {
  await act(async () => {
    await vi.advanceTimersByTimeAsync(ms);
  });
}

/** A fake server, a client on it, and a wrapper providing the client (in StrictMode by default). */
export function setup(options: Partial<SwitchyardClientOptions> & { strict?: boolean } = {}) {
  const { strict = true, ...clientOptions } = options;
  const server = new FakeSwitchyardServer({ userId: 'alice', name: 'Alice' });
  const client = new SwitchyardClient({
    url: 'ws://gateway.test/ws',
    token: 'tok',
    WebSocket: server.WebSocket,
    reconnect: { jitter: 0 },
    ...clientOptions,
  });
  const wrapper = ({ children }: { children: ReactNode }) => {
    const tree = <SwitchyardProvider client={client}>{children}</SwitchyardProvider>;
    return strict ? <StrictMode>{tree}</StrictMode> : tree;
  };
  return { server, client, wrapper };
}
