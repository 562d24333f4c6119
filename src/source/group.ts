// A failover group of mirrors: one pass over them per request, best first
// by live score, with
//   - failover by error kind: missing → next mirror (not an outage); invalid
//     → the mirror is blamed (Mirror.get books it), next; broken → the mirror
//     backs off, next;
//   - hedging: a request much slower than its mirror usually is also goes to
//     the next mirror; the first verified answer wins, the others are cancelled;
//   - exploration: now and then the runner-up goes first, to keep its score fresh.
// One pass only: retrying rounds is the Retrying decorator's job.

import { AbortedError, BrokenError, type HfkError, MissingError } from '../errors.ts';
import type { FailureLog } from './failurelog.ts';
import type { Mirror } from './mirror.ts';
import { asSourceError, type Block, type BlockRequest, type BlockSource, type FailureKind, failureKind, type SourceStats, blockName } from './source.ts';
import { Timeline } from './timeline.ts';

/** One request to one mirror, as it ended: how long it took (verification included), and how. */
export type MirrorObserver = (mirror: string, ms: number, outcome: 'ok' | FailureKind) => void;

export interface GroupOptions {
  /** Ask a second mirror when one is slow (default true). */
  hedge?: boolean;
  /** Never hedge sooner than this (default 40 ms). */
  minHedgeMs?: number;
  /** Fraction of requests sent to the runner-up first (default 0.02). */
  explore?: number;
  /** Released after the mirrors on close (their verifier, their origins' shared dispatcher). */
  owns?: { close(): Promise<void> }[];
  /** Where failures, corrupt blocks and failovers are said (rate-limited). */
  failures?: FailureLog | undefined;
  /** Told of every request to a mirror (metrics). */
  observe?: MirrorObserver | undefined;
  /** Records blocks over time and mirror switches (default: one of its own). */
  timeline?: Timeline;
}

export class MirrorGroup implements BlockSource {
  readonly mirrors: readonly Mirror[];
  readonly location: string;
  private readonly o: Required<Omit<GroupOptions, 'owns' | 'failures' | 'observe' | 'timeline'>>;
  private readonly failures: FailureLog | undefined;
  private readonly observe: MirrorObserver | undefined;
  private readonly timeline: Timeline;
  private readonly owns: { close(): Promise<void> }[];
  private readonly requests = new Set<AbortController>();
  private closed = false;
  private count = 0;
  private readonly counters = { blocksFetched: 0, hedges: 0, hedgesWon: 0, failovers: 0 };

  constructor(mirrors: readonly Mirror[], options: GroupOptions = {}) {
    this.mirrors = mirrors;
    this.location = mirrors.length === 1 ? mirrors[0]!.url : `${mirrors.length} mirrors`;
    const { owns, failures, observe, timeline, ...o } = options;
    this.o = { hedge: true, minHedgeMs: 40, explore: 0.02, ...o };
    this.owns = owns ?? [];
    this.failures = failures;
    this.observe = observe;
    this.timeline = timeline ?? new Timeline();
  }

  /**
   * Mirrors in the order to try for an object of `bytes`: healthy ones by
   * expected cost, then those backing off (soonest back first) as a last resort.
   */
  order(bytes: number): Mirror[] {
    const up: Mirror[] = [];
    const down: Mirror[] = [];
    for (const m of this.mirrors) (m.isDown() ? down : up).push(m);
    if (up.length > 1) up.sort((a, b) => a.cost(bytes) - b.cost(bytes));
    if (down.length > 1) down.sort((a, b) => a.health.downUntil - b.health.downUntil);
    for (const m of down) up.push(m);
    return up;
  }

  /** The order for one request, sometimes with the runner-up first. */
  private candidates(bytes: number): Mirror[] {
    const order = this.order(bytes);
    this.count++;
    if (order.length > 1 && !order[1]!.isDown() && this.o.explore > 0 && this.count % Math.round(1 / this.o.explore) === 0) {
      [order[0], order[1]] = [order[1]!, order[0]!];
    }
    return order;
  }

  private hedgeDelay(m: Mirror, bytes: number): number {
    const h = m.health;
    const expected = (h.latencyMs ?? 200) + (h.throughput ? bytes / h.throughput : 0);
    return Math.min(5000, Math.max(this.o.minHedgeMs, 3 * expected));
  }

