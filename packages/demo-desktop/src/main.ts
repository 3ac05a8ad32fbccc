#!/usr/bin/env -S node --import tsx
/**
 * Runs the demo desktop from environment variables, as the process runtime and the Docker test
 * image do: DESKTOP_NAME, HOST (127.0.0.1), PORT (6901), TLS (true), VNC_PW (basic auth password
 * for kasm_user and the view-only kasm_viewer; none when unset). Prints one JSON line when listening.
 */
import { startDemoDesktop } from './index.ts';

function fail(message: string): never {
  process.stderr.write(`demo-desktop: ${message}\n`);
  process.exit(2);
}

const port = Number(process.env.PORT ?? '6901');
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`PORT: expected a port number, got "${process.env.PORT}"`);
const tls = (process.env.TLS ?? 'true').toLowerCase();
if (!['true', 'false', '1', '0'].includes(tls)) fail(`TLS: expected true or false, got "${process.env.TLS}"`);
const password = process.env.VNC_PW ?? '';
if (password && password.length < 6) fail('VNC_PW: must be at least 6 characters (as in Kasm images)');

const desktop = await startDemoDesktop({
  name: process.env.DESKTOP_NAME ?? 'demo',
  host: process.env.HOST ?? '127.0.0.1',
  port,
  tls: tls === 'true' || tls === '1',
  password,
});
process.stdout.write(JSON.stringify({ msg: 'demo desktop listening', url: desktop.url, port: desktop.port }) + '\n');

const stop = () => {
  desktop.close().then(() => process.exit(0), () => process.exit(1));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
