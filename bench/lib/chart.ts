/**
 * One chart of a run's standing: for each headline figure, every target's value against nginx's,
 * drawn so that right is always better (for CPU, latency and memory the ratio is inverted:
 * nginx's value over the target's). A log scale, so 2x better and 2x worse are the same length
 * either side of nginx's line. Plain SVG written by the harness, no library.
 */
import type { Medians } from './report.ts';
import { targetLabels, type TargetName } from './targets.ts';

interface Figure {
  key: string;
  label: string;
  better: 'higher' | 'lower';
}

const FIGURES: Figure[] = [
  { key: 'smallRequestsPerSecond', label: 'small requests/s', better: 'higher' },
  { key: 'cpuPerRequestUs', label: 'CPU per small request', better: 'lower' },
  { key: 'mibMegabytesPerSecond', label: '1 MiB bodies MB/s', better: 'higher' },
  { key: 'wsFramesPerSecond', label: 'WebSocket 64 KiB frames/s', better: 'higher' },
  { key: 'wsRttP99Us', label: 'WebSocket round trip p99', better: 'lower' },
  { key: 'perSocketN2KiB', label: 'memory per idle WebSocket', better: 'lower' },
  { key: 'rssIdleMiB', label: 'RSS of a fresh process', better: 'lower' },
];

const COLOURS: Partial<Record<TargetName, string>> = {
  direct: '#9e9e9e',
  haproxy: '#1f77b4',
  chp: '#ff7f0e',
  deskhub: '#2ca02c',
  'deskhub+auth': '#98df8a',
};

/** How many times better than nginx (above 1: better), or undefined when either value is missing. */
export function standing(med: Medians, target: TargetName, figure: Figure): number | undefined {
  const v = med[target]?.[figure.key];
  const ref = med.nginx?.[figure.key];
  if (v === undefined || ref === undefined || !(v > 0) || !(ref > 0)) return undefined;
  return figure.better === 'higher' ? v / ref : ref / v;
}

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function standingChart(med: Medians, targets: TargetName[], title: string): string {
  const shown = targets.filter((t) => t !== 'nginx' && FIGURES.some((f) => standing(med, t, f) !== undefined));
  const figures = FIGURES.filter((f) => shown.some((t) => standing(med, t, f) !== undefined));
  const bar = 14;
  const gap = 10;
  const left = 250;
  const plot = 520;
  const top = 56;
  const groupHeight = shown.length * bar + gap;
  const height = top + figures.length * groupHeight + 40 + shown.length * 18;
  const width = left + plot + 90;
  const values = figures.flatMap((f) => shown.map((t) => standing(med, t, f)).filter((v): v is number => v !== undefined));
  // Symmetric log range around 1 (nginx), at least 0.25x..4x.
  const span = Math.max(2, ...values.map((v) => Math.abs(Math.log2(v)))) * 1.1;
  const x = (ratio: number) => left + plot / 2 + (Math.log2(ratio) / span) * (plot / 2);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<title>${escape(title)}</title>`);
  out.push(`<rect width="${width}" height="${height}" fill="#fff"/>`);
  out.push(`<text x="${left}" y="20" font-size="14" font-weight="bold">${escape(title)}</text>`);
  out.push(`<text x="${left}" y="38" fill="#555">times better than nginx (1 worker); right is better, log scale; CPU, latency and memory inverted</text>`);
  for (const tick of [0.25, 0.5, 1, 2, 4, 8, 16].filter((v) => Math.abs(Math.log2(v)) <= span)) {
    const tx = x(tick);
    out.push(`<line x1="${tx.toFixed(1)}" y1="${top - 6}" x2="${tx.toFixed(1)}" y2="${top + figures.length * groupHeight}" stroke="${tick === 1 ? '#000' : '#ddd'}" stroke-width="${tick === 1 ? 1.5 : 1}"/>`);
    out.push(`<text x="${tx.toFixed(1)}" y="${top + figures.length * groupHeight + 14}" text-anchor="middle" fill="#555">${tick === 1 ? 'nginx' : `${tick}x`}</text>`);
  }
  figures.forEach((figure, i) => {
    const gy = top + i * groupHeight;
    out.push(`<text x="${left - 8}" y="${(gy + (shown.length * bar) / 2 + 4).toFixed(1)}" text-anchor="end">${escape(figure.label)}</text>`);
    shown.forEach((target, j) => {
      const v = standing(med, target, figure);
      if (v === undefined) return;
      const y = gy + j * bar;
      const x0 = x(1);
      const x1 = x(v);
      out.push(
        `<rect x="${Math.min(x0, x1).toFixed(1)}" y="${y + 1}" width="${Math.max(1, Math.abs(x1 - x0)).toFixed(1)}" height="${bar - 2}" fill="${COLOURS[target] ?? '#777'}"><title>${escape(`${targetLabels[target]}: ${v.toFixed(2)}x nginx (${figure.label})`)}</title></rect>`,
      );
      out.push(`<text x="${(v >= 1 ? x1 + 4 : x1 - 4).toFixed(1)}" y="${y + bar - 3}" text-anchor="${v >= 1 ? 'start' : 'end'}" font-size="10" fill="#333">${v.toFixed(2)}x</text>`);
    });
  });
  const ly = top + figures.length * groupHeight + 30;
  shown.forEach((target, j) => {
    out.push(`<rect x="${left}" y="${ly + j * 18}" width="12" height="12" fill="${COLOURS[target] ?? '#777'}"/>`);
    out.push(`<text x="${left + 18}" y="${ly + j * 18 + 10}">${escape(targetLabels[target])}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
