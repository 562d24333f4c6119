// ext2/3/4 for lookupPath: the superblock, group descriptors (32- and
// 64-byte, classic or meta_bg placement), inodes, and a directory's or a
// slow symlink's blocks through an extent tree (any depth) or the classic
// direct/indirect block map. Directories are scanned linearly, which also
// reads htree directories: their index blocks look like one empty entry.
// Fast symlinks keep their target in the inode's block array.

import { type Image, modeKind, type Node, type PathKind } from './rootfs-image.ts';

const SUPERBLOCK_OFFSET = 1024;
const SUPERBLOCK_BYTES = 1024;
const MAGIC = 0xef53;
const ROOT_INO = 2;
const GOOD_OLD_INODE_SIZE = 128;
const MAX_TARGET = 4095;
const MAX_EXTENT_DEPTH = 5;
const EXTENT_MAGIC = 0xf30a;

// feature bits
const INCOMPAT_COMPRESSION = 0x1;
const INCOMPAT_FILETYPE = 0x2;
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_META_BG = 0x10;
const INCOMPAT_64BIT = 0x80;
/** Every incompatible feature this reader knows; none of the others changes directories or inodes. */
const INCOMPAT_KNOWN = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000;
const RO_COMPAT_SPARSE_SUPER = 0x1;
const COMPAT_SPARSE_SUPER2 = 0x200;

// inode flags
const FL_ENCRYPT = 0x800;
const FL_EXTENTS = 0x80000;
const FL_EA_INODE = 0x200000;
const FL_INLINE_DATA = 0x10000000;

interface Ext4Node extends Node {
  ino: number;
  flags: number;
  /** i_block: 60 bytes, the extent root, the block map, or a fast symlink's target */
  blocks: Buffer;
  /** 512-byte sectors the inode holds, for telling fast symlinks from slow ones */
  sectors: number;
  xattrBlock: number;
}

