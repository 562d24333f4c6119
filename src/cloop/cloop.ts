// The KNOPPIX compressed loop image, cloop version 2 (what the original
// HTTP-FUSE KNOPPIX started from, and what cloop-utils' create_compressed_fs
// writes):
//
//   0     128  shell preamble "#!/bin/sh\n#V2.0 Format\n…", zero padded
//   128   4    block size (u32 big-endian)
//   132   4    number of blocks N (u32 big-endian)
//   136   8(N+1) offsets (u64 big-endian): block i is bytes [off[i], off[i+1])
//   …          blocks, each a zlib stream of one block (the last zero padded)
//
// The uncompressed image is N × block size bytes.

import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { FormatError } from '../errors.ts';

export const CLOOP_HEADER_BYTES = 128;
const CLOOP_FIXED = CLOOP_HEADER_BYTES + 8;
/** The fixed header and the first offset: all readCloopIndex reads before it trusts the header. */
export const CLOOP_HEAD_BYTES = CLOOP_FIXED + 8;
/** zlib's worst case for incompressible input, plus slack. */
const maxCompressed = (blockSize: number) => blockSize + Math.ceil(blockSize / 1000) + 64;
const MAX_CLOOP_BLOCK = 64 * 1024 * 1024;
/** Offsets read and checked at a time (a bad index is refused after at most this much of it). */
const INDEX_CHUNK = 64 * 1024;

/** True if the first bytes look like any cloop file (any version). */
export function looksLikeCloop(head: Uint8Array): boolean {
  const text = Buffer.from(head.buffer, head.byteOffset, Math.min(head.byteLength, CLOOP_HEADER_BYTES)).toString('latin1');
  return text.startsWith('#!/bin/sh') && /#V\d\.\d Format/.test(text);
}

export interface CloopHeader {
  blockSize: number;
  numBlocks: number;
  /** Bytes of the offset table that follow the fixed header. */
  tableBytes: number;
}

const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

/** An offset as a number (the format's u64 big-endian). */
function offsetAt(b: Buffer, at: number, i: number, what: string): number {
  const v = b.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`${what} is corrupt: offset ${i} is ${v}`);
  return Number(v);
}

/**
 * Parses the fixed 136-byte header and checks it against the file's size
 * (every block takes at least one byte after the index); with the first
 * offset too (CLOOP_HEAD_BYTES), checks that it points just past the index.
 * Rejects other versions clearly.
 */
export function parseCloopHeader(head: Uint8Array, fileSize: number, what: string): CloopHeader {
  const b = asBuffer(head);
  if (b.length < CLOOP_FIXED || fileSize < CLOOP_FIXED) {
    throw new FormatError(`${what} is truncated: a cloop file has at least ${CLOOP_FIXED} bytes of header, this one ${fileSize}`);
  }
  const preamble = b.toString('latin1', 0, CLOOP_HEADER_BYTES);
  const ver = /#V(\d\.\d) Format/.exec(preamble)?.[1];
  if (ver !== '2.0') {
    throw new FormatError(`${what} is a cloop V${ver ?? '?'} file; hfk reads cloop V2.0`, {
      hint: 'unpack it with extract_compressed_fs and publish the result, or repack with create_compressed_fs (V2.0)',
    });
  }
  const blockSize = b.readUInt32BE(128);
  const numBlocks = b.readUInt32BE(132);
  if (blockSize === 0 || blockSize % 512 !== 0 || blockSize > MAX_CLOOP_BLOCK) {
    throw new FormatError(`${what} is corrupt: cloop block size ${blockSize} is not a multiple of 512 up to 64 MiB`);
  }
  const tableBytes = (numBlocks + 1) * 8;
  if (CLOOP_FIXED + tableBytes + numBlocks > fileSize) {
    throw new FormatError(`${what} is truncated: its header promises ${numBlocks} blocks, but the file (${fileSize} bytes) cannot hold their index and data`, {
      hint: 'the copy is incomplete or not a cloop file; copy or download it again',
    });
  }
  const header = { blockSize, numBlocks, tableBytes };
  if (b.length >= CLOOP_HEAD_BYTES) checkFirstOffset(header, offsetAt(b, CLOOP_FIXED, 0, what), what);
  return header;
}

function checkFirstOffset(header: CloopHeader, first: number, what: string): void {
  const dataStart = CLOOP_FIXED + header.tableBytes;
  if (first !== dataStart) {
    throw new FormatError(`${what} is corrupt: the first block should start at byte ${dataStart}, the index says ${first}`);
  }
}

/** Checks offsets as they are read: increasing by a sane block size, ending inside the file. */
class OffsetChecker {
  readonly offsets: number[];
  private next = 0;
  private readonly limit: number;
  private readonly header: CloopHeader;
  private readonly fileSize: number;
  private readonly what: string;

