// A hostile HTTP mirror for end-to-end tests: it serves a real published
// store, but for each kind of path (pointer, manifest, block object, mirror
// list) it can be switched into a misbehaviour below HTTP's rules: endless
// bodies, trickled heads and bodies, endless `100 Continue` or trailers, a
// 10^14-byte Content-Length, redirects, 403, unfinished zstd frames, and
// pointers that hijack the ranking. It speaks HTTP/1.1 itself over node:net
// (or node:tls), so nothing in between tidies up what it sends.
//
// It is bounded itself: endless bodies are a small buffer written again and
// again with backpressure, stop() destroys every socket and timer, and what
// it has sent is counted rather than kept.
//
// hfkMeasured() runs the hfk CLI under /usr/bin/time for its peak RSS, with a
// watchdog that kills it past a wall-clock or memory limit.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodePointer } from '../../src/format/manifest.ts';
import { HFK, NODE } from './cli.ts';
import { requireTool } from './images.ts';

/** What a request asks for, by its path in the store. */
export type PathKind = 'pointer' | 'manifest' | 'block' | 'mirrorlist' | 'other';

/** Where the hostile mirror serves its mirror list. */
export const MIRROR_LIST_PATH = 'mirrors.txt';

export type Misbehaviour =
  /** A body that never ends: declared 10^12 bytes long, close-delimited (no length), or chunked. */
  | { kind: 'endless'; framing: 'length' | 'close' | 'chunked' }
  /** The status line, the headers or the body sent one byte every `everyMs`. */
  | { kind: 'trickle'; part: 'status' | 'headers' | 'body'; everyMs: number }
  /** `HTTP/1.1 100 Continue` interim responses, forever. */
  | { kind: 'continue' }
  /** The right body, chunked, then trailer lines forever. */
  | { kind: 'trailers' }
  /** Content-Length 10^14, the first bytes of the body, then one more byte every `everyMs`. */
  | { kind: 'huge'; everyMs: number }
  /**
   * 302 redirects. chain: `hops` hops on this server (relative Locations),
   * then to `target` + the path (absolute). loop: to the URL asked for.
   * endless: always one hop further on this server.
   */
  | { kind: 'redirect'; mode: 'chain'; target: string; hops: number }
  | { kind: 'redirect'; mode: 'loop' | 'endless' }
  /** This status (e.g. 403 as an object store answers for a key it will not list). */
  | { kind: 'status'; code: number }
  /** Block objects in one zstd frame get their last block's Last_Block flag cleared (same size, same name). */
  | { kind: 'unfinished-zstd' };

export interface HostileOptions {
  /** Misbehaviour per kind of path; `all` for the kinds not named. */
  faults?: Partial<Record<PathKind | 'all', Misbehaviour>>;
  /** Bytes served instead of the store's file at these paths (e.g. a hijacking pointer). */
  files?: Record<string, Buffer>;
  /** The mirror list served at MIRROR_LIST_PATH. */
  mirrorList?: string;
  /** Serve HTTPS with this certificate. */
  tls?: { cert: string; key: string };
}

export interface HostileMirror {
  url: string;
  port: number;
  /** Host and port as a URL names them, for matching error messages. */
  hostPort: string;
  /** Every path asked for (relative to the store), in order. */
  paths: string[];
  connections: number;
  /** Bytes written to clients (endless bodies included). */
  bytesSent: number;
  stop(): Promise<void>;
}

const ENDLESS_DECLARED = '1000000000000';
const HUGE_DECLARED = '100000000000000';
const PUMP_CHUNK = 64 * 1024;

function repeated(unit: string, size = PUMP_CHUNK): Buffer {
  return Buffer.from(unit.repeat(Math.ceil(size / unit.length)), 'latin1');
}

const FILLER = repeated('{"hfk":"endless"} ');
const CHUNKED_FILLER = Buffer.concat([Buffer.from(`${FILLER.length.toString(16)}\r\n`), FILLER, Buffer.from('\r\n')]);
const CONTINUES = repeated('HTTP/1.1 100 Continue\r\n\r\n');
const TRAILERS = repeated('X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n');

export function pathKind(rel: string): PathKind {
  if (rel === MIRROR_LIST_PATH) return 'mirrorlist';
  if (rel.startsWith('blocks/')) return 'block';
  if (/^images\/[^/]+\/latest\.json$/.test(rel)) return 'pointer';
  if (/^images\/[^/]+\/v[0-9]+\.hfkm$/.test(rel)) return 'manifest';
  return 'other';
}

/**
 * The same block object with the Last_Block flag of its zstd frame's last
 * block cleared: the frame then never ends. Undefined for an object that is
 * not one zstd frame (tag 1). The block's name, which hashes the decoded
 * content, still fits; the object's digest does not.
 */
