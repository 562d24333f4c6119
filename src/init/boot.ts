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
import { DiskCache } from '../fetch/diskcache.ts';
import { MirrorSet } from '../fetch/mirror.ts';
import { formatRanking, rankMirrors, type Ranking } from '../fetch/rank.ts';
import { type LoadedImage, loadImage, TrustState } from '../fetch/trust.ts';
import { detectFilesystem, FSTYPE_PROBE_BYTES, type Filesystem } from '../format/fstype.ts';
import { loadPublicKey, type PublicKey, resolvePublicKey } from '../format/keys.ts';
import type { LaunchedReader } from '../reader/launch.ts';
import type { ReaderSpec } from '../reader/reader.ts';
import { preloadHttpClient } from '../store/http.ts';
import { type BootSettings, parseCmdline, resolveBootSettings } from './cmdline.ts';
import { formatMountSource, loadConfig, type MountSource, parseMirrorList } from './config.ts';
import { ModuleDb } from './modalias.ts';
import { bringUpNetwork, formatNetworkReport, type NetworkReport } from './network.ts';
import { formatProbeReport, modprobeBatchLoader, modprobeLoader, probeHardware, type ProbeReport } from './probe.ts';
import { type CommandRunner, commandFailure, type Logger, step, type Step } from './steps.ts';

/** A non-negative integer from the environment (the kernel passes unknown `NAME=value` parameters to init there), else `fallback`. */
function envCount(name: string, fallback: number): number {
  const v = process.env[name];
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : fallback;
}

/**
 * Kernel readahead (KiB) of the root image during a boot; for experiments,
 * HFK_BOOT_READAHEAD_KB= on the kernel command line. A boot reads many small
 * files: modest readahead. Measured with the boot bench (QEMU TCG, 2 vCPUs,
 * loopback, no fetcher readahead, one run each): 128 / 512 / 1024 KiB gave
 * 43.1 / 38.7 / 40.5 s to login, 18.4 / 23.9 / 25.7 MB fetched.
 */
export const BOOT_READAHEAD_KB = envCount('HFK_BOOT_READAHEAD_KB', 512);

/**
 * The fetcher's own readahead (bytes) during a boot, by where the block cache
 * is (HFK_BOOT_PREFETCH_BYTES= overrides both). With a tmpfs cache, none: it
 * fetches blocks nobody asks for, and every block costs CPU on a small
 * machine (boot bench, same settings: 1 MiB gave 43.5 s and 34.1 MB, 417
 * blocks beyond the boot profile; none 38.7 s and 23.9 MB). With a persistent
 * cache partition, 1 MiB: what it fetches stays on the partition, and the
 * next boot, whose reads differ a little (the kernel's readahead windows, the
 * order services start in), finds those blocks there instead of fetching
 * them (without it, a warm boot fetched 25 blocks its fill boot had not).
 */
export function bootPrefetchBytes(cache: MountSource): number {
  return envCount('HFK_BOOT_PREFETCH_BYTES', cache.kind === 'tmpfs' ? 0 : 1 << 20);
}

/**
 * Gaps between the boot profile's blocks that the profile prefetch also
 * fetches, bytes (HFK_BOOT_PROFILE_GAP_BYTES= overrides). With a cache
 * partition, up to 1 MiB (the readahead above): the next boot then finds
 * there what it reads that this one did not. Boot bench, slow link, a
 * partition filled by one boot: the first warm boot fetched 2 blocks, both
 * in a 1 MiB gap between profile blocks (udev's hwdb.bin, read through page
 * faults whose readahead windows differ from boot to boot); filling such gaps
 * costs 184 blocks, 4.6 MB, once, and the warm boots of the next bench run
 * (six) fetched none. With the tmpfs cache, none: every boot would pay for
 * them.
 */
export function bootProfileGapBytes(cache: MountSource): number {
  return envCount('HFK_BOOT_PROFILE_GAP_BYTES', cache.kind === 'tmpfs' ? 0 : 1 << 20);
}

