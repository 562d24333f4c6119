import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { HeapCache, isMemoryFs, openMemoryCache, ShmCache } from './memcache.ts';

describe('HeapCache', () => {
  it('evicts the least recently used blocks to stay under its byte limit', () => {
    const c = new HeapCache(300);
    c.set('a', Buffer.alloc(100));
    c.set('b', Buffer.alloc(100));
    c.set('c', Buffer.alloc(100));
    expect(c.get('a')).toBeDefined(); // a is now the most recent
    c.set('d', Buffer.alloc(100)); // evicts b
    expect(c.has('b')).toBe(false);
    expect(['a', 'c', 'd'].every((k) => c.has(k))).toBe(true);
    expect(c.size).toBe(300);
    c.set('big', Buffer.alloc(250)); // evicts until it fits
    expect(c.size).toBeLessThanOrEqual(300);
    expect(c.has('big')).toBe(true);
  });

  it('ignores a block larger than the whole cache and counts hits and misses', () => {
    const c = new HeapCache(10);
    c.set('x', Buffer.alloc(11));
    expect(c.get('x')).toBeUndefined();
    c.set('y', Buffer.alloc(5));
    c.get('y');
    expect([c.hits, c.misses]).toEqual([1, 1]);
  });

  it('replacing a key does not double count', () => {
    const c = new HeapCache(100);
    c.set('k', Buffer.alloc(60));
    c.set('k', Buffer.alloc(40));
    expect(c.size).toBe(40);
    expect(c.count).toBe(1);
  });
});

