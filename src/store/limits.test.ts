import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { Agent } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { AbortedError, BrokenError, InvalidError, MissingError } from '../errors.ts';
import { H1Origin } from './h1.ts';
import { HttpOrigin } from './http.ts';
import type { StoreReader } from './store.ts';

// Both HTTP clients against servers that misbehave on purpose: every answer
// ends with the right kind of error within its budget (small knob values
// here), and an answer over its limits closes its connection, never drained.

/** What a scripted server does with one request: write to the socket, now or later. */
type Script = (path: string, sock: net.Socket, s: Raw) => void;

interface Raw {
  base: string;
  host: string;
  connections: number;
  paths: string[];
  /** Sockets the server saw closed (by the client, since the server never closes first here). */
  closed: number;
  sockets: net.Socket[];
}

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** Waits until the server has seen every connection closed. */
async function closedAll(s: Raw): Promise<void> {
  await Promise.all(s.sockets.map((sock) => (sock.closed ? undefined : new Promise((r) => sock.once('close', r)))));
}

/** Repeats `fn` on the socket until it closes. */
function every(sock: net.Socket, ms: number, fn: () => void): void {
  const t = setInterval(() => (sock.destroyed ? clearInterval(t) : fn()), ms);
  sock.once('close', () => clearInterval(t));
}

/** Writes as fast as the socket takes it, until it closes. */
function flood(sock: net.Socket, chunk: Buffer | string): void {
  const more = () => {
    while (!sock.destroyed && sock.write(chunk));
  };
  sock.on('drain', more);
  more();
}

async function rawServer(script: Script, secure?: { cert: Buffer; key: Buffer }): Promise<Raw> {
  const s: Raw = { base: '', host: '', connections: 0, paths: [], closed: 0, sockets: [] };
  const onSocket = (sock: net.Socket) => {
    s.connections++;
    s.sockets.push(sock);
    sock.on('error', () => {});
    sock.once('close', () => s.closed++);
    let pending = '';
    sock.on('data', (d) => {
      pending += d.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
        const path = pending.slice(0, end).split(' ')[1]!;
        pending = pending.slice(end + 4);
        s.paths.push(path);
        script(path, sock, s);
      }
    });
  };
  const server = secure ? tls.createServer(secure, onSocket) : net.createServer(onSocket);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  s.host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  s.base = `${secure ? 'https' : 'http'}://${s.host}/s/`;
  cleanup.push(async () => {
    for (const sock of s.sockets) sock.destroy();
    await new Promise((r) => server.close(r));
  });
  return s;
}

