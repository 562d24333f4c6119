// hfk-init --dry-run in-process: the boot's own steps on the recording
// System, against real images served by real nginx. What a boot would hit
// after the network (no init in the image, a missing cache partition) is
// caught here, and nothing on the host changes.

import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dryRun, formatDryRun } from '../../src/init/dryrun.ts';
import { hfk, hfkJson } from '../helpers/cli.ts';
import { makeTree, mkext4, mksquashfs } from '../helpers/images.ts';
import { type Server, startNginx } from '../helpers/mirrors.ts';
import { tempDirKeep } from '../helpers/tmp.ts';

let work: string;
let nginx: Server;
let pub: string;

/** A root tree as Debian lays it out: /sbin → usr/sbin, /sbin/init → systemd. */
function rootTree(dir: string, withInit: boolean): string {
  makeTree(dir, 3);
  mkdirSync(join(dir, 'usr/sbin'), { recursive: true });
  mkdirSync(join(dir, 'usr/lib/systemd'), { recursive: true });
  symlinkSync('usr/sbin', join(dir, 'sbin'));
  if (withInit) {
    writeFileSync(join(dir, 'usr/lib/systemd/systemd'), '#!/bin/sh\n');
    chmodSync(join(dir, 'usr/lib/systemd/systemd'), 0o755);
    symlinkSync('../lib/systemd/systemd', join(dir, 'usr/sbin/init'));
  }
  return dir;
}

beforeAll(async () => {
  work = tempDirKeep('hfk-dryrun-');
  await hfk(['keygen', '--out', join(work, 'k')]);
  pub = join(work, 'k.pub');
  const key = join(work, 'k.key');
  const store = join(work, 'store');
  const good = rootTree(join(work, 'good'), true);
  const bare = rootTree(join(work, 'bare'), false);
  await hfkJson(['publish', mksquashfs(good, join(work, 'good.sqfs')), '--store', store, '--name', 'good', '--key', key]);
  await hfkJson(['publish', mkext4(good, join(work, 'good.ext4'), 24), '--store', store, '--name', 'goodext', '--key', key, '--block-size', '16K']);
  await hfkJson(['publish', mksquashfs(bare, join(work, 'bare.sqfs')), '--store', store, '--name', 'bare', '--key', key]);
  await hfkJson(['publish', mksquashfs(good, join(work, 'good-xz.sqfs'), ['-comp', 'xz']), '--store', store, '--name', 'goodxz', '--key', key]);
  nginx = await startNginx(store, join(work, 'nginx'));
}, 120_000);

afterAll(async () => {
  await nginx?.stop();
  rmSync(work, { recursive: true, force: true });
});

const cmdline = (image: string, extra = '') => `hfk.mirrors=${nginx.url} hfk.image=${image} ${extra}`.trim();

describe('hfk-init --dry-run', () => {
  for (const image of ['good', 'goodext']) {
    it(`${image}: the boot would succeed; the init is found in the image through the fetcher`, async () => {
      const before = existsSync('/run/hfk') ? readdirSync('/run/hfk') : null;
      const r = await dryRun({ cmdline: cmdline(image), key: pub });
      expect(r.error).toBeNull();
      expect(r.ok).toBe(true);
      expect(r.init).toEqual({ path: '/sbin/init', resolved: '/usr/lib/systemd/systemd' });
      expect(r.checks.map((c) => c.stage)).toEqual(['config', 'probe', 'network', 'mirrors', 'cache', 'manifest', 'fuse', 'rootfs', 'overlay']);
      const fsType = image === 'good' ? 'squashfs' : 'ext4';
      expect(r.firstBlock?.filesystem).toBe(fsType);
      // What the boot would change is listed, not done.
      expect(r.plan).toContain(`mount -t ${fsType} -o loop,ro /run/hfk/img/${image}.img /run/hfk/ro`);
      expect(r.plan.at(-1)).toBe('switch_root /newroot /sbin/init');
      expect(existsSync('/run/hfk') ? readdirSync('/run/hfk') : null).toEqual(before);
      expect(formatDryRun(r)).toMatch(/the boot would succeed/);
    });
  }

  it('an image without an init: the boot would fail at the overlay stage, naming what is missing', async () => {
    const r = await dryRun({ cmdline: cmdline('bare'), key: pub });
    expect(r.ok).toBe(false);
    expect(r.error).toMatchObject({ stage: 'overlay', code: 'E_NOINIT' });
    expect(r.error!.message).toMatch(/\/sbin\/init, \/lib\/systemd\/systemd/);
    expect(formatDryRun(r)).toMatch(/the boot would fail at stage overlay/);
  });

  it('an image whose metadata the check cannot read (xz): the boot goes ahead, and the report says the init was not checked', async () => {
    const r = await dryRun({ cmdline: cmdline('goodxz'), key: pub });
    expect(r.error).toBeNull();
    expect(r.warnings.join('\n')).toMatch(/the init is not checked before the boot: this squashfs image uses compressor xz/);
  });

  it('a cache partition whose label no disk has: the boot would fail at the cache stage', async () => {
    const r = await dryRun({ cmdline: cmdline('good', 'hfk.cache=LABEL=hfk-no-such-label'), key: pub });
    expect(r.error).toMatchObject({ stage: 'cache', code: 'E_DEVICE' });
    expect(r.error!.message).toMatch(/LABEL=hfk-no-such-label/);
  });

  it('an overlay device that does not exist: the boot would fail at the overlay stage', async () => {
    const r = await dryRun({ cmdline: cmdline('good', 'hfk.overlay=/dev/hfk-no-such-disk'), key: pub });
    expect(r.error).toMatchObject({ stage: 'overlay', code: 'E_DEVICE' });
  });

  it('hfk.mirrorlist= may name a file (in the initrd, or here): read, not taken for a URL', async () => {
    const list = join(work, 'mirrors.txt');
    writeFileSync(list, `# the lab\n${nginx.url}\n`);
    const r = await dryRun({ cmdline: `hfk.mirrorlist=${list} hfk.image=good`, key: pub });
    expect(r.error).toBeNull();
    expect(r.ranking?.mirrors.map((m) => m.url)).toEqual([nginx.url]);
  });

  it('a wrong key: the boot would fail at the manifest stage', async () => {
    await hfk(['keygen', '--out', join(work, 'other')]);
    const r = await dryRun({ cmdline: cmdline('good'), key: join(work, 'other.pub') });
    expect(r.error).toMatchObject({ stage: 'manifest', code: 'E_SIGNATURE' });
  });
});
