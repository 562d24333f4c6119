// squashfs v4 for lookupPath: the superblock, and the inode and directory
// tables, which are chains of metadata blocks of at most 8 KiB each, stored
// compressed unless bit 15 of their 2-byte header says otherwise. A
// directory's listing is scanned linearly (its index only speeds that up);
// mksquashfs sorts names bytewise, so the scan stops at the first name past
// the one sought. File data is never read.

import * as zlib from 'node:zlib';

import type { Image, Node, PathKind } from './rootfs-image.ts';

const MAGIC = 0x73717368; // "hsqs"
const SUPERBLOCK_BYTES = 96;
const METADATA_SIZE = 8192;
const ABSENT = -1; // a table offset of all ones: the table is not there
const MAX_TARGET = 4095;

const COMPRESSORS: Record<number, string> = { 1: 'gzip', 2: 'lzma', 3: 'lzo', 4: 'xz', 5: 'lz4', 6: 'zstd' };

interface SqNode extends Node {
  /** Directories: where the listing starts and how long it is. */
  listing?: { block: number; offset: number; bytes: number };
  target?: Buffer;
}

/** A position in a metadata table: a block's offset in the image, an offset in its decoded bytes. */
interface MetaPos {
  block: number;
  offset: number;
}

export async function openSquashfs(img: Image) {
  const sb = await img.at(0, SUPERBLOCK_BYTES, 'superblock');
  if (sb.readUInt32LE(0) !== MAGIC) {
    throw img.damaged('superblock', `magic is 0x${sb.readUInt32LE(0).toString(16)}, expected 0x${MAGIC.toString(16)} ("hsqs")`);
  }
  const major = sb.readUInt16LE(28);
  const minor = sb.readUInt16LE(30);
  if (major !== 4) throw img.unsupported(`squashfs version ${major}.${minor} (only 4.0 is read)`);
  const blockSize = sb.readUInt32LE(12);
  const blockLog = sb.readUInt16LE(22);
  if (blockSize < 4096 || blockSize > 1 << 20 || 1 << blockLog !== blockSize) {
    throw img.damaged('superblock', `block size ${blockSize} with log ${blockLog} (expected a power of two from 4 KiB to 1 MiB)`);
  }
  const compressorId = sb.readUInt16LE(20);
  const compressor = COMPRESSORS[compressorId];
  if (!compressor) throw img.damaged('superblock', `compressor id ${compressorId} is unknown`);

  const bytesUsed = u64(img, sb, 40, 'superblock', 'bytes_used');
  img.declareSize(bytesUsed, 'bytes_used');
  const root = inodeRef(img, sb, 32, 'root inode reference');
  const inodeTable = u64(img, sb, 64, 'superblock', 'inode_table_start');
  const dirTable = u64(img, sb, 72, 'superblock', 'directory_table_start');
  if (!(SUPERBLOCK_BYTES <= inodeTable && inodeTable < dirTable && dirTable < bytesUsed)) {
    throw img.damaged('superblock', `inode table at ${inodeTable} and directory table at ${dirTable} are out of order in ${bytesUsed} bytes`);
  }
  // The directory table ends where the next table starts.
  let dirTableEnd = bytesUsed;
  for (const at of [48, 56, 80, 88]) {
    const start = u64(img, sb, at, 'superblock', 'a table start', true);
    if (start !== ABSENT && start > dirTable && start < dirTableEnd) dirTableEnd = start;
  }

  const inodes = new MetaTable(img, compressor, 'inode table', inodeTable, dirTable);
  const dirs = new MetaTable(img, compressor, 'directory table', dirTable, dirTableEnd);

  async function readInode(ref: MetaPos, what: string): Promise<SqNode> {
    let [head, pos] = await inodes.bytes(ref, 16, what);
    const type = head.readUInt16LE(0);
    const mode = head.readUInt16LE(2);
    const kind = inodeKind(type);
    if (!kind) throw img.damaged(what, `inode type ${type} is unknown`);
    let body: Buffer;
    switch (type) {
      case 1: { // basic directory
        [body] = await inodes.bytes(pos, 16, what);
        const size = body.readUInt16LE(8);
        return { kind, mode, size, listing: listing(body.readUInt32LE(0), body.readUInt16LE(10), size, what) };
      }
      case 8: { // extended directory
        [body] = await inodes.bytes(pos, 24, what);
        const size = body.readUInt32LE(4);
        return { kind, mode, size, listing: listing(body.readUInt32LE(8), body.readUInt16LE(18), size, what) };
      }
      case 2: // basic file
        [body] = await inodes.bytes(pos, 16, what);
        return { kind, mode, size: body.readUInt32LE(12) };
      case 9: // extended file
        [body] = await inodes.bytes(pos, 40, what);
        return { kind, mode, size: u64(img, body, 8, what, 'file size') };
      case 3: // basic symlink
      case 10: { // extended symlink: its xattr index follows the target
        [body, pos] = await inodes.bytes(pos, 8, what);
        const size = body.readUInt32LE(4);
        if (size > MAX_TARGET) throw img.damaged(what, `symlink target of ${size} bytes (at most ${MAX_TARGET})`);
        const [target] = await inodes.bytes(pos, size, what);
        return { kind, mode, size, target };
      }
      default: // devices, fifos, sockets
        return { kind, mode, size: 0 };
    }
  }

  function listing(block: number, offset: number, size: number, what: string): SqNode['listing'] {
    if (offset >= METADATA_SIZE) throw img.damaged(what, `directory listing offset ${offset} lies outside a metadata block`);
    // The size counts 3 bytes for the `.` and `..` entries that are not stored.
    return { block: dirTable + block, offset, bytes: Math.max(0, size - 3) };
  }

  return {
    root: () => readInode({ block: inodeTable + root.table, offset: root.offset }, 'root inode'),

    async child(dir: SqNode, name: Buffer): Promise<SqNode | undefined> {
      const where = dir.listing!;
      let pos: MetaPos = { block: where.block, offset: where.offset };
      let left = where.bytes;
      const what = 'directory listing';
      while (left > 0) {
        if (left < 12) throw img.damaged(what, `${left} bytes left, too few for a header`);
        let head: Buffer;
        [head, pos] = await dirs.bytes(pos, 12, what);
        left -= 12;
        const count = head.readUInt32LE(0) + 1;
        const start = head.readUInt32LE(4);
        if (count > 256) throw img.damaged(what, `a header announces ${count} entries (at most 256)`);
        for (let i = 0; i < count; i++) {
          if (left < 8) throw img.damaged(what, `${left} bytes left, too few for an entry`);
          let entry: Buffer;
          [entry, pos] = await dirs.bytes(pos, 8, what);
          const nameLength = entry.readUInt16LE(6) + 1;
          if (8 + nameLength > left) throw img.damaged(what, `a name of ${nameLength} bytes runs past the listing's end`);
          let entryName: Buffer;
          [entryName, pos] = await dirs.bytes(pos, nameLength, what);
          left -= 8 + nameLength;
          const order = Buffer.compare(entryName, name);
          if (order === 0) {
            const offset = entry.readUInt16LE(0);
            if (offset >= METADATA_SIZE) throw img.damaged(what, `inode offset ${offset} lies outside a metadata block`);
            return readInode({ block: inodeTable + start, offset }, `inode of '${name.toString('utf8')}'`);
          }
          if (order > 0) return undefined; // names are sorted
        }
      }
      return undefined;
    },

    async readlink(link: SqNode): Promise<Buffer> {
      return link.target!;
    },
  };
}