const BODY = Buffer.from('the exact bytes of a good answer\n');
const ok = (sock: net.Socket, body = BODY) => sock.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`), body]));

/** Small budgets: a head within 300 ms, then 1 KiB/s over windows of 200 ms. */
const BUDGET = { headersTimeoutMs: 300, minBytesPerSec: 1024, graceMs: 200, bodyTimeoutMs: 5000 };

const clients: Array<[string, (base: string) => StoreReader]> = [
  ['hfk (h1.ts)', (base) => new H1Origin(base, { connections: 1, pipelining: 1, ...BUDGET })],
  ['undici (http.ts)', (base) => new HttpOrigin(base, { connections: 1, pipelining: 1, ...BUDGET })],
];

function open(make: (base: string) => StoreReader, base: string): StoreReader {
  const o = make(base);
  cleanup.push(() => o.close());
  return o;
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

/** A hostile answer and what it must end with. */
interface Case {
  name: string;
  script: Script;
  read: { expectedSize?: number; maxBytes?: number };
  kind: new (...a: never[]) => Error;
  message: RegExp;
}

const cases: Case[] = [
  {
    name: 'a block answer declaring a 10^14-byte body',
    script: (_p, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100000000000000\r\n\r\n');
      flood(sock, Buffer.alloc(64 * 1024));
    },
    read: { expectedSize: 100 },
    kind: InvalidError,
    message: /: 100000000000000 bytes, the manifest says 100$/,
  },
  {
    name: 'an endless body with a Content-Length over the limit (a pointer)',
    script: (_p, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n');
      flood(sock, Buffer.alloc(64 * 1024));
    },
    read: { maxBytes: 64 * 1024 },
    kind: InvalidError,
    message: /: 999999999999 bytes, more than such a file may have \(65536 bytes\)$/,
  },
  {
    name: 'an endless body without a length (until close)',
    script: (_p, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n');
      flood(sock, Buffer.alloc(64 * 1024, 'x'));
    },
    read: { maxBytes: 1 << 20 },
    kind: InvalidError,
    message: /: more than 1048576 bytes, more than such a file may have/,
  },
  {
    name: 'an endless chunked body',
    script: (_p, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
      flood(sock, `4000\r\n${'x'.repeat(0x4000)}\r\n`);
    },
    read: { expectedSize: 1000 },
    kind: InvalidError,
    message: /: more than 1000 bytes, the manifest says 1000$/,
  },
  {
    name: 'a status line trickled a byte at a time',
    script: (_p, sock) => {
      const text = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello';
      let i = 0;
      every(sock, 40, () => sock.write(text[i++ % text.length]!));
    },
    read: { expectedSize: 5 },
    kind: BrokenError,
    message: /: the server sent (its headers too slowly \(\d+ bytes in [\d.]+ m?s\)|no whole response head within 300 ms)$/,
  },
  {
    name: 'headers trickled a byte at a time, without end',
    script: (_p, sock) => {
      sock.write('HTTP/1.1 200 OK\r\n');
      every(sock, 40, () => sock.write('X-Slow: a\r\n'.slice(0, 1)));
    },
    read: { expectedSize: 5 },
    kind: BrokenError,
    message: /: the server sent (its headers too slowly|no whole response head within 300 ms)/,
  },
  {
    name: 'endless 100 Continue',
    script: (_p, sock) => every(sock, 20, () => sock.write('HTTP/1.1 100 Continue\r\n\r\n')),
    read: { expectedSize: 5 },
    kind: BrokenError,
    message: /more than 8 interim \(1xx\) answers|no whole response head within 300 ms|bad response/,
  },
  {
    name: 'a body trickled a byte at a time',
    script: (_p, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n');
      every(sock, 40, () => sock.write('x'));
    },
    read: { expectedSize: 100000 },
    kind: BrokenError,
    message: /: the body came slower than 1 KiB\/s \(\d+ bytes in the last [\d.]+ m?s\)$/,
  },
  {
    name: 'endless trailers',
    script: (_p, sock) => {
      sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n');
      every(sock, 5, () => sock.write('X-Trailer: and another one\r\n'.repeat(50)));
    },
    read: { expectedSize: 5 },
    kind: BrokenError,
    message: /the body came slower than 1 KiB\/s|chunked framing|Headers Overflow/,
  },
];

describe.each(clients)('%s: every answer bounded in size and time', (_name, make) => {
  it.each(cases)('$name', async (c) => {
    const s = await rawServer(c.script);
    const o = open(make, s.base);
    const e = await rejection(o.read('x', c.read));
    expect(e).toBeInstanceOf(c.kind);
    expect(e.message).toMatch(c.message);
    expect(e.message).toContain(s.host); // names the mirror
    // The connection is closed, not drained.
    await closedAll(s);
    expect(s.closed).toBe(1);
  }, 10_000);

  it('after an oversized answer the next request goes out on a new connection and succeeds', async () => {
    const s = await rawServer((path, sock) => {
      if (path === '/s/huge') {
        sock.write('HTTP/1.1 200 OK\r\nContent-Length: 100000000000000\r\n\r\n');
        flood(sock, Buffer.alloc(64 * 1024));
      } else ok(sock);
    });
    const o = open(make, s.base);
    expect(await rejection(o.read('huge', { expectedSize: 100 }))).toBeInstanceOf(InvalidError);
    expect((await o.read('ok', { expectedSize: BODY.length })).equals(BODY)).toBe(true);
    expect(s.connections).toBe(2);
    expect(s.paths).toEqual(['/s/huge', '/s/ok']);
  }, 10_000);

  it('a request stuck without an answer: cancelling it rejects at once and closes its connection', async () => {
    const s = await rawServer(() => {});
    const o = open(make, s.base);
    const ac = new AbortController();
    const p = o.read('stuck', { expectedSize: 5, signal: ac.signal });
    while (s.paths.length === 0) await new Promise((r) => setTimeout(r, 5));
    ac.abort();
    expect(await rejection(p)).toBeInstanceOf(AbortedError);
    await closedAll(s);
    expect(s.closed).toBe(1);
  }, 10_000);

  it('403 (an object store\'s missing key) is missing, not broken', async () => {
    const s = await rawServer((_p, sock) => sock.write('HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden'));
    const o = open(make, s.base);
    const e = await rejection(o.read('x', { expectedSize: 5 }));
    expect(e).toBeInstanceOf(MissingError);
    expect(e.message).toBe(`${s.base}x: HTTP 403 (forbidden: how an object store answers for a missing key)`);
  });

  it('follows a chain of redirects, relative and to another host, to the exact bytes', async () => {
    const other = await rawServer((path, sock) => (path === '/final' ? ok(sock) : sock.write('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n')));
    const s = await rawServer((path, sock) => {
      const to: Record<string, string> = { '/s/x': 'hop1', '/s/hop1': '/s/hop2?q=1', '/s/hop2?q=1': `http://${other.host}/final` };
      sock.write(`HTTP/1.1 ${path === '/s/x' ? 301 : 307} Moved\r\nLocation: ${to[path]}\r\nContent-Length: 5\r\n\r\nmoved`);
    });
    const o = open(make, s.base);
    expect((await o.read('x', { expectedSize: BODY.length })).equals(BODY)).toBe(true);
    expect(s.paths).toEqual(['/s/x', '/s/hop1', '/s/hop2?q=1']);
    expect(other.paths).toEqual(['/final']);
    // A 404 after a redirect is still missing, named by the URL that lacked it.
    other.paths.length = 0;
    const s2 = await rawServer((_p, sock) => sock.write(`HTTP/1.1 302 Found\r\nLocation: http://${other.host}/gone\r\nContent-Length: 0\r\n\r\n`));
    const e = await rejection(open(make, s2.base).read('y', { expectedSize: 5 }));
    expect(e).toBeInstanceOf(MissingError);
    expect(e.message).toBe(`http://${other.host}/gone: HTTP 404`);
  });

  it('a redirect loop and an endless chain of redirects are broken, naming the mirror', async () => {
    const s = await rawServer((path, sock) => {
      const to = path === '/s/a' ? '/s/b' : path === '/s/b' ? '/s/a' : `/s/n${Number(path.slice(4) || 0) + 1}`;
      sock.write(`HTTP/1.1 302 Found\r\nLocation: ${to}\r\nContent-Length: 0\r\n\r\n`);
    });
    const o = open(make, s.base);
    const loop = await rejection(o.read('a', { expectedSize: 5 }));
    expect(loop).toBeInstanceOf(BrokenError);
    expect(loop.message).toBe(`${s.base}a: redirects in a loop (${s.base}a → ${s.base}b → ${s.base}a)`);
    const endless = await rejection(o.read('n0', { expectedSize: 5 }));
    expect(endless).toBeInstanceOf(BrokenError);
    expect(endless.message).toBe(`${s.base}n0: more than 5 redirects (last to ${s.base}n6)`);
    expect((endless as BrokenError).source).toBe(s.base);
  });
});

