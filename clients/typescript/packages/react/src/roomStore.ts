import {
  randomId,
  SwitchyardError,
  type Ack,
  type HistoryResetEvent,
  type NewMessage,
  type SwitchyardClient,
  type TempId,
  type Unsubscribe,
} from '@switchyard/client';
import { SharedStore } from './store.js';

/** Where a message of {@link useRoom} stands. */
export type MessageStatus =
  /** Sent by this client, waiting for its ack (possibly queued offline). */
  | 'pending'
  /** Confirmed by the server (it has a `seq`). */
  | 'sent'
  /** Refused, timed out or dropped from the offline queue: see `error`; `retry(tempId)` resends it. */
  | 'failed';

/** A chat message as {@link useRoom} shows it. */
export interface RoomMessage<TData = unknown> {
  /** A stable React key: it does not change when a pending message is confirmed. */
  readonly key: string;
  readonly roomId: string;
  readonly tempId: TempId;
  /** The server id, once confirmed. */
  readonly id: string | undefined;
  /** The room seq, once confirmed. */
  readonly seq: number | undefined;
  readonly userId: string;
  readonly name: string | undefined;
  readonly text: string;
  readonly data: TData | undefined;
  /** Server time once confirmed; the local send time before. */
  readonly ts: number;
  readonly status: MessageStatus;
  /** Sent by this user (this connection or another tab of the same user). */
  readonly own: boolean;
  /** Why it failed, when `status` is `failed`. */
  readonly error: SwitchyardError | undefined;
}

/** The state of a room's messages (immutable, replaced on change). */
export interface RoomSnapshot<TData = unknown> {
  /** Confirmed messages in seq order, then this client's pending and failed ones in send order. */
  readonly messages: readonly RoomMessage<TData>[];
  /** The last history reset of the room, if any: re-fetch its history. */
  readonly historyReset: HistoryResetEvent | undefined;
}

/** Options fixed when the room's store is created (by the first `useRoom` of the room). */
export interface RoomStoreOptions {
  /** Most confirmed messages kept (the oldest are dropped). Default `500`. */
  maxMessages?: number;
}

const ORDER_PENDING = Number.POSITIVE_INFINITY;

function compare(a: RoomMessage, b: RoomMessage): number {
  return (a.seq ?? ORDER_PENDING) - (b.seq ?? ORDER_PENDING);
}

function toError(error: unknown): SwitchyardError {
  return error instanceof SwitchyardError
    ? error
    : new SwitchyardError('internal', error instanceof Error ? error.message : String(error), { cause: error });
}

/** Messages of one room, shared by every `useRoom(roomId)` of one client. */
export class RoomStore extends SharedStore<RoomSnapshot> {
  private readonly offs: Unsubscribe[] = [];
  private readonly maxMessages: number;
  private readonly historyListeners = new Set<(event: HistoryResetEvent) => void>();

  constructor(
    private readonly client: SwitchyardClient,
    readonly roomId: string,
    options: RoomStoreOptions = {},
  ) {
    super({ messages: [], historyReset: undefined });
    this.maxMessages = options.maxMessages ?? 500;
  }

  /** Calls `listener` on every history reset of the room. */
  onHistoryReset(listener: (event: HistoryResetEvent) => void): Unsubscribe {
    this.historyListeners.add(listener);
    return () => this.historyListeners.delete(listener);
  }

  protected attach(): void {
    this.offs.push(
      this.client.on('new-message', (m) => {
        if (m.roomId === this.roomId) this.receive(m);
      }),
      this.client.on('history-reset', (e) => {
        if (e.roomId === this.roomId) this.reset(e);
      }),
    );
  }

  protected detach(): void {
    for (const off of this.offs.splice(0)) off();
  }

  /**
   * Sends a message: shown at once as `pending`, then `sent` or `failed`. Returns its tempId,
   * or `undefined` (and does nothing) for an empty text.
   */
  send(text: string, data?: unknown): TempId | undefined {
    if (typeof text !== 'string' || text.length === 0) return undefined;
    const tempId = randomId();
    const userId = this.client.userId ?? '';
    const self = userId ? this.client.getMembers(this.roomId).find((m) => m.userId === userId) : undefined;
    const message: RoomMessage = {
      key: `own:${tempId}`,
      roomId: this.roomId,
      tempId,
      id: undefined,
      seq: undefined,
      userId,
      name: self?.name,
      text,
      data,
      ts: Date.now(),
      status: 'pending',
      own: true,
      error: undefined,
    };
    this.commit([...this.getSnapshot().messages, message]);
    this.transmit(message);
    return tempId;
  }

