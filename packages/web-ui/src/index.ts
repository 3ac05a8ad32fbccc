/**
 * The Fastify plugin that serves deskhub's web UI from the control plane at `/`:
 * `app.register(webUi)` is the whole integration. It serves index.html for the UI's own routes
 * (never for /api or /auth, which stay the control plane's), hashed assets with immutable caching,
 * a strict Content-Security-Policy, and bodies held in memory with the brotli and gzip copies
 * written at build time (the whole bundle is ~15 kB compressed).
 *
 * When dist/ is missing or older than the sources, registration builds it (Vite), or with
 * `build: 'never'` fails with the command that builds it.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { extname, join, relative, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, RouteShorthandOptions } from 'fastify';
import fp from 'fastify-plugin';
import { COMPRESSED_SUFFIXES, defaultDistDir, ensureBuilt, STAMP_FILE, type BuildPolicy } from './build.ts';

export { buildWebUi, ensureBuilt, measure, BUILD_COMMAND, defaultDistDir, type BuildStamp, type BuildPolicy } from './build.ts';

/** Paths the single-page app renders itself; each gets index.html. Keep in step with client/router.ts. */
export const SPA_ROUTES = ['/', '/signin', '/admin', '/tokens', '/homes', '/desktops', '/desktops/:id', '/shared/:desktopId', '/share/:secret'] as const;

/**
 * Scripts and styles only from this origin (no inline code, no CDN: the machines are offline),
 * API calls and the event stream to this origin, desktops framed from this origin (they live
 * under /desktop/ on the same host) or, with DESKTOP_ORIGIN, from the desktops' own origins (see
 * `contentSecurityPolicy`), and the UI itself framed by nobody else.
 */
export function contentSecurityPolicy(frameSources: readonly string[] = []): string {
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    // The desktop iframe and the renewal frame start on this origin (the hand-off) and are
    // redirected to the desktop's own origin: frame-src is checked at each redirect.
    ['frame-src', "'self'", ...frameSources].join(' '),
    "frame-ancestors 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "object-src 'none'",
  ].join('; ');
}

export const CONTENT_SECURITY_POLICY = contentSecurityPolicy();

/** A CSP host-source such as `https://*.desktops.example.net:8443`: scheme, host (a leading `*.` allowed), port. */
const FRAME_SOURCE = /^https?:\/\/(?:\*\.)?[a-z0-9.-]+(?::\d{1,5})?$/;

/** The frame sources to add, each checked, so a bad value never widens the policy. */
function checkedFrameSources(sources: readonly string[]): string[] {
  for (const source of sources) {
    if (!FRAME_SOURCE.test(source)) throw new Error(`web UI: ${JSON.stringify(source)} is not a frame source such as https://*.desktops.example.net`);
  }
  return [...sources];
}

export interface WebUiOptions {
  /** Where the built bundle lives; default packages/web-ui/dist. */
  distDir?: string;
  /** When to build at registration: 'if-stale' (default: missing or older than the sources), 'if-missing', 'never'. */
  build?: BuildPolicy;
  /** Replace the Content-Security-Policy. */
  contentSecurityPolicy?: string;
  /**
   * Origins the UI frames besides its own: with DESKTOP_ORIGIN, the desktops' (the control plane
   * passes `https://*.desktops.example.net`), for the desktop frame and the renewal frame.
   */
  frameSources?: readonly string[];
}

interface Asset {
  type: string;
  body: Buffer;
  gzip: Buffer | null;
  br: Buffer | null;
  etag: string;
  cacheControl: string;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
  '.woff2': 'font/woff2',
};
const IMMUTABLE = 'public, max-age=31536000, immutable';
/** Keeps these routes out of the OpenAPI document (@fastify/swagger reads `hide`), which describes the API only. */
const HIDDEN: RouteShorthandOptions = { schema: { hide: true } as FastifySchema };

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const full = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(full)));
    else if (e.isFile()) out.push(full);
  }
  return out;
}

