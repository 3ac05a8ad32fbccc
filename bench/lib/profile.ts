/** Reads V8 .cpuprofile files (node --cpu-prof) and lists where the time went: self time per function and per file. */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
}

function shortUrl(url: string): string {
  const i = url.indexOf('node_modules/');
  if (i >= 0) return url.slice(url.lastIndexOf('node_modules/') + 'node_modules/'.length);
  return url.replace(/^file:\/\//, '').replace(/^.*\/(services|packages)\//, '$1/');
}

export function summarizeProfiles(dir: string, top = 25): string {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  } catch {
    return `no profiles in ${dir}`;
  }
  const out: string[] = [];
  for (const f of files) {
    const p = JSON.parse(readFileSync(path.join(dir, f), 'utf8')) as CpuProfile;
    const total = p.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0) || 1;
    // tsx strips newlines, so a TypeScript file is one line: the column is what finds a function.
    const key = (n: ProfileNode) =>
      `${n.callFrame.functionName || '(anonymous)'}` +
      (n.callFrame.url ? ` ${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}:${n.callFrame.columnNumber + 1}` : '');
    const byFunction = new Map<string, number>();
    const byFile = new Map<string, number>();
    for (const n of p.nodes) {
      const hits = n.hitCount ?? 0;
      if (!hits) continue;
      const fn = key(n);
      byFunction.set(fn, (byFunction.get(fn) ?? 0) + hits);
      const file = n.callFrame.url ? shortUrl(n.callFrame.url).replace(/:\d+$/, '') : n.callFrame.functionName;
      byFile.set(file, (byFile.get(file) ?? 0) + hits);
    }
    // Inclusive time: each sample counts once for every distinct function on its stack.
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const inclusive = new Map<string, number>();
    const stack: { node: ProfileNode; onStack: Set<string> }[] = [{ node: p.nodes[0]!, onStack: new Set() }];
    while (stack.length) {
      const { node, onStack } = stack.pop()!;
      const k = key(node);
      const here = onStack.has(k) ? onStack : new Set(onStack).add(k);
      const hits = node.hitCount ?? 0;
      if (hits) for (const f of here) inclusive.set(f, (inclusive.get(f) ?? 0) + hits);
      for (const c of node.children ?? []) {
        const child = byId.get(c);
        if (child) stack.push({ node: child, onStack: here });
      }
    }
    const pct = (h: number) => `${((h / total) * 100).toFixed(1).padStart(5)}%`;
    out.push(`${f}: ${((p.endTime - p.startTime) / 1e6).toFixed(1)} s profiled, ${total} samples`);
    out.push('  self time by function:');
    for (const [k, v] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`  ${pct(v)}  ${k}`);
    out.push('  total time (self + callees) of functions in services/ and packages/:');
    for (const [k, v] of [...inclusive].filter(([f]) => /(services|packages)\//.test(f)).sort((a, b) => b[1] - a[1]).slice(0, top)) {
      out.push(`  ${pct(v)}  ${k}`);
    }
    out.push('  self time by file:');
    for (const [k, v] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, 15)) out.push(`  ${pct(v)}  ${k}`);
  }
  return out.join('\n');
}
