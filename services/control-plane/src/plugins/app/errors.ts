/**
 * One error shape for the whole API, `{statusCode, error, message}`: 4xx carry their message to
 * the caller; anything else is logged with its detail and answered "Internal Server Error".
 */
import { STATUS_CODES } from 'node:http';
import fp from 'fastify-plugin';
import type { FastifyError } from 'fastify';

export default fp(
  async (app) => {
    app.setErrorHandler((err: FastifyError, request, reply) => {
      const status = typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
      if (status >= 500) {
        request.log.error({ err }, 'request failed');
        return reply.code(500).send({ statusCode: 500, error: 'Internal Server Error', message: 'Internal Server Error' });
      }
      if (status !== 401 && status !== 404) request.log.info({ statusCode: status, message: err.message }, 'request refused');
      return reply.code(status).send({ statusCode: status, error: STATUS_CODES[status] ?? 'Error', message: err.message });
    });
    app.setNotFoundHandler((request, reply) => {
      reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `Route ${request.method} ${request.url.split('?')[0]} not found` });
    });
  },
  { name: 'errors' },
);
