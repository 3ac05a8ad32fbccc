/**
 * `pnpm start`: deskhub on one machine with no external service (embedded-start.ts), a line
 * saying what to open, and Ctrl-C / SIGTERM stopping everything, desktop processes included.
 */
import { ConfigError } from '@deskhub/config';
import { CatalogError } from './catalog.ts';
import { startEmbedded } from './embedded-start.ts';
import type { ControlPlaneConfig } from './config.ts';

/** How to sign in and launch a first desktop, for the start-up banner: dev sign-in or the configured providers. */
function signInLines(config: ControlPlaneConfig, publicUrl: string): string[] {
  const providers = config.OIDC_PROVIDERS.map((p) => p.id).join(', ');
  if (config.AUTH_MODE === 'dev') {
    return [
      `  Sign in     dev sign-in (AUTH_MODE=dev): curl -c cookies.txt -H 'content-type: application/json' -d '{"username":"alice"}' ${publicUrl}/auth/dev-login`,
      ...(providers ? [`              or with ${providers} at ${publicUrl}/signin`] : []),
      `  Launch      curl -b cookies.txt -H 'content-type: application/json' -d '{"type":"demo"}' ${publicUrl}/api/desktops`,
    ];
  }
  return [
    `  Sign in     ${publicUrl}/signin with ${providers} (AUTH_MODE=oidc)`,
    `  Automate    create an API token at ${publicUrl}/tokens, then: curl -H 'Authorization: Bearer dhk_…' ${publicUrl}/api/desktops`,
  ];
}

async function main(): Promise<void> {
  let deskhub;
  try {
    deskhub = await startEmbedded();
  } catch (err) {
    if (err instanceof ConfigError || err instanceof CatalogError) {
      process.stderr.write(`deskhub: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      process.stderr.write(`deskhub: ${(err as Error).message}: another program uses that port; set PORT (and PROXY_METRICS_PORT / METRICS_PORT) to free ones\n`);
      process.exit(2);
    }
    throw err;
  }
  const { publicUrl, config } = deskhub;
  const types = await Promise.all(
    deskhub.controlPlane.app.catalog.entries.map(async (e) => ((await deskhub.controlPlane.app.runtimes.availability(e)).ok ? e.id : null)),
  );
  process.stdout.write(
    [
      '',
      'deskhub is running.',
      `  Open        ${publicUrl}/`,
      `  API docs    ${publicUrl}/api/docs`,
      ...signInLines(config, publicUrl),
      `  Can run     ${types.filter(Boolean).join(', ') || 'nothing (see GET /api/catalog for why)'}`,
      `  Data        ${config.DATABASE_URL ? 'Postgres (DATABASE_URL)' : `${config.DATA_DIR} (PGlite)`}`,
      'Press Ctrl-C to stop deskhub (desktop processes stop with it).',
      '',
    ].join('\n'),
  );

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      process.stderr.write('deskhub: stopping already; press Ctrl-C again to quit at once\n');
      process.once('SIGINT', () => process.exit(130));
      return;
    }
    stopping = true;
    process.stderr.write(`deskhub: ${signal}: stopping\n`);
    deskhub.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  process.stderr.write(`deskhub: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
