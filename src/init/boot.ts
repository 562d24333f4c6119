// The boot, as hfk-init runs it as PID 1: a list of small described steps.
// Each step is timed and logged by the step runner (steps.ts); a failure
// names its stage, its cause and what to try, and ends in the emergency
// shell instead of a kernel panic.
//
//   early → config → probe → network → mirrors → cache → manifest → fuse
//         → rootfs → overlay → switchroot
//
// The edges (mount, modprobe, the reader process, switch_root) go through
// the `System` passed in, so this file only orders and describes.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { HfkError } from '../errors.ts';
import { ImageOpener } from '../fetch/open.ts';
import { formatRanking, type Ranking } from '../fetch/rank.ts';
import type { LoadedImage } from '../fetch/trust.ts';
import { detectFilesystem, FSTYPE_PROBE_BYTES, type Filesystem } from '../format/fstype.ts';
import { parsePublicKey, PUBLIC_KEY_PREFIX, type PublicKey } from '../format/keys.ts';
import type { LaunchedReader } from '../reader/launch.ts';
import type { ReaderSpec } from '../reader/spec.ts';
import { preloadHttpClient } from '../store/http.ts';
import { type BootSettings, parseCmdline, resolveBootSettings } from '../config/cmdline.ts';
import { defaultConfig, formatMountSource, type InitReader, type MountSource, parseConfig, transferOptions } from '../config/config.ts';
import { readMirrorList } from '../config/mirrorlist.ts';
import { ModuleDb } from './modalias.ts';
import { formatNetworkReport, type NetworkOptions, type NetworkReport } from './network.ts';
import { formatProbeReport, type ProbeOptions, type ProbeReport } from './probe.ts';
import { type CommandRunner, commandFailure, type Logger, step, type Step } from './steps.ts';
import { redactUrl } from '../store/auth.ts';

// The settings of the boot's block reader: init.reader in hfk.yaml (see
// InitReader in src/config/config.ts, where the defaults live), and the
// defaults that depend on what backs the block cache.

/**
 * Kernel readahead (KiB) of the root image during a boot: init.reader.readahead
 * (default 512K). A boot reads many small files: modest readahead (the boot
 * bench's figures for other values are in docs/PERFORMANCE.md).
 */
export function bootReadAheadKb(reader: InitReader): number {
  return Math.round(reader.readahead / 1024);
}

/**
 * The fetcher's own readahead (bytes) during a boot: init.reader.prefetch
 * when set, else by where the block cache is. With a tmpfs cache, none: it
 * fetches blocks nobody asks for, and every block costs CPU on a small
 * machine. With a persistent cache partition, 1 MiB: what it fetches stays on
 * the partition, and the next boot, whose reads differ a little (the kernel's
 * readahead windows, the order services start in), finds those blocks there.
 */
export function bootPrefetchBytes(cache: MountSource, configured?: number): number {
  return configured ?? (cache.kind === 'tmpfs' ? 0 : 1 << 20);
}

/**
 * Gaps between the boot profile's blocks that the profile prefetch also
 * fetches, bytes. With a cache partition, up to 1 MiB (the default readahead
 * above): the next boot then finds there what it reads that this one did not
 * (paid once). With the tmpfs cache, none: every boot would pay for them.
 */
export function bootProfileGapBytes(cache: MountSource): number {
  return cache.kind === 'tmpfs' ? 0 : 1 << 20;
}

/**
 * Whether the fetcher's readahead also reads blocks the cache partition
 * already holds: no. The readahead is there to fill the partition for the
 * next boot; in a warm boot it would only decode and verify blocks early,
 * many never used, and every block costs CPU on a small machine.
 */
export const BOOT_PREFETCH_CACHED = false;

/**
 * The block cache's size limit: as configured, and at most a share of the
 * filesystem it is on: a quarter of the tmpfs cache's /run (which the booted
 * system keeps using); 90% of a cache partition (the rest for the
 * filesystem's own needs; a cache larger than its disk would otherwise learn
 * its size only from ENOSPC, see DiskCache); half of a partition that the
 * overlay shares (hfk.overlay given the same way as hfk.cache), so that the
 * cache cannot take the room the system's writes need.
 */
