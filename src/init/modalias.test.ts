import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { findModules } from '../../test/lab/qemu.ts';
import {
  AliasIndex,
  globToRegExp,
  ModuleDb,
  moduleName,
  ModulesError,
  parseBuiltinModinfo,
  parseModulesAlias,
  parseModulesBuiltin,
  parseModulesDep,
} from './modalias.ts';

const FIXTURE = new URL('./testdata/modules', import.meta.url).pathname;

describe('globToRegExp matches as fnmatch(3)', () => {
  const table: [string, string, boolean][] = [
    ['abc', 'abc', true],
    ['abc', 'abd', false],
    ['', '', true],
    ['*', '', true],
    ['*', 'a/b:c', true],
    ['a*', 'a', true],
    ['a*c', 'abbbc', true],
    ['a*c', 'abbbd', false],
    ['a?c', 'abc', true],
    ['a?c', 'ac', false],
    ['[abc]x', 'bx', true],
    ['[abc]x', 'dx', false],
    ['[a-c]', 'b', true],
    ['[a-c]', 'd', false],
    ['[!a-c]', 'd', true],
    ['[!a-c]', 'a', false],
    ['[^0-9]', 'x', true],
    ['[]]', ']', true],
    ['[!]]', 'a', true],
    ['[!]]', ']', false],
    ['[a-]', '-', true],
    ['[-a]', '-', true],
    ['[', '[', true],
    ['[abc', '[abc', true],
    ['a\\*b', 'a*b', true],
    ['a\\*b', 'axb', false],
    ['[\\]]', ']', true],
    ['a.b', 'a.b', true],
    ['a.b', 'axb', false],
    ['(x)+{1}$^|', '(x)+{1}$^|', true],
    ['pci:v00001AF4d*sv*sd*bc*sc*i*', 'pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00', true],
    ['pci:v00001AF4d*sv*sd*bc*sc*i*', 'pci:v00008086d00001041sv00001AF4sd00001041bc02sc00i00', false],
    ['scsi:t-0x0[05]*', 'scsi:t-0x05', true],
    ['scsi:t-0x0[05]*', 'scsi:t-0x01', false],
  ];
  test.each(table)('fnmatch(%j, %j) = %s', (pattern, text, expected) => {
    expect(globToRegExp(pattern).test(text)).toBe(expected);
  });
});

describe('parsers', () => {
  test('moduleName', () => {
    expect(moduleName('kernel/drivers/usb/storage/usb-storage.ko')).toBe('usb_storage');
    expect(moduleName('kernel/drivers/net/virtio_net.ko.xz')).toBe('virtio_net');
    expect(moduleName('mod.ko.zst')).toBe('mod');
    expect(moduleName('snd-hda-intel')).toBe('snd_hda_intel');
  });

  test('modules.alias', () => {
    expect(parseModulesAlias('# comment\nalias a* mod-a\nalias b  mod_b \nsoftdep x pre: y\n\n')).toEqual([
      { pattern: 'a*', module: 'mod_a' },
      { pattern: 'b', module: 'mod_b' },
    ]);
  });

  test('modules.dep', () => {
    const dep = parseModulesDep('kernel/a.ko: kernel/b.ko.xz kernel/c-d.ko\nkernel/b.ko.xz:\n\nnot a line\n');
    expect([...dep]).toEqual([
      ['a', { path: 'kernel/a.ko', deps: ['b', 'c_d'] }],
      ['b', { path: 'kernel/b.ko.xz', deps: [] }],
    ]);
  });

  test('modules.builtin and modules.builtin.modinfo', () => {
    expect([...parseModulesBuiltin('kernel/fs/ext4/ext4.ko\nkernel/x/y-z.ko\n')]).toEqual(['ext4', 'y_z']);
    expect(parseBuiltinModinfo('ext4.alias=fs-ext4\0ext4.license=GPL\0virtio_blk.alias=virtio:d00000002v*\0')).toEqual([
      { pattern: 'fs-ext4', module: 'ext4' },
      { pattern: 'virtio:d00000002v*', module: 'virtio_blk' },
    ]);
  });
});

