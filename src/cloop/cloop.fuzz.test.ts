// Property tests of the cloop index reader: damaged headers and indexes are
// a FormatError or an index that holds together, and it never reads more
// than the header, the last offset and the index the file can hold.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FormatError } from '../errors.ts';
import { readCloopIndex } from './cloop.ts';
import { buildCloop, memoryReader } from './testing.ts';

const cloopFile = fc
  .record({ n: fc.integer({ min: 0, max: 12 }), blockSize: fc.constantFrom(512, 4096), seed: fc.nat(255) })
  .map(({ n, blockSize, seed }) => buildCloop(Array.from({ length: n }, (_, i) => Buffer.alloc(blockSize, (seed + i) & 0xff)), blockSize));

describe('cloop index reader (property)', () => {
  it('damaged header or index: FormatError, or offsets that start after the index, increase by sane sizes and end in the file', { timeout: 30_000 }, async () => {
    const edits = fc.array(fc.tuple(fc.integer({ min: 120, max: 400 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 });
    await fc.assert(
      fc.asyncProperty(cloopFile, edits, fc.option(fc.nat(), { nil: undefined }), async (file, es, cut) => {
        const b = Buffer.from(file);
        for (const [at, v] of es) if (at < b.length) b[at] = v;
        const bytes = cut === undefined ? b : b.subarray(0, cut % (b.length + 1));
        const r = memoryReader(bytes);
        let index: Awaited<ReturnType<typeof readCloopIndex>>;
        try {
          index = await readCloopIndex(r.readAt, bytes.length, 'cloop file f');
        } catch (e) {
          expect(e).toBeInstanceOf(FormatError);
          expect((e as Error).message).toMatch(/^cloop file f is /);
          expect(r.asked()).toBeLessThanOrEqual(152 + bytes.length);
          return;
        }
        const { offsets, numBlocks, blockSize } = index;
        expect(offsets.length).toBe(numBlocks + 1);
        expect(offsets[0]).toBe(136 + (numBlocks + 1) * 8);
        for (let i = 0; i < numBlocks; i++) {
          expect(offsets[i + 1]! - offsets[i]!).toBeGreaterThan(0);
          expect(offsets[i + 1]! - offsets[i]!).toBeLessThanOrEqual(blockSize + Math.ceil(blockSize / 1000) + 64);
        }
        expect(offsets[numBlocks]).toBeLessThanOrEqual(bytes.length);
        expect(r.asked()).toBeLessThanOrEqual(152 + (numBlocks + 1) * 8);
      }),
      { numRuns: 2000 },
    );
  });

  it('random bytes after a cloop preamble: FormatError or a consistent index, reading at most what the file holds', { timeout: 30_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), fc.integer({ min: 0, max: 1 << 30 }), async (rest, claimed) => {
        const head = buildCloop([], 512).subarray(0, 128);
        const bytes = Buffer.concat([head, Buffer.from(rest)]);
        const size = Math.max(bytes.length, claimed); // a file larger than what is readable (sparse, or shrinking)
        const r = memoryReader(bytes);
        try {
          const index = await readCloopIndex(r.readAt, size, 'cloop file g');
          expect(index.offsets.at(-1)!).toBeLessThanOrEqual(size);
        } catch (e) {
          expect(e).toBeInstanceOf(FormatError);
        }
        expect(r.asked()).toBeLessThanOrEqual(152 + Math.max(0, size - 136));
      }),
      { numRuns: 2000 },
    );
  });
});
