// One mirror as the fetcher sees it: an HTTP origin, its health, and how many
// requests it has in flight (bounded per mirror; the client queues the rest
// on its keep-alive connections). Plain-HTTP mirrors reached directly go
// through hfk's own pipelined block client (src/store/h1.ts); HTTPS mirrors
// and anything behind a proxy through undici (src/store/http.ts).

import type { Dispatcher } from 'undici';
import { BrokenError, HfkError, InvalidError, MissingError } from '../errors.ts';
import { H1Origin } from '../store/h1.ts';
import { HttpOrigin, makeDispatcher, normalizeBaseUrl, type HttpOriginOptions, viaUndici } from '../store/http.ts';
import type { ReadOptions, RequestTiming, StoreReader } from '../store/store.ts';
import { MirrorHealth, type HealthOptions } from './score.ts';

export interface MirrorOptions {
  /** Keep-alive connections per mirror. Default 4. */
  connections?: number;
  /** Requests pipelined on each connection. Default 8: with 4 connections, 32 in flight per mirror. */
  pipelining?: number;
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  connectTimeoutMs?: number;
  health?: Partial<HealthOptions>;
}

export class Mirror implements StoreReader {
  readonly url: string;
  readonly location: string;
  readonly health: MirrorHealth;
  readonly connections: number;
  inFlight = 0;
  private readonly origin: StoreReader;
  private readonly now: () => number;

  /** `dispatcher`: undici's, shared by the set; none: the mirror's own block client (plain HTTP only). */
  constructor(url: string, dispatcher: Promise<Dispatcher> | undefined, options: MirrorOptions & Pick<HttpOriginOptions, 'lookup'> = {}, now: () => number = Date.now) {
    this.url = normalizeBaseUrl(url, 'mirror URL');
    this.location = this.url;
    // What the mirror can have in flight at once.
    this.connections = (options.connections ?? 4) * (options.pipelining ?? 8);
    this.health = new MirrorHealth(options.health);
    this.now = now;
    const timeouts = {
      ...(options.headersTimeoutMs ? { headersTimeoutMs: options.headersTimeoutMs } : {}),
      ...(options.bodyTimeoutMs ? { bodyTimeoutMs: options.bodyTimeoutMs } : {}),
    };
    this.origin = dispatcher
      ? new HttpOrigin(this.url, { dispatcher, ...timeouts })
      : new H1Origin(this.url, {
          ...timeouts,
          connections: options.connections ?? 4,
          pipelining: options.pipelining ?? 8,
          ...(options.connectTimeoutMs ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
          ...(options.lookup ? { lookup: options.lookup } : {}),
        });
  }

  /** Which HTTP client carries this mirror's requests. */
  get client(): 'hfk' | 'undici' {
    return this.origin instanceof H1Origin ? 'hfk' : 'undici';
  }

  /** Reads a path and books the outcome against this mirror's health. */
  async read(rel: string, options: ReadOptions = {}): Promise<Buffer> {
    const timing: RequestTiming = { ttfbMs: 0, bodyMs: 0 };
    this.inFlight++;
    try {
      const body = await this.origin.read(rel, { ...options, timing });
      this.health.success(timing.ttfbMs, body.length, timing.bodyMs);
      if (options.timing) Object.assign(options.timing, timing);
      return body;
    } catch (e) {
      this.book(e);
      throw e;
    } finally {
      this.inFlight--;
    }
  }

  /** Counts a failure of the right kind (a caller's verification too). */
  book(e: unknown): void {
    if (e instanceof MissingError) this.health.lacks();
    else if (e instanceof InvalidError) this.health.corrupt(this.now());
    else if (e instanceof BrokenError) this.health.broken(this.now());
    else if (e instanceof HfkError && e.code === 'E_ABORTED') return;
    else if (!(e instanceof HfkError)) this.health.broken(this.now());
  }

  isDown(): boolean {
    return this.health.isDown(this.now());
  }

  cost(bytes: number): number {
    return this.health.expectedCost(bytes, this.inFlight, this.connections);
  }

  async close(): Promise<void> {
    await this.origin.close();
  }
}

/**
 * The mirrors of one fetcher. Those that need undici (HTTPS, or all of them
 * behind a proxy) share one dispatcher, and so one proxy configuration and
 * one connection pool per origin.
 */
export class MirrorSet {
  readonly mirrors: Mirror[];
  private readonly dispatcher: Promise<Dispatcher> | undefined;

  constructor(urls: readonly string[], options: MirrorOptions & Pick<HttpOriginOptions, 'proxy' | 'lookup'> = {}, now: () => number = Date.now) {
    const seen = new Set<string>();
    const unique = urls.map((u) => normalizeBaseUrl(u, 'mirror URL')).filter((u) => !seen.has(u) && seen.add(u));
    this.dispatcher = !unique.some((u) => viaUndici(u, options.proxy)) ? undefined : makeDispatcher({
      connections: options.connections ?? 4,
      pipelining: options.pipelining ?? 8,
      ...(options.proxy ? { proxy: options.proxy } : {}),
      ...(options.lookup ? { lookup: options.lookup } : {}),
      ...(options.connectTimeoutMs ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
      ...(options.headersTimeoutMs ? { headersTimeoutMs: options.headersTimeoutMs } : {}),
      ...(options.bodyTimeoutMs ? { bodyTimeoutMs: options.bodyTimeoutMs } : {}),
    });
    this.mirrors = unique.map((u) => new Mirror(u, viaUndici(u, options.proxy) ? this.dispatcher : undefined, options, now));
  }

  /**
   * Mirrors in the order to try for an object of `bytes`: healthy ones by
   * expected cost, then those backing off (soonest back first) as a last resort.
   */
  order(bytes: number): Mirror[] {
    // Called for every block: one pass, and nothing sorted that holds one mirror.
    const up: Mirror[] = [];
    const down: Mirror[] = [];
    for (const m of this.mirrors) (m.isDown() ? down : up).push(m);
    if (up.length > 1) up.sort((a, b) => a.cost(bytes) - b.cost(bytes));
    if (down.length > 1) down.sort((a, b) => a.health.downUntil - b.health.downUntil);
    for (const m of down) up.push(m);
    return up;
  }

  async close(): Promise<void> {
    await Promise.all([...this.mirrors.map((m) => m.close()), this.dispatcher?.then((d) => d.close()).catch(() => {})]);
  }
}