  get(req: BlockRequest, signal?: AbortSignal): Promise<Block> {
    if (this.closed || signal?.aborted) return Promise.reject(new AbortedError('fetcher closed'));
    if (this.mirrors.length === 0) return Promise.reject(new MissingError('(no mirrors)', 'no mirrors to fetch from'));
    const bytes = req.objectSize ?? req.length;
    const order = this.candidates(bytes);
    const errors: HfkError[] = [];
    return new Promise<Block>((resolve, reject) => {
      let next = 0;
      let active = 0;
      let done = false;
      let hedgeTimer: NodeJS.Timeout | undefined;
      let latest: Mirror | undefined; // the mirror asked last
      const controllers = new Set<AbortController>();
      const onAbort = () => finish(new AbortedError('read cancelled'));
      signal?.addEventListener('abort', onAbort, { once: true });
      const finish = (v: Block | Error, winner?: AbortController) => {
        if (done) return;
        done = true;
        clearTimeout(hedgeTimer);
        signal?.removeEventListener('abort', onAbort);
        for (const c of controllers) if (c !== winner) c.abort(); // cancel the others
        if (v instanceof Error) reject(v);
        else resolve(v);
      };
      const launch = (hedged: boolean) => {
        if (done || next >= order.length) return;
        const m = order[next++]!;
        latest = m;
        if (hedged) this.counters.hedges++;
        else if (next > 1) this.counters.failovers++;
        active++;
        const ac = new AbortController();
        controllers.add(ac);
        this.requests.add(ac);
        if (this.closed) ac.abort();
        const t0 = this.observe ? performance.now() : 0;
        m.get(req, ac.signal)
          .then((b) => {
            this.observe?.(m.url, performance.now() - t0, 'ok');
            if (done) return req.pool?.put(b.data);
            this.counters.blocksFetched++;
            if (hedged) this.counters.hedgesWon++;
            this.timeline.fetched(m.url, b.object?.length ?? b.data.length);
            finish(b, ac);
          })
          .catch((e: unknown) => {
            const error = asSourceError(e, m.url);
            const kind = failureKind(error);
            this.observe?.(m.url, performance.now() - t0, kind);
            if (done) return;
            errors.push(error);
            if (active === 1) launch(false); // nothing else running: fail over now
            if (kind === 'broken' || kind === 'invalid') {
              const to = latest !== m ? latest!.url : this.closed ? undefined : null;
              this.failures?.note(m.url, kind === 'invalid' ? 'corrupt' : 'failed', error.message, to);
            }
          })
          .finally(() => {
            active--;
            controllers.delete(ac);
            this.requests.delete(ac);
            if (!done && active === 0 && next >= order.length) finish(this.closed ? new AbortedError('fetcher closed') : summarize(req, errors));
          });
        if (this.o.hedge && next < order.length) {
          clearTimeout(hedgeTimer);
          hedgeTimer = setTimeout(() => {
            if (!done && active === 1 && next < order.length && !order[next]!.isDown()) launch(true);
          }, this.hedgeDelay(m, bytes));
        }
      };
      launch(false);
    });
  }

  stats(into: SourceStats): void {
    into.blocksFetched += this.counters.blocksFetched;
    into.hedges += this.counters.hedges;
    into.hedgesWon += this.counters.hedgesWon;
    into.failovers += this.counters.failovers;
    into.mirror = this.timeline.mirror;
    into.timeline = this.timeline.snapshot();
    for (const m of this.mirrors) m.stats(into);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failures?.flush();
    for (const ac of this.requests) ac.abort();
    this.requests.clear();
    await Promise.all(this.mirrors.map((m) => m.close().catch(() => {})));
    await Promise.all(this.owns.map((x) => x.close().catch(() => {})));
  }
}

/**
 * Every mirror failed: missing when all of them lack the block (a router moves on), aborted when
 * all of them were cancelled or closed (nothing to retry), else broken with every reason.
 */
function summarize(req: BlockRequest, errors: HfkError[]): HfkError {
  const what = blockName(req);
  const detail = errors.map((e) => e.message).join('; ');
  if (errors.length > 0 && errors.every((e) => failureKind(e) === 'missing')) return new MissingError('(all mirrors)', `no mirror has ${what}: ${detail}`);
  if (errors.length > 0 && errors.every((e) => failureKind(e) === 'aborted')) return new AbortedError(`no mirror can serve ${what}: ${detail}`, { cause: errors });
  return new BrokenError('(all mirrors)', `every mirror failed for ${what}: ${detail}`, { cause: errors });
}
