import { createServer, type Server } from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortedError, BrokenError, InvalidError, MissingError } from '../errors.ts';
import type { RequestTiming } from './store.ts';
import { coalesceWrites, HttpOrigin, preloadHttpClient, tlsProblem } from './http.ts';

// A real HTTP server on loopback whose answers the tests choose by path.
let server: Server;
let base: string;
let connections = 0;
const body = Buffer.from('0123456789'.repeat(1000));

beforeAll(async () => {
  server = createServer((req, res) => {
    switch (req.url) {
      case '/s/ok':
        res.setHeader('content-length', body.length);
        res.end(body);
        return;
      case '/s/chunked': // no content-length: the body's own length must be checked
        res.write(body.subarray(0, 4000));
        res.end(body.subarray(4000));
        return;
      case '/s/missing':
        res.statusCode = 404;
        res.end('no such object\n');
        return;
      case '/s/error':
        res.statusCode = 503;
        res.end('busy\n');
        return;
      case '/s/short':
        res.setHeader('content-length', body.length);
        res.write(body.subarray(0, 100));
        setTimeout(() => res.socket?.destroy(), 20);
        return;
      case '/s/never':
        return; // no answer until the client gives up
      default:
        res.statusCode = 500;
        res.end();
    }
  });
  server.on('connection', () => connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/s/`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

describe('HttpOrigin.read', () => {
  it('returns the exact body in a buffer of its own, with its timing', async () => {
    const o = new HttpOrigin(base, { connections: 1 });
    try {
      const timing: RequestTiming = { ttfbMs: -1, bodyMs: -1 };
      const b = await o.read('ok', { expectedSize: body.length, timing });
      expect(b.equals(body)).toBe(true);
      expect(b.byteOffset === 0 && b.buffer.byteLength === b.length).toBe(true); // transferable to a worker thread
      expect(timing.ttfbMs).toBeGreaterThanOrEqual(0);
      expect(timing.bodyMs).toBeGreaterThanOrEqual(0);
      expect((await o.read('chunked')).equals(body)).toBe(true);
    } finally {
      await o.close();
    }
  });

  it('puts the body where the caller says, when asked (a pool), sized by the answer', async () => {
    const o = new HttpOrigin(base, { connections: 1 });
    try {
      const asked: number[] = [];
      const given: Buffer[] = [];
      const alloc = (n: number) => {
        asked.push(n);
        const b = Buffer.alloc(n + 100).subarray(50, 50 + n); // a view into larger memory, as a pool's are
        given.push(b);
        return b;
      };
      const declared = await o.read('ok', { alloc });
      const counted = await o.read('chunked', { alloc });
      expect(declared.equals(body) && counted.equals(body)).toBe(true);
      expect(asked).toEqual([body.length, body.length]);
      expect(declared).toBe(given[0]);
      expect(counted).toBe(given[1]);
    } finally {
      await o.close();
    }
  });

  it('pipelines: requests made together leave together on one connection, before any answer', async () => {
    // A bare TCP server that notes how the request bytes arrive and answers each request in order.
    const reads: string[] = [];
    const raw = net.createServer((sock) => {
      let pending = '';
      sock.on('data', (d) => {
        reads.push(d.toString('latin1'));
        pending += d.toString('latin1');
        for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
          const path = pending.slice(0, end).split(' ')[1]!;
          pending = pending.slice(end + 4);
          sock.write(`HTTP/1.1 200 OK\r\ncontent-length: ${path.length}\r\n\r\n${path}`);
        }
      });
    });
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    const o = new HttpOrigin(`http://127.0.0.1:${(raw.address() as AddressInfo).port}/p/`, { connections: 1, pipelining: 4 });
    try {
      expect(String(await o.read('first'))).toBe('/p/first'); // the connection is up (writes on a connecting socket wait and leave together anyway)
      reads.length = 0;
      const got = await Promise.all(['a', 'b', 'c', 'd'].map((x) => o.read(x)));
      expect(got.map(String)).toEqual(['/p/a', '/p/b', '/p/c', '/p/d']);
      // All four requests were there before the server answered the first: sent without waiting for answers.
      expect(reads[0]!.match(/^GET \/p\/[a-d] HTTP\/1.1/gm)).toHaveLength(4);
    } finally {
      await o.close();
      await new Promise((r) => raw.close(r));
    }
  });

  it('cancelling one pipelined request costs the others nothing: they are sent again on a new connection', async () => {
    let conns = 0;
    const raw = net.createServer((sock) => {
      conns++;
      let pending = '';
      sock.on('data', (d) => {
        pending += d.toString('latin1');
        for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
          const path = pending.slice(0, end).split(' ')[1]!;
          pending = pending.slice(end + 4);
          // Slow answers, in order: the cancel comes while all are in flight.
          setTimeout(() => sock.writable && sock.write(`HTTP/1.1 200 OK\r\ncontent-length: ${path.length}\r\n\r\n${path}`), 100);
        }
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    const o = new HttpOrigin(`http://127.0.0.1:${(raw.address() as AddressInfo).port}/p/`, { connections: 1, pipelining: 4 });
    try {
      const ac = new AbortController();
      const [a, b, c] = [o.read('a'), o.read('b', { signal: ac.signal }), o.read('c')];
      setTimeout(() => ac.abort(), 30);
      expect(await rejection(b)).toBeInstanceOf(AbortedError);
      expect([String(await a), String(await c)]).toEqual(['/p/a', '/p/c']);
      expect(conns).toBe(2);
    } finally {
      await o.close();
      await new Promise((r) => raw.close(r));
    }
  });

  it('coalesceWrites: what is written to a socket in one turn of the event loop leaves in one system call', async () => {
    const raw = net.createServer((sock) => sock.resume());
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    const s = net.connect((raw.address() as AddressInfo).port, '127.0.0.1');
    try {
      await new Promise((r) => s.once('connect', r));
      coalesceWrites(s);
      // Node's stream sends a batch through _writev and a lone chunk through _write.
      const calls: number[] = [];
      const internals = s as unknown as { _writev: (chunks: unknown[], cb: () => void) => void; _write: (c: unknown, e: string, cb: () => void) => void };
      const writev = internals._writev.bind(s);
      const write1 = internals._write.bind(s);
      internals._writev = (chunks, cb) => (calls.push(chunks.length), writev(chunks, cb));
      internals._write = (c, e, cb) => (calls.push(1), write1(c, e, cb));
      s.write('GET /a HTTP/1.1\r\n\r\n');
      s.write('GET /b HTTP/1.1\r\n\r\n');
      s.write('GET /c HTTP/1.1\r\n\r\n');
      await new Promise((r) => setImmediate(r));
      s.write('GET /d HTTP/1.1\r\n\r\n'); // a later turn: a call of its own
      await new Promise((r) => setImmediate(r));
      expect(calls).toEqual([3, 1]);
    } finally {
      s.destroy();
      await new Promise((r) => raw.close(r));
    }
  });

  it('tells a missing object from a failing server, and keeps the connection open after either', async () => {
    const o = new HttpOrigin(base, { connections: 1 });
    try {
      await o.read('ok');
      const before = connections;
      const missing = await rejection(o.read('missing'));
      expect(missing).toBeInstanceOf(MissingError);
      expect(missing.message).toMatch(/missing: HTTP 404/);
      const failing = await rejection(o.read('error'));
      expect(failing).toBeInstanceOf(BrokenError);
      expect(failing.message).toMatch(/error: HTTP 503/);
      expect((await o.read('ok')).equals(body)).toBe(true);
      expect(connections).toBe(before);
    } finally {
      await o.close();
    }
  });

  it('refuses a body of the wrong size as invalid, whether declared or counted', async () => {
    const o = new HttpOrigin(base);
    try {
      const declared = await rejection(o.read('ok', { expectedSize: 500 }));
      expect(declared).toBeInstanceOf(InvalidError);
      expect(declared.message).toMatch(/10000 bytes, the manifest says 500/);
      const counted = await rejection(o.read('chunked', { expectedSize: 500 }));
      expect(counted).toBeInstanceOf(InvalidError);
      expect(counted.message).toMatch(/more than 500 bytes/);
      const tooShort = await rejection(o.read('chunked', { expectedSize: 20_000 }));
      expect(tooShort).toBeInstanceOf(InvalidError);
      expect(tooShort.message).toMatch(/10000 bytes, the manifest says 20000/);
    } finally {
      await o.close();
    }
  });

  it('reports a response cut short as a transport failure', async () => {
    const o = new HttpOrigin(base);
    try {
      const e = await rejection(o.read('short'));
      expect(e).toBeInstanceOf(BrokenError);
    } finally {
      await o.close();
    }
  });

  it('cancels on its signal: before the request starts, and while it waits for an answer', async () => {
    const o = new HttpOrigin(base, { connections: 1 });
    try {
      const early = await rejection(o.read('ok', { signal: AbortSignal.abort() }));
      expect(early).toBeInstanceOf(AbortedError);
      const ac = new AbortController();
      const waiting = o.read('never', { signal: ac.signal });
      const queued = o.read('ok', { signal: ac.signal }); // behind it on the one connection
      setTimeout(() => ac.abort(), 50);
      expect(await rejection(waiting)).toBeInstanceOf(AbortedError);
      expect(await rejection(queued)).toBeInstanceOf(AbortedError);
      expect((await o.read('ok')).equals(body)).toBe(true); // the origin still works
    } finally {
      await o.close();
    }
  });
});

describe('TLS failures in one line', () => {
  it('says a server that does not speak TLS is probably plain HTTP, without OpenSSL internals', () => {
    const raw = '40ED42EDC97F0000:error:0A00010B:SSL routines:tls_validate_record_header:wrong version number:../deps/openssl/openssl/ssl/record/methods/tlsany_meth.c:77:\n';
    const m = tlsProblem('ERR_SSL_WRONG_VERSION_NUMBER', raw)!;
    expect(m).toMatch(/^TLS: wrong version number \(ERR_SSL_WRONG_VERSION_NUMBER\): the server does not speak TLS on this port.*http:\/\//);
    expect(m).not.toMatch(/\n|tlsany_meth|0A00010B/);
  });

  it('keeps the reason of any other OpenSSL error', () => {
    expect(tlsProblem('ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', 'C0:error:0A000410:SSL routines:ssl3_read_bytes:sslv3 alert handshake failure:../ssl/record/rec_layer_s3.c:908:SSL alert number 40\n')).toBe(
      'TLS: sslv3 alert handshake failure (ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE)',
    );
  });

  it('says how to trust a certificate that does not verify', () => {
    expect(tlsProblem('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate')).toMatch(/^TLS: self-signed certificate \(DEPTH_ZERO_SELF_SIGNED_CERT\); .*CA bundle \(update-ca-certificates; SSL_CERT_FILE=FILE.*http:\/\//);
  });

  it("drops Node's advice to run with --use-system-ca (hfk trusts the machine's bundle already)", () => {
    const m = tlsProblem('UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'unable to verify the first certificate; if the root CA is installed locally, try running Node.js with --use-system-ca')!;
    expect(m).toMatch(/^TLS: unable to verify the first certificate \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\); add the CA/);
    expect(m).not.toContain('--use-system-ca');
  });

  it('does not send a certificate with wrong dates or names to the CA bundle', () => {
    const expired = tlsProblem('CERT_HAS_EXPIRED', 'certificate has expired')!;
    expect(expired).toMatch(/^TLS: certificate has expired \(CERT_HAS_EXPIRED\); check the mirror's certificate dates and this machine's clock \(now \d{4}-/);
    expect(expired).not.toContain('CA bundle');
    const name = tlsProblem('ERR_TLS_CERT_ALTNAME_INVALID', "Hostname/IP does not match certificate's altnames: IP: 10.0.2.100 is not in the cert's list: 127.0.0.1")!;
    expect(name).toMatch(/^TLS: Hostname\/IP does not match .* \(ERR_TLS_CERT_ALTNAME_INVALID\); give the mirror by a name its certificate carries$/);
  });

  it('leaves other errors alone', () => {
    expect(tlsProblem('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:1')).toBeUndefined();
    expect(tlsProblem(undefined, 'socket hang up')).toBeUndefined();
  });
});

describe('preloadHttpClient', () => {
  it('loads the HTTPS client only when a mirror is https:// or a proxy is set', async () => {
    expect(await preloadHttpClient(['http://a.example/store/', 'http://b.example/store/'])).toBe(false);
    expect(await preloadHttpClient([])).toBe(false);
    expect(await preloadHttpClient(['http://a.example/store/', 'https://b.example/store/'])).toBe(true);
    expect(await preloadHttpClient(['http://a.example/store/'], 'http://proxy.example:3128')).toBe(true);
  });
});
