/**
 * A room's presence list, kept from `room-joined`, `presence:join`, `presence:leave` and
 * `presence:sync`.
 *
 * @module
 */
import type { Member } from './types.js';

function byJoinTime(a: Member, b: Member): number {
  return a.joinedAt - b.joinedAt || (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0);
}

/** One entry per user, ordered by `joinedAt`, then `userId` (the server's order). */
export class MemberList {
  private readonly byId = new Map<string, Member>();
  private snapshot: readonly Member[] = [];

  /** The members, as an immutable array replaced on every change. */
  get list(): readonly Member[] {
    return this.snapshot;
  }

  get size(): number {
    return this.byId.size;
  }

  get(userId: string): Member | undefined {
    return this.byId.get(userId);
  }

  /** Replaces the whole list. Returns `true` (a full list always counts as a change). */
  replace(members: readonly Member[] | undefined): boolean {
    this.byId.clear();
    for (const m of members ?? []) if (m && typeof m.userId === 'string') this.byId.set(m.userId, m);
    this.rebuild();
    return true;
  }

  /** Adds or updates a member (joins are idempotent by `userId`). Returns whether anything changed. */
  upsert(member: Member): boolean {
    if (!member || typeof member.userId !== 'string') return false;
    const old = this.byId.get(member.userId);
    if (old && old.joinedAt === member.joinedAt && old.name === member.name && old.avatar === member.avatar) {
      return false;
    }
    this.byId.set(member.userId, member);
    this.rebuild();
    return true;
  }

  /** Removes a member. Returns whether it was there. */
  remove(userId: string): boolean {
    if (!this.byId.delete(userId)) return false;
    this.rebuild();
    return true;
  }

  clear(): boolean {
    if (this.byId.size === 0) return false;
    this.byId.clear();
    this.rebuild();
    return true;
  }

  private rebuild(): void {
    this.snapshot = Object.freeze([...this.byId.values()].sort(byJoinTime));
  }
}
