import { randomBytes } from 'node:crypto';
import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { setZstdContexts, ZstdDecodeError, zstdCompress, zstdContextsInUse, zstdDecompress } from './zstd.ts';

// Blocks that look like a filesystem image: text, runs, noise.
function sampleBlocks(): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < 24; i++) {
    const b = Buffer.alloc(65536);
    b.write(`block ${i} `.repeat(2000 + i * 100), 0);
    randomBytes(1000 * i).copy(b, 30000);
    out.push(b);
  }
  return out;
}

const oneShot = (data: Buffer, level: number) =>
  zlib.zstdCompressSync(data, {
    params: { [zlib.constants.ZSTD_c_compressionLevel]: level, [zlib.constants.ZSTD_c_checksumFlag]: 0, [zlib.constants.ZSTD_c_contentSizeFlag]: 1 },
    pledgedSrcSize: data.length,
  });

/** A frame without the content size in its header (as a streaming encoder writes). */
const noSize = (data: Buffer) => zlib.zstdCompressSync(data, { params: { [zlib.constants.ZSTD_c_contentSizeFlag]: 0 } });

/** Offset of a frame's first block header (after magic, descriptor, window, dictionary id, content size). */
function firstBlockHeader(frame: Buffer): number {
  const fhd = frame[4]!;
  const single = (fhd >> 5) & 1;
  return 5 + (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + [single, 2, 4, 8][fhd >> 6]!;
}

describe('zstd with kept contexts', () => {
  it('is in use on this Node (not the one-shot fallback)', () => {
    zstdCompress(Buffer.from('x'.repeat(1000)), 3);
    expect(zstdContextsInUse()).toBe(true);
  });

  it('writes the same frames as the one-shot call, block after block, at each level', () => {
    for (const level of [1, 3, 5]) {
      for (const b of sampleBlocks()) expect(zstdCompress(b, level).equals(oneShot(b, level))).toBe(true);
    }
  });

  it('leaves the headroom asked for in front of the frame', () => {
    const b = sampleBlocks()[3]!;
    const out = zstdCompress(b, 3, 1);
    expect(out.subarray(1).equals(oneShot(b, 3))).toBe(true);
  });

  it('decodes frames one after another, including ones the one-shot call wrote', () => {
    const blocks = sampleBlocks();
    for (const b of blocks) {
      expect(zstdDecompress(zstdCompress(b, 3), b.length).equals(b)).toBe(true);
      expect(zstdDecompress(oneShot(b, 19), b.length).equals(b)).toBe(true);
    }
  });

  it('a bad object never spoils the next one: truncated, overlong, trailing data, two frames, garbage', () => {
    const [a, b] = sampleBlocks().slice(5, 7) as [Buffer, Buffer];
    const fa = zstdCompress(a, 3);
    const bad: [string, Buffer, RegExp][] = [
      ['truncated', fa.subarray(0, fa.length - 7), /truncated/],
      ['header only', fa.subarray(0, 6), /ends inside its header/],
      ['overlong', zstdCompress(Buffer.concat([a, Buffer.alloc(9, 1)]), 3), /decodes to 65545 bytes, expected 65536/],
      ['overlong, no content size', noSize(Buffer.concat([a, Buffer.alloc(9, 1)])), /larger than|too large|exceed/i],
      ['trailing data', Buffer.concat([fa, Buffer.from([1, 2, 3])]), /more than one frame/],
      ['two frames', Buffer.concat([fa, fa]), /more than one frame/],
      ['garbage', Buffer.from('not a zstd frame at all'), /not a zstd frame/],
      ['short', zstdCompress(a.subarray(0, 1000), 3), /decodes to 1000 bytes, expected 65536/],
    ];
    for (const [, object, message] of bad) {
      expect(() => zstdDecompress(object, a.length)).toThrow(message);
      expect(zstdDecompress(zstdCompress(b, 3), b.length).equals(b)).toBe(true);
    }
  });

  it('bounds the output by the expected size (a 16 MiB bomb for a 64 KiB block)', () => {
    const bomb = zlib.zstdCompressSync(Buffer.alloc(16 << 20));
    expect(() => zstdDecompress(bomb, 65536)).toThrow(/decodes to 16777216 bytes, expected 65536/);
    expect(() => zstdDecompress(noSize(Buffer.alloc(16 << 20)), 65536)).toThrow(/larger than|too large|exceed/i);
  });

  it('without kept contexts (the fallback) writes and reads the same frames, still bounded', () => {
    const blocks = sampleBlocks().slice(0, 4);
    const kept = blocks.map((b) => zstdCompress(b, 5));
    setZstdContexts(false);
    try {
      expect(zstdContextsInUse()).toBe(false);
      blocks.forEach((b, i) => {
        const frame = zstdCompress(b, 5);
        expect(frame.equals(kept[i]!)).toBe(true);
        expect(zstdCompress(b, 5, 1).subarray(1).equals(frame)).toBe(true);
        expect(zstdDecompress(frame, b.length).equals(b)).toBe(true);
      });
      expect(() => zstdDecompress(zlib.zstdCompressSync(Buffer.alloc(16 << 20)), 65536)).toThrow();
      expect(() => zstdDecompress(zstdCompress(blocks[0]!.subarray(0, 1000), 5), 65536)).toThrow(/decodes to 1000 bytes, expected 65536/);
    } finally {
      setZstdContexts(true);
    }
    expect(zstdDecompress(kept[0]!, blocks[0]!.length).equals(blocks[0]!)).toBe(true);
  });

  it('refuses a frame whose last block is not marked last, and decodes the next frame on the same context exactly', () => {
    const [a, b] = sampleBlocks().slice(2, 4) as [Buffer, Buffer];
    const frame = zstdCompress(a, 3);
    const at = firstBlockHeader(frame);
    expect(frame[at]! & 1).toBe(1); // one block, marked last
    const open = Buffer.from(frame);
    open[at]! &= 0xfe;
    expect(() => zstdDecompress(open, a.length)).toThrow(ZstdDecodeError);
    expect(() => zstdDecompress(open, a.length)).toThrow(/last block is not marked last/);
    expect(zstdDecompress(zstdCompress(b, 3), b.length).equals(b)).toBe(true);
    expect(zstdDecompress(frame, a.length).equals(a)).toBe(true);
  });

  it('decodes a frame without a content size exactly, bounded by the expected size', () => {
    const [a, b] = sampleBlocks().slice(8, 10) as [Buffer, Buffer];
    expect(zstdDecompress(noSize(a), a.length).equals(a)).toBe(true);
    const into = Buffer.alloc(b.length);
    expect(zstdDecompress(noSize(b), b.length, into)).toBe(into);
    expect(into.equals(b)).toBe(true);
    expect(() => zstdDecompress(noSize(a.subarray(0, 1000)), a.length)).toThrow(/decodes to 1000 bytes, expected 65536/);
  });
});
