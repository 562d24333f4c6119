// Retrying: asks the inner source again, with exponential backoff, when a
// whole pass failed. Two modes:
//   - hard (the root device): retries until it gets the block, and says so
//     loudly every round; a root that returns I/O errors is worse than one
//     that waits for the network to come back;
//   - soft (hfk get, hfk mount by default, the dry run): gives up after a
//     deadline that also cuts the pass under way short.
// Cancelled requests are never retried.

import { AbortedError, BrokenError, type HfkError } from '../errors.ts';
import { asSourceError, type Block, type BlockRequest, type BlockSource, failureKind, sleep, type SourceStats } from './source.ts';

export interface RetryOptions {
  mode: 'hard' | 'soft';
  /** Soft mode: give up this long after the first attempt (default 30 s). */
  softTimeoutMs?: number;
  /** Longest wait between rounds (default 10 s). */
  maxDelayMs?: number;
  /** First wait between rounds (default 250 ms; doubles each round). */
  baseDelayMs?: number;
  log?: ((line: string) => void) | undefined;
  now?: () => number;
}

export class Retrying implements BlockSource {
  readonly location: string;
  private readonly inner: BlockSource;
  private readonly o: Required<Omit<RetryOptions, 'log'>> & Pick<RetryOptions, 'log'>;
  private readonly closed = new AbortController();
  private rounds = 0;

  constructor(inner: BlockSource, options: RetryOptions) {
    this.inner = inner;
    this.location = inner.location;
    this.o = {
      mode: options.mode,
      softTimeoutMs: options.softTimeoutMs ?? 30_000,
      maxDelayMs: options.maxDelayMs ?? 10_000,
      baseDelayMs: options.baseDelayMs ?? 250,
      now: options.now ?? Date.now,
      log: options.log,
    };
  }

  holds(hash: string): boolean {
    return this.inner.holds?.(hash) ?? false;
  }

  async get(req: BlockRequest, signal?: AbortSignal): Promise<Block> {
    const started = this.o.now();
    // Soft mode: one deadline for every round, the pass under way included.
    const deadline = this.o.mode === 'soft' ? AbortSignal.timeout(this.o.softTimeoutMs) : undefined;
    const signals = [this.closed.signal, signal, deadline].filter((s): s is AbortSignal => s !== undefined);
    const any = signals.length === 1 ? signals[0]! : AbortSignal.any(signals);
    let last: HfkError | undefined;
    for (let round = 0; ; round++) {
      try {
        return await this.inner.get(req, any);
      } catch (e) {
        const error = asSourceError(e, this.inner.location);
        if (failureKind(error) !== 'aborted' || !last) last = error;
      }
      if (this.closed.signal.aborted) throw new AbortedError('fetcher closed');
      if (signal?.aborted) throw new AbortedError('read cancelled');
      const timedOut = deadline?.aborted || (this.o.mode === 'soft' && this.o.now() - started >= this.o.softTimeoutMs);
      if (failureKind(last) === 'aborted' && !timedOut) throw last;
      if (timedOut) {
        throw new BrokenError('(all sources)', `${last.message}; gave up after ${Math.round((this.o.now() - started) / 1000)} s`, {
          hint: 'check the network and the mirrors; hard mode (the default for a root device) keeps retrying',
          cause: last,
        });
      }
      this.rounds++;
      const delay = Math.min(this.o.maxDelayMs, this.o.baseDelayMs * 2 ** Math.min(round, 10));
      this.o.log?.(`WARNING: ${last.message}; retrying in ${(delay / 1000).toFixed(1)} s`);
      try {
        await sleep(delay, any);
      } catch {
        if (this.closed.signal.aborted || signal?.aborted) throw new AbortedError(this.closed.signal.aborted ? 'fetcher closed' : 'read cancelled');
        // the soft deadline passed while waiting: report above
      }
    }
  }

  stats(into: SourceStats): void {
    into.retryRounds += this.rounds;
    this.inner.stats?.(into);
  }

  async close(): Promise<void> {
    this.closed.abort();
    await this.inner.close();
  }
}