function toAsset(file: string, body: Buffer, gzip: Buffer | null, br: Buffer | null): Asset {
  return {
    type: TYPES[extname(file)] ?? 'application/octet-stream',
    body,
    gzip,
    br,
    etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
    // Vite puts a content hash in every name under assets/: such a file never changes.
    cacheControl: file.startsWith('assets/') ? IMMUTABLE : file === 'index.html' ? 'no-cache' : 'public, max-age=3600',
  };
}

/** Reads the whole bundle into memory. A build swapping dist/ in at this moment leaves it missing for a
 * few milliseconds, so a missing file is retried a bounded number of times. */
async function loadBundle(distDir: string): Promise<Map<string, Asset>> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      const files = new Map<string, Buffer>();
      for (const full of await listFiles(distDir)) files.set(relative(distDir, full).split(sep).join('/'), await readFile(full));
      const assets = new Map<string, Asset>();
      for (const [file, body] of files) {
        if (COMPRESSED_SUFFIXES.some((suffix) => file.endsWith(suffix))) continue;
        // The build wrote compressed copies beside the file (build.ts); without them the file goes out as it is.
        assets.set(file, toAsset(file, body, files.get(`${file}.gz`) ?? null, files.get(`${file}.br`) ?? null));
      }
      if (!assets.has('index.html')) throw Object.assign(new Error('index.html missing'), { code: 'ENOENT' });
      return assets;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      lastError = err;
      await sleep(100);
    }
  }
  throw lastError;
}

/** Which content codings the client accepts (RFC 9110 Accept-Encoding, q=0 meaning "not this"). */
function acceptedEncodings(header: string | undefined): (coding: 'br' | 'gzip') => boolean {
  const accepted = new Map<string, number>();
  for (const part of (header ?? '').split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';');
    if (!name) continue;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    accepted.set(name, q ? Number(q.slice(2)) || 0 : 1);
  }
  return (coding) => (accepted.get(coding) ?? accepted.get('*') ?? 0) > 0;
}

async function webUiPlugin(app: FastifyInstance, options: WebUiOptions): Promise<void> {
  const distDir = options.distDir ?? defaultDistDir;
  await ensureBuilt(distDir, options.build ?? 'if-stale');
  const assets = await loadBundle(distDir);
  const index = assets.get('index.html')!;
  const csp = options.contentSecurityPolicy ?? contentSecurityPolicy(checkedFrameSources(options.frameSources ?? []));

  const send = (request: FastifyRequest, reply: FastifyReply, asset: Asset): FastifyReply => {
    const accepts = acceptedEncodings(request.headers['accept-encoding']);
    const [coding, body] =
      asset.br && accepts('br') ? (['br', asset.br] as const) : asset.gzip && accepts('gzip') ? (['gzip', asset.gzip] as const) : ([null, asset.body] as const);
    // Each coding is its own representation, so each gets its own entity tag.
    const etag = coding ? `${asset.etag.slice(0, -1)}-${coding}"` : asset.etag;
    reply
      .header('content-type', asset.type)
      .header('cache-control', asset.cacheControl)
      .header('etag', etag)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'same-origin');
    if (asset.type.startsWith('text/html')) reply.header('content-security-policy', csp);
    if (asset.gzip || asset.br) reply.header('vary', 'accept-encoding');
    if (request.headers['if-none-match'] === etag) return reply.code(304).send();
    if (coding) reply.header('content-encoding', coding);
    return reply.send(body);
  };

  for (const url of SPA_ROUTES) {
    app.get(url, HIDDEN, (request, reply) => send(request, reply, index));
  }
  for (const [file, asset] of assets) {
    if (file === 'index.html' || file === STAMP_FILE) continue;
    app.get(`/${file}`, HIDDEN, (request, reply) => send(request, reply, asset));
  }
  // An old page asking for an asset of a previous build gets a plain 404 from here, not index.html:
  // serving HTML as a script would only produce a confusing error in the browser.
  app.get('/assets/*', HIDDEN, (_request, reply) =>
    reply.code(404).send({ statusCode: 404, error: 'Not Found', message: 'No such asset in this build of the web UI; reload the page.' }),
  );
}

export const webUi = fp(webUiPlugin, { name: '@deskhub/web-ui', fastify: '5.x' });
export default webUi;