export function blockCacheLimit(cache: MountSource, configured: number, fsBytes: number | undefined, overlay?: MountSource): number {
  if (!fsBytes) return configured;
  const share = cache.kind === 'tmpfs' ? 0.25 : overlay && formatMountSource(overlay) === formatMountSource(cache) ? 0.5 : 0.9;
  return Math.max(1, Math.min(configured, Math.floor(fsBytes * share)));
}

/**
 * Write-behind of the block cache during a boot: with the tmpfs cache (RAM
 * like the reader's memory cache, gone at the next boot), objects are
 * written once the boot has gone quiet, not while it waits. A cache
 * partition is written at once: the next boot depends on it, and a machine
 * may be switched off soon after this one is up.
 */
export function blockCacheHoldMs(cache: MountSource): number {
  return cache.kind === 'tmpfs' ? 5000 : 0;
}

function fsBytes(dir: string): number | undefined {
  try {
    const st = fs.statfsSync(dir);
    return st.blocks * st.bsize;
  } catch {
    return undefined;
  }
}

export const PATHS = {
  config: '/etc/hfk/hfk.yaml',
  key: '/etc/hfk/hfk.pub',
  run: '/run/hfk',
  log: '/run/hfk/init.log',
  report: '/run/hfk/boot-report.json',
  cacheTmpfs: '/run/hfk/cache',
  cacheDev: '/run/hfk/cache-dev',
  fuse: '/run/hfk/img',
  ro: '/run/hfk/ro',
  rw: '/run/hfk/rw',
  newroot: '/newroot',
  readerSpec: '/run/hfk/reader.json',
  readerLog: '/run/hfk/reader.log',
  manifest: '/run/hfk/manifest.hfkm',
  udhcpc: '/etc/udhcpc/default.script',
} as const;

/**
 * The edges the boot needs. The steps run on one of two: the machine's own
 * (src/init/system.ts: PID 1 boots with it) and a recording one
 * (src/init/dryrun.ts) that reads, ranks and fetches for real but only
 * records what would change the machine: `hfk-init --dry-run`.
 */
export interface System {
  /** Runs a command that changes the machine (mount, modprobe). */
  run: CommandRunner;
  /** Runs a command that only looks (findfs). */
  query: CommandRunner;
  log: Logger;
  /** `uname -r`. */
  kernelRelease(): string;
  /** The kernel command line. */
  cmdline(): string;
  /** A file the boot reads (its config, its key): its bytes and where they came from; undefined when absent. */
  readFile(file: string): { data: Buffer; from: string } | undefined;
  /** Whether a path exists (a device node, a folder). */
  exists(file: string): boolean;
  /** The kernel's module tree: /lib/modules/RELEASE. */
  modulesDir(): string;
  mkdir(dir: string): void;
  writeFile(file: string, data: string | Uint8Array): void;
  /** Loads the modules for every device (modalias coldplug), then hfk's own. */
  probe(options: Pick<ProbeOptions, 'db' | 'extra'>): Promise<ProbeReport>;
  /** Brings up the network as the settings say. */
  network(options: Omit<NetworkOptions, 'run' | 'root' | 'log'>): Promise<NetworkReport>;
  /** The folder the block cache may use (the boot's), or undefined when nothing may be written (a dry run). */
  cacheDir(dir: string): string | undefined;
  /** Starts the long-lived reader process, which waits for its spec (see src/reader/spec.ts). */
  launchReader(): LaunchedReader;
  /** Bytes of a file the boot made (the image the reader serves), for checks before mounting it. */
  readAt(file: string, offset: number, length: number): Promise<Buffer>;
  /** Whether `file` (a path in the new root) is an executable file, symlinks followed. */
  isExecutable(file: string): Promise<boolean>;
  /** Replaces this process (PID 1) with switch_root; never returns on success. */
  execSwitchRoot(newRoot: string, init: string, args: readonly string[]): never;
  /** Seconds since the kernel started. */
  uptime(): number;
}

/** What the steps learn, in order; the boot report is made from it. */
export interface BootState {
  /** The kernel's uptime when it ran /init, seconds (Node's start-up counts as the init's). */
  startedUptime: number;
  /** The reader process, started early so its start-up overlaps the other stages. */
  launched?: LaunchedReader;
  cmdline?: string;
  /** Where the config came from: a file, or '(defaults)'. */
  configFrom?: string;
  warnings: string[];
  settings?: BootSettings;
  key?: PublicKey;
  probe?: ProbeReport;
  network?: NetworkReport;
  mirrors?: string[];
  ranking?: Ranking;
  /** The image being opened: mirrors ranked in the mirrors stage, the manifest loaded in the manifest stage. */
  opener?: ImageOpener;
  cacheDir?: string;
  image?: LoadedImage;
  reader?: { pid: number; mountpoint: string };
  filesystem?: Filesystem;
  rootInit?: string;
}

