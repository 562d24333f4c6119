// Kernel modules for the initramfs: pick modules and module folders from a
// kernel's /lib/modules/VERSION, close the set over modules.dep (and soft
// dependencies), copy it — decompressed, since busybox modprobe cannot load
// .ko.xz/.ko.zst — into a staging tree, and let `depmod -b STAGING VERSION`
// write modules.dep, modules.alias, modules.*.bin for exactly what is there.
//
// A module spec is one of (case as on disk, '-' and '_' are the same):
//   name        a module (loop, virtio_net) or every module below a folder of
//               that name anywhere in the tree (virtio, nls, ata)
//   a/b         a module or folder whose path ends in a/b (block/virtio_blk,
//               fs/fuse, kernel/drivers/net/ethernet)
//   a/b/**      only the folder a/b and everything below it
//   spec?       optional: matching nothing is not an error
// '*' inside a part matches any characters (nls_*). A spec that names a
// built-in module (modules.builtin, e.g. ext4 on Debian's kernels) is met.

import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { gunzipSync, zstdDecompressSync } from 'node:zlib';
import { InputError } from '../errors.ts';

/** What an HTTP-booting initramfs needs: NICs, virtio, disks/CDs for local media, the filesystems hfk mounts. */
export const DEFAULT_MODULE_SPECS: readonly string[] = [
  'kernel/drivers/net/ethernet/**',
  'virtio_net',
  'virtio', // drivers/virtio: virtio_pci, virtio_mmio, virtio_ring, …
  'block/virtio_blk',
  'loop',
  'scsi/virtio_scsi',
  'scsi/sd_mod',
  'sr_mod',
  'ata', // drivers/ata: ata_piix, ahci, libata
  'cdrom',
  'fs/fuse',
  'squashfs',
  'overlayfs',
  'isofs',
  'erofs',
  'nls', // code pages isofs/vfat mounts ask for (nls_utf8, nls_cp437, …)
  'af_packet?', // udhcpc's raw socket (built in on Debian)
];

const KO_SUFFIX = /\.ko(\.(xz|zst|gz))?$/;

/** A module's name as modprobe knows it: file name without .ko*, '-' as '_'. */
export function moduleName(path: string): string {
  return basename(path).replace(KO_SUFFIX, '').replaceAll('-', '_');
}

/** modules.dep: "kernel/a.ko: kernel/b.ko kernel/c.ko" → path → dependency paths. */
export function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    deps.set(line.slice(0, i).trim(), line.slice(i + 1).trim().split(/\s+/).filter(Boolean));
  }
  return deps;
}

/** modules.softdep: "softdep NAME pre: a b post: c" (or without pre:) → name → soft dependency names. */
export function parseSoftdeps(text: string): Map<string, string[]> {
  const soft = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words[0] !== 'softdep' || words.length < 3) continue;
    const name = words[1]!.replaceAll('-', '_');
    const list = soft.get(name) ?? [];
    list.push(...words.slice(2).filter((w) => w !== 'pre:' && w !== 'post:'));
    soft.set(name, list);
  }
  return soft;
}

/** modules.builtin / modules.order: one module path a line. */
export function parseModuleList(text: string): string[] {
  return text.split('\n').map((l) => l.trim()).filter(Boolean);
}

export interface ModuleSpec {
  text: string;
  parts: RegExp[];
  folderOnly: boolean;
  optional: boolean;
}

export function parseSpec(text: string): ModuleSpec {
  let s = text.trim();
  const optional = s.endsWith('?');
  if (optional) s = s.slice(0, -1);
  const folderOnly = /\/(\*\*)?$/.test(s);
  s = s.replace(/\/(\*\*)?$/, '').replace(/^\/+/, '');
  if (!/^[A-Za-z0-9_.*\-/]+$/.test(s) || s.split('/').some((p) => p === '' || p === '.' || p === '..' || p === '**')) {
    throw new InputError(`module spec '${text}' is not a module name or folder: expected e.g. 'loop', 'fs/fuse', 'kernel/drivers/net/ethernet/**'`);
  }
  const parts = s.split('/').map((p) => new RegExp(`^${p.replaceAll('-', '_').replace(/[.+^${}()|[\]\\]/g, '\\$&').replaceAll('*', '.*')}$`));
  return { text, parts, folderOnly, optional };
}

