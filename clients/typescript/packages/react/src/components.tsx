import type { ConnectionState } from '@switchyard/client';
import { useEffect, useState, type HTMLAttributes, type ReactNode } from 'react';
import { useConnection, useOutbox } from './useConnection.js';

/** Ticks every `ms` while `active`, returning the current time. */
function useNow(active: boolean, ms = 250): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return undefined;
    setNow(Date.now());
    const id = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(id);
  }, [active, ms]);
  return now;
}

/** Seconds until the scheduled reconnect (rounded up, at least 1), or `undefined`. */
function useRetryCountdown(): number | undefined {
  const { state, nextRetryAt } = useConnection();
  const waiting = state === 'reconnecting' && nextRetryAt !== undefined;
  const now = useNow(waiting);
  if (!waiting || nextRetryAt === undefined || nextRetryAt <= now) return undefined;
  return Math.max(1, Math.ceil((nextRetryAt - now) / 1000));
}

const DEFAULT_LABELS: Record<ConnectionState, string> = {
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  disconnected: 'disconnected',
};

/** What the render prop of {@link ConnectionIndicator} receives. */
export interface ConnectionIndicatorRenderInfo {
  state: ConnectionState;
  label: string;
  /** Seconds until the next reconnect attempt, while waiting for it. */
  retryInSeconds: number | undefined;
}

/** Props of {@link ConnectionIndicator}. */
export interface ConnectionIndicatorProps extends Omit<HTMLAttributes<HTMLDivElement>, 'children'> {
  /** Labels per state (merged with the defaults). */
  labels?: Partial<Record<ConnectionState, string>>;
  /** Add "in Ns" to the `reconnecting` label while waiting. Default `true`. */
  showCountdown?: boolean;
  /** Replaces the default content (a `span.switchyard-dot.dot` and a `span.switchyard-label`). */
  children?: (info: ConnectionIndicatorRenderInfo) => ReactNode;
}

/**
 * The connection state as a small live region: `<div role="status" data-state="…">` with a
 * `span.switchyard-dot` and a `span.switchyard-label`. Style it with `[data-state="connected"]` etc.
 *
 * @example
 * ```tsx
 * <ConnectionIndicator id="status" />
 * ```
 */
export function ConnectionIndicator({ labels, showCountdown = true, children, ...rest }: ConnectionIndicatorProps): ReactNode {
  const { state } = useConnection();
  const retryInSeconds = useRetryCountdown();
  const base = labels?.[state] ?? DEFAULT_LABELS[state];
  const label =
    state === 'reconnecting' && showCountdown && retryInSeconds !== undefined
      ? `${base.replace(/…$/, '')} in ${retryInSeconds}s…`
      : base;
  return (
    <div role="status" aria-live="polite" data-state={state} {...rest}>
      {children ? (
        children({ state, label, retryInSeconds })
      ) : (
        <>
          <span className="switchyard-dot dot" aria-hidden="true" />
          <span className="switchyard-label">{label}</span>
        </>
      )}
    </div>
  );
}

/** What the render prop of {@link OfflineBanner} receives. */
export interface OfflineBannerRenderInfo {
  state: ConnectionState;
  /** Messages waiting for the connection. */
  queued: number;
  retryInSeconds: number | undefined;
  /** Why the connection was lost, when known. */
  reason: string | undefined;
  /** Reconnect now, skipping the wait. */
  reconnect: () => void;
}

/** Props of {@link OfflineBanner}. */
export interface OfflineBannerProps extends Omit<HTMLAttributes<HTMLDivElement>, 'children'> {
  /** Replaces the default content. */
  children?: (info: OfflineBannerRenderInfo) => ReactNode;
}

/**
 * A banner shown while the connection is lost (`reconnecting`, or `disconnected` after a
 * failure), saying how many messages wait to be sent and offering to reconnect now
 * (`span.switchyard-offline-text`, `button.switchyard-offline-action`). Renders nothing
 * otherwise (nor before the first connection).
 *
 * @example
 * ```tsx
 * <OfflineBanner className="offline" />
 * ```
 */
export function OfflineBanner({ children, ...rest }: OfflineBannerProps): ReactNode {
  const { state, lastError, client } = useConnection();
  const { queued } = useOutbox();
  const retryInSeconds = useRetryCountdown();
  const offline = state === 'reconnecting' || (state === 'disconnected' && lastError !== undefined);
  if (!offline) return null;
  const info: OfflineBannerRenderInfo = {
    state,
    queued,
    retryInSeconds,
    reason: lastError?.message,
    reconnect: () => client.reconnect(),
  };
  return (
    <div role="alert" data-state={state} {...rest}>
      {children ? children(info) : <DefaultOfflineContent {...info} />}
    </div>
  );
}

function DefaultOfflineContent({ state, queued, retryInSeconds, reason, reconnect }: OfflineBannerRenderInfo): ReactNode {
  const headline =
    state === 'disconnected'
      ? 'Disconnected.'
      : retryInSeconds !== undefined
        ? `Connection lost. Reconnecting in ${retryInSeconds}s…`
        : 'Connection lost. Reconnecting…';
  return (
    <>
      <span className="switchyard-offline-text">
        {headline}
        {queued > 0 ? ` ${queued} message${queued === 1 ? '' : 's'} will be sent when the connection is back.` : ''}
        {state === 'disconnected' && reason ? ` (${reason})` : ''}
      </span>
      <button type="button" className="switchyard-offline-action" onClick={reconnect}>
        {state === 'disconnected' ? 'Reconnect' : 'Retry now'}
      </button>
    </>
  );
}