function inodeKind(type: number): PathKind | undefined {
  if (type === 1 || type === 8) return 'dir';
  if (type === 2 || type === 9) return 'file';
  if (type === 3 || type === 10) return 'symlink';
  if ((type >= 4 && type <= 7) || (type >= 11 && type <= 14)) return 'other';
  return undefined;
}

/** A little-endian u64 of `structure` that must fit a JS number; all ones reads as ABSENT where `absent` allows. */
function u64(img: Image, b: Buffer, at: number, structure: string, what: string, absent = false): number {
  const lo = b.readUInt32LE(at);
  const hi = b.readUInt32LE(at + 4);
  if (absent && lo === 0xffffffff && hi === 0xffffffff) return ABSENT;
  if (hi >= 1 << 21) throw img.damaged(structure, `${what} of 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is impossible`);
  return hi * 2 ** 32 + lo;
}

/** An inode reference: bits 16..47 a block's offset in the inode table, bits 0..15 an offset in it. */
function inodeRef(img: Image, b: Buffer, at: number, what: string): { table: number; offset: number } {
  const lo = b.readUInt32LE(at);
  const hi = b.readUInt32LE(at + 4);
  const offset = lo & 0xffff;
  if (hi >= 1 << 16 || offset >= METADATA_SIZE) throw img.damaged('superblock', `${what} 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is impossible`);
  return { table: hi * 65536 + (lo >>> 16), offset };
}

