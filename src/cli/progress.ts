// A one-line progress bar on stderr, drawn only on a terminal. Elsewhere
// (pipes, CI logs) it prints nothing until done() reports the outcome.

import { formatBytes, formatDuration } from '../util/size.ts';
import type { Output } from './command.ts';

export interface ProgressOptions {
  label: string;
  total: number;
  /** Values are bytes (shown as sizes and MB/s) or items (counts/s). */
  unit: 'bytes' | 'items';
}

export class ProgressBar {
  private readonly start = performance.now();
  private lastDraw = 0;
  private drawn = false;

  private readonly io: Output;
  private readonly o: ProgressOptions;

  constructor(io: Output, o: ProgressOptions) {
    this.io = io;
    this.o = o;
  }

  private fmt(n: number): string {
    return this.o.unit === 'bytes' ? formatBytes(n) : String(n);
  }

  update(done: number, total = this.o.total, note = ''): void {
    if (!this.io.tty) return;
    const now = performance.now();
    if (now - this.lastDraw < 80 && done < total) return;
    this.lastDraw = now;
    const secs = (now - this.start) / 1000;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const width = 24;
    const fill = Math.round(frac * width);
    const rate = secs > 0 ? done / secs : 0;
    const rateText = this.o.unit === 'bytes' ? `${(rate / 1e6).toFixed(1)} MB/s` : `${rate.toFixed(0)}/s`;
    const eta = rate > 0 && done < total ? ` eta ${formatDuration(((total - done) / rate) * 1000)}` : '';
    const line = `${this.o.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${this.fmt(done)}/${this.fmt(total)} ${rateText}${eta}${note ? ` ${note}` : ''}`;
    this.io.err(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  /** Clears the bar (the caller prints the summary). */
  done(): void {
    if (this.drawn) this.io.err('\r\x1b[2K');
    this.drawn = false;
  }
}
