// Proxies from the environment (http_proxy, no_proxy) and credentials for
// private mirrors (in the URL, in a netrc file), through the hfk command:
// a tiny recording proxy and a mirror that wants HTTP Basic auth, on loopback.

import { once } from 'node:events';
import { createReadStream, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { BrokenError } from '../../src/errors.ts';
import { Origins } from '../../src/source/origin.ts';
import { basicAuth } from '../../src/store/auth.ts';
import { HttpOrigin } from '../../src/store/http.ts';
import { hfk, hfkJson } from '../helpers/cli.ts';
import { makeTree, mksquashfs } from '../helpers/images.ts';
import { tempDirKeep } from '../helpers/tmp.ts';

const PASSWORD = 'pw-Zq81xK';
const LOGIN = basicAuth('alice', PASSWORD);

let work: string;
let store: string;
let pubFile: string;
let image: Buffer;

beforeAll(async () => {
  work = tempDirKeep('hfk-proxyauth-');
  await hfk(['keygen', '--out', join(work, 'k')]);
  pubFile = join(work, 'k.pub');
  const tree = join(work, 'tree');
  makeTree(tree, 3);
  store = join(work, 'store');
  const img = mksquashfs(tree, join(work, 'v1.sqfs'), ['-noI', '-noD', '-noF', '-noX']);
  await hfkJson(['publish', img, '--store', store, '--name', 't', '--key', join(work, 'k.key'), '--block-size', '16K']);
  image = readFileSync(img);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Recorded {
  url: string;
  /** What each request carried in Authorization ('' for none). */
  seen: { path: string; auth: string }[];
}

/** Listens on loopback until the test ends; `detached` sockets (CONNECT tunnels) are ended with it. */
async function listen(server: http.Server, detached: Set<net.Socket> = new Set()): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  onTestFinished(
    () =>
      new Promise<void>((r) => {
        for (const s of detached) s.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  return (server.address() as AddressInfo).port;
}

/** Serves `root`; with `login`, only to requests carrying that Authorization. `redirectTo` answers 302 to another base. */
async function startMirror(root: string, o: { login?: string; redirectTo?: string } = {}): Promise<Recorded> {
  const rec: Recorded = { url: '', seen: [] };
  const server = http.createServer((req, res) => {
    const auth = req.headers.authorization ?? '';
    rec.seen.push({ path: req.url ?? '', auth });
    if (o.redirectTo) {
      res.writeHead(302, { location: o.redirectTo + (req.url ?? '/').slice(1) }).end();
      return;
    }
    if (o.login && auth !== o.login) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="hfk"' }).end('login');
      return;
    }
    const file = join(root, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    if (!file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': statSync(file).size });
    createReadStream(file).pipe(res);
  });
  rec.url = `http://127.0.0.1:${await listen(server)}/`;
  return rec;
}

interface Proxy {
  url: string;
  /** Request lines as received: absolute-form URIs for forwarded requests, CONNECT host:port for tunnels. */
  lines: string[];
}

/** A forwarding proxy that records each request line. */
async function startProxy(): Promise<Proxy> {
  const p: Proxy = { url: '', lines: [] };
  const server = http.createServer((req, res) => {
    p.lines.push(`${req.method} ${req.url}`);
    const target = new URL(req.url ?? '');
    const up = http.request({ host: target.hostname, port: target.port, path: target.pathname + target.search, method: req.method, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.writeHead(502).end());
    req.pipe(up);
  });
  const tunnels = new Set<net.Socket>();
  server.on('connect', (req, socket: net.Socket, head) => {
    p.lines.push(`CONNECT ${req.url}`);
    const [host, port] = (req.url ?? '').split(':');
    const up = net.connect(Number(port), host!, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    tunnels.add(socket).add(up);
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  p.url = `http://127.0.0.1:${await listen(server, tunnels)}/`;
  return p;
}

/** hfk get of t into a fresh file; the environment is cleared of the machine's own proxies. */
function get(args: string[], env: Record<string, string> = {}) {
  const out = join(work, `out-${Math.random().toString(36).slice(2)}.img`);
  const clean = { http_proxy: '', https_proxy: '', HTTPS_PROXY: '', all_proxy: '', ALL_PROXY: '', no_proxy: '', NO_PROXY: '', HOME: join(work, 'home-none') };
  return hfk(['get', 't', '--key', pubFile, '--out', out, '--soft', '--soft-timeout', '5', ...args], { env: { ...clean, ...env } }).then((r) => ({ ...r, out }));
}

describe('proxies from the environment, as curl reads them', () => {
  it('http_proxy carries every request, in absolute form', async () => {
    const mirror = await startMirror(store);
    const proxy = await startProxy();
    const r = await get(['--mirrors', mirror.url, '--quiet'], { http_proxy: proxy.url });
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(r.out).equals(image)).toBe(true);
    expect(proxy.lines.length).toBeGreaterThan(2);
    for (const line of proxy.lines) expect(line).toMatch(new RegExp(`^GET ${mirror.url.replace(/[.]/g, '\\.')}`));
    expect(mirror.seen.length).toBe(proxy.lines.length);
  });

  it('no_proxy sends the mirror direct; upper-case HTTP_PROXY is ignored', async () => {
    const mirror = await startMirror(store);
    const proxy = await startProxy();
    const bypass = await get(['--mirrors', mirror.url, '--quiet'], { http_proxy: proxy.url, no_proxy: 'localhost,127.0.0.1' });
    expect(bypass.code, bypass.stderr).toBe(0);
    const upper = await get(['--mirrors', mirror.url, '--quiet'], { HTTP_PROXY: proxy.url });
    expect(upper.code, upper.stderr).toBe(0);
    expect(proxy.lines).toEqual([]);
    expect(mirror.seen.length).toBeGreaterThan(4);
  });

  it("--proxy wins over the environment, and --proxy '' turns it off", async () => {
    const mirror = await startMirror(store);
    const envProxy = await startProxy();
    const flagProxy = await startProxy();
    const r = await get(['--mirrors', mirror.url, '--quiet', '--proxy', flagProxy.url], { http_proxy: envProxy.url, no_proxy: '127.0.0.1' });
    expect(r.code, r.stderr).toBe(0);
    expect(flagProxy.lines.length).toBeGreaterThan(2);
    const off = await get(['--mirrors', mirror.url, '--quiet', '--proxy', ''], { http_proxy: envProxy.url });
    expect(off.code, off.stderr).toBe(0);
    expect(envProxy.lines).toEqual([]);
  });

  it('https goes through a CONNECT tunnel (https_proxy)', async () => {
    const proxy = await startProxy();
    const origins = new Origins({ proxy: { https: proxy.url }, connectTimeoutMs: 2000, headersTimeoutMs: 2000 });
    onTestFinished(() => origins.close());
    // Nothing listens for TLS on the port: the tunnel is asked for, then the handshake fails.
    const closed = net.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const port = (closed.address() as AddressInfo).port;
    closed.on('connection', (s) => s.destroy());
    onTestFinished(() => new Promise<void>((r) => closed.close(() => r())));
    await expect(origins.open(`https://127.0.0.1:${port}/hfk/`).read('x')).rejects.toThrow(BrokenError);
    expect(proxy.lines).toEqual([`CONNECT 127.0.0.1:${port}`]);
  });
});

describe('credentials for a private mirror', () => {
  it('from the URL: sent on every request, never printed', async () => {
    const mirror = await startMirror(store, { login: LOGIN });
    const withLogin = mirror.url.replace('http://', `http://alice:${PASSWORD}@`);
    const r = await get(['--mirrors', withLogin, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(r.out).equals(image)).toBe(true);
    expect(mirror.seen.every((s) => s.auth === LOGIN)).toBe(true);
    expect(r.stdout + r.stderr).not.toContain(PASSWORD);
    expect(JSON.parse(r.stdout).mirrors.map((m: { url: string }) => m.url)).toEqual([mirror.url]);
  });

  it('a wrong password fails with a hint, and is not printed either', async () => {
    const mirror = await startMirror(store, { login: LOGIN });
    const r = await get(['--mirrors', mirror.url.replace('http://', 'http://alice:wrong-Pw77@'), '--soft-timeout', '2']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/401/);
    expect(r.stdout + r.stderr).not.toContain('wrong-Pw77');
  });

  it('from ~/.netrc, or the netrc: file of --config', async () => {
    const mirror = await startMirror(store, { login: LOGIN });
    const home = join(work, 'home');
    mkdirSync(home, { recursive: true });
    writeFileSync(join(home, '.netrc'), `machine 127.0.0.1 login alice password ${PASSWORD}\n`, { mode: 0o600 });
    const viaHome = await get(['--mirrors', mirror.url], { HOME: home });
    expect(viaHome.code, viaHome.stderr).toBe(0);
    expect(viaHome.stdout + viaHome.stderr).not.toContain(PASSWORD);

    const cfg = join(work, 'hfk.yaml');
    writeFileSync(join(work, 'private.netrc'), `default login alice password ${PASSWORD}\n`, { mode: 0o600 });
    writeFileSync(cfg, `mirrors: [${mirror.url}]\nnetrc: private.netrc\n`);
    const viaConfig = await get(['--config', cfg, '--json']);
    expect(viaConfig.code, viaConfig.stderr).toBe(0);
    expect(viaConfig.stdout + viaConfig.stderr).not.toContain(PASSWORD);
    expect(mirror.seen.filter((s) => s.auth !== LOGIN).map((s) => s.path)).toEqual([]);
  });

  it('never to a redirect target on another origin', async () => {
    const target = await startMirror(store);
    const redirector = await startMirror(store, { redirectTo: target.url });
    const origins = new Origins({});
    onTestFinished(() => origins.close());
    const origin = origins.open(redirector.url.replace('http://', `http://alice:${PASSWORD}@`));
    expect(origin.location).toBe(redirector.url);
    await origin.read('t/pointer').catch(() => {});
    expect(redirector.seen.map((s) => s.auth)).toEqual([LOGIN]);
    expect(target.seen.length).toBe(1);
    expect(target.seen[0]!.auth).toBe('');
  });

  it('never to a redirect target on another origin, through undici either', async () => {
    const target = await startMirror(store);
    const redirector = await startMirror(store, { redirectTo: target.url });
    const origin = new HttpOrigin(redirector.url, { authorization: LOGIN });
    onTestFinished(() => origin.close());
    await origin.read('t/pointer').catch(() => {});
    expect(redirector.seen.map((s) => s.auth)).toEqual([LOGIN]);
    expect(target.seen.map((s) => s.auth)).toEqual(['']);
  });
});
