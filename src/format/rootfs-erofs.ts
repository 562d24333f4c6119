// erofs for lookupPath: the superblock, compact (32-byte) and extended
// (64-byte) inodes, and a directory's or symlink's data when it is stored
// flat: whole blocks from a start block (FLAT_PLAIN), with the last block
// possibly kept right after the inode (FLAT_INLINE). Compressed and
// chunk-based directories and symlinks are not decoded. A directory block is
// an array of 12-byte entries whose first name offset also gives their
// count, then the names; mkfs.erofs sorts names bytewise across the whole
// directory, so the scan stops at the first name past the one sought.

import { type Image, modeKind, type Node, type PathKind } from './rootfs-image.ts';

const SUPERBLOCK_OFFSET = 1024;
const SUPERBLOCK_BYTES = 128;
const MAGIC = 0xe0f5e1e2;
const MAX_TARGET = 4095;
const DIRENT_BYTES = 12;

const INCOMPAT_48BIT = 0x80;
const INCOMPAT_METABOX = 0x100;
const INCOMPAT_KNOWN = (INCOMPAT_METABOX << 1) - 1;
/** i_format bits: version (bit 0), data layout (bits 1..3), nlink-1 / dot-omitted (bit 4) */
const I_ALL = 0x1f;

const LAYOUTS = ['flat plain', 'compressed (full index)', 'flat inline', 'compressed (compact index)', 'chunk-based'];
const FLAT_PLAIN = 0;
const FLAT_INLINE = 2;

interface ErofsNode extends Node {
  nid: number;
  layout: number;
  startBlock: number;
  /** Where a FLAT_INLINE inode's last block is kept: right after the inode and its xattrs. */
  inlineAt: number;
}