  constructor(header: CloopHeader, fileSize: number, what: string) {
    this.header = header;
    this.fileSize = fileSize;
    this.what = what;
    this.offsets = new Array<number>(header.numBlocks + 1);
    this.limit = maxCompressed(header.blockSize);
  }

  /** The next offsets, from a slice of the table. */
  add(b: Buffer): void {
    for (let at = 0; at + 8 <= b.length; at += 8) {
      const i = this.next++;
      const v = offsetAt(b, at, i, this.what);
      if (i === 0) checkFirstOffset(this.header, v, this.what);
      else {
        const len = v - this.offsets[i - 1]!;
        if (len <= 0 || len > this.limit) {
          throw new FormatError(`${this.what} is corrupt: block ${i - 1} is ${len} bytes compressed (allowed 1..${this.limit})`);
        }
        if (v > this.fileSize) {
          throw new FormatError(`${this.what} is truncated: the index says the data goes on to byte ${v}, the file has ${this.fileSize}`, {
            hint: 'the copy is incomplete; copy or download it again',
          });
        }
      }
      this.offsets[i] = v;
    }
  }

  done(): number[] {
    if (this.next !== this.offsets.length) throw new FormatError(`${this.what} is truncated inside the block index`);
    return this.offsets;
  }
}

/** Parses and checks the offset table: increasing, inside the file, sane sizes. */
export function parseCloopOffsets(header: CloopHeader, table: Uint8Array, fileSize: number, what: string): number[] {
  const b = asBuffer(table);
  if (b.length !== header.tableBytes) throw new FormatError(`${what} is truncated inside the block index`);
  const c = new OffsetChecker(header, fileSize, what);
  c.add(b);
  return c.done();
}

/** Reads into `buf` from `position`; returns the bytes read (fewer only at the end of the file). */
export type ReadAt = (buf: Buffer, position: number) => Promise<number>;

export interface CloopIndex extends CloopHeader {
  offsets: number[];
}

/**
 * Reads and checks a cloop file's header and index, reading no more than
 * it has checked: the header and first offset, then the last offset (the
 * data must end inside the file), then the index a slice at a time. A
 * corrupt or sparse file is refused after a few bytes, not after its whole
 * declared index.
 */
export async function readCloopIndex(readAt: ReadAt, fileSize: number, what: string): Promise<CloopIndex> {
  const head = Buffer.alloc(Math.max(0, Math.min(fileSize, CLOOP_HEAD_BYTES)));
  const got = await readAt(head, 0);
  const header = parseCloopHeader(head.subarray(0, got), fileSize, what);
  if (got < CLOOP_HEAD_BYTES) throw new FormatError(`${what} is truncated inside the block index`);
  const last = Buffer.alloc(8);
  if ((await readAt(last, CLOOP_FIXED + header.numBlocks * 8)) !== 8) throw new FormatError(`${what} is truncated inside the block index`);
  const end = offsetAt(last, 0, header.numBlocks, what);
  const dataStart = CLOOP_FIXED + header.tableBytes;
  if (end > fileSize) {
    throw new FormatError(`${what} is truncated: the index says the data ends at byte ${end}, the file has ${fileSize}`, {
      hint: 'the copy is incomplete; copy or download it again',
    });
  }
  if (end < dataStart + header.numBlocks) {
    throw new FormatError(`${what} is corrupt: the index says the data of ${header.numBlocks} blocks ends at byte ${end}, before byte ${dataStart + header.numBlocks}`);
  }
  const c = new OffsetChecker(header, fileSize, what);
  const slice = Buffer.alloc(Math.min(header.tableBytes, INDEX_CHUNK * 8));
  for (let at = 0; at < header.tableBytes; at += slice.length) {
    const want = slice.subarray(0, Math.min(slice.length, header.tableBytes - at));
    const n = await readAt(want, CLOOP_FIXED + at);
    if (n !== want.length) throw new FormatError(`${what} is truncated inside the block index`);
    c.add(want);
  }
  return { ...header, offsets: c.done() };
}

const inflate = promisify(zlib.inflate);

/** Inflates one cloop block to exactly blockSize bytes (bounded). */
export async function inflateCloopBlock(data: Uint8Array, blockSize: number, index: number, what: string): Promise<Buffer> {
  let out: Buffer;
  try {
    out = await inflate(data, { maxOutputLength: blockSize });
  } catch (e) {
    throw new FormatError(`${what} is corrupt: block ${index} does not inflate (${(e as Error).message})`);
  }
  if (out.length !== blockSize) {
    throw new FormatError(`${what} is corrupt: block ${index} inflates to ${out.length} bytes, not ${blockSize}`);
  }
  return out;
}
