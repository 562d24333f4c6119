import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { blockHash, encodeBlock } from '../format/codec.ts';
import { blockPath } from '../format/layout.ts';
import { ReadThroughCache } from './cache.ts';
import { DiskCache } from './diskcache.ts';
import { MirrorGroup } from './group.ts';
import { Mirror } from './mirror.ts';
import { MemoryOrigin, testBlock } from './testing/memory.ts';

function object(seed: number, size = 4096): { hash: string; data: Buffer; object: Buffer } {
  const data = Buffer.alloc(size, seed);
  data.writeUInt32LE(seed * 2654435761 >>> 0, 0);
  return { hash: blockHash(data), data, object: encodeBlock(data, 'zstd', 3) };
}

describe('DiskCache', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('sets the times of objects read on disk later, in one batch, and at once on flush', async () => {
    const dir = tempDir();
    const c = await DiskCache.open(dir, 1 << 20);
    const a = object(1);
    const b = object(2);
    await c.putObject(a.hash, a.object);
    await c.putObject(b.hash, b.object);
    const old = new Date('2020-01-01T00:00:00Z');
    for (const h of [a.hash, b.hash]) utimesSync(join(dir, blockPath(h)), old, old);
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    expect((await c.getBlock(a.hash, a.data.length))?.equals(a.data)).toBe(true);
    // The read is answered; its object's time on disk is not yet touched.
    expect(statSync(join(dir, blockPath(a.hash))).mtimeMs).toBe(old.getTime());
    await vi.advanceTimersByTimeAsync(30_000);
    await vi.waitFor(() => expect(statSync(join(dir, blockPath(a.hash))).mtimeMs).toBeGreaterThan(old.getTime()));
    expect(statSync(join(dir, blockPath(b.hash))).mtimeMs).toBe(old.getTime()); // never read
    // flush() (the fetcher's close) sets what is pending at once.
    expect((await c.getBlock(b.hash, b.data.length))?.equals(b.data)).toBe(true);
    await c.flush();
    expect(statSync(join(dir, blockPath(b.hash))).mtimeMs).toBeGreaterThan(old.getTime());
    // A reopened cache orders by those times: b, read last, is the most recently used.
    vi.useRealTimers();
    const small = await DiskCache.open(dir, a.object.length + b.object.length - 1);
    expect(small.has(a.hash)).toBe(false);
    expect(small.has(b.hash)).toBe(true);
  });

  it('writes each object whole under its name, leaving no temporary file, and makes its folder again if it went', async () => {
    const dir = tempDir();
    const c = await DiskCache.open(dir, 1 << 20);
    // Two objects whose names share a folder (blocks/XX/): the first makes it.
    const seen = new Map<string, ReturnType<typeof object>>();
    let pair: [ReturnType<typeof object>, ReturnType<typeof object>] | undefined;
    for (let i = 10; !pair; i++) {
      const o = object(i);
      const fan = o.hash.slice(0, 2);
      const other = seen.get(fan);
      if (other) pair = [other, o];
      else seen.set(fan, o);
    }
    const [a, b] = pair;
    await c.putObject(a.hash, a.object);
    const fan = join(dir, blockPath(a.hash), '..');
    expect(readdirSync(fan)).toEqual([a.hash]);
    rmSync(fan, { recursive: true }); // removed behind the cache's back
    await c.putObject(b.hash, b.object);
    expect(readdirSync(fan)).toEqual([b.hash]);
    expect((await c.getBlock(b.hash, b.data.length))?.equals(b.data)).toBe(true);
    expect(await c.getBlock(a.hash, a.data.length)).toBeUndefined(); // gone with the folder: a miss, not an error
  });

  it('with write-behind, holds objects (served from memory) until none came for holdMs, then writes them all', async () => {
    const dir = tempDir();
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const c = await DiskCache.open(dir, 1 << 20, { holdMs: 5000 });
    const a = object(3);
    const b = object(4);
    let aWritten = false;
    void c.putObject(a.hash, a.object).then(() => (aWritten = true));
    await vi.advanceTimersByTimeAsync(4000);
    void c.putObject(b.hash, b.object); // a new object: the wait starts again
    await vi.advanceTimersByTimeAsync(4000);
    expect(existsSync(join(dir, blockPath(a.hash)))).toBe(false);
    expect(aWritten).toBe(false);
    expect(c.has(a.hash)).toBe(true);
    expect((await c.getBlock(a.hash, a.data.length))?.equals(a.data)).toBe(true); // from memory
    await vi.advanceTimersByTimeAsync(1000);
    await vi.waitFor(() => expect(aWritten).toBe(true));
    await c.flush();
    for (const o of [a, b]) expect(statSync(join(dir, blockPath(o.hash))).size).toBe(o.object.length);
    expect(c.stats().objects).toBe(2);
  });

  it('with write-behind, flush() writes what is held at once, and past holdBytes objects are written directly', async () => {
    const dir = tempDir();
    const a = object(5);
    const b = object(6);
    const c = await DiskCache.open(dir, 1 << 20, { holdMs: 60_000, holdBytes: a.object.length });
    void c.putObject(a.hash, a.object); // held
    await c.putObject(b.hash, b.object); // would pass holdBytes: written now
    expect(existsSync(join(dir, blockPath(b.hash)))).toBe(true);
    expect(existsSync(join(dir, blockPath(a.hash)))).toBe(false);
    await c.flush();
    expect(existsSync(join(dir, blockPath(a.hash)))).toBe(true);
    expect(readdirSync(join(dir, 'blocks', a.hash.slice(0, 2))).some((n) => n.includes('.tmp') || n.startsWith('.'))).toBe(false);
  });
});