/**
 * Whether the fetcher's readahead also reads blocks the cache partition
 * already holds (HFK_BOOT_PREFETCH_CACHED=1 turns it on, for experiments).
 * Off: the readahead is there to fill the partition for the next boot, and
 * in a warm boot reading ahead from the partition only decodes and verifies
 * blocks early, many never used (470 in one warm boot of the boot bench,
 * whose reader handled 1258 blocks from the partition against the 911 a
 * cold boot fetches), and every block costs CPU on a small machine.
 */
export function bootPrefetchCached(): boolean {
  return envCount('HFK_BOOT_PREFETCH_CACHED', 0) > 0;
}

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
 * written once the boot has gone quiet, not while it waits: in a QEMU (TCG)
 * boot the cache's writes were the largest cost of the reader's main thread
 * (about 3 of its 18 s of CPU). A cache partition is written at once: the
 * next boot depends on it, and a machine may be switched off soon after
 * this one is up.
 */
export function blockCacheHoldMs(cache: MountSource): number {
  return cache.kind === 'tmpfs' ? envCount('HFK_BOOT_CACHE_HOLD_MS', 5000) : 0;
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

/** The edges the boot needs; the real ones are in main.ts. */
export interface System {
  run: CommandRunner;
  log: Logger;
  /** `uname -r`. */
  kernelRelease(): string;
  /** Starts the long-lived reader process, which waits for its spec (see reader.ts). */
  launchReader(): LaunchedReader;
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
  warnings: string[];
  settings?: BootSettings;
  key?: PublicKey;
  probe?: ProbeReport;
  network?: NetworkReport;
  mirrors?: string[];
  ranking?: Ranking;
  /** Manifests the ranking fetched (store path → bytes): the manifest stage does not fetch them again. */
  rankedManifests?: Map<string, Buffer>;
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
    fs.mkdirSync(dir, { recursive: true });
    if (dir === '/proc' ? fs.existsSync('/proc/self') : isMountpoint(dir)) continue;
    await must(sys, ['mount', '-t', type, '-o', opts, src, dir], `cannot mount ${dir}`);
  }
  fs.mkdirSync('/dev/pts', { recursive: true });
  if (!isMountpoint('/dev/pts')) await sys.run(['mount', '-t', 'devpts', '-o', 'gid=5,mode=620', 'devpts', '/dev/pts']);
  fs.mkdirSync(PATHS.run, { recursive: true });
});

export const readConfig: Step<BootContext, void> = step('config', 'read the kernel command line and /etc/hfk/hfk.yaml', async ({ sys, state }) => {
  const text = fs.readFileSync('/proc/cmdline', 'utf8');
  state.cmdline = text.trim();
  const parsed = parseCmdline(text);
  for (const w of parsed.warnings) {
    state.warnings.push(w);
    sys.log.warn(w);
  }
  const config = loadConfig(PATHS.config, { optional: true });
  const settings = resolveBootSettings(parsed, config, PATHS.config);
  state.settings = settings;
  if (settings.key) state.key = resolvePublicKey(settings.key, settings.origin.key === 'cmdline' ? 'hfk.key' : `key in ${PATHS.config}`);
  else if (fs.existsSync(PATHS.key)) state.key = loadPublicKey(PATHS.key);
  else {
    throw new HfkError('E_KEY', `no public key to verify the manifest with: neither hfk.key= nor ${PATHS.key}`, {
      hint: 'add hfk.key=BASE64 (from PREFIX.pub) to the kernel command line, or build the initrd with hfk mkinitrd --key PREFIX.pub',
    });
  }
  sys.log.info(`image ${settings.image.name}${settings.image.version ? `@${settings.image.version}` : ''}, key ${state.key.id}, ${settings.mirrors.length} mirrors${settings.mirrorlist ? ` + list ${settings.mirrorlist}` : ''}${settings.proxy ? `, proxy ${settings.proxy}` : ''}`);
});

