import { createHash } from 'node:crypto';
import { once } from 'node:events';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { AbortedError, BrokenError, InvalidError, MissingError, UsageError } from '../errors.ts';
import { H1Origin, type H1Options } from './h1.ts';
import type { RequestTiming } from './store.ts';

// Bare TCP servers on loopback that speak HTTP/1.1 by hand, so each test can
// script what a server does wrong: answer late, cut off, reset, close early.

interface Request {
  /** Which connection it came on (1, 2, ...). */
  conn: number;
  /** Its place on that connection (0, 1, ...). */
  nth: number;
  path: string;
  head: string;
}

interface RawServer {
  base: string;
  port: number;
  connections: number;
  requests: Request[];
  /** Every read of request bytes, per connection, as received. */
  reads: Map<number, string[]>;
  sockets: net.Socket[];
  close(): Promise<void>;
}

const servers: RawServer[] = [];
const origins: H1Origin[] = [];

afterEach(async () => {
  // Servers first: a test that failed half way leaves requests waiting, and close() waits for them.
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await Promise.all(origins.splice(0).map((o) => o.close()));
});

async function rawServer(answer: (req: Request, sock: net.Socket) => void): Promise<RawServer> {
  const s: RawServer = {
    base: '',
    port: 0,
    connections: 0,
    requests: [],
    reads: new Map(),
    sockets: [],
    close: async () => {
      for (const sock of s.sockets) sock.destroy();
      await new Promise((r) => server.close(r));
    },
  };
  const server = net.createServer((sock) => {
    const conn = ++s.connections;
    s.sockets.push(sock);
    s.reads.set(conn, []);
    sock.on('error', () => {}); // resets are part of some scripts
    let pending = '';
    let nth = 0;
    sock.on('data', (d) => {
      s.reads.get(conn)!.push(d.toString('latin1'));
      pending += d.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
        const head = pending.slice(0, end);
        pending = pending.slice(end + 4);
        const req = { conn, nth: nth++, path: head.split(' ')[1]!, head };
        s.requests.push(req);
        answer(req, sock);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  s.port = (server.address() as AddressInfo).port;
  s.base = `http://127.0.0.1:${s.port}/s/`;
  servers.push(s);
  return s;
}

function origin(s: RawServer, options: H1Options = {}): H1Origin {
  const o = new H1Origin(s.base, options);
  origins.push(o);
  return o;
}

/** A body of its own for every path: sizes from 0 to ~70 kB, bytes that differ. */
function bodyOf(path: string): Buffer {
  const seed = createHash('sha256').update(path).digest();
  const size = path.endsWith('/empty') ? 0 : path.endsWith('/big') ? 700_000 : seed.readUInt16BE(0);
  const out = Buffer.allocUnsafe(size);
  for (let at = 0, i = 0; at < size; i++) at += createHash('sha256').update(seed).update(String(i)).digest().copy(out, at);
  return out;
}

function ok(sock: net.Socket, body: Buffer, extra = ''): void {
  sock.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n${extra}\r\n`), body]));
}

/** Answers every request with its path's body. */
const answerAll = (req: Request, sock: net.Socket) => ok(sock, bodyOf(req.path));

function countRequests(text: string): number {
  return text.match(/^GET \/s\/\S* HTTP\/1\.1\r$/gm)?.length ?? 0;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

/** A promise and the function that resolves it. */
function signal<T = void>(): { promise: Promise<T>; fire: (v: T) => void } {
  let fire!: (v: T) => void;
  const promise = new Promise<T>((r) => (fire = r));
  return { promise, fire };
}

describe('H1Origin', () => {
  it('returns the exact bodies of many pipelined GETs, on no more connections than allowed, with their timing', async () => {
    const s = await rawServer(answerAll);
    const o = origin(s, { connections: 2, pipelining: 4 });
    const paths = [...Array.from({ length: 60 }, (_, i) => `blk/${i.toString(16).padStart(4, '0')}`), 'blk/empty', 'blk/big'];
    const timings = paths.map((): RequestTiming => ({ ttfbMs: -1, bodyMs: -1 }));
    const got = await Promise.all(paths.map((p, i) => o.read(p, { timing: timings[i]! })));
    for (let i = 0; i < paths.length; i++) expect(got[i]!.equals(bodyOf(`/s/${paths[i]}`)), paths[i]).toBe(true);
    expect(got.at(-1)!.length).toBe(700_000); // larger than a socket read: assembled from many
    expect(got.at(-2)!.length).toBe(0);
    expect(s.connections).toBe(2);
    expect(s.requests.map((r) => r.path).sort()).toEqual(paths.map((p) => `/s/${p}`).sort());
    // Pipelined: each connection's first read held as many requests as it may have in flight.
    expect([...s.reads.values()].map((reads) => countRequests(reads[0]!))).toEqual([4, 4]);
    for (const t of timings) {
      expect(t.ttfbMs).toBeGreaterThanOrEqual(0);
      expect(t.bodyMs).toBeGreaterThanOrEqual(0);
    }
  });

  it('sends the requests made in one turn of the event loop in one write', async () => {
    const s = await rawServer(answerAll);
    const o = origin(s, { connections: 1, pipelining: 8 });
    expect((await o.read('first')).equals(bodyOf('/s/first'))).toBe(true); // the connection is up
    const paths = ['a', 'b', 'c', 'd', 'e', 'f'];
    const got = await Promise.all(paths.map((p) => o.read(p)));
    expect(got.every((b, i) => b.equals(bodyOf(`/s/${paths[i]}`)))).toBe(true);
    const reads = s.reads.get(1)!;
    expect(reads).toHaveLength(2);
    expect(reads[1]!.match(/^GET \S+/gm)).toEqual(paths.map((p) => `GET /s/${p}`));
    expect(s.connections).toBe(1);
  });

  it('writes a plain request: GET, the origin as Host, no caching headers unless fresh', async () => {
    const s = await rawServer(answerAll);
    const o = origin(s);
    await o.read('objects/ab/cdef.blk');
    await o.read('hfk.pointer', { fresh: true });
    await o.read('dir with space/x');
    expect(s.requests[0]!.head).toBe(`GET /s/objects/ab/cdef.blk HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nUser-Agent: hfk`);
    expect(s.requests[1]!.head).toBe(`GET /s/hfk.pointer HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nUser-Agent: hfk\r\nCache-Control: no-cache\r\nPragma: no-cache`);
    expect(s.requests[2]!.path).toBe('/s/dir%20with%20space/x');
  });

  it('puts the body where alloc says, sized by Content-Length or by the chunks counted', async () => {
    const s = await rawServer((req, sock) => {
      const body = bodyOf(req.path);
      if (req.path === '/s/chunked') sock.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body.toString('latin1')}\r\n0\r\n\r\n`, 'latin1');
      else ok(sock, body);
    });
    const o = origin(s, { connections: 1 });
    const asked: number[] = [];
    const given: Buffer[] = [];
    const alloc = (n: number) => {
      asked.push(n);
      const b = Buffer.alloc(n + 100).subarray(50, 50 + n); // a view into larger memory, as a pool's are
      given.push(b);
      return b;
    };
    const declared = await o.read('sized', { alloc });
    const counted = await o.read('chunked', { alloc });
    const withSize = await o.read('sized2', { alloc, expectedSize: bodyOf('/s/sized2').length });
    expect(declared).toBe(given[0]);
    expect(counted).toBe(given[1]);
    expect(withSize).toBe(given[2]);
    expect(asked).toEqual([bodyOf('/s/sized').length, bodyOf('/s/chunked').length, bodyOf('/s/sized2').length]);
    expect(declared.equals(bodyOf('/s/sized')) && counted.equals(bodyOf('/s/chunked')) && withSize.equals(bodyOf('/s/sized2'))).toBe(true);
  });

  it('assembles chunked bodies sent in pieces, with chunk extensions and trailers', async () => {
    const s = await rawServer((req, sock) => {
      const body = bodyOf(req.path);
      sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
      for (let at = 0, n = 1; at < body.length; at += n, n *= 3) {
        const piece = body.subarray(at, at + n);
        sock.write(`${piece.length.toString(16)};n=${n}\r\n`);
        sock.write(piece);
        sock.write('\r\n');
      }
      sock.write('0\r\nX-Checksum: none\r\n\r\n');
    });
    const o = origin(s, { connections: 1, pipelining: 4 });
    const paths = ['c1', 'c2', 'c3', 'big', 'c4'];
    const got = await Promise.all(paths.map((p) => o.read(p)));
    for (let i = 0; i < paths.length; i++) expect(got[i]!.equals(bodyOf(`/s/${paths[i]}`)), paths[i]).toBe(true);
    expect(s.connections).toBe(1);
  });

  it('reads a body that runs until the server closes, then carries on on a new connection', async () => {
    const s = await rawServer((req, sock) => {
      if (req.path === '/s/old') {
        sock.write('HTTP/1.0 200 OK\r\n\r\n');
        sock.end(bodyOf(req.path));
      } else ok(sock, bodyOf(req.path));
    });
    const o = origin(s, { connections: 1 });
    expect((await o.read('old')).equals(bodyOf('/s/old'))).toBe(true);
    expect((await o.read('next')).equals(bodyOf('/s/next'))).toBe(true);
    expect(s.connections).toBe(2);
  });

  it('404 and 410 are missing, 500 is broken, and the connection stays in use after each', async () => {
    const s = await rawServer((req, sock) => {
      const status = { '/s/missing': '404 Not Found', '/s/gone': '410 Gone', '/s/error': '500 Internal Server Error', '/s/busy': '503 Service Unavailable' }[req.path];
      if (status) sock.write(`HTTP/1.1 ${status}\r\nContent-Length: 12\r\n\r\nerror page!\n`);
      else ok(sock, bodyOf(req.path));
    });
    const o = origin(s, { connections: 1, pipelining: 8 });
    const [missing, gone, error, busy, fine] = await Promise.allSettled([o.read('missing'), o.read('gone'), o.read('error'), o.read('busy'), o.read('fine')]);
    const reason = (r: PromiseSettledResult<Buffer>) => (r as PromiseRejectedResult).reason as Error;
    expect(reason(missing!)).toBeInstanceOf(MissingError);
    expect(reason(missing!).message).toBe(`${s.base}missing: HTTP 404`);
    expect(reason(gone!)).toBeInstanceOf(MissingError);
    expect(reason(gone!).message).toBe(`${s.base}gone: HTTP 410`);
    expect(reason(error!)).toBeInstanceOf(BrokenError);
    expect(reason(error!).message).toBe(`${s.base}error: HTTP 500`);
    expect(reason(busy!)).toBeInstanceOf(BrokenError);
    expect(reason(busy!).message).toBe(`${s.base}busy: HTTP 503`);
    expect((reason(missing!) as MissingError).source).toBe(s.base);
    expect(fine!.status === 'fulfilled' && fine.value.equals(bodyOf('/s/fine'))).toBe(true);
    expect((await o.read('after')).equals(bodyOf('/s/after'))).toBe(true);
    expect(s.connections).toBe(1);
  });

  it('refuses a body of the wrong size as invalid: declared or counted, short or long', async () => {
    const ten = Buffer.from('0123456789');
    const s = await rawServer((req, sock) => {
      if (req.path.startsWith('/s/chunked')) sock.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n0123\r\n6\r\n456789\r\n0\r\n\r\n`);
      else ok(sock, ten);
    });
    const o = origin(s, { connections: 1, pipelining: 8 });
    const cases: Array<[string, number, string]> = [
      ['sized-long', 5, '10 bytes, the manifest says 5'],
      ['sized-short', 20, '10 bytes, the manifest says 20'],
      ['chunked-long', 5, 'more than 5 bytes, the manifest says 5'],
      ['chunked-short', 20, '10 bytes, the manifest says 20'],
    ];
    const errors = await Promise.all(cases.map(([p, size]) => rejection(o.read(p, { expectedSize: size }))));
    for (let i = 0; i < cases.length; i++) {
      expect(errors[i]).toBeInstanceOf(InvalidError);
      expect(errors[i]!.message).toBe(`${s.base}${cases[i]![0]}: ${cases[i]![2]}`);
    }
    // The right size passes. A small answer of a wrong declared size was read to its end; the one
    // that ran over its size closed its connection rather than being drained.
    expect((await o.read('sized', { expectedSize: 10 })).equals(ten)).toBe(true);
    expect((await o.read('chunked', { expectedSize: 10 })).equals(ten)).toBe(true);
    expect(s.connections).toBe(2);
  });

  it('reports a refused connection as broken, with ECONNREFUSED', async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const o = new H1Origin(`http://127.0.0.1:${port}/s/`, { connections: 2 });
    origins.push(o);
    const [a, b] = await Promise.all([rejection(o.read('a')), rejection(o.read('b'))]);
    for (const [e, p] of [[a, 'a'], [b, 'b']] as const) {
      expect(e).toBeInstanceOf(BrokenError);
      expect(e.message).toBe(`http://127.0.0.1:${port}/s/${p}: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:${port}`);
      expect((e.cause as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');
    }
  });

  it('reports garbage instead of an answer as broken', async () => {
    const s = await rawServer((req, sock) => (req.path === '/s/x' ? sock.write('SSH-2.0-OpenSSH_9.6\r\n\r\n') : ok(sock, bodyOf(req.path))));
    const o = origin(s, { connections: 1 });
    expect((await o.read('ok')).equals(bodyOf('/s/ok'))).toBe(true);
    const e = await rejection(o.read('x'));
    expect(e).toBeInstanceOf(BrokenError);
    expect(e.message).toBe(`${s.base}x: not an HTTP/1.1 answer: not an HTTP/1.x status line: 'SSH-2.0-OpenSSH_9.6'`);
    expect(s.requests.map((r) => r.path)).toEqual(['/s/ok', '/s/x']); // an answer came: not sent again
    expect((await o.read('ok')).equals(bodyOf('/s/ok'))).toBe(true); // on a new connection
    expect(s.connections).toBe(2);
  });

  it('a reset in the middle of a body: that request is cut short, the others on the connection are sent again', async () => {
    const resetHere = signal<net.Socket>();
    const s = await rawServer((req, sock) => {
      if (req.conn === 1 && req.path === '/s/reset') {
        sock.write(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n'), bodyOf(req.path).subarray(0, 100)]));
        resetHere.fire(sock);
      } else if (req.conn === 1 && req.nth > 1) {
        // behind the reset one: never answered on this connection
      } else ok(sock, bodyOf(req.path));
    });
    const o = origin(s, { connections: 1, pipelining: 4 });
    expect((await o.read('ok')).equals(bodyOf('/s/ok'))).toBe(true);
    const headIn = signal();
    const alloc = (n: number) => (headIn.fire(), Buffer.alloc(n));
    const [cut, b, c] = [o.read('reset', { alloc }), o.read('b'), o.read('c')];
    const sock = await resetHere.promise;
    await headIn.promise; // the client has the head: the reset comes in the body
    sock.resetAndDestroy();
    const e = await rejection(cut);
    expect(e).toBeInstanceOf(BrokenError);
    expect(e.message).toMatch(new RegExp(`^${s.base}reset: answer cut short after \\d+ bytes \\(ECONNRESET: read ECONNRESET\\)$`));
    expect((await b).equals(bodyOf('/s/b'))).toBe(true);
    expect((await c).equals(bodyOf('/s/c'))).toBe(true);
    expect(s.connections).toBe(2);
    // b and c went out twice: on the reset connection and again on the new one; the cut one once.
    const sent = s.requests.map((r) => `${r.conn} ${r.path}`);
    expect(sent.slice(0, 4)).toEqual(['1 /s/ok', '1 /s/reset', '1 /s/b', '1 /s/c']);
    expect(sent.slice(4).sort()).toEqual(['2 /s/b', '2 /s/c']);
  });

  for (const sayClose of [false, true]) {
    it(`a server that closes after 5 answers${sayClose ? ' (saying Connection: close)' : ' (without a word)'}: the unanswered requests are sent again once, all succeed`, async () => {
      const s = await rawServer((req, sock) => {
        if (req.nth > 4) return; // past the limit: read, never answered
        ok(sock, bodyOf(req.path), req.nth === 4 && sayClose ? 'Connection: close\r\n' : '');
        if (req.nth === 4) sock.end();
      });
      const o = origin(s, { connections: 1, pipelining: 4 });
      const paths = Array.from({ length: 20 }, (_, i) => `k${i}`);
      const got = await Promise.all(paths.map((p) => o.read(p)));
      expect(got.every((b, i) => b.equals(bodyOf(`/s/${paths[i]}`)))).toBe(true);
      expect(s.connections).toBe(4); // 20 answers, 5 per connection
      const answered = s.requests.filter((r) => r.nth <= 4).map((r) => r.path);
      expect(answered.sort()).toEqual(paths.map((p) => `/s/${p}`).sort());
      // Some went out twice (written before the close was known), none three times.
      expect(s.requests.length).toBeGreaterThan(20);
      const times = new Map<string, number>();
      for (const r of s.requests) times.set(r.path, (times.get(r.path) ?? 0) + 1);
      expect(Math.max(...times.values())).toBe(2);
    });
  }

  it('a server that sends no answer: broken after headersTimeoutMs', async () => {
    const s = await rawServer(() => {});
    const o = origin(s, { headersTimeoutMs: 300 });
    const e = await rejection(o.read('never'));
    expect(e).toBeInstanceOf(BrokenError);
    expect(e.message).toBe(`${s.base}never: the server sent no answer within 300 ms`);
  });

  it('an answer that never comes on a connection that has worked: broken after headersTimeoutMs, not sent again; the request behind it is', async () => {
    const s = await rawServer((req, sock) => {
      if (req.path === '/s/never' || (req.conn === 1 && req.nth > 1)) return; // conn 1 stalls from 'never' on
      ok(sock, bodyOf(req.path));
    });
    const o = origin(s, { connections: 1, pipelining: 4, headersTimeoutMs: 300 });
    expect((await o.read('ok')).equals(bodyOf('/s/ok'))).toBe(true);
    const [never, behind] = [o.read('never'), o.read('behind')];
    const e = await rejection(never);
    expect(e).toBeInstanceOf(BrokenError);
    expect(e.message).toBe(`${s.base}never: the server sent no answer within 300 ms`);
    expect((await behind).equals(bodyOf('/s/behind'))).toBe(true);
    expect(s.requests.map((r) => `${r.conn} ${r.path}`)).toEqual(['1 /s/ok', '1 /s/never', '1 /s/behind', '2 /s/behind']);
  });

  it('a body that stalls: broken after bodyTimeoutMs, cut short after the bytes that came', async () => {
    const s = await rawServer((_req, sock) => sock.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123'));
    const o = origin(s, { headersTimeoutMs: 300, bodyTimeoutMs: 300 });
    const e = await rejection(o.read('slow'));
    expect(e).toBeInstanceOf(BrokenError);
    expect(e.message).toBe(`${s.base}slow: answer cut short after 4 bytes (the answer stalled for 300 ms)`);
  });

  it('a body that runs until close is cut short, not complete, when the connection fails instead of closing', async () => {
    const s = await rawServer((_req, sock) => sock.write('HTTP/1.0 200 OK\r\n\r\n0123'));
    const o = origin(s, { bodyTimeoutMs: 300 });
    const e = await rejection(o.read('until-close'));
    expect(e).toBeInstanceOf(BrokenError);
    expect(e.message).toBe(`${s.base}until-close: answer cut short after 4 bytes (the answer stalled for 300 ms)`);
  });

  it('cancelling one pipelined request rejects it at once; the others on the connection are answered on it, undisturbed', async () => {
    const held: Array<() => void> = [];
    const allIn = signal();
    let holding = true;
    const s = await rawServer((req, sock) => {
      if (!holding) return ok(sock, bodyOf(req.path));
      held.push(() => ok(sock, bodyOf(req.path)));
      if (held.length === 3) allIn.fire();
    });
    const o = origin(s, { connections: 1, pipelining: 4 });
    const ac = new AbortController();
    const [a, b, c] = [o.read('a'), o.read('b', { signal: ac.signal }), o.read('c')];
    await allIn.promise;
    ac.abort();
    const e = await rejection(b); // no answer has been sent yet
    expect(e).toBeInstanceOf(AbortedError);
    expect(e.message).toBe(`${s.base}b: cancelled`);
    holding = false;
    for (const answer of held.splice(0)) answer();
    expect((await a).equals(bodyOf('/s/a'))).toBe(true);
    expect((await c).equals(bodyOf('/s/c'))).toBe(true);
    // b's answer was read and dropped: the next answer on the connection is the next request's.
    expect((await o.read('d')).equals(bodyOf('/s/d'))).toBe(true);
    expect(s.connections).toBe(1);
    expect(s.requests.map((r) => r.path)).toEqual(['/s/a', '/s/b', '/s/c', '/s/d']);
    expect(s.sockets[0]!.destroyed).toBe(false);
  });

  it('cancelling a request still waiting for room: it is never sent', async () => {
    const held: Array<() => void> = [];
    const firstIn = signal();
    const s = await rawServer((req, sock) => {
      if (req.path !== '/s/a') return ok(sock, bodyOf(req.path));
      held.push(() => ok(sock, bodyOf(req.path)));
      firstIn.fire();
    });
    const o = origin(s, { connections: 1, pipelining: 1 });
    const ac = new AbortController();
    const a = o.read('a');
    const b = o.read('b', { signal: ac.signal });
    await firstIn.promise;
    ac.abort();
    expect(await rejection(b)).toBeInstanceOf(AbortedError);
    held.splice(0).forEach((answer) => answer());
    expect((await a).equals(bodyOf('/s/a'))).toBe(true);
    expect((await o.read('c')).equals(bodyOf('/s/c'))).toBe(true);
    expect(s.requests.map((r) => r.path)).toEqual(['/s/a', '/s/c']);
    const early = await rejection(o.read('d', { signal: AbortSignal.abort() }));
    expect(early).toBeInstanceOf(AbortedError);
    expect(early.message).toBe(`${s.base}d: cancelled`);
  });

  it('close() waits for the requests in flight, then ends the connections; later reads are refused', async () => {
    const held: Array<() => void> = [];
    const allIn = signal();
    const s = await rawServer((req, sock) => {
      held.push(() => ok(sock, bodyOf(req.path)));
      if (held.length === 3) allIn.fire();
    });
    const o = new H1Origin(s.base, { connections: 2, pipelining: 2 });
    const order: string[] = [];
    const reads = ['a', 'b', 'c'].map((p) => o.read(p).then((body) => (order.push(p), body)));
    await allIn.promise;
    const closing = o.close().then(() => order.push('closed'));
    const late = await rejection(o.read('late'));
    expect(late).toBeInstanceOf(AbortedError);
    expect(late.message).toBe(`${s.base}late: the connection pool is closed`);
    held.splice(0).forEach((answer) => answer()); // only now: close() must not have cut them off
    const got = await Promise.all(reads);
    expect(got.every((b, i) => b.equals(bodyOf(`/s/${'abc'[i]}`)))).toBe(true);
    await closing;
    expect(order.slice(-1)).toEqual(['closed']);
    expect(order.slice(0, 3).sort()).toEqual(['a', 'b', 'c']);
    // The server sees its connections end.
    expect(s.sockets).toHaveLength(2);
    await Promise.all(s.sockets.map((sock) => (sock.closed ? undefined : once(sock, 'close'))));
    expect(s.requests.map((r) => r.path).sort()).toEqual(['/s/a', '/s/b', '/s/c']);
  });

  it('close() called twice while a request is in flight: both calls return once it is answered', async () => {
    const held: Array<() => void> = [];
    const allIn = signal();
    const s = await rawServer((req, sock) => {
      held.push(() => ok(sock, bodyOf(req.path)));
      allIn.fire();
    });
    const o = new H1Origin(s.base, { connections: 1 });
    const read = o.read('a');
    await allIn.promise;
    const first = o.close();
    const second = o.close();
    held.splice(0).forEach((answer) => answer());
    expect((await read).equals(bodyOf('/s/a'))).toBe(true);
    await expect(Promise.all([first, second])).resolves.toEqual([undefined, undefined]);
  });

  it('refuses options it cannot use and URLs that are not plain HTTP', () => {
    expect(() => new H1Origin('http://127.0.0.1:1/', { connections: 0 })).toThrow(UsageError);
    expect(() => new H1Origin('http://127.0.0.1:1/', { pipelining: 1.5 })).toThrow('pipelining must be an integer from 1 to 256: got 1.5');
    expect(() => new H1Origin('https://example.org/')).toThrow(UsageError);
    expect(new H1Origin('http://127.0.0.1:1/a//').location).toBe('http://127.0.0.1:1/a/');
  });
});
