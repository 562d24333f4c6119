// One HTTP(S) origin serving a store: a mirror, a CDN or a proxy's view of
// one. Keep-alive connections through an undici dispatcher; failures are
// reported by kind so the caller can decide between "try elsewhere" (404),
// "discard and blame" (bad bytes) and "fail over and retry" (transport).
// Every answer has a byte ceiling and a time budget (budget.ts); an answer
// over either is cut off and its connection closed. Redirects are followed
// here, hop by hop (response.ts: redirectTarget), as part of the same origin.

import { readFileSync } from 'node:fs';
import * as tls from 'node:tls';
import type { Dispatcher } from 'undici';
import { AbortedError, BrokenError, errnoCode, UsageError } from '../errors.ts';
import { AnswerClock, type TimeBudget, tickMs, timeBudget } from './budget.ts';
import {
  declaredSizeError,
  DROP_MAX,
  endError,
  isRedirect,
  overrunError,
  preallocate,
  READ_MAX_BYTES,
  Redirected,
  redirectTarget,
  statusError,
} from './response.ts';
import type { ReadOptions, StoreReader } from './store.ts';
import { anyProxy, proxyFor, type ProxySetting } from './proxy.ts';
import { redactUrl } from './auth.ts';

export interface HttpOriginOptions {
  /** Keep-alive connections to this origin (default 8). */
  connections?: number;
  /**
   * HTTP/1.1 requests sent ahead on each connection before the first answer
   * (default 1). Block objects are small: pipelining them cuts the cost per
   * request severalfold.
   */
  pipelining?: number;
  /** Time to wait for a connection (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Longest wait for the response head from when the request is written; bytes do not extend it (default 20000 ms). */
  headersTimeoutMs?: number;
  /** Longest pause between body chunks before the response counts as stalled (default 10000 ms). */
  bodyTimeoutMs?: number;
  /** After graceMs, a body must bring this many bytes a second (default 1024). */
  minBytesPerSec?: number;
  /** Time after a head in which its body may be slow, and the window the rate is measured over (default 10000 ms). */
  graceMs?: number;
  /** HTTP proxy for every request, or rules per scheme and host (plain HTTP is forwarded, not tunnelled, so caching proxies cache). */
  proxy?: ProxySetting | undefined;
  /** Authorization header sent with requests to this origin only (not to a redirect's other origin). */
  authorization?: string | undefined;
  /** A dispatcher to share (tests, the fetcher); overrides connections/proxy. */
  dispatcher?: Dispatcher | Promise<Dispatcher>;
  /** Custom DNS lookup for the connector (the init pins resolved addresses). */
  lookup?: import('node:net').LookupFunction;
}

