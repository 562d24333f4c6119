// Putting the fetcher together for one image: mirrors → ranking → trusted
// manifest → block fetcher with its caches. Used by `hfk mount`, `hfk get`,
// and hfk-init.

import type { LookupFunction } from 'node:net';
import type { PublicKey } from '../format/keys.ts';
import { decodeManifest, fromRuns, type Manifest } from '../format/manifest.ts';
import { DiskCache } from './diskcache.ts';
import { BlockFetcher, type FetcherOptions } from './fetcher.ts';
import { openMemoryCache } from './memcache.ts';
import { MirrorSet, type MirrorOptions } from './mirror.ts';
import { rankMirrors, type Ranking } from './rank.ts';
import { makeVerifier } from './verifier.ts';
import { type LoadedImage, loadImage, TrustState } from './trust.ts';

export interface OpenImageOptions {
  mirrors: readonly string[];
  proxy?: string | undefined;
  name: string;
  version?: number | undefined;
  key: PublicKey;
  /** Disk cache folder (persistent if on a local partition). */
  cacheDir?: string | undefined;
  cacheBytes?: number;
  /** Write-behind of the disk cache (DiskCacheOptions.holdMs); default 0: objects are written at once. */
  cacheHoldMs?: number;
  memoryBytes?: number;
  /** Where the newest seen versions are kept (rollback protection); default: the cache folder, else memory only. */
  trustFile?: string | undefined;
  mode?: 'hard' | 'soft';
  softTimeoutMs?: number;
  rankDeadlineMs?: number;
  mirrorOptions?: MirrorOptions;
  fetcher?: Partial<Pick<FetcherOptions, 'hedge' | 'readaheadBytes' | 'readaheadDisk' | 'profileGapBytes' | 'explore' | 'minHedgeMs'>>;
  /** Worker threads that decode and verify blocks (0: on the main thread). */
  verifyThreads?: number;
  lookup?: LookupFunction;
  log?: (line: string) => void;
}

export interface OpenedImage {
  set: MirrorSet;
  ranking: Ranking;
  image: LoadedImage;
  fetcher: BlockFetcher;
  cache: DiskCache | undefined;
  close(): Promise<void>;
}

type Common = Omit<OpenImageOptions, 'mirrors' | 'name' | 'version' | 'rankDeadlineMs' | 'key' | 'trustFile'>;

function mirrorSet(urls: readonly string[], o: Common): MirrorSet {
  return new MirrorSet(urls, { ...o.mirrorOptions, ...(o.proxy ? { proxy: o.proxy } : {}), ...(o.lookup ? { lookup: o.lookup } : {}) });
}

function openCache(o: Common): Promise<DiskCache | undefined> {
  return o.cacheDir ? DiskCache.open(o.cacheDir, o.cacheBytes ?? 4 * 1024 ** 3, { holdMs: o.cacheHoldMs ?? 0 }) : Promise.resolve(undefined);
}

/**
 * A warm disk cache: it holds most of what a boot reads (half of the boot
 * profile, or, without one, a good part of the image). Readahead then stays
 * off the network, so a warm boot fetches only what it really lacks.
 */
export function cacheIsWarm(cache: DiskCache | undefined, manifest: Manifest): boolean {
  if (!cache) return false;
  const profile = manifest.header.profile ? fromRuns(manifest.header.profile, manifest.blocks.length) : undefined;
  const sample = profile ?? manifest.blocks.map((_, i) => i);
  const wanted = sample.map((i) => manifest.blocks[i]).filter((h): h is string => h !== null);
  if (wanted.length === 0) return false;
  const have = wanted.filter((h) => cache.has(h)).length;
  return profile ? have * 2 >= wanted.length : have >= Math.min(wanted.length, 256);
}

function makeFetcher(set: MirrorSet, manifest: Manifest, cache: DiskCache | undefined, o: Common): BlockFetcher {
  return new BlockFetcher({
    readaheadNetwork: !cacheIsWarm(cache, manifest),
    mirrors: set,
    manifest,
    memory: openMemoryCache({ limitBytes: o.memoryBytes ?? 256 << 20, blockSize: manifest.header.blockSize }),
    disk: cache,
    mode: o.mode ?? 'hard',
    ...(o.softTimeoutMs ? { softTimeoutMs: o.softTimeoutMs } : {}),
    ...o.fetcher,
    verifier: makeVerifier(o.verifyThreads ?? 0),
    ...(o.log ? { log: o.log } : {}),
  });
}

function closer(fetcher: BlockFetcher, set: MirrorSet): () => Promise<void> {
  return async () => {
    await fetcher.close();
    await set.close();
  };
}

export async function openImage(o: OpenImageOptions): Promise<OpenedImage> {
  const set = mirrorSet(o.mirrors, o);
  try {
    const cache = await openCache(o);
    const trustFile = o.trustFile ?? (cache ? `${cache.dir}/trust.json` : undefined);
    const trust = trustFile ? await TrustState.open(trustFile) : TrustState.memory();
    const manifests = new Map<string, Buffer>();
    const ranking = await rankMirrors(set, {
      name: o.name,
      manifests,
      viaProxy: Boolean(o.proxy),
      // A warm cache means few blocks will come from mirrors: do not spend any on probing.
      blocks: !cache || cache.stats().objects === 0,
      ...(o.rankDeadlineMs ? { deadlineMs: o.rankDeadlineMs } : {}),
    });
    const ranked = ranking.mirrors.map((r) => set.mirrors.find((m) => m.url === r.url)!);
    const image = await loadImage({ name: o.name, version: o.version, key: o.key, mirrors: ranked, trust, cache, known: manifests, ...(o.log ? { log: o.log } : {}) });
    const fetcher = makeFetcher(set, image.manifest, cache, o);
    return { set, ranking, image, fetcher, cache, close: closer(fetcher, set) };
  } catch (e) {
    await set.close();
    throw e;
  }
}

export interface MirrorSeed {
  url: string;
  ttfbMs: number | null;
  throughputMBps: number | null;
}

export interface OpenFromManifestOptions extends Omit<OpenImageOptions, 'name' | 'version' | 'rankDeadlineMs'> {
  /** The manifest file as already fetched (it is verified again here). */
  manifestBytes: Buffer;
  /** What an earlier ranking measured, best first: the mirror order and health seeds. */
  seeds?: readonly MirrorSeed[];
}

/**
 * The fetcher for a manifest that was already chosen and checked (by the
 * init, before it handed the work to the long-lived reader process): no
 * second ranking, no second manifest download.
 */
export async function openFromManifest(o: OpenFromManifestOptions): Promise<Omit<OpenedImage, 'ranking' | 'image'> & { manifest: Manifest }> {
  const manifest = decodeManifest(o.manifestBytes, o.key, 'the manifest handed to the reader');
  const order = o.seeds?.length ? [...o.seeds.map((x) => x.url), ...o.mirrors.filter((u) => !o.seeds!.some((x) => x.url === u))] : o.mirrors;
  const set = mirrorSet(order, o);
  for (const seed of o.seeds ?? []) {
    const m = set.mirrors.find((x) => x.url === seed.url);
    if (m && seed.ttfbMs !== null) m.health.seed(seed.ttfbMs, seed.throughputMBps !== null ? seed.throughputMBps * 1000 : undefined);
  }
  try {
    const cache = await openCache(o);
    const fetcher = makeFetcher(set, manifest, cache, o);
    return { set, fetcher, cache, manifest, close: closer(fetcher, set) };
  } catch (e) {
    await set.close();
    throw e;
  }
}
