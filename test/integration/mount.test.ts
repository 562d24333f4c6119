// hfk mount end to end: real images from real trees, served by real nginx,
// mounted by the built CLI (its reader runs as a separate process), then
// loop-mounted and compared file by file with the source tree.

import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { copiesForNobody, HFK, hfk, hfkJson } from '../helpers/cli.ts';
import { makeTree, mkext4, mksquashfs, pseudoRandom, treeListing } from '../helpers/images.ts';
import { BASELINE_JIT_FLAGS } from '../../src/reader/launch.ts';
import { type FaultyMirror, startFaultyMirror, startNginx, startSquid } from '../helpers/mirrors.ts';
import { tempDir, tempDirKeep } from '../helpers/tmp.ts';

let work: string;
let store: string;
let tree: string;
let pub: string;

const run = (cmd: string, args: string[]) =>
  new Promise<string>((resolve, reject) => execFile(cmd, args, (e, out, err) => (e ? reject(new Error(`${cmd} ${args.join(' ')}: ${err || e.message}`)) : resolve(out))));

function isMounted(p: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === p);
}

/** hfk mount + loop mount; both undone when the test ends (even if it fails). */
async function mountImage(name: string, mirrors: string[], extra: string[] = []): Promise<{ fuse: string; root: string; log: string; pid: number }> {
  const dir = tempDir('hfk-mnt-');
  const fuse = join(dir, 'fuse');
  const root = join(dir, 'root');
  mkdirSync(fuse);
  mkdirSync(root);
  const log = join(dir, 'reader.log');
  const r = await hfk(['mount', fuse, '--name', name, '--mirrors', mirrors.join(','), '--key', pub, '--log', log, '--json', ...extra]);
  expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
  onTestFinished(async () => {
    if (isMounted(root)) await run('umount', [root]);
    if (isMounted(fuse)) await hfk(['umount', fuse]);
  });
  // Asynchronously: a test's mirrors may live in this process and must keep serving.
  await run('mount', ['-o', 'loop,ro', join(fuse, `${name}.img`), root]);
  return { fuse, root, log, pid: (JSON.parse(r.stdout) as { pid: number }).pid };
}

