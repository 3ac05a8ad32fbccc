/**
 * A desktop shown full window inside the page: a thin bar (back, open in a new tab, full screen)
 * above an iframe that carries the KasmVNC query for control bar, clipboard and resize. The bar
 * comes first in the tab order so keyboard users can always leave, since a desktop captures keys.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, desktopHref, iframeSrc, type Desktop } from '../api.ts';
import { desktopLabel } from '../components/desktop-card.tsx';
import { linkTo } from '../router.ts';

export function DesktopView({ id }: { id: string }) {
  const [desktop, setDesktop] = useState<Desktop | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [generation, setGeneration] = useState(0);
  const frameRef = useRef<HTMLIFrameElement>(null);

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
  return (
    <div class="viewer">
      <header class="viewer-bar">
        {back}
        <h1 class="viewer-title">{label}</h1>
        {desktop.state === 'running' ? (
          <>
            <a class="button" href={desktopHref(desktop)} target="_blank" rel="noopener">
              Open in new tab
            </a>
            <button type="button" onClick={() => void frameRef.current?.requestFullscreen?.()}>
              Full screen
            </button>
          </>
        ) : null}
      </header>
      <main id="main" class="viewer-main" tabIndex={-1}>
        {desktop.state === 'running' ? (
          <iframe
            ref={frameRef}
            class="viewer-frame"
            title={`Desktop ${label}`}
            src={iframeSrc(desktop)}
            allow="clipboard-read; clipboard-write; fullscreen"
            allowFullScreen
          />
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