  /** Sends a failed message again, with the same tempId (the server delivers it at most once). */
  retry(tempId: TempId): boolean {
    const message = this.find(tempId);
    if (!message || message.status !== 'failed') return false;
    const retried: RoomMessage = { ...message, status: 'pending', error: undefined, ts: Date.now() };
    // A retried message goes back to the end of the pending ones.
    this.commit([...this.getSnapshot().messages.filter((m) => m !== message), retried]);
    this.transmit(retried);
    return true;
  }

  /** Removes a pending or failed message of this client from the list (a pending send still completes). */
  discard(tempId: TempId): boolean {
    const message = this.find(tempId);
    if (!message || message.status === 'sent') return false;
    this.commit(this.getSnapshot().messages.filter((m) => m !== message));
    return true;
  }

  /**
   * Merges messages fetched elsewhere (your backend, or the HTTP history API, whose messages are
   * shaped as delivered live) in seq order, skipping those already shown.
   */
  merge(messages: readonly NewMessage[]): void {
    const current = this.getSnapshot().messages;
    const seen = new Set<string>();
    for (const m of current) if (m.id) seen.add(m.id);
    const added: RoomMessage[] = [];
    for (const m of messages) {
      if (m.roomId !== this.roomId || seen.has(m.id)) continue;
      seen.add(m.id);
      added.push(this.fromServer(m));
    }
    if (added.length > 0) this.commit([...current, ...added]);
  }

  /** Empties the list (pending and failed messages of this client are kept). */
  clear(): void {
    this.commit(this.getSnapshot().messages.filter((m) => m.status !== 'sent'));
  }

  private find(tempId: TempId): RoomMessage | undefined {
    return this.getSnapshot().messages.find((m) => m.own && m.tempId === tempId && m.status !== 'sent');
  }

  private transmit(message: RoomMessage): void {
    this.client.sendMessage(this.roomId, message.text, message.data, { tempId: message.tempId }).then(
      (ack) => this.confirm(message.tempId, ack),
      (error: unknown) => this.fail(message.tempId, toError(error)),
    );
  }

  private confirm(tempId: TempId, ack: Ack): void {
    this.update(tempId, (m) => ({
      ...m,
      id: ack.serverId,
      seq: ack.seq,
      ts: ack.ts,
      userId: m.userId || (this.client.userId ?? ''),
      status: 'sent',
      error: undefined,
    }));
  }

  private fail(tempId: TempId, error: SwitchyardError): void {
    this.update(tempId, (m) => (m.status === 'sent' ? m : { ...m, status: 'failed', error }));
  }

  private update(tempId: TempId, change: (m: RoomMessage) => RoomMessage): void {
    const messages = this.getSnapshot().messages;
    const index = messages.findIndex((m) => m.own && m.tempId === tempId && m.key.startsWith('own:'));
    if (index < 0) return;
    const next = [...messages];
    next[index] = change(messages[index]!);
    this.commit(next);
  }

  private fromServer(m: NewMessage): RoomMessage {
    return {
      key: `id:${m.id}`,
      roomId: m.roomId,
      tempId: m.tempId,
      id: m.id,
      seq: m.seq,
      userId: m.userId,
      name: m.name,
      text: m.text,
      data: m.data,
      ts: m.ts,
      status: 'sent',
      own: m.userId === this.client.userId,
      error: undefined,
    };
  }

  private receive(m: NewMessage): void {
    const messages = this.getSnapshot().messages;
    const self = this.client.userId;
    // Our own message: confirm the pending one (its ack may not have arrived yet).
    if (m.userId === self) {
      const index = messages.findIndex((x) => x.key.startsWith('own:') && x.tempId === m.tempId);
      if (index >= 0) {
        const next = [...messages];
        next[index] = { ...messages[index]!, id: m.id, seq: m.seq, ts: m.ts, userId: m.userId, name: m.name, status: 'sent', error: undefined };
        this.commit(next);
        return;
      }
    }
    if (messages.some((x) => x.id === m.id)) return;
    this.commit([...messages, this.fromServer(m)]);
  }

  private reset(event: HistoryResetEvent): void {
    let messages = this.getSnapshot().messages;
    if (event.reason !== 'not-recovered') {
      // The seqs of the lost history cannot be ordered against the new epoch's: drop them.
      messages = messages.filter((m) => m.status !== 'sent');
    }
    this.setSnapshot({ messages: this.ordered(messages), historyReset: event });
    for (const listener of [...this.historyListeners]) listener(event);
  }

  private commit(messages: readonly RoomMessage[]): void {
    this.setSnapshot({ messages: this.ordered(messages), historyReset: this.getSnapshot().historyReset });
  }

  private ordered(messages: readonly RoomMessage[]): RoomMessage[] {
    const sorted = [...messages].sort(compare); // stable: pending keep their send order
    let confirmed = 0;
    for (const m of sorted) if (m.seq !== undefined) confirmed += 1;
    const excess = confirmed - this.maxMessages;
    return excess > 0 ? sorted.slice(excess) : sorted;
  }
}
