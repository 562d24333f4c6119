import { randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { AbortedError, BrokenError, InvalidError, MissingError } from '../errors.ts';
import { FuseErrnoError, FuseProtocolError } from './errors.ts';
import { type Entry, type FileSystem, S_IFDIR, S_IFLNK, S_IFREG } from './fs.ts';
import {
  Connection,
  decodeInHeader,
  direntplusSize,
  direntSize,
  encodeNotifyRetrieve,
  Errno,
  errnoOf,
  FUSE_KERNEL_MINOR_VERSION,
  type InitIn,
  InitFlag,
  negotiateInit,
  Op,
  OPCODES,
  OpenFlag,
  packDirents,
  resolveProtocolOptions,
} from './protocol.ts';

// ---------------------------------------------------------------------------
// Helpers: build requests the way the kernel does, split replies.

function request(opcode: number, unique: number, nodeid: number, body: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32LE(40 + body.length, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(BigInt(unique), 8);
  h.writeBigUInt64LE(BigInt(nodeid), 16);
  h.writeUInt32LE(1000, 24); // uid
  h.writeUInt32LE(1000, 28); // gid
  h.writeUInt32LE(4242, 32); // pid
  return Buffer.concat([h, body]);
}

function u32s(...v: number[]): Buffer {
  const b = Buffer.alloc(v.length * 4);
  v.forEach((x, i) => b.writeUInt32LE(x >>> 0, i * 4));
  return b;
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

function initBody(major: number, minor: number, flags: number, flags2 = 0, maxReadahead = 131072): Buffer {
  // Kernels before 7.36 send the 16-byte struct; newer ones 64 bytes.
  return minor >= 36 ? Buffer.concat([u32s(major, minor, maxReadahead, flags, flags2), Buffer.alloc(44)]) : u32s(major, minor, maxReadahead, flags);
}

function readIn(fh: number, offset: number, size: number): Buffer {
  return Buffer.concat([u64(fh), u64(offset), u32s(size, 0), u64(0), u32s(0, 0)]);
}

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`);
}

interface Parsed {
  len: number;
  error: number;
  unique: bigint;
  body: Buffer;
}

function parse(reply: Buffer[] | undefined): Parsed {
  expect(reply).toBeDefined();
  const all = Buffer.concat(reply!);
  expect(all.readUInt32LE(0)).toBe(all.length);
  return { len: all.readUInt32LE(0), error: all.readInt32LE(4), unique: all.readBigUInt64LE(8), body: all.subarray(16) };
}

/** Linux 6.1 (Debian 12, protocol 7.37) offers these INIT flags. */
const FLAGS_6_1 = 0x73ff_fffb;
/** Linux 6.18 (protocol 7.45): the same low word, and bits in flags2. */
const FLAGS2_6_18 = 0x5fd;
/** A kernel from before MAX_PAGES (7.28) and INIT_EXT: bits 0–21 minus FILE_OPS. */
const FLAGS_OLD = 0x003f_fffb;

const T0 = Date.UTC(2024, 0, 2, 3, 4, 5, 678);

function fileAttr(ino: number, size: number) {
  return { ino, mode: S_IFREG | 0o444, size, nlink: 1, uid: 0, gid: 0, mtimeMs: T0, blksize: 4096 };
}

/** A small fs: / with a.txt (ino 2, "hello"), d/ (ino 3), link (ino 4 → a.txt). */
function testFs(over: Partial<FileSystem> = {}): FileSystem {
  const entries: Record<string, Entry> = {
    'a.txt': { attr: fileAttr(2, 5), entryTimeoutMs: 1500, attrTimeoutMs: 2000 },
    d: { attr: { ...fileAttr(3, 0), mode: S_IFDIR | 0o555, nlink: 2 }, entryTimeoutMs: 1000, attrTimeoutMs: 1000 },
    link: { attr: { ...fileAttr(4, 5), mode: S_IFLNK | 0o777 }, entryTimeoutMs: 1000, attrTimeoutMs: 1000 },
  };
  return {
    lookup: (parent, name) => (parent === 1 ? entries[name] : undefined),
    getattr: (ino) => ({ attr: ino === 1 ? { ...fileAttr(1, 0), mode: S_IFDIR | 0o555 } : fileAttr(ino, 5), attrTimeoutMs: 60_000 }),
    open: () => ({ fh: 7, keepCache: true }),
    read: (_ino, offset, size) => Buffer.from('hello').subarray(offset, offset + size),
    readdir: () => [
      { name: '.', ino: 1, type: S_IFDIR },
      { name: '..', ino: 1, type: S_IFDIR },
      { name: 'a.txt', ino: 2, type: S_IFREG },
      { name: 'd', ino: 3, type: S_IFDIR },
      { name: 'link', ino: 4, type: S_IFLNK },
    ],
    statfs: () => ({ blocks: 100, bfree: 0, bavail: 0, files: 4, ffree: 0, bsize: 4096, namelen: 255 }),
    readlink: () => 'a.txt',
    getxattr: (_ino, name) => (name === 'user.k' ? Buffer.from('value') : undefined),
    listxattr: () => ['user.k', 'user.other'],
    ...over,
  };
}

async function initialized(fs: FileSystem = testFs(), options = {}): Promise<Connection> {
  const c = new Connection(fs, options);
  const r = parse(await c.dispatch(request(Op.INIT, 1, 0, initBody(7, 37, FLAGS_6_1, 1))));
  expect(r.error).toBe(0);
  return c;
}

// ---------------------------------------------------------------------------

describe('opcode table', () => {
  it('marks the requests the kernel expects no answer to', () => {
    const silent = [...OPCODES].filter(([, info]) => !info.reply).map(([op]) => op).sort((a, b) => a - b);
    expect(silent).toEqual([Op.FORGET, Op.INTERRUPT, Op.NOTIFY_REPLY, Op.BATCH_FORGET]);
  });

  it('knows the fixed input sizes of the requests a read-only fs serves', () => {
    expect(OPCODES.get(Op.INIT)!.inSize).toBe(16);
    expect(OPCODES.get(Op.READ)!.inSize).toBe(40);
    expect(OPCODES.get(Op.READDIRPLUS)!.inSize).toBe(40);
    expect(OPCODES.get(Op.GETATTR)!.inSize).toBe(16);
    expect(OPCODES.get(Op.RELEASE)!.inSize).toBe(24);
    expect(OPCODES.get(Op.FORGET)!.inSize).toBe(8);
    expect(OPCODES.get(Op.GETXATTR)!.inSize).toBe(8);
  });
});

describe('INIT negotiation', () => {
  it('answers Linux 6.1 (7.37) with golden bytes', async () => {
    const c = new Connection(testFs());
    const golden = Buffer.from(
      '50000000000000000100000000000000' + // out header: len 80, error 0, unique 1
        '07000000' + '25000000' + '00000200' + '01a0c440' + // 7.37, readahead 128 KiB, flags
        '4000' + '3000' + '00100000' + '01000000' + // max_background 64, congestion 48, max_write 4096, time_gran 1
        '0001' + '0000' + '00000000' + '00'.repeat(28), // max_pages 256, map_alignment, flags2, unused
      'hex',
    );
    const reply = Buffer.concat((await c.dispatch(request(Op.INIT, 1, 0, initBody(7, 37, FLAGS_6_1, 1))))!);
    expect(reply.toString('hex')).toBe(golden.toString('hex'));
    const n = c.negotiated!;
    expect(n.minor).toBe(37);
    expect(n.flags).toBe(
      InitFlag.ASYNC_READ | InitFlag.DO_READDIRPLUS | InitFlag.ASYNC_DIO | InitFlag.PARALLEL_DIROPS | InitFlag.MAX_PAGES | InitFlag.CACHE_SYMLINKS | InitFlag.INIT_EXT,
    );
  });

  it('never asks for what an immutable read-only image must not have', () => {
    const { negotiated: n } = negotiateInit({ major: 7, minor: 45, maxReadahead: 131072, flags: FLAGS_6_1, flags2: FLAGS2_6_18 }) as {
      negotiated: { flags: number; flags2: number };
    };
    for (const f of [
      InitFlag.AUTO_INVAL_DATA,
      InitFlag.ATOMIC_O_TRUNC,
      InitFlag.BIG_WRITES,
      InitFlag.WRITEBACK_CACHE,
      InitFlag.NO_OPENDIR_SUPPORT,
      InitFlag.NO_OPEN_SUPPORT,
      InitFlag.POSIX_LOCKS,
      InitFlag.ABORT_ERROR,
      InitFlag.EXPLICIT_INVAL_DATA,
    ]) {
      expect(n.flags & f).toBe(0);
    }
    expect(n.flags2).toBe(0);
  });

  it('serves a new kernel (7.45, Linux 6.18) at our minor, handling flags2', () => {
    const out = negotiateInit({ major: 7, minor: 45, maxReadahead: 131072, flags: FLAGS_6_1, flags2: FLAGS2_6_18 });
    expect(out.action).toBe('accept');
    if (out.action !== 'accept') return;
    expect(out.negotiated.minor).toBe(FUSE_KERNEL_MINOR_VERSION);
    expect(out.negotiated.flags & InitFlag.INIT_EXT).toBe(InitFlag.INIT_EXT);
    expect(out.negotiated.maxPages).toBe(256);
    expect(out.reply.length).toBe(64);
    expect(out.reply.readUInt32LE(4)).toBe(FUSE_KERNEL_MINOR_VERSION);
    expect(out.reply.readUInt16LE(28)).toBe(256);
  });

  it('serves 7.26 (Linux 4.15): full init_out, no MAX_PAGES, no INIT_EXT', () => {
    const out = negotiateInit({ major: 7, minor: 26, maxReadahead: 131072, flags: FLAGS_OLD, flags2: 0 });
    if (out.action !== 'accept') throw new Error('expected accept');
    expect(out.negotiated.minor).toBe(26);
    expect(out.negotiated.flags & (InitFlag.MAX_PAGES | InitFlag.INIT_EXT)).toBe(0);
    expect(out.negotiated.maxPages).toBe(0);
    expect(out.negotiated.flags & InitFlag.ASYNC_READ).toBe(InitFlag.ASYNC_READ);
    expect(out.reply.length).toBe(64);
  });

  it('serves 7.19 (Linux 3.2) with the 24-byte init_out of that time', async () => {
    const c = new Connection(testFs());
    const r = parse(await c.dispatch(request(Op.INIT, 3, 0, initBody(7, 19, FLAGS_OLD & 0x7fff))));
    expect(r.error).toBe(0);
    expect(r.body.length).toBe(24);
    expect(r.body.readUInt32LE(4)).toBe(19);
    expect(c.negotiated!.flags & InitFlag.PARALLEL_DIROPS).toBe(0); // not offered before 7.25
  });

  it('does not read flags2 unless the kernel sets INIT_EXT at 7.36+', () => {
    const withoutExt = negotiateInit({ major: 7, minor: 37, maxReadahead: 4096, flags: FLAGS_6_1 & ~InitFlag.INIT_EXT, flags2: 0xffff });
    if (withoutExt.action !== 'accept') throw new Error('expected accept');
    expect(withoutExt.negotiated.flags & InitFlag.INIT_EXT).toBe(0);
    expect(withoutExt.negotiated.flags2).toBe(0);
  });

  it('takes the smaller readahead and drops READDIRPLUS when told to', () => {
    const out = negotiateInit({ major: 7, minor: 37, maxReadahead: 4 << 20, flags: FLAGS_6_1, flags2: 0 }, { readdirplus: false, maxReadahead: 65536 });
    if (out.action !== 'accept') throw new Error('expected accept');
    expect(out.negotiated.maxReadahead).toBe(65536);
    expect(out.negotiated.flags & InitFlag.DO_READDIRPLUS).toBe(0);
  });

  it('answers a newer major with our major only, then accepts the retry', async () => {
    const c = new Connection(testFs());
    const r = parse(await c.dispatch(request(Op.INIT, 1, 0, initBody(8, 1, 0xffff_ffff))));
    expect(r.error).toBe(0);
    expect(r.body.length).toBe(8);
    expect(r.body.readUInt32LE(0)).toBe(7);
    expect(c.negotiated).toBeUndefined();
    parse(await c.dispatch(request(Op.INIT, 2, 0, initBody(7, 37, FLAGS_6_1))));
    expect(c.negotiated?.minor).toBe(37);
  });

  it('refuses an older major or a minor below 7.13 with EPROTO and a typed error', async () => {
    for (const [major, minor] of [
      [6, 99],
      [7, 12],
    ] as const) {
      const onInit = vi.fn();
      const c = new Connection(testFs(), {}, { onInit });
      const r = parse(await c.dispatch(request(Op.INIT, 1, 0, initBody(major, minor, FLAGS_OLD))));
      expect(r.error).toBe(-Errno.EPROTO);
      expect(onInit.mock.calls[0]![0]).toBeInstanceOf(FuseProtocolError);
      expect(c.negotiated).toBeUndefined();
      expect(c.initRefused).toBe(true);
      expect(() => negotiateInit({ major, minor, maxReadahead: 0, flags: 0, flags2: 0 } satisfies InitIn)).toThrow(/expected/);
    }
  });

  it('validates options eagerly', () => {
    expect(() => resolveProtocolOptions({ maxPages: 0 })).toThrow(/maxPages must be an integer in \[1, 256\]: got 0/);
    expect(() => resolveProtocolOptions({ maxPages: 257 })).toThrow(/got 257/);
    expect(() => resolveProtocolOptions({ maxWrite: 1 << 20 })).toThrow(/maxWrite/);
    expect(() => resolveProtocolOptions({ maxBackground: 10, congestionThreshold: 11 })).toThrow(/congestionThreshold/);
    expect(resolveProtocolOptions({ maxBackground: 64 }).congestionThreshold).toBe(48);
  });
});

describe('dispatch', () => {
  it('answers EIO before INIT', async () => {
    const c = new Connection(testFs());
    expect(parse(await c.dispatch(request(Op.GETATTR, 5, 1, Buffer.alloc(16)))).error).toBe(-Errno.EIO);
  });

  it('answers unknown and unsupported opcodes with ENOSYS, never EPERM', async () => {
    const c = await initialized();
    for (const opcode of [9999, Op.STATX, Op.GETLK, Op.BMAP, Op.IOCTL, Op.POLL, Op.LSEEK, 7, 19]) {
      const r = parse(await c.dispatch(request(opcode, 10 + opcode, 1, Buffer.alloc(64))));
      expect(r.error, `opcode ${opcode}`).toBe(-Errno.ENOSYS);
      expect(r.unique).toBe(BigInt(10 + opcode));
    }
  });

  it('answers every request that would write with EROFS', async () => {
    const c = await initialized();
    const writes = [...OPCODES].filter(([, i]) => i.kind === 'read-only').map(([op]) => op);
    expect(writes.length).toBe(16);
    for (const opcode of writes) {
      expect(parse(await c.dispatch(request(opcode, 2, 1, Buffer.alloc(96)))).error, OPCODES.get(opcode)!.name).toBe(-Errno.EROFS);
    }
    // Opening for writing too.
    expect(parse(await c.dispatch(request(Op.OPEN, 3, 2, u32s(1, 0)))).error).toBe(-Errno.EROFS);
    expect(parse(await c.dispatch(request(Op.OPEN, 4, 2, u32s(2, 0)))).error).toBe(-Errno.EROFS);
    expect(parse(await c.dispatch(request(Op.ACCESS, 5, 2, u32s(2, 0)))).error).toBe(-Errno.EROFS);
    expect(parse(await c.dispatch(request(Op.ACCESS, 6, 2, u32s(4, 0)))).error).toBe(0); // R_OK
    expect(parse(await c.dispatch(request(Op.ACCESS, 7, 2, u32s(1, 0)))).error).toBe(-Errno.EACCES); // X_OK on 0444
    expect(parse(await c.dispatch(request(Op.ACCESS, 8, 1, u32s(1, 0)))).error).toBe(0); // X_OK on a 0555 folder
  });

  it('sends nothing for FORGET and BATCH_FORGET and tells the fs', async () => {
    const forget = vi.fn();
    const c = await initialized(testFs({ forget }));
    expect(await c.dispatch(request(Op.FORGET, 7, 2, u64(3)))).toBeUndefined();
    const batch = Buffer.concat([u32s(2, 0), u64(2), u64(1), u64(3), u64(5)]);
    expect(await c.dispatch(request(Op.BATCH_FORGET, 8, 0, batch))).toBeUndefined();
    expect(forget.mock.calls).toEqual([
      [2, 3],
      [2, 1],
      [3, 5],
    ]);
  });

  it('tracks which regular files the kernel holds, for NOTIFY_RETRIEVE', async () => {
    const c = await initialized();
    expect(c.cachedFileId).toBeUndefined();
    await c.dispatch(request(Op.LOOKUP, 50, 1, cstr('d'))); // a folder: not a candidate
    expect(c.cachedFileId).toBeUndefined();
    await c.dispatch(request(Op.LOOKUP, 51, 1, cstr('a.txt')));
    await c.dispatch(request(Op.LOOKUP, 52, 1, cstr('a.txt')));
    expect(c.cachedFileId).toBe(2);
    await c.dispatch(request(Op.FORGET, 53, 2, u64(1)));
    expect(c.cachedFileId).toBe(2);
    await c.dispatch(request(Op.BATCH_FORGET, 54, 0, Buffer.concat([u32s(1, 0), u64(2), u64(1)])));
    expect(c.cachedFileId).toBeUndefined();
    await c.dispatch(request(Op.READDIRPLUS, 55, 1, readIn(0, 0, 4096)));
    expect(c.cachedFileId).toBe(2);
  });

  it('LOOKUP: entry_out with timeouts and attributes; ENOENT or a cached negative entry', async () => {
    const c = await initialized();
    const r = parse(await c.dispatch(request(Op.LOOKUP, 9, 1, cstr('a.txt'))));
    expect(r.error).toBe(0);
    expect(r.body.length).toBe(128);
    const b = r.body;
    expect(b.readBigUInt64LE(0)).toBe(2n); // nodeid
    expect(b.readBigUInt64LE(16)).toBe(1n); // entry_valid 1.5 s
    expect(b.readUInt32LE(32)).toBe(500_000_000);
    expect(b.readBigUInt64LE(24)).toBe(2n); // attr_valid 2 s
    expect(b.readUInt32LE(36)).toBe(0);
    const a = b.subarray(40);
    expect(a.readBigUInt64LE(0)).toBe(2n); // ino
    expect(a.readBigUInt64LE(8)).toBe(5n); // size
    expect(a.readBigUInt64LE(16)).toBe(1n); // 512-byte blocks
    expect(a.readBigUInt64LE(32)).toBe(BigInt(Math.floor(T0 / 1000))); // mtime
    expect(a.readUInt32LE(52)).toBe(678_000_000); // mtimensec
    expect(a.readUInt32LE(60)).toBe(S_IFREG | 0o444);
    expect(a.readUInt32LE(64)).toBe(1); // nlink
    expect(a.readUInt32LE(80)).toBe(4096); // blksize

    expect(parse(await c.dispatch(request(Op.LOOKUP, 10, 1, cstr('nope')))).error).toBe(-Errno.ENOENT);
    const neg = await initialized({ ...testFs(), negativeTimeoutMs: 30_000 });
    const n = parse(await neg.dispatch(request(Op.LOOKUP, 11, 1, cstr('nope'))));
    expect(n.error).toBe(0);
    expect(n.body.readBigUInt64LE(0)).toBe(0n);
    expect(n.body.readBigUInt64LE(16)).toBe(30n);
  });

  it('GETATTR passes the file handle only when the kernel flags it', async () => {
    const getattr = vi.fn(() => ({ attr: fileAttr(2, 5), attrTimeoutMs: 0 }));
    const c = await initialized(testFs({ getattr }));
    const r = parse(await c.dispatch(request(Op.GETATTR, 12, 2, Buffer.concat([u32s(0, 0), u64(99)]))));
    expect(r.body.length).toBe(104);
    expect(r.body.readBigUInt64LE(0)).toBe(0n);
    await c.dispatch(request(Op.GETATTR, 13, 2, Buffer.concat([u32s(1, 0), u64(99)])));
    expect(getattr.mock.calls.map((call) => (call as unknown[])[1])).toEqual([undefined, 99]);
  });

  it('OPEN and OPENDIR: handle and cache flags; NOFLUSH for files', async () => {
    const c = await initialized(testFs({ opendir: () => ({ fh: 3, cacheDir: true, keepCache: true }) }));
    const r = parse(await c.dispatch(request(Op.OPEN, 14, 2, u32s(0x8000, 0))));
    expect(r.body.readBigUInt64LE(0)).toBe(7n);
    expect(r.body.readUInt32LE(8)).toBe(OpenFlag.KEEP_CACHE | OpenFlag.NOFLUSH);
    const d = parse(await c.dispatch(request(Op.OPENDIR, 15, 1, u32s(0, 0))));
    expect(d.body.readBigUInt64LE(0)).toBe(3n);
    expect(d.body.readUInt32LE(8)).toBe(OpenFlag.CACHE_DIR | OpenFlag.KEEP_CACHE);
    const plain = await initialized();
    expect(parse(await plain.dispatch(request(Op.OPENDIR, 16, 1, u32s(0, 0)))).body.readUInt32LE(8)).toBe(0);
  });

  it('READ: the filesystem buffer goes out as its own iovec, short at end of file', async () => {
    const data = Buffer.from('0123456789');
    const c = await initialized(testFs({ read: (_i, off, size) => data.subarray(off, off + size) }));
    const reply = (await c.dispatch(request(Op.READ, 17, 2, readIn(7, 2, 4))))!;
    expect(reply.length).toBe(2);
    expect(reply[1]!.buffer).toBe(data.buffer); // no copy
    expect(reply[1]!.toString()).toBe('2345');
    expect(reply[0]!.readUInt32LE(0)).toBe(20);
    expect(parse(await c.dispatch(request(Op.READ, 18, 2, readIn(7, 8, 4)))).body.toString()).toBe('89');
    const eof = (await c.dispatch(request(Op.READ, 19, 2, readIn(7, 10, 4))))!;
    expect(eof.length).toBe(1);
    expect(eof[0]!.readUInt32LE(0)).toBe(16);
  });

  it('READ: a filesystem that returns too much is an EIO, not a malformed reply', async () => {
    const onFsError = vi.fn();
    const c = new Connection(testFs({ read: () => Buffer.alloc(100) }), {}, { onFsError });
    await c.dispatch(request(Op.INIT, 1, 0, initBody(7, 37, FLAGS_6_1)));
    expect(parse(await c.dispatch(request(Op.READ, 20, 2, readIn(0, 0, 10)))).error).toBe(-Errno.EIO);
    expect(onFsError).toHaveBeenCalledOnce();
  });

  it('READ through readInto: large reads reuse buffers once the reply is released', async () => {
    const data = randomBytes(1 << 20);
    const c = await initialized(
      testFs({
        readInto: async (_i, off, dest) => data.copy(dest, 0, off, Math.min(data.length, off + dest.length)),
      }),
    );
    const first = (await c.dispatch(request(Op.READ, 60, 2, readIn(0, 0, 1 << 20))))!;
    expect(first[1]!.equals(data)).toBe(true);
    // Not released yet: the next READ must not get the same memory.
    const second = (await c.dispatch(request(Op.READ, 61, 2, readIn(0, 0, 1 << 20))))!;
    expect(second[1]!.buffer).not.toBe(first[1]!.buffer);
    c.release(first);
    const third = (await c.dispatch(request(Op.READ, 62, 2, readIn(0, 512 * 1024, 1 << 20))))!;
    expect(third[1]!.buffer).toBe(first[1]!.buffer);
    expect(third[1]!.equals(data.subarray(512 * 1024))).toBe(true); // short at end of file
    expect(third[0]!.readUInt32LE(0)).toBe(16 + 512 * 1024);
    // Small reads and end of file.
    expect(parse(await c.dispatch(request(Op.READ, 63, 2, readIn(0, 10, 5)))).body.equals(data.subarray(10, 15))).toBe(true);
    expect(parse(await c.dispatch(request(Op.READ, 64, 2, readIn(0, 1 << 20, 4096)))).len).toBe(16);
  });

  it('READ through readInto: a count beyond the request is EIO', async () => {
    const c = await initialized(testFs({ readInto: async () => 99 }));
    expect(parse(await c.dispatch(request(Op.READ, 65, 2, readIn(0, 0, 10)))).error).toBe(-Errno.EIO);
  });

  it('INTERRUPT aborts the read it names: EINTR for it, no reply to the INTERRUPT', async () => {
    let seen: AbortSignal | undefined;
    const c = await initialized(
      testFs({
        read: (_i, _o, _s, signal) =>
          new Promise<Buffer>((_resolve, reject) => {
            seen = signal;
            signal.addEventListener('abort', () => reject(signal.reason));
          }),
      }),
    );
    const pending = c.dispatch(request(Op.READ, 100, 2, readIn(0, 0, 4096)));
    expect(c.inFlight).toBe(1);
    expect(await c.dispatch(request(Op.INTERRUPT, 101, 0, u64(100)))).toBeUndefined();
    expect(seen?.aborted).toBe(true);
    expect(parse(await pending).error).toBe(-Errno.EINTR);
    expect(c.inFlight).toBe(0);
    // An INTERRUPT for a request already answered is ignored.
    expect(await c.dispatch(request(Op.INTERRUPT, 103, 0, u64(100)))).toBeUndefined();
  });

  it('READDIR: 8-byte aligned dirents, paged by the offset of the last one', async () => {
    const c = await initialized();
    const first = parse(await c.dispatch(request(Op.READDIR, 21, 1, readIn(0, 0, 4096)))).body;
    const names: string[] = [];
    let pos = 0;
    let lastOff = 0n;
    while (pos < first.length) {
      const namelen = first.readUInt32LE(pos + 16);
      names.push(first.toString('utf8', pos + 24, pos + 24 + namelen));
      lastOff = first.readBigUInt64LE(pos + 8);
      pos += direntSize(namelen);
      expect(pos % 8).toBe(0);
    }
    expect(names).toEqual(['.', '..', 'a.txt', 'd', 'link']);
    expect(lastOff).toBe(5n);
    // Type in DT_* form: a.txt is DT_REG (8), d is DT_DIR (4), link DT_LNK (10).
    expect(first.readUInt32LE(direntSize(1) * 2 + 20)).toBe(8);
    // A buffer for two entries only, then continue from offset 2.
    const two = parse(await c.dispatch(request(Op.READDIR, 22, 1, readIn(0, 0, direntSize(1) + direntSize(2))))).body;
    expect(two.length).toBe(64); // "." and ".." take 32 bytes each (24 + name, padded to 8)
    const rest = parse(await c.dispatch(request(Op.READDIR, 23, 1, readIn(0, 2, 4096)))).body;
    expect(rest.toString('utf8', 24, 29)).toBe('a.txt');
    expect(rest.readBigUInt64LE(8)).toBe(3n);
    expect(parse(await c.dispatch(request(Op.READDIR, 24, 1, readIn(0, 5, 4096)))).body.length).toBe(0);
  });

  it('packs golden dirent bytes', () => {
    const b = packDirents([{ name: 'ab', ino: 9, type: S_IFREG }], 0, 4096);
    expect(b.toString('hex')).toBe('0900000000000000' + '0100000000000000' + '02000000' + '08000000' + '6162' + '000000000000');
  });

  it('READDIRPLUS: entry before each dirent, nodeid 0 for . and .., lookups only for what fits', async () => {
    const lookup = vi.fn(testFs().lookup);
    const c = await initialized(testFs({ lookup }));
    const size = direntplusSize(1) + direntplusSize(2) + direntplusSize(5);
    const b = parse(await c.dispatch(request(Op.READDIRPLUS, 25, 1, readIn(0, 0, size)))).body;
    expect(b.length).toBe(size);
    expect(b.readBigUInt64LE(0)).toBe(0n); // "." carries no entry
    const third = direntplusSize(1) + direntplusSize(2);
    expect(b.readBigUInt64LE(third)).toBe(2n); // a.txt's nodeid
    expect(b.readUInt32LE(third + 40 + 60)).toBe(S_IFREG | 0o444);
    expect(b.toString('utf8', third + 128 + 24, third + 128 + 29)).toBe('a.txt');
    expect(b.readBigUInt64LE(third + 128 + 8)).toBe(3n); // off
    expect(lookup.mock.calls.map((call) => call[1])).toEqual(['a.txt']);
  });

  it('GETXATTR and LISTXATTR: size queries, ERANGE, ENODATA; ENOSYS without support', async () => {
    const c = await initialized();
    const size = parse(await c.dispatch(request(Op.GETXATTR, 26, 2, Buffer.concat([u32s(0, 0), cstr('user.k')]))));
    expect(size.body.length).toBe(8);
    expect(size.body.readUInt32LE(0)).toBe(5);
    expect(parse(await c.dispatch(request(Op.GETXATTR, 27, 2, Buffer.concat([u32s(64, 0), cstr('user.k')])))).body.toString()).toBe('value');
    expect(parse(await c.dispatch(request(Op.GETXATTR, 28, 2, Buffer.concat([u32s(2, 0), cstr('user.k')])))).error).toBe(-Errno.ERANGE);
    expect(parse(await c.dispatch(request(Op.GETXATTR, 29, 2, Buffer.concat([u32s(64, 0), cstr('user.x')])))).error).toBe(-Errno.ENODATA);
    expect(parse(await c.dispatch(request(Op.LISTXATTR, 30, 2, u32s(0, 0)))).body.readUInt32LE(0)).toBe(18);
    expect(parse(await c.dispatch(request(Op.LISTXATTR, 31, 2, u32s(100, 0)))).body.toString()).toBe('user.k\0user.other\0');
    expect(parse(await c.dispatch(request(Op.LISTXATTR, 32, 2, u32s(4, 0)))).error).toBe(-Errno.ERANGE);
    const bare = await initialized(testFs({ getxattr: undefined, listxattr: undefined, readlink: undefined }));
    expect(parse(await bare.dispatch(request(Op.GETXATTR, 33, 2, Buffer.concat([u32s(0, 0), cstr('a')])))).error).toBe(-Errno.ENOSYS);
    expect(parse(await bare.dispatch(request(Op.LISTXATTR, 34, 2, u32s(0, 0)))).error).toBe(-Errno.ENOSYS);
    expect(parse(await bare.dispatch(request(Op.READLINK, 35, 4))).error).toBe(-Errno.ENOSYS);
  });

  it('READLINK, STATFS, RELEASE, FLUSH, FSYNC', async () => {
    const release = vi.fn();
    const c = await initialized(testFs({ release }));
    expect(parse(await c.dispatch(request(Op.READLINK, 36, 4))).body.toString()).toBe('a.txt');
    const s = parse(await c.dispatch(request(Op.STATFS, 37, 1))).body;
    expect(s.length).toBe(80);
    expect(s.readBigUInt64LE(0)).toBe(100n);
    expect(s.readUInt32LE(40)).toBe(4096);
    expect(s.readUInt32LE(44)).toBe(255);
    expect(parse(await c.dispatch(request(Op.RELEASE, 38, 2, Buffer.concat([u64(7), u32s(0, 0), u64(0)])))).len).toBe(16);
    expect(release).toHaveBeenCalledWith(2, 7);
    expect(parse(await c.dispatch(request(Op.FLUSH, 39, 2, Buffer.alloc(24)))).error).toBe(0);
    expect(parse(await c.dispatch(request(Op.FSYNC, 40, 2, Buffer.alloc(16)))).error).toBe(0);
  });

  // Golden cases of errnoOf: only what hfk raises on purpose keeps its errno.
  const nodeError = (code: string) => Object.assign(new Error(`connect ${code} 10.0.2.2:8080`), { code });
  const ERRNO_CASES: Array<[string, unknown, number]> = [
    ['FuseErrnoError ENOENT (a missing name)', new FuseErrnoError(Errno.ENOENT, 'gone'), Errno.ENOENT],
    ['FuseErrnoError ERANGE', new FuseErrnoError(Errno.ERANGE, 'x'), Errno.ERANGE],
    ['FuseErrnoError with a negative errno', new FuseErrnoError(-3, 'bad errno'), Errno.EIO],
    ['FuseErrnoError with an errno beyond 4095', new FuseErrnoError(5000, 'bad errno'), Errno.EIO],
    ['AbortedError (an interrupt)', new AbortedError('request interrupted by the kernel'), Errno.EINTR],
    ['BrokenError from a fetch', new BrokenError('http://m/', 'connection refused'), Errno.EIO],
    ['InvalidError from a fetch', new InvalidError('http://m/', 'hash mismatch'), Errno.EIO],
    ['MissingError from a fetch', new MissingError('http://m/', 'not there'), Errno.EIO],
    ["a fetch's Error with code ECONNREFUSED", nodeError('ECONNREFUSED'), Errno.EIO],
    ["a fetch's Error with code ENOENT", nodeError('ENOENT'), Errno.EIO],
    ['an Error with code EACCES', nodeError('EACCES'), Errno.EIO],
    ['an Error with code E_MISSING', nodeError('E_MISSING'), Errno.EIO],
    ["a DOMException AbortError (not hfk's)", new DOMException('stop', 'AbortError'), Errno.EIO],
    ['FuseProtocolError', new FuseProtocolError('bad bytes'), Errno.EIO],
    ['a plain Error', new Error('boom'), Errno.EIO],
    ['a string', 'a string', Errno.EIO],
    ['undefined', undefined, Errno.EIO],
  ];

  it.each(ERRNO_CASES)('errnoOf: %s', (_name, error, errno) => {
    expect(errnoOf(error)).toBe(errno);
  });

  it.each(ERRNO_CASES)('a filesystem that throws %s is answered with the same errno', async (_name, error, errno) => {
    const onFsError = vi.fn();
    const c = new Connection(testFs({ getattr: () => Promise.reject(error), read: () => Promise.reject(error) }), {}, { onFsError });
    await c.dispatch(request(Op.INIT, 1, 0, initBody(7, 37, FLAGS_6_1)));
    expect(parse(await c.dispatch(request(Op.GETATTR, 41, 2, Buffer.alloc(16)))).error).toBe(-errno);
    expect(parse(await c.dispatch(request(Op.READ, 42, 2, readIn(0, 0, 4096)))).error).toBe(-errno);
    // Reported unless it was a deliberate errno.
    expect(onFsError).toHaveBeenCalledTimes(error instanceof FuseErrnoError ? 0 : 2);
  });

  it('an interrupted READ is EINTR even when the cancelled fetch fails with something else', async () => {
    const c = await initialized(
      testFs({
        read: (_i, _o, _s, signal) =>
          new Promise<Buffer>((_resolve, reject) => {
            signal.addEventListener('abort', () => reject(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })));
          }),
      }),
    );
    const pending = c.dispatch(request(Op.READ, 110, 2, readIn(0, 0, 4096)));
    await c.dispatch(request(Op.INTERRUPT, 111, 0, u64(110)));
    expect(parse(await pending).error).toBe(-Errno.EINTR);
  });

  it('answers malformed requests with EIO and reports them', async () => {
    const onProtocolError = vi.fn();
    const c = new Connection(testFs(), {}, { onProtocolError });
    await c.dispatch(request(Op.INIT, 1, 0, initBody(7, 37, FLAGS_6_1)));
    const lying = request(Op.GETATTR, 42, 1, Buffer.alloc(16));
    lying.writeUInt32LE(1000, 0);
    expect(parse(await c.dispatch(lying)).error).toBe(-Errno.EIO);
    expect(parse(await c.dispatch(request(Op.READ, 43, 2, Buffer.alloc(8)))).error).toBe(-Errno.EIO);
    expect(await c.dispatch(Buffer.alloc(10))).toBeUndefined();
    expect(onProtocolError).toHaveBeenCalledTimes(3);
    expect(onProtocolError.mock.calls[1]![0].message).toMatch(/READ request body is 8 bytes, expected at least 40/);
  });

  it('DESTROY: answered, the fs told, the connection marked', async () => {
    const destroy = vi.fn();
    const c = await initialized(testFs({ destroy }));
    expect(parse(await c.dispatch(request(Op.DESTROY, 44, 0))).error).toBe(0);
    expect(destroy).toHaveBeenCalledOnce();
    expect(c.destroyed).toBe(true);
  });

  it('decodes the request header', () => {
    const h = decodeInHeader(request(Op.LOOKUP, 2 ** 40 + 3, 77, cstr('x')));
    expect(h).toEqual({ len: 42, opcode: Op.LOOKUP, unique: 2 ** 40 + 3, nodeid: 77, uid: 1000, gid: 1000, pid: 4242, totalExtlen: 0 });
  });
});

describe('notifications', () => {
  it('encodes NOTIFY_RETRIEVE (the reader wake-up)', () => {
    const b = encodeNotifyRetrieve(0, 1, 0, 0);
    expect(b.toString('hex')).toBe('30000000' + '05000000' + '0000000000000000' + '0000000000000000' + '0100000000000000' + '0000000000000000' + '00000000' + '00000000');
  });
});
