// Opening one image, in one place for every caller (hfk mount, hfk get,
// the init's stages, its dry run, the reader process):
//
//   origins (one client per URL) → mirrors → ranking → trusted manifest
//     → block source: ReadThroughCache → Retrying → MirrorGroup
//     → BlockFetcher
//
// ImageOpener does it step by step (the init runs the steps as separate
// stages, and its reader process starts from a manifest already checked);
// openImage() runs them all.

import type { LookupFunction } from 'node:net';
import { BrokenError } from '../errors.ts';
import type { PublicKey } from '../format/keys.ts';
import { decodeManifest, type Manifest } from '../format/manifest.ts';
import { DiskCache } from '../source/diskcache.ts';
import type { GroupOptions } from '../source/group.ts';
import { Mirror } from '../source/mirror.ts';
import { normalizeLocation, Origins } from '../source/origin.ts';
import { splitCredentials } from '../store/auth.ts';
import type { NetrcEntry } from '../store/netrc.ts';
import { anyProxy, type ProxySetting } from '../store/proxy.ts';
import type { HealthOptions } from '../source/score.ts';
import { makeVerifier, type Verifier } from '../source/verifier.ts';
import type { BlockFetcher, FetcherOptions } from './fetcher.ts';
import { rankMirrors, type RankOptions, type Ranking } from './rank.ts';
import { type LoadedImage, loadImage, TrustState } from './trust.ts';

export interface MirrorOptions {
  /** Keep-alive connections per mirror (default 4). */
  connections?: number;
  /** Requests pipelined on each connection (default 8). */
  pipelining?: number;
  /** Longest wait for an answer's head; bytes do not extend it. */
  headersTimeoutMs?: number;
  bodyTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** After graceMs, a body slower than this (bytes a second) counts as a timeout. */
  minBytesPerSec?: number;
  graceMs?: number;
  health?: Partial<HealthOptions>;
}

export interface OpenImageOptions {
  /** Mirror base URLs (or store folders), in the order to try before any ranking. */
  mirrors: readonly string[];
  proxy?: ProxySetting | undefined;
  /** netrc logins for mirrors given without credentials. */
  netrc?: readonly NetrcEntry[] | undefined;
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
  /** Soft mode: how long a block read may take, and also opening the image (ranking, pointer, manifest); default 30 s. */
  softTimeoutMs?: number;
  rank?: Omit<RankOptions, 'name' | 'manifests' | 'key' | 'signal'>;
  mirrorOptions?: MirrorOptions;
  group?: Omit<GroupOptions, 'owns'>;
  fetcher?: Partial<Pick<FetcherOptions, 'readaheadBytes' | 'readaheadDisk' | 'profileGapBytes'>>;
  /** Worker threads that decode and verify blocks (0: on the main thread). */
  verifyThreads?: number;
  lookup?: LookupFunction;
  log?: (line: string) => void;
}

/** What an earlier ranking measured, best first: the mirror order and health seeds. */
export interface MirrorSeed {
  url: string;
  ttfbMs: number | null;
  throughputMBps: number | null;
}

/** Mirrors for these URLs (or folders), each with its client from one Origins; close() releases them all. */
export function openMirrors(
  urls: readonly string[],
  o: { proxy?: ProxySetting | undefined; netrc?: readonly NetrcEntry[] | undefined; lookup?: LookupFunction | undefined; mirrorOptions?: MirrorOptions | undefined; verifier?: Verifier } = {},
): { mirrors: Mirror[]; origins: Origins; close(): Promise<void> } {
  const m = o.mirrorOptions ?? {};
  const origins = new Origins({
    proxy: o.proxy,
    netrc: o.netrc,
    lookup: o.lookup,
    ...(m.connections ? { connections: m.connections } : {}),
    ...(m.pipelining ? { pipelining: m.pipelining } : {}),
    ...(m.connectTimeoutMs ? { connectTimeoutMs: m.connectTimeoutMs } : {}),
    ...(m.headersTimeoutMs ? { headersTimeoutMs: m.headersTimeoutMs } : {}),
    ...(m.bodyTimeoutMs ? { bodyTimeoutMs: m.bodyTimeoutMs } : {}),
    ...(m.minBytesPerSec ? { minBytesPerSec: m.minBytesPerSec } : {}),
    ...(m.graceMs ? { graceMs: m.graceMs } : {}),
  });
  const capacity = (m.connections ?? 4) * (m.pipelining ?? 8);
  // A mirror is named by its URL without credentials (Origins sends them): logs and reports never show them.
  const unique = new Map<string, string>();
  for (const u of urls.map((x) => normalizeLocation(x))) {
    const name = splitCredentials(u).url;
    if (!unique.has(name)) unique.set(name, u);
  }
  const mirrors = [...unique].map(
    ([name, u]) => new Mirror(name, origins.open(u), { capacity, ...(o.verifier ? { verifier: o.verifier } : {}), ...(m.health ? { health: m.health } : {}) }),
  );
  return { mirrors, origins, close: () => origins.close() };
}

