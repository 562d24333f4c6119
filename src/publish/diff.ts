// hfk diff: what a client holding one version must fetch to get another.

import type { PublicKey } from '../format/keys.ts';
import { blockLength } from '../format/manifest.ts';
import { readManifest } from '../store/images.ts';
import type { StoreReader } from '../store/store.ts';

export interface DiffReport {
  name: string;
  from: number;
  to: number;
  blocks: {
    /** blocks of the new version */
    total: number;
    /** positions whose content differs between the two versions */
    changed: number;
    /** distinct objects the new version needs that the old one lacks */
    fetch: number;
  };
  bytes: {
    /** object bytes to download (compressed, as stored) */
    fetch: number;
    /** the same data uncompressed */
    fetchData: number;
    /** stored size of all of the new version's objects */
    full: number;
  };
  imageSize: { from: number; to: number };
}

export async function diffVersions(
  store: StoreReader,
  name: string,
  from: number | undefined,
  to: number | undefined,
  key: PublicKey | null,
): Promise<DiffReport> {
  const a = (await readManifest(store, name, from, key)).manifest;
  const b = (await readManifest(store, name, to, key)).manifest;
  const have = new Set(a.blocks.filter((h): h is string => h !== null));
  let changed = 0;
  for (let i = 0; i < b.blocks.length; i++) if (a.blocks[i] !== b.blocks[i]) changed++;
  const need = new Map<string, number>();
  b.blocks.forEach((h, i) => {
    if (h && !have.has(h) && !need.has(h)) need.set(h, blockLength(b.header, i));
  });
  let fetch = 0;
  let fetchData = 0;
  for (const [h, len] of need) {
    fetch += b.objectSizes.get(h)!;
    fetchData += len;
  }
  let full = 0;
  for (const s of b.objectSizes.values()) full += s;
  return {
    name,
    from: a.header.version,
    to: b.header.version,
    blocks: { total: b.header.blockCount, changed, fetch: need.size },
    bytes: { fetch, fetchData, full },
    imageSize: { from: a.header.imageSize, to: b.header.imageSize },
  };
}
