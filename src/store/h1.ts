// A small HTTP/1.1 client for one thing: GET of many small, immutable files
// from one plain-HTTP origin, pipelined on a few keep-alive connections.
// The fetcher reads every block object through it (HTTPS origins and
// proxies go through undici, src/store/http.ts).
//
// Why not undici here: a block costs the reader one request, and on a small
// or emulated machine the request's CPU is most of what a block costs (a
// fraction of undici's per object: docs/PERFORMANCE.md). Each socket read
// lands in one reused buffer (net's `onread`, no streams), the parser
// (h1parse.ts) works on slices of it, and the body is copied once.
//
// Behaviour the fetcher relies on:
// - Answers are classified as the other store readers do: 404/410/403 →
//   MissingError, wrong size → InvalidError, anything else that fails
//   (refused, reset, cut short, stalled, too slow, 5xx) → BrokenError.
// - Every answer has a byte ceiling and a time budget (budget.ts): a head
//   that does not come in time, a body slower than the minimum rate, a
//   declared or counted size over the limit close the connection at once;
//   nothing over a limit is drained.
// - Cancelling a request that waits behind others (a hedge's loser) does not
//   disturb the connection: its answer is read and dropped when it comes.
//   Cancelling the one being answered closes the connection; the requests
//   behind it are sent again elsewhere.
// - Redirects are followed (response.ts: redirectTarget). A hop to another
//   host gets a pool of its own, a few kept per origin, so that
//   redirector-style mirror networks keep their pipelining without undici;
//   a hop to https goes to `elsewhere` (undici, given by Origins).
// - Requests written on a connection the server then closes without
//   answering them (keep-alive ran out, `Connection: close`) are sent again
//   once on another connection; GETs of immutable files are safe to repeat.
// - Requests made in one turn of the event loop leave in one write.

import * as net from 'node:net';
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
import { type ResponseHead, ResponseParser } from './h1parse.ts';
import type { ReadOptions, RequestTiming, StoreReader } from './store.ts';

export interface H1Options {
  /** Keep-alive connections to the origin (default 4). */
  connections?: number;
  /** Requests in flight on each connection (default 8). */
  pipelining?: number;
  /** Time to wait for a connection (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Longest wait for a response's head once the answers ahead of it are in; bytes do not extend it (default 20000 ms). */
  headersTimeoutMs?: number;
  /** Longest pause within a body (default 10000 ms). */
  bodyTimeoutMs?: number;
  /** After graceMs, a body must bring this many bytes a second (default 1024). */
  minBytesPerSec?: number;
  /** Time after a head in which its body may be slow, and the window the rate is measured over (default 10000 ms). */
  graceMs?: number;
  /** Reads a URL this client cannot (a redirect to https); without it such a redirect fails. */
  elsewhere?: ((url: string, options: ReadOptions) => Promise<Buffer>) | undefined;
  /** An idle connection is closed after this long (default 30000 ms). */
  idleTimeoutMs?: number;
  /** Custom DNS lookup (the init pins resolved addresses). */
  lookup?: net.LookupFunction;
  /** Authorization header sent to this origin only (not to a redirect's other host). */
  authorization?: string | undefined;
  /** Whether a redirect's target goes through a proxy: then `elsewhere` (undici) reads it. */
  proxied?: ((url: URL) => boolean) | undefined;
}

/** Pools kept for the other hosts redirects lead to. */
const REDIRECT_POOLS = 4;
/** Paths written into the request as they are (anything else goes through URL encoding). */
const PLAIN_PATH = /^[A-Za-z0-9._~/-]+$/;

interface Exchange {
  path: string;
  url: string;
  fresh: boolean;
  expectedSize: number | undefined;
  maxBytes: number | undefined;
  /** The most bytes of its answer read once it is settled (cancelled, an error); more closes the connection. */
  dropLimit: number;
  clock: AnswerClock;
  /** The connection it was sent on. */
  conn: Connection | undefined;
  alloc: (size: number) => Buffer;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
  settled: boolean;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  timing: RequestTiming | undefined;
  /** Sent again after its connection closed unanswered. */
  resent: boolean;
  /** Waiting in the pool for room on a connection. */
  queued: boolean;
  t0: number;
  t1: number;
  headSeen: boolean;
  declared: number | undefined;
  body: Buffer | undefined;
  chunks: Buffer[];
  received: number;
}

