/**
 * Hostile input to the control plane's API and sign-in routes, kept as data
 * (test/hostile-api/*.json) and run against embedded PGlite and a real Postgres: each case gets
 * its 4xx with a message (naming the field where one is at fault), never a 5xx, a hang or a
 * redirect out of where it may go.
 *
 * A case: name; method (GET); url, where {desktop} is a desktop of the signed-in user; headers;
 * body (sent as JSON) or raw (sent as it is, with its content-type header); session (true:
 * signed in); then status, message (a regex the JSON error's message must match) and location
 * (the exact Location of a redirect).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { databases, signIn, startApp, tempDir, testEnv, testProcesses } from './helpers.ts';

interface Case {
  name: string;
  method?: 'GET' | 'POST' | 'DELETE';
  url: string;
  headers?: Record<string, string>;
  body?: unknown;
  raw?: string;
  session?: boolean;
  status: number;
  message?: string;
  location?: string;
}

const dir = path.join(import.meta.dirname, 'hostile-api');
const cases: Case[] = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .flatMap((f) => JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as Case[]);

for (const choice of databases) {
  t.test(`hostile API input on ${choice.name}`, async (t) => {
    const { dir: tmp, cleanup } = tempDir(`hostile-${choice.name}`);
    const db = await choice.setup();
    const running = await startApp(testEnv(tmp, db.env));
    t.teardown(async () => {
      await running.close();
      await db.cleanup();
      for (const pid of testProcesses(tmp)) process.kill(pid, 'SIGKILL');
      cleanup();
    });
    const app = running.app;
    const cookie = await signIn(app, 'mallory');
    const created = await app.inject({ method: 'POST', url: '/api/desktops', headers: { cookie, 'content-type': 'application/json' }, payload: JSON.stringify({ type: 'web' }) });
    t.equal(created.statusCode, 201, 'a desktop to aim at');
    const desktop = created.json<{ id: string }>().id;

    for (const c of cases) {
      const headers: Record<string, string> = { ...(c.session === false ? {} : { cookie }), ...c.headers };
      let payload: string | undefined;
      if (c.raw !== undefined) payload = c.raw;
      else if (c.body !== undefined) {
        payload = JSON.stringify(c.body);
        headers['content-type'] ??= 'application/json';
      }
      const res = await app.inject({ method: c.method ?? 'GET', url: c.url.replaceAll('{desktop}', desktop), headers, ...(payload !== undefined ? { payload } : {}) });
      const shown = { status: res.statusCode, body: res.body.slice(0, 300), location: res.headers.location };
      t.equal(res.statusCode, c.status, `${c.name}: ${c.status}`, shown);
      t.ok(res.statusCode < 500, `${c.name}: never a 5xx`, shown);
      if (c.message !== undefined) {
        let message = '';
        try {
          message = String(res.json<{ message?: unknown }>().message ?? '');
        } catch {
          // not JSON: the match below fails and shows the body
        }
        t.match(message, new RegExp(c.message, 'i'), `${c.name}: the message says why`, shown);
      }
      if (c.location !== undefined) t.equal(res.headers.location, c.location, `${c.name}: redirected to ${c.location}`);
      else if (res.statusCode >= 300 && res.statusCode < 400) t.fail(`${c.name}: an unexpected redirect`, shown);
    }
  });
}