export interface BootContext {
  sys: System;
  state: BootState;
}

async function must(sys: System, argv: string[], what: string, hint?: string): Promise<void> {
  const r = await sys.run(argv, { timeoutMs: 60_000 });
  if (r.code !== 0) throw new HfkError('E_COMMAND', `${what}: ${commandFailure(argv, r)}`, hint ? { hint } : {});
}

function isMountpoint(p: string): boolean {
  try {
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
    return mounts.split('\n').some((l) => l.split(' ')[4] === p);
  } catch {
    return false;
  }
}

export const earlyMounts: Step<BootContext, void> = step('early', 'mount /proc, /sys, /dev (devtmpfs), /run', async ({ sys }) => {
  const mounts: [string, string, string, string][] = [
    ['proc', 'proc', '/proc', 'nosuid,nodev,noexec'],
    ['sysfs', 'sysfs', '/sys', 'nosuid,nodev,noexec'],
    ['devtmpfs', 'devtmpfs', '/dev', 'mode=0755,nosuid'],
    ['tmpfs', 'tmpfs', '/run', 'mode=0755,nosuid,nodev'],
  ];
  for (const [type, src, dir, opts] of mounts) {
    sys.mkdir(dir);
    if (dir === '/proc' ? sys.exists('/proc/self') : isMountpoint(dir)) continue;
    await must(sys, ['mount', '-t', type, '-o', opts, src, dir], `cannot mount ${dir}`);
  }
  sys.mkdir('/dev/pts');
  if (!isMountpoint('/dev/pts')) await sys.run(['mount', '-t', 'devpts', '-o', 'gid=5,mode=620', 'devpts', '/dev/pts']);
  sys.mkdir(PATHS.run);
});

/** The public key a setting names: inline (base64 or a .pub line), or a file the System reads. */
function keyFrom(sys: System, value: string, what: string): PublicKey {
  const t = value.trim();
  if (/^[A-Za-z0-9+/]{43}=$/.test(t) || t.startsWith(`${PUBLIC_KEY_PREFIX} `)) return parsePublicKey(t, what);
  const file = sys.readFile(t);
  if (!file) throw new HfkError('E_KEY', `${what}: the key file ${t} does not exist`, { hint: 'give the key inline (hfk.key=BASE64 from PREFIX.pub) or pack the file into the initrd (hfk mkinitrd --key)' });
  return parsePublicKey(file.data.toString('utf8'), `public key file ${file.from}`);
}

export const readConfig: Step<BootContext, void> = step('config', 'read the kernel command line and /etc/hfk/hfk.yaml', async ({ sys, state }) => {
  const text = sys.cmdline();
  state.cmdline = text.trim();
  const parsed = parseCmdline(text);
  for (const w of parsed.warnings) {
    state.warnings.push(w);
    sys.log.warn(w);
  }
  const file = sys.readFile(PATHS.config);
  state.configFrom = file?.from ?? '(defaults)';
  const config = file ? parseConfig(file.data.toString('utf8'), file.from) : defaultConfig();
  const settings = resolveBootSettings(parsed, config, file?.from ?? PATHS.config);
  state.settings = settings;
  if (state.key) {
    // given from outside (hfk-init --dry-run --key)
  } else if (settings.key) state.key = keyFrom(sys, settings.key, settings.origin.key === 'cmdline' ? 'hfk.key' : `key in ${state.configFrom}`);
  else if (sys.exists(PATHS.key) || sys.readFile(PATHS.key)) state.key = keyFrom(sys, PATHS.key, PATHS.key);
  else {
    throw new HfkError('E_KEY', `no public key to verify the manifest with: neither hfk.key= nor ${PATHS.key}`, {
      hint: 'add hfk.key=BASE64 (from PREFIX.pub) to the kernel command line, or build the initrd with hfk mkinitrd --key PREFIX.pub',
    });
  }
  sys.log.info(`image ${settings.image.name}${settings.image.version ? `@${settings.image.version}` : ''}, key ${state.key.id}, ${settings.mirrors.length} mirrors${settings.mirrorlist ? ` + list ${redactUrl(settings.mirrorlist)}` : ''}${settings.proxy ? `, proxy ${redactUrl(settings.proxy)}` : ''}`);
});

