// Blocks fetched over time and the mirror switches, for the picture of a
// boot (hfk report --svg): counts in fixed buckets (100 ms at first), and
// bounded: once there are MAX_BUCKETS, neighbours merge and the bucket
// doubles, so a reader that runs for days keeps a few kilobytes.
//
// Times are ms of system uptime (since the kernel started), the clock the
// boot report's stages are on, so the two line up without conversion.

import { readFileSync } from 'node:fs';

export const MAX_BUCKETS = 600;
export const MAX_SWITCHES = 100;

export interface TimelineSnapshot {
  /** Uptime (ms) at the start of the first bucket. */
  startMs: number;
  bucketMs: number;
  /** Blocks fetched from mirrors in each bucket. */
  blocks: number[];
  /** Block-object bytes fetched in each bucket. */
  bytes: number[];
  /** The mirror serving blocks changed: at uptime `atMs`, from → to (from null: the first). */
  switches: { atMs: number; from: string | null; to: string }[];
}

/** A clock of ms since the kernel started: /proc/uptime once, then this process's monotonic clock. */
export function uptimeClock(): () => number {
  let base = 0;
  try {
    base = Number.parseFloat(readFileSync('/proc/uptime', 'utf8')) * 1000 - performance.now();
  } catch {
    base = 0; // no /proc: ms since this process started
  }
  return () => base + performance.now();
}

export class Timeline {
  private readonly now: () => number;
  private startMs: number | undefined;
  private bucketMs: number;
  private readonly blocks: number[] = [];
  private readonly bytes: number[] = [];
  private readonly switches: TimelineSnapshot['switches'] = [];
  private current: string | null = null;

  constructor(options: { now?: () => number; bucketMs?: number } = {}) {
    this.now = options.now ?? uptimeClock();
    this.bucketMs = options.bucketMs ?? 100;
  }

  /** A block of `bytes` fetched from `mirror`. */
  fetched(mirror: string, bytes: number): void {
    const t = this.now();
    this.startMs ??= Math.floor(t / this.bucketMs) * this.bucketMs;
    let i = Math.floor((t - this.startMs) / this.bucketMs);
    while (i >= MAX_BUCKETS) {
      this.merge();
      i = Math.floor((t - this.startMs) / this.bucketMs);
    }
    while (this.blocks.length <= i) {
      this.blocks.push(0);
      this.bytes.push(0);
    }
    this.blocks[i]!++;
    this.bytes[i]! += bytes;
    if (mirror !== this.current) {
      if (this.switches.length < MAX_SWITCHES) this.switches.push({ atMs: Math.round(t), from: this.current, to: mirror });
      this.current = mirror;
    }
  }

  /** The mirror the last block came from. */
  get mirror(): string | null {
    return this.current;
  }

  /** Halves the resolution: neighbouring buckets become one. */
  private merge(): void {
    for (const a of [this.blocks, this.bytes]) {
      const merged: number[] = [];
      for (let i = 0; i < a.length; i += 2) merged.push(a[i]! + (a[i + 1] ?? 0));
      a.length = 0;
      a.push(...merged);
    }
    this.bucketMs *= 2;
  }

  snapshot(): TimelineSnapshot {
    return { startMs: Math.round(this.startMs ?? 0), bucketMs: this.bucketMs, blocks: [...this.blocks], bytes: [...this.bytes], switches: this.switches.map((s) => ({ ...s })) };
  }
}
