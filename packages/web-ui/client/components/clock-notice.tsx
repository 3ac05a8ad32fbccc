/**
 * What the idle clocks are about to do to a desktop, said before it happens (in the list and in
 * the open-desktop view): a countdown inside each warning window with "Keep it running", and,
 * once its streams are held disconnected, the reason with "Reconnect" (which is a keep-alive too,
 * so a warning shown beside it has no button of its own). The countdown ticks from
 * the server's deadline each second without asking the server; screen readers hear a polite
 * live region that changes only in coarse steps (clocks.ts spokenWarning), not every second.
 */
import { useEffect, useState } from 'preact/hooks';
import { activeWarnings, countdown, nextChange, serverNow, spokenWarning, warningWords, type ClocksView } from '../clocks.ts';
import type { Desktop } from '../api.ts';

/** Now (server time), re-rendered whenever what the clocks show changes: each second inside a warning window, else at the next window. */
export function useClockNow(clocks: ClocksView | null | undefined): number {
  const [now, setNow] = useState(serverNow);
  // Only the times matter: a refetch with the same deadlines keeps the running timer.
  const key = clocks ? `${clocks.exempt}|${clocks.disconnected?.at ?? ''}|${(clocks.deadlines ?? []).map((d) => `${d.warnAt}/${d.at}`).join(',')}` : '';
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = () => {
      const n = serverNow();
      setNow(n);
      const wait = nextChange(clocks, n);
      // A few ms late, so the second shown has turned when the render runs.
      if (wait !== null) timer = setTimeout(tick, wait + 15);
    };
    tick();
    return () => clearTimeout(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  return now;
}

function Hidden({ children }: { children: string }) {
  return <span class="visually-hidden">{children}</span>;
}

export interface ClockNoticeProps {
  desktop: Desktop;
  label: string;
  /** "Keep it running": POST .../keepalive. Absent (the admin view): the warning shows without it. */
  onKeepAlive?: () => Promise<void>;
  /** "Reconnect" for streams held disconnected. Absent: the state shows without it. */
  onReconnect?: () => Promise<void>;
  /** Disconnected as the page learnt it (Kasm's own idle timeout), when the server does not hold it. */
  clientDisconnected?: string | null;
  /** After a keep-alive or reconnect worked: its button is gone, so the caller puts focus somewhere useful. */
  onDone?: () => void;
}

export function ClockNotice({ desktop, label, onKeepAlive, onReconnect, clientDisconnected, onDone }: ClockNoticeProps) {
  const clocks = desktop.state === 'running' ? desktop.clocks : undefined;
  const now = useClockNow(clocks);
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const held = clocks?.disconnected ? `${clocks.disconnected.reason.replace(/\.$/, '')}.` : desktop.state === 'running' && clientDisconnected ? clientDisconnected : null;
  const warnings = activeWarnings(clocks, now);

  const run = async (what: string, fn: () => Promise<void>) => {
    setBusy(what);
    setError(null);
    try {
      await fn();
      onDone?.();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(null);
    }
  };

  const spoken = [
    held ? `${label}: ${held} Reconnect to use it again.` : '',
    ...warnings.map((w) => `${label}: ${spokenWarning(w, desktop.activity)}`),
  ]
    .filter(Boolean)
    .join(' ');

  return (
    <div class="clocks">
      {held ? (
        <div class="clock-notice clock-held" data-clock="disconnected">
          <p>
            <strong>{held}</strong> The desktop is still running; its screen is disconnected until you reconnect.
          </p>
          {onReconnect ? (
            <button type="button" class="primary" disabled={busy !== null} onClick={() => run('reconnect', onReconnect)}>
              {busy === 'reconnect' ? 'Reconnecting…' : 'Reconnect'}
              <Hidden>{` ${label}`}</Hidden>
            </button>
          ) : null}
        </div>
      ) : null}
      {warnings.map((w) => {
        const words = warningWords(w, desktop.activity);
        return (
          <div key={w.deadline.clock} class="clock-notice" data-clock={w.deadline.clock} data-phase={w.phase}>
            <p>
              <strong>
                {words.lead}
                {w.phase === 'warn' ? (
                  <>
                    {' '}
                    <span class="countdown" role="timer">
                      {countdown(w.remainingMs)}
                    </span>
                  </>
                ) : null}
              </strong>
              {words.reason}
            </p>
            {!words.keepable ? (
              <p class="note">Keeping it running cannot extend a lifetime: save your work.</p>
            ) : onKeepAlive && !held ? (
              <button type="button" disabled={busy !== null} onClick={() => run('keep', onKeepAlive)}>
                {busy === 'keep' ? 'Keeping it running…' : 'Keep it running'}
                <Hidden>{` ${label}`}</Hidden>
              </button>
            ) : null}
          </div>
        );
      })}
      {error ? (
        <p class="error" role="alert">
          {error}
        </p>
      ) : null}
      {/* Always present, so the first warning is announced; its text changes in coarse steps only. */}
      <p class="visually-hidden" role="status">
        {spoken}
      </p>
    </div>
  );
}