class Connection {
  readonly sent: Exchange[] = [];
  readonly socket: net.Socket;
  private readonly parser: ResponseParser;
  private outbox = '';
  private readonly pool: H1Pool;
  connected = false;
  /** False once the server said it closes, or the connection failed. */
  reusable = true;
  dead = false;
  answered = 0;
  lastActivity: number;
  error: Error | undefined;
  /** Bytes read since the last head or end of an answer: a head trickled in, when no head has come. */
  headBytes = 0;
  /** Closed because of the answer being read alone: the requests behind it are sent again. */
  private behindAgain = false;

  constructor(pool: H1Pool) {
    this.pool = pool;
    this.lastActivity = performance.now();
    this.parser = new ResponseParser({
      onHead: (h) => this.onHead(h),
      onData: (b, s, e) => this.onData(b, s, e),
      onEnd: () => this.onEnd(),
    });
    this.socket = net.connect({
      host: pool.hostname,
      port: pool.port,
      ...(pool.options.lookup ? { lookup: pool.options.lookup } : {}),
      onread: {
        buffer: pool.readBuffer,
        callback: (n: number, buf: Buffer) => {
          this.onRead(buf, n);
          return true;
        },
      },
    } as net.NetConnectOpts);
    this.socket.setNoDelay(true);
    this.socket.on('connect', () => {
      this.connected = true;
      this.lastActivity = performance.now();
    });
    this.socket.on('error', (e) => (this.error ??= e));
    this.socket.on('end', () => (this.reusable = false));
    this.socket.on('close', () => this.onClose());
  }

  get load(): number {
    return this.sent.length;
  }

  /** Queues a request; it leaves with the others of this turn (flush). */
  send(ex: Exchange): void {
    ex.conn = this;
    this.sent.push(ex);
    this.outbox += `GET ${ex.path} HTTP/1.1\r\nHost: ${this.pool.host}\r\nUser-Agent: hfk\r\n${this.pool.auth}${ex.fresh ? 'Cache-Control: no-cache\r\nPragma: no-cache\r\n' : ''}\r\n`;
    if (this.sent.length === 1) this.lastActivity = performance.now();
  }

  flush(now: number): void {
    if (!this.outbox || this.dead) return;
    for (let i = this.sent.length - 1; i >= 0 && this.sent[i]!.t0 === 0; i--) {
      this.sent[i]!.t0 = now;
      if (i === 0) this.sent[0]!.clock.due(now); // the others are due once the answers ahead of them are in
    }
    this.socket.ref();
    this.socket.write(this.outbox, 'latin1');
    this.outbox = '';
  }

  destroy(e: Error): void {
    this.error ??= e;
    this.reusable = false;
    this.parser.halt(); // whatever else came is not read
    this.socket.destroy();
  }

  /** Closes the connection over the answer being read (settled already), never draining it; the requests behind it go elsewhere. */
  drop(why: string): void {
    this.behindAgain = true;
    this.destroy(new Error(why));
  }

  /** The answer being read is over its time budget: it fails with `why`, and the connection is closed. */
  expire(ex: Exchange, why: string): void {
    this.pool.settle(ex, new BrokenError(this.pool.origin, `${ex.url}: ${why}`));
    this.destroy(new Error(why));
  }

  private onRead(buf: Buffer, n: number): void {
    this.lastActivity = performance.now();
    this.headBytes += n;
    try {
      this.parser.feed(buf, 0, n);
    } catch (e) {
      this.destroy(new Error(`not an HTTP/1.1 answer: ${(e as Error).message}`));
    }
  }

  private onHead(h: ResponseHead): void {
    const ex = this.sent[0];
    if (!ex) return this.destroy(new Error('an answer to no request'));
    ex.headSeen = true;
    ex.t1 = performance.now();
    this.headBytes = 0;
    if (h.close) this.reusable = false;
    const declared = h.contentLength;
    ex.declared = declared;
    if (!ex.settled) {
      const origin = this.pool.origin;
      const bad = isRedirect(h.status)
        ? new Redirected(h.status, h.location)
        : (statusError(origin, ex.url, h.status) ?? declaredSizeError(origin, ex.url, declared, ex.expectedSize, ex.maxBytes));
      if (bad) {
        ex.dropLimit = DROP_MAX; // an error page's body is small, or not worth reading
        this.pool.settle(ex, bad);
      } else if (preallocate(declared, ex.expectedSize)) ex.body = ex.alloc(declared);
    }
    // A settled answer's body is read and dropped, unless it says it is larger than that is worth.
    if (ex.settled && declared !== undefined && declared > ex.dropLimit) return this.drop(`an answer of ${declared} bytes not read`);
    ex.clock.head(ex.t1, declared ?? (ex.settled ? ex.dropLimit : (ex.expectedSize ?? ex.maxBytes)));
  }