export async function openErofs(img: Image) {
  const sb = await img.at(SUPERBLOCK_OFFSET, SUPERBLOCK_BYTES, 'superblock');
  if (sb.readUInt32LE(0) !== MAGIC) {
    throw img.damaged('superblock', `magic is 0x${sb.readUInt32LE(0).toString(16)}, expected 0x${MAGIC.toString(16)}`);
  }
  const blkszbits = sb[12]!;
  if (blkszbits < 9 || blkszbits > 16) throw img.damaged('superblock', `block size bits ${blkszbits} (9 to 16)`);
  const bs = 1 << blkszbits;
  const incompat = sb.readUInt32LE(80);
  if (incompat & ~INCOMPAT_KNOWN) throw img.unsupported(`incompatible features 0x${(incompat & ~INCOMPAT_KNOWN).toString(16)}`);
  if (incompat & INCOMPAT_48BIT) throw img.unsupported('48-bit block addressing');
  if (incompat & INCOMPAT_METABOX) throw img.unsupported('a metabox inode area');
  if (sb[90] !== 0) throw img.unsupported(`directory blocks larger than the block size (dirblkbits ${sb[90]})`);
  const blocks = sb.readUInt32LE(36);
  if (blocks > 0) img.declareSize(blocks * bs, 'blocks count');
  const rootNid = sb.readUInt16LE(14);
  const metaStart = sb.readUInt32LE(40) * bs;

  async function readInode(nid: number, what: string): Promise<ErofsNode> {
    const at = metaStart + nid * 32;
    const where = `inode ${nid} (${what})`;
    let raw = await img.at(at, 32, where);
    const format = raw.readUInt16LE(0);
    if (format & ~I_ALL) throw img.damaged(where, `i_format 0x${format.toString(16)} has unknown bits`);
    const extended = (format & 1) === 1;
    const layout = (format >> 1) & 7;
    if (layout >= LAYOUTS.length) throw img.damaged(where, `data layout ${layout} is unknown`);
    if (extended) raw = await img.at(at, 64, where);
    const mode = raw.readUInt16LE(4);
    const kind = modeKind(mode);
    if (!kind) throw img.damaged(where, `mode 0o${mode.toString(8)} has no file type`);
    let size: number;
    if (extended) {
      const hi = raw.readUInt32LE(12);
      if (hi >= 1 << 21) throw img.damaged(where, `size 0x${hi.toString(16)}${raw.readUInt32LE(8).toString(16).padStart(8, '0')} is impossible`);
      size = hi * 2 ** 32 + raw.readUInt32LE(8);
    } else {
      size = raw.readUInt32LE(8);
    }
    const xattrCount = raw.readUInt16LE(2);
    const xattrBytes = xattrCount === 0 ? 0 : 12 + (xattrCount - 1) * 4;
    return { nid, kind, mode, size, layout, startBlock: raw.readUInt32LE(16), inlineAt: at + (extended ? 64 : 32) + xattrBytes };
  }

  /** Block `index` of a flat inode's data: a whole block, or the shorter last one. */
  async function dataBlock(node: ErofsNode, index: number, what: string): Promise<Buffer> {
    if (node.layout !== FLAT_PLAIN && node.layout !== FLAT_INLINE) {
      throw img.unsupported(`the ${LAYOUTS[node.layout]} data layout`, what);
    }
    const count = Math.ceil(node.size / bs);
    const length = Math.min(bs, node.size - index * bs);
    if (node.layout === FLAT_INLINE && index === count - 1) {
      if ((node.inlineAt % bs) + length > bs) throw img.damaged(what, `inline data of ${length} bytes at ${node.inlineAt} crosses a block boundary`);
      return img.at(node.inlineAt, length, what);
    }
    return img.at((node.startBlock + index) * bs, length, what);
  }

  return {
    root: () => readInode(rootNid, 'root directory'),

    async child(dir: ErofsNode, name: Buffer): Promise<ErofsNode | undefined> {
      const what = `directory inode ${dir.nid}`;
      if (dir.size > img.size) throw img.damaged(what, `size ${dir.size} is larger than the image`);
      const count = Math.ceil(dir.size / bs);
      for (let index = 0; index < count; index++) {
        const block = await dataBlock(dir, index, what);
        const where = `${what} block ${index}`;
        if (block.length < DIRENT_BYTES) throw img.damaged(where, `${block.length} bytes, too few for an entry`);
        const namesStart = block.readUInt16LE(8);
        if (namesStart < DIRENT_BYTES || namesStart % DIRENT_BYTES !== 0 || namesStart > block.length) {
          throw img.damaged(where, `first name offset ${namesStart} in a block of ${block.length} bytes`);
        }
        const entries = namesStart / DIRENT_BYTES;
        for (let i = 0; i < entries; i++) {
          const from = block.readUInt16LE(i * DIRENT_BYTES + 8);
          let to = i + 1 < entries ? block.readUInt16LE((i + 1) * DIRENT_BYTES + 8) : block.length;
          if (from < namesStart || to < from || to > block.length) {
            throw img.damaged(where, `entry ${i}: name from ${from} to ${to}`);
          }
          if (i + 1 === entries) {
            const nul = block.indexOf(0, from);
            if (nul >= 0 && nul < to) to = nul; // the last name ends at the block's end or a NUL
          }
          const order = Buffer.compare(block.subarray(from, to), name);
          if (order === 0) {
            const lo = block.readUInt32LE(i * DIRENT_BYTES);
            const hi = block.readUInt32LE(i * DIRENT_BYTES + 4);
            if (hi >= 1 << 21) throw img.damaged(where, `entry ${i}: nid 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is impossible`);
            return readInode(hi * 2 ** 32 + lo, `'${name.toString('utf8')}'`);
          }
          if (order > 0) return undefined; // names are sorted
        }
      }
      return undefined;
    },

    async readlink(link: ErofsNode): Promise<Buffer> {
      const what = `symlink inode ${link.nid}`;
      if (link.size > MAX_TARGET) throw img.damaged(what, `target of ${link.size} bytes (at most ${MAX_TARGET})`);
      const parts: Buffer[] = [];
      for (let index = 0; index * bs < link.size; index++) parts.push(await dataBlock(link, index, what));
      return Buffer.concat(parts);
    },
  };
}

