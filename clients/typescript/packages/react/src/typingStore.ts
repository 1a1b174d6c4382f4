import type { SwitchyardClient, Unsubscribe } from '@switchyard/client';
import { SharedStore } from './store.js';

/** A user typing in a room. */
export interface TypingUser {
  readonly userId: string;
  /** When their latest `typing:start` arrived (local clock). */
  readonly since: number;
}

/** Timings of {@link TypingStore}, fixed by the first `useTyping` of a room. */
export interface TypingOptions {
  /** Forget a typer after this long without `typing:start` (the server's own stop comes after 5 s). Default `6000`. */
  expireMs?: number;
  /** Repeat `typing:start` at most this often while the user keeps typing. Default `2000`. */
  repeatMs?: number;
  /** Send `typing:stop` after this long without a keystroke. Default `3000`. */
  idleMs?: number;
}

type Timer = ReturnType<typeof setTimeout>;

/**
 * Who is typing in a room (other users), and this user's own typing notifications. Shared by
 * every `useTyping(roomId)` of one client.
 */
export class TypingStore extends SharedStore<readonly TypingUser[]> {
  private readonly offs: Unsubscribe[] = [];
  private readonly expiry = new Map<string, Timer>();
  private readonly expireMs: number;
  private readonly repeatMs: number;
  private readonly idleMs: number;
  private active = false;
  private lastStart = Number.NEGATIVE_INFINITY;
  private idleTimer: Timer | undefined;

  constructor(
    private readonly client: SwitchyardClient,
    readonly roomId: string,
    options: TypingOptions = {},
  ) {
    super([]);
    this.expireMs = options.expireMs ?? 6000;
    this.repeatMs = options.repeatMs ?? 2000;
    this.idleMs = options.idleMs ?? 3000;
  }

  protected attach(): void {
    const mine = (m: { roomId?: string }) => m.roomId === this.roomId;
    this.offs.push(
      this.client.on('typing:start', (m) => {
        if (mine(m) && m.userId !== this.client.userId) this.started(m.userId);
      }),
      this.client.on('typing:stop', (m) => {
        if (mine(m)) this.stopped(m.userId);
      }),
      // A message ends the typing that led to it, even if its stop is late or lost.
      this.client.on('new-message', (m) => {
        if (mine(m)) this.stopped(m.userId);
      }),
      this.client.on('presence:leave', (m) => {
        if (mine(m)) this.stopped(m.userId);
      }),
      this.client.on('state', (e) => {
        if (e.state !== 'connected') this.connectionLost();
      }),
    );
  }

  protected detach(): void {
    for (const off of this.offs.splice(0)) off();
    this.stopTyping();
    for (const timer of this.expiry.values()) clearTimeout(timer);
    this.expiry.clear();
    this.setSnapshot([]);
  }

  /**
   * Call on every keystroke: sends `typing:start` at once, then at most every `repeatMs` while
   * typing goes on, and `typing:stop` after `idleMs` without a call.
   */
  notifyTyping(): void {
    if (!this.client.isConnected) return;
    const now = Date.now();
    if (!this.active || now - this.lastStart >= this.repeatMs) {
      this.client.startTyping(this.roomId);
      this.active = true;
      this.lastStart = now;
    }
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.stopTyping(), this.idleMs);
  }

  /** Sends `typing:stop` now if a start was sent (call it when the message is sent or the input cleared). */
  stopTyping(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.active) this.client.stopTyping(this.roomId);
    this.active = false;
    this.lastStart = Number.NEGATIVE_INFINITY;
  }

  private started(userId: string): void {
    clearTimeout(this.expiry.get(userId));
    this.expiry.set(userId, setTimeout(() => this.stopped(userId), this.expireMs));
    const others = this.getSnapshot().filter((t) => t.userId !== userId);
    const existing = this.getSnapshot().find((t) => t.userId === userId);
    // Keep the original order (and object) of someone already typing.
    if (existing) return;
    this.setSnapshot([...others, { userId, since: Date.now() }]);
  }

  private stopped(userId: string): void {
    const timer = this.expiry.get(userId);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.expiry.delete(userId);
    this.setSnapshot(this.getSnapshot().filter((t) => t.userId !== userId));
  }

  private connectionLost(): void {
    // The server stops our typing itself when the connection goes; others' indicators are stale.
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.active = false;
    this.lastStart = Number.NEGATIVE_INFINITY;
    for (const timer of this.expiry.values()) clearTimeout(timer);
    this.expiry.clear();
    this.setSnapshot([]);
  }
}