export const probe: Step<BootContext, void> = step('probe', 'probe hardware: load modules for every device (modalias), then hfk\'s', async ({ sys, state }) => {
  const dir = sys.modulesDir();
  if (!sys.exists(path.join(dir, 'modules.dep'))) {
    throw new HfkError('E_MODULES', `${dir}/modules.dep is missing: this initrd was built for another kernel`, {
      hint: `rebuild it for this kernel: hfk mkinitrd --modules /lib/modules/${sys.kernelRelease()} …`,
    });
  }
  const db = ModuleDb.fromDir(dir);
  state.probe = await sys.probe({ db, extra: state.settings!.modules });
  for (const line of formatProbeReport(state.probe).split('\n')) sys.log.debug(line);
  sys.log.info(`${state.probe.devices.length} devices, ${state.probe.loaded.length} modules loaded: ${state.probe.loaded.map((l) => l.module).join(' ') || 'none'}`);
});

export const network: Step<BootContext, void> = step('network', 'bring up the network (DHCP or ip=)', async ({ sys, state }) => {
  const s = state.settings!;
  // HTTPS mirrors or a proxy need undici and the CA bundle: loaded while the network comes up, not in the ranking's time.
  const preload = preloadHttpClient(s.mirrors, s.proxy).catch(() => false);
  state.network = await sys.network({
    ip: s.ip,
    timeoutMs: s.timeout * 1000,
    udhcpcScript: PATHS.udhcpc,
    loadedModules: state.probe?.loaded.map((l) => l.module) ?? [],
  });
  sys.log.info(formatNetworkReport(state.network).split('\n')[0]!);
  await preload;
});

export const mirrors: Step<BootContext, void> = step('mirrors', 'measure the mirrors and pick the best', async ({ sys, state }) => {
  const s = state.settings!;
  const list = [...s.mirrors];
  if (s.mirrorlist) {
    try {
      list.push(...(await readMirrorList(s.mirrorlist, { proxy: s.proxy, timeoutMs: s.timeout * 1000 })));
    } catch (e) {
      if (list.length === 0) throw new HfkError('E_MIRRORLIST', (e as Error).message, { hint: 'check hfk.mirrorlist= and the network' });
      sys.log.warn(`${(e as Error).message}; using the ${list.length} mirrors given directly`);
    }
  }
  state.mirrors = [...new Set(list)];
  state.opener = new ImageOpener({
    mirrors: state.mirrors,
    proxy: s.proxy,
    name: s.image.name,
    version: s.image.version,
    key: state.key!,
    mirrorOptions: transferOptions(s.config.fetch),
    log: (l) => sys.log.warn(l),
  });
  // One mirror: nothing to choose between, only check that it answers.
  const single = state.mirrors.length === 1;
  state.ranking = await state.opener.rank({ rounds: single ? 1 : 2, blocks: !single });
  for (const line of formatRanking(state.ranking).trimEnd().split('\n')) sys.log.info(line);
  if (!state.ranking.mirrors.some((m) => m.ok > 0)) {
    if (state.ranking.mirrors.every((m) => m.errorCode === 'E_MISSING')) {
      throw new HfkError('E_MISSING', `no mirror has image '${s.image.name}': all ${state.mirrors.length} answered 404 for its pointer`, {
        hint: `check hfk.image= (the image name as published) and that these mirrors carry that store`,
      });
    }
    // Unreachable (not "no such image"): the manifest stage may still start
    // from a persistent block cache; it fails there, clearly, if it cannot.
    const why = state.ranking.mirrors.map((m) => `${m.url}: ${m.error}`).join('; ');
    state.warnings.push(`no mirror answered (${why})`);
    sys.log.warn(`none of the ${state.mirrors.length} mirrors answered; the block cache is the last resort (${why})`);
  }
});

