// The block reader: a fetcher shown through the block filesystem on a FUSE
// mount. `hfk mount` runs it (in the foreground, or as a background process),
// and hfk-init starts it as its own long-lived process that outlives the
// switch_root ('@' argv[0], out of the OOM killer's reach).
//
// Starting one as a process: launch.ts; what it is handed and what it
// reports back: spec.ts.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { BlockFs } from '../blockfs/blockfs.ts';
import type { BlockFetcher } from '../fetch/fetcher.ts';
import { openFromManifest, openImage } from '../fetch/open.ts';
import type { Ranking } from '../fetch/rank.ts';
import { publicKeyFromRaw } from '../format/keys.ts';
import { attach, type FuseMount, mount, unmountOnSignals } from '../fuse/mount.ts';
import type { RequestFeed } from '../fuse/session.ts';
import { ReaderSpec, type ReadyMessage } from './spec.ts';

export interface MountImageOptions {
  fetcher: BlockFetcher;
  mountpoint: string;
  readAheadKb?: number;
  mountCommand?: readonly string[];
  umountCommand?: readonly string[];
  /** Added to .hfk/stats.json (ranking, where the manifest came from, …). */
  info?: () => Record<string, unknown>;
  onError?: (e: unknown) => void;
  /** Serve a keeper's connection (see Supervised): mount with its fd, or take over when `takeOver`. */
  keeper?: { fd: number; feed: RequestFeed; takeOver: boolean; onMounted?: () => void };
}

/** Mounts NAME.img (and .hfk/stats.json) for a fetcher. */
export async function mountImage(o: MountImageOptions): Promise<FuseMount> {
  const started = new Date();
  const fs_ = new BlockFs({
    name: o.fetcher.manifest.header.name,
    device: o.fetcher,
    mtimeMs: Date.parse(o.fetcher.manifest.header.created),
    stats: () => ({ pid: process.pid, mountedAt: started.toISOString(), mountpoint: o.mountpoint, ...o.info?.(), ...o.fetcher.stats(), profile: o.fetcher.profile() }),
  });
  if (o.keeper?.takeOver) {
    return attach(fs_, { fd: o.keeper.fd, feed: o.keeper.feed, mountpoint: o.mountpoint, ...(o.umountCommand ? { umountCommand: o.umountCommand } : {}), ...(o.onError ? { onError: o.onError } : {}) });
  }
  return mount(fs_, {
    mountpoint: o.mountpoint,
    ...(o.keeper ? { fd: o.keeper.fd, feed: o.keeper.feed, ...(o.keeper.onMounted ? { onMounted: o.keeper.onMounted } : {}) } : {}),
    allowOther: true,
    ...(o.readAheadKb !== undefined ? { readAheadKb: o.readAheadKb } : {}),
    ...(o.mountCommand ? { mountCommand: o.mountCommand } : {}),
    ...(o.umountCommand ? { umountCommand: o.umountCommand } : {}),
    ...(o.onError ? { onError: o.onError } : {}),
  });
}

/** A reader serving a keeper's connection (keeper.ts, child.ts). */
export interface Supervised {
  /** The keeper's /dev/fuse, as this process's fd. */
  fd: number;
  feed: RequestFeed;
  /** Added to stats.json. */
  info: Record<string, unknown>;
  /** The first reader: called once mounted, with the signed manifest, for the readers after it. */
  onMounted(manifest: Buffer): void;
  /** A reader that takes over: the manifest of the image mounted (no ranking, no mount). */
  resumeManifest?: Buffer;
}

/**
 * Runs a reader to the end: opens the image, mounts it, reports `ready`,
 * and resolves when the mount goes away (unmount or signal).
 */
