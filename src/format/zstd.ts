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

const ZSTD_MAGIC = 0xfd2fb528;
/** Largest window a frame without a content size may ask for (8 MiB; a block is at most 1 MiB). */
const WINDOW_LOG_MAX = 23;

/**
 * Walks the structure of one zstd frame without decoding it: magic, header,
 * block headers, checksum. The frame must end exactly at the end of
 * `payload`, with its last block marked last: a frame left open would leave
 * the decoder mid-frame (and the next block decoded on that context wrong).
 * A content size in the header must be `expected`. Returns that content
 * size, or undefined when the header has none. Throws ZstdDecodeError.
 */
export function checkZstdFrame(payload: Uint8Array, expected: number): number | undefined {
  const fail = (why: string): never => {
    throw new ZstdDecodeError(why);
  };
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (b.length < 6) fail(`a zstd frame has at least 6 bytes, this object ${b.length}`);
  if (b.readUInt32LE(0) !== ZSTD_MAGIC) fail(`not a zstd frame (magic ${b.readUInt32LE(0).toString(16)})`);
  const fhd = b[4]!;
  if (fhd & 0x08) fail('zstd frame header has its reserved bit set');
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const hasChecksum = (fhd >> 2) & 1;
  const dictBytes = [0, 1, 2, 4][fhd & 3]!;
  const fcsBytes = [single, 2, 4, 8][fcsFlag]!;
  let p = 5 + (single ? 0 : 1) + dictBytes;
  if (p + fcsBytes > b.length) fail('zstd frame ends inside its header');
  if (dictBytes > 0 && b.readUIntLE(p - dictBytes, dictBytes) !== 0) fail('zstd frame needs a dictionary');
  let contentSize: number | undefined;
  if (fcsBytes === 1) contentSize = b[p]!;
  else if (fcsBytes === 2) contentSize = b.readUInt16LE(p) + 256;
  else if (fcsBytes === 4) contentSize = b.readUInt32LE(p);
  else if (fcsBytes === 8) contentSize = Number(b.readBigUInt64LE(p)); // loses precision only far above any block
  if (contentSize !== undefined && contentSize !== expected) fail(`block decodes to ${contentSize} bytes, expected ${expected}`);
  p += fcsBytes;
  for (let last = 0; !last; ) {
    if (p + 3 > b.length) fail("zstd frame does not end: its last block is not marked last (unfinished frame)");
    const header = b.readUIntLE(p, 3);
    last = header & 1;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) fail('zstd frame holds a block of the reserved type');
    p += 3 + (type === 1 ? 1 : size);
    if (p > b.length) fail('zstd frame ends inside a block (truncated)');
  }
  if (hasChecksum) p += 4;
  if (p > b.length) fail('zstd frame ends inside its checksum (truncated)');
  if (p !== b.length) fail(`the object holds more than one frame (${b.length - p} bytes after the frame's last block)`);
  return contentSize;
}

/** One-shot decoding, bounded in output and in the window it may allocate. */
function decompressOnce(payload: Buffer, expected: number): Buffer {
  return zlib.zstdDecompressSync(payload, {
    maxOutputLength: Math.max(expected, 1),
    chunkSize: Math.max(64, expected),
    params: { [zlib.constants.ZSTD_d_windowLogMax]: WINDOW_LOG_MAX },
  });
}

/**
 * Decodes one zstd frame that must hold exactly `expected` bytes into `out`
 * (exactly that long), or a new buffer of that size. Output beyond
 * `expected` is an error, never an allocation. The frame's structure is
 * checked first (checkZstdFrame), so only a whole frame of the right size
 * reaches the kept context; a frame without a content size is decoded by
 * the one-shot call, which cannot leave output behind in a kept context.
 * Throws ZstdDecodeError (or zlib's error on the one-shot path).
 */
export function zstdDecompress(payload: Buffer, expected: number, out?: Buffer): Buffer {
  if (out && out.length !== expected) throw new RangeError(`the output buffer holds ${out.length} bytes, the block ${expected}`);
  const contentSize = checkZstdFrame(payload, expected);
  if (usable && !decompressor) {
    decompressor = Context.create(new zlib.ZstdDecompress());
    if (!decompressor) usable = false;
  }
  if (!decompressor || contentSize === undefined) {
    const got = decompressOnce(payload, expected);
    if (got.length !== expected) throw new ZstdDecodeError(`block decodes to ${got.length} bytes, expected ${expected}`);
    if (!out) return got;
    got.copy(out);
    return out;
  }
  const dest = out ?? Buffer.allocUnsafe(expected);
  let n: number | { error: string };
  try {
    n = decompressor.frame(payload, dest);
  } catch (e) {
    n = { error: (e as Error).message };
  }
  if (typeof n === 'number' && n === expected) return dest;
  // Whatever went wrong, the context may be mid-frame: the next call builds a fresh one.
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