/** Whether a module path (as in modules.dep) is named by the spec. Pure. */
export function specMatches(spec: ModuleSpec, modulePath: string): boolean {
  const segs = modulePath.replace(KO_SUFFIX, '').replaceAll('-', '_').split('/');
  const n = spec.parts.length;
  for (let i = 0; i + n <= segs.length; i++) {
    const isModule = i + n === segs.length;
    if (isModule && spec.folderOnly) continue;
    if (spec.parts.every((re, j) => re.test(segs[i + j]!))) return true;
  }
  return false;
}

export interface ModuleIndex {
  /** modules.dep: path → dependency paths. */
  dep: Map<string, string[]>;
  /** modules.builtin paths. */
  builtin: string[];
  /** modules.softdep: name → names. */
  softdeps: Map<string, string[]>;
}

export interface Selection {
  /** Module paths to copy (as in modules.dep), sorted. */
  modules: string[];
  /** Per spec: how many modules it named itself, and whether it named a built-in. */
  specs: { spec: string; matched: number; builtin: boolean }[];
  /** Optional specs that matched nothing. */
  skipped: string[];
}

/** Picks modules by spec and closes the set over hard and soft dependencies. Pure. */
export function selectModules(index: ModuleIndex, specTexts: readonly string[], options: { softdeps?: boolean } = {}): Selection {
  const all = [...index.dep.keys()];
  const byName = new Map(all.map((p) => [moduleName(p), p]));
  const wanted = new Set<string>();
  const specs: Selection['specs'] = [];
  const skipped: string[] = [];
  for (const text of specTexts) {
    const spec = parseSpec(text);
    const hits = all.filter((p) => specMatches(spec, p));
    const builtin = index.builtin.some((p) => specMatches(spec, p));
    if (hits.length === 0 && !builtin) {
      if (spec.optional) {
        skipped.push(text);
        continue;
      }
      throw new InputError(`module spec '${text}' names no module of this kernel (neither in modules.dep nor modules.builtin)`, {
        hint: `check the name with: find /lib/modules/VERSION -name '*${spec.text.replace(/[?/*]+$/, '').split('/').pop()}*'; add '?' to the spec to make it optional`,
      });
    }
    for (const h of hits) wanted.add(h);
    specs.push({ spec: text, matched: hits.length, builtin });
  }
  const closed = new Set<string>();
  const queue = [...wanted];
  while (queue.length) {
    const p = queue.pop()!;
    if (closed.has(p)) continue;
    closed.add(p);
    for (const d of index.dep.get(p) ?? []) queue.push(d);
    if (options.softdeps !== false) {
      for (const name of index.softdeps.get(moduleName(p)) ?? []) {
        const sp = byName.get(name.replaceAll('-', '_'));
        if (sp) queue.push(sp); // names that are aliases or built-ins need nothing
      }
    }
  }
  for (const p of closed) {
    if (!index.dep.has(p)) throw new InputError(`modules.dep names ${p} as a dependency but has no line for it`, { hint: 'run depmod for that kernel' });
  }
  return { modules: [...closed].sort(), specs, skipped };
}

/** Runs depmod; injected so tests and other hosts can replace it. */
export type Depmod = (baseDir: string, version: string) => void;