/** The device a mount source names (a path, LABEL= or UUID=), checked to exist; undefined for tmpfs. */
async function findDevice(sys: System, src: MountSource, what: string): Promise<string | undefined> {
  if (src.kind === 'tmpfs') return undefined;
  if (src.kind === 'device') {
    if (!sys.exists(src.path)) throw new HfkError('E_DEVICE', `the ${what} device ${src.path} does not exist`, { hint: `check hfk.${what}= (ls -l /dev/disk/by-label), or use hfk.${what}=tmpfs` });
    return src.path;
  }
  const spec = src.kind === 'label' ? `LABEL=${src.label}` : `UUID=${src.uuid}`;
  const r = await sys.query(['findfs', spec]);
  if (r.code !== 0 || !r.stdout.trim()) {
    throw new HfkError('E_DEVICE', `no partition has ${spec} for the ${what}`, { hint: `check the label/UUID (blkid lists them), or use hfk.${what}=tmpfs` });
  }
  return r.stdout.trim();
}

async function mountSource(sys: System, src: MountSource, dir: string, what: string): Promise<void> {
  sys.mkdir(dir);
  const device = await findDevice(sys, src, what);
  if (device === undefined) {
    await must(sys, ['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', dir], `cannot mount a tmpfs for the ${what}`);
    return;
  }
  await must(sys, ['mount', device, dir], `cannot mount ${device} for the ${what}`, `check that ${device} holds a filesystem this kernel mounts (ext4), or use hfk.${what}=tmpfs`);
}

export const cache: Step<BootContext, void> = step('cache', 'set up the block cache', async ({ sys, state }) => {
  const src = state.settings!.cache;
  if (src.kind === 'tmpfs') {
    sys.mkdir(PATHS.cacheTmpfs);
    state.cacheDir = PATHS.cacheTmpfs; // on /run: it moves into the new root with it
  } else {
    await mountSource(sys, src, PATHS.cacheDev, 'cache');
    state.cacheDir = path.join(PATHS.cacheDev, 'hfk-cache');
    sys.mkdir(state.cacheDir);
  }
  sys.log.info(`block cache: ${formatMountSource(src)} (${state.cacheDir})`);
});

export const manifest: Step<BootContext, void> = step('manifest', 'fetch the manifest and verify its signature and version', async ({ sys, state }) => {
  const opener = state.opener!;
  const cacheDir = sys.cacheDir(state.cacheDir!);
  if (cacheDir) opener.useCache(cacheDir, state.settings!.config.cache.maxSize);
  try {
    state.image = await opener.load();
  } finally {
    await opener.close(); // the reader process fetches the blocks
  }
  const h = state.image.manifest.header;
  sys.writeFile(PATHS.manifest, state.image.raw);
  sys.log.info(`${h.name} v${h.version}: ${h.filesystem}, ${(h.imageSize / 1e6).toFixed(0)} MB in ${h.blockCount} blocks of ${h.blockSize / 1024} KiB, signed by ${h.keyId}, from ${state.image.from}`);
});

export const fuse: Step<BootContext, void> = step('fuse', 'start the block reader (FUSE) as its own long-lived process', async ({ sys, state }) => {
  const s = state.settings!;
  const h = state.image!.manifest.header;
  sys.mkdir(PATHS.fuse);
  const spec: ReaderSpec = {
    mountpoint: PATHS.fuse,
    name: h.name,
    version: h.version,
    mirrors: state.ranking!.mirrors.map((m) => m.url),
    ...(s.proxy ? { proxy: s.proxy } : {}),
    key: state.key!.raw.toString('base64'),
    manifestFile: PATHS.manifest,
    seeds: state.ranking!.mirrors.map((m) => ({ url: m.url, ttfbMs: m.ttfbMs, throughputMBps: m.throughputMBps })),
    cacheDir: state.cacheDir!,
    cacheBytes: blockCacheLimit(s.cache, s.config.cache.maxSize, fsBytes(state.cacheDir!), s.overlay),
    cacheHoldMs: blockCacheHoldMs(s.cache),
    memoryBytes: Math.min(s.config.cache.memory, 128 * 1024 * 1024),
    trustFile: path.join(state.cacheDir!, 'trust.json'),
    mode: s.config.fetch.soft ? 'soft' : 'hard',
    softTimeoutMs: s.config.fetch.softTimeout * 1000,
    transfer: transferOptions(s.config.fetch),
    mountCommand: ['mount'],
    umountCommand: ['umount'],
    // A boot reads many small files: modest readahead (see bootReadAheadKb).
    readAheadKb: bootReadAheadKb(s.config.init.reader),
    prefetchBytes: bootPrefetchBytes(s.cache, s.config.init.reader.prefetch),
    profileGapBytes: bootProfileGapBytes(s.cache),
    prefetchCached: BOOT_PREFETCH_CACHED,
    // On the reader's main thread by default: with object digests a worker thread costs more than it saves on small machines.
    verifyThreads: s.config.init.reader.verifyThreads,
    cpuProfile: s.config.init.reader.cpuProfile,
    ...(s.config.init.reader.metrics ? { metrics: s.config.init.reader.metrics } : {}),
    info: { bootRanking: state.ranking, manifestFrom: state.image!.from },
  };
  sys.writeFile(PATHS.readerSpec, JSON.stringify(spec));
  const r = await (state.launched ?? sys.launchReader()).handOver(spec);
  if (!r.message.ready) {
    const e = r.message.error;
    throw new HfkError(e.code, `the block reader could not start: ${e.message}`, e.hint ? { hint: e.hint } : { hint: `see ${PATHS.readerLog}` });
  }
  // The root filesystem depends on it: never let the OOM killer pick it.
  try {
    sys.writeFile(`/proc/${r.pid}/oom_score_adj`, '-1000\n');
  } catch (e) {
    sys.log.warn(`cannot protect the reader from the OOM killer: ${(e as Error).message}`);
  }
  state.reader = { pid: r.pid, mountpoint: PATHS.fuse };
  sys.log.info(`reader pid ${r.pid} serves ${path.join(PATHS.fuse, `${h.name}.img`)}`);
});

