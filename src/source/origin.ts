// The one place that maps a store location to the client that reads it:
//   - a folder (or file:// URL)          → LocalStore
//   - http:// reached directly           → hfk's pipelined block client (H1Origin)
//   - https://, or anything via a proxy  → undici, one dispatcher shared by
//     every origin of this set (one proxy configuration, one pool per host)
// Mirrors, the ranking, the trust loader, mirror lists and the store commands
// all get their clients here.

import type { LookupFunction } from 'node:net';
import * as path from 'node:path';
import type { Dispatcher } from 'undici';
import { InputError, MissingError } from '../errors.ts';
import { H1Origin } from '../store/h1.ts';
import { HttpOrigin, makeDispatcher, normalizeBaseUrl, viaUndici } from '../store/http.ts';
import { LocalStore } from '../store/local.ts';
import { isUrl, type ReadOptions, type StoreReader } from '../store/store.ts';
import { mirrorAuth, redactUrl } from '../store/auth.ts';
import type { NetrcEntry } from '../store/netrc.ts';
import { proxyFor, type ProxySetting } from '../store/proxy.ts';

export interface OriginOptions {
  /** HTTP proxy for every http(s) origin, or rules per scheme and host (plain HTTP is forwarded, so caching proxies cache). */
  proxy?: ProxySetting | undefined;
  /** netrc logins for URLs given without credentials (src/store/netrc.ts). */
  netrc?: readonly NetrcEntry[] | undefined;
  /** Keep-alive connections per origin (default 4). */
  connections?: number;
  /** Requests pipelined on each connection (default 8). */
  pipelining?: number;
  connectTimeoutMs?: number;
  /** Longest wait for an answer's head; bytes do not extend it (default: budget.ts DEFAULT_BUDGET). */
  headersTimeoutMs?: number;
  /** Longest pause within a body (default 10 s). */
  bodyTimeoutMs?: number;
  /** After graceMs, a body must bring this many bytes a second (default: budget.ts DEFAULT_BUDGET). */
  minBytesPerSec?: number;
  /** Time after a head in which its body may be slow (default: budget.ts DEFAULT_BUDGET). */
  graceMs?: number;
  /** DNS lookup for the connections (the init pins resolved addresses). */
  lookup?: LookupFunction | undefined;
}

export type OriginClient = 'hfk' | 'undici' | 'folder';

/** Which client reads `location` with this proxy setting. */
export function clientFor(location: string, proxy?: ProxySetting): OriginClient {
  if (!isUrl(location)) return 'folder';
  return viaUndici(location, proxy) ? 'undici' : 'hfk';
}

