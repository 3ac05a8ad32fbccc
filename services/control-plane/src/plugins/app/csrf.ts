/**
 * Cross-site request forgery: a state-changing request (anything but GET/HEAD/OPTIONS) that a
 * browser sends from another site is refused (403). Browsers say where a request comes from
 * (`Origin`, `Sec-Fetch-Site`); a request carrying deskhub's own header `x-deskhub-csrf` (which
 * the web UI sends and a cross-site form cannot, and which a cross-site script cannot add without
 * a CORS preflight deskhub never grants) or an `Origin` equal to PUBLIC_URL's passes. Requests
 * with neither `Origin` nor `Sec-Fetch-Site` are not from a browser page (curl, scripts, tests),
 * so no ambient cookie is being abused, and pass too. So do requests with `Authorization: Bearer`:
 * the token is the only credential looked at then (plugins/app/sessions.ts), nothing ambient, and
 * a cross-site page cannot set that header without the preflight deskhub never grants.
 */
import fp from 'fastify-plugin';
import { ApiError } from '../../errors.ts';
import { hasBearer } from './sessions.ts';

export const CSRF_HEADER = 'x-deskhub-csrf';
const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

export default fp(
  async (app) => {
    const publicOrigin = new URL(app.config.PUBLIC_URL).origin;
    app.addHook('onRequest', async (request) => {
      if (SAFE.has(request.method)) return;
      if (request.headers[CSRF_HEADER] !== undefined) return;
      if (hasBearer(request.headers.authorization)) return;
      const origin = request.headers.origin;
      if (origin !== undefined) {
        if (origin === publicOrigin) return;
        throw new ApiError(403, `cross-site request refused: Origin ${origin.slice(0, 100)} is not ${publicOrigin} (send the ${CSRF_HEADER} header from scripts)`);
      }
      const site = request.headers['sec-fetch-site'];
      if (site !== undefined && site !== 'same-origin' && site !== 'none') {
        throw new ApiError(403, `cross-site request refused (Sec-Fetch-Site: ${String(site).slice(0, 20)})`);
      }
    });
  },
  { name: 'csrf', dependencies: ['config'] },
);
