import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { newKey } from '../fetch/testing/images.ts';
import { readManifest } from '../store/images.ts';
import { LocalStore } from '../store/local.ts';
import { imageBytes, publishBytes, snapshot } from './testing/stores.ts';

describe('hfk publish of an image identical to the latest version', () => {
  it('writes nothing: no manifest, the pointer untouched, every file as it was', async () => {
    const dir = tempDir();
    const store = join(dir, 'store');
    const key = newKey();
    const img = imageBytes([1, 2, 0, 3, 2]);
    const r1 = await publishBytes(store, 'os', key, join(dir, 'a.img'), img);
    expect(r1).toMatchObject({ version: 1, unchanged: false });
    const before = snapshot(store);

    // The same bytes from another file name: still the same content.
    const r2 = await publishBytes(store, 'os', key, join(dir, 'b.img'), img);
    expect(r2).toMatchObject({ unchanged: true, version: 1, manifest: 'images/os/v1.hfkm', manifestSha256: r1.manifestSha256 });
    expect(r2.blocks.new).toBe(0);
    expect(r2.bytes.manifest).toBe(0);
    expect(snapshot(store)).toEqual(before);
    expect(readdirSync(join(store, 'images/os')).sort()).toEqual(['latest.json', 'v1.hfkm']);
  });

  it('makes a new version when anything that goes in the manifest differs', async () => {
    const dir = tempDir();
    const store = join(dir, 'store');
    const key = newKey();
    const img = imageBytes([1, 2, 3]);
    await publishBytes(store, 'os', key, join(dir, 'a.img'), img);
    // A boot profile is signed into the manifest: adding one is a change.
    const withProfile = await publishBytes(store, 'os', key, join(dir, 'a.img'), img, { profile: [[1, 2]] });
    expect(withProfile).toMatchObject({ unchanged: false, version: 2, previousVersion: 1 });
    // One block changed.
    const changed = await publishBytes(store, 'os', key, join(dir, 'a.img'), imageBytes([1, 2, 4]));
    expect(changed).toMatchObject({ unchanged: false, version: 3, previousVersion: 2 });
    // Signed by another key: clients pinning the new key need a manifest it signs.
    const other = await publishBytes(store, 'os', newKey(), join(dir, 'a.img'), imageBytes([1, 2, 4]));
    expect(other).toMatchObject({ unchanged: false, version: 4 });
    const latest = await readManifest(LocalStore.at(store), 'os', undefined, null);
    expect(latest.manifest.header.previous).toEqual({ version: 3, sha256: changed.manifestSha256 });
  });
});
