import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AbortedError, InputError, UsageError } from '../errors.ts';
import { FuseErrnoError } from '../fuse/errors.ts';
import { ROOT_ID, S_IFDIR, S_IFREG } from '../fuse/fs.ts';
import { Connection, Errno, Op, OpenFlag } from '../fuse/protocol.ts';
import { BlockFs, HFK_DIR_INO, IMAGE_INO, IMMUTABLE_TIMEOUT_MS, STATS_INO } from './blockfs.ts';
import { type BlockDevice, FileBlockDevice } from './device.ts';


/** A device over a buffer that records what was asked of it. */
function memDevice(data: Buffer): BlockDevice & { calls: Array<[number, number]> } {
  const calls: Array<[number, number]> = [];
  return {
    size: data.length,
    calls,
    async read(offset, length) {
      calls.push([offset, length]);
      return data.subarray(offset, Math.min(data.length, offset + length));
    },
  };
}

function errnoOfCall(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof FuseErrnoError ? e.errno : -1;
  }
  return undefined;
}

const never = new AbortController().signal;

describe('BlockFs', () => {
  const data = randomBytes(10_000);

  it('shows NAME.img and .hfk/ at the root, stats.json inside', () => {
    const fs = new BlockFs({ name: 'debian', device: memDevice(data), mtimeMs: 1000 });
    expect(fs.readdir(ROOT_ID).map((e) => e.name)).toEqual(['.', '..', 'debian.img', '.hfk']);
    expect(fs.readdir(HFK_DIR_INO).map((e) => [e.name, e.ino])).toEqual([
      ['.', HFK_DIR_INO],
      ['..', ROOT_ID],
      ['stats.json', STATS_INO],
    ]);
    const img = fs.lookup(ROOT_ID, 'debian.img')!;
    expect(img.attr).toMatchObject({ ino: IMAGE_INO, mode: S_IFREG | 0o444, size: 10_000, nlink: 1, uid: 0, mtimeMs: 1000 });
    expect(img.entryTimeoutMs).toBe(IMMUTABLE_TIMEOUT_MS);
    expect(img.attrTimeoutMs).toBe(IMMUTABLE_TIMEOUT_MS);
    expect(fs.lookup(ROOT_ID, '.hfk')!.attr.mode).toBe(S_IFDIR | 0o555);
    expect(fs.getattr(ROOT_ID, undefined).attr).toMatchObject({ mode: S_IFDIR | 0o555, nlink: 3 });
    expect(fs.lookup(HFK_DIR_INO, 'stats.json')!.attrTimeoutMs).toBe(0);
    expect(fs.lookup(ROOT_ID, 'other.img')).toBeUndefined();
    expect(fs.lookup(HFK_DIR_INO, 'debian.img')).toBeUndefined();
    expect(errnoOfCall(() => fs.lookup(IMAGE_INO, 'x'))).toBe(Errno.ENOTDIR);
    expect(errnoOfCall(() => fs.lookup(99, 'x'))).toBe(Errno.ENOENT);
    expect(errnoOfCall(() => fs.getattr(99, undefined))).toBe(Errno.ENOENT);
    expect(errnoOfCall(() => fs.readdir(IMAGE_INO))).toBe(Errno.ENOTDIR);
  });

  it('opens the image with KEEP_CACHE and reads through the device, clamped to its size', async () => {
    const dev = memDevice(data);
    const fs = new BlockFs({ name: 'x', device: dev });
    expect(fs.open(IMAGE_INO)).toEqual({ fh: 0, keepCache: true });
    expect((await fs.read(IMAGE_INO, 100, 50, never, 0)).equals(data.subarray(100, 150))).toBe(true);
    expect((await fs.read(IMAGE_INO, 9_990, 4096, never, 0)).equals(data.subarray(9_990))).toBe(true);
    expect((await fs.read(IMAGE_INO, 10_000, 4096, never, 0)).length).toBe(0);
    expect(dev.calls).toEqual([
      [100, 50],
      [9_990, 10],
    ]);
    expect(errnoOfCall(() => fs.open(ROOT_ID))).toBe(Errno.EISDIR);
  });

  it('renders stats.json at open, serves it with direct I/O, sizes it per handle', async () => {
    let n = 0;
    const fs = new BlockFs({ name: 'x', device: memDevice(data), stats: () => ({ reads: ++n, text: 'x'.repeat(n * 10) }) });
    const a = fs.open(STATS_INO);
    expect(a.directIo).toBe(true);
    const b = fs.open(STATS_INO);
    const textA = (await fs.read(STATS_INO, 0, 1 << 20, never, a.fh!)).toString();
    const textB = (await fs.read(STATS_INO, 0, 1 << 20, never, b.fh!)).toString();
    expect(JSON.parse(textA).reads).toBe(1);
    expect(JSON.parse(textB).reads).toBe(2);
    expect(fs.getattr(STATS_INO, a.fh).attr.size).toBe(Buffer.byteLength(textA));
    expect(fs.getattr(STATS_INO, b.fh).attr.size).toBe(Buffer.byteLength(textB));
    expect((await fs.read(STATS_INO, 5, 3, never, a.fh!)).toString()).toBe(textA.slice(5, 8));
    fs.release(STATS_INO, a.fh!);
    // A handle this reader never opened (its predecessor's, after a takeover): a fresh rendering, kept for that handle.
    const fresh = (await fs.read(STATS_INO, 0, 1 << 20, never, a.fh!)).toString();
    expect(JSON.parse(fresh).reads).toBe(3);
    expect((await fs.read(STATS_INO, 0, 1 << 20, never, a.fh!)).toString()).toBe(fresh);
    // Handles are not numbered from 1: a new reader's do not meet its predecessor's.
    expect(a.fh).toBeGreaterThan(1000);
  });

  it('reads into the caller\'s buffer when the device can', async () => {
    const plain = new BlockFs({ name: 'x', device: memDevice(data) });
    expect(plain.readInto).toBeUndefined();
    const dev = {
      ...memDevice(data),
      async readInto(dest: Buffer, offset: number) {
        return data.copy(dest, 0, offset, Math.min(data.length, offset + dest.length));
      },
    };
    const fs = new BlockFs({ name: 'x', device: dev, stats: () => ({ a: 1 }) });
    const dest = Buffer.alloc(4096);
    expect(await fs.readInto!(IMAGE_INO, 8000, dest, never, 0)).toBe(2000);
    expect(dest.subarray(0, 2000).equals(data.subarray(8000))).toBe(true);
    expect(await fs.readInto!(IMAGE_INO, 10_000, dest, never, 0)).toBe(0);
    const fh = fs.open(STATS_INO).fh!;
    const n = await fs.readInto!(STATS_INO, 0, dest, never, fh);
    expect(JSON.parse(dest.toString('utf8', 0, n))).toEqual({ a: 1 });
  });

  it('statfs, xattrs, negative entries', () => {
    const fs = new BlockFs({ name: 'x', device: memDevice(data) });
    expect(fs.negativeTimeoutMs).toBe(IMMUTABLE_TIMEOUT_MS);
    expect(fs.statfs()).toMatchObject({ blocks: 3, bsize: 4096, files: 4, bfree: 0 });
    expect(fs.getxattr()).toBeUndefined();
    expect(fs.listxattr()).toEqual([]);
  });

  it('refuses names that would not make one plain file name', () => {
    const device = memDevice(data);
    for (const name of ['', '.hidden', 'a/b', 'a b', 'x'.repeat(201)]) {
      expect(() => new BlockFs({ name, device }), name).toThrow(UsageError);
    }
    expect(new BlockFs({ name: 'debian-12.5_amd64', device }).imageName).toBe('debian-12.5_amd64.img');
  });

  it('serves the kernel through the protocol layer: LOOKUP, OPEN, READ, READDIRPLUS', async () => {
    const c = new Connection(new BlockFs({ name: 'img', device: memDevice(data) }));
    const req = (opcode: number, unique: number, nodeid: number, body: Buffer) => {
      const h = Buffer.alloc(40);
      h.writeUInt32LE(40 + body.length, 0);
      h.writeUInt32LE(opcode, 4);
      h.writeBigUInt64LE(BigInt(unique), 8);
      h.writeBigUInt64LE(BigInt(nodeid), 16);
      return Buffer.concat([h, body]);
    };
    const init = Buffer.alloc(64);
    init.writeUInt32LE(7, 0);
    init.writeUInt32LE(37, 4);
    init.writeUInt32LE(131072, 8);
    init.writeUInt32LE(0x73ff_fffb, 12);
    await c.dispatch(req(Op.INIT, 1, 0, init));
    const lookup = Buffer.concat((await c.dispatch(req(Op.LOOKUP, 2, ROOT_ID, Buffer.from('img.img\0'))))!);
    expect(lookup.readBigUInt64LE(16)).toBe(BigInt(IMAGE_INO));
    const open = Buffer.concat((await c.dispatch(req(Op.OPEN, 3, IMAGE_INO, Buffer.alloc(8))))!);
    expect(open.readUInt32LE(24) & OpenFlag.KEEP_CACHE).toBe(OpenFlag.KEEP_CACHE);
    const readIn = Buffer.alloc(40);
    readIn.writeBigUInt64LE(4096n, 8);
    readIn.writeUInt32LE(8192, 16);
    const read = (await c.dispatch(req(Op.READ, 4, IMAGE_INO, readIn)))!;
    expect(Buffer.concat(read.slice(1)).equals(data.subarray(4096, 10_000))).toBe(true);
    const dirIn = Buffer.alloc(40);
    dirIn.writeUInt32LE(4096, 16);
    const plus = Buffer.concat((await c.dispatch(req(Op.READDIRPLUS, 5, ROOT_ID, dirIn)))!);
    expect(plus.toString('latin1')).toContain('img.img');
    expect(plus.toString('latin1')).toContain('.hfk');
  });
});

