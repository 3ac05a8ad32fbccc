/** Third-party plugins: cookies (signed) and the OpenAPI document with its rendered docs. */
import fp from 'fastify-plugin';
import cookie from '@fastify/cookie';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';

export default fp<{ cookieSecret: string; publicUrl: string }>(
  async (app, options) => {
    await app.register(cookie, { secret: options.cookieSecret, hook: 'onRequest' });
    await app.register(swagger, {
      // Shared schemas keep their $id as their name in components.schemas.
      refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'deskhub control plane',
          description: 'Browser-reachable container desktops behind one address. Sign in (POST /auth/dev-login in dev mode) to get the session cookie the /api routes need, or send an API token (POST /api/tokens) as Authorization: Bearer with the scope the route names.',
          version: '0.1.0',
        },
        servers: [{ url: options.publicUrl }],
        components: {
          securitySchemes: {
            session: { type: 'apiKey', in: 'cookie', name: 'deskhub_session' },
            // API tokens (POST /api/tokens); each route says which scope a token needs.
            bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'dhk_… API token' },
          },
        },
        security: [{ session: [] }, { bearer: [] }],
      },
    });
    await app.register(swaggerUi, { routePrefix: '/api/docs' });
    app.get('/api/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  },
  { name: 'external' },
);
