/**
 * One desktop in a list, for its owner (open, stop, start, delete, live progress) or for an admin
 * (owner shown; stop and delete only). Every action button names its desktop for screen readers.
 */
import { useEffect, useState } from 'preact/hooks';
import { desktopHref, ownerName, type Desktop } from '../api.ts';
import { linkTo } from '../router.ts';
import { ClockNotice } from './clock-notice.tsx';
import { ShareButton } from './sharing-panel.tsx';
import { ProgressPanel, useProgress } from './progress.tsx';
import { ago, exact } from './time.ts';

export const STATE_LABEL: Record<string, string> = {
  creating: 'Creating',
  starting: 'Starting',
  running: 'Running',
  stopping: 'Stopping',
  stopped: 'Stopped',
  failed: 'Failed',
};

export function desktopLabel(d: Desktop): string {
  return d.name || d.label || d.proxyPath || d.id;
}

export interface DesktopActions {
  stop(d: Desktop): Promise<void>;
  start?(d: Desktop): Promise<void>;
  remove(d: Desktop): void;
  /** Called when a creating/starting desktop settles, with its fresh record. */
  settled?(d: Desktop): void;
  /** "Keep it running" and "Reconnect" (POST .../keepalive); the owner's list only. */
  keepAlive?(d: Desktop): Promise<void>;
  /** Start it with a stand-in home (its home's node is lost and the operator allows it); asks for confirmation first. The owner's list only. */
  newHome?(d: Desktop): void;
  /** Exempt it from the idle clocks or put it back under them; the admin view only. */
  setExempt?(d: Desktop, exempt: boolean): Promise<void>;
}

function Hidden({ children }: { children: string }) {
  return <span class="visually-hidden">{children}</span>;
}

function LiveProgress({ desktop, onSettled }: { desktop: Desktop; onSettled: (d: Desktop) => void }) {
  const progress = useProgress(desktop, onSettled);
  return <ProgressPanel progress={progress} label={desktopLabel(desktop)} />;
}

/**
 * `homeName`: the name of the desktop's home (`homeId`), when the page knows it; a desktop with a
 * home shows it either way, linking to the Homes view (the admin view: to its homes section).
 */