describe('FileBlockDevice', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hfk-blockdev-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const data = randomBytes(300_000);
  const file = join(dir, 'image');
  writeFileSync(file, data);

  it('reads exact ranges, short only at the end', async () => {
    const dev = await FileBlockDevice.open(file);
    try {
      expect(dev.size).toBe(300_000);
      expect((await dev.read(12_345, 100_000)).equals(data.subarray(12_345, 112_345))).toBe(true);
      expect((await dev.read(299_990, 100)).equals(data.subarray(299_990))).toBe(true);
      expect((await dev.read(300_000, 100)).length).toBe(0);
      expect((await dev.read(400_000, 100)).length).toBe(0);
      const dest = Buffer.alloc(1000);
      expect(await dev.readInto(dest, 299_500)).toBe(500);
      expect(dest.subarray(0, 500).equals(data.subarray(299_500))).toBe(true);
      await expect(dev.read(-1, 10)).rejects.toThrow(RangeError);
      const ac = new AbortController();
      ac.abort();
      await expect(dev.read(0, 10, ac.signal)).rejects.toThrow(AbortedError);
    } finally {
      await dev.close();
    }
  });

  it('says which file it cannot open', async () => {
    await expect(FileBlockDevice.open(join(dir, 'missing'))).rejects.toThrow(InputError);
    await expect(FileBlockDevice.open(dir)).rejects.toThrow(/not a regular file/);
  });
});

