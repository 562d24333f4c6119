// Property tests of the FUSE request decoder: any bytes the kernel could
// hand us are answered with a well-formed reply to that request (or none,
// for the opcodes that take none); dispatch never rejects and never answers
// with a positive or unknown errno.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type FileSystem, S_IFDIR, S_IFREG } from './fs.ts';
import { Connection, Errno, Op, OPCODES, OUT_HEADER_SIZE } from './protocol.ts';

const fileAttr = (ino: number) => ({ ino, size: 5, blocks: 1, atimeMs: 0, mtimeMs: 0, ctimeMs: 0, mode: S_IFREG | 0o444, nlink: 1, uid: 0, gid: 0, rdev: 0, blksize: 4096 });

function testFs(): FileSystem {
  return {
    lookup: (parent, name) => (parent === 1 && name === 'a' ? { attr: fileAttr(2), entryTimeoutMs: 1000, attrTimeoutMs: 1000 } : undefined),
    getattr: (ino) => ({ attr: ino === 1 ? { ...fileAttr(1), mode: S_IFDIR | 0o555 } : fileAttr(ino), attrTimeoutMs: 1000 }),
    open: () => ({ fh: 1 }),
    read: (_ino, offset, size) => Buffer.from('hello').subarray(Math.min(offset, 5), Math.min(offset + size, 5)),
    readdir: () => [
      { name: '.', ino: 1, type: S_IFDIR },
      { name: 'a', ino: 2, type: S_IFREG },
    ],
    statfs: () => ({ blocks: 1, bfree: 0, bavail: 0, files: 1, ffree: 0, bsize: 4096, namelen: 255 }),
  };
}

function request(opcode: number, unique: bigint, nodeid: bigint, body: Buffer, len?: number, extlen = 0): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32LE(len ?? 40 + body.length, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(unique, 8);
  h.writeBigUInt64LE(nodeid, 16);
  h.writeUInt16LE(extlen, 36);
  return Buffer.concat([h, body]);
}

const KNOWN_ERRNOS = new Set<number>(Object.values(Errno));

async function initialized(): Promise<Connection> {
  const c = new Connection(testFs());
  const init = Buffer.alloc(64);
  init.writeUInt32LE(7, 0);
  init.writeUInt32LE(38, 4);
  init.writeUInt32LE(131072, 8);
  const reply = await c.dispatch(request(Op.INIT, 1n, 0n, init));
  expect(Buffer.concat(reply!).readInt32LE(4)).toBe(0);
  return c;
}

describe('FUSE request decoder (property)', () => {
  it('well-framed requests of any opcode and body: one reply to that request with a known errno, or none where none is due', { timeout: 30_000 }, async () => {
    const c = await initialized();
    const opcode = fc.oneof(fc.constantFrom(...OPCODES.keys()), fc.integer({ min: 0, max: 5000 }));
    await fc.assert(
      fc.asyncProperty(opcode, fc.bigInt({ min: 2n, max: (1n << 53n) - 1n }) /* unique ids are kept as numbers: exact below 2^53 (the kernel's counter) */, fc.bigInt({ min: 0n, max: 5n }), fc.uint8Array({ maxLength: 200 }), async (op, unique, nodeid, body) => {
        if (op === Op.INIT || op === Op.DESTROY) return; // they change the connection itself
        const reply = await c.dispatch(request(op, unique, nodeid, Buffer.from(body)));
        const info = OPCODES.get(op);
        if (info && !info.reply) {
          expect(reply).toBeUndefined();
          return;
        }
        expect(reply).toBeDefined();
        const bytes = Buffer.concat(reply!);
        c.release(reply!);
        expect(bytes.length).toBeGreaterThanOrEqual(OUT_HEADER_SIZE);
        expect(bytes.readUInt32LE(0)).toBe(bytes.length);
        expect(bytes.readBigUInt64LE(8)).toBe(unique);
        const errno = bytes.readInt32LE(4);
        expect(errno).toBeLessThanOrEqual(0);
        if (errno < 0) {
          expect(KNOWN_ERRNOS.has(-errno)).toBe(true);
          expect(bytes.length).toBe(OUT_HEADER_SIZE);
        }
        if (!info) expect(errno).toBe(-Errno.ENOSYS);
      }),
      { numRuns: 3000 },
    );
  });

  it('random and mis-framed bytes (wrong length fields, short headers, extension lengths): never a rejection, never a reply to another request', { timeout: 30_000 }, async () => {
    const c = await initialized();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 120 }).map((u) => Buffer.from(u)),
          fc
            .tuple(fc.constantFrom(...OPCODES.keys()), fc.uint8Array({ maxLength: 100 }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffff }))
            .filter(([op]) => op !== Op.INIT && op !== Op.DESTROY)
            .map(([op, body, len, ext]) => request(op, 77n, 1n, Buffer.from(body), len % 3 === 0 ? undefined : len, ext % 4 === 0 ? ext : 0)),
        ),
        async (bytes) => {
          if (bytes.length >= 8 && (bytes.readUInt32LE(4) === Op.INIT || bytes.readUInt32LE(4) === Op.DESTROY)) return;
          const reply = await c.dispatch(bytes);
          if (reply === undefined) return;
          const out = Buffer.concat(reply);
          c.release(reply);
          expect(out.readUInt32LE(0)).toBe(out.length);
          expect(out.readBigUInt64LE(8)).toBe(bytes.readBigUInt64LE(8));
          expect(out.readInt32LE(4)).toBeLessThanOrEqual(0);
        },
      ),
      { numRuns: 3000 },
    );
  });
});
