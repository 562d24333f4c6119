import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { findModules } from '../../test/lab/qemu.ts';
import { ModuleDb } from './modalias.ts';
import { formatProbeReport, HFK_MODULES, type LoadOutcome, modprobeLoader, planProbe, probeHardware, readLoadedModules, scanModaliases } from './probe.ts';
import type { CommandResult } from './steps.ts';

const FIXTURE_MODULES = new URL('./testdata/modules', import.meta.url).pathname;
const db = ModuleDb.fromDir(FIXTURE_MODULES);

const PCI_VIRTIO_NET = 'pci:v00001AF4d00001041sv00001AF4sd00001041bc02sc00i00';
const VIRTIO_NET = 'virtio:d00000001v00001AF4';
const E1000 = 'pci:v00008086d0000100Esv00008086sd001Ebc02sc00i00';

const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

/** A fixture root: sys/devices/… with modalias files, proc/modules. */
function fixtureRoot(devices: Record<string, string>, procModules = ''): string {
  const root = mkdtempSync(join(tmpdir(), 'hfk-probe-'));
  roots.push(root);
  for (const [path, modalias] of Object.entries(devices)) addDevice(root, path, modalias);
  mkdirSync(join(root, 'proc'), { recursive: true });
  writeFileSync(join(root, 'proc', 'modules'), procModules);
  return root;
}

function addDevice(root: string, path: string, modalias: string): void {
  const dir = join(root, 'sys', path);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'modalias'), `${modalias}\n`);
  mkdirSync(join(dir, 'power'), { recursive: true });
  writeFileSync(join(dir, 'uevent'), `MODALIAS=${modalias}\n`);
}

/** A loader that records calls; `effects` run when a module loads (new devices appear). */
function fakeLoader(effects: Record<string, () => void> = {}, outcomes: Record<string, LoadOutcome> = {}) {
  const calls: string[] = [];
  const load = async (name: string): Promise<LoadOutcome> => {
    calls.push(name);
    const o = outcomes[name] ?? { ok: true };
    if (o.ok) effects[name]?.();
    return o;
  };
  return { calls, load };
}

describe('scanModaliases', () => {
  test('finds modalias files in real folders only, sorted, skipping power/ and symlinks', () => {
    const root = fixtureRoot({
      '/devices/pci0000:00/0000:00:03.0': PCI_VIRTIO_NET,
      '/devices/platform/serial8250': 'platform:serial8250',
      '/devices/pci0000:00/0000:00:03.0/virtio2': VIRTIO_NET,
    });
    // the links sysfs has everywhere: following them would loop or double count
    symlinkSync('../../..', join(root, 'sys/devices/pci0000:00/0000:00:03.0/virtio2/subsystem'));
    symlinkSync('..', join(root, 'sys/devices/pci0000:00/0000:00:03.0/virtio2/device'));
    writeFileSync(join(root, 'sys/devices/platform/serial8250/power/modalias'), 'not:a:device\n');
    writeFileSync(join(root, 'sys/devices/platform/empty-modalias'), '');
    mkdirSync(join(root, 'sys/devices/virtual/empty'), { recursive: true });
    writeFileSync(join(root, 'sys/devices/virtual/empty/modalias'), '\n');
    expect(scanModaliases(root)).toEqual([
      { path: '/devices/pci0000:00/0000:00:03.0', modalias: PCI_VIRTIO_NET },
      { path: '/devices/pci0000:00/0000:00:03.0/virtio2', modalias: VIRTIO_NET },
      { path: '/devices/platform/serial8250', modalias: 'platform:serial8250' },
    ]);
  });

  test('a root without /sys has no devices', () => {
    expect(scanModaliases('/nonexistent-root')).toEqual([]);
  });

  test('readLoadedModules reads the first column of /proc/modules', () => {
    const root = fixtureRoot({}, 'virtio 16384 2 virtio_net,virtio_pci, Live 0x0\nvirtio_ring 45056 2 - Live 0x0\n');
    expect([...readLoadedModules(root)]).toEqual(['virtio', 'virtio_ring']);
    expect([...readLoadedModules('/nonexistent-root')]).toEqual([]);
  });
});