describe('redirects that change the scheme', () => {
  it('the plain-HTTP client hands a hop to https to `elsewhere`, with the hops so far; without it the hop is broken', async () => {
    const s = await rawServer((_p, sock) => sock.write('HTTP/1.1 301 Moved\r\nLocation: https://cdn.example/obj\r\nContent-Length: 0\r\n\r\n'));
    const asked: Array<[string, readonly string[] | undefined]> = [];
    const o = new H1Origin(s.base, {
      ...BUDGET,
      elsewhere: (url, options) => {
        asked.push([url, options.redirects]);
        return Promise.resolve(BODY);
      },
    });
    cleanup.push(() => o.close());
    expect((await o.read('x')).equals(BODY)).toBe(true);
    expect(asked).toEqual([['https://cdn.example/obj', [`${s.base}x`]]]);
    const bare = open((b) => new H1Origin(b, BUDGET), s.base);
    const e = await rejection(bare.read('x'));
    expect(e).toBeInstanceOf(BrokenError);
    expect(e.message).toBe(`${s.base}x: redirected to https://cdn.example/obj, which this plain-HTTP client cannot follow`);
  });

  it('undici refuses a redirect from https down to plain http', async () => {
    const dir = tempDir('hfk-tls-');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', '1', '-subj', '/CN=127.0.0.1'], { cwd: dir, stdio: 'ignore' });
    const plain = await rawServer((_p, sock) => ok(sock));
    const s = await rawServer((_p, sock) => sock.write(`HTTP/1.1 302 Found\r\nLocation: http://${plain.host}/obj\r\nContent-Length: 0\r\n\r\n`), {
      cert: readFileSync(join(dir, 'cert.pem')),
      key: readFileSync(join(dir, 'key.pem')),
    });
    const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
    cleanup.push(() => dispatcher.close());
    const o = open((b) => new HttpOrigin(b, { ...BUDGET, dispatcher }), s.base);
    const e = await rejection(o.read('x'));
    expect(e).toBeInstanceOf(BrokenError);
    expect(e.message).toBe(`${s.base}x: redirected from https down to plain http (http://${plain.host}/obj): refused`);
    expect(plain.paths).toEqual([]);
  });
});
