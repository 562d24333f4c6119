import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError } from '../errors.ts';
import { findKernel } from '../../test/lab/qemu.ts';
import {
  DEFAULT_MODULE_SPECS,
  moduleName,
  parseModulesDep,
  parseSoftdeps,
  parseSpec,
  selectModules,
  specMatches,
  stageModules,
} from './modules.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-modules-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const DEP = `kernel/fs/isofs/isofs.ko: kernel/drivers/cdrom/cdrom.ko
kernel/drivers/cdrom/cdrom.ko:
kernel/drivers/scsi/sr_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/cdrom/cdrom.ko
kernel/drivers/scsi/scsi_mod.ko:
kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio.ko
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:
kernel/drivers/net/ethernet/amazon/ena/ena.ko:
kernel/fs/nls/nls_utf8.ko:
kernel/fs/nls/nls_cp437.ko:
kernel/fs/cifs/cifs.ko: kernel/fs/nls/nls_utf8.ko
kernel/arch/x86/intel-uncore.ko:
`;
const index = {
  dep: parseModulesDep(DEP),
  builtin: ['kernel/fs/ext4/ext4.ko', 'kernel/net/packet/af_packet.ko'],
  softdeps: parseSoftdeps('# comment\nsoftdep cifs pre: nls_cp437 crypto-md5\nsoftdep isofs nls_cp437\n'),
};

describe('module specs', () => {
  it.each([
    ['loop', 'kernel/drivers/block/loop.ko', true],
    ['loop', 'kernel/drivers/block/loop.ko.xz', true],
    ['intel_uncore', 'kernel/arch/x86/intel-uncore.ko', true],
    ['virtio', 'kernel/drivers/virtio/virtio_pci.ko', true], // a folder of that name
    ['virtio', 'kernel/drivers/net/virtio_net.ko', false],
    ['block/virtio_blk', 'kernel/drivers/block/virtio_blk.ko', true],
    ['fs/fuse', 'kernel/fs/fuse/cuse.ko', true],
    ['fuse', 'kernel/fs/fuse/fuse.ko', true],
    ['kernel/drivers/net/ethernet/**', 'kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko', true],
    ['kernel/drivers/net/ethernet/**', 'kernel/drivers/net/virtio_net.ko', false],
    ['net/virtio_net/**', 'kernel/drivers/net/virtio_net.ko', false], // folder only
    ['rivers/net', 'kernel/drivers/net/virtio_net.ko', false], // parts match whole
    ['nls_*', 'kernel/fs/nls/nls_utf8.ko', true],
    ['nls_*', 'kernel/fs/nls/mac-roman.ko', false],
  ])('%s matches %s: %s', (spec, path, want) => {
    expect(specMatches(parseSpec(spec), path)).toBe(want);
  });

  it('refuses specs that are not names or folders', () => {
    expect(() => parseSpec('../etc')).toThrow(/module spec '..\/etc' is not a module name or folder/);
    expect(() => parseSpec('a//b')).toThrow(InputError);
  });

  it('names modules as modprobe does', () => {
    expect(moduleName('kernel/arch/x86/intel-uncore.ko.zst')).toBe('intel_uncore');
  });
});

describe('selectModules', () => {
  it('closes the selection over modules.dep and soft dependencies', () => {
    const sel = selectModules(index, ['isofs', 'virtio_net']);
    expect(sel.modules).toEqual([
      'kernel/drivers/cdrom/cdrom.ko',
      'kernel/drivers/net/virtio_net.ko',
      'kernel/drivers/virtio/virtio.ko',
      'kernel/fs/isofs/isofs.ko',
      'kernel/fs/nls/nls_cp437.ko', // softdep of isofs
      'kernel/net/core/failover.ko',
    ]);
    expect(selectModules(index, ['isofs'], { softdeps: false }).modules).not.toContain('kernel/fs/nls/nls_cp437.ko');
    // 'crypto-md5' is an alias, not a module file: nothing to copy
    expect(selectModules(index, ['cifs']).modules).toEqual(['kernel/fs/cifs/cifs.ko', 'kernel/fs/nls/nls_cp437.ko', 'kernel/fs/nls/nls_utf8.ko']);
  });

  it('takes whole folders, accepts built-ins, skips optional specs and refuses unknown ones', () => {
    const sel = selectModules(index, ['kernel/drivers/net/ethernet/**', 'ext4', 'erofs?']);
    expect(sel.modules).toEqual(['kernel/drivers/net/ethernet/amazon/ena/ena.ko', 'kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko']);
    expect(sel.specs).toEqual([
      { spec: 'kernel/drivers/net/ethernet/**', matched: 2, builtin: false },
      { spec: 'ext4', matched: 0, builtin: true },
    ]);
    expect(sel.skipped).toEqual(['erofs?']);
    expect(() => selectModules(index, ['e1000'])).toThrow(/module spec 'e1000' names no module of this kernel/);
  });

  it('reports a modules.dep that names a dependency it does not list', () => {
    const broken = { ...index, dep: parseModulesDep('kernel/a.ko: kernel/b.ko\n') };
    expect(() => selectModules(broken, ['a'])).toThrow(/names kernel\/b.ko as a dependency but has no line for it/);
  });
});

describe('stageModules with the real kernel', () => {
  const kernel = findKernel();

  it('copies the closure and lets depmod describe exactly it', () => {
    const staging = join(work, 'real');
    const staged = stageModules({ modulesDir: kernel.modulesDir, specs: ['isofs', 'virtio_net', 'virtio_pci', 'ext4'], stagingDir: staging });
    expect(staged.version).toBe(kernel.version);
    const dep = parseModulesDep(readFileSync(join(staged.dir, 'modules.dep'), 'utf8'));
    expect([...dep.keys()].sort()).toEqual(staged.modules.map((m) => m.path).sort());
    expect(dep.get('kernel/fs/isofs/isofs.ko')).toEqual(['kernel/drivers/cdrom/cdrom.ko']);
    // modprobe (kmod) resolves through the staged tree alone
    const show = execFileSync('modprobe', ['-d', staging, '-S', staged.version, '--show-depends', 'isofs']).toString();
    expect(show).toContain(`insmod ${staged.dir}/kernel/drivers/cdrom/cdrom.ko`);
    expect(show).toContain(`insmod ${staged.dir}/kernel/fs/isofs/isofs.ko`);
    // aliases for modalias matching, built-ins carried over
    const alias = readFileSync(join(staged.dir, 'modules.alias'), 'utf8');
    expect(alias).toMatch(/^alias pci:v00001AF4d\*sv\*sd\*bc\*sc\*i\* virtio_pci$/m);
    expect(alias).not.toMatch(/ e1000e$/m);
    for (const f of ['modules.dep.bin', 'modules.alias.bin', 'modules.builtin', 'modules.builtin.bin', 'modules.builtin.modinfo', 'modules.order']) {
      expect(existsSync(join(staged.dir, f)), f).toBe(true);
    }
  });

  it('stages the default specs of this kernel', () => {
    const staged = stageModules({ modulesDir: kernel.modulesDir, stagingDir: join(work, 'defaults') });
    const names = new Set(staged.modules.map((m) => moduleName(m.path)));
    for (const n of ['virtio_net', 'virtio_pci', 'virtio_blk', 'loop', 'virtio_scsi', 'sr_mod', 'ata_piix', 'cdrom', 'fuse', 'squashfs', 'overlay', 'isofs', 'erofs', 'nls_utf8']) {
      expect(names.has(n), n).toBe(true);
    }
    expect(staged.specs.find((s) => s.spec === 'af_packet?')).toEqual({ spec: 'af_packet?', matched: 0, builtin: true });
    expect(DEFAULT_MODULE_SPECS).toContain('nls');
  });

  it('decompresses .ko.xz and .ko.zst modules so busybox modprobe can load them', () => {
    // a kernel tree whose modules are compressed, indexed by the real depmod
    const fake = join(work, 'compressed', 'lib', 'modules', kernel.version);
    const plain = { xz: 'kernel/drivers/cdrom/cdrom.ko', zst: 'kernel/fs/isofs/isofs.ko' } as const;
    for (const [kind, p] of Object.entries(plain)) {
      mkdirSync(dirname(join(fake, p)), { recursive: true });
      copyFileSync(join(kernel.modulesDir, p), join(fake, p));
      execFileSync(kind === 'xz' ? 'xz' : 'zstd', kind === 'xz' ? ['-q', join(fake, p)] : ['-q', '--rm', join(fake, p)]); // both replace the .ko
    }
    writeFileSync(join(fake, 'modules.order'), `${Object.values(plain).join('\n')}\n`);
    copyFileSync(join(kernel.modulesDir, 'modules.builtin'), join(fake, 'modules.builtin'));
    execFileSync('depmod', ['-b', join(work, 'compressed'), kernel.version]);
    expect(readFileSync(join(fake, 'modules.dep'), 'utf8')).toContain('kernel/fs/isofs/isofs.ko.zst: kernel/drivers/cdrom/cdrom.ko.xz');

    const staged = stageModules({ modulesDir: fake, specs: ['isofs'], stagingDir: join(work, 'decompressed') });
    expect(staged.modules.map((m) => [m.path, m.compressed])).toEqual([
      ['kernel/drivers/cdrom/cdrom.ko', true],
      ['kernel/fs/isofs/isofs.ko', true],
    ]);
    for (const p of Object.values(plain)) {
      expect(readFileSync(join(staged.dir, p)).equals(readFileSync(join(kernel.modulesDir, p))), p).toBe(true);
    }
    expect(parseModulesDep(readFileSync(join(staged.dir, 'modules.dep'), 'utf8'))).toEqual(
      new Map([
        ['kernel/fs/isofs/isofs.ko', ['kernel/drivers/cdrom/cdrom.ko']],
        ['kernel/drivers/cdrom/cdrom.ko', []],
      ]),
    );
  });

  it('says what is wrong with a folder that is not a kernel module folder', () => {
    expect(() => stageModules({ modulesDir: work, stagingDir: join(work, 'x') })).toThrow(/is not a kernel module folder: .*modules.dep is missing/);
  });
});