export const probe: Step<BootContext, void> = step('probe', 'probe hardware: load modules for every device (modalias), then hfk\'s', async ({ sys, state }) => {
  const dir = `/lib/modules/${sys.kernelRelease()}`;
  if (!fs.existsSync(path.join(dir, 'modules.dep'))) {
    throw new HfkError('E_MODULES', `${dir}/modules.dep is missing: this initrd was built for another kernel`, {
      hint: `rebuild it for this kernel: hfk mkinitrd --modules /lib/modules/${sys.kernelRelease()} …`,
    });
  }
  const db = ModuleDb.fromDir(dir);
  state.probe = await probeHardware({
    root: '/',
    db,
    load: modprobeLoader(sys.run),
    loadBatch: modprobeBatchLoader(sys.run),
    extra: state.settings!.modules,
    log: sys.log,
  });
  for (const line of formatProbeReport(state.probe).split('\n')) sys.log.debug(line);
  sys.log.info(`${state.probe.devices.length} devices, ${state.probe.loaded.length} modules loaded: ${state.probe.loaded.map((l) => l.module).join(' ') || 'none'}`);
});

export const network: Step<BootContext, void> = step('network', 'bring up the network (DHCP or ip=)', async ({ sys, state }) => {
  const s = state.settings!;
  // HTTPS mirrors or a proxy need undici and the CA bundle: loaded while the network comes up, not in the ranking's time.
  const preload = preloadHttpClient(s.mirrors, s.proxy).catch(() => false);
  state.network = await bringUpNetwork({
    root: '/',
    ip: s.ip,
    run: sys.run,
    timeoutMs: s.timeout * 1000,
    udhcpcScript: PATHS.udhcpc,
    loadedModules: state.probe?.loaded.map((l) => l.module) ?? [],
    log: sys.log,
  });
  sys.log.info(formatNetworkReport(state.network).split('\n')[0]!);
  await preload;
});