describe('DiskCache: what is on disk is untrusted', () => {
  const A = testBlock(77);
  const req = { hash: A.hash, length: A.data.length, objectSize: A.object.length };

  // Each kind of garbage a damaged or tampered cache folder can hold where an object should be.
  const garbage: [string, (file: string) => void][] = [
    ['a folder', (f) => mkdirSync(join(f, 'inside'), { recursive: true })],
    ['a symlink to a copy of the object', (f) => {
      const copy = `${f}.copy`;
      writeFileSync(copy, A.object);
      symlinkSync(copy, f);
    }],
    ['a symlink to /dev/zero', (f) => symlinkSync('/dev/zero', f)],
    ['a FIFO nobody writes', (f) => execFileSync('mkfifo', [f])],
    ['a zero-length file', (f) => writeFileSync(f, '')],
    ['a 1.5 GB sparse file', (f) => {
      writeFileSync(f, '');
      truncateSync(f, 1536 << 20);
    }],
    ['a file one byte short', (f) => writeFileSync(f, A.object.subarray(1))],
    ['a file of the right size with the wrong bytes', (f) => writeFileSync(f, Buffer.alloc(A.object.length, 0x55))],
    ['an unreadable file', (f) => {
      writeFileSync(f, Buffer.alloc(A.object.length, 0x33));
      chmodSync(f, 0);
    }],
  ];

  function goodMirror(): { cacheOver: (disk: DiskCache) => ReadThroughCache; origin: MemoryOrigin } {
    const origin = new MemoryOrigin('mem://good/');
    origin.files.set(A.rel, A.object);
    const cacheOver = (disk: DiskCache) => new ReadThroughCache(disk, new MirrorGroup([new Mirror(origin.location, origin)], { hedge: false }));
    return { cacheOver, origin };
  }

  /** After the cache has written the block again, its file is exactly the object. */
  function expectObjectAt(file: string): void {
    const st = lstatSync(file);
    expect(st.isFile()).toBe(true);
    expect(readFileSync(file).equals(A.object)).toBe(true);
  }

  for (const [kind, make] of garbage) {
    it(`${kind} in place of a cached object (while open): a miss, removed, and the block comes exact from a good mirror`, { timeout: 20_000 }, async () => {
      const dir = tempDir();
      const disk = await DiskCache.open(dir, 8 << 20);
      const { cacheOver, origin } = goodMirror();
      const cache = cacheOver(disk);
      await (await cache.get(req)).kept;
      const file = join(dir, A.rel);
      rmSync(file);
      make(file);
      const before = disk.stats().discarded;
      const got = await cache.get(req);
      expect(got.from).toBe('mem://good/');
      expect(got.data.equals(A.data)).toBe(true);
      expect(disk.stats().discarded).toBe(before + 1);
      await got.kept;
      expectObjectAt(file);
      expect(origin.asked).toEqual([A.rel, A.rel]);
      // And it is a hit again.
      expect((await cache.get(req)).from).toBe('disk');
      await cache.close();
    });

    it(`${kind} in place of an object when the cache is opened: removed or never read, and the block comes exact from a good mirror`, { timeout: 20_000 }, async () => {
      const dir = tempDir();
      const file = join(dir, A.rel);
      mkdirSync(join(file, '..'), { recursive: true });
      make(file);
      const disk = await DiskCache.open(dir, 8 << 20);
      const cache = goodMirror().cacheOver(disk);
      const got = await cache.get(req);
      expect(got.from).toBe('mem://good/');
      expect(got.data.equals(A.data)).toBe(true);
      await got.kept;
      expectObjectAt(file);
      expect(disk.stats().bytes).toBe(A.object.length); // nothing of the garbage counts against the limit
      await cache.close();
    });
  }

  it('never reads a file larger than the object: a sparse 1.5 GB file costs one fstat, not 1.5 GB', async () => {
    const dir = tempDir();
    const disk = await DiskCache.open(dir, 8 << 20);
    await disk.putObject(A.hash, A.object);
    const file = join(dir, A.rel);
    truncateSync(file, 1536 << 20);
    const rss = process.memoryUsage().arrayBuffers;
    expect(await disk.getBlock(A.hash, A.data.length, undefined, A.object.length)).toBeUndefined();
    expect(process.memoryUsage().arrayBuffers - rss).toBeLessThan(64 << 20);
    expect(existsSync(file)).toBe(false);
    expect(disk.stats()).toMatchObject({ objects: 0, bytes: 0, discarded: 1, misses: 1 });
  });

  it('without the object size, a file larger than any object for the block is a miss, a good one a hit', async () => {
    const dir = tempDir();
    const disk = await DiskCache.open(dir, 8 << 20);
    await disk.putObject(A.hash, A.object);
    expect((await disk.getBlock(A.hash, A.data.length))?.equals(A.data)).toBe(true);
    const file = join(dir, A.rel);
    writeFileSync(file, Buffer.concat([A.object, Buffer.alloc(A.data.length)]));
    expect(await disk.getBlock(A.hash, A.data.length)).toBeUndefined();
    expect(existsSync(file)).toBe(false);
  });

  it('skips a cached manifest that is not a bounded regular file', async () => {
    const dir = tempDir();
    const disk = await DiskCache.open(dir, 8 << 20);
    await disk.putManifest('img', 1, Buffer.from('manifest one'));
    await disk.putManifest('img', 2, Buffer.from('manifest two'));
    const v2 = join(dir, 'images', 'img', 'v2.hfkm');
    truncateSync(v2, 3 << 30);
    symlinkSync(join(dir, 'images', 'img', 'v1.hfkm'), join(dir, 'images', 'img', 'v3.hfkm'));
    const found = await disk.manifests('img');
    expect(found.map((m) => [m.version, m.bytes.toString()])).toEqual([[1, 'manifest one']]);
  });
});
