/**
 * What the sign-in routes answer besides a redirect: where a sign-in may send the user back to
 * (`next`: a path on this origin, never another site), and a failed sign-in as a message a person
 * can read: a small HTML page with a way back to sign-in for a browser, the API's JSON error shape
 * for anything else. Never a stack trace, never text the request itself supplied.
 */
import { STATUS_CODES } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * `next` as given when it is a path on this origin, else null: it must start with one "/", with
 * no "\\" (browsers read it as "/"), no control character or space, nothing that makes it leave
 * the origin it is resolved against.
 */
export function sameOriginPath(next: string): string | null {
  if (!next.startsWith('/') || next.startsWith('//') || next.includes('\\') || /[\u0000-\u0020\u007f]/.test(next)) return null;
  const base = 'http://deskhub.invalid';
  try {
    return new URL(next, base).origin === base ? next : null;
  } catch {
    return null;
  }
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
