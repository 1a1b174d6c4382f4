import { describe, expect, it } from 'vitest';
import { Outbox } from '../src/queue.js';

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

describe('Outbox', () => {
  it('flushes in enqueue order, with the same keys', () => {
    const box = new Outbox<string>({ maxSize: 10, maxAgeMs: 60_000 });
    box.enqueue('t1', 'a');
    box.enqueue('t2', 'b');
    box.enqueue('t3', 'c');
    const taken = box.takeQueued();
    expect(taken.map((e) => [e.key, e.payload])).toEqual([
      ['t1', 'a'],
      ['t2', 'b'],
      ['t3', 'c'],
    ]);
    expect(box.queuedCount).toBe(0);
    expect(box.inflightCount).toBe(3);
  });

  it('drops the oldest waiting entry at the bound (drop-oldest, the default)', () => {
    const box = new Outbox<string>({ maxSize: 2, maxAgeMs: 60_000 });
    expect(box.enqueue('t1', 'a').evicted).toEqual([]);
    box.enqueue('t2', 'b');
    const { entry, evicted } = box.enqueue('t3', 'c');
    expect(entry?.key).toBe('t3');
    expect(evicted.map((e) => e.key)).toEqual(['t1']);
    expect(box.takeQueued().map((e) => e.key)).toEqual(['t2', 't3']);
  });

  it('refuses the new entry at the bound with reject-new', () => {
    const box = new Outbox<string>({ maxSize: 2, maxAgeMs: 60_000, overflow: 'reject-new' });
    box.enqueue('t1', 'a');
    box.enqueue('t2', 'b');
    const { entry, evicted } = box.enqueue('t3', 'c');
    expect(entry).toBeUndefined();
    expect(evicted).toEqual([]);
    expect(box.list().map((e) => e.key)).toEqual(['t1', 't2']);
  });

  it('does not count entries in flight against the bound', () => {
    const box = new Outbox<string>({ maxSize: 1, maxAgeMs: 60_000 });
    box.enqueue('t1', 'a');
    box.takeQueued();
    expect(box.enqueue('t2', 'b').evicted).toEqual([]);
    expect(box.size).toBe(2);
  });

  it('puts entries in flight back in their original place, keeping their keys', () => {
    const box = new Outbox<string>({ maxSize: 10, maxAgeMs: 60_000 });
    box.enqueue('t1', 'a');
    box.enqueue('t2', 'b');
    box.takeQueued(); // both sent
    box.enqueue('t3', 'c'); // queued while they wait for acks
    box.settle('t1'); // t1 acked
    expect(box.requeueInflight()).toEqual([]); // connection lost: t2 goes back
    expect(box.takeQueued().map((e) => e.key)).toEqual(['t2', 't3']);
  });

  it('trims to the bound when requeued entries overflow it', () => {
    const box = new Outbox<string>({ maxSize: 2, maxAgeMs: 60_000 });
    box.enqueue('t1', 'a');
    box.enqueue('t2', 'b');
    box.takeQueued();
    box.enqueue('t3', 'c');
    box.enqueue('t4', 'd');
    const evicted = box.requeueInflight();
    expect(evicted.map((e) => e.key)).toEqual(['t1', 't2']);
    expect(box.list().map((e) => e.key)).toEqual(['t3', 't4']);
  });

  it('expires queued entries at the maximum age, not entries in flight', () => {
    const c = clock();
    const box = new Outbox<string>({ maxSize: 10, maxAgeMs: 60_000, now: c.now });
    box.enqueue('old', 'a');
    c.advance(30_000);
    box.enqueue('young', 'b');
    box.enqueue('sent', 'c');
    box.markInflight('sent');
    expect(box.nextExpiry()).toBe(1_000_000 + 60_000);
    c.advance(29_999);
    expect(box.expire()).toEqual([]);
    c.advance(1);
    expect(box.expire().map((e) => e.key)).toEqual(['old']);
    c.advance(60_000);
    expect(box.expire().map((e) => e.key)).toEqual(['young']);
    expect(box.list().map((e) => e.key)).toEqual(['sent']);
    expect(box.nextExpiry()).toBeUndefined();
  });

  it('keeps the original enqueue time across resends', () => {
    const c = clock();
    const box = new Outbox<string>({ maxSize: 10, maxAgeMs: 1000, now: c.now });
    box.enqueue('t1', 'a');
    box.takeQueued();
    c.advance(1500);
    box.requeueInflight();
    expect(box.expire().map((e) => e.key)).toEqual(['t1']);
  });

  it('refuses a duplicate key', () => {
    const box = new Outbox<string>({ maxSize: 10, maxAgeMs: 1000 });
    box.enqueue('t1', 'a');
    expect(box.enqueue('t1', 'b').entry).toBeUndefined();
    expect(box.get('t1')?.payload).toBe('a');
  });

  it('settles and clears', () => {
    const box = new Outbox<string>({ maxSize: 10, maxAgeMs: 1000 });
    box.enqueue('t1', 'a');
    box.enqueue('t2', 'b');
    expect(box.settle('t1')?.payload).toBe('a');
    expect(box.settle('t1')).toBeUndefined();
    expect(box.clear().map((e) => e.key)).toEqual(['t2']);
    expect(box.size).toBe(0);
  });
});
