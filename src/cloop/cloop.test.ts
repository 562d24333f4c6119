import { openSync, closeSync, readSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { FormatError } from '../errors.ts';
import { inflateCloopBlock, parseCloopHeader, parseCloopOffsets, type ReadAt, readCloopIndex } from './cloop.ts';
import { buildCloop, memoryReader } from './testing.ts';

const blocks = (n: number, size: number) => Array.from({ length: n }, (_, i) => Buffer.alloc(size, `block ${i} `));

describe('cloop index', () => {
  it('reads a good file: header, offsets, and blocks that inflate to their exact bytes', async () => {
    const bs = blocks(5, 4096);
    const file = buildCloop(bs, 4096);
    const index = await readCloopIndex(memoryReader(file).readAt, file.length, 'cloop file t');
    expect(index).toMatchObject({ blockSize: 4096, numBlocks: 5 });
    expect(index.offsets).toEqual(parseCloopOffsets(parseCloopHeader(file, file.length, 't'), file.subarray(136, 136 + 48), file.length, 't'));
    for (let i = 0; i < 5; i++) {
      const got = await inflateCloopBlock(file.subarray(index.offsets[i], index.offsets[i + 1]), 4096, i, 't');
      expect(got.equals(bs[i]!)).toBe(true);
    }
  });

  it('refuses an 800 MB sparse file after reading its header, not its declared index', async () => {
    const dir = tempDir();
    const p = join(dir, 'sparse.cloop');
    const head = buildCloop([], 65536).subarray(0, 136);
    const numBlocks = 100_000_000; // an index of 800 MB
    head.writeUInt32BE(numBlocks, 132);
    const first = Buffer.alloc(8);
    first.writeBigUInt64BE(BigInt(136 + (numBlocks + 1) * 8)); // the one offset checked first is right
    writeFileSync(p, Buffer.concat([head, first]));
    truncateSync(p, 900 << 20);
    const fd = openSync(p, 'r');
    try {
      let asked = 0;
      const readAt: ReadAt = async (buf, position) => {
        asked += buf.length;
        return readSync(fd, buf, 0, buf.length, position);
      };
      const e = await readCloopIndex(readAt, 900 << 20, 'cloop file sparse.cloop').catch((x: unknown) => x);
      expect(e).toBeInstanceOf(FormatError);
      expect((e as Error).message).toMatch(/cloop file sparse.cloop is corrupt: the index says the data of 100000000 blocks ends at byte 0/);
      expect(asked).toBeLessThanOrEqual(144 + 8);
    } finally {
      closeSync(fd);
    }
  });

  it('refuses a header whose blocks cannot fit in the file before reading anything more', async () => {
    const file = buildCloop(blocks(3, 4096), 4096);
    file.writeUInt32BE(0xffffffff, 132);
    const r = memoryReader(file);
    await expect(readCloopIndex(r.readAt, file.length, 'cloop file big')).rejects.toThrow(/cloop file big is truncated: its header promises 4294967295 blocks/);
    expect(r.asked()).toBe(144);
  });

  it('a bad offset in the middle of a long index is refused after at most one slice of it', async () => {
    const n = 300_000;
    const blockSize = 512;
    // An index with the right first and last offsets, one block per byte pair, and one offset going back.
    const dataStart = 136 + (n + 1) * 8;
    const file = Buffer.alloc(dataStart + n * 2);
    buildCloop([], blockSize).copy(file, 0, 0, 136);
    file.writeUInt32BE(n, 132);
    for (let i = 0; i <= n; i++) file.writeBigUInt64BE(BigInt(dataStart + i * 2), 136 + i * 8);
    file.writeBigUInt64BE(BigInt(dataStart), 136 + 1000 * 8);
    const r = memoryReader(file);
    await expect(readCloopIndex(r.readAt, file.length, 'cloop file bad')).rejects.toThrow(/cloop file bad is corrupt: block 999 is -1998 bytes compressed/);
    expect(r.asked()).toBeLessThanOrEqual(152 + 64 * 1024 * 8);
  });

  it('names a truncated file as truncated', async () => {
    const file = buildCloop(blocks(4, 4096), 4096);
    const cut = file.subarray(0, file.length - 5);
    await expect(readCloopIndex(memoryReader(cut).readAt, cut.length, 'cloop file cut')).rejects.toThrow(/cloop file cut is truncated: the index says the data ends at byte/);
  });
});
