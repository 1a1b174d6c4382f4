import { colorForUser, type SwitchyardClient, type Unsubscribe } from '@switchyard/client';
import { SharedStore } from './store.js';

/** Another user's cursor in a room. */
export interface CursorPosition {
  readonly userId: string;
  readonly x: number;
  readonly y: number;
  /** The server's colour for the user. */
  readonly color: string;
  /** When it last moved (local clock). */
  readonly updatedAt: number;
}

/** Settings of {@link CursorStore}, fixed by the first `useCursors` of a room. */
export interface CursorOptions {
  /** Most `cursor:move` sent per second by `move()` (the latest position is always sent last). Default `20`. */
  maxPerSecond?: number;
  /** Hide a cursor that has not moved for this long, in ms. Default `0`: never (the server sends `cursor:leave`). */
  hideAfterMs?: number;
}

type Timer = ReturnType<typeof setTimeout>;

const EMPTY: ReadonlyMap<string, CursorPosition> = new Map();

/** Other users' cursors in a room, and this user's throttled moves. Shared per client and room. */
export class CursorStore extends SharedStore<ReadonlyMap<string, CursorPosition>> {
  private readonly offs: Unsubscribe[] = [];
  private readonly hideTimers = new Map<string, Timer>();
  private readonly intervalMs: number;
  private readonly hideAfterMs: number;
  private lastSent = Number.NEGATIVE_INFINITY;
  private pending: { x: number; y: number } | undefined;
  private trailTimer: Timer | undefined;
  private moved = false;

  constructor(
    private readonly client: SwitchyardClient,
    readonly roomId: string,
    options: CursorOptions = {},
  ) {
    super(EMPTY);
    const perSecond = options.maxPerSecond ?? 20;
    this.intervalMs = perSecond > 0 ? 1000 / perSecond : 0;
    this.hideAfterMs = options.hideAfterMs ?? 0;
  }

  protected attach(): void {
    const mine = (m: { roomId?: string }) => m.roomId === this.roomId;
    this.offs.push(
      this.client.on('cursor:move', (m) => {
        if (mine(m) && m.userId !== this.client.userId && Number.isFinite(m.x) && Number.isFinite(m.y)) {
          this.put({ userId: m.userId, x: m.x, y: m.y, color: m.color || colorForUser(m.userId), updatedAt: Date.now() });
        }
      }),
      this.client.on('cursor:leave', (m) => {
        if (mine(m)) this.remove(m.userId);
      }),
      this.client.on('presence:leave', (m) => {
        if (mine(m)) this.remove(m.userId);
      }),
      this.client.on('state', (e) => {
        if (e.state !== 'connected') this.connectionLost();
      }),
    );
  }

  protected detach(): void {
    for (const off of this.offs.splice(0)) off();
    this.leave();
    this.connectionLost();
  }

  /** Moves this user's cursor (throttled to `maxPerSecond`, trailing: the last position is sent). */
  move(x: number, y: number): void {
    if (!Number.isFinite(x) || !Number.isFinite(y)) return;
    this.pending = { x, y };
    const wait = this.lastSent + this.intervalMs - Date.now();
    if (wait <= 0) this.flush();
    else if (this.trailTimer === undefined) this.trailTimer = setTimeout(() => this.flush(), wait);
  }

  /** Removes this user's cursor for the others (e.g. the pointer left the area). */
  leave(): void {
    clearTimeout(this.trailTimer);
    this.trailTimer = undefined;
    this.pending = undefined;
    if (this.moved && this.client.isConnected) this.client.leaveCursor(this.roomId);
    this.moved = false;
  }

  private flush(): void {
    clearTimeout(this.trailTimer);
    this.trailTimer = undefined;
    const position = this.pending;
    this.pending = undefined;
    if (!position || !this.client.isConnected) return;
    this.lastSent = Date.now();
    this.moved = this.client.moveCursor(this.roomId, position.x, position.y) || this.moved;
  }

  private put(cursor: CursorPosition): void {
    const next = new Map(this.getSnapshot());
    next.set(cursor.userId, cursor);
    this.setSnapshot(next);
    if (this.hideAfterMs > 0) {
      clearTimeout(this.hideTimers.get(cursor.userId));
      this.hideTimers.set(cursor.userId, setTimeout(() => this.remove(cursor.userId), this.hideAfterMs));
    }
  }

  private remove(userId: string): void {
    clearTimeout(this.hideTimers.get(userId));
    this.hideTimers.delete(userId);
    if (!this.getSnapshot().has(userId)) return;
    const next = new Map(this.getSnapshot());
    next.delete(userId);
    this.setSnapshot(next);
  }

  private connectionLost(): void {
    clearTimeout(this.trailTimer);
    this.trailTimer = undefined;
    this.pending = undefined;
    this.moved = false;
    for (const timer of this.hideTimers.values()) clearTimeout(timer);
    this.hideTimers.clear();
    this.setSnapshot(EMPTY);
  }
}