/** A location as a canonical key: a base URL ending in '/', or an absolute folder. */
export function normalizeLocation(location: string, what = 'mirror URL'): string {
  if (/^file:\/\//i.test(location)) return path.resolve(new URL(location).pathname);
  return isUrl(location) ? normalizeBaseUrl(location, what) : path.resolve(location);
}

/** The origins of one fetcher or command, sharing undici's dispatcher when they need one. */
export class Origins {
  readonly proxy: ProxySetting | undefined;
  private readonly o: OriginOptions;
  private dispatcher: Promise<Dispatcher> | undefined;
  private readonly opened = new Set<StoreReader>();

  constructor(options: OriginOptions = {}) {
    this.o = options;
    this.proxy = options.proxy || undefined;
  }

  /**
   * The client for one store location (a base URL or a folder). Credentials
   * in the URL (or netrc's for its host) go to the client, not into its
   * location: what names the origin in messages has none.
   */
  open(location: string): StoreReader {
    const { url: where, authorization } = mirrorAuth(normalizeLocation(location), this.o.netrc);
    const timeouts = this.timeouts();
    let origin: StoreReader;
    switch (clientFor(where, this.proxy)) {
      case 'folder':
        origin = LocalStore.at(where);
        break;
      case 'hfk':
        origin = new H1Origin(where, {
          ...timeouts,
          connections: this.o.connections ?? 4,
          pipelining: this.o.pipelining ?? 8,
          ...(this.o.connectTimeoutMs ? { connectTimeoutMs: this.o.connectTimeoutMs } : {}),
          ...(this.o.lookup ? { lookup: this.o.lookup } : {}),
          // A redirect to https: undici carries that hop, as part of this origin (errors name it, its mirror is booked).
          elsewhere: (url, options) => this.redirected(where).read(url, options),
          proxied: (u) => proxyFor(u, this.proxy) !== undefined,
          authorization,
        });
        break;
      case 'undici':
        origin = new HttpOrigin(where, { dispatcher: this.shared(), ...timeouts, authorization });
        break;
    }
    this.opened.add(origin);
    return origin;
  }

  private timeouts(): { headersTimeoutMs?: number; bodyTimeoutMs?: number; minBytesPerSec?: number; graceMs?: number } {
    return {
      ...(this.o.headersTimeoutMs ? { headersTimeoutMs: this.o.headersTimeoutMs } : {}),
      ...(this.o.bodyTimeoutMs ? { bodyTimeoutMs: this.o.bodyTimeoutMs } : {}),
      ...(this.o.minBytesPerSec ? { minBytesPerSec: this.o.minBytesPerSec } : {}),
      ...(this.o.graceMs ? { graceMs: this.o.graceMs } : {}),
    };
  }

  /** The undici client for the https hops of redirects from a plain-HTTP origin, made on first need. */
  private readonly hops = new Map<string, HttpOrigin>();
  private redirected(where: string): HttpOrigin {
    let o = this.hops.get(where);
    if (!o) {
      o = new HttpOrigin(where, { dispatcher: this.shared(), ...this.timeouts() });
      this.hops.set(where, o);
      this.opened.add(o);
    }
    return o;
  }

  private shared(): Promise<Dispatcher> {
    this.dispatcher ??= makeDispatcher({
      connections: this.o.connections ?? 4,
      pipelining: this.o.pipelining ?? 8,
      ...(this.proxy ? { proxy: this.proxy } : {}),
      ...(this.o.lookup ? { lookup: this.o.lookup } : {}),
      ...(this.o.connectTimeoutMs ? { connectTimeoutMs: this.o.connectTimeoutMs } : {}),
      ...this.timeouts(),
    });
    return this.dispatcher;
  }

  /**
   * One file by its full location (a URL or a path), e.g. a mirror list:
   * read through the origin of its folder, so a proxy applies as it does to blocks.
   */
  async readFile(location: string, options: ReadOptions = {}): Promise<Buffer> {
    const url = isUrl(location) || /^file:\/\//i.test(location);
    const full = url ? new URL(location) : undefined;
    const base = full ? new URL('.', full).href : path.dirname(path.resolve(location));
    const file = full ? full.pathname.slice(full.pathname.lastIndexOf('/') + 1) : path.basename(location);
    if (!file) throw new InputError(`${redactUrl(location)} names a folder, not a file`);
    const name = full && full.protocol !== 'file:' ? file + full.search : file;
    const origin = this.open(base);
    try {
      return await origin.read(name, { fresh: true, ...options });
    } catch (e) {
      if (e instanceof MissingError) throw new MissingError(e.source, `${redactUrl(location)} does not exist`, { cause: e });
      throw e;
    } finally {
      this.opened.delete(origin);
      await origin.close();
    }
  }

  /** Closes every origin made here, then the shared dispatcher. Idempotent. */
  async close(): Promise<void> {
    const all = [...this.opened];
    this.opened.clear();
    this.hops.clear();
    await Promise.all(all.map((o) => o.close().catch(() => {})));
    const d = this.dispatcher;
    this.dispatcher = undefined;
    await d?.then((x) => x.close()).catch(() => {});
  }
}

/** A store to read by hand (hfk verify, hfk diff): a folder that must exist, or a URL. */
export async function openStore(location: string, options: OriginOptions = {}): Promise<StoreReader> {
  if (!isUrl(location)) return LocalStore.open(location);
  const origins = new Origins({ connections: 8, pipelining: 1, ...options });
  const origin = origins.open(location);
  return { location: origin.location, read: (rel, o) => origin.read(rel, o), close: () => origins.close() };
}
