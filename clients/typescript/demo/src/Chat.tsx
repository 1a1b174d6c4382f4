import type { RoomMessage } from '@switchyard/react';
import { describeTyping, useRoom, useSwitchyardEvent, useTyping } from '@switchyard/react';
import { useLayoutEffect, useRef, useState, type FormEvent } from 'react';
import { formatTime } from './format.js';

interface Notice {
  key: string;
  ts: number;
  text: string;
}

let noticeCounter = 0;

export function Chat({ roomId }: { roomId: string }) {
  const [notices, setNotices] = useState<Notice[]>([]);
  const notify = (text: string) => setNotices((list) => [...list, { key: `n${++noticeCounter}`, ts: Date.now(), text }].slice(-50));

  const { messages, send, retry } = useRoom(roomId, {
    onHistoryReset: (e) =>
      notify(
        e.reason === 'not-recovered'
          ? 'Reconnected, but some messages were too old to replay.'
          : 'The room history was reset on the server; earlier messages were cleared.',
      ),
  });
  const { typing, notifyTyping, stopTyping } = useTyping(roomId);
  const [text, setText] = useState('');

  useSwitchyardEvent('event', (e) => {
    if (e.roomId !== roomId) return;
    const payload = JSON.stringify(e.data ?? null).slice(0, 200);
    notify(`event "${e.event}"${e.userId ? ` from ${e.userId}` : ''}: ${payload}`);
  });

  // A room switch starts a fresh list of notices.
  const [noticesRoom, setNoticesRoom] = useState(roomId);
  if (noticesRoom !== roomId) {
    setNoticesRoom(roomId);
    setNotices([]);
  }

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const value = text.trim();
    if (!value) return;
    send(value);
    setText('');
    stopTyping();
  };

  return (
    <section className="card chat">
      <h2>
        Room <span id="room-title">{roomId}</span>
      </h2>
      <MessageList messages={messages} notices={notices} onRetry={retry} />
      <div id="typing" aria-live="polite" data-testid="typing">
        {describeTyping(typing)}
      </div>
      <form id="composer" autoComplete="off" onSubmit={submit}>
        <input
          id="text"
          data-testid="composer-input"
          maxLength={4000}
          placeholder="Write a message… (Enter to send)"
          value={text}
          onChange={(e) => {
            setText(e.target.value);
            if (e.target.value) notifyTyping();
            else stopTyping();
          }}
        />
        <button id="send" type="submit" data-testid="send-button">
          Send
        </button>
      </form>
    </section>
  );
}

type Item = { kind: 'message'; message: RoomMessage } | { kind: 'notice'; notice: Notice };

function MessageList({
  messages,
  notices,
  onRetry,
}: {
  messages: readonly RoomMessage[];
  notices: readonly Notice[];
  onRetry: (tempId: RoomMessage['tempId']) => void;
}) {
  const list = useRef<HTMLUListElement>(null);
  const atBottom = useRef(true);

  // Notices go between confirmed messages by time; pending and failed ones stay at the bottom.
  const confirmed: Item[] = messages.filter((m) => m.status === 'sent').map((message) => ({ kind: 'message', message }));
  const ownPending: Item[] = messages.filter((m) => m.status !== 'sent').map((message) => ({ kind: 'message', message }));
  const timeline = [...confirmed, ...notices.map((notice): Item => ({ kind: 'notice', notice }))].sort(
    (a, b) => (a.kind === 'message' ? a.message.ts : a.notice.ts) - (b.kind === 'message' ? b.message.ts : b.notice.ts),
  );
  const items = [...timeline, ...ownPending];
  const last = items.at(-1);
  const lastOwn = last?.kind === 'message' && last.message.own;

  useLayoutEffect(() => {
    const el = list.current;
    if (el && (atBottom.current || lastOwn)) el.scrollTop = el.scrollHeight;
  }, [items.length, lastOwn]);

  return (
    <ul
      id="messages"
      ref={list}
      data-testid="messages"
      onScroll={(e) => {
        const el = e.currentTarget;
        atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
      }}
    >
      {items.map((item) =>
        item.kind === 'notice' ? (
          <li key={item.notice.key} className="notice" data-testid="notice">
            {item.notice.text}
          </li>
        ) : (
          <MessageItem key={item.message.key} message={item.message} onRetry={onRetry} />
        ),
      )}
    </ul>
  );
}

function MessageItem({ message: m, onRetry }: { message: RoomMessage; onRetry: (tempId: RoomMessage['tempId']) => void }) {
  const classes = ['message', m.own ? 'own' : '', m.status === 'sent' ? '' : m.status].filter(Boolean).join(' ');
  return (
    <li
      className={classes}
      data-testid="message"
      data-status={m.status}
      data-seq={m.seq}
      data-temp-id={String(m.tempId)}
      data-user-id={m.userId}
    >
      <div className="meta">
        <span className="author">{m.name || m.userId || 'you'}</span>
        <time className="time" dateTime={new Date(m.ts).toISOString()}>
          {formatTime(m.ts)}
        </time>
        {m.status === 'pending' && <span className="state">sending…</span>}
        {m.status === 'failed' && (
          <span className="state" data-testid="message-error">
            failed: {m.error?.message ?? 'refused'}{' '}
            <button type="button" className="retry" data-testid="retry-button" onClick={() => onRetry(m.tempId)}>
              retry
            </button>
          </span>
        )}
      </div>
      <div className="text" data-testid="message-text">
        {m.text}
      </div>
    </li>
  );
}