export class ImageOpener {
  readonly origins: Origins;
  /** Best first once ranked. */
  mirrors: Mirror[];
  ranking: Ranking | undefined;
  image: LoadedImage | undefined;
  cache: DiskCache | undefined;
  private o: OpenImageOptions;
  private readonly verifier: Verifier;
  private readonly manifests = new Map<string, Buffer>();
  private handedOver = false;

  constructor(o: OpenImageOptions) {
    this.o = o;
    this.verifier = makeVerifier(o.verifyThreads ?? 0);
    const opened = openMirrors(o.mirrors, { proxy: o.proxy, netrc: o.netrc, lookup: o.lookup, mirrorOptions: o.mirrorOptions, verifier: this.verifier });
    this.origins = opened.origins;
    this.mirrors = opened.mirrors;
  }

  /** Puts the mirrors in an order measured before (the init's ranking), seeding their health. */
  seed(seeds: readonly MirrorSeed[]): void {
    const rank = (u: string) => {
      const i = seeds.findIndex((s) => s.url === u);
      return i < 0 ? seeds.length : i;
    };
    this.mirrors.sort((a, b) => rank(a.url) - rank(b.url));
    for (const s of seeds) {
      const m = this.mirrors.find((x) => x.url === s.url);
      if (m && s.ttfbMs !== null) m.health.seed(s.ttfbMs, s.throughputMBps !== null ? s.throughputMBps * 1000 : undefined);
    }
  }

  /**
   * In soft mode, a signal that fires when opening the image has taken the
   * soft deadline, its reason the error to report; the caller clears it.
   * Undefined in hard mode (the root waits for the network).
   */
  softDeadline(): { signal: AbortSignal; clear(): void } | undefined {
    if (this.o.mode !== 'soft') return undefined;
    const ms = this.o.softTimeoutMs ?? 30_000;
    const ac = new AbortController();
    const timer = setTimeout(() => {
      ac.abort(
        new BrokenError('(all mirrors)', `opening ${this.o.name} took longer than the soft deadline of ${ms / 1000} s`, {
          hint: 'a mirror stalls or the network is slow: try other mirrors, or give more time (--soft-timeout)',
        }),
      );
    }, ms);
    return { signal: ac.signal, clear: () => clearTimeout(timer) };
  }

  /** Measures the mirrors (netselect) and orders them best first; `signal` ends the probing early. */
  async rank(options: Omit<RankOptions, 'name' | 'manifests' | 'key'> = {}): Promise<Ranking> {
    const own = options.signal ? undefined : this.softDeadline();
    try {
      this.ranking = await rankMirrors(this.mirrors, {
        name: this.o.name,
        key: this.o.key,
        manifests: this.manifests,
        viaProxy: anyProxy(this.o.proxy),
        ...this.o.rank,
        ...options,
        ...(own ? { signal: own.signal } : {}),
      });
    } finally {
      own?.clear();
    }
    const order = new Map(this.ranking.mirrors.map((r, i) => [r.url, i]));
    this.mirrors.sort((a, b) => order.get(a.url)! - order.get(b.url)!);
    for (const r of this.ranking.mirrors) {
      if (r.refused) this.o.log?.(`mirror ${r.url} is not trusted for ${this.o.name} (ranked after those serving a verified version): ${r.refused}`);
    }
    return this.ranking;
  }

  /** Sets the disk cache folder once it is known (the init mounts it after ranking). */
  useCache(dir: string, maxBytes?: number): void {
    if (this.cache) throw new Error('ImageOpener.useCache: the cache is open already');
    this.o = { ...this.o, cacheDir: dir, ...(maxBytes !== undefined ? { cacheBytes: maxBytes } : {}) };
  }

  async openCache(): Promise<DiskCache | undefined> {
    if (!this.cache && this.o.cacheDir) this.cache = await DiskCache.open(this.o.cacheDir, this.o.cacheBytes ?? 4 * 1024 ** 3, { holdMs: this.o.cacheHoldMs ?? 0 });
    return this.cache;
  }

