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
// - Answers are classified as the other store readers do: 404/410 →
//   MissingError, wrong size → InvalidError, anything else that fails
//   (refused, reset, cut short, stalled, 5xx) → BrokenError.
// - Cancelling a request (a hedge's loser) does not disturb the connection:
//   its answer is read and dropped when it comes.
// - Requests written on a connection the server then closes without
//   answering them (keep-alive ran out, `Connection: close`) are sent again
//   once on another connection; GETs of immutable files are safe to repeat.
// - Requests made in one turn of the event loop leave in one write.

import * as net from 'node:net';
import { AbortedError, BrokenError, errnoCode, UsageError } from '../errors.ts';
import { declaredSizeError, endError, overrunError, preallocate, statusError } from './response.ts';
import { type ResponseHead, ResponseParser } from './h1parse.ts';
import type { ReadOptions, RequestTiming, StoreReader } from './store.ts';

export interface H1Options {
  /** Keep-alive connections to the origin (default 4). */
  connections?: number;
  /** Requests in flight on each connection (default 8). */
  pipelining?: number;
  /** Time to wait for a connection (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Longest wait for a response's head once the answers ahead of it are in (default 10000 ms). */
  headersTimeoutMs?: number;
  /** Longest pause within a body (default 10000 ms). */
  bodyTimeoutMs?: number;
  /** An idle connection is closed after this long (default 30000 ms). */
  idleTimeoutMs?: number;
  /** Custom DNS lookup (the init pins resolved addresses). */
  lookup?: net.LookupFunction;
}

/** How often stalled connections are looked for. */
const WATCH_MS = 250;
/** Paths written into the request as they are (anything else goes through URL encoding). */
const PLAIN_PATH = /^[A-Za-z0-9._~/-]+$/;

interface Exchange {
  path: string;
  url: string;
  fresh: boolean;
  expectedSize: number | undefined;
  maxBytes: number | undefined;
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
    this.sent.push(ex);
    this.outbox += `GET ${ex.path} HTTP/1.1\r\nHost: ${this.pool.host}\r\nUser-Agent: hfk\r\n${ex.fresh ? 'Cache-Control: no-cache\r\nPragma: no-cache\r\n' : ''}\r\n`;
    if (this.sent.length === 1) this.lastActivity = performance.now();
  }

  flush(now: number): void {
    if (!this.outbox || this.dead) return;
    for (let i = this.sent.length - 1; i >= 0 && this.sent[i]!.t0 === 0; i--) this.sent[i]!.t0 = now;
    this.socket.ref();
    this.socket.write(this.outbox, 'latin1');
    this.outbox = '';
  }

  destroy(e: Error): void {
    this.error ??= e;
    this.reusable = false;
    this.socket.destroy();
  }

  private onRead(buf: Buffer, n: number): void {
    this.lastActivity = performance.now();
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
    if (h.close) this.reusable = false;
    if (ex.settled) return; // cancelled: its body is read and dropped
    const origin = this.pool.origin;
    const declared = h.contentLength;
    ex.declared = declared;
    const bad = statusError(origin, ex.url, h.status) ?? declaredSizeError(origin, ex.url, declared, ex.expectedSize, ex.maxBytes);
    if (bad) return this.pool.settle(ex, bad);
    if (preallocate(declared, ex.expectedSize)) ex.body = ex.alloc(declared);
  }

  private onData(buf: Buffer, start: number, end: number): void {
    const ex = this.sent[0];
    if (!ex || ex.settled) return;
    const n = end - start;
    ex.received += n;
    const over = overrunError(this.pool.origin, ex.url, ex.received, ex.expectedSize, ex.maxBytes);
    if (over) return this.pool.settle(ex, over);
    if (ex.body) buf.copy(ex.body, ex.received - n, start, end);
    else ex.chunks.push(Buffer.from(buf.subarray(start, end))); // the read buffer is reused
  }

  private onEnd(): void {
    const ex = this.sent.shift()!;
    this.answered++;
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
      if (!ex.headSeen && !ex.resent && this.answered > 0 && !(ours && i === 0)) {
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
  readonly options: Required<Omit<H1Options, 'lookup'>> & Pick<H1Options, 'lookup'>;
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
      headersTimeoutMs: options.headersTimeoutMs ?? 10_000,
      bodyTimeoutMs: options.bodyTimeoutMs ?? 10_000,
      idleTimeoutMs: options.idleTimeoutMs ?? 30_000,
      lookup: options.lookup,
    };
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
    if (this.live > 0 && !this.watch) this.watch = setInterval(() => this.check(), WATCH_MS).unref();
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

  /** Connections that stall (no byte for the timeout) are ended; idle ones closed after idleTimeoutMs. */
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
      if (!head.headSeen && quiet > o.headersTimeoutMs) c.destroy(new Error(`no answer within ${o.headersTimeoutMs} ms`));
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

  constructor(baseUrl: string, options: H1Options = {}) {
    const u = new URL(baseUrl);
    if (u.protocol !== 'http:') throw new UsageError(`the block client speaks plain HTTP only: got '${baseUrl}' (HTTPS goes through HttpOrigin)`);
    u.pathname = u.pathname.replace(/\/*$/, '/');
    this.base = u;
    this.location = u.toString();
    this.pool = new H1Pool(this.location, u, options);
  }

  read(rel: string, options: ReadOptions = {}): Promise<Buffer> {
    const path = PLAIN_PATH.test(rel) && !rel.startsWith('/') && !rel.includes('..') ? this.base.pathname + rel : pathAndQuery(new URL(rel, this.base));
    const url = `${this.base.origin}${path}`;
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(new AbortedError(`${url}: cancelled`, { cause: signal.reason }));
    if (this.pool.isClosed) return Promise.reject(new AbortedError(`${url}: the connection pool is closed`));
    return new Promise<Buffer>((resolve, reject) => {
      const ex: Exchange = {
        path,
        url,
        fresh: options.fresh ?? false,
        expectedSize: options.expectedSize,
        maxBytes: options.maxBytes,
        alloc: options.alloc ?? Buffer.allocUnsafeSlow,
        resolve,
        reject,
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
        ex.onAbort = () => this.pool.settle(ex, new AbortedError(`${url}: cancelled`, { cause: signal.reason }));
        signal.addEventListener('abort', ex.onAbort, { once: true });
      }
      this.pool.add(ex);
    });
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/** The request target of a URL: its path and its query (a mirror list's URL may carry one). */
function pathAndQuery(u: URL): string {
  return u.pathname + u.search;
}
