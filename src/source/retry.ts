// Retrying: asks the inner source again, with exponential backoff, when a
// whole pass failed. Two modes:
//   - hard (the root device): retries until it gets the block, and says so
//     loudly every round; a root that returns I/O errors is worse than one
//     that waits for the network to come back;
//   - soft (hfk get, hfk mount by default, the dry run): gives up after a
//     deadline that also cuts the pass under way short.
// Cancelled requests are never retried.

import { AbortedError, BrokenError, type HfkError } from '../errors.ts';
import { asSourceError, type Block, type BlockRequest, type BlockSource, failureKind, sleep, type SourceStats, blockName } from './source.ts';

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
    // The common case, a first pass that succeeds, costs nothing extra: no timer, no combined signal.
    if (this.o.mode === 'hard') {
      try {
        return await this.inner.get(req, signal);
      } catch (e) {
        return this.retry(req, signal, this.o.now(), asSourceError(e, this.inner.location));
      }
    }
    // Soft mode: one deadline for every pass, the first one included.
    const started = this.o.now();
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), this.o.softTimeoutMs);
    const cancel = () => deadline.abort();
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      return await this.inner.get(req, deadline.signal);
    } catch (e) {
      return await this.retry(req, signal, started, asSourceError(e, this.inner.location), deadline.signal);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', cancel);
    }
  }

  /** The passes after a failed first one, with backoff between them. */
  private async retry(req: BlockRequest, signal: AbortSignal | undefined, started: number, first: HfkError, deadline?: AbortSignal): Promise<Block> {
    const any = AbortSignal.any([this.closed.signal, ...(signal ? [signal] : []), ...(deadline ? [deadline] : [])]);
    let last = first;
    for (let round = 0; ; round++) {
      if (this.closed.signal.aborted) throw new AbortedError('fetcher closed');
      if (signal?.aborted) throw new AbortedError('read cancelled');
      const timedOut = deadline?.aborted || (this.o.mode === 'soft' && this.o.now() - started >= this.o.softTimeoutMs);
      if (failureKind(last) === 'aborted' && !timedOut) throw last;
      if (timedOut) {
        const why = failureKind(last) === 'aborted' ? `no answer for ${blockName(req)} from ${this.inner.location}` : last.message;
        throw new BrokenError('(all sources)', `${why}; gave up after ${Math.round((this.o.now() - started) / 1000)} s`, {
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
        continue; // the soft deadline passed while waiting: reported above
      }
      try {
        return await this.inner.get(req, any);
      } catch (e) {
        const error = asSourceError(e, this.inner.location);
        if (failureKind(error) !== 'aborted') last = error; // a cancelled pass keeps the last real reason
        else if (!deadline?.aborted) last = error;
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