export function unfinishZstd(object: Buffer): Buffer | undefined {
  if (object.length < 8 || object[0] !== 1 || object.readUInt32LE(1) !== 0xfd2fb528) return undefined;
  const f = Buffer.from(object);
  const fhd = f[5]!;
  const single = (fhd >> 5) & 1;
  const fcs = fhd >> 6;
  let p = 6 + (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + (fcs === 0 ? single : [0, 2, 4, 8][fcs]!);
  while (p + 3 <= f.length) {
    const h = f.readUIntLE(p, 3);
    if (h & 1) {
      f[p] = f[p]! & 0xfe;
      return f;
    }
    const type = (h >> 1) & 3;
    p += 3 + (type === 1 ? 1 : h >>> 3);
  }
  return undefined;
}

/**
 * A well-formed format-2 manifest of image `name` version `version` with
 * `blocks` distinct made-up blocks, claiming key `keyId`, whose signature is
 * 64 zero bytes: only the signature check can refuse it. About 72 bytes a
 * block, written straight into one buffer (docs/FORMAT.md has the layout)
 * so that a large one costs the test no more than its size.
 */
export function forgedManifest(name: string, version: number, blocks: number, keyId: string): Buffer {
  const blockSize = 4096;
  const header = Buffer.from(
    JSON.stringify({
      name,
      version,
      created: '2026-01-01T00:00:00.000Z',
      imageSize: blocks * blockSize,
      blockSize,
      blockCount: blocks,
      codec: 'zstd',
      filesystem: 'squashfs',
      source: { kind: 'file', name: 'forged.sqfs' },
      previous: null,
      keyId,
    }),
  );
  const out = Buffer.alloc(12 + header.length + 4 + blocks * (32 + 4 + 32 + 4) + 64);
  out.write('HFKM', 0, 'latin1');
  out.writeUInt16LE(2, 4);
  out.writeUInt32LE(header.length, 8);
  header.copy(out, 12);
  let off = 12 + header.length;
  out.writeUInt32LE(blocks, off);
  off += 4;
  randomFillSync(out, off, blocks * 32); // block hashes
  off += blocks * 32;
  for (let i = 0; i < blocks; i++, off += 4) out.writeUInt32LE(100, off); // object sizes
  randomFillSync(out, off, blocks * 32); // object digests
  off += blocks * 32;
  for (let i = 0; i < blocks; i++, off += 4) out.writeUInt32LE(i, off); // block i is unique block i
  return out; // the last 64 bytes, the signature, stay zero
}

/** A pointer to `manifest` (its SHA-256 and size), claiming `version`. */
export function hijackingPointer(name: string, version: number, manifest: { sha256?: string; size: number; bytes?: Buffer }): Buffer {
  const sha256 = manifest.bytes ? createHash('sha256').update(manifest.bytes).digest('hex') : (manifest.sha256 ?? 'f'.repeat(64));
  return encodePointer({ format: 'hfk-pointer/1', name, version, manifest: `v${version}.hfkm`, sha256, size: manifest.size });
}

function waitWritable(sock: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      sock.off('drain', done);
      sock.off('close', done);
      resolve();
    };
    sock.once('drain', done);
    sock.once('close', done);
  });
}

