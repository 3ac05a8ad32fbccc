/**
 * Keeps the desktop access cookie (`deskhub_access`, Path=/desktop/, short-lived) fresh while the
 * UI is open and signed in: POST /auth/desktop-access when the UI loads, every half of its lifetime (which
 * GET /api/me/session tells; 2 minutes when it cannot be learnt), and at once when the tab becomes
 * visible again (background tabs' timers are throttled). Without it, a desktop WebSocket that
 * reconnects after the cookie expired gets 401 until a reload. The cookie's path covers every
 * desktop, so one open deskhub tab keeps desktops in other tabs working too.
 *
 * It stops when the server answers 401 (the session has ended: `onSessionEnded`) or 404 (a
 * control plane without the renewal route).
 *
 * With DESKTOP_ORIGIN each desktop is on an origin of its own, with its own cookie
 * (`__Host-deskhub_access`), which this origin cannot set: `useHandoffRenewal` below keeps that
 * one fresh, for the desktop open in the page (components/renewal-frame.tsx).
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError } from './api.ts';

/** Used when the lifetime cannot be learnt. */
export const DEFAULT_RENEW_MS = 120_000;
/** Never more often than this, whatever the lifetime says. */
const MIN_RENEW_MS = 5_000;

/** Half the access lifetime, within sane bounds. */
export function renewInterval(lifetimeSeconds: number | null | undefined): number {
  if (typeof lifetimeSeconds !== 'number' || !Number.isFinite(lifetimeSeconds) || lifetimeSeconds <= 0) return DEFAULT_RENEW_MS;
  return Math.max(MIN_RENEW_MS, Math.floor((lifetimeSeconds * 1000) / 2));
}

/** How often to renew, from GET /api/me/session, asked once per page (the lifetime is the server's setting). */
let learnt: Promise<number> | null = null;
export function learnRenewInterval(): Promise<number> {
  learnt ??= api.session().then(
    (info) => renewInterval(info.accessLifetimeSeconds),
    () => {
      learnt = null; // ask again next time
      return DEFAULT_RENEW_MS;
    },
  );
  return learnt;
}

export function useAccessRenewal(signedIn: boolean, onSessionEnded: () => void): void {
  const ended = useRef(onSessionEnded);
  ended.current = onSessionEnded;

  useEffect(() => {
    if (!signedIn) return;
    let stopped = false;
    let timer: ReturnType<typeof setInterval> | undefined;
    let periodMs = DEFAULT_RENEW_MS;

    const stop = () => {
      stopped = true;
      clearInterval(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
    const renew = async () => {
      if (stopped) return;
      try {
        await api.renewDesktopAccess();
      } catch (err) {
        if (!(err instanceof ApiError)) return;
        if (err.status === 401) {
          stop();
          ended.current();
        } else if (err.status === 404) {
          stop();
        }
        // Anything else (the server restarting, a network blip): the next tick tries again.
      }
    };
    const schedule = () => {
      clearInterval(timer);
      if (!stopped) timer = setInterval(() => void renew(), periodMs);
    };
    function onVisible() {
      if (document.visibilityState !== 'visible') return;
      void renew();
      schedule();
    }

    document.addEventListener('visibilitychange', onVisible);
    // A reloaded page may hold a cookie close to its end: renew now, then on the period.
    void renew();
    schedule();
    void learnRenewInterval().then((learnt) => {
      // The default period stays when it cannot be learnt; a 401 shows up on the next renewal.
      if (learnt !== periodMs && !stopped) {
        periodMs = learnt;
        schedule();
      }
    });
    return stop;
  }, [signedIn]);
}

/**
 * Renewal on a desktop's own origin: returns a number that goes up every half of the access
 * lifetime and whenever the tab becomes visible again (0 until the first renewal is due: the
 * desktop's own load went through the hand-off just now). The caller loads the renewal frame
 * afresh for each number (components/renewal-frame.tsx). `href` null: nothing to renew.
 */
export function useHandoffRenewal(href: string | null): number {
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (href === null) return;
    let stopped = false;
    let timer: ReturnType<typeof setInterval> | undefined;
    let periodMs = DEFAULT_RENEW_MS;
    const renew = () => !stopped && setTick((n) => n + 1);
    const schedule = () => {
      clearInterval(timer);
      if (!stopped) timer = setInterval(renew, periodMs);
    };
    const onVisible = () => {
      if (document.visibilityState !== 'visible') return;
      renew();
      schedule();
    };
    document.addEventListener('visibilitychange', onVisible);
    schedule();
    void learnRenewInterval().then((learnt) => {
      if (learnt !== periodMs && !stopped) {
        periodMs = learnt;
        schedule();
      }
    });
    return () => {
      stopped = true;
      clearInterval(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [href]);
  return tick;
}
