/**
 * What a request body must be before it is parsed: JSON bodies are UTF-8 (RFC 8259 §8.1), sent
 * uncompressed. A body in a content coding the API does not decode (gzip, br, ...) or a JSON
 * body declaring another charset is answered 415 naming what to send instead (RFC 9110 §15.5.16),
 * instead of being read as if it were plain UTF-8 JSON. Unknown fields and wrong types are the
 * schemas' work (app.ts: no coercion, no silently removed properties).
 */
import fp from 'fastify-plugin';

const CHARSET = /;\s*charset\s*=\s*"?([^";\s]+)"?/i;

export default fp(
  async (app) => {
    app.addHook('onRequest', async (request, reply) => {
      const coding = request.headers['content-encoding'];
      if (coding !== undefined && coding.trim().toLowerCase() !== 'identity' && coding.trim() !== '') {
        return reply.code(415).send({ statusCode: 415, error: 'Unsupported Media Type', message: `Content-Encoding "${coding}" is not accepted: send the body uncompressed` });
      }
      const type = request.headers['content-type'];
      if (type !== undefined && /^application\/json\b/i.test(type)) {
        const charset = CHARSET.exec(type)?.[1];
        if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
          return reply.code(415).send({ statusCode: 415, error: 'Unsupported Media Type', message: `JSON bodies are UTF-8 (RFC 8259): charset "${charset}" is not accepted` });
        }
      }
      return undefined;
    });
  },
  { name: 'bodies' },
);
