// The release artifacts as a user gets them: `npm run package` builds the
// .deb and the single executable; the .deb is installed with dpkg into a
// clean Debian 12 root (the cached debootstrap root of test/lab, under an
// overlay so the cache stays untouched) and used there: hfk --version, hfk
// serve answering a GET, hfk mount and mount -t hfk reading an image back,
// man pages and bash completion in place. And the version check: the
// machine's old Node running dist/hfk.mjs gets a sentence, not a crash.

import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HFK, hfk, hfkJson, REPO, waitForLine } from '../helpers/cli.ts';
import { makeTree, mksquashfs } from '../helpers/images.ts';
import { DEB, ensurePackage, SEA, VERSION } from '../helpers/package.ts';
import { tempDirKeep } from '../helpers/tmp.ts';
import { ensureDebianRoot } from '../lab/debian-root.ts';

const OLD_NODE = '/usr/bin/node';

function run(cmd: string, args: string[], timeout = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { timeout, maxBuffer: 16 << 20 }, (e, stdout, stderr) => {
      if (e && typeof e.code !== 'number') return reject(e);
      resolve({ code: e ? (e.code as number) : 0, stdout, stderr });
    }),
  );
}

function mounted(p: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === p);
}

// The artifacts are built once (shared with test/vm/package.test.ts): the .deb and dist/hfk take minutes.
beforeAll(() => {
  ensurePackage();
}, 900_000);

describe('the version check', () => {
  it.runIf(existsSync(OLD_NODE) && !execFileSync(OLD_NODE, ['--version'], { encoding: 'utf8' }).startsWith('v24'))(
    'dist/hfk.mjs on an older Node says it needs Node 24 and exits 1, before the bundle can fail',
    async () => {
      const r = await run(OLD_NODE, [HFK, '--version']);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^hfk needs Node 24 or newer \(this is \d+\.\d+\.\d+\): .*node_modules\/\.bin\/node/);
      expect(r.stderr).not.toContain('SyntaxError');
    },
  );

  it('dist/hfk.mjs on the pinned Node runs the CLI', async () => {
    expect((await hfk(['--version'])).stdout).toBe(`hfk ${VERSION} (node ${process.versions.node})\n`);
  });
});

describe('the single executable dist/hfk', () => {
  it('prints the version with no Node on PATH and an empty environment', async () => {
    const r = await new Promise<string>((resolve, reject) => execFile(SEA, ['--version'], { env: {} }, (e, out) => (e ? reject(e) : resolve(out))));
    expect(r).toBe(`hfk ${VERSION} (node ${process.versions.node})\n`);
  });

  it('runs a command given the way hfk starts copies of itself (Node options, then its own path)', async () => {
    const r = await run(SEA, ['--max-semi-space-size=8', SEA, 'help', 'serve']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: hfk serve --store DIR/);
  });
});

// Root and /dev/fuse are what every mount test needs; the Debian root is made (and cached) if missing.
const canChroot = process.getuid?.() === 0 && existsSync('/dev/fuse');