export async function runReader(
  specInput: ReaderSpec,
  ready: (m: ReadyMessage) => void,
  log: (line: string) => void,
  options: { unmountOnSignals?: boolean; supervised?: Supervised } = {},
): Promise<void> {
  const sup = options.supervised;
  const t0 = performance.now();
  const spec = ReaderSpec.parse(specInput);
  const key = publicKeyFromRaw(Buffer.from(spec.key, 'base64'));
  // Work inside the cache folder with relative paths: the init's reader keeps
  // running after switch_root has moved /run (and the cache mounted below it)
  // into the new root, where absolute paths would name the old, emptied root.
  // The working directory follows the folder wherever its mount goes.
  let cacheDir = spec.cacheDir;
  let trustFile = spec.trustFile;
  // '.': already there (a reader its keeper started to take over).
  if (cacheDir && cacheDir !== '.') {
    const abs = path.resolve(cacheDir);
    const trustAbs = trustFile ? path.resolve(trustFile) : undefined;
    fs.mkdirSync(abs, { recursive: true });
    process.chdir(abs);
    cacheDir = '.';
    if (trustAbs?.startsWith(`${abs}/`)) trustFile = path.relative(abs, trustAbs);
  }
  // Loaded only when asked for: the boot's reader starts faster without it.
  const metrics = spec.metrics ? (await import('./metrics.ts')).readerMetrics() : undefined;
  const common = {
    mirrors: spec.mirrors,
    proxy: spec.proxy,
    netrc: spec.netrc,
    key,
    cacheDir,
    ...(spec.cacheBytes ? { cacheBytes: spec.cacheBytes } : {}),
    ...(spec.cacheHoldMs ? { cacheHoldMs: spec.cacheHoldMs } : {}),
    ...(spec.memoryBytes ? { memoryBytes: spec.memoryBytes } : {}),
    trustFile,
    mode: spec.mode,
    fetcher: {
      ...(spec.prefetchBytes !== undefined ? { readaheadBytes: spec.prefetchBytes } : {}),
      ...(spec.prefetchCached !== undefined ? { readaheadDisk: spec.prefetchCached } : {}),
      ...(spec.profileGapBytes !== undefined ? { profileGapBytes: spec.profileGapBytes } : {}),
    },
    ...(spec.verifyThreads !== undefined ? { verifyThreads: spec.verifyThreads } : {}),
    mirrorOptions: { ...spec.transfer, ...(spec.connections !== undefined ? { connections: spec.connections } : {}) },
    ...(spec.softTimeoutMs ? { softTimeoutMs: spec.softTimeoutMs } : {}),
    ...(metrics ? { group: { observe: metrics.observe } } : {}),
    log,
  };
  let opened: { fetcher: BlockFetcher; close(): Promise<void> };
  let ranking: Ranking | undefined;
  let from: string | undefined;
  let manifestBytes: Buffer;
  if (sup?.resumeManifest || spec.manifestFile) {
    manifestBytes = sup?.resumeManifest ?? fs.readFileSync(spec.manifestFile!);
    opened = await openFromManifest({ ...common, manifestBytes, ...(spec.seeds ? { seeds: spec.seeds } : {}) });
  } else {
    const o = await openImage({ ...common, name: spec.name, version: spec.version });
    opened = o;
    ranking = o.ranking;
    from = o.image.from;
    manifestBytes = o.image.raw;
  }
  const tOpened = performance.now();
  let m: FuseMount;
  try {
    m = await mountImage({
      fetcher: opened.fetcher,
      mountpoint: spec.mountpoint,
      ...(spec.readAheadKb !== undefined ? { readAheadKb: spec.readAheadKb } : {}),
      ...(spec.mountCommand ? { mountCommand: spec.mountCommand } : {}),
      ...(spec.umountCommand ? { umountCommand: spec.umountCommand } : {}),
      info: () => ({ ...spec.info, ...sup?.info, ...(ranking ? { ranking } : {}), ...(from ? { manifestFrom: from } : {}) }),
      onError: (e) => log(`reader: ${e instanceof Error ? e.message : String(e)}`),
      ...(sup ? { keeper: { fd: sup.fd, feed: sup.feed, takeOver: sup.resumeManifest !== undefined, onMounted: () => sup.onMounted(manifestBytes) } } : {}),
    });
  } catch (e) {
    await opened.close();
    throw e;
  }
  const h = opened.fetcher.manifest.header;
  const tMounted = performance.now();
  log(`reader: ${h.name} v${h.version} ${sup?.resumeManifest ? 'taken over' : 'mounted'} on ${m.mountpoint} in ${Math.round(tMounted - t0)} ms (image opened in ${Math.round(tOpened - t0)} ms, FUSE mount ${Math.round(tMounted - tOpened)} ms; process up ${(process.uptime()).toFixed(1)} s)`);
  let served: { close(): Promise<void> } | undefined;
  if (metrics && spec.metrics) {
    metrics.stats = () => opened.fetcher.stats();
    served = (await import('./metrics.ts')).serveMetrics(metrics, spec.metrics, log);
  }
  // A boot profile in the manifest: fetch those blocks now, before they are asked for.
  if (!sup?.resumeManifest) void opened.fetcher.prefetchProfile();
  // hfk mount: SIGTERM/SIGINT unmount lazily and exit. The init's reader
  // ignores them: it must outlive the system it serves until the very end.
  if (options.unmountOnSignals) unmountOnSignals(m);
  ready({ ready: true, pid: process.pid, mountpoint: m.mountpoint, image: h.name, version: h.version, size: h.imageSize, ...(ranking ? { ranking } : {}) });
  const end = await m.done;
  await served?.close();
  await opened.close();
  if (end.reason === 'failed') log(`reader: session ended: ${end.error?.message ?? 'unknown error'}`);
}