  private onData(buf: Buffer, start: number, end: number): void {
    const ex = this.sent[0];
    if (!ex) return;
    const n = end - start;
    ex.received += n;
    ex.clock.data(n);
    if (ex.settled) {
      if (ex.received > ex.dropLimit) this.drop(`more than ${ex.dropLimit} bytes of an answer not read`);
      return;
    }
    const over = overrunError(this.pool.origin, ex.url, ex.received, ex.expectedSize, ex.maxBytes);
    if (over) {
      this.pool.settle(ex, over);
      return this.drop(over.message);
    }
    if (ex.body) buf.copy(ex.body, ex.received - n, start, end);
    else ex.chunks.push(Buffer.from(buf.subarray(start, end))); // the read buffer is reused
  }

  private onEnd(): void {
    const ex = this.sent.shift()!;
    this.answered++;
    this.headBytes = 0;
    const next = this.sent[0];
    if (next && next.t0 !== 0) next.clock.due(performance.now());
    if (!ex.settled) {
      const bad = endError(this.pool.origin, ex.url, ex.received, ex.declared, ex.expectedSize);
      if (bad) this.pool.settle(ex, bad);
      else {
        if (ex.timing) {
          ex.timing.ttfbMs = ex.t1 - ex.t0;
          ex.timing.bodyMs = performance.now() - ex.t1;
        }
        let body = ex.body;
        if (!body) {
          body = ex.alloc(ex.received);
          let at = 0;
          for (const c of ex.chunks) at += c.copy(body, at);
        }
        this.pool.settle(ex, body);
      }
    }
    if (!this.reusable) {
      // The server said it closes after this answer: what was sent behind it is never answered,
      // so end the connection now (the close sends those requests again elsewhere).
      if (this.sent.length === 0) this.socket.end();
      else this.socket.destroy();
    } else if (this.sent.length === 0) this.socket.unref(); // an idle keep-alive connection does not keep a process alive
    this.pool.pump();
  }

  private onClose(): void {
    this.dead = true;
    this.reusable = false;
    try {
      if (this.error === undefined) this.parser.eof(); // completes a body that runs until the close (a clean one: not a reset, not our timeout)
    } catch {
      // cut short: said below
    }
    const why = this.error ? `${errnoCode(this.error) ? `${errnoCode(this.error)}: ` : ''}${this.error.message}` : 'the server closed the connection';
    const unanswered = this.sent.splice(0);
    // We ended it (no answer in time, bytes that are not HTTP): that is about the first request, not to be sent again.
    const ours = this.error !== undefined && errnoCode(this.error) === undefined;
    const again: Exchange[] = [];
    for (const [i, ex] of unanswered.entries()) {
      if (ex.settled) continue;
      // Never started, on a connection that had worked: the server ended it (keep-alive ran out,
      // Connection: close, an idle close racing our write). Send it again, once.
      if (!ex.headSeen && !ex.resent && (this.answered > 0 || this.behindAgain) && !(ours && i === 0)) {
        ex.resent = true;
        ex.t0 = 0;
        again.push(ex);
      } else {
        const what = ex.headSeen ? `answer cut short after ${ex.received} bytes (${why})` : why;
        this.pool.settle(ex, new BrokenError(this.pool.origin, `${ex.url}: ${what}`, this.error ? { cause: this.error } : {}));
      }
    }
    this.pool.requeue(again);
    this.pool.dropped(this);
  }
}

/** The connections to one origin and the requests waiting for room on them. */
class H1Pool {
  readonly origin: string;
  readonly host: string;
  readonly hostname: string;
  readonly port: number;
  readonly options: Required<Omit<H1Options, 'lookup' | 'elsewhere' | 'headersTimeoutMs' | 'minBytesPerSec' | 'graceMs' | 'authorization' | 'proxied'>> & Pick<H1Options, 'lookup'>;
  readonly budget: TimeBudget;
  /** The Authorization header line sent on every request, or ''. */
  auth = '';
  /** Every socket read lands here and is consumed before the callback returns. */
  readonly readBuffer = Buffer.allocUnsafe(256 * 1024);
  private readonly conns: Connection[] = [];
  private readonly queue: Exchange[] = [];
  private flushScheduled = false;
  private watch: NodeJS.Timeout | undefined;
  private live = 0;
  private closed = false;
  private drained: (() => void) | undefined;