export function DesktopCard({ desktop, actions, admin = false, homeName }: { desktop: Desktop; actions: DesktopActions; admin?: boolean; homeName?: string }) {
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const label = desktopLabel(desktop);
  const headingId = `desktop-${desktop.id}-title`;
  const inProgress = desktop.state === 'creating' || desktop.state === 'starting';
  // Each time the desktop (re)starts, a fresh progress panel follows it, and it stays after the
  // desktop settles so the user sees "Ready" (or why it failed) rather than a panel vanishing.
  const [generation, setGeneration] = useState(inProgress ? 1 : 0);
  useEffect(() => {
    if (inProgress) setGeneration((r) => (r % 2 === 0 ? r + 1 : r));
    else setGeneration((r) => (r % 2 === 1 ? r + 1 : r));
  }, [inProgress]);
  const showProgress = !admin && generation > 0 && (inProgress || desktop.state === 'running' || desktop.state === 'failed');

  const run = async (what: string, fn: () => Promise<void>) => {
    setBusy(what);
    setError(null);
    try {
      await fn();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(null);
    }
  };

  return (
    <li class={`card desktop state-${desktop.state}`} aria-labelledby={headingId} data-desktop-id={desktop.id}>
      <div class="card-head">
        <h3 id={headingId} tabIndex={-1}>
          {label}
        </h3>
        <span class={`badge badge-${desktop.state}`} data-state={desktop.state}>
          <Hidden>State: </Hidden>
          {STATE_LABEL[desktop.state] ?? desktop.state}
        </span>
      </div>
      <dl class="facts">
        {admin ? (
          <div>
            <dt>Owner</dt>
            <dd>{ownerName(desktop.owner)}</dd>
          </div>
        ) : null}
        <div>
          <dt>Type</dt>
          <dd>{desktop.type}</dd>
        </div>
        <div>
          <dt>Age</dt>
          <dd title={exact(desktop.createdAt)}>{desktop.createdAt ? ago(desktop.createdAt).replace(/ ago$/, '') : '—'}</dd>
        </div>
        <div>
          <dt>{desktop.activity === 'input' ? 'Last input' : 'Last activity'}</dt>
          <dd title={exact(desktop.lastActivityAt)}>{ago(desktop.lastActivityAt)}</dd>
        </div>
        {desktop.homeId ? (
          <div>
            <dt>Home</dt>
            <dd data-home-id={desktop.homeId}>
              {admin ? (
                <a href={`#home-${desktop.homeId}`}>{homeName ?? 'Yes'}</a>
              ) : (
                <a href="/homes" onClick={linkTo('/homes')}>
                  {homeName ?? 'Yes'}
                  <Hidden> in Homes</Hidden>
                </a>
              )}
            </dd>
          </div>
        ) : null}
        {admin && desktop.clocks ? (
          <div>
            <dt>Idle clocks</dt>
            <dd data-exempt={String(desktop.clocks.exempt)}>{desktop.clocks.exempt ? 'Exempt' : 'Apply'}</dd>
          </div>
        ) : null}
        <div class="wide">
          <dt>Address</dt>
          <dd>
            <code>/desktop/{desktop.proxyPath}/</code>
          </dd>
        </div>
      </dl>
      {desktop.state === 'failed' && desktop.reason ? (
        <p class="reason">
          <strong>Why it failed:</strong> {desktop.reason}
        </p>
      ) : desktop.reason && desktop.state === 'stopped' ? (
        <p class="note">{desktop.reason}</p>
      ) : null}
      {desktop.state === 'failed' && desktop.homeLost ? (
        <p class="note" data-home-lost>
          {admin
            ? "Its home's files are safe on that node: start it again once the node is back, or move the home to another node under Homes."
            : desktop.homeLost.offerNewHome
              ? 'Your files are safe on that node. Start the desktop again once the node is back, or start it now with a new, empty home.'
              : 'Your files are safe on that node. Start the desktop again once the node is back, or ask an admin to move the home.'}
        </p>
      ) : null}
      {desktop.state === 'running' ? (
        <ClockNotice
          desktop={desktop}
          label={label}
          onKeepAlive={actions.keepAlive ? () => actions.keepAlive!(desktop) : undefined}
          onReconnect={actions.keepAlive ? () => actions.keepAlive!(desktop) : undefined}
          onDone={() => document.getElementById(headingId)?.focus()}
        />
      ) : null}
      {showProgress ? (
        <LiveProgress key={Math.ceil(generation / 2)} desktop={desktop} onSettled={(d) => actions.settled?.(d)} />
      ) : null}
      {error ? (
        <p class="error" role="alert">
          {error}
        </p>
      ) : null}
      <div class="actions">
        {desktop.state === 'running' && !admin ? (
          <>
            <a class="button primary" href={`/desktops/${encodeURIComponent(desktop.id)}`} onClick={linkTo(`/desktops/${encodeURIComponent(desktop.id)}`)}>
              Open<Hidden>{` ${label}`}</Hidden> here
            </a>
            <a class="button" href={desktopHref(desktop)} target="_blank" rel="noopener">
              Open<Hidden>{` ${label}`}</Hidden> in new tab
            </a>
          </>
        ) : null}
        {!admin && !desktop.pool ? <ShareButton desktop={desktop} label={label} /> : null}
        {desktop.state === 'running' || desktop.state === 'starting' || desktop.state === 'creating' ? (
          <button type="button" disabled={busy !== null} onClick={() => run('stop', () => actions.stop(desktop))}>
            {busy === 'stop' ? 'Stopping…' : 'Stop'}
            <Hidden>{` ${label}`}</Hidden>
          </button>
        ) : null}
        {actions.start && (desktop.state === 'stopped' || desktop.state === 'failed') ? (
          <button type="button" disabled={busy !== null} onClick={() => run('start', () => actions.start!(desktop))}>
            {busy === 'start' ? 'Starting…' : 'Start'}
            <Hidden>{` ${label}`}</Hidden>
          </button>
        ) : null}
        {actions.newHome && desktop.state === 'failed' && desktop.homeLost?.offerNewHome ? (
          <button type="button" disabled={busy !== null} onClick={() => actions.newHome!(desktop)}>
            Start with a new empty home<Hidden>{` for ${label}`}</Hidden>
          </button>
        ) : null}
        {admin && actions.setExempt && desktop.clocks ? (
          <button
            type="button"
            disabled={busy !== null}
            onClick={() => run('exempt', () => actions.setExempt!(desktop, !desktop.clocks!.exempt))}
          >
            {desktop.clocks.exempt ? 'Apply idle clocks' : 'Exempt from idle clocks'}
            <Hidden>{` ${label}`}</Hidden>
          </button>
        ) : null}
        <button type="button" class="danger" disabled={busy !== null} onClick={() => actions.remove(desktop)}>
          Delete<Hidden>{` ${label}`}</Hidden>
        </button>
      </div>
    </li>
  );
}