/** One metadata table: its blocks decoded on demand and kept for the lookup. */
class MetaTable {
  private readonly blocks = new Map<number, { data: Buffer; next: number }>();
  private readonly img: Image;
  private readonly compressor: string;
  private readonly name: string;
  private readonly start: number;
  private readonly end: number;

  constructor(img: Image, compressor: string, name: string, start: number, end: number) {
    this.img = img;
    this.compressor = compressor;
    this.name = name;
    this.start = start;
    this.end = end;
  }

  /** `length` bytes from `pos` on, across blocks; and the position after them. */
  async bytes(pos: MetaPos, length: number, what: string): Promise<[Buffer, MetaPos]> {
    this.img.charge(length, what);
    const out = Buffer.alloc(length);
    let filled = 0;
    let { block, offset } = pos;
    // Each turn takes bytes or moves to a later block, and blocks end at `end`.
    while (filled < length) {
      const { data, next } = await this.block(block, what);
      if (offset > data.length) throw this.img.damaged(`${this.name} block at ${block}`, `offset ${offset} past its ${data.length} bytes (${what})`);
      const n = Math.min(length - filled, data.length - offset);
      data.copy(out, filled, offset, offset + n);
      filled += n;
      offset += n;
      if (filled < length || offset === data.length) {
        block = next;
        offset = 0;
      }
    }
    return [out, { block, offset }];
  }

  private async block(at: number, what: string): Promise<{ data: Buffer; next: number }> {
    const cached = this.blocks.get(at);
    if (cached) return cached;
    const where = `${this.name} block at ${at}`;
    if (at < this.start || at + 2 > this.end) throw this.img.damaged(where, `it lies outside the table (${this.start}..${this.end}) (${what})`);
    const header = (await this.img.at(at, 2, where)).readUInt16LE(0);
    const stored = header & 0x7fff;
    if (stored === 0 || stored > METADATA_SIZE) throw this.img.damaged(where, `its header says ${stored} bytes (1 to ${METADATA_SIZE})`);
    if (at + 2 + stored > this.end) throw this.img.damaged(where, `its ${stored} bytes run past the table's end at ${this.end}`);
    const raw = await this.img.at(at + 2, stored, where);
    const data = header & 0x8000 ? raw : decompress(this.img, this.compressor, raw, where);
    const entry = { data, next: at + 2 + stored };
    if (this.blocks.size >= 64) this.blocks.delete(this.blocks.keys().next().value!);
    this.blocks.set(at, entry);
    return entry;
  }
}

/** One metadata block's bytes, at most 8 KiB. */
function decompress(img: Image, compressor: string, raw: Buffer, where: string): Buffer {
  const options = { maxOutputLength: METADATA_SIZE };
  let decode: () => Buffer;
  if (compressor === 'gzip') decode = () => zlib.inflateSync(raw, options);
  else if (compressor === 'zstd') decode = () => zlib.zstdDecompressSync(raw, options);
  else if (compressor === 'lz4') decode = () => lz4Block(raw, METADATA_SIZE);
  else throw img.unsupported(`compressor ${compressor}`);
  try {
    return decode();
  } catch (e) {
    throw img.damaged(where, `it does not decode as ${compressor} into at most ${METADATA_SIZE} bytes: ${(e as Error).message}`);
  }
}

/** Decodes one raw LZ4 block (no frame) of at most `max` bytes, checking every offset. */
export function lz4Block(src: Buffer, max: number): Buffer {
  const out = Buffer.alloc(max);
  let i = 0;
  let o = 0;
  const length = (n: number): number => {
    if (n !== 15) return n;
    for (;;) {
      if (i >= src.length) throw new RangeError('a length runs past the input');
      const b = src[i++]!;
      n += b;
      if (b !== 255) return n;
    }
  };
  while (i < src.length) {
    const token = src[i++]!;
    const literals = length(token >> 4);
    if (i + literals > src.length || o + literals > max) throw new RangeError('literals run past the input or the output');
    src.copy(out, o, i, i + literals);
    i += literals;
    o += literals;
    if (i === src.length) break; // the last sequence has literals only
    if (i + 2 > src.length) throw new RangeError('a match offset runs past the input');
    const distance = src[i]! | (src[i + 1]! << 8);
    i += 2;
    if (distance === 0 || distance > o) throw new RangeError(`match offset ${distance} points before the output`);
    const match = length(token & 15) + 4;
    if (o + match > max) throw new RangeError('a match runs past the output');
    for (let k = 0; k < match; k++, o++) out[o] = out[o - distance]!; // may overlap
  }
  return out.subarray(0, o);
}