/** Normalises a mirror base URL: must be http(s), ends with exactly one '/'. */
export function normalizeBaseUrl(text: string, what: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    if (/^https?:\/\//i.test(text)) throw new UsageError(`${what} is not a valid URL: got '${redactUrl(text)}' (check its host name and port)`);
    throw new UsageError(`${what} must be an http:// or https:// URL: got '${redactUrl(text)}'`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new UsageError(`${what} must be an http:// or https:// URL: got '${redactUrl(text)}'`);
  }
  if (u.search || u.hash) throw new UsageError(`${what} must not have a query or fragment: got '${redactUrl(text)}'`);
  u.pathname = u.pathname.replace(/\/*$/, '/');
  return u.toString();
}

/**
 * undici's dispatcher for these options. undici is loaded on first use: it
 * is half of each bundle, and the init and its block reader (plain-HTTP
 * mirrors, no proxy) never need it, so they start without evaluating it.
 */
export async function makeDispatcher(options: HttpOriginOptions = {}): Promise<Dispatcher> {
  if (options.dispatcher) return options.dispatcher;
  const { Agent, buildConnector, Dispatcher, ProxyAgent } = await import('undici');
  const connect = {
    timeout: options.connectTimeoutMs ?? 5000,
    ...(options.lookup ? { lookup: options.lookup } : {}),
  };
  const common = {
    connections: options.connections ?? 8,
    pipelining: options.pipelining ?? 1,
    keepAliveTimeout: 30_000,
    headersTimeout: options.headersTimeoutMs ?? 20_000,
    bodyTimeout: options.bodyTimeoutMs ?? 10_000,
    connect,
  };
  const proxied = (uri: string) => {
    trustMachineCAs(); // which connections will be TLS (to the proxy, or tunnelled through it) is not known here
    return new ProxyAgent({ uri, ...common, proxyTls: connect, requestTls: connect });
  };
  const rules = options.proxy;
  if (typeof rules === 'string' && rules) return proxied(rules);
  const base = buildConnector(connect);
  const direct = new Agent({
    ...common,
    connect: (o, cb) => {
      if (o.protocol === 'https:') trustMachineCAs(); // read the bundle only once TLS is needed
      base(o, (err, socket) => {
        if (socket) coalesceWrites(socket);
        cb(err as Error, socket as never);
      });
    },
  });
  if (!rules || !anyProxy(rules)) return direct;
  // Per-scheme proxies and no_proxy: each request goes to the direct agent or its proxy's.
  const agents = new Map<string, Dispatcher>();
  const pick = (origin: string): Dispatcher => {
    const p = proxyFor(origin, rules);
    if (!p) return direct;
    let a = agents.get(p);
    if (!a) agents.set(p, (a = proxied(p)));
    return a;
  };
  const all = () => [direct, ...agents.values()];
  class ProxyRouter extends Dispatcher {
    override dispatch(o: Dispatcher.DispatchOptions, h: Dispatcher.DispatchHandler): boolean {
      return pick(String(o.origin)).dispatch(o, h);
    }
    override close(): Promise<void>;
    override close(cb: () => void): void;
    override close(cb?: () => void): Promise<void> | void {
      const p = Promise.all(all().map((d) => d.close())).then(() => {});
      if (!cb) return p;
      void p.then(cb, cb);
    }
    override destroy(): Promise<void>;
    override destroy(e: Error | null): Promise<void>;
    override destroy(cb: () => void): void;
    override destroy(e: Error | null, cb: () => void): void;
    override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
      const e = typeof a === 'function' ? null : (a ?? null);
      const cb = typeof a === 'function' ? a : b;
      const p = Promise.all(all().map((d) => d.destroy(e))).then(() => {});
      if (!cb) return p;
      void p.then(cb, cb);
    }
  }
  return new ProxyRouter();
}

/**
 * Makes a socket send everything written to it in one turn of the event
 * loop with one system call: the first write corks it, a tick later it is
 * uncorked. undici writes each request on its own; when a read brings in
 * several pipelined answers, their next requests then leave together.
 */
export function coalesceWrites(s: import('node:net').Socket): void {
  const write = s.write;
  let corked = false;
  const uncork = () => {
    corked = false;
    s.uncork();
  };
  s.write = function (this: unknown, ...args: unknown[]) {
    if (!corked) {
      corked = true;
      s.cork();
      process.nextTick(uncork);
    }
    return (write as (...a: unknown[]) => boolean).apply(s, args);
  } as typeof s.write;
}


/** An answer in flight, looked at on the origin's tick: over its time budget, `expire` ends it. */
interface Watched {
  clock: AnswerClock;
  expire: (why: string) => void;
}

export class HttpOrigin implements StoreReader {
  readonly location: string;
  /** The origin the authorization (if any) is sent to. */
  private readonly origin: string;
  private readonly dispatcher: Promise<Dispatcher>;
  private readonly ownDispatcher: boolean;
  private readonly options: HttpOriginOptions;
  private readonly budget: TimeBudget;
  private readonly live = new Set<Watched>();
  private tick: NodeJS.Timeout | undefined;

  constructor(baseUrl: string, options: HttpOriginOptions = {}) {
    this.location = normalizeBaseUrl(baseUrl, 'store URL');
    this.origin = new URL(this.location).origin;
    this.options = options;
    this.budget = timeBudget({
      ...(options.headersTimeoutMs !== undefined ? { headTimeoutMs: options.headersTimeoutMs } : {}),
      ...(options.minBytesPerSec !== undefined ? { minBytesPerSec: options.minBytesPerSec } : {}),
      ...(options.graceMs !== undefined ? { graceMs: options.graceMs } : {}),
    });
    this.dispatcher = makeDispatcher(options);
    this.dispatcher.catch(() => {}); // reported by read()
    this.ownDispatcher = !options.dispatcher;
  }

  url(rel: string): string {
    return new URL(rel, this.location).toString();
  }

  /**
   * GETs one file. Speaks undici's dispatcher interface directly rather than
   * through `request()`: no body stream per response, the chunks are copied
   * once into a buffer of their own (less than half the CPU of `request()`).
   */
  async read(rel: string, options: ReadOptions = {}): Promise<Buffer> {
    const dispatcher = await this.dispatcher;
    let u = new URL(rel, this.location); // parsed once: the request's origin and path, and `url` for messages
    let chain = options.redirects ?? [];
    for (;;) {
      try {
        return await this.readWith(dispatcher, u, options);
      } catch (e) {
        if (!(e instanceof Redirected)) throw e;
        chain = [...chain, u.href];
        const to = redirectTarget(this.location, chain, e);
        if (!(to instanceof URL)) throw to;
        u = to;
      }
    }
  }

  private watch(w: Watched): void {
    this.live.add(w);
    this.tick ??= setInterval(() => {
      const now = performance.now();
      for (const x of this.live) {
        const why = x.clock.overdue(now);
        if (why) x.expire(why);
      }
      if (this.live.size === 0) {
        clearInterval(this.tick);
        this.tick = undefined;
      }
    }, tickMs(this.budget)).unref();
  }

  private readWith(dispatcher: Dispatcher, u: URL, options: ReadOptions): Promise<Buffer> {
    const url = u.href;
    const { signal, expectedSize, timing } = options;
    const maxBytes = options.maxBytes ?? (expectedSize === undefined ? READ_MAX_BYTES : undefined);
    // A buffer of its own by default (never a slice of a shared pool): it may be transferred to a worker thread.
    const alloc = options.alloc ?? Buffer.allocUnsafeSlow;
    if (signal?.aborted) return Promise.reject(transportError(this.location, url, signal.reason, signal));
    const location = this.location;
    return new Promise<Buffer>((resolve, reject) => {
      const t0 = performance.now();
      let t1 = t0;
      let controller: Dispatcher.DispatchController | undefined;
      let settled = false;
      let declared: number | undefined;
      /** The body, when its length was declared up front; else the chunks, joined at the end. */
      let body: Buffer | undefined;
      const chunks: Buffer[] = [];
      let received = 0;
      /** The most bytes of an answer read once settled (an error page, a redirect): more aborts it. */
      const dropLimit = DROP_MAX;
      const onAbort = () => {
        const e = transportError(location, url, signal!.reason, signal);
        controller?.abort(e);
        done(e);
      };
      const watched: Watched = {
        clock: new AnswerClock(this.budget),
        expire: (why) => {
          const e = new BrokenError(location, `${url}: ${why}`);
          this.live.delete(watched);
          done(e);
          controller?.abort(e);
        },
      };
      const done = (v: Buffer | Error) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        if (v instanceof Error) reject(v);
        else resolve(v);
      };
      const live = this.live;
      /** Ends the exchange early with an error (the connection is dropped). */
      const fail = (c: Dispatcher.DispatchController, e: Error) => {
        done(e);
        c.abort(e);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        dispatcher.dispatch(
          {
            origin: u.origin,
            path: u.pathname + u.search,
            method: 'GET',
            // Not "blocking" (undici's default for GET): a request may go out on a connection before
            // the answers ahead of it have their headers, so `pipelining` really pipelines. Cancelling
            // one (a hedge's loser) resets its connection; undici sends the requests behind it again.
            blocking: false,
            headers: {
              ...(options.fresh ? { 'cache-control': 'no-cache' } : {}),
              ...(this.options.authorization && u.origin === this.origin ? { authorization: this.options.authorization } : {}),
            },
            headersTimeout: 2 * this.budget.headTimeoutMs, // a backstop: the budget (which bytes do not extend) ends a slow head first
            bodyTimeout: this.options.bodyTimeoutMs ?? 10_000,
          },
          {
            onRequestStart: (c) => {
              controller = c;
              if (settled) return c.abort(new AbortedError(`${url}: cancelled`)); // aborted while queued
              watched.clock.due(performance.now()); // the request is being written
              this.watch(watched);
            },
            onResponseStart(c, statusCode, headers) {
              t1 = performance.now();
              const cl = headers['content-length'];
              if (typeof cl === 'string') declared = Number(cl);
              watched.clock.head(t1, declared ?? expectedSize ?? maxBytes);
              // An error answer or a redirect: its (small) body is read and dropped, so the connection stays open.
              const where = headers['location'];
              const status = isRedirect(statusCode) ? new Redirected(statusCode, Array.isArray(where) ? where[0] : where) : statusError(location, url, statusCode);
              if (status) {
                done(status);
                if (declared !== undefined && declared > dropLimit) c.abort(status);
                return;
              }
              const wrong = declaredSizeError(location, url, declared, expectedSize, maxBytes);
              if (wrong) return fail(c, wrong);
              if (preallocate(declared, expectedSize)) body = alloc(declared);
            },
            onResponseData(c, chunk) {
              watched.clock.data(chunk.length);
              received += chunk.length;
              if (settled) {
                // An error answer's body, or one already given up on: read and dropped, up to a point.
                if (received > dropLimit) c.abort(new AbortedError(`${url}: answer not read`));
                return;
              }
              const over = overrunError(location, url, received, expectedSize, maxBytes);
              if (over) return fail(c, over);
              if (body) {
                if (received > body.length) return fail(c, new BrokenError(location, `${url}: more than the ${body.length} bytes declared`));
                chunk.copy(body, received - chunk.length);
              } else chunks.push(chunk);
            },
            onResponseEnd() {
              live.delete(watched);
              if (settled) return;
              const bad = endError(location, url, received, declared, expectedSize);
              if (bad) return done(bad);
              if (timing) {
                timing.ttfbMs = t1 - t0;
                timing.bodyMs = performance.now() - t1;
              }
              if (!body) {
                body = alloc(received);
                let at = 0;
                for (const ch of chunks) at += ch.copy(body, at);
              }
              done(body);
            },
            onResponseError(_c, e) {
              live.delete(watched);
              done(transportError(location, url, e, signal));
            },
          },
        );
      } catch (e) {
        done(transportError(location, url, e, signal));
      }
    });
  }

  async close(): Promise<void> {
    if (this.ownDispatcher) await (await this.dispatcher).close().catch(() => {});
  }
}

/** Maps undici/socket errors to AbortedError or BrokenError. */
export function transportError(source: string, url: string, e: unknown, signal?: AbortSignal): Error {
  if (signal?.aborted) return new AbortedError(`${url}: cancelled`, { cause: e });
  const code = errnoCode(e);
  const msg = e instanceof Error ? e.message : String(e);
  const tls = tlsProblem(code, msg);
  return new BrokenError(source, `${url}: ${tls ?? `${code ? `${code}: ` : ''}${msg}`}`, { cause: e });
}

/** The CA bundle Debian keeps (and the one hfk mkinitrd packs into the initramfs, at the same path). */
export const MACHINE_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

let machineCAsTrusted = false;

/**
 * Makes TLS trust this machine's CA bundle as well as Node's own copy of
 * Mozilla's roots: an HTTPS mirror signed by a CA the machine trusts (one
 * added with update-ca-certificates, say) then verifies, as it does for
 * curl or apt, and a boot trusts the bundle hfk mkinitrd packed.
 * SSL_CERT_FILE names another bundle. Once per thread, before the first
 * TLS connection; a missing or unreadable bundle changes nothing. Returns
 * how many certificates were added.
 */
export function trustMachineCAs(env: NodeJS.ProcessEnv = process.env): number {
  if (machineCAsTrusted) return 0;
  machineCAsTrusted = true;
  let pem: string;
  try {
    pem = readFileSync(env.SSL_CERT_FILE || MACHINE_CA_BUNDLE, 'utf8');
  } catch {
    return 0;
  }
  const have = tls.getCACertificates('default');
  const known = new Set(have.map((c) => c.replace(/\s+/g, '')));
  const extra = (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).filter((c) => !known.has(c.replace(/\s+/g, '')));
  if (extra.length === 0) return 0;
  try {
    tls.setDefaultCACertificates([...have, ...extra]);
  } catch {
    return 0; // a bundle with a damaged certificate: keep Node's roots as they are
  }
  return extra.length;
}

/**
 * Whether undici carries the requests to a mirror: HTTPS, or any mirror
 * behind a proxy. Plain HTTP without a proxy goes through hfk's own client
 * (h1.ts). Origins (src/source/origin.ts) picks each client by this.
 */
export function viaUndici(url: string, proxy?: ProxySetting): boolean {
  return !/^http:/i.test(url) || proxyFor(url, proxy) !== undefined;
}

/**
 * Loads undici and the machine's CA bundle before the first request needs
 * them, when one of `urls` (the mirrors) is https:// or a proxy is set:
 * then undici carries the requests, and TLS may be spoken. Plain-HTTP
 * mirrors without a proxy go through hfk's own client (h1.ts) and need
 * neither: then nothing is loaded and false is returned.
 *
 * The init calls it while the network comes up, so that on a slow (emulated)
 * CPU the loading does not count against the mirror ranking's deadline.
 */
export async function preloadHttpClient(urls: readonly string[], proxy?: ProxySetting): Promise<boolean> {
  if (!urls.some((u) => viaUndici(u, proxy))) return false;
  await import('undici');
  trustMachineCAs();
  return true;
}

/** Certificate checks that fail for a mirror whose certificate is not signed by a CA this machine trusts. */
const UNTRUSTED_CA_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_UNTRUSTED',
]);
/** A certificate outside its dates: the mirror's to renew, or this machine's clock (a boot may have no RTC set). */
const CERT_DATE_CODES = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);