beforeAll(async () => {
  work = tempDirKeep('hfk-mount-');
  await hfk(['keygen', '--out', join(work, 'k')]);
  pub = join(work, 'k.pub');
  tree = join(work, 'tree');
  makeTree(tree, 9);
  // A bigger file, so a full read takes many blocks.
  writeFileSync(join(tree, 'usr/big.bin'), pseudoRandom(6 << 20, 99));
  store = join(work, 'store');
  const key = join(work, 'k.key');
  await hfkJson(['publish', mksquashfs(tree, join(work, 'r.sqfs')), '--store', store, '--name', 'sq', '--key', key]);
  await hfkJson(['publish', mkext4(tree, join(work, 'r.ext4'), 24), '--store', store, '--name', 'ext', '--key', key, '--block-size', '16K']);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('hfk mount', () => {
  for (const name of ['sq', 'ext']) {
    it(`${name}: every file, mode and symlink of the loop-mounted image equals the source tree`, async () => {
      const dir = tempDir();
      const nginx = await startNginx(store, dir);
      onTestFinished(() => nginx.stop());
      const { fuse, root, pid } = await mountImage(name, [nginx.url]);
      expect(await treeListing(root)).toBe(await treeListing(tree));
      // The reader runs with malloc's heap on huge pages (readerEnv).
      expect(readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0')).toContain('GLIBC_TUNABLES=glibc.malloc.hugetlb=1');
      // … and, before the script, with Sparkplug as its only JIT (plain-HTTP mirrors) and V8's young generation held small (readerNodeFlags).
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      expect(cmdline.slice(1, BASELINE_JIT_FLAGS.length + 2)).toEqual([...BASELINE_JIT_FLAGS, '--max-semi-space-size=8']);
      const stats = JSON.parse(readFileSync(join(fuse, '.hfk/stats.json'), 'utf8'));
      expect(stats.image.name).toBe(name);
      expect(stats.bytesFetched).toBeGreaterThan(0);
      expect(stats.mirrors[0].url).toBe(nginx.url);
    });
  }

  it("through a real Squid proxy: the files are exact, and the reader (undici's client) runs with V8's full JIT", async () => {
    const dir = tempDir();
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const squid = await startSquid(dir);
    onTestFinished(() => squid.stop());
    const { root, pid } = await mountImage('sq', [nginx.url], ['--proxy', squid.url]);
    expect(await treeListing(root)).toBe(await treeListing(tree));
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
    expect(cmdline[1]).toBe('--max-semi-space-size=8');
    expect(cmdline).not.toContain('--no-turbofan');
  });

  it('says once that a --cache or --log folder does not exist yet, and creates it', async () => {
    const dir = tempDir();
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const fuse = join(dir, 'fuse');
    mkdirSync(fuse);
    const cache = join(dir, 'new-cache');
    const log = join(dir, 'logs', 'reader.log');
    const mount = () => hfk(['mount', fuse, '--name', 'sq', '--mirrors', nginx.url, '--key', pub, '--cache', cache, '--log', log]);
    const first = await mount();
    expect(first.code, first.stderr).toBe(0);
    onTestFinished(async () => {
      if (isMounted(fuse)) await hfk(['umount', fuse]);
    });
    expect(first.stderr).toContain(`--cache ${cache}: folder ${cache} does not exist yet; creating it`);
    expect(first.stderr).toContain(`--log ${log}: folder ${join(dir, 'logs')} does not exist yet; creating it`);
    expect(statSync(join(cache, 'blocks')).isDirectory()).toBe(true);
    expect(readFileSync(log, 'utf8')).not.toMatch(/does not exist yet/); // the background reader does not say it again
    expect((await hfk(['umount', fuse])).code).toBe(0);
    const again = await mount();
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toMatch(/does not exist yet/);
  });

  it('hfk umount ends the mount and its reader; --json says what it unmounted', async () => {
    const dir = tempDir();
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const { fuse, root, pid } = await mountImage('sq', [nginx.url]);
    await run('umount', [root]);
    const r = await hfk(['umount', fuse, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ unmounted: fuse, lazy: false });
    expect(isMounted(fuse)).toBe(false);
    // The reader exits once its mount is gone (waited for, not timed: the test's own timeout is the limit).
    while (existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ')) await new Promise((res) => setTimeout(res, 50));
    // A second umount finds nothing there, and says so.
    const again = await hfk(['umount', fuse]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain(`nothing is mounted on ${fuse}`);
  });

  it('concurrent readers in separate processes all get exact bytes', async () => {
    const dir = tempDir();
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const { root } = await mountImage('sq', [nginx.url]);
    const want = execFileSync('sh', ['-c', `cd ${tree} && find . -type f | sort | xargs sha256sum`]).toString();
    const jobs = Array.from({ length: 6 }, () =>
      new Promise<string>((resolve, reject) =>
        execFile('sh', ['-c', `cd ${root} && find . -type f | sort | xargs sha256sum`], (e, out) => (e ? reject(e) : resolve(out))),
      ),
    );
    for (const out of await Promise.all(jobs)) expect(out).toBe(want);
  });

  it('a mirror stopped in the middle of a full read: no I/O error reaches the reader', async () => {
    const a = await startFaultyMirror(store, { kind: 'slow', delayMs: 5 });
    const b: FaultyMirror = await startFaultyMirror(store, { kind: 'slow', delayMs: 40 });
    onTestFinished(() => a.stop());
    onTestFinished(() => b.stop());
    const { root } = await mountImage('sq', [a.url, b.url], ['--memory', '1M']);
    // Read the big file in a child process; stop the preferred mirror once it has served some blocks.
    const reading = new Promise<string>((resolve, reject) =>
      execFile('sha256sum', [join(root, 'usr/big.bin')], (e, out) => (e ? reject(e) : resolve(out))),
    );
    while (a.blockRequests < 5) await new Promise((r) => setTimeout(r, 10));
    await a.stop();
    const out = await reading;
    const want = execFileSync('sha256sum', [join(tree, 'usr/big.bin')]).toString().split(' ')[0];
    expect(out.split(' ')[0]).toBe(want);
    expect(b.blockRequests).toBeGreaterThan(0);
  });

  it('kill -9 of the reader, again and again, during a full read: exact bytes, and the keeper starts another each time', async () => {
    const slow = await startFaultyMirror(store, { kind: 'slow', delayMs: 30 });
    onTestFinished(() => slow.stop());
    const { root, fuse, pid: keeper } = await mountImage('sq', [slow.url], ['--memory', '1M']);
    const stats = () => JSON.parse(readFileSync(join(fuse, '.hfk/stats.json'), 'utf8')) as { pid: number; keeper: { pid: number; generation: number } };
    const first = stats();
    expect(first.keeper).toEqual({ pid: keeper, generation: 1 });
    expect(first.pid).not.toBe(keeper);
    const reading = new Promise<string>((resolve, reject) =>
      execFile('sha256sum', [join(root, 'usr/big.bin')], (e, out, err) => (e ? reject(new Error(`${e.message}: ${err}`)) : resolve(out))),
    );
    const killed: number[] = [];
    for (let i = 0; i < 3; i++) {
      const before = slow.blockRequests;
      while (slow.blockRequests < before + 3) await new Promise((r) => setTimeout(r, 10));
      const s = stats();
      process.kill(s.pid, 'SIGKILL');
      killed.push(s.pid);
    }
    const out = await reading;
    expect(out.split(' ')[0]).toBe(execFileSync('sha256sum', [join(tree, 'usr/big.bin')]).toString().split(' ')[0]);
    const after = stats();
    expect(after.keeper.pid).toBe(keeper);
    expect(after.keeper.generation).toBeGreaterThanOrEqual(4);
    expect(killed).not.toContain(after.pid);
    expect(await treeListing(root)).toBe(await treeListing(tree));
  });

  it('hfk mount --upgrade: a new reader takes over while a read runs; the read is exact', async () => {
    const slow = await startFaultyMirror(store, { kind: 'slow', delayMs: 20 });
    onTestFinished(() => slow.stop());
    const { root, fuse } = await mountImage('ext', [slow.url], ['--memory', '1M']);
    const reading = new Promise<string>((resolve, reject) =>
      execFile('sha256sum', [join(root, 'usr/big.bin')], (e, out, err) => (e ? reject(new Error(`${e.message}: ${err}`)) : resolve(out))),
    );
    while (slow.blockRequests < 3) await new Promise((r) => setTimeout(r, 10));
    const r = await hfkJson(['mount', '--upgrade', fuse]) as { previousReader: number; reader: number; generation: number };
    expect(r.reader).not.toBe(r.previousReader);
    expect(r.generation).toBe(2);
    const out = await reading;
    expect(out.split(' ')[0]).toBe(execFileSync('sha256sum', [join(tree, 'usr/big.bin')]).toString().split(' ')[0]);
    // The old reader drained and exited.
    await expect.poll(() => existsSync(`/proc/${r.previousReader}`), { timeout: 15_000 }).toBe(false);
  });

  it('a corrupting mirror: the files are still exact', async () => {
    const dir = tempDir();
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const liar = await startFaultyMirror(store, { kind: 'ok' });
    onTestFinished(() => liar.stop());
    const { root, fuse } = await mountImage('ext', [liar.url, nginx.url]);
    liar.fault = { kind: 'corrupt' };
    expect(await treeListing(root)).toBe(await treeListing(tree));
    const stats = JSON.parse(readFileSync(join(fuse, '.hfk/stats.json'), 'utf8'));
    const liarStats = stats.mirrors.find((m: { url: string }) => m.url === liar.url);
    expect(liarStats.invalid).toBeGreaterThan(0);
  });
});

describe('hfk mount: bad input leaves nothing mounted', () => {
  let nginxUrl: string;
  let stop: () => Promise<void>;
  beforeAll(async () => {
    const dir = tempDirKeep();
    const n = await startNginx(store, dir);
    nginxUrl = n.url;
    stop = async () => {
      await n.stop();
      rmSync(dir, { recursive: true, force: true });
    };
  });
  afterAll(() => stop());

  const cases: [string, (mp: string) => string[], RegExp][] = [
    ['no such image', (mp) => ['mount', mp, '--name', 'nope', '--mirrors', nginxUrl, '--key', pub], /no mirror has image 'nope'/],
    ['a wrong key', (mp) => ['mount', mp, '--name', 'sq', '--mirrors', nginxUrl, '--key', join(work, 'other.pub')], /signed by key [0-9a-f]{16}, not by the pinned key|fails verification/],
    ['a missing mountpoint', (mp) => ['mount', join(mp, 'nope'), '--name', 'sq', '--mirrors', nginxUrl, '--key', pub], /mountpoint .*nope does not exist/],
    ['a private key as --key', (mp) => ['mount', mp, '--name', 'sq', '--mirrors', nginxUrl, '--key', join(work, 'k.key')], /is a private key; give the public key/],
    ['no mirrors', (mp) => ['mount', mp, '--name', 'sq', '--key', pub], /no mirrors given/],
  ];
  for (const [what, args, message] of cases) {
    it(what, async () => {
      if (what === 'a wrong key') await hfk(['keygen', '--out', join(work, 'other'), '--force']);
      const mp = tempDir();
      const r = await hfk([...args(mp), '--log', join(tempDir(), `${what.replace(/\W/g, '')}.log`)]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(message);
      expect(isMounted(mp)).toBe(false);
    });
  }

  it('a busy mountpoint', async () => {
    const mp = tempDir();
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', mp]);
    onTestFinished(() => void execFileSync('umount', [mp]));
    const r = await hfk(['mount', mp, '--name', 'sq', '--mirrors', nginxUrl, '--key', pub]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/already has tmpfs \(tmpfs\) mounted on it/);
  });

  it('not root', async () => {
    const mp = tempDir();
    const inlineKey = readFileSync(pub, 'utf8').split(' ')[1]!; // the key file itself sits in a root-only folder
    const copies = copiesForNobody([HFK, join(dirname(HFK), 'hfk-cli.mjs')]); // the launcher loads the bundle beside it
    onTestFinished(copies.remove);
    const r = execFileSync('sh', ['-c', `setpriv --reuid=65534 --regid=65534 --clear-groups ${copies.node} ${copies.path(HFK)} mount ${mp} --name sq --mirrors ${nginxUrl} --key ${inlineKey} 2>&1; echo "exit=$?"`]).toString();
    expect(r).toMatch(/needs root/);
    expect(r).toMatch(/exit=1/);
  });

  it('hfk umount of something that is not an hfk mount', async () => {
    const mp = tempDir();
    const r = await hfk(['umount', mp]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/nothing is mounted on/);
  });
});
