// The time budget of one HTTP answer, for both clients (h1.ts, http.ts):
// an absolute deadline for its head and a minimum rate for its body, so that
// bytes trickled one at a time never extend a wait (as CernVM-FS: below
// ~1 kB/s after a grace period counts as a timeout). Pure: the caller says
// what time it is; the clients look at their answers on a periodic tick.

import { UsageError } from '../errors.ts';

export interface TimeBudget {
  /** Longest wait for an answer's head (status line, headers, interim 1xx answers), from when it is due. */
  headTimeoutMs: number;
  /** After the grace, a body must bring at least this many bytes a second, over each window of the grace's length. */
  minBytesPerSec: number;
  /** Time after the head in which a body may be slow (a window of the rate check). */
  graceMs: number;
}

/** Generous enough for a slow real mirror. */
export const DEFAULT_BUDGET: Readonly<TimeBudget> = { headTimeoutMs: 20_000, minBytesPerSec: 1024, graceMs: 10_000 };

/** The budget with defaults for what is not given; UsageError for a value that cannot be used. */
export function timeBudget(b: Partial<TimeBudget> = {}): TimeBudget {
  const out = {
    headTimeoutMs: b.headTimeoutMs ?? DEFAULT_BUDGET.headTimeoutMs,
    minBytesPerSec: b.minBytesPerSec ?? DEFAULT_BUDGET.minBytesPerSec,
    graceMs: b.graceMs ?? DEFAULT_BUDGET.graceMs,
  };
  for (const [k, v] of Object.entries(out)) {
    if (!Number.isFinite(v) || v <= 0) throw new UsageError(`${k} must be a positive number: got ${v}`);
  }
  return out;
}

/** How often answers are looked at: often enough for the shortest of the budget's times. */
export function tickMs(b: TimeBudget): number {
  return Math.max(10, Math.min(250, Math.min(b.headTimeoutMs, b.graceMs) / 4));
}

/** A rate for messages: "1 KiB/s", "300 bytes/s". */
export function formatRate(bytesPerSec: number): string {
  if (bytesPerSec >= 1024 && bytesPerSec % 1024 === 0) return `${bytesPerSec / 1024} KiB/s`;
  return `${bytesPerSec} bytes/s`;
}

function secs(ms: number): string {
  return ms >= 1000 ? `${+(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/** The clock of one answer: when its head is due, and how fast its body comes. */
export class AnswerClock {
  private readonly b: TimeBudget;
  /** When the head became due (NaN: the request has not left yet). */
  private headFrom = Number.NaN;
  private headAt = Number.NaN;
  private windowFrom = 0;
  private windowBytes = 0;
  private graceOver = false;
  /** Bytes the body is allowed at most: with the minimum rate, its absolute end. */
  private endBy = Number.POSITIVE_INFINITY;
  private size = 0;

  constructor(budget: TimeBudget) {
    this.b = budget;
  }

  /** The head is due from `now` (the request left, or the answers ahead of it are in). */
  due(now: number): void {
    this.headFrom = now;
  }

  /** The head came; `size`: the most bytes the body may have, when known. */
  head(now: number, size?: number): void {
    this.headAt = now;
    this.windowFrom = now;
    this.windowBytes = 0;
    if (size !== undefined && Number.isFinite(size)) {
      this.size = size;
      this.endBy = now + this.b.graceMs + (size / this.b.minBytesPerSec) * 1000;
    }
  }

  data(n: number): void {
    this.windowBytes += n;
  }

  /**
   * Why the answer is over its budget at `now`, or undefined. `headBytes`:
   * bytes of a head seen so far, when the client knows (a trickled head is
   * then told from no answer).
   */
  overdue(now: number, headBytes?: number): string | undefined {
    const b = this.b;
    if (Number.isNaN(this.headAt)) {
      if (Number.isNaN(this.headFrom) || now - this.headFrom <= b.headTimeoutMs) return undefined;
      if (headBytes === undefined) return `the server sent no whole response head within ${secs(b.headTimeoutMs)}`;
      return headBytes > 0 ? `the server sent its headers too slowly (${headBytes} bytes in ${secs(now - this.headFrom)})` : `the server sent no answer within ${secs(b.headTimeoutMs)}`;
    }
    if (now > this.endBy) return `the body came slower than ${formatRate(b.minBytesPerSec)} (${this.size} bytes not complete in ${secs(now - this.headAt)})`;
    if (!this.graceOver) {
      if (now - this.headAt < b.graceMs) return undefined;
      this.graceOver = true; // the rate is asked from here on, window by window
      this.windowFrom = now;
      this.windowBytes = 0;
      return undefined;
    }
    const span = now - this.windowFrom;
    if (span < b.graceMs) return undefined;
    if (this.windowBytes < (b.minBytesPerSec * span) / 1000) {
      return `the body came slower than ${formatRate(b.minBytesPerSec)} (${this.windowBytes} bytes in the last ${secs(span)})`;
    }
    this.windowFrom = now;
    this.windowBytes = 0;
    return undefined;
  }
}