/** A tmpfs of its own, of `size`, unmounted when the test ends (as root). */
function smallTmpfs(size: string): string {
  const dir = mkdtempSync('/tmp/hfk-test-shm-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  onTestFinished(() => {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

// The tmpfs kind, on real tmpfs mounts (as root: small ones of our own to fill up).
describe('ShmCache', () => {
  const block = (n: number, fill: number) => Buffer.alloc(n, fill);

  it('keeps blocks in a nameless tmpfs file: the same bytes back, whole or in part, LRU out first', () => {
    const dir = mkdtempSync('/dev/shm/hfk-test-');
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const c = new ShmCache(3 * 1024, 1024, dir);
    onTestFinished(() => c.close());
    expect(readdirSync(dir)).toEqual([]); // nothing with a name, nothing left behind
    c.set('a', block(1024, 1));
    c.set('b', block(1024, 2));
    c.set('c', block(500, 3)); // a short last block
    expect([c.size, c.count, c.copies, c.backing]).toEqual([2548, 3, true, dir]);
    const got = c.get('a')!;
    expect(got.equals(block(1024, 1))).toBe(true); // a copy: 'a' is now the most recent
    got.fill(9);
    expect(c.get('a')!.equals(block(1024, 1))).toBe(true);
    c.set('d', block(1024, 4)); // no free slot left: b, the least recently used, goes
    expect(c.has('b')).toBe(false);
    expect(['a', 'c', 'd'].every((k) => c.has(k))).toBe(true);
    const dest = Buffer.alloc(10, 0xee);
    expect(c.copyTo('c', dest, 2, 495, 5)).toBe(true);
    expect([...dest]).toEqual([0xee, 0xee, 3, 3, 3, 3, 3, 0xee, 0xee, 0xee]);
    expect(c.copyTo('b', dest, 0, 0, 1)).toBe(false);
    expect(() => c.copyTo('c', dest, 0, 496, 5)).toThrow(/outside the block \(500 bytes\)/);
    c.set('big', block(1025, 5)); // larger than a slot: not kept
    expect(c.has('big')).toBe(false);
    expect([c.hits, c.misses]).toEqual([3, 0]); // get, get, copyTo; a failed copyTo is not a miss
    expect(c.get('zz')).toBeUndefined();
    expect(c.misses).toBe(1);
    c.close();
    expect(c.get('a')).toBeUndefined();
    expect([c.size, c.count]).toEqual([0, 0]);
  });

  it('reserve(): another writer fills the room; the block is readable only after commit, cancel gives the room back', () => {
    const c = new ShmCache(2 * 4096, 4096, '/dev/shm');
    onTestFinished(() => c.close());
    const a = Buffer.alloc(4096, 0xa1);
    const r = c.reserve('a', 4096)!;
    writeSync(r.fd, a, 0, a.length, r.offset); // as a verify thread does
    expect(c.has('a')).toBe(false);
    expect(c.copyTo('a', Buffer.alloc(10), 0, 0, 10)).toBe(false);
    r.commit();
    expect(c.get('a')!.equals(a)).toBe(true);
    expect(c.reserve('a', 4096)).toBeUndefined(); // held already: nothing to write
    // A cancelled room is reused, never leaked: the cache still holds two blocks at most, both readable.
    for (let i = 0; i < 5; i++) c.reserve(`x${i}`, 4096)!.cancel();
    c.set('b', Buffer.alloc(4096, 0xb2));
    expect(c.count).toBe(2);
    expect(c.get('a')!.equals(a) && c.get('b')![0] === 0xb2).toBe(true);
    // Two rooms for one block (hedged requests): the second commit keeps the first and frees its room.
    const c2 = new ShmCache(2 * 4096, 4096, '/dev/shm');
    onTestFinished(() => c2.close());
    const [p, q] = [c2.reserve('p', 4096)!, c2.reserve('p', 4096)!];
    writeSync(p.fd, Buffer.alloc(4096, 1), 0, 4096, p.offset);
    writeSync(q.fd, Buffer.alloc(4096, 1), 0, 4096, q.offset);
    p.commit();
    q.commit();
    expect(c2.count).toBe(1);
    c2.set('r', Buffer.alloc(4096, 2));
    expect(c2.count).toBe(2);
    expect(c2.get('p')![0]).toBe(1);
  });

  it('set() has made its copy when it returns: the caller may then reuse its buffer', () => {
    const c = new ShmCache(2 * 4096, 4096, '/dev/shm');
    onTestFinished(() => c.close());
    const a = block(4096, 1);
    c.set('a', a);
    c.set('big', block(4097, 2)); // larger than a slot: not kept
    expect([c.has('a'), c.has('big')]).toEqual([true, false]);
    a.fill(7);
    expect(c.get('a')!.equals(block(4096, 1))).toBe(true);
  });

  it('a tmpfs that is full leaves blocks uncached and the cache working', () => {
    const dir = smallTmpfs('64k');
    const c = new ShmCache(1 << 20, 16 * 1024, dir, { reserveBytes: 0 }); // grow until a write fails
    onTestFinished(() => c.close());
    for (let i = 0; i < 8; i++) c.set(`k${i}`, block(16 * 1024, i));
    expect(c.count).toBeGreaterThan(0);
    expect(c.count).toBeLessThan(8); // 64 KiB hold at most 4 blocks of 16 KiB
    const held = Array.from({ length: 8 }, (_, i) => `k${i}`).filter((k) => c.has(k));
    for (const k of held) expect(c.get(k)!.equals(block(16 * 1024, Number(k.slice(1))))).toBe(true);
    // Still working: a new block takes the place of the least recently used one.
    c.set('new', block(16 * 1024, 42));
    expect(c.get('new')!.equals(block(16 * 1024, 42))).toBe(true);
    expect(c.count).toBe(held.length);
  });

  it('leaves room on its tmpfs for others (in the initramfs it is /run): at least 16 MiB free', () => {
    const dir = smallTmpfs('24m');
    const c = new ShmCache(64 << 20, 1 << 20, dir);
    onTestFinished(() => c.close());
    for (let i = 0; i < 20; i++) c.set(`k${i}`, block(1 << 20, i));
    const st = statfsSync(dir);
    expect(st.bavail * st.bsize).toBeGreaterThanOrEqual(16 << 20);
    expect(c.count).toBeGreaterThanOrEqual(6); // 24 MiB less 16 MiB: about 7 blocks of 1 MiB
    expect(c.count).toBeLessThanOrEqual(8);
    // The newest blocks are the ones kept, intact.
    for (let i = 20 - c.count; i < 20; i++) expect(c.get(`k${i}`)!.equals(block(1 << 20, i))).toBe(true);
  });

  it('openMemoryCache: a tmpfs file where a tmpfs is found, else the heap', () => {
    expect(isMemoryFs('/dev/shm')).toBe(true);
    const disk = mkdtempSync(join(tmpdir(), 'hfk-test-'));
    onTestFinished(() => rmSync(disk, { recursive: true, force: true }));
    const onDisk = isMemoryFs(disk);
    const a = openMemoryCache({ limitBytes: 1 << 20, blockSize: 65536, dirs: ['/dev/shm'] });
    const b = openMemoryCache({ limitBytes: 1 << 20, blockSize: 65536, dirs: ['/nonexistent', disk] });
    const c = openMemoryCache({ limitBytes: 1 << 20, blockSize: 65536, kind: 'heap' });
    onTestFinished(() => [a, b, c].forEach((x) => x.close()));
    expect(a).toBeInstanceOf(ShmCache);
    expect(a.backing).toBe('/dev/shm');
    expect(b.backing).toBe(onDisk ? disk : 'heap'); // a folder on a disk is never used
    expect(c).toBeInstanceOf(HeapCache);
  });
});
