// zstd with contexts kept from one block to the next.
//
// node:zlib's one-shot calls (zstdCompressSync, zstdDecompressSync) build a
// zstd context, its tables and an output buffer for every call and free them
// afterwards. On a 64 KiB block that set-up costs about as much as the work
// itself, for compression and decompression alike (figures:
// docs/PERFORMANCE.md).
//
// Node keeps no public way to reuse a context for one-shot work, but its
// stream classes own one behind a small synchronous interface (`_handle`:
// writeSync with a flush mode, and a two-word write state). A frame is
// produced or consumed whole by one writeSync with ZSTD_e_end, after which
// zstd starts the next frame on the same context with the same parameters
// (and, for a whole input given with ZSTD_e_end, records the content size in
// the frame header exactly as the one-shot call does: the bytes are the
// same). If that interface is not there, the one-shot calls are used.
//
// A context that reports an error, leaves input unread or fills its output
// may be mid-frame: it is dropped and the next call builds a fresh one, so a
// corrupt object can never spoil the decoding of the next.

import * as zlib from 'node:zlib';

interface Handle {
  writeSync(flush: number, input: Uint8Array, inOff: number, inLen: number, out: Uint8Array, outOff: number, outLen: number): void;
  onerror: (message: string, errno: number, code: string) => void;
  close(): void;
}

class Context {
  private error: string | undefined;
  private readonly handle: Handle;
  /** [output bytes left, input bytes left] after each writeSync */
  private readonly state: Uint32Array;

  private constructor(handle: Handle, state: Uint32Array) {
    this.handle = handle;
    this.state = state;
    handle.onerror = (message) => {
      this.error = message;
    };
  }

  static create(stream: zlib.ZstdCompress | zlib.ZstdDecompress): Context | undefined {
    const internals = stream as unknown as { _handle?: Handle; _writeState?: Uint32Array };
    const handle = internals._handle;
    const state = internals._writeState;
    if (!handle || typeof handle.writeSync !== 'function' || !(state instanceof Uint32Array) || state.length < 2) {
      stream.close();
      return undefined;
    }
    return new Context(handle, state);
  }

  /**
   * One whole frame from `input` into `out`. Returns the bytes written, or an
   * error message; after an error the context must not be used again.
   */
  frame(input: Uint8Array, out: Uint8Array): number | { error: string } {
    this.error = undefined;
    this.handle.writeSync(zlib.constants.ZSTD_e_end, input, 0, input.length, out, 0, out.length);
    if (this.error !== undefined) return { error: this.error };
    const outLeft = this.state[0]!;
    const inLeft = this.state[1]!;
    if (inLeft !== 0) return { error: 'the object holds more than one frame of the expected size (overlong or trailing data)' };
    return out.length - outLeft;
  }

  close(): void {
    try {
      this.handle.close();
    } catch {
      // already closed
    }
  }
}

/** Every frame: the level asked for, the content size recorded, no checksum (the block's name checks it). */
function frameParams(level: number): Record<number, number> {
  return {
    [zlib.constants.ZSTD_c_compressionLevel]: level,
    [zlib.constants.ZSTD_c_checksumFlag]: 0,
    [zlib.constants.ZSTD_c_contentSizeFlag]: 1,
  };
}

let usable = true;
const compressors = new Map<number, Context>();
let decompressor: Context | undefined;

function compressorFor(level: number): Context | undefined {
  if (!usable) return undefined;
  let c = compressors.get(level);
  if (!c) {
    c = Context.create(new zlib.ZstdCompress({ params: frameParams(level) }));
    if (!c) {
      usable = false;
      return undefined;
    }
    compressors.set(level, c);
  }
  return c;
}

/** Bytes a zstd frame of `n` input bytes can take at most (ZSTD_COMPRESSBOUND). */
function compressBound(n: number): number {
  return n + (n >> 8) + (n < 128 << 10 ? ((128 << 10) - n) >> 11 : 0);
}

let scratch = Buffer.alloc(0);

/**
 * One zstd frame holding `data`, with its content size in the header and no
 * checksum, after `headroom` bytes left for the caller (uninitialised).
 * `transient`: the result may be a view of memory the next call reuses (for
 * a caller that writes it out at once; saves a fresh buffer per block).
 */
export function zstdCompress(data: Buffer, level: number, headroom = 0, transient = false): Buffer {
  const c = compressorFor(level);
  if (c) {
    const bound = headroom + compressBound(data.length);
    if (scratch.length < bound) scratch = Buffer.allocUnsafe(bound);
    const n = c.frame(data, scratch.subarray(headroom, bound));
    if (typeof n === 'number') {
      const view = scratch.subarray(0, headroom + n);
      return transient ? view : Buffer.from(view);
    }
    c.close();
    compressors.delete(level);
  }
  const frame = zlib.zstdCompressSync(data, { params: frameParams(level), pledgedSrcSize: data.length });
  if (headroom === 0) return frame;
  const out = Buffer.allocUnsafe(headroom + frame.length);
  frame.copy(out, headroom);
  return out;
}

/** A frame that is corrupt, or does not decode to exactly the expected bytes. */
export class ZstdDecodeError extends Error {
  override name = 'ZstdDecodeError';
}

/**
 * Decodes one zstd frame that must hold exactly `expected` bytes into `out`
 * (exactly that long), or a new buffer of that size. Output beyond
 * `expected` is an error, never an allocation. Throws ZstdDecodeError (or
 * zlib's error on the fallback path).
 */
export function zstdDecompress(payload: Buffer, expected: number, out?: Buffer): Buffer {
  if (out && out.length !== expected) throw new RangeError(`the output buffer holds ${out.length} bytes, the block ${expected}`);
  if (usable && !decompressor) {
    decompressor = Context.create(new zlib.ZstdDecompress());
    if (!decompressor) usable = false;
  }
  if (!decompressor) {
    const got = zlib.zstdDecompressSync(payload, { maxOutputLength: Math.max(expected, 1), chunkSize: Math.max(64, expected) });
    if (got.length !== expected) throw new ZstdDecodeError(`block decodes to ${got.length} bytes, expected ${expected}`);
    if (!out) return got;
    got.copy(out);
    return out;
  }
  const dest = out ?? Buffer.allocUnsafe(expected);
  const n = decompressor.frame(payload, dest);
  if (typeof n === 'number' && n === expected) return dest;
  decompressor.close();
  decompressor = undefined;
  throw new ZstdDecodeError(typeof n === 'number' ? `block decodes to ${n} bytes, expected ${expected}` : n.error);
}

/** For tests: whether kept contexts are in use (false when the fallback is). */
export function zstdContextsInUse(): boolean {
  return usable;
}

/** For tests: turns kept contexts off (the one-shot fallback) or on again. */
export function setZstdContexts(on: boolean): void {
  for (const c of compressors.values()) c.close();
  compressors.clear();
  decompressor?.close();
  decompressor = undefined;
  usable = on;
}
