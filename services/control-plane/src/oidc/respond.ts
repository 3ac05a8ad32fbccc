/**
 * What the sign-in routes answer besides a redirect: where a sign-in may send the user back to
 * (`next`: a path on this origin, never another site), and a failed sign-in as a message a person
 * can read: a small HTML page with a way back to sign-in for a browser, the API's JSON error shape
 * for anything else. Never a stack trace, never text the request itself supplied.
 */
import { STATUS_CODES } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * `next` made safe to redirect to: a path on this origin, normalised as the browser will read it
 * (dot segments removed, `%2e` counted as a dot, as URL resolution does), and under `within` when
 * given; null when it is not. Refused outright: anything not starting with one "/", a backslash
 * (browsers read it as "/"), an encoded slash or backslash (`%2f`, `%5c`: a server behind may
 * decode them into segments), control characters and spaces. The normalised value is what to
 * redirect to, never the raw one: `/desktop/../api/me` is `/api/me`, outside `/desktop/`.
 */
export function safeNextPath(next: string, within = '/'): string | null {
  if (!next.startsWith('/') || next.startsWith('//') || next.includes('\\') || /[\u0000-\u0020\u007f]/.test(next)) return null;
  if (/%(2f|5c)/i.test(next)) return null;
  const base = 'http://deskhub.invalid';
  let url: URL;
  try {
    url = new URL(next, base);
  } catch {
    return null;
  }
  if (url.origin !== base) return null;
  const path = url.pathname + url.search + url.hash;
  return path.startsWith(within) ? path : null;
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** Answers a failed sign-in with `status` and `message`; `next` keeps where the user was going. */
export function sendSignInFailure(request: FastifyRequest, reply: FastifyReply, status: number, message: string, next = '/'): FastifyReply {
  const error = STATUS_CODES[status] ?? 'Error';
  reply.code(status).header('cache-control', 'no-store');
  if (!(request.headers.accept ?? '').includes('text/html')) return reply.send({ statusCode: status, error, message });
  const again = next === '/' ? '/signin' : `/signin?next=${encodeURIComponent(next)}`;
  return reply
    .type('text/html; charset=utf-8')
    .header('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'")
    .send(
      `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
        `<title>Sign-in failed · deskhub</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}</style></head>` +
        `<body><main><h1>Sign-in failed</h1><p role="alert">${escapeHtml(message)}</p>` +
        `<p><a href="${escapeHtml(again)}">Back to sign-in</a></p></main></body></html>\n`,
    );
}
