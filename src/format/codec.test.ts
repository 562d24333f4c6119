import { randomBytes } from 'node:crypto';
import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  BlockDecodeError,
  blockHash,
  CODEC_TAG,
  CODECS,
  decodeBlockSync,
  decodeChecked,
  encodeBlock,
  isValidBlockSize,
  isZeroBlock,
  objectCodec,
  objectDigest,
} from './codec.ts';

const text = Buffer.from('hfk block '.repeat(6554).slice(0, 65536));

describe('block codecs', () => {
  for (const codec of CODECS) {
    it(`${codec}: round trip`, () => {
      const obj = encodeBlock(text, codec);
      expect(objectCodec(obj)).toBe(codec);
      if (codec !== 'none') expect(obj.length).toBeLessThan(text.length / 10);
      expect(decodeBlockSync(obj, text.length).equals(text)).toBe(true);
    });
  }

  it('decodes into a buffer the caller gives (a pool\'s), under every codec, never past it', () => {
    for (const codec of CODECS) {
      const backing = Buffer.alloc(text.length + 64, 0xee);
      const out = backing.subarray(32, 32 + text.length);
      const got = decodeBlockSync(encodeBlock(text, codec), text.length, out);
      expect(got).toBe(out);
      expect(out.equals(text)).toBe(true);
      expect(backing.subarray(0, 32).every((b) => b === 0xee) && backing.subarray(32 + text.length).every((b) => b === 0xee)).toBe(true);
    }
    const bomb = Buffer.concat([Buffer.from([CODEC_TAG.zstd]), zlib.zstdCompressSync(Buffer.alloc(16 << 20))]);
    expect(() => decodeBlockSync(bomb, 65536, Buffer.alloc(65536))).toThrow(BlockDecodeError);
    expect(() => decodeBlockSync(encodeBlock(text, 'zstd'), text.length, Buffer.alloc(100))).toThrow(/output buffer holds 100 bytes, the block 65536/);
  });

  it('stores a block that does not shrink raw, under any codec', () => {
    const noise = randomBytes(65536);
    for (const codec of CODECS) {
      const obj = encodeBlock(noise, codec);
      expect(obj[0]).toBe(CODEC_TAG.none);
      expect(obj.length).toBe(noise.length + 1);
      expect(obj.subarray(1).equals(noise)).toBe(true);
    }
  });

  it('refuses output longer than the expected block (bounded decompression)', () => {
    // 16 MiB of zeros compress to a few hundred bytes: a decompression bomb for a 64 KiB block.
    const bomb = Buffer.concat([Buffer.from([CODEC_TAG.zstd]), zlib.zstdCompressSync(Buffer.alloc(16 << 20))]);
    expect(() => decodeBlockSync(bomb, 65536)).toThrow(BlockDecodeError);
    const dbomb = Buffer.concat([Buffer.from([CODEC_TAG.deflate]), zlib.deflateSync(Buffer.alloc(16 << 20))]);
    expect(() => decodeBlockSync(dbomb, 65536)).toThrow(BlockDecodeError);
    const bbomb = Buffer.concat([Buffer.from([CODEC_TAG.brotli]), zlib.brotliCompressSync(Buffer.alloc(16 << 20))]);
    expect(() => decodeBlockSync(bbomb, 65536)).toThrow(/corrupt compressed block|decodes to/);
  });

  it('refuses output shorter than expected, bad tags and corrupt streams', () => {
    const obj = encodeBlock(text, 'zstd');
    expect(() => decodeBlockSync(obj, text.length + 1)).toThrow(/decodes to 65536 bytes, expected 65537/);
    expect(() => decodeBlockSync(Buffer.from([9, 1, 2, 3]), 3)).toThrow(/unknown codec tag 9/);
    expect(() => decodeBlockSync(Buffer.alloc(0), 3)).toThrow(/empty object/);
    const broken = Buffer.from(obj);
    broken.fill(0x55, 6, broken.length - 2);
    expect(() => decodeBlockSync(broken, text.length)).toThrow(BlockDecodeError);
    const raw = encodeBlock(randomBytes(100), 'none');
    expect(() => decodeBlockSync(raw, 99)).toThrow(/decodes to 100 bytes, expected 99/);
  });

  it('names blocks by the SHA-256 of their content', () => {
    expect(blockHash(Buffer.from('abc'))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it('recognises all-zero blocks', () => {
    expect(isZeroBlock(Buffer.alloc(65536))).toBe(true);
    const b = Buffer.alloc(65536);
    b[65535] = 1;
    expect(isZeroBlock(b)).toBe(false);
  });

  it('accepts powers of two from 4 KiB to 1 MiB as block sizes', () => {
    expect([4096, 65536, 1 << 20].every(isValidBlockSize)).toBe(true);
    expect([2048, 3 * 4096, 2 << 20, 0, -4096, 65536.5].some(isValidBlockSize)).toBe(false);
  });

  describe('decodeChecked', () => {
    const obj = encodeBlock(text, 'zstd');
    const name = blockHash(text);
    const digest = objectDigest(obj);

    it('accepts an object with the signed digest on that alone: the block is not hashed', () => {
      // A name the block does not have: only the digest can have let it through.
      const r = decodeChecked(obj, text.length, 'f'.repeat(64), digest);
      expect(r.ok && r.data.equals(text)).toBe(true);
    });

    it('checks the decoded block against its name without a digest, or with another one', () => {
      for (const d of [undefined, '0'.repeat(64)]) {
        const good = decodeChecked(obj, text.length, name, d);
        expect(good.ok && good.data.equals(text)).toBe(true);
        // another valid encoding of the same block (another codec) is still the block
        const other = decodeChecked(encodeBlock(text, 'deflate'), text.length, name, d ?? digest);
        expect(other.ok).toBe(true);
        const wrong = decodeChecked(obj, text.length, 'f'.repeat(64), d);
        expect(wrong).toEqual({ ok: false, actual: name });
      }
    });

    it('refuses a damaged object with the digest given: it no longer has it', () => {
      const raw = encodeBlock(text, 'none');
      const bad = Buffer.from(raw);
      bad[100]! ^= 1;
      const r = decodeChecked(bad, text.length, name, objectDigest(raw));
      expect(r.ok).toBe(false);
      expect(() => decodeChecked(Buffer.from([CODEC_TAG.zstd, 1, 2, 3]), text.length, name, digest)).toThrow(BlockDecodeError);
    });
  });
});
