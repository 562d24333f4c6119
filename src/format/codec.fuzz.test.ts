// Property tests of the block decoder: random objects and bit-flipped valid
// ones decode to exactly the block or fail with BlockDecodeError, never with
// another error, never to another length; a failure never spoils the next
// decode (the kept zstd context is left clean).

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockDecodeError, blockHash, type Codec, decodeBlockSync, decodeChecked, encodeBlock } from './codec.ts';

/** Blocks that compress: runs and text with some noise. */
const block = fc
  .record({ size: fc.constantFrom(4096, 8192, 65536), seed: fc.uint8Array({ minLength: 1, maxLength: 64 }), text: fc.string({ maxLength: 40 }) })
  .map(({ size, seed, text }) => {
    const b = Buffer.alloc(size);
    b.write(`${text}|`.repeat(Math.ceil(size / (text.length + 1))), 'utf8');
    Buffer.from(seed).copy(b, (seed[0]! * 61) % (size - seed.length));
    return b;
  });
const codec = fc.constantFrom<Codec>('zstd', 'deflate', 'brotli', 'none');

/** Decodes; returns the bytes or the error. */
function attempt(object: Buffer, expected: number, out?: Buffer): Buffer | Error {
  try {
    return decodeBlockSync(object, expected, out);
  } catch (e) {
    return e as Error;
  }
}

describe('block decoder (property)', () => {
  const canary = Buffer.alloc(65536, 'canary ');
  const canaryObject = encodeBlock(canary, 'zstd', 3);

  it('random objects: BlockDecodeError or exactly the expected length, and the next good block still decodes exactly', { timeout: 30_000 }, () => {
    const tagged = fc.tuple(fc.integer({ min: 0, max: 5 }), fc.uint8Array({ maxLength: 600 })).map(([tag, rest]) => Buffer.concat([Buffer.from([tag]), rest]));
    fc.assert(
      fc.property(fc.oneof(tagged, fc.uint8Array({ maxLength: 64 }).map((u) => Buffer.from(u))), fc.constantFrom(1, 100, 4096, 65536), (object, expected) => {
        const r = attempt(object, expected);
        if (r instanceof Error) expect(r).toBeInstanceOf(BlockDecodeError);
        else expect(r.length).toBe(expected);
        expect(decodeBlockSync(canaryObject, canary.length).equals(canary)).toBe(true);
      }),
      { numRuns: 1500 },
    );
  });

  it('round-trips every codec exactly, into a new buffer and into a given one', { timeout: 30_000 }, () => {
    fc.assert(
      fc.property(block, codec, (data, c) => {
        const object = encodeBlock(data, c);
        expect(decodeBlockSync(object, data.length).equals(data)).toBe(true);
        const out = Buffer.alloc(data.length);
        expect(decodeBlockSync(object, data.length, out)).toBe(out);
        expect(out.equals(data)).toBe(true);
      }),
      { numRuns: 150 },
    );
  });

  it('bit-flipped, cut or extended valid objects: BlockDecodeError, or the exact block, or bytes whose hash names another block', { timeout: 30_000 }, () => {
    const damage = fc.record({
      flips: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 3 }),
      cut: fc.option(fc.nat(), { nil: undefined }),
      extra: fc.option(fc.uint8Array({ minLength: 1, maxLength: 8 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(block, codec, damage, (data, c, d) => {
        let object = Buffer.from(encodeBlock(data, c));
        for (const [at, bit] of d.flips) object[at % object.length]! ^= 1 << bit;
        if (d.cut !== undefined) object = object.subarray(0, d.cut % (object.length + 1));
        if (d.extra) object = Buffer.concat([object, d.extra]);
        const name = blockHash(data);
        let r: ReturnType<typeof decodeChecked> | Error;
        try {
          r = decodeChecked(object, data.length, name);
        } catch (e) {
          r = e as Error;
        }
        if (r instanceof Error) expect(r).toBeInstanceOf(BlockDecodeError);
        else if (r.ok) expect(r.data.equals(data)).toBe(true);
        else expect(r.actual).not.toBe(name);
        // Whatever happened, the decoder is clean for the next block.
        expect(decodeBlockSync(canaryObject, canary.length).equals(canary)).toBe(true);
      }),
      { numRuns: 400 },
    );
  });

  it('zstd frames damaged in their headers (frame and block headers, the last-block flag) never leave the context mid-frame', { timeout: 30_000 }, () => {
    fc.assert(
      fc.property(block, fc.array(fc.tuple(fc.integer({ min: 1, max: 24 }), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 2 }), (data, flips) => {
        const object = Buffer.from(encodeBlock(data, 'zstd', 3));
        for (const [at, bit] of flips) if (at < object.length) object[at]! ^= 1 << bit;
        const r = attempt(object, data.length);
        if (r instanceof Error) expect(r).toBeInstanceOf(BlockDecodeError);
        else expect(r.length).toBe(data.length);
        expect(decodeBlockSync(canaryObject, canary.length).equals(canary)).toBe(true);
      }),
      { numRuns: 600 },
    );
  });
});