describe.runIf(canChroot)('the .deb in a clean Debian 12 root', () => {
  let work: string;
  let root: string; // the overlay's merged folder: the Debian root with the package installed
  const mounts: string[] = []; // unmounted in reverse order
  let serve: ChildProcess | undefined;
  let port: number;
  let image: Buffer;
  let store: string;

  const inRoot = (args: string[], timeout?: number) => run('chroot', [root, ...args], timeout);

  beforeAll(async () => {
    const debianRoot = await ensureDebianRoot({ log: (l) => process.stderr.write(`${l}\n`) });
    work = tempDirKeep('hfk-package-');
    root = join(work, 'root');
    for (const d of ['upper', 'ovl-work', 'root']) mkdirSync(join(work, d));
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${debianRoot},upperdir=${join(work, 'upper')},workdir=${join(work, 'ovl-work')}`, root]);
    mounts.push(root);
    execFileSync('mount', ['-t', 'proc', 'proc', join(root, 'proc')]);
    mounts.push(join(root, 'proc'));
    execFileSync('mount', ['--bind', '/dev', join(root, 'dev')]);
    mounts.push(join(root, 'dev'));
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', join(root, 'run')]);
    mounts.push(join(root, 'run'));

    // A small store, made on the host with the hfk of this checkout.
    const tree = join(work, 'tree');
    makeTree(tree, 26);
    const img = mksquashfs(tree, join(work, 'demo.sqfs'));
    image = readFileSync(img);
    await hfk(['keygen', '--out', join(work, 'k')]);
    store = join(work, 'store');
    await hfkJson(['publish', img, '--store', store, '--name', 'demo', '--key', join(work, 'k.key')]);
    cpSync(store, join(root, 'srv/hfk'), { recursive: true });
    copyFileSync(DEB, join(root, 'tmp/hfk.deb'));
  }, 1_200_000); // debootstrap, the first time on a machine

  afterAll(async () => {
    serve?.kill('SIGTERM');
    if (serve && serve.exitCode === null) await new Promise((r) => serve!.once('exit', r));
    // hfk mounts first (their keepers end with them), then what the test mounted.
    for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const p = l.split(' ')[4];
      if (p && root && p.startsWith(`${root}/`) && !mounts.includes(p)) execFileSync('umount', ['-l', p]);
    }
    for (const p of mounts.reverse()) if (mounted(p)) execFileSync('umount', ['-l', p]);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('installs with dpkg -i, its dependencies already in a minimal Debian', async () => {
    const r = await inRoot(['dpkg', '-i', '/tmp/hfk.deb']);
    expect(r.code, r.stderr).toBe(0);
    const status = await inRoot(['dpkg-query', '-W', '-f', '${Status} ${Version}', 'hfk']);
    expect(status.stdout).toBe(`install ok installed ${VERSION}`);
  });

  it('hfk --version runs with the packaged Node 24 (the root has no other Node)', async () => {
    expect(existsSync(join(root, 'usr/bin/node'))).toBe(false);
    const r = await inRoot(['hfk', '--version']);
    expect(r.stdout).toBe(`hfk ${VERSION} (node ${process.versions.node})\n`);
  });

  it('hfk serve serves the store: a GET of a file of it answers its bytes', async () => {
    serve = spawn('chroot', [root, 'hfk', 'serve', '--store', '/srv/hfk', '--port', '0', '--json', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const m = await waitForLine(serve, /"port":(\d+)/);
    port = Number(m[1]);
    const files = (readdirSync(store, { recursive: true }) as string[]).filter((f) => statSync(join(store, f)).isFile());
    expect(files.length).toBeGreaterThan(0);
    const file = relative(store, join(store, files[0]!));
    const res = await fetch(`http://127.0.0.1:${port}/${file}`);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(readFileSync(join(store, file)))).toBe(true);
  });

  it('hfk mount mounts the image from that mirror and it reads back byte for byte', async () => {
    mkdirSync(join(root, 'mnt/a'));
    copyFileSync(join(work, 'k.pub'), join(root, 'etc/hfk/hfk.pub'));
    const r = await inRoot(['hfk', 'mount', '/mnt/a', '--name', 'demo', '--mirrors', `http://127.0.0.1:${port}/`, '--key', '/etc/hfk/hfk.pub'], 300_000);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(root, 'mnt/a/demo.img')).equals(image)).toBe(true);
    expect((await inRoot(['hfk', 'umount', '/mnt/a'])).code).toBe(0);
    expect(mounted(join(root, 'mnt/a'))).toBe(false);
  });

  it('mount -t hfk NAME@URL DIR mounts through /sbin/mount.hfk (key from /etc/hfk/hfk.pub)', async () => {
    mkdirSync(join(root, 'mnt/b'));
    const r = await inRoot(['mount', '-t', 'hfk', `demo@http://127.0.0.1:${port}/`, '/mnt/b', '-o', 'ro,nofail,memory=64M'], 300_000);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(root, 'mnt/b/demo.img')).equals(image)).toBe(true);
    expect((await inRoot(['umount', '/mnt/b'])).code).toBe(0);
    // An option hfk does not know is refused by name, and nothing is mounted.
    const bad = await inRoot(['mount', '-t', 'hfk', `demo@http://127.0.0.1:${port}/`, '/mnt/b', '-o', 'colour=blue']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("unknown option 'colour'");
    expect(mounted(join(root, 'mnt/b'))).toBe(false);
  });

  it('installs the units, the default config as a conffile, man pages and bash completion', async () => {
    for (const f of ['lib/systemd/system/hfk-serve.service', 'lib/systemd/system/hfk-mount@.service', 'usr/share/man/man8/mount.hfk.8.gz']) expect(existsSync(join(root, f)), f).toBe(true);
    expect((await inRoot(['dpkg-query', '-W', '-f', '${Conffiles}', 'hfk'])).stdout).toContain('/etc/hfk/hfk.yaml');
    // The installed default config is the documented, all-commented example, which hfk reads as valid.
    expect(readFileSync(join(root, 'etc/hfk/hfk.yaml'), 'utf8')).toBe(readFileSync(join(REPO, 'config/hfk.yaml'), 'utf8'));
    const serveMan = gunzipSync(readFileSync(join(root, 'usr/share/man/man1/hfk-serve.1.gz'))).toString();
    expect(serveMan).toContain('.SH OPTIONS');
    expect(serveMan).toContain('\\fB\\-\\-store\\fR \\fIDIR\\fR');
    const complete = (line: string) =>
      inRoot(['bash', '-c', `. /usr/share/bash-completion/completions/hfk; COMP_WORDS=(${line}); COMP_CWORD=$((\${#COMP_WORDS[@]}-1)); _hfk; echo "\${COMPREPLY[*]}"`]);
    expect((await complete('hfk mo')).stdout).toBe('mount\n');
    expect((await complete('hfk serve --st')).stdout).toBe('--store\n');
  });

  it('the single executable runs in the root, which has no Node, and mounts: it starts copies of itself as a background keeper and readers', async () => {
    copyFileSync(SEA, join(root, 'tmp/hfk'));
    const r = await inRoot(['/tmp/hfk', '--version']);
    expect(r.stdout).toBe(`hfk ${VERSION} (node ${process.versions.node})\n`);
    mkdirSync(join(root, 'mnt/c'));
    const m = await inRoot(['/tmp/hfk', 'mount', '/mnt/c', '--name', 'demo', '--mirrors', `http://127.0.0.1:${port}/`, '--key', '/etc/hfk/hfk.pub'], 300_000);
    expect(m.code, m.stderr).toBe(0);
    expect(readFileSync(join(root, 'mnt/c/demo.img')).equals(image)).toBe(true);
    expect((await inRoot(['/tmp/hfk', 'umount', '/mnt/c'])).code).toBe(0);
  });
});
