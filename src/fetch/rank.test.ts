import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { manifestPath, pointerPath } from '../format/layout.ts';
import { MANIFEST_MAX_BYTES } from '../format/manifest.ts';
import { Mirror } from '../source/mirror.ts';
import { MemoryOrigin } from '../source/testing/memory.ts';
import type { ReadOptions } from '../store/store.ts';
import { ImageOpener, openMirrors } from './open.ts';
import { rankMirrors } from './rank.ts';
import { newKey, pointerTo as pointerFor, signedImage } from './testing/images.ts';
import { loadImage, TrustState } from './trust.ts';

const NAME = 'demo';
const KEY = newKey();

const image = (version: number, key = KEY) => signedImage(NAME, version, key);
const pointerTo = (version: number, manifest: Buffer, size?: number) => pointerFor(NAME, version, manifest, size);

/** A MemoryOrigin that remembers the options of every read. */
class RecordingOrigin extends MemoryOrigin {
  readonly options = new Map<string, ReadOptions>();
  override read(rel: string, options: ReadOptions = {}): Promise<Buffer> {
    this.options.set(rel, options);
    return super.read(rel, options);
  }
}

function memoryMirror(url: string, files: Map<string, Buffer>): { mirror: Mirror; origin: RecordingOrigin } {
  const origin = new RecordingOrigin(url);
  for (const [k, v] of files) origin.files.set(k, v);
  return { mirror: new Mirror(url, origin), origin };
}

function storeDir(files: Map<string, Buffer>): string {
  const dir = tempDir('hfk-rank-');
  for (const [rel, bytes] of files) {
    mkdirSync(dirname(join(dir, rel)), { recursive: true });
    writeFileSync(join(dir, rel), bytes);
  }
  return dir;
}

/** A hostile mirror: a good image's blocks, and a pointer claiming v99 of `manifest`. */
function hijacker(good: Map<string, Buffer>, manifest: Buffer, size?: number): Map<string, Buffer> {
  const files = new Map(good);
  files.set(manifestPath(NAME, 99), manifest);
  files.set(pointerPath(NAME), pointerTo(99, manifest, size));
  return files;
}

