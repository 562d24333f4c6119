// The hardware probe, as KNOPPIX's autoconfig did it and udev's coldplug
// still does: every device the kernel knows has a `modalias` file under
// /sys/devices; modules.alias says which module drives it; load that module
// and its dependencies, then look again, because a driver can reveal new
// devices (a PCI virtio function becomes a virtio device that needs
// virtio_net). When a scan finds nothing new, load the modules hfk itself
// needs (FUSE, loop, the image filesystems, overlay).
//
// The filesystem root and the module loader are injected: the same code runs
// on /sys in the initramfs (busybox modprobe), on a host for --dry-run, and
// on a fixture tree in tests.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModuleDb, moduleName, ModulesError } from './modalias.ts';
import { type CommandRunner, commandFailure, type Logger } from './steps.ts';

/** Modules hfk-init needs whatever the hardware: FUSE, loop, image filesystems, overlay. */
export const HFK_MODULES = ['fuse', 'loop', 'squashfs', 'overlay', 'isofs', 'ext4', 'erofs'] as const;

export type LoadOutcome = { ok: true } | { ok: false; notFound: boolean; message: string };

/** Loads one module (its dependencies are already loaded). */
export type ModuleLoader = (name: string) => Promise<LoadOutcome>;

/** The loader PID 1 uses: `modprobe NAME` (busybox reads modules.dep). */
export function modprobeLoader(run: CommandRunner, modprobe = 'modprobe', timeoutMs = 30_000): ModuleLoader {
  return async (name) => {
    const argv = [modprobe, name];
    const r = await run(argv, { timeoutMs });
    if (r.code === 0) return { ok: true };
    const text = `${r.stderr}\n${r.stdout}`;
    return { ok: false, notFound: /not found/i.test(text) && !r.timedOut, message: commandFailure(argv, r) };
  };
}

/**
 * Loads many modules at once (each after its dependencies); says which are
 * loaded afterwards. One process instead of one per module: on a slow
 * machine a process start costs about as much as loading the module.
 */
export type BatchLoader = (names: readonly string[]) => Promise<Set<string>>;

/** `modprobe -a NAME…` (busybox), then /proc/modules tells what is loaded. */
export function modprobeBatchLoader(run: CommandRunner, root = '/', modprobe = 'modprobe', timeoutMs = 60_000): BatchLoader {
  return async (names) => {
    await run([modprobe, '-a', ...names], { timeoutMs });
    return new Set([...readLoadedModules(root)].map(moduleName));
  };
}

// ---------------------------------------------------------------------------
// Scanning /sys (the edge: reads under the injected root)

export interface DeviceAlias {
  /** The device's folder under /sys, e.g. /devices/pci0000:00/0000:00:03.0. */
  readonly path: string;
  readonly modalias: string;
}

/**
 * Every `modalias` under ROOT/sys/devices, walking real folders only (the
 * symlinks `subsystem`, `driver`, `device` would loop) and skipping the
 * `power` attribute folders. Sorted by path, so reports are stable.
 */
export function scanModaliases(root: string): DeviceAlias[] {
  const sys = join(root, 'sys');
  const out: DeviceAlias[] = [];
  const walk = (dir: string): void => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // a device that went away while we looked
    }
    for (const e of entries) {
      if (e.isDirectory()) {
        if (e.name !== 'power') walk(join(dir, e.name));
      } else if (e.name === 'modalias' && e.isFile()) {
        let text: string;
        try {
          text = readFileSync(join(dir, e.name), 'utf8').trim();
        } catch {
          continue;
        }
        if (text !== '') out.push({ path: dir.slice(sys.length), modalias: text });
      }
    }
  };
  walk(join(sys, 'devices'));
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Names of the modules already loaded: first column of ROOT/proc/modules. */
export function readLoadedModules(root: string): Set<string> {
  try {
    const text = readFileSync(join(root, 'proc', 'modules'), 'utf8');
    return new Set(text.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n !== ''));
  } catch {
    return new Set();
  }
}

// ---------------------------------------------------------------------------
// The probe

export interface DeviceRecord extends DeviceAlias {
  /** Loadable modules that drive it (modules.alias); empty: none. */
  readonly modules: readonly string[];
  /** Built-in drivers that claim it (modules.builtin.modinfo). */
  readonly builtin: readonly string[];
  /** The scan that first saw it (1-based). */
  readonly round: number;
}

export interface LoadRecord {
  readonly module: string;
  /** Why: the device modalias, "hfk", "config", or "dependency of X". */
  readonly reason: string;
}

export interface LoadFailure extends LoadRecord {
  readonly message: string;
}