/**
 * A TLS failure in one line that says what to do, or undefined for other
 * errors. OpenSSL's own text is a line of internals (a thread id, an error
 * number, the source file of the check and a newline); only its reason is kept.
 */
export function tlsProblem(code: string | undefined, message: string): string | undefined {
  if (code && CERT_DATE_CODES.has(code)) {
    return `TLS: ${message.trim()} (${code}); check the mirror's certificate dates and this machine's clock (now ${new Date().toISOString()})`;
  }
  // Node's text names the host and the names the certificate carries: enough to act on.
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `TLS: ${message.trim()} (${code}); give the mirror by a name its certificate carries`;
  if (code && UNTRUSTED_CA_CODES.has(code)) {
    // Node's own advice (--use-system-ca) is already taken: trustMachineCAs adds the machine's bundle.
    const what = message.replace(/;?\s*if the root CA is installed locally, try running Node\.js with --use-system-ca\.?/, '').trim();
    return `TLS: ${what} (${code}); add the CA that signed the mirror's certificate to this machine's CA bundle (update-ca-certificates; SSL_CERT_FILE=FILE names another bundle; a boot checks against the bundle hfk mkinitrd packed, --ca-certs), or use http:// (manifests and blocks are checked against the publisher's key either way)`;
  }
  if (!code?.startsWith('ERR_SSL_') && !/:error:[0-9A-F]+:SSL routines:/.test(message)) return undefined;
  // "40ED42EDC97F0000:error:0A00010B:SSL routines:tls_validate_record_header:wrong version number:../ssl/record/methods/tlsany_meth.c:77:"
  const reason = /:error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):/.exec(message)?.[1]?.trim() ?? message.trim().split('\n')[0]!;
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG' || /wrong version number|packet length too long|http request/.test(reason)) {
    return `TLS: ${reason} (${code ?? 'SSL'}): the server does not speak TLS on this port; if it is a plain HTTP server, give the mirror as http://`;
  }
  return `TLS: ${reason} (${code ?? 'SSL'})`;
}