describe('rankMirrors: a pointer\'s version counts only once its manifest verifies', () => {
  it('ranks the good mirror first when a hostile one claims v99 with a forged manifest, and reports the hostile one', async () => {
    const good = image(3);
    const forged = Buffer.alloc(8192, 0x41); // no manifest at all: decoding it would be a FormatError
    const g = memoryMirror('mem://good/', good.files);
    const h = memoryMirror('mem://hostile/', hijacker(good.files, forged));
    const manifests = new Map<string, Buffer>();
    const r = await rankMirrors([h.mirror, g.mirror], { name: NAME, key: KEY.publicKey, deadlineMs: 10_000, manifests });
    expect(r.mirrors.map((m) => m.url)).toEqual(['mem://good/', 'mem://hostile/']);
    const [first, second] = r.mirrors;
    expect(first).toMatchObject({ version: 3, claimed: 3, refused: null });
    expect(second).toMatchObject({ version: null, claimed: 99, errorCode: 'E_SIGNATURE' });
    expect(second!.refused).toMatch(/^its pointer claims v99, but that manifest cannot be used: .*not a manifest signed by the pinned key/);
    // Only the verified manifest is handed on to loadImage.
    expect([...manifests.keys()]).toEqual([manifestPath(NAME, 3)]);
    // The hostile manifest was read with the size its pointer declares as the ceiling.
    expect(h.origin.options.get(manifestPath(NAME, 99))?.maxBytes).toBe(forged.length);
    // Loading in the ranked order gives the good version.
    const loaded = await loadImage({ name: NAME, version: undefined, key: KEY.publicKey, mirrors: [g.mirror, h.mirror], trust: TrustState.memory(), known: manifests });
    expect(loaded).toMatchObject({ from: 'mem://good/', offline: false });
    expect(loaded.manifest.header.version).toBe(3);
  });

  it('refuses a claim signed by another key, or a replayed manifest of another version', async () => {
    const good = image(3);
    const otherKey = image(99, newKey()).manifest; // a real v99, signed by someone else
    const g = memoryMirror('mem://good/', good.files);
    const a = memoryMirror('mem://other-key/', hijacker(good.files, otherKey));
    const b = memoryMirror('mem://replay/', hijacker(good.files, good.manifest)); // the good v3 bytes, named v99
    const r = await rankMirrors([a.mirror, b.mirror, g.mirror], { name: NAME, key: KEY.publicKey, deadlineMs: 10_000 });
    expect(r.mirrors[0]).toMatchObject({ url: 'mem://good/', version: 3 });
    const byUrl = new Map(r.mirrors.map((m) => [m.url, m]));
    expect(byUrl.get('mem://other-key/')!.refused).toMatch(new RegExp(`signed by key [0-9a-f]{16}, not by the pinned key ${KEY.publicKey.id}`));
    expect(byUrl.get('mem://replay/')!.refused).toMatch(/describes demo v3, not demo v99/);
    expect(byUrl.get('mem://replay/')!.errorCode).toBe('E_INVALID');
  });

  it('refuses a manifest larger than its pointer declares (a local store checks the size before reading)', async () => {
    const good = image(3);
    const big = Buffer.concat([good.manifest, Buffer.alloc(100_000)]);
    const dir = storeDir(hijacker(good.files, big, 200)); // the pointer declares 200 bytes
    const set = openMirrors([storeDir(good.files), dir]);
    try {
      const r = await rankMirrors(set.mirrors, { name: NAME, key: KEY.publicKey, deadlineMs: 10_000 });
      expect(r.mirrors[0]!.version).toBe(3);
      const hostile = r.mirrors[1]!;
      expect(hostile).toMatchObject({ version: null, claimed: 99, errorCode: 'E_INVALID' });
      expect(hostile.refused).toMatch(/has 100\d+ bytes, more than such a file may have \(200 bytes\)/);
    } finally {
      await set.close();
    }
  });

  it('does not even ask for a manifest whose pointer declares more than the absolute ceiling', async () => {
    const good = image(3);
    const g = memoryMirror('mem://good/', good.files);
    const h = memoryMirror('mem://hostile/', hijacker(good.files, Buffer.alloc(16), MANIFEST_MAX_BYTES + 1));
    const r = await rankMirrors([h.mirror, g.mirror], { name: NAME, key: KEY.publicKey, deadlineMs: 10_000 });
    expect(r.mirrors.map((m) => m.url)).toEqual(['mem://good/', 'mem://hostile/']);
    expect(r.mirrors[1]!.refused).toMatch(/declares a manifest \(v99\) of \d+ bytes, more than hfk accepts/);
    expect(h.origin.asked).not.toContain(manifestPath(NAME, 99));
  });

  it('without a key counts no version and decodes no manifest (no block is probed)', async () => {
    const good = image(3);
    const g = memoryMirror('mem://good/', good.files);
    const r = await rankMirrors([g.mirror], { name: NAME, deadlineMs: 10_000 });
    expect(r.mirrors[0]).toMatchObject({ version: null, claimed: 3, refused: null });
    expect(g.origin.asked.filter((p) => p.startsWith('blocks/'))).toEqual([]);
  });

  it('ends when its signal fires, even while a mirror never answers', async () => {
    const good = image(3);
    const g = memoryMirror('mem://stalled/', good.files);
    g.origin.behaviour = 'hang';
    const ac = new AbortController();
    const ranking = rankMirrors([g.mirror], { name: NAME, key: KEY.publicKey, deadlineMs: 600_000, signal: ac.signal });
    ac.abort();
    const r = await ranking;
    expect(r.mirrors[0]).toMatchObject({ url: 'mem://stalled/', ok: 0, version: null });
    expect(Number.isFinite(r.mirrors[0]!.score)).toBe(false);
  });
});

describe('ImageOpener in soft mode: opening ends within the soft deadline', () => {
  it('a mirror that stalls on the manifest fails the load with the soft-deadline error', async () => {
    const good = image(3);
    const g = memoryMirror('mem://stalled/', good.files);
    g.origin.behaviours.set(manifestPath(NAME, 3), 'hang');
    const opener = new ImageOpener({ mirrors: [], name: NAME, key: KEY.publicKey, mode: 'soft', softTimeoutMs: 200 });
    opener.mirrors = [g.mirror];
    try {
      const ranking = await opener.rank({ deadlineMs: 600_000 }); // only the soft deadline can end it
      expect(ranking.mirrors[0]).toMatchObject({ claimed: 3, version: null });
      const e = await opener.load().catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'E_BROKEN' });
      expect((e as Error).message).toMatch(/^opening demo took longer than the soft deadline of 0.2 s: .*mem:\/\/stalled\//);
      expect(g.origin.cancelled).toBeGreaterThanOrEqual(2); // the ranking's and the load's reads were both cut
    } finally {
      await opener.close();
    }
  }, 20_000);
});
