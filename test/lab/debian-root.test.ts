import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  cacheDir,
  ensureDebianRoot,
  ensureDebianSquashfs,
  ensurePackages,
  installedPackages,
  LabError,
  missingPackages,
  recipeOf,
  seedProblem,
} from './debian-root.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-debian-root-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('package checks (pure)', () => {
  it('finds packages dpkg-query does not report as installed', () => {
    const out = 'socat ii \nqemu-system-x86 ii \nnginx-light rc \ndpkg-query: no packages found matching nosuch\n';
    expect(missingPackages(out, ['socat', 'qemu-system-x86', 'nginx-light', 'nosuch'])).toEqual(['nginx-light', 'nosuch']);
    expect(missingPackages('libc6:amd64 ii \n', ['libc6'])).toEqual([]);
  });

  it('reads installed packages from a dpkg status file', () => {
    const status = 'Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nStatus: deinstall ok config-files\n\nPackage: c\nStatus: install ok installed\n';
    expect([...installedPackages(status)]).toEqual(['a', 'c']);
  });

  it('tells a finished debootstrap from one that is not', () => {
    const seed = join(work, 'seed');
    mkdirSync(join(seed, 'var/lib/dpkg'), { recursive: true });
    mkdirSync(join(seed, 'etc'), { recursive: true });
    writeFileSync(join(seed, 'etc/os-release'), 'NAME="Debian GNU/Linux"\nVERSION_CODENAME=bookworm\n');
    writeFileSync(join(seed, 'var/lib/dpkg/status'), 'Package: systemd\nStatus: install ok installed\n');
    expect(seedProblem(seed, 'bookworm', ['systemd'])).toBeNull();
    expect(seedProblem(seed, 'bookworm', ['systemd', 'procps'])).toBe('lacks procps');
    expect(seedProblem(seed, 'trixie', ['systemd'])).toBe('is not Debian trixie');
    mkdirSync(join(seed, 'debootstrap'));
    expect(seedProblem(seed, 'bookworm', ['systemd'])).toMatch(/unfinished debootstrap/);
    expect(seedProblem(join(work, 'none'), 'bookworm', [])).toBe('has no var/lib/dpkg/status');
  });

  it('describes the recipe, so a changed customisation rebuilds the cache', () => {
    expect(recipeOf({})).toMatchObject({ suite: 'bookworm', variant: 'minbase' });
    expect((recipeOf({}) as { include: string[] }).include).toEqual(expect.arrayContaining(['systemd', 'systemd-sysv', 'udev', 'dbus']));
    expect(recipeOf({ hostname: 'other' })).not.toEqual(recipeOf({}));
    expect(cacheDir({ HFK_CACHE: '/x' })).toBe('/x');
    expect(cacheDir({})).toBe('/var/cache/hfk');
  });
});

describe('ensurePackages', () => {
  it('does nothing when everything is installed', async () => {
    expect(await ensurePackages(['qemu-system-x86', 'socat', 'squashfs-tools', 'debootstrap'])).toEqual([]);
  });
});

describe('the Debian root', () => {
  // Copy a finished root instead of downloading: the shared cache's, or the lead's debootstrap.
  const shared = cacheDir();
  const seed = [join(shared, 'debian-bookworm'), join(shared, 'rootfs.tmp')].find((p) => existsSync(join(p, 'var/lib/dpkg/status'))) ?? null;
  const cache = join(work, 'cache');
  const quiet = { log: () => {} };

  it('leaves nothing behind when a step fails', async () => {
    const failing = { describe: 'fails on purpose', run: () => { throw new Error('boom'); } };
    const err = await ensureDebianRoot({ cacheDir: cache, seed, extraSteps: [failing], ...quiet }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LabError);
    expect((err as Error).message).toBe('customising the Debian root failed at "fails on purpose": boom');
    expect(readdirSync(cache)).toEqual(['debian-bookworm.log']);
  }, 600_000);

  it('builds a root that boots on a serial console, and reuses it', async () => {
    const root = await ensureDebianRoot({ cacheDir: cache, seed, ...quiet });
    expect(root).toBe(join(cache, 'debian-bookworm'));
    expect(readFileSync(join(root, 'etc/hostname'), 'utf8')).toBe('hfk-demo\n');
    expect(readFileSync(join(root, 'etc/shadow'), 'utf8')).toMatch(/^root::/m);
    expect(readFileSync(join(root, 'etc/fstab'), 'utf8')).toMatch(/^#[^\n]*\n$/);
    expect(readlinkSync(join(root, 'sbin/init'))).toBe('/lib/systemd/systemd');
    // udev makes dev-ttyS0.device, so the stock serial getty starts on console=ttyS0
    expect(existsSync(join(root, 'lib/systemd/systemd-udevd'))).toBe(true);
    expect(existsSync(join(root, 'lib/systemd/system/serial-getty@.service'))).toBe(true);
    expect(readdirSync(join(root, 'var/cache/apt/archives')).filter((n) => n.endsWith('.deb'))).toEqual([]);
    expect(readdirSync(cache).filter((n) => n.includes('.tmp-'))).toEqual([]);
    // a second call finds it: nothing is rebuilt
    writeFileSync(join(root, 'marker'), 'kept');
    expect(await ensureDebianRoot({ cacheDir: cache, seed, ...quiet })).toBe(root);
    expect(readFileSync(join(root, 'marker'), 'utf8')).toBe('kept');
  }, 600_000);

  it('packs it as an uncompressed squashfs, rebuilt only when the tree changes', async () => {
    const sqfs = await ensureDebianSquashfs({ cacheDir: cache, seed, ...quiet });
    expect(sqfs).toBe(join(cache, 'debian-bookworm.sqfs'));
    const info = execFileSync('unsquashfs', ['-s', sqfs]).toString();
    for (const what of ['Inodes are', 'Data is', 'Fragments are', 'Xattrs are']) expect(info).toContain(`${what} uncompressed`);
    expect(info).toContain('Creation or last append time Thu Jan  1 00:00:00 1970'); // -mkfs-time 0: same tree, same bytes
    expect(execFileSync('unsquashfs', ['-cat', sqfs, 'etc/hostname']).toString()).toBe('hfk-demo\n');
    const built = statSync(sqfs).mtimeMs;
    expect(await ensureDebianSquashfs({ cacheDir: cache, seed, ...quiet })).toBe(sqfs);
    expect(statSync(sqfs).mtimeMs).toBe(built);
    writeFileSync(join(cache, 'debian-bookworm', 'etc/motd'), 'changed\n');
    await ensureDebianSquashfs({ cacheDir: cache, seed, ...quiet });
    expect(statSync(sqfs).mtimeMs).not.toBe(built);
    expect(execFileSync('unsquashfs', ['-cat', sqfs, 'etc/motd']).toString()).toBe('changed\n');
  }, 600_000);
});
