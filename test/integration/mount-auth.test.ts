// hfk mount from private mirrors (HTTP Basic credentials in the mirror URL),
// through the built CLI and a real FUSE mount: the image reads back right,
// and the password shows nowhere a user or a log could see it.

import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { basicAuth } from '../../src/store/auth.ts';
import { hfk, hfkJson } from '../helpers/cli.ts';
import { makeTree, mksquashfs, pseudoRandom } from '../helpers/images.ts';
import { tempDir, tempDirKeep } from '../helpers/tmp.ts';

// Unique, so that finding it anywhere on the machine is a leak of this test's mount.
const PASSWORD = `secret-${Math.random().toString(36).slice(2, 10)}`;
const LOGIN = basicAuth('alice', PASSWORD);

let work: string;
let store: string;
let pub: string;
let image: string;

const run = (cmd: string, args: string[]) =>
  new Promise<string>((resolve, reject) => execFile(cmd, args, (e, out, err) => (e ? reject(new Error(`${cmd} ${args.join(' ')}: ${err || e.message}`)) : resolve(out))));

interface PrivateMirror {
  url: string;
  /** The URL with alice's login in it. */
  withLogin: string;
  /** Answer 503 to every request with the login while set. */
  broken: boolean;
  /** Requests that came without the login (answered 401). */
  unauthorized: number;
}

/** A mirror of `root` on loopback that answers only requests with LOGIN (401 otherwise); closed when the test ends. */
async function startPrivateMirror(root: string): Promise<PrivateMirror> {
  const m: PrivateMirror = { url: '', withLogin: '', broken: false, unauthorized: 0 };
  const server = http.createServer((req, res) => {
    if (req.headers.authorization !== LOGIN) {
      m.unauthorized++;
      res.writeHead(401, { 'www-authenticate': 'Basic realm="hfk"' }).end('login');
      return;
    }
    const file = join(root, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    if (m.broken) {
      res.writeHead(503).end();
    } else if (!file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
    } else {
      res.writeHead(200, { 'content-length': statSync(file).size });
      createReadStream(file).pipe(res);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  onTestFinished(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  m.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  m.withLogin = m.url.replace('http://', `http://alice:${PASSWORD}@`);
  return m;
}

/** The command line of every process on the machine that has one, by pid. */
function allCmdlines(): Map<number, string> {
  const out = new Map<number, string>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      out.set(Number(d), readFileSync(`/proc/${d}/cmdline`, 'latin1').replaceAll('\0', ' '));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

beforeAll(async () => {
  work = tempDirKeep('hfk-mountauth-');
  await hfk(['keygen', '--out', join(work, 'k')]);
  pub = join(work, 'k.pub');
  const tree = join(work, 'tree');
  makeTree(tree, 4);
  writeFileSync(join(tree, 'big.bin'), pseudoRandom(2 << 20, 5));
  store = join(work, 'store');
  image = mksquashfs(tree, join(work, 'r.sqfs'), ['-noI', '-noD']);
  await hfkJson(['publish', image, '--store', store, '--name', 'sq', '--key', join(work, 'k.key')]);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('hfk mount from a mirror that wants HTTP Basic auth (credentials in the URL)', () => {
  it('reads the image back right, and the password is in no log, command line, stats.json or output', async () => {
    const mirror = await startPrivateMirror(store);
    const dir = tempDir('hfk-mountauth-');
    const fuse = join(dir, 'fuse');
    mkdirSync(fuse);
    const log = join(dir, 'mount.log');
    const r = await hfk(['mount', fuse, '--name', 'sq', '--mirrors', mirror.withLogin, '--key', pub, '--log', log, '--prefetch', '0', '--readahead', '0', '--soft', '--soft-timeout', '2', '--json'], {
      env: { http_proxy: '', all_proxy: '', ALL_PROXY: '', HOME: join(dir, 'no-home') },
    });
    expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
    onTestFinished(async () => {
      await hfk(['umount', fuse]);
    });

    // While the mirror fails, a read fails (soft mode) and the log says so, naming the mirror.
    mirror.broken = true;
    const size = statSync(image).size;
    await expect(run('dd', [`if=${join(fuse, 'sq.img')}`, 'of=/dev/null', 'bs=4k', `skip=${Math.floor(size / 4096) - 1}`, 'count=1', 'status=none'])).rejects.toThrow(/Input\/output error/);
    mirror.broken = false;
    // The image, read through the mount by another process, is the one published.
    await run('cmp', [image, join(fuse, 'sq.img')]);
    expect(mirror.unauthorized).toBe(0);

    // The processes hfk mount started: the keeper (pid in --json, and in stats.json) and its reader.
    const stats = readFileSync(join(fuse, '.hfk/stats.json'), 'utf8');
    const { pid: readerPid, keeper, mirrors } = JSON.parse(stats) as { pid: number; keeper: { pid: number }; mirrors: { url: string }[] };
    const out = JSON.parse(r.stdout) as { pid: number; log: string };
    expect(keeper.pid).toBe(out.pid);
    const cmdlines = allCmdlines();
    const keeperCmd = cmdlines.get(keeper.pid)!;
    expect(keeperCmd).toContain(fuse);
    expect(cmdlines.get(readerPid)).toMatch(/^hfk-reader/); // its process title
    // No process on the machine shows the password: the keeper got the mirrors in a private mirror list, removed once it started.
    for (const [pid, cmd] of cmdlines) expect(cmd, `/proc/${pid}/cmdline`).not.toContain(PASSWORD);
    const listFile = /--mirrorlist (\S+)/.exec(keeperCmd)?.[1];
    expect(listFile, keeperCmd).toBeDefined();
    expect(existsSync(listFile!)).toBe(false);

    // stats.json names the mirrors without credentials.
    expect(mirrors.map((m) => m.url)).toEqual([mirror.url]);
    expect(stats).not.toContain(PASSWORD);
    expect(stats).not.toContain('alice:');

    // Neither the command's output nor the log: the log names the mirror by its URL without the login.
    expect(r.stdout + r.stderr).not.toContain(PASSWORD);
    expect(r.stdout).toContain(mirror.url);
    const logText = readFileSync(log, 'utf8');
    expect(logText).not.toContain(PASSWORD);
    expect(logText, logText).toContain(`mirror ${mirror.url} failed`);
  });
});
