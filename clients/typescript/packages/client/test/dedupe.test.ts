import { describe, expect, it } from 'vitest';
import { RoomSeqs, SeqTracker } from '../src/dedupe.js';

describe('SeqTracker', () => {
  it('accepts each seq once', () => {
    const t = new SeqTracker();
    expect(t.accept(1)).toBe(true);
    expect(t.accept(2)).toBe(true);
    expect(t.accept(2)).toBe(false);
    expect(t.accept(1)).toBe(false);
    expect(t.accept(3)).toBe(true);
    expect(t.highest).toBe(3);
  });

  it('handles out-of-order seqs and gaps', () => {
    const t = new SeqTracker();
    expect(t.accept(3)).toBe(true);
    expect(t.accept(1)).toBe(true);
    expect(t.accept(3)).toBe(false);
    expect(t.accept(2)).toBe(true);
    expect(t.accept(2)).toBe(false);
    expect(t.highest).toBe(3);
    expect(t.has(4)).toBe(false);
  });

  it('treats seqs at or below a reply position as seen', () => {
    const t = new SeqTracker();
    t.advanceTo(10);
    expect(t.highest).toBe(10);
    expect(t.accept(10)).toBe(false);
    expect(t.accept(7)).toBe(false);
    expect(t.accept(11)).toBe(true);
    t.advanceTo(5); // never backwards
    expect(t.highest).toBe(11);
  });

  it('forgets everything on reset (a new epoch restarts seqs)', () => {
    const t = new SeqTracker();
    t.epoch = 'e1';
    for (let s = 1; s <= 5; s++) t.accept(s);
    t.reset('e2', 0);
    expect(t.epoch).toBe('e2');
    expect(t.highest).toBe(0);
    expect(t.accept(1)).toBe(true);
    expect(t.accept(1)).toBe(false);
  });

  it('keeps memory bounded when a seq never arrives', () => {
    const t = new SeqTracker({ maxPending: 3 });
    t.accept(1);
    // seq 2 is lost; 3..6 arrive
    for (const s of [3, 4, 5, 6]) expect(t.accept(s)).toBe(true);
    // the gap was given up: everything up to 6 counts as seen, including the lost 2
    expect(t.has(2)).toBe(true);
    expect(t.accept(6)).toBe(false);
    expect(t.accept(7)).toBe(true);
  });
});

describe('RoomSeqs', () => {
  it('tracks rooms independently and gives resume positions', () => {
    const seqs = new RoomSeqs();
    expect(seqs.accept('a', 1)).toBe(true);
    expect(seqs.accept('b', 1)).toBe(true);
    expect(seqs.accept('a', 1)).toBe(false);
    expect(seqs.position('a')).toBeUndefined(); // no epoch yet
    seqs.tracker('a').epoch = 'e';
    expect(seqs.position('a')).toEqual({ sinceSeq: 1, epoch: 'e' });
    seqs.forget('a');
    expect(seqs.position('a')).toBeUndefined();
    expect(seqs.accept('a', 1)).toBe(true);
  });
});