export async function openExt4(img: Image) {
  const sb = await img.at(SUPERBLOCK_OFFSET, SUPERBLOCK_BYTES, 'superblock');
  if (sb.readUInt16LE(0x38) !== MAGIC) {
    throw img.damaged('superblock', `magic is 0x${sb.readUInt16LE(0x38).toString(16)}, expected 0x${MAGIC.toString(16)}`);
  }
  const incompat = sb.readUInt32LE(0x60);
  const unknown = incompat & ~INCOMPAT_KNOWN;
  if (unknown) throw img.unsupported(`incompatible features 0x${unknown.toString(16)}`);
  if (incompat & INCOMPAT_COMPRESSION) throw img.unsupported('the compression feature');
  if (incompat & INCOMPAT_JOURNAL_DEV) throw img.unsupported('an external journal device layout (it holds no files)');

  const logBlock = sb.readUInt32LE(0x18);
  if (logBlock > 6) throw img.damaged('superblock', `s_log_block_size ${logBlock} (block sizes run from 1 KiB to 64 KiB)`);
  const bs = 1024 << logBlock;
  const firstDataBlock = sb.readUInt32LE(0x14);
  const blocksPerGroup = sb.readUInt32LE(0x20);
  const inodesPerGroup = sb.readUInt32LE(0x28);
  const inodesCount = sb.readUInt32LE(0x00);
  const is64 = (incompat & INCOMPAT_64BIT) !== 0;
  const blocksCount = sb.readUInt32LE(0x04) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  if (blocksCount * bs > Number.MAX_SAFE_INTEGER) throw img.damaged('superblock', `${blocksCount} blocks of ${bs} bytes is impossible`);
  img.declareSize(blocksCount * bs, 'blocks count');
  if (firstDataBlock > 1 || (firstDataBlock === 1 && bs !== 1024)) {
    throw img.damaged('superblock', `first data block ${firstDataBlock} with ${bs}-byte blocks`);
  }
  if (blocksPerGroup === 0) throw img.damaged('superblock', 'no blocks per group');
  if (inodesPerGroup === 0 || inodesPerGroup > bs * 8) throw img.damaged('superblock', `${inodesPerGroup} inodes per group (1 to ${bs * 8})`);
  const inodeSize = sb.readUInt32LE(0x4c) === 0 ? GOOD_OLD_INODE_SIZE : sb.readUInt16LE(0x58);
  if (inodeSize < GOOD_OLD_INODE_SIZE || inodeSize > bs || (inodeSize & (inodeSize - 1)) !== 0) {
    throw img.damaged('superblock', `inode size ${inodeSize} (a power of two from 128 to the block size)`);
  }
  const descSize = is64 ? sb.readUInt16LE(0xfe) : 32;
  if (descSize < 32 || descSize > bs || (descSize & (descSize - 1)) !== 0 || (is64 && descSize < 64)) {
    throw img.damaged('superblock', `group descriptor size ${descSize}${is64 ? ' with 64bit (64 to the block size)' : ''}`);
  }
  const groups = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  if (groups < 1 || inodesCount > groups * inodesPerGroup) {
    throw img.damaged('superblock', `${inodesCount} inodes do not fit ${groups} groups of ${inodesPerGroup}`);
  }
  const fileType = (incompat & INCOMPAT_FILETYPE) !== 0;
  const descPerBlock = bs / descSize;
  const metaBg = (incompat & INCOMPAT_META_BG) !== 0;
  const firstMetaBg = sb.readUInt32LE(0x104);
  const sparse = (sb.readUInt32LE(0x64) & RO_COMPAT_SPARSE_SUPER) !== 0;
  const sparse2 = (sb.readUInt32LE(0x5c) & COMPAT_SPARSE_SUPER2) !== 0;
  const backupGroups = [sb.readUInt32LE(0x24c), sb.readUInt32LE(0x250)];

  const hasSuper = (group: number): boolean => {
    if (group === 0) return true;
    if (sparse2) return backupGroups.includes(group);
    if (group <= 1 || !sparse) return true;
    if (group % 2 === 0) return false;
    return [3, 5, 7].some((base) => {
      let n = base;
      while (n < group) n *= base;
      return n === group;
    });
  };

  /** The block holding group `group`'s descriptor (the kernel's descriptor_loc). */
  const descriptorBlock = (group: number): number => {
    const n = Math.floor(group / descPerBlock);
    if (!metaBg || n < firstMetaBg) return firstDataBlock + 1 + n;
    const first = n * descPerBlock;
    let extra = hasSuper(first) ? 1 : 0;
    if (bs === 1024 && n === 0 && firstDataBlock === 0) extra++;
    return firstDataBlock + first * blocksPerGroup + extra;
  };

  const checkBlock = (block: number, what: string): number => {
    if (block >= blocksCount || block < firstDataBlock) throw img.damaged(what, `block ${block} lies outside the ${blocksCount} blocks of the image`);
    return block;
  };

  async function readInode(ino: number, what: string): Promise<Ext4Node> {
    if (ino < 1 || ino > inodesCount) throw img.damaged(what, `inode number ${ino} (1 to ${inodesCount})`);
    const group = Math.floor((ino - 1) / inodesPerGroup);
    const index = (ino - 1) % inodesPerGroup;
    const descAt = checkBlock(descriptorBlock(group), `group ${group} descriptor`) * bs + (group % descPerBlock) * descSize;
    const desc = await img.at(descAt, descSize, `group ${group} descriptor`);
    const table = desc.readUInt32LE(0x08) + (is64 ? desc.readUInt32LE(0x28) * 2 ** 32 : 0);
    checkBlock(table, `group ${group} inode table`);
    const raw = await img.at(table * bs + index * inodeSize, GOOD_OLD_INODE_SIZE, `inode ${ino}`);
    const mode = raw.readUInt16LE(0x00);
    const kind = modeKind(mode);
    if (!kind) throw img.damaged(`inode ${ino} (${what})`, `mode 0o${mode.toString(8)} has no file type: the inode is free or corrupt`);
    const size = raw.readUInt32LE(0x04) + raw.readUInt32LE(0x6c) * 2 ** 32;
    if (!Number.isSafeInteger(size)) throw img.damaged(`inode ${ino}`, `size ${size} is impossible`);
    return {
      ino,
      kind,
      mode,
      size,
      flags: raw.readUInt32LE(0x20),
      blocks: raw.subarray(0x28, 0x28 + 60),
      sectors: raw.readUInt32LE(0x1c) + raw.readUInt16LE(0x74) * 2 ** 32,
      xattrBlock: raw.readUInt32LE(0x68) + raw.readUInt16LE(0x76) * 2 ** 32,
    };
  }

  async function readBlock(block: number, what: string): Promise<Buffer> {
    return img.at(checkBlock(block, what) * bs, bs, what);
  }

  /** The physical block of logical block `lblock` of `node`, 0 for a hole. */
  async function mapBlock(node: Ext4Node, lblock: number): Promise<number> {
    const what = `inode ${node.ino} block map`;
    if (node.flags & FL_EXTENTS) return mapExtent(node, lblock);
    const perBlock = bs / 4;
    const pointer = async (block: number, index: number): Promise<number> =>
      block === 0 ? 0 : (await readBlock(block, what)).readUInt32LE(index * 4);
    let n = lblock;
    if (n < 12) return node.blocks.readUInt32LE(n * 4);
    n -= 12;
    if (n < perBlock) return pointer(node.blocks.readUInt32LE(48), n);
    n -= perBlock;
    if (n < perBlock ** 2) {
      return pointer(await pointer(node.blocks.readUInt32LE(52), Math.floor(n / perBlock)), n % perBlock);
    }
    n -= perBlock ** 2;
    if (n < perBlock ** 3) {
      const level1 = await pointer(node.blocks.readUInt32LE(56), Math.floor(n / perBlock ** 2));
      const level2 = await pointer(level1, Math.floor(n / perBlock) % perBlock);
      return pointer(level2, n % perBlock);
    }
    throw img.damaged(what, `logical block ${lblock} is past the reach of a block map`);
  }

  async function mapExtent(node: Ext4Node, lblock: number): Promise<number> {
    const what = `inode ${node.ino} extent tree`;
    let level = node.blocks;
    let depth = -1;
    // Each turn goes one level down, and the depth is at most 5.
    for (;;) {
      const magic = level.readUInt16LE(0);
      const entries = level.readUInt16LE(2);
      const max = level.readUInt16LE(4);
      const nodeDepth = level.readUInt16LE(6);
      if (magic !== EXTENT_MAGIC) throw img.damaged(what, `node magic 0x${magic.toString(16)}, expected 0x${EXTENT_MAGIC.toString(16)}`);
      if (entries > max || 12 + max * 12 > level.length) throw img.damaged(what, `a node says ${entries} of ${max} entries in ${level.length} bytes`);
      if (depth < 0 ? nodeDepth > MAX_EXTENT_DEPTH : nodeDepth !== depth - 1) {
        throw img.damaged(what, `node depth ${nodeDepth}${depth < 0 ? ` (at most ${MAX_EXTENT_DEPTH})` : `, expected ${depth - 1}`}`);
      }
      depth = nodeDepth;
      // The last entry starting at or before the block.
      let found = -1;
      for (let i = 0; i < entries; i++) {
        if (level.readUInt32LE(12 + i * 12) <= lblock) found = i;
        else break;
      }
      if (found < 0) return 0;
      const e = 12 + found * 12;
      if (depth === 0) {
        const start = level.readUInt32LE(e);
        let length = level.readUInt16LE(e + 4);
        const uninitialized = length > 32768;
        if (uninitialized) length -= 32768;
        if (lblock >= start + length || uninitialized) return 0; // a hole, or space that reads as zeros
        return level.readUInt16LE(e + 6) * 2 ** 32 + level.readUInt32LE(e + 8) + (lblock - start);
      }
      const child = level.readUInt16LE(e + 8) * 2 ** 32 + level.readUInt32LE(e + 4);
      level = await readBlock(child, what);
    }
  }

  /** Logical block `lblock` of `node`, or undefined for a hole (or space that reads as zeros). */
  async function dataBlock(node: Ext4Node, lblock: number): Promise<Buffer | undefined> {
    const block = await mapBlock(node, lblock);
    return block === 0 ? undefined : readBlock(block, `inode ${node.ino} block ${lblock}`);
  }

  return {
    root: () => readInode(ROOT_INO, 'root directory'),

    async child(dir: Ext4Node, name: Buffer): Promise<Ext4Node | undefined> {
      const what = `directory inode ${dir.ino}`;
      if (dir.flags & FL_ENCRYPT) throw img.unsupported('encryption (fscrypt)', what);
      if (dir.flags & FL_INLINE_DATA) throw img.unsupported('inline data (entries kept in the inode)', what);
      if (dir.size > img.size) throw img.damaged(what, `size ${dir.size} is larger than the image`);
      const count = Math.ceil(dir.size / bs);
      for (let lblock = 0; lblock < count; lblock++) {
        // A hole in a directory is damage (the kernel says so too); were it
        // skipped, a huge sparse directory could keep the scan busy.
        const block = await dataBlock(dir, lblock);
        if (!block) throw img.damaged(what, `logical block ${lblock} of its ${count} is a hole`);
        // Each turn moves on by rec_len, which is at least 12.
        for (let at = 0; at + 8 <= bs; ) {
          const ino = block.readUInt32LE(at);
          const recLen = decodeRecLen(block.readUInt16LE(at + 4), bs);
          const nameLength = fileType ? block[at + 6]! : block.readUInt16LE(at + 6);
          if (recLen < 12 || recLen % 4 !== 0 || at + recLen > bs || 8 + nameLength > recLen) {
            throw img.damaged(`${what} block ${lblock}`, `entry at ${at}: rec_len ${recLen} with a name of ${nameLength} bytes`);
          }
          if (ino !== 0 && nameLength === name.length && block.compare(name, 0, name.length, at + 8, at + 8 + nameLength) === 0) {
            return readInode(ino, `'${name.toString('utf8')}'`);
          }
          at += recLen;
        }
      }
      return undefined;
    },

    async readlink(link: Ext4Node): Promise<Buffer> {
      const what = `symlink inode ${link.ino}`;
      if (link.size > MAX_TARGET) throw img.damaged(what, `target of ${link.size} bytes (at most ${MAX_TARGET})`);
      // A fast symlink holds no blocks of its own (an xattr block aside).
      const xattrSectors = link.xattrBlock !== 0 && !(link.flags & FL_EA_INODE) ? bs / 512 : 0;
      const inline = (link.flags & FL_INLINE_DATA) !== 0 || ((link.flags & FL_EXTENTS) === 0 && link.sectors - xattrSectors === 0);
      if (inline) {
        if (link.size > link.blocks.length) {
          // With inline_data, a longer target goes on in the system.data xattr.
          if (link.flags & FL_INLINE_DATA) throw img.unsupported('inline data (a symlink target continued in an xattr)', what);
          throw img.damaged(what, `fast symlink target of ${link.size} bytes (at most ${link.blocks.length})`);
        }
        return Buffer.from(link.blocks.subarray(0, link.size));
      }
      const parts: Buffer[] = [];
      for (let lblock = 0; lblock * bs < link.size; lblock++) {
        parts.push((await dataBlock(link, lblock)) ?? Buffer.alloc(bs));
      }
      return Buffer.concat(parts).subarray(0, link.size);
    },
  };
}

/** rec_len as stored: blocks of 64 KiB and more need its two low bits as high bits. */
function decodeRecLen(stored: number, bs: number): number {
  if (bs < 65536) return stored;
  if (stored === 65535 || stored === 0) return bs;
  return (stored & 65532) | ((stored & 3) << 16);
}
