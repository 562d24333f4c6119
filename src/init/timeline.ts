// A boot report for people (hfk report, the demo): its stages, the mirror
// ranking and choice, what was fetched, as text; and the boot's timeline as
// an SVG picture: stages as bars on a time axis, blocks fetched over time
// below them, mirror switches as markers. Pure functions of the report.
//
// The SVG is written by hand: a charting library would bring a DOM or a
// canvas into a bundle that has neither, for a few rectangles and lines.

import { formatBytes } from '../util/size.ts';
import type { BootReport } from './report.ts';

/** A stage on the uptime axis: starts where the one before it ended (they run in turn). */
export interface StageSpan {
  stage: string;
  description: string;
  ok: boolean;
  startMs: number;
  endMs: number;
}

/** The stages as spans of uptime (ms since the kernel started). */
export function stageSpans(r: BootReport): StageSpan[] {
  let t = r.uptime.initStart * 1000;
  return r.stages.map((s) => {
    const span = { stage: s.stage, description: s.description, ok: s.ok, startMs: t, endMs: t + s.ms };
    t += s.ms;
    return span;
  });
}

const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** The report as text: what a person reads after a boot. */
export function formatBootReport(r: BootReport): string {
  const out: string[] = [];
  const img = r.image;
  const what = img ? `${img.name} v${img.version} (${img.filesystem}, ${formatBytes(img.size)} in ${img.blocks} blocks of ${formatBytes(img.blockSize)})` : 'no image';
  out.push(r.ok ? `boot of ${what}: ok` : `boot of ${what}: FAILED in stage ${r.failedStage ?? '?'}`);
  if (r.error) out.push(`  ${r.error.code}: ${r.error.message}${r.error.hint ? `\n  hint: ${r.error.hint}` : ''}`);
  const handover = r.uptime.switchRoot === null ? 'no switch_root' : `switch_root at ${r.uptime.switchRoot.toFixed(2)} s (${(r.uptime.switchRoot - r.uptime.initStart).toFixed(2)} s in the init)`;
  out.push(`kernel ${r.kernel.release}; init started at ${r.uptime.initStart.toFixed(2)} s of uptime, ${handover}`);
  out.push('', 'stages:');
  const w = Math.max(5, ...r.stages.map((s) => s.stage.length));
  for (const s of stageSpans(r)) {
    out.push(`  ${s.stage.padEnd(w)}  ${sec(s.startMs).padStart(9)}  ${`${Math.round(s.endMs - s.startMs)} ms`.padStart(9)}  ${s.ok ? '' : 'FAILED  '}${s.description}`);
  }
  out.push('', `mirrors${r.mirrors.rankingMs !== null ? ` (ranked in ${r.mirrors.rankingMs} ms)` : ''}:`);
  const mw = Math.max(6, ...r.mirrors.ranking.map((m) => m.url.length));
  const f = (v: number | null, unit: string) => (v === null ? '-' : `${v}${unit}`);
  for (const m of r.mirrors.ranking) {
    const mark = m.url === r.mirrors.chosen ? '*' : ' ';
    const facts = m.error ? `error: ${m.error}` : `TTFB ${f(m.ttfbMs, ' ms')}, block ${f(m.blockMs, ' ms')}, ${f(m.throughputMBps, ' MB/s')}, score ${f(m.score, '')}, version ${f(m.version, '')}`;
    out.push(`  ${mark} ${m.url.padEnd(mw)}  ${facts}`);
  }
  out.push(`  chosen: ${r.mirrors.chosen ?? 'none'}`);
  if (r.fetched) {
    out.push('', `fetched: ${formatBytes(r.fetched.bytes)} in ${r.fetched.blocks} blocks${img ? ` (${((100 * r.fetched.bytes) / Math.max(1, img.size)).toFixed(1)}% of the image)` : ''}; ${r.fetched.memoryHits} memory hits, ${r.fetched.diskHits} disk cache hits`);
  }
  const switches = r.timeline?.switches ?? [];
  if (switches.length > 0) {
    out.push('', 'mirror switches:');
    for (const s of switches) out.push(`  ${sec(s.atMs).padStart(9)}  ${s.from === null ? `first block from ${s.to}` : `${s.from} -> ${s.to}`}`);
  }
  if (r.warnings.length > 0) out.push('', 'warnings:', ...r.warnings.map((x) => `  ${x}`));
  return `${out.join('\n')}\n`;
}

// ---------------------------------------------------------------------------
// The SVG timeline

const W = 960;
const LEFT = 130;
const RIGHT = 20;
const ROW = 22;
const CHART = 120;

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** A step of 1, 2 or 5 × 10^k seconds giving about `n` ticks over `span` ms. */
function tickStep(spanMs: number, n = 8): number {
  const raw = spanMs / n;
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  return [1, 2, 5, 10].map((k) => k * p).find((s) => s >= raw) ?? 10 * p;
}