export const mirrors: Step<BootContext, void> = step('mirrors', 'measure the mirrors and pick the best', async ({ sys, state }) => {
  const s = state.settings!;
  const list = [...s.mirrors];
  if (s.mirrorlist) {
    const { request } = await import('undici');
    try {
      const res = await request(s.mirrorlist, { headersTimeout: s.timeout * 1000, bodyTimeout: s.timeout * 1000 });
      if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}`);
      list.push(...parseMirrorList(await res.body.text(), s.mirrorlist));
    } catch (e) {
      if (list.length === 0) throw new HfkError('E_MIRRORLIST', `cannot fetch the mirror list ${s.mirrorlist}: ${(e as Error).message}`, { hint: 'check hfk.mirrorlist= and the network' });
      sys.log.warn(`cannot fetch the mirror list ${s.mirrorlist} (${(e as Error).message}); using the ${list.length} mirrors given directly`);
    }
  }
  state.mirrors = [...new Set(list)];
  const set = new MirrorSet(state.mirrors, s.proxy ? { proxy: s.proxy } : {});
  try {
    // One mirror: nothing to choose between, only check that it answers.
    const single = state.mirrors.length === 1;
    state.rankedManifests = new Map();
    state.ranking = await rankMirrors(set, { name: s.image.name, viaProxy: Boolean(s.proxy), rounds: single ? 1 : 2, blocks: !single, manifests: state.rankedManifests });
  } finally {
    await set.close();
  }
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

async function mountSource(sys: System, src: MountSource, dir: string, what: string): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  if (src.kind === 'tmpfs') {
    await must(sys, ['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', dir], `cannot mount a tmpfs for the ${what}`);
    return;
  }
  let device: string;
  if (src.kind === 'device') device = src.path;
  else {
    const spec = src.kind === 'label' ? `LABEL=${src.label}` : `UUID=${src.uuid}`;
    const r = await sys.run(['findfs', spec]);
    if (r.code !== 0 || !r.stdout.trim()) {
      throw new HfkError('E_DEVICE', `no partition has ${spec} for the ${what}`, { hint: `check the label/UUID (blkid lists them), or use hfk.${what}=tmpfs` });
    }
    device = r.stdout.trim();
  }
  await must(sys, ['mount', device, dir], `cannot mount ${device} for the ${what}`, `check that ${device} holds a filesystem this kernel mounts (ext4), or use hfk.${what}=tmpfs`);
}

export const cache: Step<BootContext, void> = step('cache', 'set up the block cache', async ({ sys, state }) => {
  const src = state.settings!.cache;
  if (src.kind === 'tmpfs') {
    fs.mkdirSync(PATHS.cacheTmpfs, { recursive: true });
    state.cacheDir = PATHS.cacheTmpfs; // on /run: it moves into the new root with it
  } else {
    await mountSource(sys, src, PATHS.cacheDev, 'cache');
    state.cacheDir = path.join(PATHS.cacheDev, 'hfk-cache');
    fs.mkdirSync(state.cacheDir, { recursive: true });
  }
  sys.log.info(`block cache: ${formatMountSource(src)} (${state.cacheDir})`);
});

export const manifest: Step<BootContext, void> = step('manifest', 'fetch the manifest and verify its signature and version', async ({ sys, state }) => {
  const s = state.settings!;
  const set = new MirrorSet(state.ranking!.mirrors.map((m) => m.url), s.proxy ? { proxy: s.proxy } : {});
  try {
    const disk = await DiskCache.open(state.cacheDir!, s.config.cache.maxSize);
    const trust = await TrustState.open(path.join(state.cacheDir!, 'trust.json'));
    state.image = await loadImage({
      name: s.image.name,
      version: s.image.version,
      key: state.key!,
      mirrors: set.mirrors,
      trust,
      cache: disk,
      log: (l) => sys.log.warn(l),
      ...(state.rankedManifests ? { known: state.rankedManifests } : {}),
    });
    await disk.flush();
  } finally {
    await set.close();
  }
  const h = state.image.manifest.header;
  fs.writeFileSync(PATHS.manifest, state.image.raw);
  sys.log.info(`${h.name} v${h.version}: ${h.filesystem}, ${(h.imageSize / 1e6).toFixed(0)} MB in ${h.blockCount} blocks of ${h.blockSize / 1024} KiB, signed by ${h.keyId}, from ${state.image.from}`);
});

export const fuse: Step<BootContext, void> = step('fuse', 'start the block reader (FUSE) as its own long-lived process', async ({ sys, state }) => {
  const s = state.settings!;
  const h = state.image!.manifest.header;
  fs.mkdirSync(PATHS.fuse, { recursive: true });
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
    mountCommand: ['mount'],
    umountCommand: ['umount'],
    // A boot reads many small files: modest readahead (see BOOT_READAHEAD_KB).
    readAheadKb: BOOT_READAHEAD_KB,
    prefetchBytes: bootPrefetchBytes(s.cache),
    profileGapBytes: bootProfileGapBytes(s.cache),
    prefetchCached: bootPrefetchCached(),
    // Verification on the reader's main thread (HFK_BOOT_VERIFY_THREADS= for experiments): with object
    // digests a worker thread costs more than it saves on two emulated CPUs (boot bench settings, three
    // boots each: 21.8–23.1 s to login without, 22.1–23.9 s with one thread).
    verifyThreads: envCount('HFK_BOOT_VERIFY_THREADS', 0),
    info: { bootRanking: state.ranking, manifestFrom: state.image!.from },
  };
  fs.writeFileSync(PATHS.readerSpec, JSON.stringify(spec));
  const r = await (state.launched ?? sys.launchReader()).handOver(spec);
  if (!r.message.ready) {
    const e = r.message.error;
    throw new HfkError(e.code, `the block reader could not start: ${e.message}`, e.hint ? { hint: e.hint } : { hint: `see ${PATHS.readerLog}` });
  }
  // The root filesystem depends on it: never let the OOM killer pick it.
  try {
    fs.writeFileSync(`/proc/${r.pid}/oom_score_adj`, '-1000\n');
  } catch (e) {
    sys.log.warn(`cannot protect the reader from the OOM killer: ${(e as Error).message}`);
  }
  state.reader = { pid: r.pid, mountpoint: PATHS.fuse };
  sys.log.info(`reader pid ${r.pid} serves ${path.join(PATHS.fuse, `${h.name}.img`)}`);
});

export const rootfs: Step<BootContext, void> = step('rootfs', 'loop-mount the root image read-only', async ({ sys, state }) => {
  const h = state.image!.manifest.header;
  const img = path.join(PATHS.fuse, `${h.name}.img`);
  let type = h.filesystem;
  if (type === 'unknown') {
    // Recorded as unknown by the publisher: look at the superblock ourselves.
    const fd = fs.openSync(img, 'r');
    try {
      const head = Buffer.alloc(Math.min(FSTYPE_PROBE_BYTES, h.imageSize));
      fs.readSync(fd, head, 0, head.length, 0);
      type = detectFilesystem(head);
    } finally {
      fs.closeSync(fd);
    }
  }
  if (type === 'unknown') {
    throw new HfkError('E_FORMAT', `image ${h.name} v${h.version} holds no filesystem this init can mount (squashfs, ext4, iso9660, erofs)`, {
      hint: 'publish a filesystem image (mksquashfs, mkfs.ext4, an ISO), not a partitioned disk',
    });
  }
  const kernelType = type === 'iso9660' ? 'iso9660' : type;
  fs.mkdirSync(PATHS.ro, { recursive: true });
  await must(sys, ['mount', '-t', kernelType, '-o', 'loop,ro', img, PATHS.ro], `cannot mount the ${type} image`, `the kernel needs the ${type} and loop modules (hfk.debug shows the probe)`);
  state.filesystem = type;
});

export const overlay: Step<BootContext, void> = step('overlay', 'put a writable overlay on top', async ({ sys, state }) => {
  await mountSource(sys, state.settings!.overlay, PATHS.rw, 'overlay');
  const upper = path.join(PATHS.rw, 'upper');
  const work = path.join(PATHS.rw, 'work');
  fs.mkdirSync(upper, { recursive: true });
  fs.mkdirSync(work, { recursive: true });
  fs.mkdirSync(PATHS.newroot, { recursive: true });
  await must(sys, ['mount', '-t', 'overlay', '-o', `lowerdir=${PATHS.ro},upperdir=${upper},workdir=${work}`, 'overlay', PATHS.newroot], 'cannot mount the overlay', 'the kernel needs the overlay module');
  const candidates = ['/sbin/init', '/lib/systemd/systemd', '/usr/lib/systemd/systemd', '/bin/init'];
  state.rootInit = candidates.find((c) => {
    try {
      fs.accessSync(path.join(PATHS.newroot, c), fs.constants.X_OK);
      return true;
    } catch {
      // a dangling symlink (usrmerge) is checked by the kernel later; try the next
      return false;
    }
  });
  if (!state.rootInit) {
    throw new HfkError('E_NOINIT', `the root image has no init: none of ${candidates.join(', ')} is executable in it`, {
      hint: 'the image must be a whole root filesystem (debootstrap with systemd-sysv, or busybox)',
    });
  }
});

export interface StageTime {
  stage: string;
  description: string;
  ms: number;
  ok: boolean;
}

/** The steps before switch_root, in order. */
export const BOOT_STEPS: Step<BootContext, void>[] = [readConfig, probe, network, mirrors, cache, manifest, fuse, rootfs, overlay];

/** Moves the API filesystems into the new root (switch_root itself moves only what it must). */
export async function moveMounts(sys: System): Promise<void> {
  for (const dir of ['/dev', '/proc', '/sys', '/run']) {
    const target = path.join(PATHS.newroot, dir);
    fs.mkdirSync(target, { recursive: true });
    await must(sys, ['mount', '-o', 'move', dir, target], `cannot move ${dir} into the new root`);
  }
}
