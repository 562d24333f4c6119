import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { KeyError, MissingError, RollbackError, SignatureError, StoreError } from '../errors.ts';
import { openMirrors } from '../fetch/open.ts';
import { newKey, pointerTo } from '../fetch/testing/images.ts';
import { loadImage, TrustState } from '../fetch/trust.ts';
import { blockPath, manifestPath, pointerPath } from '../format/layout.ts';
import { readManifest } from '../store/images.ts';
import { LocalStore } from '../store/local.ts';
import { promote } from './promote.ts';
import { imageBytes, publishBytes, snapshot } from './testing/stores.ts';

const key = newKey();

/** A store with three versions of 'os': each changes one block. */
async function threeVersions(): Promise<{ dir: string; store: string; digests: string[] }> {
  const dir = tempDir();
  const store = join(dir, 'store');
  const digests: string[] = [];
  for (const last of [3, 4, 5]) digests.push((await publishBytes(store, 'os', key, join(dir, 'img'), imageBytes([1, 2, 0, last]))).manifestSha256);
  return { dir, store, digests };
}

/** What a client that trusts `trust` gets from the store as a mirror. */
async function clientLoad(store: string, trust: TrustState) {
  const set = openMirrors([store]);
  onTestFinished(() => set.close());
  return loadImage({ name: 'os', version: undefined, key: key.publicKey, mirrors: set.mirrors, trust });
}

describe('hfk promote', () => {
  it('writes v4 with the content of v1, after v3, and a client that has seen v3 takes it', async () => {
    const { store, digests } = await threeVersions();
    const trust = TrustState.memory();
    expect((await clientLoad(store, trust)).manifest.header.version).toBe(3);

    // Moving the pointer back is what clients refuse: the reason promote writes a new version.
    const s = LocalStore.at(store);
    const pointer = readFileSync(join(store, pointerPath('os')));
    writeFileSync(join(store, pointerPath('os')), pointerTo('os', 1, readFileSync(join(store, manifestPath('os', 1)))));
    expect(await clientLoad(store, trust).catch((e: unknown) => e)).toBeInstanceOf(RollbackError);
    writeFileSync(join(store, pointerPath('os')), pointer);

    const r = await promote({ store: await LocalStore.openWritable(store), name: 'os', version: 1, key });
    expect(r).toMatchObject({ unchanged: false, from: 1, version: 4, previousVersion: 3, manifest: manifestPath('os', 4) });
    const loaded = await clientLoad(store, trust);
    const v1 = (await readManifest(s, 'os', 1, key.publicKey)).manifest;
    expect(loaded.manifest.header).toMatchObject({ version: 4, previous: { version: 3, sha256: digests[2] }, imageSize: v1.header.imageSize });
    expect(loaded.manifest.blocks).toEqual(v1.blocks);
    expect(loaded.manifest.objectDigests).toEqual(v1.objectDigests);
    expect(loaded.digest).toBe(r.manifestSha256);
  });

  it('writes nothing when the latest has that content already', async () => {
    const { store } = await threeVersions();
    await promote({ store: await LocalStore.openWritable(store), name: 'os', version: 2, key });
    const before = snapshot(store);
    for (const v of [2, 4]) {
      const r = await promote({ store: await LocalStore.openWritable(store), name: 'os', version: v, key });
      expect(r).toMatchObject({ unchanged: true, version: 4, from: v });
    }
    expect(snapshot(store)).toEqual(before);
  });

  it('refuses a version that does not exist, naming the ones there are', async () => {
    const { store } = await threeVersions();
    const before = snapshot(store);
    const e = await promote({ store: await LocalStore.openWritable(store), name: 'os', version: 9, key }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(MissingError);
    expect((e as Error).message).toBe(`image 'os' has no version 9 in ${store}: it has v1, v2, v3`);
    const none = await promote({ store: await LocalStore.openWritable(store), name: 'nope', version: 1, key }).catch((x: unknown) => x);
    expect(none).toBeInstanceOf(MissingError);
    expect((none as Error).message).toMatch(/there is no image 'nope' in .*images\/nope\/latest\.json/);
    expect(snapshot(store)).toEqual(before);
  });

  it('refuses a key that is not the one that signs the image', async () => {
    const { store } = await threeVersions();
    const before = snapshot(store);
    const other = newKey();
    const e = await promote({ store: await LocalStore.openWritable(store), name: 'os', version: 1, key: other }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(KeyError);
    expect((e as Error).message).toContain(`key ${other.publicKey.id} is not the key that signs os in ${store}`);
    expect((e as Error).message).toContain(`signed by key ${key.publicKey.id}`);
    expect(snapshot(store)).toEqual(before);
  });

  it('refuses a version whose manifest does not verify', async () => {
    const { store } = await threeVersions();
    const file = join(store, manifestPath('os', 2));
    const bytes = readFileSync(file);
    bytes[bytes.length - 100]! ^= 1; // in the block table: parses, but the signature no longer holds
    writeFileSync(file, bytes);
    const before = snapshot(store);
    const e = await promote({ store: await LocalStore.openWritable(store), name: 'os', version: 2, key }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SignatureError);
    expect((e as Error).message).toMatch(/^cannot promote os v2: .*v2\.hfkm.* has a bad signature/);
    expect(snapshot(store)).toEqual(before);
  });

  it('refuses a version whose blocks are no longer all in the store', async () => {
    const { store } = await threeVersions();
    const s = LocalStore.at(store);
    const v1 = (await readManifest(s, 'os', 1, null)).manifest;
    const v3 = (await readManifest(s, 'os', 3, null)).manifest;
    const only = [...v1.objectSizes.keys()].find((h) => !v3.objectSizes.has(h))!;
    rmSync(join(store, blockPath(only)));
    const before = snapshot(store);
    const e = await promote({ store: await LocalStore.openWritable(store), name: 'os', version: 1, key }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(StoreError);
    expect((e as Error).message).toContain(`cannot promote os v1: 1 of its 3 block objects are missing from ${store}`);
    expect(snapshot(store)).toEqual(before);
  });
});
