// Real FUSE mounts as root: blockfs over a FileBlockDevice, NAME.img
// loop-mounted read-only, and every file compared with the tree the image
// was made from. Every syscall against a mount comes from a child process
// (spawned asynchronously), never from this event loop, which serves the
// mount: a synchronous call here would deadlock.

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BlockFs } from '../../src/blockfs/blockfs.ts';
import { FileBlockDevice } from '../../src/blockfs/device.ts';
import { MountpointError } from '../../src/fuse/errors.ts';
import { type FuseMount, mount, parseMountinfo } from '../../src/fuse/mount.ts';
import { copiesForNobody } from '../helpers/cli.ts';
import { requireTool } from '../helpers/images.ts';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command in a child process, asynchronously (the event loop keeps serving the mount). */
function run(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 50_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    if (child.stdin) {
      child.stdin.on('error', () => {}); // the child may exit without reading
      child.stdin.end(opts.input);
    }
  });
}

/** Like run, but a non-zero exit is an error that shows stderr. */
async function ok(cmd: string, args: readonly string[], opts: { input?: string } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

function hfkMounts(): string[] {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'))
    .filter((m) => m.fstype === 'fuse.hfk')
    .map((m) => m.mountpoint);
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** The tools the suite runs, with their Debian packages. */
const TOOLS: ReadonlyArray<[tool: string, pkg: string]> = [
  ['mksquashfs', 'squashfs-tools'],
  ['mkfs.ext4', 'e2fsprogs'],
  ['mount', 'mount'],
  ['umount', 'mount'],
  ['losetup', 'mount'],
  ['diff', 'diffutils'],
  ['find', 'findutils'],
  ['busybox', 'busybox-static'],
  ['setpriv', 'util-linux'],
];

/**
 * What the suite needs, all of which .ci/run provides (it runs as root and
 * installs the packages): anything missing fails the suite, saying what.
 */
function requireMountPrerequisites(): void {
  const uid = process.getuid?.();
  if (uid !== 0) throw new Error(`FUSE mounts need root: running as uid ${uid}; run the tests as root, as .ci/run does`);
  if (!existsSync('/dev/fuse')) throw new Error('/dev/fuse is missing: modprobe fuse (in a container, pass --device /dev/fuse)');
  for (const [tool, pkg] of TOOLS) requireTool(tool, pkg);
}

// ---------------------------------------------------------------------------
// Fixture: a tree with files of many sizes, modes and symlinks.

function makeTree(dir: string): void {
  const file = (rel: string, data: Buffer | string, mode: number) => {
    writeFileSync(join(dir, rel), data);
    chmodSync(join(dir, rel), mode);
  };
  const folder = (rel: string, mode: number) => {
    mkdirSync(join(dir, rel));
    chmodSync(join(dir, rel), mode);
  };
  chmodSync(dir, 0o755);
  file('empty', '', 0o644);
  file('one', 'x', 0o600);
  file('page-minus-one', randomBytes(4095), 0o640);
  file('page', randomBytes(4096), 0o444);
  file('odd', randomBytes(65_537), 0o755);
  file('big.bin', randomBytes((3 << 19) + 3), 0o644); // 1.5 MiB + 3
  file('huge.bin', randomBytes((3 << 20) + 12_345), 0o600); // > 3 MiB
  file('name with spaces ü', 'unicode\n', 0o644);
  folder('sub', 0o750);
  folder('sub/deep', 0o700);
  folder('sub/deep/deeper', 0o755);
  file('sub/deep/deeper/leaf', randomBytes(10_000), 0o644);
  file('sub/script.sh', '#!/bin/sh\necho hi\n', 0o4755);
  symlinkSync('big.bin', join(dir, 'link-rel'));
  symlinkSync('../one', join(dir, 'sub/link-up'));
  symlinkSync('/etc/hostname', join(dir, 'link-abs'));
  symlinkSync('nope/none', join(dir, 'dangling'));
}

/** Path, type, mode, size (regular files), target (links), owner: one line per node. */
async function listing(dir: string): Promise<string[]> {
  const out = await ok('find', [dir, '-mindepth', '1', '-not', '-path', `${dir}/lost+found*`, '-printf', '%P|%y|%m|%U|%l|%s\n']);
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const f = l.split('|');
      if (f[1] !== 'f') f[5] = '-'; // directory and link sizes differ between filesystems
      return f.join('|');
    })
    .sort();
}

// ---------------------------------------------------------------------------