export interface ProbeReport {
  /** Every device with a modalias, in the order seen. */
  readonly devices: DeviceRecord[];
  /** Modules loaded, in the order they were loaded (dependencies first). */
  readonly loaded: LoadRecord[];
  /** hfk's and the config's modules that are compiled into the kernel. */
  readonly builtin: string[];
  /** Modules that were loaded before the probe started. */
  readonly alreadyLoaded: string[];
  /** Modules left alone because of `exclude`. */
  readonly skipped: LoadRecord[];
  readonly failures: LoadFailure[];
  /** Things a person may want to know; never fatal. */
  readonly warnings: string[];
  /** Scans of /sys (the last one found nothing new). */
  rounds: number;
}

export interface ProbeOptions {
  /** Filesystem root holding sys/ and proc/: "/" in the initramfs, a fixture tree in tests. */
  readonly root: string;
  readonly db: ModuleDb;
  readonly load: ModuleLoader;
  /**
   * Loads each round's modules in one go first (see BatchLoader); what it
   * did not load goes through `load` one by one, for the exact error.
   */
  readonly loadBatch?: BatchLoader;
  /** Modules hfk needs (default HFK_MODULES): missing ones are warnings. */
  readonly required?: readonly string[];
  /** More modules to load (config init.modules): missing ones are warnings. */
  readonly extra?: readonly string[];
  /** Never load these (a blacklist). */
  readonly exclude?: readonly string[];
  /** Modules taken as loaded already; default: ROOT/proc/modules. */
  readonly assumeLoaded?: Iterable<string>;
  /** Give up rescanning after this many scans (default 10). */
  readonly maxRounds?: number;
  /**
   * Called after a round that loaded modules, before the next scan: a driver
   * whose devices appear asynchronously (USB) gets time here. Default: none.
   */
  readonly settle?: () => Promise<void>;
  readonly log?: Logger;
}

type Ensure = 'loaded' | 'builtin' | 'failed' | 'unknown' | 'excluded';

/**
 * Loads the drivers for every device under ROOT/sys/devices, rescanning
 * until no new device appears, then hfk's own modules. Never throws for a
 * module that fails: the report says what happened.
 */
