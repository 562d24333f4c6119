import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { FormatError, MissingError, StoreError, UsageError } from '../errors.ts';
import { newKey } from '../fetch/testing/images.ts';
import { manifestPath, pointerPath } from '../format/layout.ts';
import { openStore } from '../source/origin.ts';
import { serveStore } from '../store/serve.ts';
import { listStore, type StoreListing } from './list.ts';
import { promote } from './promote.ts';
import { LocalStore } from '../store/local.ts';
import { imageBytes, publishBytes } from './testing/stores.ts';

const key = newKey();

/** 'os' in three versions, the third promoting v1 (so v3 has v1's content); 'tiny' in one. */
async function store(): Promise<{ dir: string; results: { version: number; sha: string }[] }> {
  const work = tempDir();
  const dir = join(work, 'store');
  const r1 = await publishBytes(dir, 'os', key, join(work, 'img'), imageBytes([1, 2, 0, 3]));
  const r2 = await publishBytes(dir, 'os', key, join(work, 'img'), imageBytes([1, 2, 0, 4]), { profile: [[0, 2]] });
  const r3 = await promote({ store: await LocalStore.openWritable(dir), name: 'os', version: 1, key });
  await publishBytes(dir, 'tiny', key, join(work, 'img'), imageBytes([7]));
  return { dir, results: [r1, r2, r3].map((r) => ({ version: r.version, sha: r.manifestSha256 })) };
}

async function list(location: string, o: Parameters<typeof listStore>[1]): Promise<StoreListing> {
  const s = await openStore(location);
  try {
    return await listStore(s, o);
  } finally {
    await s.close();
  }
}

async function served(dir: string): Promise<string> {
  const s = await serveStore({ root: dir });
  onTestFinished(() => s.close());
  return s.url;
}

