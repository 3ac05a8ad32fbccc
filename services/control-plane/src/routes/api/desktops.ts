/**
 * /api/desktops: the caller's desktops. Create answers 201 at once with state `creating`; the
 * rest happens in the background (follow it with GET /api/desktops/:id, its events, or the event
 * stream). Unknown and foreign ids are both 404.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { DesktopEventView } from '../../lifecycle/views.ts';
import { DesktopIdParams, errors, EventIdText } from '../schemas.ts';

const KEEP_ALIVE_MS = 15_000;
/** The scope an API token needs (plugins/app/sessions.ts); sessions may do both. */
const READ = { scope: 'desktops:read' } as const;
const WRITE = { scope: 'desktops:write' } as const;

const desktops: FastifyPluginAsyncTypebox = async (app) => {
  const owner = (request: { user: { id: string; username: string } | null }) => request.user!;

  app.get(
    '/api/desktops',
    { config: READ, schema: { tags: ['desktops'], summary: "The caller's desktops", response: { 200: Type.Array(Type.Ref('Desktop')), ...errors(401, 403) } } },
    async (request) => app.desktops.list(owner(request)),
  );

  app.post(
    '/api/desktops',
    {
      config: WRITE,
      schema: {
        tags: ['desktops'],
        summary: 'Create a desktop; it starts in the background',
        body: Type.Object({
          type: Type.String({ minLength: 1, maxLength: 64, description: 'catalog id' }),
          name: Type.Optional(Type.String({ maxLength: 64, description: 'optional label; the path becomes <username>-<label>' })),
        }, { additionalProperties: false }),
        response: { 201: Type.Ref('Desktop'), ...errors(400, 401, 403, 409) },
      },
    },
    async (request, reply) => {
      const desktop = await app.desktops.create(owner(request), request.body);
      return reply.code(201).send(desktop);
    },
  );

  app.get(
    '/api/desktops/:id',
    { config: READ, schema: { tags: ['desktops'], summary: 'One desktop', params: DesktopIdParams, response: { 200: Type.Ref('Desktop'), ...errors(401, 403, 404) } } },
    async (request) => app.desktops.get(owner(request), request.params.id),
  );

  app.delete(
    '/api/desktops/:id',
    {
      config: WRITE,
      schema: {
        tags: ['desktops'],
        summary: 'Withdraw its route, forget it, remove it from its runtime',
        params: DesktopIdParams,
        response: { 204: Type.Null(), ...errors(401, 403, 404) },
      },
    },
    async (request, reply) => {
      await app.desktops.delete(owner(request), request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/api/desktops/:id/stop',
    {
      config: WRITE,
      schema: {
        tags: ['desktops'],
        summary: 'Withdraw its route (done when this answers), then stop it in the background',
        params: DesktopIdParams,
        response: { 200: Type.Ref('Desktop'), ...errors(401, 403, 404) },
      },
    },
    async (request) => app.desktops.stop(owner(request), request.params.id),
  );

  app.post(
    '/api/desktops/:id/start',
    {
      config: WRITE,
      schema: {
        tags: ['desktops'],
        summary: 'Start a stopped or failed desktop again, in the background',
        params: DesktopIdParams,
        response: { 200: Type.Ref('Desktop'), ...errors(401, 403, 404, 409) },
      },
    },
    async (request) => app.desktops.start(owner(request), request.params.id),
  );

  app.post(
    '/api/desktops/:id/new-home',
    {
      config: WRITE,
      schema: {
        tags: ['desktops'],
        summary: "Start a desktop whose home's node is lost with a new, empty home (HOME_NODE_LOST=offer-new-home)",
        description:
          'Only for a desktop whose `homeLost` is set, and only with `{"confirm": true}`. The desktop gets the stand-in home "<name> (stand-in for node <id>)", new and empty the first time; the home itself keeps its name and its files on its node, and new desktops take it again once that node is back. The choice is recorded as one of the desktop\'s events. 403 where the operator has not allowed it.',
        params: DesktopIdParams,
        body: Type.Object({ confirm: Type.Literal(true, { description: 'the owner confirmed: the old files stay behind on the lost node' }) }, { additionalProperties: false }),
        response: { 200: Type.Ref('Desktop'), ...errors(400, 401, 403, 404, 409) },
      },
    },
    async (request) => app.desktops.startWithNewHome(owner(request), request.params.id, request.user!.username),
  );

  app.post(
    '/api/desktops/:id/keepalive',
    {
      config: WRITE,
      schema: {
        tags: ['desktops'],
        summary: 'Keep it running: push its idle and expire deadlines out by one period, and reconnect streams held disconnected',
        params: DesktopIdParams,
        response: { 200: Type.Ref('Desktop'), ...errors(401, 403, 404, 409) },
      },
    },
    async (request) => {
      const who = request.user!.username + (request.apiToken ? ' (API token)' : '');
      return app.desktops.keepAlive(owner(request), request.params.id, who);
    },
  );

  app.get(
    '/api/desktops/:id/events',
    {
      config: READ,
      schema: {
        tags: ['desktops'],
        summary: 'Lifecycle events, oldest first (after: only events with a larger id)',
        params: DesktopIdParams,
        querystring: Type.Object({ after: Type.Optional(EventIdText) }),
        response: { 200: Type.Array(Type.Ref('DesktopEvent')), ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => app.desktops.events(owner(request), request.params.id, Number(request.query.after ?? 0)),
  );

  // Server-sent events: the recorded events (after Last-Event-ID), then new ones as they happen.
  const streams = new Set<ServerResponse>();
  app.addHook('preClose', async () => {
    for (const res of streams) res.end();
  });
  app.get(
    '/api/desktops/:id/events/stream',
    {
      config: READ,
      schema: {
        tags: ['desktops'],
        summary: 'Lifecycle events as text/event-stream: recorded ones first, then live; one JSON DesktopEvent per message',
        params: DesktopIdParams,
        headers: Type.Object({ 'last-event-id': Type.Optional(EventIdText) }),
        response: { 200: Type.String({ description: 'text/event-stream' }), ...errors(400, 401, 403, 404) },
      },
    },
    async (request, reply) => {
      const id = request.params.id;
      const after = Number(request.headers['last-event-id'] ?? 0);
      const user = owner(request);
      // Listen before reading the history, so nothing falls between the two.
      const pending: DesktopEventView[] = [];
      let live: ((event: DesktopEventView) => void) | null = null;
      const onEvent = (desktopId: string, event: DesktopEventView) => {
        if (desktopId !== id) return;
        if (live) live(event);
        else pending.push(event);
      };
      app.desktops.on('event', onEvent);
      let history: DesktopEventView[];
      try {
        history = await app.desktops.events(user, id, after);
      } catch (err) {
        app.desktops.off('event', onEvent);
        throw err;
      }
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      let sent = after;
      const send = (event: DesktopEventView) => {
        if (event.id <= sent) return;
        sent = event.id;
        res.write(`id: ${event.id}\ndata: ${JSON.stringify(event)}\n\n`);
      };
      history.forEach(send);
      pending.forEach(send);
      live = send;
      streams.add(res);
      const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), KEEP_ALIVE_MS);
      const cleanup = () => {
        clearInterval(keepAlive);
        app.desktops.off('event', onEvent);
        streams.delete(res);
      };
      res.on('close', cleanup);
      request.raw.on('close', cleanup);
    },
  );
};

export default desktops;
