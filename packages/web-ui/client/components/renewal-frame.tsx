/**
 * Keeps the access cookie of a desktop's own origin fresh while the desktop is open in this page
 * (DESKTOP_ORIGIN): a hidden iframe loads `/auth/desktop-handoff?desktop=<path>` (no `next`) every
 * half of the access lifetime and when the tab becomes visible again; the UI's origin redirects it
 * to the desktop's origin with a one-time code, which answers "Desktop access renewed." with a
 * fresh `__Host-deskhub_access` cookie.
 *
 * Why a frame and not a fetch: the cookie is `Partitioned`, so the browser keeps one jar per
 * top-level site, and the desktop framed in this page uses the jar of the UI's site. Only a
 * response *from the desktop's origin*, loaded *inside this page*, lands in that jar: a fetch from
 * here could not set a cookie for another origin (and CORS would hide its answer), and a new tab
 * would fill the desktop's own top-level jar instead. A navigation does not need CORS, and a frame
 * is the one navigation that stays inside this page. Without it, a desktop WebSocket that
 * reconnects after the first cookie expired (minutes: ACCESS_TOKEN_LIFETIME_S) would be refused.
 *
 * The frame runs no script (`sandbox` keeps its origin for the cookie, nothing else): the page it
 * ends on is the control plane's, and a signed-out hand-off ends on sign-in, which has nothing to
 * do in a hidden frame. A session that ended is noticed by the UI's own renewal (access-renewal.ts).
 */
import { useHandoffRenewal } from '../access-renewal.ts';

export function RenewalFrame({ href }: { href: string | null }) {
  const tick = useHandoffRenewal(href);
  if (href === null || tick === 0) return null;
  return (
    <iframe
      // A new element for each renewal: Preact leaves an unchanged src alone, so the same element would not load again.
      key={tick}
      class="renewal-frame"
      src={href}
      title="Desktop access renewal"
      hidden
      aria-hidden="true"
      tabIndex={-1}
      sandbox="allow-same-origin"
      data-renewal={tick}
    />
  );
}
