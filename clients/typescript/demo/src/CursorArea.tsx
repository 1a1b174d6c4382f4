import { useCursors } from '@switchyard/react';
import type { PointerEvent } from 'react';
import { clamp01 } from './format.js';

export function CursorArea({ roomId }: { roomId: string }) {
  const { cursors, move, leave } = useCursors(roomId);

  const onPointerMove = (e: PointerEvent<HTMLDivElement>) => {
    const rect = e.currentTarget.getBoundingClientRect();
    if (!rect.width || !rect.height) return;
    move(clamp01((e.clientX - rect.left) / rect.width), clamp01((e.clientY - rect.top) / rect.height));
  };

  return (
    <section className="card canvas-card">
      <h2>Cursors</h2>
      <div id="cursor-area" data-testid="cursor-area" onPointerMove={onPointerMove} onPointerLeave={leave}>
        <span className="hint">move your mouse here</span>
        {[...cursors.values()].map((c) => (
          <div
            key={c.userId}
            className="cursor"
            data-testid="cursor"
            data-user-id={c.userId}
            style={{ left: `${clamp01(c.x) * 100}%`, top: `${clamp01(c.y) * 100}%`, color: c.color }}
          >
            <svg viewBox="0 0 16 16" width="16" height="16" aria-hidden="true">
              <path d="M1 1 L6.5 14.5 L8.6 8.6 L14.5 6.5 Z" fill="currentColor" stroke="#fff" strokeWidth="1.2" strokeLinejoin="round" />
            </svg>
            <span className="cursor-label" style={{ backgroundColor: c.color }}>
              {c.name || c.userId}
            </span>
          </div>
        ))}
      </div>
    </section>
  );
}
