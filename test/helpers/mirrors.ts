// Mirrors for tests: real nginx and Squid run with the configs shipped in
// config/, and small node:http mirrors that misbehave on purpose (slow,
// dead, 404, corrupting, cutting responses short, stalling, 5xx). Each lives
// exactly as long as the test that starts it.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { join } from 'node:path';
import { REPO } from './cli.ts';
import { requireTool } from './images.ts';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Waits until something accepts TCP connections on the port (the server's "ready" signal). */
export async function waitForPort(port: number, child: ChildProcess | undefined, timeoutMs = 20_000): Promise<void> {
  const t0 = Date.now();
  let exited: string | undefined;
  child?.once('exit', (code) => (exited = `exited with status ${code}`));
  for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
    if (exited) throw new Error(`server on port ${port} ${exited}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`nothing listens on port ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 5000).unref();
  });
}

export interface Server {
  url: string;
  port: number;
  pid?: number;
  stop(): Promise<void>;
}

/** A server block with each directive set: replaced where the block has it, added after `root` where not. */
export function withDirectives(server: string, directives: Record<string, string>): string {
  let out = server;
  for (const [name, value] of Object.entries(directives)) {
    if (!/^[a-z_]+$/.test(name) || /[;{}\n]/.test(value)) throw new Error(`not an nginx directive: '${name} ${value}'`);
    const line = new RegExp(`^([ \\t]*)${name}\\s[^;]*;`, 'm');
    out = line.test(out) ? out.replace(line, `$1${name} ${value};`) : out.replace(/^([ \t]*)(root [^;]*;)/m, `$1$2\n$1${name} ${value};`);
  }
  return out;
}

/**
 * nginx serving `root` with config/nginx-hfk.conf (only listen and root
 * changed). `directives` sets server-block directives for experiments (the
 * benchmarks' `nginx:NAME=VALUE`): one the file has is replaced, another added.
 */
export async function startNginx(
  root: string,
  workDir: string,
  port?: number,
  tls?: { cert: string; key: string },
  directives: Record<string, string> = {},
): Promise<Server & { accessLog: string }> {
  requireTool('nginx', 'nginx-light');
  const p = port ?? (await freePort());
  const dir = join(workDir, `nginx-${p}`);
  for (const sub of ['', 'logs', 'tmp']) mkdirSync(join(dir, sub), { recursive: true });
  const listen = tls ? `listen 127.0.0.1:${p} ssl;\n    ssl_certificate ${tls.cert};\n    ssl_certificate_key ${tls.key};` : `listen 127.0.0.1:${p};`;
  const server = readFileSync(join(REPO, 'config/nginx-hfk.conf'), 'utf8')
    .replace(/listen 80;/, listen)
    .replace(/listen \[::\]:80;/, '')
    .replace(/root \/srv\/hfk;/, `root ${root};`);
  writeFileSync(join(dir, 'server.conf'), withDirectives(server, directives));
  const accessLog = join(dir, 'logs/access.log');
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log ${accessLog};
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  include ${dir}/server.conf;
}
`,
  );
  const child = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off; master_process off;'], { stdio: 'ignore' });
  await waitForPort(p, child);
  return { url: `${tls ? 'https' : 'http'}://127.0.0.1:${p}/`, port: p, pid: child.pid!, accessLog, stop: () => stopChild(child) };
}

/** Lines of an nginx access log that requested `pathPart`. */
export function countRequests(accessLog: string, pathPart: string): number {
  if (!fs.existsSync(accessLog)) return 0;
  return readFileSync(accessLog, 'utf8')
    .split('\n')
    .filter((l) => l.includes(pathPart)).length;
}

