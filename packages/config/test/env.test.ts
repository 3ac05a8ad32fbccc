import t from 'tap';
import { ConfigError, env, loadConfig } from '../src/index.ts';

t.test('defaults apply when unset or empty', async (t) => {
  const cfg = loadConfig({ PORT: env.port(8080), HOST: env.string('127.0.0.1'), MODE: env.oneOf(['dev', 'oidc'] as const, 'dev') }, { HOST: '' });
  t.same(cfg, { PORT: 8080, HOST: '127.0.0.1', MODE: 'dev' });
});

t.test('malformed values name the variable', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'eighty' }, /^PORT: expected a whole number/],
    [{ PORT: '70000' }, /^PORT: expected a number from 0 to 65535/],
    [{ MODE: 'ldap' }, /^MODE: expected one of dev, oidc, got "ldap"/],
    [{ URL: 'not a url' }, /^URL: expected a URL/],
    [{ URL: 'ftp://x' }, /^URL: expected a http or https URL/],
    [{ FLAG: 'maybe' }, /^FLAG: expected true or false/],
  ];
  for (const [source, message] of cases) {
    const err = t.throws(() =>
      loadConfig({ PORT: env.port(1), MODE: env.oneOf(['dev', 'oidc'] as const, 'dev'), URL: env.url(['http', 'https']), FLAG: env.bool(false) }, source),
    ) as ConfigError;
    t.match(err.message, message);
    t.equal(err.variable, Object.keys(source)[0]);
  }
});

t.test('lists, urls and optional values', async (t) => {
  const cfg = loadConfig({ ADMINS: env.list(), PUBLIC_URL: env.url(['http', 'https']), N: env.optionalInt() }, { ADMINS: 'alice, bob,,', PUBLIC_URL: 'https://example.test/' });
  t.same(cfg, { ADMINS: ['alice', 'bob'], PUBLIC_URL: 'https://example.test', N: undefined });
});