/** Starts a hostile mirror serving the store at `root`. */
export async function startHostileMirror(root: string, options: HostileOptions = {}): Promise<HostileMirror> {
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let stopped = false;
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });
  const state: HostileMirror = { url: '', port: 0, hostPort: '', paths: [], connections: 0, bytesSent: 0, stop: async () => {} };
  const faults = options.faults ?? {};

  const write = (sock: net.Socket, data: Buffer | string): boolean => {
    if (sock.destroyed) return false;
    const b = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
    state.bytesSent += b.length;
    return sock.write(b);
  };
  /** Writes `chunk` until the client goes away, waiting for each write to drain. */
  const pump = async (sock: net.Socket, chunk: Buffer) => {
    while (!stopped && !sock.destroyed) {
      if (!write(sock, chunk)) await waitWritable(sock);
    }
  };
  const trickle = async (sock: net.Socket, bytes: Buffer, everyMs: number) => {
    for (let i = 0; i < bytes.length && !stopped && !sock.destroyed; i++) {
      write(sock, bytes.subarray(i, i + 1));
      await sleep(everyMs);
    }
  };
  const head = (status: string, headers: Record<string, string>) =>
    `HTTP/1.1 ${status}\r\n${Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('')}\r\n`;

  const body = (rel: string): Buffer | undefined => {
    if (options.files?.[rel]) return options.files[rel];
    if (rel === MIRROR_LIST_PATH) return options.mirrorList !== undefined ? Buffer.from(options.mirrorList) : undefined;
    if (rel.split('/').some((p) => p === '..' || p.startsWith('.') || p === '')) return undefined;
    try {
      return readFileSync(join(root, rel));
    } catch {
      return undefined;
    }
  };

  /** Answers one request; false when the connection is taken over for good. */
  const respond = async (sock: net.Socket, method: string, target: string): Promise<boolean> => {
    // A proxy is asked for absolute URLs: serve their path from the store all the same.
    let pathname = target;
    if (/^https?:\/\//i.test(target)) pathname = new URL(target).pathname;
    let hop = 0;
    const hopMatch = /^\/\.hop\/(\d+)(\/.*)$/.exec(pathname);
    if (hopMatch) {
      hop = Number(hopMatch[1]);
      pathname = hopMatch[2]!;
    }
    let rel: string;
    try {
      rel = decodeURIComponent(pathname).replace(/^\/+/, '');
    } catch {
      write(sock, head('400 Bad Request', { 'Content-Length': '0' }));
      return true;
    }
    state.paths.push(rel);
    const kind = pathKind(rel);
    const f = faults[kind] ?? faults.all;
    const data = body(rel);
    const plain = (status: string, text: string) => {
      write(sock, head(status, { 'Content-Length': String(Buffer.byteLength(text)), 'Content-Type': 'text/plain' }) + (method === 'HEAD' ? '' : text));
      return true;
    };

    if (f?.kind === 'redirect') {
      const base = `${options.tls ? 'https' : 'http'}://${state.hostPort}`;
      const asked = target.startsWith('/') ? target : new URL(target).pathname;
      let location = `/.hop/${hop + 1}/${rel}`;
      if (f.mode === 'loop') location = `${base}${asked}`;
      else if (f.mode === 'chain' && hop >= f.hops) location = `${f.target}${rel}`;
      write(sock, head('302 Found', { Location: location, 'Content-Length': '0' }));
      return true;
    }
    if (f?.kind === 'status') return plain(`${f.code} Hostile`, `<Error><Code>AccessDenied</Code><Key>${rel}</Key></Error>\n`);
    if (f?.kind === 'continue') {
      await pump(sock, CONTINUES);
      return false;
    }
    if (f?.kind === 'endless') {
      const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
      if (f.framing === 'length') headers['Content-Length'] = ENDLESS_DECLARED;
      if (f.framing === 'chunked') headers['Transfer-Encoding'] = 'chunked';
      if (f.framing === 'close') headers.Connection = 'close';
      write(sock, head('200 OK', headers));
      await pump(sock, f.framing === 'chunked' ? CHUNKED_FILLER : FILLER);
      return false;
    }
    if (data === undefined) return plain('404 Not Found', `no ${rel} here\n`);
    if (f?.kind === 'trickle') {
      const status = 'HTTP/1.1 200 OK\r\n';
      const rest = `Content-Length: ${data.length}\r\nContent-Type: application/octet-stream\r\n\r\n`;
      if (f.part === 'status') await trickle(sock, Buffer.from(status), f.everyMs);
      else write(sock, status);
      if (f.part === 'headers') await trickle(sock, Buffer.from(rest), f.everyMs);
      else write(sock, rest);
      if (f.part === 'body') await trickle(sock, data, f.everyMs);
      else write(sock, data);
      return false;
    }
    if (f?.kind === 'trailers') {
      write(sock, head('200 OK', { 'Transfer-Encoding': 'chunked', Trailer: 'X-Pad', 'Content-Type': 'application/octet-stream' }));
      write(sock, Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n0\r\n')]));
      await pump(sock, TRAILERS);
      return false;
    }
    if (f?.kind === 'huge') {
      write(sock, head('200 OK', { 'Content-Length': HUGE_DECLARED, 'Content-Type': 'application/octet-stream' }));
      write(sock, data.subarray(0, 64));
      await trickle(sock, FILLER, f.everyMs);
      return false;
    }
    const served = f?.kind === 'unfinished-zstd' ? (unfinishZstd(data) ?? data) : data;
    write(sock, head('200 OK', { 'Content-Length': String(served.length), 'Content-Type': 'application/octet-stream' }));
    if (method !== 'HEAD') write(sock, served);
    return true;
  };

  const onSocket = (sock: net.Socket) => {
    state.connections++;
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    let busy = false;
    let taken = false;
    const serve = async () => {
      if (busy || taken) return;
      busy = true;
      try {
        for (;;) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0 || sock.destroyed) break;
          const [method = 'GET', target = '/'] = buf.subarray(0, end).toString('latin1').split('\r\n')[0]!.split(' ');
          buf = buf.subarray(end + 4);
          if (!(await respond(sock, method, target))) {
            taken = true;
            // the client hung up or the server stopped: nothing more to say on this connection
            sock.destroy();
            break;
          }
        }
      } finally {
        busy = false;
      }
    };
    sock.on('data', (d: Buffer) => {
      if (taken) return;
      buf = Buffer.concat([buf, d]);
      if (buf.length > 64 * 1024 && buf.indexOf('\r\n\r\n') < 0) return void sock.destroy();
      void serve();
    });
  };

  const server = options.tls
    ? tls.createServer({ cert: readFileSync(options.tls.cert), key: readFileSync(options.tls.key) }, onSocket)
    : net.createServer(onSocket);
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as net.AddressInfo).port;
  state.hostPort = `127.0.0.1:${state.port}`;
  state.url = `${options.tls ? 'https' : 'http'}://${state.hostPort}/`;
  state.stop = () =>
    new Promise<void>((resolve) => {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return state;
}

/** A test CA and a certificate for 127.0.0.1 that it signed, made with openssl in `dir`. */
export function testCertificate(dir: string): { ca: string; cert: string; key: string } {
  requireTool('openssl', 'openssl');
  const ssl = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore', cwd: dir });
  ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=hfk hostile CA']);
  ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=127.0.0.1']);
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
  ssl(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.pem', '-days', '2', '-extfile', 'ext.cnf']);
  return { ca: join(dir, 'ca.pem'), cert: join(dir, 'srv.pem'), key: join(dir, 'srv.key') };
}

// ---------------------------------------------------------------------------
// Running the CLI with its peak memory measured

export interface MeasuredRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** Peak resident set of the hfk process (its VmHWM), in bytes. */
  peakRssBytes: number;
  /** Why the watchdog killed it, if it did. */
  killed?: 'time' | 'memory';
}

export interface MeasureOptions {
  env?: NodeJS.ProcessEnv;
  /** Killed after this long (default 90 s). */
  limitMs?: number;
  /** Killed once its resident set passes this (default 1 GiB), to spare the machine. */
  rssLimitBytes?: number;
}

const OUTPUT_KEPT = 1 << 20;

function readStatusKb(pid: number, field: string): number | undefined {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function childPid(pid: number): number | undefined {
  try {
    const first = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0];
    return first ? Number(first) : undefined;
  } catch {
    return undefined;
  }
}

/** Runs `hfk ARGS…` as measured() runs a command. */
export function hfkMeasured(args: string[], options: MeasureOptions = {}): Promise<MeasuredRun> {
  return measured([NODE, HFK, ...args], options);
}

/**
 * Runs a command under /usr/bin/time (in its own process group), and
 * resolves when it ends or the watchdog kills it. Never throws for a
 * non-zero exit.
 */
export function measured(command: string[], options: MeasureOptions = {}): Promise<MeasuredRun> {
  requireTool('/usr/bin/time', 'time');
  const dir = mkdtempSync(join(tmpdir(), 'hfk-rss-'));
  const rssFile = join(dir, 'rss');
  const limitMs = options.limitMs ?? 90_000;
  const rssLimitKb = (options.rssLimitBytes ?? 1 << 30) / 1024;
  const t0 = performance.now();
  const child: ChildProcess = spawn('/usr/bin/time', ['-f', '%M', '-o', rssFile, ...command], {
    env: { ...process.env, CI: 'true', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    if (stdout.length < OUTPUT_KEPT) stdout += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    if (stderr.length < OUTPUT_KEPT) stderr += d.toString();
  });
  let killed: MeasuredRun['killed'];
  let polledKb = 0;
  const killGroup = (why: NonNullable<MeasuredRun['killed']>) => {
    killed ??= why;
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const poll = setInterval(() => {
    const pid = childPid(child.pid!);
    if (pid === undefined) return;
    polledKb = Math.max(polledKb, readStatusKb(pid, 'VmHWM') ?? 0);
    if ((readStatusKb(pid, 'VmRSS') ?? 0) > rssLimitKb) killGroup('memory');
  }, 50);
  const deadline = setTimeout(() => killGroup('time'), limitMs);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearInterval(poll);
      clearTimeout(deadline);
      let timeKb = 0;
      try {
        // After "Command terminated by signal N" or "Command exited with non-zero status N", the figure is the last line.
        const lines = readFileSync(rssFile, 'utf8').trim().split('\n');
        timeKb = Number(lines[lines.length - 1]) || 0;
      } catch {
        // time was killed before it wrote: the polled peak is all there is
      }
      rmSync(dir, { recursive: true, force: true });
      resolve({
        code: killed ? null : code,
        signal: killed ? 'SIGKILL' : signal,
        stdout,
        stderr,
        ms: performance.now() - t0,
        peakRssBytes: Math.max(timeKb, polledKb) * 1024,
        ...(killed ? { killed } : {}),
      });
    });
  });
}
