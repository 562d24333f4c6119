// The block source and fetcher for one image: read-through disk cache →
// retries (hard or soft) → mirror group, under a BlockFetcher. Loaded by
// ImageOpener only when a fetcher is made: PID 1 ranks mirrors and checks
// the manifest, and leaves the blocks to its reader process.

import { ReadThroughCache } from '../source/cache.ts';
import type { DiskCache } from '../source/diskcache.ts';
import { FailureLog } from '../source/failurelog.ts';
import { MirrorGroup, type GroupOptions } from '../source/group.ts';
import type { Mirror } from '../source/mirror.ts';
import { Retrying, type RetryOptions } from '../source/retry.ts';
import type { BlockSource } from '../source/source.ts';
import type { Verifier } from '../source/verifier.ts';
import { fromRuns, type Manifest } from '../format/manifest.ts';
import { BlockFetcher, type FetcherOptions } from './fetcher.ts';

export { openMemoryCache } from './memcache.ts';

/**
 * A warm disk cache holds most of what a boot reads (half of the boot
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

export interface SourceOptions extends Omit<GroupOptions, 'owns'>, Omit<RetryOptions, 'mode'> {
  mirrors: readonly Mirror[];
  /** A read-through disk cache in front of the mirrors. */
  disk?: DiskCache | undefined;
  mode?: 'hard' | 'soft';
  /** Closed with the source (the mirrors' verifier and origins). */
  owns?: { close(): Promise<void> }[];
}

/** The block source for one image: read-through disk cache → retries (hard or soft) → mirror group. */
export function blockSource(o: SourceOptions): BlockSource {
  const { mirrors, disk, mode, owns, hedge, minHedgeMs, explore, failures, observe, timeline, ...retry } = o;
  const group = new MirrorGroup(mirrors, {
    // Mirror failures go to the same log as the retries, once per mirror a minute.
    failures: failures ?? (retry.log ? new FailureLog(retry.log) : undefined),
    ...(observe ? { observe } : {}),
    ...(timeline ? { timeline } : {}),
    ...(hedge !== undefined ? { hedge } : {}),
    ...(minHedgeMs !== undefined ? { minHedgeMs } : {}),
    ...(explore !== undefined ? { explore } : {}),
    ...(owns ? { owns } : {}),
  });
  const source = new Retrying(group, { mode: mode ?? 'hard', ...retry });
  return disk ? new ReadThroughCache(disk, source) : source;
}

/** A fetcher over blockSource(o): what the image needs (manifest, memory cache, readahead) plus where blocks come from. */
export function makeFetcher(o: SourceOptions & Omit<FetcherOptions, 'source' | 'profileGapBudget' | 'sharedMemory'> & { verifier?: Verifier }): BlockFetcher {
  const { verifier, manifest, memory, readaheadBytes, readaheadNetwork, readaheadDisk, profileConcurrency, profileGapBytes, ...source } = o;
  return new BlockFetcher({
    source: blockSource({ ...source, owns: [...(source.owns ?? []), ...(verifier && !source.owns?.includes(verifier) ? [verifier] : [])] }),
    manifest,
    memory,
    ...(readaheadBytes !== undefined ? { readaheadBytes } : {}),
    ...(readaheadNetwork !== undefined ? { readaheadNetwork } : {}),
    ...(readaheadDisk !== undefined ? { readaheadDisk } : {}),
    ...(profileConcurrency !== undefined ? { profileConcurrency } : {}),
    ...(profileGapBytes !== undefined ? { profileGapBytes } : {}),
    sharedMemory: verifier?.threads ?? false,
    // Gap blocks only into a cache that outlives this reader, and at most half of it.
    profileGapBudget: o.disk ? o.disk.limit / 2 : undefined,
  });
}
