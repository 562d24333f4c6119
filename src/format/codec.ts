// Block objects: one compressed block each, self-describing by a one-byte
// codec tag so that a block stored once under one codec can be shared by
// images published with another. See docs/FORMAT.md.

import { hash } from 'node:crypto';
import * as zlib from 'node:zlib';
import { z } from 'zod';
import { zstdCompress, zstdDecompress } from './zstd.ts';

export const CODECS = ['zstd', 'deflate', 'brotli', 'none'] as const;
export const Codec = /* @__PURE__ */ z.enum(CODECS); // pure: a bundle that needs no schema drops zod
export type Codec = z.infer<typeof Codec>;

/** Tag byte at offset 0 of every block object. */
export const CODEC_TAG = { none: 0, zstd: 1, deflate: 2, brotli: 3 } as const satisfies Record<Codec, number>;
const TAG_CODEC: readonly Codec[] = ['none', 'zstd', 'deflate', 'brotli'];

// zstd 5: a smaller store than level 3, and with kept contexts (./zstd.ts)
// publishing is still faster than casync; decompression costs the same at
// either level (figures: docs/PERFORMANCE.md).
export const DEFAULT_LEVEL: Record<Codec, number> = { zstd: 5, deflate: 6, brotli: 5, none: 0 };
export const LEVEL_RANGE: Record<Codec, [number, number]> = {
  zstd: [1, 19],
  deflate: [1, 9],
  brotli: [0, 11],
  none: [0, 0],
};

export const MIN_BLOCK_SIZE = 4096;
export const MAX_BLOCK_SIZE = 1024 * 1024;
export const DEFAULT_BLOCK_SIZE = 64 * 1024;

export function isValidBlockSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_BLOCK_SIZE && n <= MAX_BLOCK_SIZE && (n & (n - 1)) === 0;
}

/** SHA-256 of a block's uncompressed content, lower-case hex: the block's name. */
export function blockHash(data: Uint8Array): string {
  return hash('sha256', data, 'hex');
}

const zeroCache = new Map<number, Buffer>();
function zeros(n: number): Buffer {
  let z = zeroCache.get(n);
  if (!z) {
    z = Buffer.alloc(n);
    zeroCache.set(n, z);
  }
  return z;
}

/** True when every byte is zero: such blocks are not stored at all. */
export function isZeroBlock(data: Buffer): boolean {
  return data.equals(zeros(data.length));
}

/** A buffer of `n` zero bytes (shared; never write into it). */
export function zeroBlock(n: number): Buffer {
  return zeros(n);
}

/** deflate and brotli, through node:zlib's one-shot calls (zstd has ./zstd.ts). */
function compressSync(codec: 'deflate' | 'brotli', data: Buffer, level: number): Buffer {
  switch (codec) {
    case 'deflate':
      return zlib.deflateSync(data, { level });
    case 'brotli':
      return zlib.brotliCompressSync(data, {
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]: level,
          [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length,
          [zlib.constants.BROTLI_PARAM_LGWIN]: 22,
        },
      });
  }
}

/**
 * Encodes one block as an object: tag byte + payload. A block that does not
 * shrink under `codec` is stored raw (tag `none`). `transient`: the result may
 * be a view of memory the next call reuses (for a caller that writes it out
 * at once).
 */
export function encodeBlock(data: Buffer, codec: Codec, level = DEFAULT_LEVEL[codec], transient = false): Buffer {
  if (codec === 'zstd') {
    const out = zstdCompress(data, level, 1, transient); // the tag goes in front, no copy
    if (out.length - 1 < data.length) {
      out[0] = CODEC_TAG.zstd;
      return out;
    }
  } else if (codec !== 'none') {
    const packed = compressSync(codec, data, level);
    if (packed.length < data.length) {
      const out = Buffer.allocUnsafe(packed.length + 1);
      out[0] = CODEC_TAG[codec];
      packed.copy(out, 1);
      return out;
    }
  }
  const out = Buffer.allocUnsafe(data.length + 1);
  out[0] = CODEC_TAG.none;
  data.copy(out, 1);
  return out;
}

