/**
 * Desktop access on desktops' own origins (DESKTOP_ORIGIN): the hand-off (handoffs.ts).
 *
 * `GET /auth/desktop-handoff?desktop=<path>&next=<path>` on the UI's origin, with the session:
 * checks that the user may reach the desktop (its owner, or a live share or opened link), mints a
 * one-time code and redirects to `<desktop origin>/.deskhub/handoff?code=...&next=...`. The proxy
 * forwards that path on a desktop's origin (and nothing else of the control plane) here: the code
 * is exchanged for a token naming that desktop and the share, set as the origin's
 * `__Host-deskhub_access` cookie, and the browser goes on to `next` (a path of that desktop), or,
 * without `next` (the UI's renewal frame), gets a small page saying it was renewed.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import { Type } from '@sinclair/typebox';
import { eq } from 'drizzle-orm';
import { desktopOrigin, labelOfHost, originLabel } from '@deskhub/access-token';
import { desktops } from '../db/schema.ts';
import { ApiError, badRequest, notFound } from '../errors.ts';
import { Handoffs } from '../handoffs.ts';
import { safeNextPath } from '../oidc/respond.ts';
import { HANDOFF_PATH } from '../lifecycle/views.ts';
import { errors } from './schemas.ts';

/** Where a desktop's origin exchanges its code (the proxy forwards only this path of a desktop's origin). */
export const EXCHANGE_PATH = '/.deskhub/handoff';

const PROXY_PATH = '^[a-z0-9](?:[a-z0-9-]{0,198}[a-z0-9])?$';

/** `next` when it stays inside the desktop at `proxyPath`, else null. */
function nextWithin(next: string, proxyPath: string): string | null {
  const base = `/desktop/${proxyPath}`;
  const safe = safeNextPath(next, base);
  if (safe === null) return null;
  return safe === base || safe.startsWith(`${base}/`) || safe.startsWith(`${base}?`) ? safe : null;
}

function noStore(reply: FastifyReply): FastifyReply {
  // The code is in the URL: no cache keeps it, and no Referer carries it onward.
  return reply.header('cache-control', 'no-store').header('referrer-policy', 'no-referrer');
}

const handoff: FastifyPluginAsyncTypebox = async (app) => {
  const origins = app.config.DESKTOP_ORIGIN;
  const codes = new Handoffs(app.db);
  const off = () => notFound('desktops are not on origins of their own here (DESKTOP_ORIGIN is unset)');

  app.get(
    HANDOFF_PATH,
    {
      schema: {
        tags: ['auth'],
        security: [],
        summary: "Hands desktop access to a desktop's own origin (DESKTOP_ORIGIN): a one-time code in a redirect to it; without a session, to sign-in first",
        querystring: Type.Object({
          desktop: Type.String({ pattern: PROXY_PATH, description: 'the proxy path' }),
          next: Type.Optional(Type.String({ maxLength: 4000, description: 'a path of that desktop to go to afterwards; none: just renew the cookie' })),
        }),
        response: { 302: Type.Null(), ...errors(400, 403, 404) },
      },
    },
    async (request, reply) => {
      if (!origins) throw off();
      const { desktop, next } = request.query;
      const target = next === undefined ? null : nextWithin(next, desktop);
      if (next !== undefined && target === null) throw badRequest(`next must be a path of this desktop, under /desktop/${desktop}/`);
      const session = await app.cookieSession(request);
      if (!session) return noStore(reply).redirect(`/signin?next=${encodeURIComponent(request.url)}`, 302);
      const access = await app.desktops.accessFor(session.user, desktop);
      if (!access) throw new ApiError(403, 'this desktop is not shared with you (or it does not exist, or its share was revoked or has ended)');
      const code = await codes.create({ desktopId: access.desktopId, userId: session.user.id, sessionId: session.id, grantId: access.grantId });
      const query = `code=${code}${target === null ? '' : `&next=${encodeURIComponent(target)}`}`;
      return noStore(reply).redirect(`${desktopOrigin(origins, desktop)}${EXCHANGE_PATH}?${query}`, 302);
    },
  );

  app.get(
    EXCHANGE_PATH,
    {
      // The query holds the code: no request log line carries it.
      logLevel: 'warn',
      schema: {
        tags: ['auth'],
        security: [],
        summary: "On a desktop's origin (through the proxy): exchanges a hand-off code for that origin's access cookie, once",
        querystring: Type.Object({ code: Type.String({ maxLength: 200 }), next: Type.Optional(Type.String({ maxLength: 4000 })) }),
        response: { 200: Type.String(), 302: Type.Null(), ...errors(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      if (!origins) throw off();
      noStore(reply);
      // The proxy sets X-Forwarded-Host from the browser's Host (and drops any the browser sent).
      const forwarded = request.headers['x-forwarded-host'];
      const label = labelOfHost(origins, typeof forwarded === 'string' ? forwarded : request.headers.host);
      if (label === null) throw notFound("this path exists only on a desktop's own origin");
      const taken = await codes.take(request.query.code);
      if (!taken) throw new ApiError(403, 'this access code was used already or has expired: open the desktop from deskhub again');
      const [row] = await app.db.select({ proxyPath: desktops.proxyPath }).from(desktops).where(eq(desktops.id, taken.desktopId));
      if (!row || originLabel(row.proxyPath) !== label) throw new ApiError(403, "this access code is for another desktop's origin");
      const session = await app.sessions.byId(taken.sessionId);
      if (!session) throw new ApiError(401, 'the session this access was handed over from has ended: sign in again');
      // Asked again now: a share revoked since the code was made gives nothing.
      const access = await app.desktops.accessFor(session.user, row.proxyPath);
      if (!access || access.grantId !== taken.grantId) throw new ApiError(403, 'this desktop is no longer shared with you');
      app.access.setDesktopCookie(reply, session, row.proxyPath, access.grantId);
      const next = request.query.next === undefined ? null : nextWithin(request.query.next, row.proxyPath);
      if (next !== null) return reply.redirect(next, 302);
      return reply
        .type('text/html; charset=utf-8')
        .header('content-security-policy', "default-src 'none'")
        .send('<!doctype html><title>deskhub</title><p>Desktop access renewed.</p>');
    },
  );
};

export default handoff;
