import { ConnectionIndicator, OfflineBanner, useConnection, useSwitchyardEvent } from '@switchyard/react';
import { useState, type FormEvent } from 'react';
import { Chat } from './Chat.js';
import { CursorArea } from './CursorArea.js';
import { ROOM_RE } from './format.js';
import { Members } from './Members.js';
import { getName, initialRoom, setName } from './session.js';

export function App() {
  const [roomId, setRoomId] = useState(initialRoom);
  const [error, setError] = useState<string | null>(null);

  // Refused requests (a join to a forbidden room, a bad frame) arrive as `error` frames.
  useSwitchyardEvent('error', (e) => setError(`${e.code}: ${e.message}`));

  return (
    <div className="wrap">
      <header className="top">
        <h1>
          Switchyard <span>demo</span>
        </h1>
        <ConnectionIndicator id="status" data-testid="status">
          {({ label }) => (
            <>
              <span className="dot" aria-hidden="true" />
              <span id="status-text">{label}</span>
            </>
          )}
        </ConnectionIndicator>
      </header>

      <JoinForm roomId={roomId} onJoin={setRoomId} />

      <OfflineBanner className="offline-banner" data-testid="offline-banner" />

      {error !== null && (
        <div id="error" className="error-line" role="alert" data-testid="error">
          <span id="error-text">{error}</span>
          <button type="button" aria-label="Dismiss" onClick={() => setError(null)}>
            ×
          </button>
        </div>
      )}

      <main className="layout">
        <Chat roomId={roomId} />
        <Members roomId={roomId} />
        <CursorArea roomId={roomId} />
      </main>
    </div>
  );
}

function JoinForm({ roomId, onJoin }: { roomId: string; onJoin: (roomId: string) => void }) {
  const { state, client } = useConnection();
  const [name, setNameField] = useState(getName);
  const [room, setRoom] = useState(roomId);
  const [problem, setProblem] = useState<{ field: 'name' | 'room'; text: string } | null>(null);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const newName = name.trim();
    const newRoom = room.trim();
    if (!newName) return setProblem({ field: 'name', text: 'Please enter a display name.' });
    if (!ROOM_RE.test(newRoom)) {
      return setProblem({ field: 'room', text: 'Room id must be 1–128 characters of A–Z a–z 0–9 _ - : . @' });
    }
    if (newRoom.startsWith('user:')) return setProblem({ field: 'room', text: 'Room ids starting with "user:" are reserved.' });
    setProblem(null);
    onJoin(newRoom);
    if (newName !== getName()) {
      setName(newName);
      client.reconnect(); // the name is in the token: get a new one
    } else if (state === 'disconnected') {
      client.connect();
    }
  };

  return (
    <form className="card join" noValidate onSubmit={submit} data-testid="join-form">
      <label>
        Display name
        <input
          id="name"
          data-testid="name-input"
          value={name}
          maxLength={64}
          autoComplete="off"
          spellCheck={false}
          aria-invalid={problem?.field === 'name'}
          onChange={(e) => setNameField(e.target.value)}
        />
      </label>
      <label>
        Room
        <input
          id="room"
          data-testid="room-input"
          value={room}
          maxLength={128}
          autoComplete="off"
          spellCheck={false}
          aria-invalid={problem?.field === 'room'}
          onChange={(e) => {
            setRoom(e.target.value);
            setProblem(null);
          }}
        />
      </label>
      <button id="join" type="submit" data-testid="join-button">
        Join
      </button>
      <button
        id="toggle"
        type="button"
        className="secondary"
        data-testid="connect-toggle"
        onClick={() => (state === 'disconnected' ? client.connect() : client.disconnect())}
      >
        {state === 'disconnected' ? 'Connect' : 'Disconnect'}
      </button>
      <p id="join-error" className="field-error" role="alert">
        {problem?.text ?? ''}
      </p>
    </form>
  );
}