/** Squid as a caching proxy, with config/squid-hfk.conf (port, cache folder and logs changed). */
export async function startSquid(workDir: string): Promise<Server> {
  requireTool('squid', 'squid');
  const p = await freePort();
  const dir = join(workDir, `squid-${p}`);
  mkdirSync(join(dir, 'cache'), { recursive: true });
  const conf = readFileSync(join(REPO, 'config/squid-hfk.conf'), 'utf8')
    .replace(/^http_port 3128$/m, `http_port 127.0.0.1:${p}`)
    .replace(/^cache_dir ufs \S+ (\d+)/m, `cache_dir ufs ${dir}/cache 256`)
    .concat(
      `\npid_filename ${dir}/squid.pid\naccess_log ${dir}/access.log\ncache_log ${dir}/cache.log\ncache_store_log none\ncoredump_dir ${dir}\ncache_effective_user proxy\nshutdown_lifetime 0 seconds\n`,
    );
  writeFileSync(join(dir, 'squid.conf'), conf);
  // Squid drops to the proxy user: it must reach and write its folder.
  chmodSync(workDir, 0o755);
  execFileSync('chown', ['-R', 'proxy:proxy', dir]);
  try {
    execFileSync('squid', ['-z', '-N', '-f', join(dir, 'squid.conf')], { stdio: 'pipe' });
  } catch (e) {
    const log = fs.existsSync(join(dir, 'cache.log')) ? readFileSync(join(dir, 'cache.log'), 'utf8').slice(-2000) : '';
    throw new Error(`squid -z failed: ${(e as Error).message}\n${log}`);
  }
  const child = spawn('squid', ['-N', '-f', join(dir, 'squid.conf')], { stdio: 'ignore' });
  await waitForPort(p, child, 30_000);
  return { url: `http://127.0.0.1:${p}/`, port: p, pid: child.pid!, stop: () => stopChild(child) };
}

export type Fault =
  | { kind: 'ok' }
  /** Wait before answering. */
  | { kind: 'slow'; delayMs: number }
  /** Answer at once, then send the body at this many bytes per second. */
  | { kind: 'throttle'; bytesPerSecond: number }
  /** 404 for block objects (a partial mirror); pointer and manifests still served. */
  | { kind: '404' }
  /** Flip bytes in block objects. */
  | { kind: 'corrupt' }
  /** Send half the body, then close the connection. */
  | { kind: 'cut' }
  /** Send the headers and half the body, then nothing. */
  | { kind: 'stall' }
  | { kind: '500' }
  /** Refuse: reset every connection. */
  | { kind: 'reset' };

export interface FaultyMirror extends Server {
  fault: Fault;
  requests: number;
  blockRequests: number;
  /** Every path asked for, in order (relative to the store). */
  paths: string[];
}

/** A mirror serving `root` with a fault that a test can change at any time. */
export async function startFaultyMirror(root: string, fault: Fault = { kind: 'ok' }): Promise<FaultyMirror> {
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  const state: FaultyMirror = { url: '', port: 0, fault, requests: 0, blockRequests: 0, paths: [], stop: async () => {} };
  const server = http.createServer((req, res) => {
    state.requests++;
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/+/, '');
    const isBlock = rel.startsWith('blocks/');
    if (isBlock) state.blockRequests++;
    state.paths.push(rel);
    const f = state.fault;
    if (f.kind === 'reset') return req.socket.destroy();
    if (f.kind === '500') return void res.writeHead(500).end('broken\n');
    if (f.kind === '404' && isBlock) return void res.writeHead(404).end('not here\n');
    let body: Buffer;
    try {
      if (rel.split('/').some((p) => p === '..' || p.startsWith('.'))) throw new Error('bad path');
      body = readFileSync(join(root, rel));
    } catch {
      return void res.writeHead(404).end('not found\n');
    }
    const send = () => {
      const headers = { 'content-length': String(body.length), 'content-type': 'application/octet-stream' };
      if (f.kind === 'corrupt' && isBlock) {
        const bad = Buffer.from(body);
        for (let i = 1; i < bad.length; i += 97) bad[i]! ^= 0x5a;
        return void res.writeHead(200, headers).end(bad);
      }
      if ((f.kind === 'cut' || f.kind === 'stall') && isBlock) {
        res.writeHead(200, headers);
        res.write(body.subarray(0, body.length >> 1));
        if (f.kind === 'cut') later(5, () => req.socket.destroy());
        return; // stall: never finishes; the client's body timeout must fire
      }
      if (f.kind === 'throttle') {
        res.writeHead(200, headers);
        const step = Math.max(1, Math.floor(f.bytesPerSecond / 50));
        let off = 0;
        const tick = () => {
          if (res.destroyed) return;
          res.write(body.subarray(off, off + step));
          off += step;
          if (off >= body.length) res.end();
          else later(20, tick);
        };
        return tick();
      }
      res.writeHead(200, headers).end(body);
    };
    if (f.kind === 'slow') later(f.delayMs, send);
    else send();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as net.AddressInfo).port;
  state.url = `http://127.0.0.1:${state.port}/`;
  state.stop = () =>
    new Promise<void>((resolve) => {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return state;
}

/** A URL on which nothing listens (connections are refused). */
export async function deadUrl(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}/`;
}
