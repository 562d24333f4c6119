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
/** zlib's worst case for incompressible input, plus slack. */
const maxCompressed = (blockSize: number) => blockSize + Math.ceil(blockSize / 1000) + 64;
const MAX_CLOOP_BLOCK = 64 * 1024 * 1024;

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

/** Parses the fixed 136-byte header; rejects other versions clearly. */
export function parseCloopHeader(head: Uint8Array, fileSize: number, what: string): CloopHeader {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
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
  if (CLOOP_FIXED + tableBytes > fileSize) {
    throw new FormatError(`${what} is truncated: its header promises ${numBlocks} blocks, but the file ends inside the block index`);
  }
  return { blockSize, numBlocks, tableBytes };
}

/** Parses and checks the offset table: increasing, inside the file, sane sizes. */
export function parseCloopOffsets(header: CloopHeader, table: Uint8Array, fileSize: number, what: string): number[] {
  const b = Buffer.from(table.buffer, table.byteOffset, table.byteLength);
  if (b.length !== header.tableBytes) throw new FormatError(`${what} is truncated inside the block index`);
  const offsets: number[] = new Array(header.numBlocks + 1);
  for (let i = 0; i <= header.numBlocks; i++) {
    const v = b.readBigUInt64BE(i * 8);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`${what} is corrupt: offset ${i} is ${v}`);
    offsets[i] = Number(v);
  }
  const dataStart = CLOOP_FIXED + header.tableBytes;
  if (offsets[0] !== dataStart) {
    throw new FormatError(`${what} is corrupt: the first block should start at byte ${dataStart}, the index says ${offsets[0]}`);
  }
  const limit = maxCompressed(header.blockSize);
  for (let i = 0; i < header.numBlocks; i++) {
    const len = offsets[i + 1]! - offsets[i]!;
    if (len <= 0 || len > limit) {
      throw new FormatError(`${what} is corrupt: block ${i} is ${len} bytes compressed (allowed 1..${limit})`);
    }
  }
  if (offsets[header.numBlocks]! > fileSize) {
    throw new FormatError(
      `${what} is truncated: the index says the data ends at byte ${offsets[header.numBlocks]}, the file has ${fileSize}`,
      { hint: 'the copy is incomplete; copy or download it again' },
    );
  }
  return offsets;
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
