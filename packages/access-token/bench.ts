/**
 * Microbenchmark: what authorizing one request costs a proxy, cold (signature check) against
 * cached (a Map lookup). Run: node --import tsx packages/access-token/bench.ts [iterations]
 * `benchAccessToken` returns the rows for the project's benchmark suite.
 */
import { pathToFileURL } from 'node:url';
import { checkAccess, createSigner, createVerifier, generateKeyPair, readAccessTokens } from './src/index.ts';

export interface BenchRow {
  case: string;
  /** Wall-clock time per operation. */
  nsPerOp: number;
  /** CPU time (user + system) per operation: steadier than wall time on a shared machine. */
  cpuNsPerOp: number;
  ops: number;
}

function measure(name: string, ops: number, run: (i: number) => unknown): BenchRow {
  // Warm the code paths first so the JIT's work is not counted.
  for (let i = 0; i < Math.min(ops, 1000); i++) run(i);
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  for (let i = 0; i < ops; i++) run(i);
  const ns = Number(process.hrtime.bigint() - start);
  const used = process.cpuUsage(cpu);
  return { case: name, nsPerOp: Math.round(ns / ops), cpuNsPerOp: Math.round(((used.user + used.system) * 1000) / ops), ops };
}

export function benchAccessToken(iterations = 20_000): BenchRow[] {
  const pair = generateKeyPair();
  const signer = createSigner({ privateKey: pair.privateKeyPem });
  const now = Date.now();
  const subject = (n: number) => ({ userId: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, username: `user${n}`, sessionId: `session-${n}` });
  const distinct = Array.from({ length: iterations + 1000 }, (_, n) => signer.sign(subject(n), now).token);
  const one = distinct[0]!;
  const cookieHeader = `deskhub_session=abcdefghijklmnopqrstuvwxyz0123456789; deskhub_access=${one}; _ga=GA1.1.123456789.1700000000`;
  const route = { path: 'p', owner: subject(0).userId, shares: [] };

  // Cold: every token is new to the verifier (parse, Ed25519 check, decode, cache insert).
  const cold = createVerifier({ publicKeys: [pair.publicKeyPem], cacheSize: iterations + 1000 });
  const noCache = createVerifier({ publicKeys: [pair.publicKeyPem], cacheSize: 0 });
  const warm = createVerifier({ publicKeys: [pair.publicKeyPem] });
  warm.verify(one, now);
  const rows = [
    measure('verify, cold (signature check + cache insert)', iterations, (i) => cold.verify(distinct[i]!, now)),
    measure('verify, cache off (signature check every time)', iterations, () => noCache.verify(one, now)),
    measure('verify, cached (same string)', iterations * 20, () => warm.verify(one, now)),
    // A proxy gets a new string per request: the Map lookup has to hash it.
    measure('verify, cached (token read from a Cookie header)', iterations * 20, () => warm.verify(readAccessTokens(cookieHeader)[0], now)),
    measure('checkAccess, cached (header scan + verify + owner check)', iterations * 20, () => checkAccess(warm, cookieHeader, route, now)),
  ];
  if (warm.stats().signatureChecks !== 1) throw new Error('cached rows did signature checks: the benchmark measures the wrong thing');
  return rows;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const iterations = Number(process.argv[2] ?? 20_000);
  const rows = benchAccessToken(iterations);
  const width = Math.max(...rows.map((r) => r.case.length));
  console.log(`${'case'.padEnd(width)}  ${'wall ns/op'.padStart(10)}  ${'cpu ns/op'.padStart(10)}  ops`);
  for (const r of rows) console.log(`${r.case.padEnd(width)}  ${String(r.nsPerOp).padStart(10)}  ${String(r.cpuNsPerOp).padStart(10)}  ${r.ops}`);
}