/** Which codec an object says it uses; undefined for an unknown tag. */
export function objectCodec(object: Uint8Array): Codec | undefined {
  return object.length > 0 ? TAG_CODEC[object[0]!] : undefined;
}

export class BlockDecodeError extends Error {
  override name = 'BlockDecodeError';
}

function checkLength(out: Buffer, expected: number): Buffer {
  if (out.length !== expected) {
    throw new BlockDecodeError(`block decodes to ${out.length} bytes, expected ${expected}`);
  }
  return out;
}

function wrap(e: unknown): BlockDecodeError {
  if (e instanceof BlockDecodeError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  // Node reports output over maxOutputLength as ERR_BUFFER_TOO_LARGE / RangeError.
  return new BlockDecodeError(`corrupt compressed block: ${msg}`);
}

/**
 * Output bounded by the block's length, in one chunk of that size: no
 * growing, no concatenation (fresh memory is what costs most here).
 */
function outputOptions(expected: number): { maxOutputLength: number; chunkSize: number } {
  return { maxOutputLength: Math.max(expected, 1), chunkSize: Math.max(64, expected) };
}

/**
 * Decodes an object to exactly `expected` bytes. Decompression is bounded:
 * output beyond `expected` is an error, never an allocation.
 * Throws BlockDecodeError for a bad tag, a corrupt stream or a wrong length.
 * With `out` (exactly `expected` bytes long) the block is decoded into it and
 * `out` returned; without, the result is new memory, or for an object stored
 * uncompressed a view of `object`.
 */
export function decodeBlockSync(object: Buffer, expected: number, out?: Buffer): Buffer {
  if (out && out.length !== expected) throw new RangeError(`the output buffer holds ${out.length} bytes, the block ${expected}`);
  const codec = objectCodec(object);
  const payload = object.subarray(1);
  const into = (b: Buffer) => (out ? (b.copy(out), out) : b);
  try {
    switch (codec) {
      case 'none':
        return into(checkLength(payload, expected));
      case 'zstd':
        return zstdDecompress(payload, expected, out);
      case 'deflate':
        return into(checkLength(zlib.inflateSync(payload, outputOptions(expected)), expected));
      case 'brotli':
        return into(checkLength(zlib.brotliDecompressSync(payload, outputOptions(expected)), expected));
      default:
        throw new BlockDecodeError(`unknown codec tag ${object.length ? object[0] : '(empty object)'}`);
    }
  } catch (e) {
    throw wrap(e);
  }
}

/**
 * SHA-256 of a stored object as it is (tag byte included), lower-case hex:
 * a format-2 manifest signs it for every block (docs/FORMAT.md).
 */
export function objectDigest(object: Uint8Array): string {
  return hash('sha256', object, 'hex');
}

/** What decodeChecked found: the block, or the hash its bytes have instead of its name. */
export type Checked = { ok: true; data: Buffer } | { ok: false; actual: string };

/**
 * Decodes the stored object of block `name` and checks it. When `digest` (the
 * object digest a format-2 manifest signs) is given and the object has it,
 * the object is byte for byte the one the publisher made from the block and
 * checked: decoding it is enough, and hashing the object costs less than
 * hashing the block by the compression ratio. Otherwise (a format-1 manifest,
 * or an object with another digest: another valid encoding of the block, as a
 * cache filled from another store may hold, or a damaged one) the decoded
 * block must hash to `name`. Throws BlockDecodeError as decodeBlockSync.
 */
export function decodeChecked(object: Buffer, length: number, name: string, digest?: string, out?: Buffer): Checked {
  const trusted = digest !== undefined && objectDigest(object) === digest;
  const data = decodeBlockSync(object, length, out);
  if (trusted) return { ok: true, data };
  const actual = blockHash(data);
  return actual === name ? { ok: true, data } : { ok: false, actual };
}
