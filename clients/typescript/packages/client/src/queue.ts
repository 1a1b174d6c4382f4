/**
 * The outbox: durable sends (`message`, `publish`) waiting for a connection or for their `ack`.
 * Pure bookkeeping, no timers and no socket: the clock is injectable.
 *
 * @module
 */

/** What happens when a send would make more than `maxSize` entries wait. */
export type OverflowPolicy =
  /** The oldest waiting entry is evicted (its promise rejects with `queue_full`); the new one is kept. */
  | 'drop-oldest'
  /** The new entry is refused (its promise rejects with `queue_full`); the waiting ones are kept. */
  | 'reject-new';

/** Options of {@link Outbox}. */
export interface OutboxOptions {
  /** Most entries that may wait to be sent (entries in flight do not count). */
  maxSize: number;
  /** Most time, in ms, an entry may wait to be sent, counted from when it was first enqueued. */
  maxAgeMs: number;
  /** Default `'drop-oldest'`. */
  overflow?: OverflowPolicy;
  /** Clock in ms. Default `Date.now`. */
  now?: () => number;
}

/** `queued`: waiting to be sent; `inflight`: sent on the current connection, waiting for its ack. */
export type OutboxState = 'queued' | 'inflight';

/** An entry of the {@link Outbox}. */
export interface OutboxEntry<T> {
  readonly key: string;
  readonly payload: T;
  /** When it was enqueued; its age never restarts, also across resends. */
  readonly enqueuedAt: number;
  state: OutboxState;
}

/** Result of {@link Outbox.enqueue}. */
export interface EnqueueResult<T> {
  /** The new entry, or `undefined` when it was refused (`reject-new` at the bound, or a duplicate key). */
  entry: OutboxEntry<T> | undefined;
  /** Entries that were dropped to make room (`drop-oldest`). */
  evicted: OutboxEntry<T>[];
}

/**
 * A bounded, ordered outbox with a maximum age.
 *
 * Entries keep their order from enqueue to ack: what was queued first is sent first, also when
 * entries in flight on a connection that dropped are put back ({@link Outbox.requeueInflight}),
 * so a flush after a reconnect resends in the original order, with the original keys (tempIds).
 */
export class Outbox<T> {
  readonly maxSize: number;
  readonly maxAgeMs: number;
  readonly overflow: OverflowPolicy;
  private readonly now: () => number;
  // A Map keeps insertion order: iteration is oldest first.
  private readonly entries = new Map<string, OutboxEntry<T>>();

  constructor(options: OutboxOptions) {
    if (!(Number.isInteger(options.maxSize) && options.maxSize >= 0)) {
      throw new RangeError('Outbox: maxSize must be an integer >= 0');
    }
    if (!(options.maxAgeMs >= 0)) throw new RangeError('Outbox: maxAgeMs must be >= 0');
    this.maxSize = options.maxSize;
    this.maxAgeMs = options.maxAgeMs;
    this.overflow = options.overflow ?? 'drop-oldest';
    this.now = options.now ?? Date.now;
  }

  /** All entries, queued and in flight. */
  get size(): number {
    return this.entries.size;
  }

  /** Entries waiting to be sent. */
  get queuedCount(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.state === 'queued') n += 1;
    return n;
  }

  /** Entries sent and waiting for their ack. */
  get inflightCount(): number {
    return this.entries.size - this.queuedCount;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  get(key: string): OutboxEntry<T> | undefined {
    return this.entries.get(key);
  }

  /** Every entry, oldest first. */
  list(): OutboxEntry<T>[] {
    return [...this.entries.values()];
  }

  /**
   * Adds an entry in state `queued`. At the bound, applies the overflow policy. A key already
   * present is refused (the caller should reuse the pending entry instead).
   */
  enqueue(key: string, payload: T): EnqueueResult<T> {
    if (this.entries.has(key)) return { entry: undefined, evicted: [] };
    if (this.queuedCount >= this.maxSize && this.overflow === 'reject-new') {
      return { entry: undefined, evicted: [] };
    }
    const entry: OutboxEntry<T> = { key, payload, enqueuedAt: this.now(), state: 'queued' };
    this.entries.set(key, entry);
    return { entry, evicted: this.trim() };
  }

  /**
   * Removes and returns the queued entries that waited `maxAgeMs` or longer. Entries in flight
   * are not expired here: their ack timeout covers them.
   */
  expire(): OutboxEntry<T>[] {
    const limit = this.now() - this.maxAgeMs;
    const expired: OutboxEntry<T>[] = [];
    for (const e of this.entries.values()) {
      if (e.state === 'queued' && e.enqueuedAt <= limit) expired.push(e);
    }
    for (const e of expired) this.entries.delete(e.key);
    return expired;
  }

  /** When the next queued entry expires (ms, on the outbox clock), or `undefined` when none waits. */
  nextExpiry(): number | undefined {
    let first: number | undefined;
    for (const e of this.entries.values()) {
      if (e.state !== 'queued') continue;
      const at = e.enqueuedAt + this.maxAgeMs;
      if (first === undefined || at < first) first = at;
    }
    return first;
  }

  /** Returns the queued entries, oldest first, and marks them in flight. */
  takeQueued(): OutboxEntry<T>[] {
    const taken: OutboxEntry<T>[] = [];
    for (const e of this.entries.values()) {
      if (e.state === 'queued') {
        e.state = 'inflight';
        taken.push(e);
      }
    }
    return taken;
  }

  /** Marks one entry in flight (sent at once, without waiting in the queue). */
  markInflight(key: string): void {
    const e = this.entries.get(key);
    if (e) e.state = 'inflight';
  }

  /**
   * The connection dropped: every entry in flight goes back to the queue, in its original place.
   * Returns the entries evicted if that makes the queue exceed its bound.
   */
  requeueInflight(): OutboxEntry<T>[] {
    for (const e of this.entries.values()) e.state = 'queued';
    return this.trim();
  }

  /** Removes an entry (acked, failed or given up) and returns it. */
  settle(key: string): OutboxEntry<T> | undefined {
    const e = this.entries.get(key);
    if (e) this.entries.delete(key);
    return e;
  }

  /** Removes and returns every entry. */
  clear(): OutboxEntry<T>[] {
    const all = [...this.entries.values()];
    this.entries.clear();
    return all;
  }

  // Evicts queued entries while more than maxSize are queued: the oldest with 'drop-oldest', the
  // newest with 'reject-new' (so that policy keeps what waited first, as it does on enqueue).
  private trim(): OutboxEntry<T>[] {
    const excess = this.queuedCount - this.maxSize;
    if (excess <= 0) return [];
    const queued = [...this.entries.values()].filter((e) => e.state === 'queued');
    const evicted = this.overflow === 'drop-oldest' ? queued.slice(0, excess) : queued.slice(queued.length - excess);
    for (const e of evicted) this.entries.delete(e.key);
    return evicted;
  }
}