describe('hfk list of a store folder', () => {
  it('lists every image and version, newest first, with the pointer, sizes and verified signatures', async () => {
    const { dir } = await store();
    const r = await list(dir, { key: key.publicKey });
    expect(r).toMatchObject({ store: dir, ok: true, keyId: key.publicKey.id });
    expect(r.images.map((i) => [i.name, i.pointer, i.versions.map((v) => v.version)])).toEqual([
      ['os', 3, [3, 2, 1]],
      ['tiny', 1, [1]],
    ]);
    const [v3, v2, v1] = r.images[0]!.versions;
    expect(v3).toMatchObject({ latest: true, verified: true, header: { imageSize: 4 * 4096, blockCount: 4, blockSize: 4096, codec: 'zstd', profile: false, previous: { version: 2 } } });
    expect(v2).toMatchObject({ latest: false, verified: true, header: { profile: true, previous: { version: 1 } } });
    expect(v1).toMatchObject({ latest: false, verified: true, header: { previous: null } });
    expect(v3!.storedBytes).toBe(v1!.storedBytes);
    expect(v1!.storedBytes).toBeGreaterThan(0);
  });

  it('says which manifests fail the key, and does not check without one', async () => {
    const { dir } = await store();
    const other = newKey();
    const bad = await list(dir, { key: other.publicKey, names: ['tiny'] });
    expect(bad.ok).toBe(false);
    expect(bad.images[0]!.versions[0]).toMatchObject({ verified: false, problem: expect.stringContaining(`is signed by key ${key.publicKey.id}, not by the pinned key ${other.publicKey.id}`) });
    const unchecked = await list(dir, { key: null, names: ['tiny'] });
    expect(unchecked).toMatchObject({ ok: true, keyId: null });
    expect(unchecked.images[0]!.versions[0]).toMatchObject({ verified: null, header: { keyId: key.publicKey.id } });
  });

  it('reports an unreadable pointer or manifest as a problem of that image, and lists the rest', async () => {
    const { dir } = await store();
    writeFileSync(join(dir, pointerPath('tiny')), 'not json');
    writeFileSync(join(dir, manifestPath('os', 2)), 'HFKM junk');
    const r = await list(dir, { key: null });
    expect(r.ok).toBe(false);
    const [os, tiny] = r.images;
    expect(os!.versions.map((v) => [v.version, v.problem === undefined])).toEqual([[3, true], [2, false], [1, true]]);
    expect(os!.versions[1]!.problem).toMatch(/v2\.hfkm .* is corrupt/);
    expect(tiny).toMatchObject({ pointer: null, problems: [expect.stringMatching(/images\/tiny\/latest\.json in .* is not JSON/)] });
    expect(tiny!.versions.map((v) => v.version)).toEqual([1]);
  });

  it('refuses what is not a store, and an image it does not have, naming the path', async () => {
    const work = tempDir();
    const absent = await list(join(work, 'nowhere'), { key: null }).catch((x: unknown) => x);
    expect(absent).toBeInstanceOf(StoreError);
    expect((absent as Error).message).toBe(`store ${join(work, 'nowhere')} does not exist`);
    mkdirSync(join(work, 'plain'));
    const e = await list(join(work, 'plain'), { key: null }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(StoreError);
    expect((e as Error).message).toBe(`${join(work, 'plain')} is not an hfk store: it has no images/ folder`);
    const { dir } = await store();
    const missing = await list(dir, { key: null, names: ['nope'] }).catch((x: unknown) => x);
    expect(missing).toBeInstanceOf(MissingError);
    expect((missing as Error).message).toBe(`there is no image 'nope' in ${dir} (no images/nope/latest.json)`);
  });
});

describe('hfk list of a mirror URL', () => {
  it('follows the chain of previous versions from the pointer, each checked against the digest it names', async () => {
    const { dir, results } = await store();
    const url = await served(dir);
    const r = await list(url, { key: key.publicKey, names: ['os'] });
    expect(r.ok).toBe(true);
    expect(r.images[0]).toMatchObject({ name: 'os', pointer: 3, problems: [] });
    expect(r.images[0]!.versions.map((v) => [v.version, v.latest, v.verified])).toEqual([[3, true, true], [2, false, true], [1, false, true]]);
    expect(r.images[0]!.olderNotOnMirror).toBeUndefined();
    expect(results.map((x) => x.version)).toEqual([1, 2, 3]);

    // Older versions removed (hfk gc --keep): the chain ends there, and that is no problem.
    rmSync(join(dir, manifestPath('os', 1)));
    const pruned = await list(url, { key: key.publicKey, names: ['os'] });
    expect(pruned.ok).toBe(true);
    expect(pruned.images[0]).toMatchObject({ olderNotOnMirror: 1 });
    expect(pruned.images[0]!.versions.map((v) => v.version)).toEqual([3, 2]);
  });

  it('reports a chain whose older manifest is not the one the newer names', async () => {
    const { dir, results } = await store();
    // v2's file replaced by another validly signed manifest: v3's `previous` digest no longer matches.
    const work = tempDir();
    const other = join(work, 'other');
    await publishBytes(other, 'os', key, join(work, 'img'), imageBytes([9]));
    await publishBytes(other, 'os', key, join(work, 'img'), imageBytes([8]));
    copyFileSync(join(other, manifestPath('os', 2)), join(dir, manifestPath('os', 2)));
    const r = await list(await served(dir), { key: key.publicKey, names: ['os'] });
    expect(r.ok).toBe(false);
    expect(r.images[0]!.versions.map((v) => v.version)).toEqual([3, 2]);
    expect(r.images[0]!.problems).toEqual([expect.stringMatching(new RegExp(`v2\\.hfkm on .* but v3 names ${results[1]!.sha.slice(0, 12)}…: not the version it followed`))]);
  });

  it('needs --name, and names the URL when the image or its pointer is bad', async () => {
    const { dir } = await store();
    const url = await served(dir);
    await expect(list(url, { key: null })).rejects.toThrow(UsageError);
    const missing = await list(url, { key: null, names: ['nope'] }).catch((x: unknown) => x);
    expect(missing).toBeInstanceOf(MissingError);
    expect((missing as Error).message).toBe(`there is no image 'nope' in ${url} (no images/nope/latest.json)`);
    writeFileSync(join(dir, pointerPath('tiny')), '{"format":"hfk-pointer/1"}');
    const bad = await list(url, { key: null, names: ['tiny'] }).catch((x: unknown) => x);
    expect(bad).toBeInstanceOf(FormatError);
    expect((bad as Error).message).toMatch(new RegExp(`^images/tiny/latest\\.json in ${url.replace(/[.]/g, '\\.')} is not an hfk pointer`));
  });
});