describe('FUSE mounts of blockfs (root)', () => {
  const work = mkdtempSync(join(tmpdir(), 'hfk-fuse-it-'));
  const src = join(work, 'src');
  const cleanups: Array<() => Promise<unknown>> = [];
  const errors: unknown[] = [];

  /** Mounts blockfs over an image file on a fresh folder; unmounted in cleanup whatever happens. */
  async function mountImage(name: string, image: string, stats?: () => unknown, extra: Partial<Parameters<typeof mount>[1]> = {}) {
    const mnt = mkdtempSync(join(work, `mnt-${name}-`));
    const device = await FileBlockDevice.open(image);
    const m = await mount(new BlockFs({ name, device, stats }), { mountpoint: mnt, onError: (e) => errors.push(e), ...extra });
    cleanups.push(async () => {
      if (m.session.running) await run('umount', ['-l', mnt]);
      await m.done;
      await device.close();
    });
    return { m, mnt, device };
  }

  beforeAll(async () => {
    requireMountPrerequisites();
    mkdirSync(src);
    makeTree(src);
  });

  afterEach(() => {
    expect(errors).toEqual([]);
  });

  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    // Loop devices whose backing file lived here (autoclear detaches them with the umount).
    const loops = await run('losetup', ['-a']);
    for (const line of loops.stdout.split('\n').filter((l) => l.includes(work))) {
      await run('losetup', ['-d', line.split(':')[0]!]);
    }
    rmSync(work, { recursive: true, force: true });
    expect(hfkMounts().filter((p) => p.startsWith(work))).toEqual([]);
    expect((await run('losetup', ['-a'])).stdout).not.toContain(work);
  });

  const images = [
    { kind: 'squashfs', make: (out: string) => ok('mksquashfs', [src, out, '-noappend', '-quiet', '-all-root']) },
    { kind: 'ext4', make: (out: string) => ok('mkfs.ext4', ['-q', '-F', '-d', src, '-b', '4096', out, '32M']) },
  ];

  for (const { kind, make } of images) {
    describe(`a ${kind} image`, () => {
      let image: string;
      let mnt: string;
      let m: FuseMount;
      let loop: string;
      let calls = 0;

      beforeAll(async () => {
        image = join(work, `${kind}.img`);
        await make(image);
        ({ m, mnt } = await mountImage(kind, image, () => ({ kind, opens: ++calls })));
        loop = mkdtempSync(join(work, `loop-${kind}-`));
        await ok('mount', ['-o', 'loop,ro', '-t', kind, join(mnt, `${kind}.img`), loop]);
        cleanups.push(() => run('umount', [loop]));
      });

      afterAll(async () => {
        await ok('umount', [loop]);
        const end = await m.unmount();
        expect(end.reason).toBe('unmounted');
      });

      it('shows NAME.img read-only with the image size, and .hfk/', async () => {
        const out = await ok('stat', ['-c', '%n %a %s %F %U', join(mnt, `${kind}.img`), join(mnt, '.hfk')]);
        expect(out).toBe(
          `${join(mnt, `${kind}.img`)} 444 ${readFileSync(image).length} regular file root\n${join(mnt, '.hfk')} 555 0 directory root\n`,
        );
        expect((await ok('ls', ['-A', mnt])).split('\n').filter(Boolean).sort()).toEqual(['.hfk', `${kind}.img`]);
        expect(hfkMounts()).toContain(mnt);
      });

      it('refuses writes', async () => {
        expect((await run('touch', [join(mnt, 'new')])).stderr).toMatch(/Read-only file system/);
        expect((await run('sh', ['-c', `echo x >> "${join(mnt, `${kind}.img`)}"`])).code).not.toBe(0);
      });

      it('serves the image byte for byte', async () => {
        await run('dd', [`if=${join(mnt, `${kind}.img`)}`, 'iflag=nocache', 'count=0']); // drop its cached pages
        const sum = (await ok('sha256sum', [join(mnt, `${kind}.img`)])).split(' ')[0];
        expect(sum).toBe(sha256(image));
      });

      it('loop-mounts to the very tree the image was made from: contents, symlinks, modes', async () => {
        await ok('diff', ['-r', '--no-dereference', '-x', 'lost+found', src, loop]);
        expect(await listing(loop)).toEqual(await listing(src));
      });

      it('serves several readers at once', async () => {
        await run('dd', [`if=${join(mnt, `${kind}.img`)}`, 'iflag=nocache', 'count=0']);
        const file = join(mnt, `${kind}.img`);
        const size = readFileSync(image).length;
        const quarter = Math.ceil(size / 4 / 65536);
        const parts = [0, 1, 2, 3].map((i) =>
          ok('sh', ['-c', `dd if="${file}" bs=64k skip=${i * quarter} count=${quarter} status=none | sha256sum`]),
        );
        const whole = [0, 1].map(() => ok('sha256sum', [file]));
        const trees = [0, 1].map(() => ok('diff', ['-r', '--no-dereference', '-x', 'lost+found', src, loop]));
        const [sums, wholes] = await Promise.all([Promise.all(parts), Promise.all(whole), Promise.all(trees)]);
        const data = readFileSync(image);
        sums.forEach((s, i) => {
          const chunk = data.subarray(i * quarter * 65536, (i + 1) * quarter * 65536);
          expect(s.split(' ')[0]).toBe(createHash('sha256').update(chunk).digest('hex'));
        });
        for (const w of wholes) expect(w.split(' ')[0]).toBe(sha256(image));
      });

      it('renders .hfk/stats.json at each open as valid JSON', async () => {
        const first = JSON.parse(await ok('cat', [join(mnt, '.hfk', 'stats.json')]));
        const second = JSON.parse(await ok('cat', [join(mnt, '.hfk', 'stats.json')]));
        expect(first.kind).toBe(kind);
        expect(second.opens).toBeGreaterThan(first.opens);
        // A reader that trusts st_size (Node's readFileSync) gets the whole document too.
        const viaNode = await ok(process.execPath, ['-e', `process.stdout.write(require('fs').readFileSync(${JSON.stringify(join(mnt, '.hfk', 'stats.json'))}))`]);
        expect(JSON.parse(viaNode).kind).toBe(kind);
      });
    });
  }

  it('umount -l ends the session once the last user has gone', async () => {
    const image = join(work, 'lazy.img');
    writeFileSync(image, randomBytes(3 << 20));
    const { m, mnt } = await mountImage('lazy', image);
    // A holder opens the image, says so, waits for a line on stdin, then reads it all through its open fd.
    const child = spawn('sh', ['-c', 'exec 3< "$1"; echo open; read _; wc -c <&3', 'sh', join(mnt, 'lazy.img')], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    const opened = new Promise<void>((resolve) =>
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (out.includes('open')) resolve();
      }),
    );
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    await opened;
    await ok('umount', ['-l', mnt]);
    expect(hfkMounts()).not.toContain(mnt); // detached at once…
    expect(m.session.running).toBe(true); // …but still serving the open file
    child.stdin.end('go\n');
    expect(await exited).toBe(0);
    expect(out.trim().split('\n').pop()).toBe(String(3 << 20));
    expect(await m.done).toEqual({ reason: 'unmounted' });
  });

  it('mounts and unmounts with busybox as well', async () => {
    const image = join(work, 'bb.img');
    writeFileSync(image, randomBytes(100_000));
    const { m, mnt } = await mountImage('bb', image, () => ({ via: 'busybox' }), {
      mountCommand: ['busybox', 'mount'],
      umountCommand: ['busybox', 'umount'],
    });
    expect(JSON.parse(await ok('cat', [join(mnt, '.hfk/stats.json')]))).toEqual({ via: 'busybox' });
    expect((await ok('sha256sum', [join(mnt, 'bb.img')])).split(' ')[0]).toBe(sha256(image));
    expect(await m.unmount()).toEqual({ reason: 'unmounted' });
    expect(hfkMounts()).not.toContain(mnt);
  });

  it('refuses a missing mountpoint, a file, and a busy folder, leaving nothing mounted', async () => {
    const image = join(work, 'err.img');
    writeFileSync(image, randomBytes(8192));
    const device = await FileBlockDevice.open(image);
    const fs = new BlockFs({ name: 'err', device });
    const before = hfkMounts();
    try {
      await expect(mount(fs, { mountpoint: join(work, 'no-such-dir') })).rejects.toMatchObject({
        name: 'MountpointError',
        problem: 'missing',
        code: 'E_MOUNTPOINT_MISSING',
      });
      const file = join(work, 'a-file');
      writeFileSync(file, '');
      await expect(mount(fs, { mountpoint: file })).rejects.toMatchObject({ problem: 'not-directory' });

      const busy = mkdtempSync(join(work, 'busy-'));
      await ok('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'hfk-test', busy]);
      try {
        const err = await mount(fs, { mountpoint: busy }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(MountpointError);
        expect((err as MountpointError).problem).toBe('busy');
        expect((err as MountpointError).message).toMatch(/already has tmpfs \(hfk-test\) mounted on it/);
        expect((err as MountpointError).hint).toMatch(/unmount/);
      } finally {
        await ok('umount', [busy]);
      }

      // Busy with an hfk mount too.
      const { mnt } = await mountImage('first', image);
      await expect(mount(fs, { mountpoint: mnt })).rejects.toMatchObject({ problem: 'busy' });
      expect(hfkMounts().filter((p) => !before.includes(p))).toEqual([mnt]);

      // No FUSE device.
      const free = mkdtempSync(join(work, 'nodev-'));
      await expect(mount(fs, { mountpoint: free, device: join(work, 'no-fuse') })).rejects.toMatchObject({
        name: 'FuseDeviceError',
        code: 'E_FUSE_DEVICE',
        hint: expect.stringMatching(/modprobe fuse/),
      });
      expect(hfkMounts()).not.toContain(free);
    } finally {
      await device.close();
    }
  });

  it('refuses to mount when not root, with a typed error', async () => {
    // A bundle of a script that calls mount(), run as nobody.
    const entry = join(work, 'notroot.ts');
    writeFileSync(entry, `
      import { mount } from '${new URL('../../src/fuse/mount.ts', import.meta.url).pathname}';
      try {
        await mount({}, { mountpoint: '/' });
      } catch (e) {
        console.log(e.name, e.code, e.hint);
      }
    `);
    await build({ entryPoints: [entry], outfile: join(work, 'notroot.mjs'), bundle: true, platform: 'node', format: 'esm', logLevel: 'silent' });
    const copies = copiesForNobody([join(work, 'notroot.mjs')]);
    try {
      const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', copies.node, copies.path('notroot.mjs')]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe('NotRootError E_NOT_ROOT run as root (sudo)\n');
    } finally {
      copies.remove();
    }
  });

  it('a failing mount command leaves nothing mounted and says why', async () => {
    const image = join(work, 'cmd.img');
    writeFileSync(image, randomBytes(8192));
    const device = await FileBlockDevice.open(image);
    const mnt = mkdtempSync(join(work, 'cmd-'));
    try {
      await expect(mount(new BlockFs({ name: 'cmd', device }), { mountpoint: mnt, mountCommand: ['false'] })).rejects.toMatchObject({
        name: 'MountError',
        message: expect.stringMatching(/`false -i -t fuse.hfk .*` exited with status 1/),
      });
      expect(hfkMounts()).not.toContain(mnt);
    } finally {
      await device.close();
    }
  });

  /** Runs a child process that mounts, optionally looks its image up, and exits with status 7 while mounted. */
  async function exitWhileMounted(lookUpImage: boolean): Promise<{ mnt: string; result: Run }> {
    const image = join(work, 'exit.img');
    writeFileSync(image, randomBytes(8192));
    const mnt = mkdtempSync(join(work, 'exit-'));
    cleanups.push(() => run('umount', ['-l', mnt]));
    const root = new URL('../../', import.meta.url).pathname;
    const script = `
      import { spawn } from 'node:child_process';
      import { BlockFs } from '${root}src/blockfs/blockfs.ts';
      import { FileBlockDevice } from '${root}src/blockfs/device.ts';
      import { mount } from '${root}src/fuse/mount.ts';
      const device = await FileBlockDevice.open(${JSON.stringify(image)});
      const mnt = ${JSON.stringify(mnt)};
      await mount(new BlockFs({ name: 'exit', device }), { mountpoint: mnt });
      if (${lookUpImage}) {
        // From a child process: this process serves the mount.
        await new Promise((resolve) => spawn('stat', [mnt + '/exit.img'], { stdio: 'ignore' }).on('close', resolve));
      }
      console.log('mounted');
      process.exit(7);
    `;
    const result = await run(process.execPath, ['--input-type=module', '-e', script], { timeoutMs: 30_000 });
    return { mnt, result };
  }

  it('a process that exits while mounted does not hang on its reader thread (woken by a notification)', async () => {
    const { mnt, result } = await exitWhileMounted(true);
    expect(result.stdout).toBe('mounted\n');
    expect(result.code).toBe(7); // not killed by the timeout
    // The server is gone: the mount answers ENOTCONN until unmounted, as after any FUSE server's death.
    expect(hfkMounts()).toContain(mnt);
    expect((await run('cat', [join(mnt, '.hfk/stats.json')])).stderr).toMatch(/Transport endpoint is not connected/);
    await ok('umount', ['-l', mnt]);
    expect(hfkMounts()).not.toContain(mnt);
  });

  it('a process that exits while mounted does not hang even when the kernel caches no file (aborted)', async () => {
    const { mnt, result } = await exitWhileMounted(false);
    expect(result.stdout).toBe('mounted\n');
    expect(result.code).toBe(7);
    const left = hfkMounts().includes(mnt);
    if (left) {
      // fusectl was mounted: the connection was aborted through it, the mount is dead.
      expect((await run('cat', [join(mnt, '.hfk/stats.json')])).stderr).toMatch(/Transport endpoint is not connected/);
      await ok('umount', ['-l', mnt]);
    }
    expect(hfkMounts()).not.toContain(mnt);
  });
});
