/**
 * A small typed event emitter.
 *
 * @module
 */

/** Removes the handler it was returned for. Calling it twice is harmless. */
export type Unsubscribe = () => void;

type Handler<P> = (payload: P) => void;

/**
 * Typed emitter over an event map `{ [type]: payload }`.
 *
 * A handler that throws does not stop the others nor the client: the error is rethrown in a
 * microtask (so it reaches `window.onerror` / `process.on('uncaughtException')` and test runners)
 * unless an `onHandlerError` is given.
 */
export class Emitter<M extends object> {
  private readonly handlers = new Map<keyof M, Set<Handler<never>>>();

  constructor(private readonly onHandlerError?: (error: unknown) => void) {}

  /** Calls `handler` for every `type` event until the returned function is called. */
  on<K extends keyof M>(type: K, handler: Handler<M[K]>): Unsubscribe {
    let set = this.handlers.get(type);
    if (!set) {
      set = new Set();
      this.handlers.set(type, set);
    }
    // Wrapped so that the same function registered twice gets two independent subscriptions.
    const entry: Handler<M[K]> = (payload) => handler(payload);
    set.add(entry as Handler<never>);
    return () => {
      const current = this.handlers.get(type);
      if (!current) return;
      current.delete(entry as Handler<never>);
      if (current.size === 0) this.handlers.delete(type);
    };
  }

  /** Like {@link Emitter.on}, for the next event only. */
  once<K extends keyof M>(type: K, handler: Handler<M[K]>): Unsubscribe {
    const off = this.on(type, (payload) => {
      off();
      handler(payload);
    });
    return off;
  }

  /** Calls the handlers of `type`, in subscription order. */
  emit<K extends keyof M>(type: K, payload: M[K]): void {
    const set = this.handlers.get(type);
    if (!set || set.size === 0) return;
    for (const handler of [...set]) {
      try {
        (handler as Handler<M[K]>)(payload);
      } catch (error) {
        if (this.onHandlerError) this.onHandlerError(error);
        else
          queueMicrotask(() => {
            throw error;
          });
      }
    }
  }

  /** How many handlers `type` has. */
  listenerCount(type: keyof M): number {
    return this.handlers.get(type)?.size ?? 0;
  }

  /** Removes every handler. */
  clear(): void {
    this.handlers.clear();
  }
}