  /**
   * The manifest to use: signed by the key, not older than seen (see
   * trust.ts), from the best mirror that has it. In soft mode it ends within
   * the soft deadline (or `signal`'s).
   */
  async load(signal?: AbortSignal): Promise<LoadedImage> {
    const cache = await this.openCache();
    const trustFile = this.o.trustFile ?? (cache ? `${cache.dir}/trust.json` : undefined);
    const trust = trustFile ? await TrustState.open(trustFile) : TrustState.memory();
    const own = signal ? undefined : this.softDeadline();
    const s = signal ?? own?.signal;
    try {
      this.image = await loadImage({
        name: this.o.name,
        version: this.o.version,
        key: this.o.key,
        mirrors: this.mirrors,
        trust,
        cache,
        known: this.manifests,
        ...(s ? { signal: s } : {}),
        ...(this.o.log ? { log: this.o.log } : {}),
      });
    } finally {
      own?.clear();
    }
    return this.image;
  }

  /**
   * The block fetcher for `manifest` (default: the one loaded). It takes
   * over the mirrors, origins and cache: closing it closes them.
   */
  async fetcher(manifest: Manifest | undefined = this.image?.manifest): Promise<BlockFetcher> {
    if (!manifest) throw new Error('ImageOpener.fetcher: no manifest loaded');
    const cache = await this.openCache();
    this.handedOver = true;
    const { cacheIsWarm, makeFetcher, openMemoryCache } = await import('./compose.ts');
    return makeFetcher({
      mirrors: this.mirrors,
      disk: cache,
      owns: [this.verifier, this.origins],
      verifier: this.verifier,
      mode: this.o.mode ?? 'hard',
      ...(this.o.softTimeoutMs ? { softTimeoutMs: this.o.softTimeoutMs } : {}),
      ...this.o.group,
      manifest,
      memory: openMemoryCache({ limitBytes: this.o.memoryBytes ?? 256 << 20, blockSize: manifest.header.blockSize }),
      readaheadNetwork: !cacheIsWarm(cache, manifest),
      ...this.o.fetcher,
      ...(this.o.log ? { log: this.o.log } : {}),
    });
  }

  /** Closes what no fetcher took over. Idempotent. */
  async close(): Promise<void> {
    if (this.handedOver) return;
    this.handedOver = true;
    await Promise.all([...this.mirrors.map((m) => m.close()), this.origins.close(), this.verifier.close()]);
    await this.cache?.flush();
  }
}

export interface OpenedImage {
  mirrors: readonly Mirror[];
  ranking: Ranking;
  image: LoadedImage;
  fetcher: BlockFetcher;
  cache: DiskCache | undefined;
  close(): Promise<void>;
}

/** Ranks the mirrors, loads the trusted manifest and makes the fetcher. */
export async function openImage(o: OpenImageOptions): Promise<OpenedImage> {
  const opener = new ImageOpener(o);
  // Soft mode: one deadline over ranking, pointer and manifest together.
  const deadline = opener.softDeadline();
  try {
    const cache = await opener.openCache();
    // A warm cache means few blocks will come from mirrors: do not spend any on probing.
    const ranking = await opener.rank({ blocks: !cache || cache.stats().objects === 0, ...(deadline ? { signal: deadline.signal } : {}) });
    const image = await opener.load(deadline?.signal);
    const fetcher = await opener.fetcher();
    return { mirrors: opener.mirrors, ranking, image, fetcher, cache, close: () => fetcher.close() };
  } catch (e) {
    await opener.close();
    throw e;
  } finally {
    deadline?.clear();
  }
}

/**
 * The fetcher for a manifest that was already chosen and checked (by the
 * init, before it handed the work to the long-lived reader process): no
 * second ranking, no second manifest download.
 */
export async function openFromManifest(o: Omit<OpenImageOptions, 'name' | 'version'> & { manifestBytes: Buffer; seeds?: readonly MirrorSeed[] | undefined }): Promise<{ fetcher: BlockFetcher; manifest: Manifest; close(): Promise<void> }> {
  const manifest = decodeManifest(o.manifestBytes, o.key, 'the manifest handed to the reader');
  const opener = new ImageOpener({ ...o, name: manifest.header.name, version: manifest.header.version });
  try {
    if (o.seeds?.length) opener.seed(o.seeds);
    const fetcher = await opener.fetcher(manifest);
    return { fetcher, manifest, close: () => fetcher.close() };
  } catch (e) {
    await opener.close();
    throw e;
  }
}
