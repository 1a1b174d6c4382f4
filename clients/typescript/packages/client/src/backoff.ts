/**
 * Exponential reconnect backoff with jitter. Pure: no timers, the random source is injectable.
 *
 * @module
 */

/** Options of {@link Backoff}. */
export interface BackoffOptions {
  /** Base delay of the first retry, in ms. Default `1000`. */
  minDelayMs?: number;
  /** Upper bound of every delay, jitter included, in ms. Default `30000`. */
  maxDelayMs?: number;
  /** Growth factor of the base delay per attempt. Default `2`. */
  factor?: number;
  /**
   * Relative jitter: each delay is drawn uniformly from `base × [1 − jitter, 1 + jitter]`, then
   * capped at `maxDelayMs`. Default `0.25` (±25%). `0` disables jitter.
   */
  jitter?: number;
  /** Random source in `[0, 1)`. Default `Math.random`. */
  random?: () => number;
}

/**
 * Computes reconnect delays: `min × factor^attempt`, capped at `max`, with ±`jitter`.
 *
 * With the defaults the base delays are 1 s, 2 s, 4 s, 8 s, 16 s, 30 s, 30 s, …, each jittered
 * by ±25% and never above 30 s. Call {@link Backoff.reset} after a successful connection.
 *
 * @example
 * ```ts
 * const backoff = new Backoff();
 * setTimeout(reconnect, backoff.next()); // ~1 s, then ~2 s, ~4 s, …
 * backoff.reset();                       // connected: the next failure waits ~1 s again
 * ```
 */
export class Backoff {
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  readonly factor: number;
  readonly jitter: number;
  private readonly random: () => number;
  private attempts = 0;

  constructor(options: BackoffOptions = {}) {
    this.minDelayMs = options.minDelayMs ?? 1000;
    this.maxDelayMs = options.maxDelayMs ?? 30_000;
    this.factor = options.factor ?? 2;
    this.jitter = options.jitter ?? 0.25;
    this.random = options.random ?? Math.random;
    if (!(this.minDelayMs >= 0) || !(this.maxDelayMs >= this.minDelayMs)) {
      throw new RangeError('Backoff: need 0 <= minDelayMs <= maxDelayMs');
    }
    if (!(this.factor >= 1)) throw new RangeError('Backoff: factor must be >= 1');
    if (!(this.jitter >= 0 && this.jitter < 1)) throw new RangeError('Backoff: jitter must be in [0, 1)');
  }

  /** How many delays were handed out since the last reset. */
  get attempt(): number {
    return this.attempts;
  }

  /** The un-jittered delay of a given attempt (0-based). */
  baseDelay(attempt: number): number {
    // Exponent capped so the power cannot overflow to Infinity on a very long outage.
    const raw = this.minDelayMs * this.factor ** Math.min(attempt, 64);
    return Math.min(this.maxDelayMs, raw);
  }

  /** The delay before the next attempt, in ms; advances the attempt counter. */
  next(): number {
    const base = this.baseDelay(this.attempts);
    this.attempts += 1;
    const low = base * (1 - this.jitter);
    const high = Math.min(this.maxDelayMs, base * (1 + this.jitter));
    return Math.round(low + (high - low) * this.random());
  }

  /** Starts again from the minimum delay (call after a successful connection). */
  reset(): void {
    this.attempts = 0;
  }
}
