/**
 * Shared, reference-counted external stores: one per client, kind and room, whatever the number
 * of components using it, read with `useSyncExternalStore`.
 *
 * @module
 */
import type { SwitchyardClient } from '@switchyard/client';
import { useEffect } from 'react';

/** An external store with a stable snapshot, attached to the client while someone uses it. */
export abstract class SharedStore<T> {
  private readonly listeners = new Set<() => void>();
  private refs = 0;
  /** Called when the last user released the store. */
  onIdle: (() => void) | undefined;

  protected constructor(private current: T) {}

  /** For `useSyncExternalStore`. */
  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  /** For `useSyncExternalStore`. */
  readonly getSnapshot = (): T => this.current;

  /** Replaces the snapshot and notifies (nothing happens if it is the same object). */
  protected setSnapshot(next: T): void {
    if (Object.is(next, this.current)) return;
    this.current = next;
    for (const listener of [...this.listeners]) listener();
  }

  /** A component started using the store. */
  retain(): void {
    this.refs += 1;
    if (this.refs === 1) this.attach();
  }

  /** A component stopped using the store. */
  release(): void {
    if (this.refs === 0) return;
    this.refs -= 1;
    if (this.refs === 0) {
      this.detach();
      this.onIdle?.();
    }
  }

  /** Subscribe to the client. Called when the first user retains the store. */
  protected abstract attach(): void;
  /** Unsubscribe and clear timers. Called when the last user releases it. */
  protected abstract detach(): void;
}

type Factory<S> = (client: SwitchyardClient, roomId: string) => S;

const registries = new WeakMap<SwitchyardClient, Map<string, SharedStore<unknown>>>();

/**
 * The store of a kind for a room, created on first use. Creating during render has no side
 * effects; the store attaches to the client when a component retains it (in an effect).
 */
export function getSharedStore<S extends SharedStore<unknown>>(
  client: SwitchyardClient,
  kind: string,
  roomId: string,
  create: Factory<S>,
): S {
  let stores = registries.get(client);
  if (!stores) {
    stores = new Map();
    registries.set(client, stores);
  }
  const key = `${kind}\u0000${roomId}`;
  let store = stores.get(key) as S | undefined;
  if (!store) {
    const created = create(client, roomId);
    created.onIdle = () => {
      if (stores.get(key) === created) stores.delete(key);
    };
    stores.set(key, created);
    store = created;
  }
  return store;
}

/**
 * Retains a store while the component is mounted. A store released by StrictMode's simulated
 * unmount is registered again by its re-mount, with its state intact.
 */
export function useRetainedStore(
  client: SwitchyardClient,
  kind: string,
  roomId: string,
  store: SharedStore<unknown>,
): void {
  useEffect(() => {
    const stores = registries.get(client);
    const key = `${kind}\u0000${roomId}`;
    if (stores && !stores.has(key)) stores.set(key, store);
    store.retain();
    return () => store.release();
  }, [client, kind, roomId, store]);
}
