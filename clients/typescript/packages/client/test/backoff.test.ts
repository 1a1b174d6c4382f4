import { describe, expect, it } from 'vitest';
import { Backoff } from '../src/backoff.js';

/** A random source that returns the given values in turn. */
const sequence = (...values: number[]) => {
  let i = 0;
  return () => values[i++ % values.length]!;
};

describe('Backoff', () => {
  it('doubles from 1 s and caps at 30 s without jitter', () => {
    const b = new Backoff({ jitter: 0 });
    const delays = Array.from({ length: 8 }, () => b.next());
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });

  it('keeps every delay within ±25% of the base and never above the maximum', () => {
    for (let run = 0; run < 200; run++) {
      const b = new Backoff();
      for (let attempt = 0; attempt < 10; attempt++) {
        const base = b.baseDelay(attempt);
        const delay = b.next();
        expect(delay).toBeGreaterThanOrEqual(Math.floor(base * 0.75));
        expect(delay).toBeLessThanOrEqual(Math.min(30000, Math.ceil(base * 1.25)));
      }
    }
  });

  it('spans the whole jitter range', () => {
    const low = new Backoff({ random: () => 0 });
    const high = new Backoff({ random: () => 0.999999 });
    expect(low.next()).toBe(750);
    expect(high.next()).toBe(1250);
    expect(low.next()).toBe(1500);
    expect(high.next()).toBe(2500);
    // At the cap the upper half of the jitter is clipped to the maximum.
    const capped = new Backoff({ random: sequence(0, 0.999999) });
    for (let i = 0; i < 6; i++) capped.next();
    expect(capped.next()).toBe(22500); // base 30 s, low draw: 30 s − 25%
    expect(capped.next()).toBe(30000); // base 30 s, high draw: clipped to the maximum
  });

  it('starts again from the minimum after reset', () => {
    const b = new Backoff({ jitter: 0 });
    b.next();
    b.next();
    b.next();
    expect(b.attempt).toBe(3);
    b.reset();
    expect(b.attempt).toBe(0);
    expect(b.next()).toBe(1000);
  });

  it('does not overflow on very long outages', () => {
    const b = new Backoff({ jitter: 0 });
    for (let i = 0; i < 5000; i++) b.next();
    expect(b.next()).toBe(30000);
  });

  it('takes custom bounds and refuses nonsense', () => {
    const b = new Backoff({ minDelayMs: 100, maxDelayMs: 400, jitter: 0 });
    expect([b.next(), b.next(), b.next(), b.next()]).toEqual([100, 200, 400, 400]);
    expect(() => new Backoff({ minDelayMs: 10, maxDelayMs: 5 })).toThrow(RangeError);
    expect(() => new Backoff({ jitter: 1 })).toThrow(RangeError);
    expect(() => new Backoff({ factor: 0.5 })).toThrow(RangeError);
  });
});
