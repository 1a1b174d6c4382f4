/**
 * Per-room de-duplication of durable messages by `seq`, and the resume position (`sinceSeq` +
 * `epoch`) of each room. Pure: no socket, no timers.
 *
 * @module
 */

/** Options of {@link SeqTracker}. */
export interface SeqTrackerOptions {
  /**
   * Most seqs above a gap remembered one by one. Seqs normally arrive in order, so this only
   * matters if one goes missing: past this many, the gap is given up on (seqs below the lowest
   * remembered one count as seen). Default `10000`.
   */
  maxPending?: number;
}

/**
 * The seqs seen in one room, in one epoch.
 *
 * It keeps a *floor* (every seq at or below it counts as seen) and the few seqs seen above it
 * when they arrive out of order, so memory stays constant however long the room lives.
 */
export class SeqTracker {
  private floorSeq = 0;
  private readonly above = new Set<number>();
  private highestSeq = 0;
  private readonly maxPending: number;
  /** The room's history epoch, once known. */
  epoch: string | undefined;

  constructor(options: SeqTrackerOptions = {}) {
    this.maxPending = options.maxPending ?? 10_000;
  }

  /** The highest seq seen or resumed from: the `sinceSeq` of the next resume. */
  get highest(): number {
    return this.highestSeq;
  }

  /** Whether a seq counts as seen. */
  has(seq: number): boolean {
    return seq <= this.floorSeq || this.above.has(seq);
  }

  /**
   * Records a delivered seq. Returns `false` when it was already seen (a duplicate: drop it),
   * `true` when it is new.
   */
  accept(seq: number): boolean {
    if (!Number.isFinite(seq)) return true; // not a durable message: nothing to de-duplicate
    if (this.has(seq)) return false;
    if (seq === this.floorSeq + 1) {
      this.floorSeq = seq;
      while (this.above.delete(this.floorSeq + 1)) this.floorSeq += 1;
    } else {
      this.above.add(seq);
      if (this.above.size > this.maxPending) this.giveUpGap();
    }
    if (seq > this.highestSeq) this.highestSeq = seq;
    return true;
  }

  /**
   * Moves the position to `seq` (the `seq` of a `room-joined`/`subscribed` reply): the server
   * never sends a seq at or below it afterwards, so they all count as seen.
   */
  advanceTo(seq: number): void {
    if (!(seq > this.floorSeq)) return;
    this.floorSeq = seq;
    for (const s of this.above) if (s <= seq) this.above.delete(s);
    while (this.above.delete(this.floorSeq + 1)) this.floorSeq += 1;
    if (this.floorSeq > this.highestSeq) this.highestSeq = this.floorSeq;
  }

  /** Forgets every seq (history reset): starts again at `seq` in `epoch`. */
  reset(epoch: string | undefined, seq = 0): void {
    this.epoch = epoch;
    this.floorSeq = seq;
    this.highestSeq = seq;
    this.above.clear();
  }

  private giveUpGap(): void {
    let lowest = Infinity;
    for (const s of this.above) if (s < lowest) lowest = s;
    this.floorSeq = lowest;
    this.above.delete(lowest);
    while (this.above.delete(this.floorSeq + 1)) this.floorSeq += 1;
  }
}

/** The resume position of a room. */
export interface ResumePosition {
  sinceSeq: number;
  epoch: string;
}

/** {@link SeqTracker}s by room. */
export class RoomSeqs {
  private readonly rooms = new Map<string, SeqTracker>();

  constructor(private readonly options: SeqTrackerOptions = {}) {}

  /** The tracker of a room (created on first use). */
  tracker(roomId: string): SeqTracker {
    let t = this.rooms.get(roomId);
    if (!t) {
      t = new SeqTracker(this.options);
      this.rooms.set(roomId, t);
    }
    return t;
  }

  /** `true` when the seq is new in that room (see {@link SeqTracker.accept}). */
  accept(roomId: string, seq: number): boolean {
    return this.tracker(roomId).accept(seq);
  }

  /** Where to resume the room from, or `undefined` before its epoch is known. */
  position(roomId: string): ResumePosition | undefined {
    const t = this.rooms.get(roomId);
    if (!t || t.epoch === undefined) return undefined;
    return { sinceSeq: t.highest, epoch: t.epoch };
  }

  /** Forgets the room entirely (it was left). */
  forget(roomId: string): void {
    this.rooms.delete(roomId);
  }
}
