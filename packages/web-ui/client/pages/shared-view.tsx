/**
 * A desktop someone shares with the signed-in user, full window like the owner's view: a bar
 * (back, its name and owner, "View only" or "Control", when the share ends, open in a new tab,
 * full screen) above the desktop in an iframe loaded through its hand-off (`openUrl`), with the
 * renewal frame keeping the desktop origin's access cookie fresh. The share is read again every
 * few seconds: once it is revoked or has ended, the desktop goes and the page says so (the proxy
 * has closed its connections by then anyway).
 *
 * Also the page a share link opens (`/share/<secret>`): POST /api/shared/links records the user as
 * the link's visitor, then this view shows the desktop.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, type SharedDesktop } from '../api.ts';
import { DesktopFrame, FrameActions } from '../components/desktop-frame.tsx';
import { ago, exact } from '../components/time.ts';
import { linkTo, navigate } from '../router.ts';
import { MODE_LABEL } from '../sharing.ts';

/** How often the share is checked while its desktop is shown. */
const CHECK_MS = 5000;

export const NOT_SHARED = 'This desktop is not shared with you: its share was revoked or has ended, or it does not exist.';

export function sharedLabel(d: SharedDesktop): string {
  return d.name || d.proxyPath;
}

function Back() {
  return (
    <a class="button" href="/" onClick={linkTo('/')}>
      <span aria-hidden="true">← </span>Desktops
    </a>
  );
}

export function SharedView({ id }: { id: string }) {
  const [shared, setShared] = useState<SharedDesktop | null>(null);
  const [status, setStatus] = useState<'loading' | 'shown' | 'gone' | 'error'>('loading');
  const [error, setError] = useState<string | null>(null);
  const frameRef = useRef<HTMLIFrameElement>(null);

  useEffect(() => {
    let stop = false;
    const check = async () => {
      try {
        const found = (await api.shared()).find((d) => d.desktopId === id) ?? null;
        if (stop) return;
        setError(null);
        if (found === null) {
          setShared(null);
          setStatus('gone');
        } else {
          // A new object only when something shown changed: the iframe must not reload on each check.
          setShared((old) => (old && JSON.stringify(old) === JSON.stringify(found) ? old : found));
          setStatus('shown');
        }
      } catch (err) {
        if (stop) return;
        // A blip keeps the desktop on screen; the next check tries again.
        setError(err instanceof Error ? err.message : String(err));
        setStatus((s) => (s === 'loading' ? 'error' : s));
      }
    };
    void check();
    const timer = setInterval(() => document.visibilityState === 'visible' && void check(), CHECK_MS);
    const onVisible = () => document.visibilityState === 'visible' && void check();
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      stop = true;
      clearInterval(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [id]);

  useEffect(() => {
    document.title = shared ? `${sharedLabel(shared)} (${shared.owner}) · deskhub` : 'Shared desktop · deskhub';
  }, [shared]);

  if (status === 'loading' || (status === 'error' && !shared)) {
    return (
      <main id="main" class="page" tabIndex={-1} aria-busy={status === 'loading'}>
        <h1>Shared desktop</h1>
        {status === 'error' ? (
          <p class="error" role="alert">
            {error}
          </p>
        ) : (
          <p>Loading…</p>
        )}
        <Back />
      </main>
    );
  }
  if (status === 'gone' || !shared) {
    return (
      <main id="main" class="page" tabIndex={-1}>
        <h1>Shared desktop</h1>
        <p class="error" role="alert" id="not-shared">
          {NOT_SHARED}
        </p>
        <Back />
      </main>
    );
  }

  const label = sharedLabel(shared);
  const running = shared.state === 'running';
  return (
    <div class="viewer">
      <header class="viewer-bar">
        <Back />
        <h1 class="viewer-title">
          {label} <span class="muted viewer-owner">shared by {shared.owner}</span>
        </h1>
        <span class={`badge ${shared.mode === 'control' ? 'badge-starting' : 'badge-view'}`} id="share-mode" data-mode={shared.mode}>
          {MODE_LABEL[shared.mode]}
        </span>
        {shared.expiresAt ? (
          <span class="muted" title={exact(shared.expiresAt)}>
            Ends {ago(shared.expiresAt)}
          </span>
        ) : null}
        {running ? (
          <FrameActions desktop={shared} frameRef={frameRef} />
        ) : null}
      </header>
      <main id="main" class="viewer-main" tabIndex={-1}>
        {running ? (
          <>
            {shared.mode === 'view' ? (
              <p class="share-banner viewer-note">You are watching: your keys and mouse do nothing on this desktop.</p>
            ) : null}
            <DesktopFrame desktop={shared} title={`Desktop ${label}, shared by ${shared.owner}`} frameRef={frameRef} />
          </>
        ) : (
          <div class="page">
            <p role="status">
              {label} is {shared.state}. It shows here once {shared.owner} starts it.
            </p>
          </div>
        )}
      </main>
    </div>
  );
}

/** `/share/<secret>`: opens the link (the user is signed in by now: the app sends others to sign-in and back). */
export function OpenShareLink({ secret }: { secret: string }) {
  const [error, setError] = useState<{ status: number; message: string } | null>(null);
  useEffect(() => {
    let stop = false;
    api
      .openLink(secret)
      // Replace: the link's secret does not stay in this tab's history.
      .then((d) => !stop && navigate(`/shared/${encodeURIComponent(d.desktopId)}`, { replace: true }))
      .catch((err) => {
        if (stop) return;
        setError(err instanceof ApiError ? { status: err.status, message: err.message } : { status: 0, message: String(err) });
      });
    return () => {
      stop = true;
    };
  }, [secret]);
  return (
    <main id="main" class="page narrow" tabIndex={-1}>
      <h1>Shared desktop</h1>
      {error === null ? (
        <p aria-busy="true">Opening the share link…</p>
      ) : (
        <>
          <p class="error" role="alert" id="share-link-error">
            {error.status === 404
              ? 'This share link does not exist, was revoked, or has ended. Ask the desktop’s owner for a new one.'
              : `The share link could not be opened: ${error.message}`}
          </p>
          <Back />
        </>
      )}
    </main>
  );
}
