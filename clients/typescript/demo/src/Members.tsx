import { colorForUser } from '@switchyard/client';
import { usePresence } from '@switchyard/react';
import { formatTime, initial } from './format.js';

export function Members({ roomId }: { roomId: string }) {
  const { members, self } = usePresence(roomId);
  return (
    <aside className="card presence">
      <h2>
        Online{' '}
        <span id="member-count" className="count" data-testid="member-count">
          {members.length}
        </span>
      </h2>
      <ul id="members" data-testid="members">
        {members.map((m) => {
          const name = m.name || m.userId;
          return (
            <li key={m.userId} data-testid="member" data-user-id={m.userId} title={`joined at ${formatTime(m.joinedAt)}`}>
              <span className="avatar" style={{ background: colorForUser(m.userId) }} aria-hidden="true">
                {initial(name)}
              </span>
              <span className="member-name">{name}</span>
              {m.userId === self?.userId && <span className="you">(you)</span>}
            </li>
          );
        })}
      </ul>
    </aside>
  );
}