export async function probeHardware(options: ProbeOptions): Promise<ProbeReport> {
  const { db, load, log } = options;
  const maxRounds = options.maxRounds ?? 10;
  const exclude = new Set((options.exclude ?? []).map(moduleName));
  const loaded = new Set([...(options.assumeLoaded ?? readLoadedModules(options.root))].map(moduleName));
  const failed = new Map<string, string>();
  const report: ProbeReport = {
    devices: [],
    loaded: [],
    builtin: [],
    alreadyLoaded: [...loaded].sort(),
    skipped: [],
    failures: [],
    warnings: [],
    rounds: 0,
  };

  /** Loads `module` after its dependencies; remembers failures so each is tried once. */
  const ensure = async (module: string, reason: string, tolerateNotFound = false): Promise<Ensure> => {
    if (exclude.has(module)) {
      report.skipped.push({ module, reason });
      return 'excluded';
    }
    if (db.builtin.has(module)) return 'builtin';
    let order: string[];
    try {
      order = db.loadOrder(module);
    } catch (e) {
      if (e instanceof ModulesError) return 'unknown';
      throw e;
    }
    // a dependency that failed before fails this one too: load none of it
    if (order.some((m) => failed.has(m) && !loaded.has(m))) return 'failed';
    for (const m of order) {
      if (loaded.has(m)) continue;
      const why = m === module ? reason : `dependency of ${module}`;
      if (exclude.has(m)) {
        report.skipped.push({ module: m, reason: why });
        return 'excluded';
      }
      log?.debug(`modprobe ${m} (${why})`);
      const outcome = await load(m);
      if (outcome.ok) {
        loaded.add(m);
        report.loaded.push({ module: m, reason: why });
        continue;
      }
      failed.set(m, outcome.message);
      if (tolerateNotFound && !outcome.ok && outcome.notFound) {
        report.warnings.push(`module ${m} (${why}) was not found, so this kernel lacks it: ${outcome.message}`);
        return 'failed';
      }
      report.failures.push({ module: m, reason: why, message: outcome.message });
      log?.warn(`cannot load module ${m} (${why}): ${outcome.message}`);
      return 'failed';
    }
    return 'loaded';
  };

  /** Loads what `wanted` needs (dependencies first) with one batch call; failures are left to ensure(). */
  const batch = async (wanted: readonly [string, string][]): Promise<void> => {
    if (!options.loadBatch) return;
    const order: string[] = [];
    const why = new Map<string, string>();
    for (const [module, reason] of wanted) {
      const m = moduleName(module);
      if (exclude.has(m) || db.builtin.has(m) || loaded.has(m)) continue;
      let deps: string[];
      try {
        deps = db.loadOrder(m);
      } catch {
        continue; // unknown: ensure() reports it
      }
      if (deps.some((x) => exclude.has(x))) continue;
      for (const x of deps) {
        if (loaded.has(x) || order.includes(x)) continue;
        order.push(x);
        why.set(x, x === m ? reason : `dependency of ${m}`);
      }
    }
    if (order.length === 0) return;
    log?.debug(`modprobe -a ${order.join(' ')}`);
    const now = await options.loadBatch(order);
    for (const x of order) {
      if (!now.has(x) || loaded.has(x)) continue;
      loaded.add(x);
      report.loaded.push({ module: x, reason: why.get(x)! });
    }
  };

  const seen = new Set<string>();
  for (let round = 1; ; round++) {
    if (round > maxRounds) {
      report.warnings.push(`stopped rescanning after ${maxRounds} rounds: devices kept appearing`);
      break;
    }
    report.rounds = round;
    const fresh = scanModaliases(options.root).filter((d) => !seen.has(`${d.path}\0${d.modalias}`));
    if (fresh.length === 0) break;
    const before = report.loaded.length;
    await batch(fresh.flatMap((d) => db.resolve(d.modalias).modules.map((m) => [m, d.modalias] as [string, string])));
    for (const d of fresh) {
      seen.add(`${d.path}\0${d.modalias}`);
      const { modules, builtin } = db.resolve(d.modalias);
      report.devices.push({ ...d, modules, builtin, round });
      for (const m of modules) {
        if ((await ensure(m, d.modalias)) === 'unknown') {
          report.warnings.push(`${d.modalias} (${d.path}) wants module ${m}, which is not in modules.dep: the initramfs left it out`);
        }
      }
    }
    if (report.loaded.length === before) {
      // nothing changed, so a rescan would find nothing new either
      report.rounds = round;
      break;
    }
    await options.settle?.();
  }

  const wanted: [string, string][] = [
    ...(options.required ?? HFK_MODULES).map((m) => [moduleName(m), 'hfk'] as [string, string]),
    ...(options.extra ?? []).map((m) => [moduleName(m), 'config'] as [string, string]),
  ];
  await batch(wanted);
  for (const [m, reason] of wanted) {
    if (db.builtin.has(m)) {
      if (!report.builtin.includes(m)) report.builtin.push(m);
      continue;
    }
    if (loaded.has(m)) continue;
    // A module this kernel lacks is a missing feature (erofs images), not a broken boot.
    if ((await ensure(m, reason, true)) === 'unknown') {
      report.warnings.push(`module ${m} (${reason}) is neither built into this kernel nor in modules.dep: features that need it will not work`);
    }
  }
  for (const w of report.warnings) log?.warn(w);
  return report;
}

/**
 * What the probe would load on this machine, without loading anything: one
 * pass over ROOT/sys with a loader that only records, as if no module were
 * loaded yet (a fresh initramfs). For `hfk-init --dry-run` and for mkinitrd
 * choosing modules.
 */
export async function planProbe(options: Omit<ProbeOptions, 'load' | 'assumeLoaded' | 'settle'>): Promise<ProbeReport> {
  return probeHardware({ ...options, assumeLoaded: [], load: async () => ({ ok: true }), maxRounds: options.maxRounds ?? 2 });
}

/** The report as lines for a person: one per device, then the modules. */
export function formatProbeReport(r: ProbeReport): string {
  const lines: string[] = [];
  for (const d of r.devices) {
    const what = d.modules.length ? d.modules.join(', ') : d.builtin.length ? `built in: ${d.builtin.join(', ')}` : 'no module';
    lines.push(`${d.modalias.length > 60 ? `${d.modalias.slice(0, 59)}…` : d.modalias} → ${what}`);
  }
  lines.push(`loaded (${r.loaded.length}): ${r.loaded.map((l) => l.module).join(' ') || 'nothing'}`);
  if (r.builtin.length) lines.push(`built in: ${r.builtin.join(' ')}`);
  if (r.skipped.length) lines.push(`skipped: ${r.skipped.map((s) => s.module).join(' ')}`);
  for (const f of r.failures) lines.push(`failed: ${f.module} (${f.reason}): ${f.message}`);
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  lines.push(`scans of /sys: ${r.rounds}`);
  return lines.join('\n');
}
