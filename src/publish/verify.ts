// hfk verify: every manifest's signature, every block present and
// hash-correct, for a local store or any mirror URL.

import { HfkError, MissingError, UsageError } from '../errors.ts';
import type { PublicKey } from '../format/keys.ts';
import { blockLength, type Manifest } from '../format/manifest.ts';
import { readBlock, readManifest, readPointer } from '../store/images.ts';
import { LocalStore } from '../store/local.ts';
import type { StoreReader } from '../store/store.ts';

export type ProblemKind = 'pointer' | 'manifest' | 'signature' | 'missing-block' | 'corrupt-block' | 'unreadable-block';

export interface Problem {
  kind: ProblemKind;
  image?: string;
  version?: number;
  block?: string;
  message: string;
}

export interface VerifyReport {
  store: string;
  ok: boolean;
  images: { name: string; latest: number | null; versions: number[] }[];
  blocksChecked: number;
  bytesChecked: number;
  problems: Problem[];
}

export interface VerifyOptions {
  name?: string;
  key: PublicKey;
  parallel?: number;
  onProgress?: (done: number, total: number) => void;
}

function problemOf(e: unknown): { kind: ProblemKind; message: string } {
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof HfkError) {
    if (e.code === 'E_SIGNATURE') return { kind: 'signature', message };
    if (e.code === 'E_MISSING') return { kind: 'missing-block', message };
    if (e.code === 'E_INVALID') return { kind: 'corrupt-block', message };
  }
  return { kind: 'unreadable-block', message };
}

/** Versions of an image: listed for a local store, followed back from the pointer over HTTP. */
async function manifestsOf(store: StoreReader, name: string, key: PublicKey, problems: Problem[]): Promise<{ latest: number | null; manifests: Manifest[] }> {
  const manifests: Manifest[] = [];
  let latest: number | null = null;
  try {
    latest = (await readPointer(store, name)).version;
  } catch (e) {
    problems.push({ kind: 'pointer', image: name, message: e instanceof Error ? e.message : String(e) });
  }
  const check = async (version: number | undefined): Promise<Manifest | undefined> => {
    try {
      const m = (await readManifest(store, name, version, key)).manifest;
      manifests.push(m);
      return m;
    } catch (e) {
      const kind = e instanceof HfkError && e.code === 'E_SIGNATURE' ? 'signature' : 'manifest';
      problems.push({ kind, image: name, ...(version ? { version } : {}), message: e instanceof Error ? e.message : String(e) });
      return undefined;
    }
  };
  if (store instanceof LocalStore) {
    const versions = await store.listVersions(name);
    if (latest !== null && !versions.includes(latest)) {
      problems.push({ kind: 'pointer', image: name, version: latest, message: `the pointer of ${name} names v${latest}, which is not in the store` });
    }
    for (const v of versions) await check(v);
    if (latest !== null && versions.includes(latest)) {
      // The pointer's digest must match the manifest it names.
      try {
        await readManifest(store, name, undefined, key);
      } catch (e) {
        problems.push({ kind: 'pointer', image: name, message: e instanceof Error ? e.message : String(e) });
      }
    }
  } else if (latest !== null) {
    // Over HTTP a store cannot be listed: follow the chain of previous versions.
    let m = await check(undefined);
    while (m?.header.previous) {
      const prev = m.header.previous.version;
      try {
        const loaded = await readManifest(store, name, prev, key);
        manifests.push(loaded.manifest);
        m = loaded.manifest;
      } catch (e) {
        if (e instanceof MissingError) break; // older versions pruned by hfk gc --keep
        problems.push({ kind: e instanceof HfkError && e.code === 'E_SIGNATURE' ? 'signature' : 'manifest', image: name, version: prev, message: (e as Error).message });
        break;
      }
    }
  }
  return { latest, manifests };
}

export async function verifyStore(store: StoreReader, o: VerifyOptions): Promise<VerifyReport> {
  const problems: Problem[] = [];
  let names: string[];
  if (o.name) names = [o.name];
  else if (store instanceof LocalStore) names = await store.listImages();
  else throw new UsageError(`a store at a URL cannot be listed: give --name NAME to verify ${store.location}`);

  const images: VerifyReport['images'] = [];
  // hash → [expected length, object size, object digest if signed, an image/version that uses it]
  const blocks = new Map<string, { length: number; size: number; digest: string | undefined; image: string; version: number }>();
  for (const name of names) {
    const { latest, manifests } = await manifestsOf(store, name, o.key, problems);
    images.push({ name, latest, versions: manifests.map((m) => m.header.version).sort((a, b) => a - b) });
    for (const m of manifests) {
      m.blocks.forEach((h, i) => {
        if (!h) return;
        const known = blocks.get(h);
        if (!known) blocks.set(h, { length: blockLength(m.header, i), size: m.objectSizes.get(h)!, digest: m.objectDigests?.get(h), image: name, version: m.header.version });
        else known.digest ??= m.objectDigests?.get(h); // a format-1 manifest signs none
      });
    }
  }
  if (names.length === 0) problems.push({ kind: 'pointer', message: `store ${store.location} has no images` });

  let done = 0;
  let bytes = 0;
  const queue = [...blocks.entries()];
  const worker = async () => {
    for (let item = queue.shift(); item; item = queue.shift()) {
      const [hash, b] = item;
      try {
        await readBlock(store, hash, b.length, b.size, {}, b.digest);
        bytes += b.size;
      } catch (e) {
        const p = problemOf(e);
        problems.push({ ...p, image: b.image, version: b.version, block: hash });
      }
      o.onProgress?.(++done, blocks.size);
    }
  };
  await Promise.all(Array.from({ length: o.parallel ?? 8 }, worker));
  return { store: store.location, ok: problems.length === 0, images, blocksChecked: blocks.size, bytesChecked: bytes, problems };
}
