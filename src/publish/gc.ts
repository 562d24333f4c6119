// hfk gc: removes what no kept manifest references. It holds the store lock
// (no publish runs meanwhile) and decides only from manifests it could read:
// if any manifest is unreadable, nothing is deleted.

import { FormatError } from '../errors.ts';
import { blockPath, manifestPath } from '../format/layout.ts';
import { decodeManifest } from '../format/manifest.ts';
import { readPointer } from '../store/images.ts';
import type { StoreWriter } from '../store/store.ts';
import { MissingError } from '../errors.ts';

export interface GcOptions {
  /** Versions to keep per image, newest first (default: all). */
  keep?: number;
  dryRun?: boolean;
}

export interface GcReport {
  store: string;
  dryRun: boolean;
  manifestsRemoved: string[];
  manifestsKept: string[];
  blocksRemoved: number;
  bytesRemoved: number;
  blocksKept: number;
  temporariesRemoved: number;
}

export async function gcStore(store: StoreWriter, o: GcOptions = {}): Promise<GcReport> {
  const unlock = await store.lock('gc');
  try {
    const keepRels: string[] = [];
    const dropRels: string[] = [];
    for (const name of await store.listImages()) {
      const versions = await store.listVersions(name);
      let latest: number | undefined;
      try {
        latest = (await readPointer(store, name)).version;
      } catch (e) {
        if (!(e instanceof MissingError)) throw e;
      }
      const newestFirst = [...versions].reverse();
      const kept = new Set(o.keep === undefined ? newestFirst : newestFirst.slice(0, o.keep));
      if (latest !== undefined && versions.includes(latest)) kept.add(latest); // never orphan the pointer
      for (const v of versions) (kept.has(v) ? keepRels : dropRels).push(manifestPath(name, v));
    }
    const referenced = new Set<string>();
    for (const rel of keepRels) {
      const bytes = await store.read(rel);
      let m;
      try {
        m = decodeManifest(bytes, null, rel);
      } catch (e) {
        throw new FormatError(`gc stopped before deleting anything: ${(e as Error).message}`, {
          hint: 'repair or remove that manifest (hfk verify shows what is wrong), then run gc again',
        });
      }
      for (const h of m.objectSizes.keys()) referenced.add(h);
    }
    const { hashes, temporaries } = await store.listBlockFiles();
    let bytesRemoved = 0;
    let blocksRemoved = 0;
    if (!o.dryRun) {
      // Manifests first: a kept manifest never points at a removed block.
      for (const rel of dropRels) await store.remove(rel);
    }
    for (const h of hashes) {
      if (referenced.has(h)) continue;
      bytesRemoved += (await store.size(blockPath(h))) ?? 0;
      blocksRemoved++;
      if (!o.dryRun) await store.remove(blockPath(h));
    }
    if (!o.dryRun) for (const t of temporaries) await store.remove(t);
    return {
      store: store.location,
      dryRun: Boolean(o.dryRun),
      manifestsRemoved: dropRels,
      manifestsKept: keepRels,
      blocksRemoved,
      bytesRemoved,
      blocksKept: hashes.length - blocksRemoved,
      temporariesRemoved: temporaries.length,
    };
  } finally {
    await unlock();
  }
}
