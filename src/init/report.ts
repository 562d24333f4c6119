// The boot report: what the init did, how long each stage took, what it
// fetched, where from. Written to /run/hfk/boot-report.json, which is moved
// into the booted system (so `cat /run/hfk/boot-report.json` works there).

import * as fs from 'node:fs';
import { z } from 'zod';
import { writeFileAtomicSync } from '../util/atomic.ts';
import type { BootState } from './boot.ts';
import type { StepRecord } from './steps.ts';

/** Blocks over time and mirror switches (source/timeline.ts TimelineSnapshot). */
export const BootTimeline = z.object({
  startMs: z.number(),
  bucketMs: z.number().positive(),
  blocks: z.array(z.number()),
  bytes: z.array(z.number()),
  switches: z.array(z.object({ atMs: z.number(), from: z.string().nullable(), to: z.string() })),
});

export const BootReport = z.object({
  format: z.literal('hfk-boot-report/1'),
  ok: z.boolean(),
  failedStage: z.string().nullable(),
  error: z.object({ code: z.string(), message: z.string(), hint: z.string().nullable() }).nullable(),
  kernel: z.object({ release: z.string(), cmdline: z.string().nullable() }),
  /** Seconds since the kernel started, when the init began and when it handed over. */
  uptime: z.object({ initStart: z.number(), switchRoot: z.number().nullable() }),
  stages: z.array(z.object({ stage: z.string(), description: z.string(), ms: z.number(), ok: z.boolean() })),
  image: z
    .object({ name: z.string(), version: z.number(), size: z.number(), blockSize: z.number(), blocks: z.number(), filesystem: z.string(), manifestFrom: z.string(), offline: z.boolean() })
    .nullable(),
  mirrors: z.object({
    chosen: z.string().nullable(),
    ranking: z.array(z.object({ url: z.string(), ttfbMs: z.number().nullable(), blockMs: z.number().nullable(), throughputMBps: z.number().nullable(), score: z.number().nullable(), version: z.number().nullable(), error: z.string().nullable() })),
    rankingMs: z.number().nullable(),
  }),
  modules: z.object({ loaded: z.array(z.string()), builtin: z.array(z.string()), failed: z.array(z.string()), devices: z.number() }),
  network: z.object({ method: z.string(), interface: z.string().nullable(), address: z.string().nullable(), gateway: z.string().nullable(), dns: z.array(z.string()) }).nullable(),
  reader: z.object({ pid: z.number(), mountpoint: z.string() }).nullable(),
  /** The reader's counters at switch_root (live ones: READER_MOUNT/.hfk/stats.json). */
  fetched: z.object({ bytes: z.number(), blocks: z.number(), memoryHits: z.number(), diskHits: z.number() }).nullable(),
  cache: z.string().nullable(),
  warnings: z.array(z.string()),
  /**
   * The reader's blocks over time and mirror switches at switch_root (ms of
   * uptime, as uptime.initStart; source/timeline.ts). Absent in older reports.
   */
  timeline: BootTimeline.nullable().optional(),
});
export type BootReport = z.infer<typeof BootReport>;

export function makeReport(
  state: BootState,
  records: readonly StepRecord[],
  o: { kernelRelease: string; switchRootUptime: number | null; failure?: { stage: string; code: string; message: string; hint: string | null } },
): BootReport {
  let fetched: BootReport['fetched'] = null;
  let timeline: BootReport['timeline'] = null;
  if (state.reader) {
    try {
      const s = JSON.parse(fs.readFileSync(`${state.reader.mountpoint}/.hfk/stats.json`, 'utf8')) as Record<string, number>;
      fetched = { bytes: s.bytesFetched ?? 0, blocks: s.blocksFetched ?? 0, memoryHits: s.memoryHits ?? 0, diskHits: s.diskHits ?? 0 };
      timeline = BootTimeline.safeParse((s as Record<string, unknown>).timeline).data ?? null; // a bad one must not cost the report
    } catch {
      fetched = null;
    }
  }
  const h = state.image?.manifest.header;
  const finite = (n: number) => (Number.isFinite(n) ? Math.round(n * 100) / 100 : null);
  return BootReport.parse({
    format: 'hfk-boot-report/1',
    ok: !o.failure,
    failedStage: o.failure?.stage ?? null,
    error: o.failure ? { code: o.failure.code, message: o.failure.message, hint: o.failure.hint } : null,
    kernel: { release: o.kernelRelease, cmdline: state.cmdline ?? null },
    uptime: { initStart: state.startedUptime, switchRoot: o.switchRootUptime },
    stages: records.map((r) => ({ stage: r.stage, description: r.description, ms: Math.round(r.elapsedMs * 10) / 10, ok: r.ok })),
    image: h
      ? { name: h.name, version: h.version, size: h.imageSize, blockSize: h.blockSize, blocks: h.blockCount, filesystem: state.filesystem ?? h.filesystem, manifestFrom: state.image!.from, offline: state.image!.offline }
      : null,
    mirrors: {
      chosen: state.ranking?.mirrors.find((m) => m.ok > 0)?.url ?? null,
      ranking: (state.ranking?.mirrors ?? []).map((m) => ({
        url: m.url,
        ttfbMs: m.ttfbMs === null ? null : finite(m.ttfbMs),
        blockMs: m.blockMs === null ? null : finite(m.blockMs),
        throughputMBps: m.throughputMBps === null ? null : finite(m.throughputMBps),
        score: finite(m.score),
        version: m.version,
        error: m.error,
      })),
      rankingMs: state.ranking ? Math.round(state.ranking.ms) : null,
    },
    modules: {
      loaded: state.probe?.loaded.map((l) => l.module) ?? [],
      builtin: state.probe?.builtin ?? [],
      failed: state.probe?.failures.map((f) => f.module) ?? [],
      devices: state.probe?.devices.length ?? 0,
    },
    network: state.network
      ? { method: state.network.method, interface: state.network.interface, address: state.network.address, gateway: state.network.gateway, dns: [...state.network.dns] }
      : null,
    reader: state.reader ?? null,
    fetched,
    cache: state.cacheDir ?? null,
    warnings: [...state.warnings, ...(state.probe?.warnings ?? [])],
    timeline,
  });
}

export function writeReport(file: string, r: BootReport): void {
  writeFileAtomicSync(file, `${JSON.stringify(r, null, 2)}\n`);
}
