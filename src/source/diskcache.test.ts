import { existsSync, readdirSync, rmSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { blockHash, encodeBlock } from '../format/codec.ts';
import { blockPath } from '../format/layout.ts';
import { DiskCache } from './diskcache.ts';

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