export const rootfs: Step<BootContext, void> = step('rootfs', 'loop-mount the root image read-only', async ({ sys, state }) => {
  const h = state.image!.manifest.header;
  const img = path.join(PATHS.fuse, `${h.name}.img`);
  // The superblock, read through the reader: the filesystem to mount as, and proof that the image reads.
  const type = detectFilesystem(await sys.readAt(img, 0, Math.min(FSTYPE_PROBE_BYTES, h.imageSize)));
  if (type === 'unknown') {
    throw new HfkError('E_FORMAT', `image ${h.name} v${h.version} holds no filesystem this init can mount (squashfs, ext4, iso9660, erofs)`, {
      hint: 'publish a filesystem image (mksquashfs, mkfs.ext4, an ISO), not a partitioned disk',
    });
  }
  sys.mkdir(PATHS.ro);
  await must(sys, ['mount', '-t', type, '-o', 'loop,ro', img, PATHS.ro], `cannot mount the ${type} image`, `the kernel needs the ${type} and loop modules (hfk.debug shows the probe)`);
  state.filesystem = type;
});

/** Where the root image's init may be, in the order tried. */
export const ROOT_INITS = ['/sbin/init', '/lib/systemd/systemd', '/usr/lib/systemd/systemd', '/bin/init'] as const;

export const overlay: Step<BootContext, void> = step('overlay', 'put a writable overlay on top', async ({ sys, state }) => {
  await mountSource(sys, state.settings!.overlay, PATHS.rw, 'overlay');
  const upper = path.join(PATHS.rw, 'upper');
  const work = path.join(PATHS.rw, 'work');
  sys.mkdir(upper);
  sys.mkdir(work);
  sys.mkdir(PATHS.newroot);
  await must(sys, ['mount', '-t', 'overlay', '-o', `lowerdir=${PATHS.ro},upperdir=${upper},workdir=${work}`, 'overlay', PATHS.newroot], 'cannot mount the overlay', 'the kernel needs the overlay module');
  for (const c of ROOT_INITS) {
    if (await sys.isExecutable(path.join(PATHS.newroot, c))) {
      state.rootInit = c;
      break;
    }
  }
  if (!state.rootInit) {
    throw new HfkError('E_NOINIT', `the root image has no init: none of ${ROOT_INITS.join(', ')} is executable in it`, {
      hint: 'the image must be a whole root filesystem (debootstrap with systemd-sysv, or busybox)',
    });
  }
});

/** The steps before switch_root, in order. */
export const BOOT_STEPS: Step<BootContext, void>[] = [readConfig, probe, network, mirrors, cache, manifest, fuse, rootfs, overlay];

/** Moves the API filesystems into the new root (switch_root itself moves only what it must). */
export async function moveMounts(sys: System): Promise<void> {
  for (const dir of ['/dev', '/proc', '/sys', '/run']) {
    const target = path.join(PATHS.newroot, dir);
    sys.mkdir(target);
    await must(sys, ['mount', '-o', 'move', dir, target], `cannot move ${dir} into the new root`);
  }
}
