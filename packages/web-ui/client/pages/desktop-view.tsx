/**
 * A desktop shown full window inside the page: a thin bar (back, open in a new tab, full screen)
 * above an iframe that carries the KasmVNC query for control bar, clipboard and resize. The bar
 * comes first in the tab order so keyboard users can always leave, since a desktop captures keys.
 *
 * The idle clocks are said above the desktop (components/clock-notice.tsx): a countdown inside a
 * warning window with "Keep it running", and "Reconnect" once its streams are held disconnected.
 * The desktop's event stream says when its clocks or state change (events of kind `clock`, and
 * state changes), and the view then re-reads the desktop; a slow poll covers a lost stream. Kasm's
 * client inside the iframe posts `{action: 'idle_session_timeout'}` when its own idle timer fires:
 * that too shows the disconnected state, and Reconnect loads the desktop again.
 *
 * With DESKTOP_ORIGIN the iframe loads the desktop through its hand-off (`openUrl`), and a hidden
 * renewal frame keeps that origin's access cookie fresh (components/renewal-frame.tsx). The bar has
 * Share (the sharing panel), and while others have the desktop open a banner says who.
 */
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, openEventStream, type Desktop, type DesktopEvent } from '../api.ts';
import { ClockNotice } from '../components/clock-notice.tsx';
import { desktopLabel } from '../components/desktop-card.tsx';
import { DesktopFrame, FrameActions } from '../components/desktop-frame.tsx';
import { ConnectedBanner, ShareButton, useSharing } from '../components/sharing-panel.tsx';
import { linkTo } from '../router.ts';

/** Re-read the desktop this often while it runs, in case its event stream is lost (the stream is what makes changes show at once). */
const FALLBACK_POLL_MS = 30_000;
/** Events come in bursts (a replayed history, a warning and its end): one re-read per burst. */
const REFETCH_DEBOUNCE_MS = 250;
/** What Kasm's client posts to its parent when its own idle timer fires (it navigates to disconnected.html 10 s later). */
const KASM_IDLE_ACTION = 'idle_session_timeout';
const KASM_IDLE_TEXT = "Disconnected: the desktop's own client stopped after its idle timeout.";

export function DesktopView({ id }: { id: string }) {
  const [desktop, setDesktop] = useState<Desktop | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [generation, setGeneration] = useState(0);
  /** Bumped to load the desktop in the iframe again (after a reconnect). */
  const [frameKey, setFrameKey] = useState(0);
  /** Set when Kasm's client in the iframe said it disconnected itself. */
  const [clientIdle, setClientIdle] = useState<string | null>(null);
  const frameRef = useRef<HTMLIFrameElement>(null);
  // Who else has it open (the banner) and its shares (the panel): read while the view is open.
  const sharing = useSharing(id, desktop !== null && error === null);

  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let tries = 0;
    const load = async () => {
      try {
        const d = await api.desktop(id);
        if (stop) return;
        setDesktop(d);
        setError(null);
        // Follow a desktop that is still coming up, bounded; once running, the iframe takes over.
        if ((d.state === 'creating' || d.state === 'starting' || d.state === 'stopping') && tries++ < 600) {
          timer = setTimeout(load, 2000);
        }
      } catch (err) {
        if (!stop) setError(err instanceof Error ? err.message : String(err));
      }
    };
    void load();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [id, generation]);

  /** Re-reads the desktop; a transient failure keeps what is shown (the next event or poll tries again). */
  const refresh = useCallback(async () => {
    try {
      setDesktop(await api.desktop(id));
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 401)) setError(err.message);
    }
  }, [id]);

  // The desktop's event stream says when its clocks or its state changed: re-read it then.
  useEffect(() => {
    if (typeof EventSource === 'undefined') return;
    let debounce: ReturnType<typeof setTimeout> | undefined;
    const source = openEventStream(id);
    source.onmessage = (msg) => {
      try {
        const ev = JSON.parse(msg.data) as DesktopEvent;
        if (ev.kind !== 'clock' && !ev.state) return;
      } catch {
        return;
      }
      clearTimeout(debounce);
      debounce = setTimeout(() => void refresh(), REFETCH_DEBOUNCE_MS);
    };
    const poll = setInterval(() => document.visibilityState === 'visible' && void refresh(), FALLBACK_POLL_MS);
    return () => {
      source.close();
      clearTimeout(debounce);
      clearInterval(poll);
    };
  }, [id, refresh]);

  // Kasm's client says its own idle timer fired; only the desktop's iframe is listened to.
  useEffect(() => {
    const onMessage = (event: MessageEvent) => {
      const frame = frameRef.current;
      if (!frame || event.source !== frame.contentWindow) return;
      const data = event.data as { action?: unknown } | null;
      if (data && typeof data === 'object' && data.action === KASM_IDLE_ACTION) setClientIdle(KASM_IDLE_TEXT);
    };
    window.addEventListener('message', onMessage);
    return () => window.removeEventListener('message', onMessage);
  }, []);

  useEffect(() => {
    if (desktop) document.title = `${desktopLabel(desktop)} · deskhub`;
  }, [desktop]);

  const back = (
    <a class="button" href="/" onClick={linkTo('/')}>
      <span aria-hidden="true">← </span>Desktops
    </a>
  );

  if (error) {
    return (
      <main id="main" class="page" tabIndex={-1}>
        <h1>Desktop</h1>
        <p class="error" role="alert">
          {error}
        </p>
        {back}
      </main>
    );
  }
  if (!desktop) {
    return (
      <main id="main" class="page" tabIndex={-1} aria-busy="true">
        <p>Loading…</p>
      </main>
    );
  }
  const label = desktopLabel(desktop);

  const keepAlive = async () => {
    setDesktop(await api.keepAlive(desktop.id));
  };
  // Re-arm the streams, then load the desktop again so its client connects anew.
  const reconnect = async () => {
    setDesktop(await api.keepAlive(desktop.id));
    setClientIdle(null);
    setFrameKey((k) => k + 1);
  };

  return (
    <div class="viewer">
      <header class="viewer-bar">
        {back}
        <h1 class="viewer-title">{label}</h1>
        {desktop.state === 'running' ? (
          <FrameActions desktop={desktop} frameRef={frameRef} />
        ) : null}
        <ShareButton desktop={desktop} label={label} sharing={sharing} />
      </header>
      <main id="main" class="viewer-main" tabIndex={-1}>
        {desktop.state === 'running' ? (
          <>
            <div class="viewer-notice">
              <ConnectedBanner view={sharing.view} />
              <ClockNotice
                desktop={desktop}
                label={label}
                onKeepAlive={keepAlive}
                onReconnect={reconnect}
                clientDisconnected={clientIdle}
                // Back to the desktop: the button that had focus is gone.
                onDone={() => setTimeout(() => frameRef.current?.focus(), 0)}
              />
            </div>
            <DesktopFrame key={frameKey} desktop={desktop} title={`Desktop ${label}`} frameRef={frameRef} />
          </>
        ) : (
          <div class="page">
            <p role="status">
              {label} is {desktop.state}.
              {desktop.reason ? ` ${desktop.reason}` : ''}
            </p>
            {desktop.state === 'stopped' || desktop.state === 'failed' ? (
              <button
                type="button"
                class="primary"
                onClick={async () => {
                  try {
                    await api.start(desktop.id);
                    setGeneration((g) => g + 1);
                  } catch (err) {
                    setError(err instanceof Error ? err.message : String(err));
                  }
                }}
              >
                Start {label}
              </button>
            ) : null}
          </div>
        )}
      </main>
    </div>
  );
}