export const runDepmod: Depmod = (baseDir, version) => {
  try {
    execFileSync('depmod', ['-b', baseDir, version], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { code?: string; stderr?: Buffer };
    if (err.code === 'ENOENT') throw new InputError('depmod is not installed: it writes modules.dep for the initramfs', { hint: 'apt-get install kmod', cause: e });
    throw new InputError(`depmod -b ${baseDir} ${version} failed: ${err.stderr?.toString().trim() || (e as Error).message}`, { cause: e });
  }
};

/** A module file's bytes, decompressed if it is .ko.xz, .ko.zst or .ko.gz. */
export function readModule(path: string): Buffer {
  if (path.endsWith('.ko')) return readFileSync(path);
  if (path.endsWith('.ko.zst')) return zstdDecompressSync(readFileSync(path));
  if (path.endsWith('.ko.gz')) return gunzipSync(readFileSync(path));
  if (path.endsWith('.ko.xz')) {
    try {
      return execFileSync('xz', ['-dc', path], { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      if ((e as { code?: string }).code === 'ENOENT') throw new InputError(`${path} is xz-compressed and xz is not installed`, { hint: 'apt-get install xz-utils', cause: e });
      throw new InputError(`cannot decompress ${path}: ${(e as Error).message}`, { cause: e });
    }
  }
  throw new InputError(`${path} is not a kernel module: expected .ko, .ko.xz, .ko.zst or .ko.gz`);
}

export interface StageOptions {
  /** A kernel's module folder: /lib/modules/VERSION. */
  modulesDir: string;
  /** Module specs (default DEFAULT_MODULE_SPECS). */
  specs?: readonly string[];
  /** Folder to build in; the tree goes to STAGING/lib/modules/VERSION. */
  stagingDir: string;
  /** Follow modules.softdep too (default true). */
  softdeps?: boolean;
  depmod?: Depmod;
}

export interface StagedModules {
  version: string;
  /** STAGING/lib/modules/VERSION */
  dir: string;
  modules: { path: string; bytes: number; compressed: boolean }[];
  specs: Selection['specs'];
  skipped: string[];
}

/** The kernel version of a module folder, checking it looks like one. */
export function kernelVersionOf(modulesDir: string): string {
  const dep = join(modulesDir, 'modules.dep');
  if (!existsSync(dep)) {
    throw new InputError(`${modulesDir} is not a kernel module folder: ${dep} is missing`, {
      hint: 'pass /lib/modules/VERSION of the kernel you boot (run depmod VERSION if only modules.dep is missing)',
    });
  }
  return basename(modulesDir.replace(/\/+$/, ''));
}

export function stageModules(options: StageOptions): StagedModules {
  const src = options.modulesDir.replace(/\/+$/, '');
  const version = kernelVersionOf(src);
  const read = (name: string) => (existsSync(join(src, name)) ? readFileSync(join(src, name), 'utf8') : '');
  const index: ModuleIndex = {
    dep: parseModulesDep(read('modules.dep')),
    builtin: parseModuleList(read('modules.builtin')),
    softdeps: parseSoftdeps(read('modules.softdep')),
  };
  const sel = selectModules(index, options.specs ?? DEFAULT_MODULE_SPECS, { softdeps: options.softdeps ?? true });
  const dir = join(options.stagingDir, 'lib', 'modules', version);
  mkdirSync(dir, { recursive: true });
  const modules: StagedModules['modules'] = [];
  for (const p of sel.modules) {
    const from = join(src, p);
    const to = join(dir, p.replace(KO_SUFFIX, '.ko'));
    mkdirSync(dirname(to), { recursive: true });
    if (p.endsWith('.ko')) copyFileSync(from, to);
    else writeFileSync(to, readModule(from));
    modules.push({ path: p.replace(KO_SUFFIX, '.ko'), bytes: statSync(to).size, compressed: !p.endsWith('.ko') });
  }
  // depmod reads these to describe built-ins and to order modules.dep
  const chosen = new Set(sel.modules);
  const order = parseModuleList(read('modules.order')).filter((p) => chosen.has(p));
  writeFileSync(join(dir, 'modules.order'), order.map((p) => `${p.replace(KO_SUFFIX, '.ko')}\n`).join(''));
  for (const name of ['modules.builtin', 'modules.builtin.modinfo']) {
    if (existsSync(join(src, name))) copyFileSync(join(src, name), join(dir, name));
  }
  (options.depmod ?? runDepmod)(options.stagingDir, version);
  return { version, dir, modules, specs: sel.specs, skipped: sel.skipped };
}
