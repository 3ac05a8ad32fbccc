/**
 * Which malloc the process runs on, and the allocator settings a deskhub service is deployed
 * with (deploy/allocator.env: jemalloc with a background thread, for the proxy). A service
 * logs the first at start so an operator sees whether the preload took effect.
 */
import { readFileSync } from 'node:fs';

export type Allocator = 'jemalloc' | 'glibc';

/** jemalloc when its library is mapped into this process (LD_PRELOAD), else glibc's malloc. */
export function allocatorInUse(maps: string = readFileSync('/proc/self/maps', 'utf8')): Allocator {
  return /\/libjemalloc\.so[^/\n]*$/m.test(maps) ? 'jemalloc' : 'glibc';
}

/**
 * KEY=VALUE lines of an environment file as systemd's EnvironmentFile= and compose's env_file
 * read them: blank lines and `#` comments skipped, no quoting or expansion.
 */
export function parseEnvFile(text: string, source = 'environment file'): Record<string, string> {
  const env: Record<string, string> = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const eq = line.indexOf('=');
    if (eq <= 0 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(line.slice(0, eq))) {
      throw new Error(`${source}, line ${i + 1}: expected KEY=VALUE, got "${line}"`);
    }
    env[line.slice(0, eq)] = line.slice(eq + 1);
  });
  return env;
}