/** The boot's timeline as a standalone SVG document. */
export function bootTimelineSvg(r: BootReport): string {
  const spans = stageSpans(r);
  const tl = r.timeline ?? null;
  const tlEnd = tl ? tl.startMs + tl.blocks.length * tl.bucketMs : -Infinity;
  const t0 = Math.min(r.uptime.initStart * 1000, tl && tl.blocks.length ? tl.startMs : Infinity);
  const t1 = Math.max(t0 + 1, spans.at(-1)?.endMs ?? t0, tlEnd, ...(r.uptime.switchRoot !== null ? [r.uptime.switchRoot * 1000] : []), ...(tl?.switches.map((s) => s.atMs) ?? []));
  const plot = W - LEFT - RIGHT;
  const x = (ms: number) => LEFT + ((ms - t0) / (t1 - t0)) * plot;
  const title = r.image ? `${r.image.name} v${r.image.version}` : 'boot';
  const stagesTop = 40;
  const chartTop = stagesTop + spans.length * ROW + 30;
  const axisY = chartTop + CHART + 10;
  const H = axisY + 50;
  const parts: string[] = [];
  parts.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<title>${esc(`boot timeline of ${title}`)}</title>`);
  parts.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(`<text x="${LEFT}" y="22" font-size="15" font-weight="bold">${esc(`Boot of ${title}${r.ok ? '' : ` (failed in ${r.failedStage ?? '?'})`}`)}</text>`);

  // Stages: one row each.
  spans.forEach((s, i) => {
    const y = stagesTop + i * ROW;
    const bx = x(s.startMs);
    const bw = Math.max(1, x(s.endMs) - bx);
    parts.push(`<text x="${LEFT - 8}" y="${y + 15}" text-anchor="end">${esc(s.stage)}</text>`);
    parts.push(
      `<rect class="stage" data-stage="${esc(s.stage)}" x="${bx.toFixed(1)}" y="${y + 3}" width="${bw.toFixed(1)}" height="${ROW - 6}" fill="${s.ok ? '#4e79a7' : '#e15759'}"><title>${esc(`${s.stage}: ${Math.round(s.endMs - s.startMs)} ms — ${s.description}`)}</title></rect>`,
    );
    parts.push(`<text x="${(bx + bw + 4).toFixed(1)}" y="${y + 15}" fill="#555">${Math.round(s.endMs - s.startMs)} ms</text>`);
  });

  // Blocks fetched per bucket, scaled to the busiest one.
  parts.push(`<text x="${LEFT - 8}" y="${chartTop + 14}" text-anchor="end">blocks</text>`);
  parts.push(`<text x="${LEFT - 8}" y="${chartTop + 28}" text-anchor="end" fill="#555">${tl ? `per ${tl.bucketMs} ms` : 'not recorded'}</text>`);
  parts.push(`<line x1="${LEFT}" y1="${chartTop + CHART}" x2="${W - RIGHT}" y2="${chartTop + CHART}" stroke="#999"/>`);
  if (tl) {
    const most = Math.max(1, ...tl.blocks);
    tl.blocks.forEach((n, i) => {
      if (n === 0) return;
      const bx = x(tl.startMs + i * tl.bucketMs);
      const bw = Math.max(0.5, x(tl.startMs + (i + 1) * tl.bucketMs) - bx);
      const h = (n / most) * (CHART - 10);
      parts.push(`<rect class="blocks" x="${bx.toFixed(1)}" y="${(chartTop + CHART - h).toFixed(1)}" width="${bw.toFixed(1)}" height="${h.toFixed(1)}" fill="#59a14f"><title>${n} blocks, ${esc(formatBytes(tl.bytes[i] ?? 0))}</title></rect>`);
    });
    parts.push(`<text x="${LEFT + 4}" y="${chartTop + 10}" fill="#555">${most} blocks</text>`);
    // Mirror switches: a marker across stages and chart.
    for (const s of tl.switches) {
      const mx = x(s.atMs).toFixed(1);
      const label = s.from === null ? `from ${s.to}` : `→ ${s.to}`;
      parts.push(`<g class="switch"><line x1="${mx}" y1="${stagesTop - 4}" x2="${mx}" y2="${chartTop + CHART}" stroke="#f28e2b" stroke-width="1.5" stroke-dasharray="4 3"/><text x="${mx}" y="${chartTop + CHART + 2}" fill="#f28e2b" font-size="10" transform="rotate(-90 ${mx} ${chartTop + CHART + 2})" dx="4" dy="-3">${esc(label)}</text><title>${esc(`${sec(s.atMs)}: ${s.from === null ? `first block from ${s.to}` : `${s.from} → ${s.to}`}`)}</title></g>`);
    }
  }

  // The time axis, in seconds of uptime, and switch_root.
  parts.push(`<line x1="${LEFT}" y1="${axisY}" x2="${W - RIGHT}" y2="${axisY}" stroke="#333"/>`);
  const step = tickStep(t1 - t0);
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    const tx = x(t).toFixed(1);
    parts.push(`<line x1="${tx}" y1="${axisY}" x2="${tx}" y2="${axisY + 5}" stroke="#333"/><text x="${tx}" y="${axisY + 18}" text-anchor="middle">${(t / 1000).toFixed(step < 1000 ? 1 : 0)}</text>`);
  }
  parts.push(`<text x="${LEFT + plot / 2}" y="${axisY + 38}" text-anchor="middle">seconds since the kernel started</text>`);
  if (r.uptime.switchRoot !== null) {
    const sx = x(r.uptime.switchRoot * 1000).toFixed(1);
    parts.push(`<line class="switch-root" x1="${sx}" y1="${stagesTop - 4}" x2="${sx}" y2="${axisY}" stroke="#333" stroke-dasharray="2 2"/><text x="${sx}" y="${stagesTop - 8}" text-anchor="middle" font-size="10">switch_root</text>`);
  }
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
