// How good a mirror is right now: pure bookkeeping, no I/O.
//
// Every real request updates moving averages of latency (time to the
// response headers) and throughput (body bytes per second), so the order of
// mirrors follows what they actually deliver, not only what the boot-time
// probe saw. Failures put a mirror "down" with exponential backoff; once the
// backoff has passed it gets one trial request and comes back if it answers.

export interface HealthOptions {
  /** Weight of a new sample in the moving averages (0..1). */
  alpha: number;
  /** First backoff after a transport failure. */
  backoffBaseMs: number;
  /** Longest backoff. */
  backoffMaxMs: number;
  /** Extra cost factor per bad (hash-mismatch) response served. */
  invalidPenalty: number;
}

export const DEFAULT_HEALTH: HealthOptions = { alpha: 0.2, backoffBaseMs: 500, backoffMaxMs: 30_000, invalidPenalty: 4 };

export interface HealthSnapshot {
  latencyMs: number | null;
  throughputMBps: number | null;
  requests: number;
  failures: number;
  consecutiveFailures: number;
  invalid: number;
  missing: number;
  down: boolean;
  downForMs: number;
}

export class MirrorHealth {
  latencyMs: number | undefined;
  /** Bytes per millisecond. */
  throughput: number | undefined;
  requests = 0;
  failures = 0;
  consecutiveFailures = 0;
  invalid = 0;
  missing = 0;
  downUntil = 0;
  private readonly o: HealthOptions;

  constructor(options: Partial<HealthOptions> = {}) {
    this.o = { ...DEFAULT_HEALTH, ...options };
  }

  private ewma(old: number | undefined, sample: number): number {
    return old === undefined ? sample : old + this.o.alpha * (sample - old);
  }

  /** Seeds the averages from the ranking probe. */
  seed(latencyMs: number, bytesPerMs: number | undefined): void {
    this.latencyMs = latencyMs;
    if (bytesPerMs !== undefined && bytesPerMs > 0) this.throughput = bytesPerMs;
  }

  /** A successful response: headers after `ttfbMs`, `bytes` of body in `bodyMs`. */
  success(ttfbMs: number, bytes: number, bodyMs: number): void {
    this.requests++;
    this.consecutiveFailures = 0;
    this.downUntil = 0;
    this.latencyMs = this.ewma(this.latencyMs, Math.max(0.01, ttfbMs));
    // Tiny bodies say little about bandwidth; only count real transfers.
    if (bytes >= 16 * 1024 && bodyMs > 0) this.throughput = this.ewma(this.throughput, bytes / Math.max(bodyMs, 0.05));
  }

  /** Transport failure (connection, timeout, 5xx, cut short): back off. */
  broken(now: number): void {
    this.requests++;
    this.failures++;
    this.consecutiveFailures++;
    const backoff = Math.min(this.o.backoffMaxMs, this.o.backoffBaseMs * 2 ** (this.consecutiveFailures - 1));
    this.downUntil = now + backoff;
  }

  /** The mirror served bytes that fail verification. */
  corrupt(now: number): void {
    this.invalid++;
    this.broken(now);
  }

  /** 404: a partial mirror. Not an outage, but it costs a round trip. */
  lacks(): void {
    this.requests++;
    this.missing++;
  }

  isDown(now: number): boolean {
    return this.downUntil > now;
  }

  /**
   * Expected milliseconds to fetch `bytes` from this mirror with `inFlight`
   * requests already queued on `connections` connections. Lower is better.
   */
  expectedCost(bytes: number, inFlight: number, connections: number): number {
    const latency = this.latencyMs ?? 1000;
    const transfer = this.throughput ? bytes / this.throughput : bytes / 1000; // unknown: assume 1 MB/s
    const queueing = 1 + Math.max(0, inFlight + 1 - connections) / connections;
    const distrust = 1 + this.o.invalidPenalty * Math.min(this.invalid, 5);
    return (latency + transfer) * queueing * distrust;
  }

  snapshot(now: number): HealthSnapshot {
    return {
      latencyMs: this.latencyMs === undefined ? null : Math.round(this.latencyMs * 100) / 100,
      throughputMBps: this.throughput === undefined ? null : Math.round((this.throughput / 1000) * 100) / 100,
      requests: this.requests,
      failures: this.failures,
      consecutiveFailures: this.consecutiveFailures,
      invalid: this.invalid,
      missing: this.missing,
      down: this.isDown(now),
      downForMs: Math.max(0, this.downUntil - now),
    };
  }
}

/** Median of a non-empty list. */
export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