describe('ModuleDb on fixture files', () => {
  const db = ModuleDb.fromDir(FIXTURE);

  const resolveTable: [string, string[], string[]][] = [
    ['pci:v00008086d0000100Esv00008086sd001Ebc02sc00i00', ['e1000'], []],
    ['pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00', ['virtio_pci'], []],
    ['virtio:d00000001v00001AF4', ['virtio_net'], []],
    ['virtio:d00000002v00001AF4', ['virtio_blk'], ['virtio_blk']],
    ['usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00', ['usb_storage'], []],
    ['scsi:t-0x05', ['sr_mod'], []],
    ['acpi:PNP0C0A:', ['fake_acpi'], []],
    ['acpi:PNP0C01:', [], []],
    ['dmi:bvnVendor:bvr1', ['fake_dmi'], []],
    ['platform:foo-bar', ['fake_platform', 'fake_platform2'], []],
    ['fs-squashfs', ['squashfs'], []],
    ['fs-ext4', [], ['ext4']],
    ['made:up:device', [], []],
    ['', [], []],
  ];
  test.each(resolveTable)('resolve(%j)', (modalias, modules, builtin) => {
    expect(db.resolve(modalias)).toEqual({ modules, builtin });
  });

  const orderTable: [string, string[]][] = [
    ['e1000', ['e1000']],
    ['virtio_pci', ['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci']],
    ['virtio_net', ['virtio_ring', 'virtio', 'failover', 'net_failover', 'virtio_net']],
    ['usb-storage', ['scsi_mod', 'usb_storage']],
    ['isofs', ['cdrom', 'isofs']],
    ['ext4', []],
  ];
  test.each(orderTable)('loadOrder(%s)', (name, order) => {
    expect(db.loadOrder(name)).toEqual(order);
  });

  test('status and unknown modules', () => {
    expect(db.status('ext4')).toBe('builtin');
    expect(db.status('fuse')).toBe('module');
    expect(db.status('erofs')).toBe('unknown');
    expect(() => db.loadOrder('erofs')).toThrow(ModulesError);
    expect(() => db.loadOrder('erofs')).toThrow(expect.objectContaining({ code: 'E_MODULES', message: 'module erofs is neither built in nor in modules.dep' }));
    expect(() => db.loadOrder('broken')).toThrow(/module absent, needed by broken, is not in modules.dep/);
  });

  test('a folder without module files is a typed error with a hint', () => {
    expect(() => ModuleDb.fromDir('/nonexistent/lib/modules/9.9.9')).toThrow(
      expect.objectContaining({ code: 'E_MODULES', message: 'cannot read /nonexistent/lib/modules/9.9.9/modules.alias: it does not exist', hint: expect.stringContaining('uname -r') }),
    );
  });
});

describe("ModuleDb on the lab kernel's real modules (the newest installed: findModules)", () => {
  // No kernel installed: every test here fails with findModules' message, naming the package to install.
  let real: { dir: string; db: ModuleDb } | undefined;
  const kernel = () => {
    if (!real) {
      const dir = findModules().modulesDir;
      real = { dir, db: ModuleDb.fromDir(dir) };
    }
    return real;
  };

  test('virtio devices resolve to their drivers; a made-up device to nothing', () => {
    const { db } = kernel();
    expect(db.resolve('virtio:d00000001v00001AF4').modules).toEqual(['virtio_net']);
    expect(db.resolve('virtio:d00000002v00001AF4').modules).toEqual(['virtio_blk']);
    expect(db.resolve('pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00').modules).toEqual(['virtio_pci']);
    expect(db.resolve('pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00').modules).toEqual(['virtio_pci']);
    expect(db.resolve('made:up:v0000d0000')).toEqual({ modules: [], builtin: [] });
  });

  test('load orders put dependencies first and leave built-ins out', () => {
    const { db } = kernel();
    // what a version adds to these orders varies; these dependencies do not
    const before = (order: string[], deps: string[], last: string) => {
      expect(order.at(-1)).toBe(last);
      for (const d of deps) expect(order.indexOf(d), `${d} in ${order.join(' ')}`).toBeGreaterThanOrEqual(0);
    };
    before(db.loadOrder('virtio_net'), ['virtio_ring', 'virtio', 'net_failover'], 'virtio_net');
    before(db.loadOrder('virtio_pci'), ['virtio_ring', 'virtio'], 'virtio_pci');
    before(db.loadOrder('isofs'), ['cdrom'], 'isofs');
    before(db.loadOrder('erofs'), [], 'erofs');
    expect(db.status('ext4')).toBe('builtin');
    expect(db.loadOrder('ext4')).toEqual([]);
    for (const m of ['fuse', 'loop', 'squashfs', 'overlay']) expect(db.loadOrder(m)).toEqual([m]);
  });

  test('every module in modules.dep has a load order that ends with it and lists each module once', () => {
    const { db } = kernel();
    for (const name of db.dep.keys()) {
      const order = db.loadOrder(name);
      expect(order.at(-1)).toBe(name);
      expect(new Set(order).size).toBe(order.length);
      // every module comes after all of its own dependencies
      order.forEach((m, i) => {
        for (const d of db.dep.get(m)!.deps) if (!db.builtin.has(d)) expect(order.indexOf(d)).toBeLessThan(i);
      });
    }
  });

  test('the index finds exactly what trying every pattern finds', () => {
    const entries = parseModulesAlias(readFileSync(join(kernel().dir, 'modules.alias'), 'latin1'));
    const index = new AliasIndex(entries);
    const compiled = entries.map((e) => ({ re: globToRegExp(e.pattern), module: e.module }));
    const brute = (s: string): string[] => [...new Set(compiled.filter((e) => e.re.test(s)).map((e) => e.module))];
    const samples = new Set<string>([
      'virtio:d00000001v00001AF4',
      'acpi:LNRO0005:',
      'acpi:PNP0A08:PNP0A03:',
      'hid:b0003g0001v0000046Dp0000C52B',
      'cpu:type:x86,ven0000fam0006mod0086:feature:,0001',
      'of:NfooTbarCvirtio,mmio',
      'fs-virtiofs',
      'nothing',
    ]);
    // every literal prefix of every pattern, and the host's own devices
    for (const e of entries) samples.add(e.pattern.replace(/\*/g, '0'));
    for (const dir of ['/sys/bus/pci/devices', '/sys/bus/virtio/devices', '/sys/bus/platform/devices']) {
      if (!existsSync(dir)) continue;
      for (const d of readdirSync(dir)) {
        try {
          samples.add(readFileSync(join(dir, d, 'modalias'), 'utf8').trim());
        } catch {
          // devices without a modalias
        }
      }
    }
    for (const s of samples) expect(index.match(s), s).toEqual(brute(s));
  });
});