  constructor(origin: string, u: URL, options: H1Options) {
    this.origin = origin;
    this.host = u.host;
    this.hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    this.port = u.port ? Number(u.port) : 80;
    this.options = {
      connections: options.connections ?? 4,
      pipelining: options.pipelining ?? 8,
      connectTimeoutMs: options.connectTimeoutMs ?? 5000,
      bodyTimeoutMs: options.bodyTimeoutMs ?? 10_000,
      idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
      lookup: options.lookup,
    };
    this.budget = timeBudget({
      ...(options.headersTimeoutMs !== undefined ? { headTimeoutMs: options.headersTimeoutMs } : {}),
      ...(options.minBytesPerSec !== undefined ? { minBytesPerSec: options.minBytesPerSec } : {}),
      ...(options.graceMs !== undefined ? { graceMs: options.graceMs } : {}),
    });
    for (const k of ['connections', 'pipelining'] as const) {
      const v = this.options[k];
      if (!Number.isInteger(v) || v < 1 || v > 256) throw new UsageError(`${k} must be an integer from 1 to 256: got ${v}`);
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  add(ex: Exchange): void {
    this.live++;
    ex.queued = true;
    this.queue.push(ex);
    this.pump();
  }

  /** Puts requests back at the front of the queue, in their order. */
  requeue(list: Exchange[]): void {
    for (const ex of list) ex.queued = true;
    this.queue.unshift(...list);
  }

  /** Settles a request (once); a settled request still owns its place on the connection until its answer is read. */
  settle(ex: Exchange, v: Buffer | Error): void {
    if (ex.settled) return;
    ex.settled = true;
    if (ex.onAbort) ex.signal!.removeEventListener('abort', ex.onAbort);
    if (ex.queued) {
      ex.queued = false;
      this.queue.splice(this.queue.indexOf(ex), 1); // never sent: forget it
    }
    this.live--;
    if (v instanceof Error) ex.reject(v);
    else ex.resolve(v);
    if (this.live === 0 && this.drained) this.drained();
  }

  /** Hands waiting requests to connections with room, opening new ones up to the limit. */
  pump(): void {
    while (this.queue.length) {
      const c = this.pick();
      if (!c) break;
      const ex = this.queue.shift()!;
      ex.queued = false;
      c.send(ex);
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        process.nextTick(() => this.flush());
      }
    }
    if (this.live > 0 && !this.watch) this.watch = setInterval(() => this.check(), Math.min(tickMs(this.budget), this.options.bodyTimeoutMs / 4)).unref();
  }

  private pick(): Connection | undefined {
    let best: Connection | undefined;
    for (const c of this.conns) if (c.reusable && !c.dead && c.load < this.options.pipelining && (!best || c.load < best.load)) best = c;
    // A new connection while every open one is busy.
    if ((!best || best.load > 0) && this.conns.length < this.options.connections) {
      const c = new Connection(this);
      this.conns.push(c);
      return c;
    }
    return best;
  }

  private flush(): void {
    this.flushScheduled = false;
    const now = performance.now();
    for (const c of this.conns) c.flush(now);
  }

  dropped(c: Connection): void {
    const i = this.conns.indexOf(c);
    if (i >= 0) this.conns.splice(i, 1);
    this.pump();
  }

  /** A request cancelled while sent: the answer being read is not waited for (its connection is closed); one behind it is read and dropped. */
  cancelled(ex: Exchange): void {
    const c = ex.conn;
    if (c && !c.dead && c.sent[0] === ex) c.drop('a cancelled request');
  }

  /** Answers over their time budget, and connections that stall (no byte for bodyTimeoutMs), are ended; idle ones closed after idleTimeoutMs. */
  private check(): void {
    const now = performance.now();
    const o = this.options;
    for (const c of [...this.conns]) {
      const quiet = now - c.lastActivity;
      if (c.load === 0) {
        if (quiet > o.idleTimeoutMs) c.destroy(new Error('idle'));
        continue;
      }
      if (!c.connected) {
        if (quiet > o.connectTimeoutMs) c.destroy(new Error(`no connection within ${o.connectTimeoutMs} ms`));
        continue;
      }
      const head = c.sent[0]!;
      const why = head.clock.overdue(now, c.headBytes);
      if (why) c.expire(head, why);
      else if (head.headSeen && quiet > o.bodyTimeoutMs) c.destroy(new Error(`the answer stalled for ${o.bodyTimeoutMs} ms`));
    }
    if (this.live === 0 && this.conns.every((c) => c.load === 0) && (this.closed || this.conns.length === 0)) {
      clearInterval(this.watch);
      this.watch = undefined;
    }
  }

  /** Waits for the requests in flight, then closes the connections. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.live > 0) {
      const before = this.drained; // a close() already waiting
      await new Promise<void>((r) => (this.drained = () => (before?.(), r())));
    }
    for (const c of [...this.conns]) c.destroy(new Error('closed'));
    clearInterval(this.watch);
    this.watch = undefined;
  }
}

/**
 * One plain-HTTP origin serving a store, through the client above. Same
 * contract as HttpOrigin (src/store/http.ts).
 */
export class H1Origin implements StoreReader {
  readonly location: string;
  private readonly base: URL;
  private readonly pool: H1Pool;
  private readonly options: H1Options;
  /** Pools for the other hosts redirects lead to, least recently used first. */
  private readonly elsewhere = new Map<string, H1Pool>();

  constructor(baseUrl: string, options: H1Options = {}) {
    const u = new URL(baseUrl);
    if (u.protocol !== 'http:') throw new UsageError(`the block client speaks plain HTTP only: got '${baseUrl}' (HTTPS goes through HttpOrigin)`);
    u.pathname = u.pathname.replace(/\/*$/, '/');
    this.base = u;
    this.location = u.toString();
    this.options = options;
    this.pool = new H1Pool(this.location, u, options);
    if (options.authorization) this.pool.auth = `Authorization: ${options.authorization}\r\n`;
  }

  read(rel: string, options: ReadOptions = {}): Promise<Buffer> {
    const path = PLAIN_PATH.test(rel) && !rel.startsWith('/') && !rel.includes('..') ? this.base.pathname + rel : pathAndQuery(new URL(rel, this.base));
    return this.start(this.pool, path, `${this.base.origin}${path}`, options);
  }

  private start(pool: H1Pool, path: string, url: string, options: ReadOptions): Promise<Buffer> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(new AbortedError(`${url}: cancelled`, { cause: signal.reason }));
    if (pool.isClosed) return Promise.reject(new AbortedError(`${url}: the connection pool is closed`));
    return new Promise<Buffer>((resolve, reject) => {
      const maxBytes = options.maxBytes ?? (options.expectedSize === undefined ? READ_MAX_BYTES : undefined);
      const ex: Exchange = {
        path,
        url,
        fresh: options.fresh ?? false,
        expectedSize: options.expectedSize,
        maxBytes,
        dropLimit: Math.max(DROP_MAX, options.expectedSize ?? maxBytes ?? 0),
        clock: new AnswerClock(pool.budget),
        conn: undefined,
        alloc: options.alloc ?? Buffer.allocUnsafeSlow,
        resolve,
        reject: (e) => (e instanceof Redirected ? this.follow(url, e, options).then(resolve, reject) : reject(e)),
        settled: false,
        signal,
        onAbort: undefined,
        timing: options.timing,
        resent: false,
        queued: false,
        t0: 0,
        t1: 0,
        headSeen: false,
        declared: undefined,
        body: undefined,
        chunks: [],
        received: 0,
      };
      if (signal) {
        ex.onAbort = () => {
          pool.settle(ex, new AbortedError(`${url}: cancelled`, { cause: signal.reason }));
          pool.cancelled(ex);
        };
        signal.addEventListener('abort', ex.onAbort, { once: true });
      }
      pool.add(ex);
    });
  }

  /** The next hop of a redirected read: on this client (a pool per host), or `elsewhere` for https. */
  private follow(url: string, r: Redirected, options: ReadOptions): Promise<Buffer> {
    const chain = [...(options.redirects ?? []), url];
    const to = redirectTarget(this.location, chain, r);
    if (!(to instanceof URL)) return Promise.reject(to);
    const next = { ...options, redirects: chain };
    if (to.protocol === 'https:' || this.options.proxied?.(to)) {
      if (this.options.elsewhere) return this.options.elsewhere(to.href, next);
      return Promise.reject(new BrokenError(this.location, `${url}: redirected to ${to.href}, which this plain-HTTP client cannot follow`));
    }
    return this.start(this.poolFor(to), pathAndQuery(to), to.href, next);
  }

  private poolFor(u: URL): H1Pool {
    if (u.host === this.base.host) return this.pool;
    let p = this.elsewhere.get(u.host);
    if (p) this.elsewhere.delete(u.host); // put back as the most recently used
    else {
      p = new H1Pool(this.location, u, this.options);
      if (this.elsewhere.size >= REDIRECT_POOLS) {
        const [host, oldest] = this.elsewhere.entries().next().value!;
        this.elsewhere.delete(host);
        void oldest.close();
      }
    }
    this.elsewhere.set(u.host, p);
    return p;
  }

  async close(): Promise<void> {
    const all = [this.pool, ...this.elsewhere.values()];
    this.elsewhere.clear();
    await Promise.all(all.map((p) => p.close()));
  }
}

/** The request target of a URL: its path and its query (a mirror list's URL may carry one). */
function pathAndQuery(u: URL): string {
  return u.pathname + u.search;
}