describe('probeHardware', () => {
  test('rescans until no new device appears: a driver that reveals a device gets that device its driver', async () => {
    const root = fixtureRoot({ '/devices/pci0000:00/0000:00:03.0': PCI_VIRTIO_NET, '/devices/platform/serial8250': 'platform:serial8250' });
    // loading virtio_pci makes the virtio function appear, as the kernel does
    const { calls, load } = fakeLoader({ virtio_pci: () => addDevice(root, '/devices/pci0000:00/0000:00:03.0/virtio0', VIRTIO_NET) });
    let settles = 0;
    const report = await probeHardware({ root, db, load, settle: async () => void settles++ });

    expect(report.devices).toEqual([
      { path: '/devices/pci0000:00/0000:00:03.0', modalias: PCI_VIRTIO_NET, modules: ['virtio_pci'], builtin: [], round: 1 },
      { path: '/devices/platform/serial8250', modalias: 'platform:serial8250', modules: [], builtin: [], round: 1 },
      { path: '/devices/pci0000:00/0000:00:03.0/virtio0', modalias: VIRTIO_NET, modules: ['virtio_net'], builtin: [], round: 2 },
    ]);
    expect(report.loaded).toEqual([
      { module: 'virtio_ring', reason: 'dependency of virtio_pci' },
      { module: 'virtio', reason: 'dependency of virtio_pci' },
      { module: 'virtio_pci_modern_dev', reason: 'dependency of virtio_pci' },
      { module: 'virtio_pci_legacy_dev', reason: 'dependency of virtio_pci' },
      { module: 'virtio_pci', reason: PCI_VIRTIO_NET },
      { module: 'failover', reason: 'dependency of virtio_net' },
      { module: 'net_failover', reason: 'dependency of virtio_net' },
      { module: 'virtio_net', reason: VIRTIO_NET },
      { module: 'fuse', reason: 'hfk' },
      { module: 'loop', reason: 'hfk' },
      { module: 'squashfs', reason: 'hfk' },
      { module: 'overlay', reason: 'hfk' },
      { module: 'cdrom', reason: 'dependency of isofs' },
      { module: 'isofs', reason: 'hfk' },
    ]);
    expect(calls).toEqual(report.loaded.map((l) => l.module));
    expect(report.builtin).toEqual(['ext4']);
    expect(report.failures).toEqual([]);
    expect(report.warnings).toEqual(['module erofs (hfk) is neither built into this kernel nor in modules.dep: features that need it will not work']);
    expect(report.rounds).toBe(3);
    expect(settles).toBe(2);
  });

  test('with a batch loader, a round is one call; what it did not load is retried one by one for its error', async () => {
    const root = fixtureRoot({ '/devices/pci0000:00/0000:00:03.0': PCI_VIRTIO_NET, '/devices/pci0000:00/0000:00:05.0': E1000 });
    const batches: string[][] = [];
    const loadedNow = new Set<string>();
    const loadBatch = async (names: readonly string[]) => {
      batches.push([...names]);
      for (const n of names) if (n !== 'e1000') loadedNow.add(n); // e1000 fails to load
      if (names.includes('virtio_pci')) addDevice(root, '/devices/pci0000:00/0000:00:03.0/virtio0', VIRTIO_NET);
      return new Set(loadedNow);
    };
    const { calls, load } = fakeLoader({}, { e1000: { ok: false, notFound: false, message: 'modprobe e1000: Exec format error' } });
    const report = await probeHardware({ root, db, load, loadBatch, required: ['loop'] });
    expect(batches).toEqual([
      ['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'e1000'],
      ['failover', 'net_failover', 'virtio_net'],
      ['loop'],
    ]);
    // Only the module the batch could not load goes through the single loader, for its message.
    expect(calls).toEqual(['e1000']);
    expect(report.failures).toEqual([{ module: 'e1000', reason: E1000, message: 'modprobe e1000: Exec format error' }]);
    expect(report.loaded.map((l) => l.module)).toEqual(['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'failover', 'net_failover', 'virtio_net', 'loop']);
    expect(report.loaded.find((l) => l.module === 'virtio_net')?.reason).toBe(VIRTIO_NET);
  });

  test('modules loaded before the probe, and built-in drivers, are not loaded again', async () => {
    const root = fixtureRoot(
      { '/devices/pci0000:00/0000:00:03.0/virtio0': VIRTIO_NET, '/devices/pci0000:00/0000:00:04.0/virtio1': 'virtio:d00000002v00001AF4' },
      'virtio_ring 45056 2 - Live 0x0\nvirtio 16384 2 - Live 0x0\nfuse 1 0 - Live 0x0\n',
    );
    const { calls, load } = fakeLoader();
    const report = await probeHardware({ root, db, load, required: ['fuse', 'ext4'] });
    expect(calls).toEqual(['failover', 'net_failover', 'virtio_net']);
    expect(report.alreadyLoaded).toEqual(['fuse', 'virtio', 'virtio_ring']);
    // virtio_blk is built in: listed for the device, never loaded
    expect(report.devices[1]).toMatchObject({ modules: ['virtio_blk'], builtin: ['virtio_blk'] });
    expect(report.builtin).toEqual(['ext4']);
    expect(report.rounds).toBe(2);
  });

  test('a failed module is reported, its dependents are not tried, the rest goes on', async () => {
    const root = fixtureRoot({
      '/devices/pci0000:00/0000:00:05.0': E1000,
      '/devices/pci0000:00/0000:00:06.0/usb1/1-1/1-1:1.0': 'usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00',
      '/devices/pci0000:00/0000:00:07.0/host0/target0:0:0/0:0:0:0': 'scsi:t-0x05',
    });
    const { calls, load } = fakeLoader({}, {
      e1000: { ok: false, notFound: false, message: 'modprobe e1000: exit status 1: Exec format error' },
      scsi_mod: { ok: false, notFound: false, message: 'modprobe scsi_mod: exit status 1: Invalid argument' },
    });
    const report = await probeHardware({ root, db, load, required: ['loop'] });
    expect(calls).toEqual(['e1000', 'scsi_mod', 'loop']); // scsi_mod is tried once, sr_mod and usb_storage never
    expect(report.failures).toEqual([
      { module: 'e1000', reason: E1000, message: 'modprobe e1000: exit status 1: Exec format error' },
      { module: 'scsi_mod', reason: 'dependency of usb_storage', message: 'modprobe scsi_mod: exit status 1: Invalid argument' },
    ]);
    expect(report.loaded).toEqual([{ module: 'loop', reason: 'hfk' }]);
  });

  test("hfk's and the config's modules that the kernel lacks are warnings, not failures", async () => {
    const root = fixtureRoot({});
    const { load } = fakeLoader({}, { squashfs: { ok: false, notFound: true, message: 'modprobe: module squashfs not found in modules.dep' } });
    const report = await probeHardware({ root, db, load, extra: ['e1000', 'mlx4-en'] });
    expect(report.failures).toEqual([]);
    expect(report.loaded.map((l) => `${l.module}:${l.reason}`)).toEqual(['fuse:hfk', 'loop:hfk', 'overlay:hfk', 'cdrom:dependency of isofs', 'isofs:hfk', 'e1000:config']);
    expect(report.warnings).toEqual([
      'module squashfs (hfk) was not found, so this kernel lacks it: modprobe: module squashfs not found in modules.dep',
      'module erofs (hfk) is neither built into this kernel nor in modules.dep: features that need it will not work',
      'module mlx4_en (config) is neither built into this kernel nor in modules.dep: features that need it will not work',
    ]);
    expect(report.rounds).toBe(1);
  });

  test('excluded modules are skipped; aliases naming absent modules are warnings', async () => {
    const root = fixtureRoot({ '/devices/pci0000:00/0000:00:05.0': E1000, '/devices/platform/foo': 'platform:foo-bar' });
    const { calls, load } = fakeLoader();
    const report = await probeHardware({ root, db, load, required: [], exclude: ['e1000'] });
    expect(calls).toEqual([]);
    expect(report.skipped).toEqual([{ module: 'e1000', reason: E1000 }]);
    expect(report.warnings).toEqual([
      'platform:foo-bar (/devices/platform/foo) wants module fake_platform, which is not in modules.dep: the initramfs left it out',
      'platform:foo-bar (/devices/platform/foo) wants module fake_platform2, which is not in modules.dep: the initramfs left it out',
    ]);
  });

  test('rescanning stops after maxRounds when devices keep appearing', async () => {
    const root = fixtureRoot({ '/devices/pci0000:00/0000:00:03.0': PCI_VIRTIO_NET });
    const { load } = fakeLoader({ virtio_pci: () => addDevice(root, '/devices/pci0000:00/0000:00:03.0/virtio0', VIRTIO_NET) });
    const report = await probeHardware({ root, db, load, required: [], maxRounds: 1 });
    expect(report.loaded.map((l) => l.module)).toEqual(['virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci']);
    expect(report.warnings).toEqual(['stopped rescanning after 1 rounds: devices kept appearing']);
  });

  test('planProbe lists what would be loaded and touches nothing', async () => {
    const root = fixtureRoot({ '/devices/pci0000:00/0000:00:03.0': PCI_VIRTIO_NET, '/devices/pci0000:00/0000:00:05.0': E1000 }, 'virtio 1 0 - Live 0x0\n');
    const report = await planProbe({ root, db });
    expect(report.loaded.map((l) => l.module)).toEqual([
      'virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'e1000', 'fuse', 'loop', 'squashfs', 'overlay', 'cdrom', 'isofs',
    ]);
    expect(report.alreadyLoaded).toEqual([]);
    expect(report.rounds).toBe(2);
    const text = formatProbeReport(report);
    expect(text).toContain(`${PCI_VIRTIO_NET} → virtio_pci\n${E1000} → e1000\n`);
    expect(text).toContain('loaded (12): virtio_ring virtio');
    expect(text).toContain('built in: ext4');
    expect(text).toContain('warning: module erofs (hfk) is neither built into this kernel');
  });
});

describe('modprobeLoader', () => {
  const result = (code: number | null, stderr = '', timedOut = false): CommandResult => ({ code, signal: null, stdout: '', stderr, timedOut });
  test.each([
    [result(0), { ok: true }],
    [result(1, 'modprobe: module erofs not found in modules.dep\n'), { ok: false, notFound: true, message: 'modprobe erofs: exit status 1: modprobe: module erofs not found in modules.dep' }],
    [result(1, 'modprobe: FATAL: Module erofs not found in directory /lib/modules/6.1.0\n'), { ok: false, notFound: true, message: 'modprobe erofs: exit status 1: modprobe: FATAL: Module erofs not found in directory /lib/modules/6.1.0' }],
    [result(1, "modprobe: can't load module erofs (kernel/fs/erofs/erofs.ko): invalid module format\n"), { ok: false, notFound: false, message: "modprobe erofs: exit status 1: modprobe: can't load module erofs (kernel/fs/erofs/erofs.ko): invalid module format" }],
    [result(null, '', true), { ok: false, notFound: false, message: 'modprobe erofs: timed out' }],
  ] as const)('%j', async (r, outcome) => {
    const argvs: (readonly string[])[] = [];
    const loader = modprobeLoader(async (argv) => {
      argvs.push(argv);
      return r;
    });
    expect(await loader('erofs')).toEqual(outcome);
    expect(argvs).toEqual([['modprobe', 'erofs']]);
  });
});

describe("a dry run on this host's /sys with the lab kernel's modules (the newest installed: findModules)", () => {
  test('lists the drivers for the devices found, and hfk\'s modules', async () => {
    expect(existsSync('/sys/devices'), 'this host has no /sys/devices to probe').toBe(true);
    const real = ModuleDb.fromDir(findModules().modulesDir); // none installed: fails, naming the package
    const report = await planProbe({ root: '/', db: real });
    expect(report.devices.length).toBeGreaterThan(0);
    const loaded = report.loaded.map((l) => l.module);
    for (const m of HFK_MODULES) expect(loaded.includes(m) || report.builtin.includes(m), m).toBe(true);
    // whatever virtio NIC this host has gets virtio_net, after its dependencies
    const hasVirtioNet = report.devices.some((d) => d.modalias.startsWith('virtio:d00000001v'));
    if (hasVirtioNet) expect(loaded.indexOf('virtio_net')).toBeGreaterThan(loaded.indexOf('virtio'));
    // every device's modalias file says what the report says
    for (const d of report.devices) expect(readFileSync(join('/sys', d.path, 'modalias'), 'utf8').trim()).toBe(d.modalias);
  });
});
