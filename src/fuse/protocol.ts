// The FUSE kernel protocol, spoken without libfuse: the opcode table, typed
// decoders for the requests a read-only filesystem answers, encoders for the
// replies, INIT negotiation, and `Connection.dispatch`: request bytes in,
// reply bytes out (or none), given a `FileSystem` (fs.ts). Nothing here
// touches /dev/fuse; session.ts moves the bytes. Layouts follow
// <linux/fuse.h>; everything is little-endian (the host's byte order).

import { AbortedError, UsageError } from '../errors.ts';
import { BufferPool } from '../util/bufpool.ts';
import { FuseErrnoError, FuseProtocolError } from './errors.ts';
import { type Attr, type DirEntry, type Entry, type FileSystem, type OpenReply, type RequestContext, S_IFMT, S_IFREG, type StatFs } from './fs.ts';

// ---------------------------------------------------------------------------
// Versions, sizes, flags

/** The protocol major version; the only one there is. */
export const FUSE_KERNEL_VERSION = 7;
/** The newest minor version this code speaks (struct layouts of Linux 6.2+). */
export const FUSE_KERNEL_MINOR_VERSION = 38;
/** The oldest kernel minor we serve (Linux 2.6.32); older ones are refused at INIT. */
export const FUSE_MIN_KERNEL_MINOR = 13;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ENTRY_OUT_SIZE = 128;
export const ATTR_OUT_SIZE = 104;
export const OPEN_OUT_SIZE = 16;
export const STATFS_OUT_SIZE = 80;
export const GETXATTR_OUT_SIZE = 8;
export const INIT_OUT_SIZE = 64;
/** init_out as kernels before 7.23 know it. */
export const COMPAT_22_INIT_OUT_SIZE = 24;
/** init_out with major and minor only (the answer to a newer major). */
export const COMPAT_INIT_OUT_SIZE = 8;
export const DIRENT_HEADER_SIZE = 24;
export const DIRENTPLUS_HEADER_SIZE = ENTRY_OUT_SIZE + DIRENT_HEADER_SIZE;
/** The kernel refuses reads of /dev/fuse into buffers smaller than this. */
export const FUSE_MIN_READ_BUFFER = 8192;
/** fuse_in_header + fuse_write_in: room the kernel wants besides max_write. */
export const WRITE_REQUEST_OVERHEAD = 80;
export const PAGE_SIZE = 4096;

/** Request opcodes (enum fuse_opcode). */
export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
} as const;

/** INIT capability flags (the low 32 bits; `flags2` holds bits 32–63). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  POSIX_LOCKS: 1 << 1,
  FILE_OPS: 1 << 2,
  ATOMIC_O_TRUNC: 1 << 3,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  SPLICE_WRITE: 1 << 7,
  SPLICE_MOVE: 1 << 8,
  SPLICE_READ: 1 << 9,
  FLOCK_LOCKS: 1 << 10,
  HAS_IOCTL_DIR: 1 << 11,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18,
  HANDLE_KILLPRIV: 1 << 19,
  POSIX_ACL: 1 << 20,
  ABORT_ERROR: 1 << 21,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  EXPLICIT_INVAL_DATA: 1 << 25,
  MAP_ALIGNMENT: 1 << 26,
  SUBMOUNTS: 1 << 27,
  HANDLE_KILLPRIV_V2: 1 << 28,
  SETXATTR_EXT: 1 << 29,
  INIT_EXT: 1 << 30,
  INIT_RESERVED: 2 ** 31,
} as const;

/** Minor version from which init_in/init_out carry `flags2` (FUSE_INIT_EXT). */
export const INIT_EXT_MINOR = 36;

/** open_out.open_flags. */
export const OpenFlag = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  NOFLUSH: 1 << 5,
} as const;

/** getattr_in.getattr_flags: `fh` is valid (fstat on an open file). */
export const GETATTR_FH = 1 << 0;

/** Linux errno values the protocol layer and filesystems answer with. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EPROTO: 71,
  EOVERFLOW: 75,
  EOPNOTSUPP: 95,
} as const;

const O_ACCMODE = 3;
const O_RDONLY = 0;
const W_OK = 2;
const X_OK = 1;

// ---------------------------------------------------------------------------
// The opcode table

export interface OpcodeInfo {
  readonly name: string;
  /** Size of the fixed input struct; names or data may follow it. */
  readonly inSize: number;
  /** FORGET, BATCH_FORGET, INTERRUPT and NOTIFY_REPLY are never answered. */
  readonly reply: boolean;
  /** What a read-only filesystem does with it. */
  readonly kind: 'serve' | 'read-only' | 'unsupported';
}

function op(name: string, inSize: number, kind: OpcodeInfo['kind'], reply = true): OpcodeInfo {
  return { name, inSize, reply, kind };
}

/** Every opcode this layer knows. Opcodes missing here are answered ENOSYS. */
export const OPCODES: ReadonlyMap<number, OpcodeInfo> = new Map<number, OpcodeInfo>([
  [Op.LOOKUP, op('LOOKUP', 0, 'serve')],
  [Op.FORGET, op('FORGET', 8, 'serve', false)],
  [Op.GETATTR, op('GETATTR', 16, 'serve')],
  [Op.SETATTR, op('SETATTR', 0, 'read-only')],
  [Op.READLINK, op('READLINK', 0, 'serve')],
  [Op.SYMLINK, op('SYMLINK', 0, 'read-only')],
  [Op.MKNOD, op('MKNOD', 0, 'read-only')],
  [Op.MKDIR, op('MKDIR', 0, 'read-only')],
  [Op.UNLINK, op('UNLINK', 0, 'read-only')],
  [Op.RMDIR, op('RMDIR', 0, 'read-only')],
  [Op.RENAME, op('RENAME', 0, 'read-only')],
  [Op.LINK, op('LINK', 0, 'read-only')],
  [Op.OPEN, op('OPEN', 8, 'serve')],
  [Op.READ, op('READ', 40, 'serve')],
  [Op.WRITE, op('WRITE', 0, 'read-only')],
  [Op.STATFS, op('STATFS', 0, 'serve')],
  [Op.RELEASE, op('RELEASE', 24, 'serve')],
  [Op.FSYNC, op('FSYNC', 0, 'serve')],
  [Op.SETXATTR, op('SETXATTR', 0, 'read-only')],
  [Op.GETXATTR, op('GETXATTR', 8, 'serve')],
  [Op.LISTXATTR, op('LISTXATTR', 8, 'serve')],
  [Op.REMOVEXATTR, op('REMOVEXATTR', 0, 'read-only')],
  [Op.FLUSH, op('FLUSH', 0, 'serve')],
  [Op.INIT, op('INIT', 16, 'serve')],
  [Op.OPENDIR, op('OPENDIR', 8, 'serve')],
  [Op.READDIR, op('READDIR', 40, 'serve')],
  [Op.RELEASEDIR, op('RELEASEDIR', 24, 'serve')],
  [Op.FSYNCDIR, op('FSYNCDIR', 0, 'serve')],
  [Op.GETLK, op('GETLK', 0, 'unsupported')],
  [Op.SETLK, op('SETLK', 0, 'unsupported')],
  [Op.SETLKW, op('SETLKW', 0, 'unsupported')],
  [Op.ACCESS, op('ACCESS', 8, 'serve')],
  [Op.CREATE, op('CREATE', 0, 'read-only')],
  [Op.INTERRUPT, op('INTERRUPT', 8, 'serve', false)],
  [Op.BMAP, op('BMAP', 0, 'unsupported')],
  [Op.DESTROY, op('DESTROY', 0, 'serve')],
  [Op.IOCTL, op('IOCTL', 0, 'unsupported')],
  [Op.POLL, op('POLL', 0, 'unsupported')],
  [Op.NOTIFY_REPLY, op('NOTIFY_REPLY', 0, 'serve', false)],
  [Op.BATCH_FORGET, op('BATCH_FORGET', 8, 'serve', false)],
  [Op.FALLOCATE, op('FALLOCATE', 0, 'read-only')],
  [Op.READDIRPLUS, op('READDIRPLUS', 40, 'serve')],
  [Op.RENAME2, op('RENAME2', 0, 'read-only')],
  [Op.LSEEK, op('LSEEK', 0, 'unsupported')],
  [Op.COPY_FILE_RANGE, op('COPY_FILE_RANGE', 0, 'read-only')],
  [Op.SETUPMAPPING, op('SETUPMAPPING', 0, 'unsupported')],
  [Op.REMOVEMAPPING, op('REMOVEMAPPING', 0, 'unsupported')],
  [Op.SYNCFS, op('SYNCFS', 0, 'serve')],
  [Op.TMPFILE, op('TMPFILE', 0, 'read-only')],
  [Op.STATX, op('STATX', 0, 'unsupported')],
]);

/** A name for logs: "READ" or "opcode 4242". */
export function opcodeName(opcode: number): string {
  return OPCODES.get(opcode)?.name ?? `opcode ${opcode}`;
}

// ---------------------------------------------------------------------------
// Little helpers for 64-bit fields (ids, offsets and sizes stay below 2^53)

function getU64(b: Buffer, off: number): number {
  return b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 0x1_0000_0000;
}

function putU64(b: Buffer, off: number, n: number): void {
  b.writeUInt32LE(n >>> 0, off);
  b.writeUInt32LE(Math.floor(n / 0x1_0000_0000) >>> 0, off + 4);
}

/** A possibly negative count of seconds as the u64 two's complement the kernel reads as s64. */
function putS64(b: Buffer, off: number, n: number): void {
  b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(n)), off);
}

function cString(b: Buffer, start = 0): string {
  const end = b.indexOf(0, start);
  return b.toString('utf8', start, end < 0 ? b.length : end);
}

// ---------------------------------------------------------------------------
// Request decoders

export interface InHeader {
  len: number;
  opcode: number;
  unique: number;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
  /** Length of extensions at the end of the request, in 8-byte units (7.36+). */
  totalExtlen: number;
}

export function decodeInHeader(b: Buffer): InHeader {
  if (b.length < IN_HEADER_SIZE) {
    throw new FuseProtocolError(`request of ${b.length} bytes is shorter than the ${IN_HEADER_SIZE}-byte fuse_in_header`);
  }
  return {
    len: b.readUInt32LE(0),
    opcode: b.readUInt32LE(4),
    unique: getU64(b, 8),
    nodeid: getU64(b, 16),
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    pid: b.readUInt32LE(32),
    totalExtlen: b.readUInt16LE(36),
  };
}

export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  /** Capability bits 32–63; only meaningful when `flags` has INIT_EXT (7.36+). */
  flags2: number;
}

export function decodeInitIn(body: Buffer): InitIn {
  return {
    major: body.readUInt32LE(0),
    minor: body.readUInt32LE(4),
    maxReadahead: body.readUInt32LE(8),
    flags: body.readUInt32LE(12),
    flags2: body.length >= 20 ? body.readUInt32LE(16) : 0,
  };
}

export interface ReadIn {
  fh: number;
  offset: number;
  size: number;
  readFlags: number;
  flags: number;
}

/** fuse_read_in, used by READ, READDIR and READDIRPLUS. */
export function decodeReadIn(body: Buffer): ReadIn {
  return {
    fh: getU64(body, 0),
    offset: getU64(body, 8),
    size: body.readUInt32LE(16),
    readFlags: body.readUInt32LE(20),
    flags: body.readUInt32LE(32),
  };
}

export interface GetattrIn {
  getattrFlags: number;
  fh: number;
}

export function decodeGetattrIn(body: Buffer): GetattrIn {
  return { getattrFlags: body.readUInt32LE(0), fh: getU64(body, 8) };
}

export interface OpenIn {
  flags: number;
  openFlags: number;
}

export function decodeOpenIn(body: Buffer): OpenIn {
  return { flags: body.readUInt32LE(0), openFlags: body.readUInt32LE(4) };
}

export interface ReleaseIn {
  fh: number;
  flags: number;
  releaseFlags: number;
}

export function decodeReleaseIn(body: Buffer): ReleaseIn {
  return { fh: getU64(body, 0), flags: body.readUInt32LE(8), releaseFlags: body.readUInt32LE(12) };
}

export interface GetxattrIn {
  /** The caller's buffer size; 0 asks for the size only. */
  size: number;
  /** Attribute name (GETXATTR only; LISTXATTR has none). */
  name: string;
}

export function decodeGetxattrIn(body: Buffer): GetxattrIn {
  return { size: body.readUInt32LE(0), name: body.length > 8 ? cString(body, 8) : '' };
}

/** The NUL-terminated name of LOOKUP. */
export function decodeName(body: Buffer): string {
  return cString(body);
}

export function decodeInterruptIn(body: Buffer): { unique: number } {
  return { unique: getU64(body, 0) };
}

export function decodeForgetIn(body: Buffer): { nlookup: number } {
  return { nlookup: getU64(body, 0) };
}

export function decodeBatchForgetIn(body: Buffer): Array<{ nodeid: number; nlookup: number }> {
  const count = body.readUInt32LE(0);
  const out: Array<{ nodeid: number; nlookup: number }> = [];
  for (let i = 0, off = 8; i < count && off + 16 <= body.length; i++, off += 16) {
    out.push({ nodeid: getU64(body, off), nlookup: getU64(body, off + 8) });
  }
  return out;
}

export function decodeAccessIn(body: Buffer): { mask: number } {
  return { mask: body.readUInt32LE(0) };
}

// ---------------------------------------------------------------------------
// Reply encoders

/** fuse_out_header; `errno` is positive (sent negated) or 0. */
export function encodeOutHeader(len: number, errno: number, unique: number): Buffer {
  const b = Buffer.allocUnsafe(OUT_HEADER_SIZE);
  b.writeUInt32LE(len, 0);
  b.writeInt32LE(errno === 0 ? 0 : -errno, 4);
  putU64(b, 8, unique);
  return b;
}

function splitMs(ms: number): [sec: number, nsec: number] {
  const sec = Math.floor(ms / 1000);
  const nsec = Math.min(999_999_999, Math.max(0, Math.round((ms - sec * 1000) * 1e6)));
  return [sec, nsec];
}

function putTimeout(b: Buffer, secOff: number, nsecOff: number, ms: number): void {
  const [sec, nsec] = splitMs(Math.max(0, ms));
  putU64(b, secOff, sec);
  b.writeUInt32LE(nsec, nsecOff);
}

/** fuse_attr at `off` (88 bytes). */
export function encodeAttr(b: Buffer, off: number, a: Attr): void {
  const [sec, nsec] = splitMs(a.mtimeMs);
  putU64(b, off, a.ino);
  putU64(b, off + 8, a.size);
  putU64(b, off + 16, Math.ceil(a.size / 512));
  putS64(b, off + 24, sec); // atime
  putS64(b, off + 32, sec); // mtime
  putS64(b, off + 40, sec); // ctime
  b.writeUInt32LE(nsec, off + 48);
  b.writeUInt32LE(nsec, off + 52);
  b.writeUInt32LE(nsec, off + 56);
  b.writeUInt32LE(a.mode, off + 60);
  b.writeUInt32LE(a.nlink, off + 64);
  b.writeUInt32LE(a.uid, off + 68);
  b.writeUInt32LE(a.gid, off + 72);
  b.writeUInt32LE(0, off + 76); // rdev
  b.writeUInt32LE(a.blksize ?? 0, off + 80);
  b.writeUInt32LE(0, off + 84); // flags
}

/** fuse_entry_out at `off` (128 bytes); `undefined` is a negative entry (nodeid 0). */
export function encodeEntryOutAt(b: Buffer, off: number, e: Entry | undefined, negativeTimeoutMs = 0): void {
  if (!e) {
    b.fill(0, off, off + ENTRY_OUT_SIZE);
    putTimeout(b, off + 16, off + 32, negativeTimeoutMs);
    return;
  }
  putU64(b, off, e.attr.ino);
  putU64(b, off + 8, 0); // generation: node ids are never reused
  putTimeout(b, off + 16, off + 32, e.entryTimeoutMs);
  putTimeout(b, off + 24, off + 36, e.attrTimeoutMs);
  encodeAttr(b, off + 40, e.attr);
}

export function encodeEntryOut(e: Entry | undefined, negativeTimeoutMs = 0): Buffer {
  const b = Buffer.alloc(ENTRY_OUT_SIZE);
  encodeEntryOutAt(b, 0, e, negativeTimeoutMs);
  return b;
}

export function encodeAttrOut(attr: Attr, attrTimeoutMs: number): Buffer {
  const b = Buffer.alloc(ATTR_OUT_SIZE);
  putTimeout(b, 0, 8, attrTimeoutMs);
  encodeAttr(b, 16, attr);
  return b;
}

/** The open_out flags an OpenReply asks for. */
export function openFlagsOf(o: OpenReply): number {
  return (o.directIo ? OpenFlag.DIRECT_IO : 0) | (o.keepCache ? OpenFlag.KEEP_CACHE : 0) | (o.cacheDir ? OpenFlag.CACHE_DIR : 0);
}

export function encodeOpenOut(fh: number, openFlags: number): Buffer {
  const b = Buffer.alloc(OPEN_OUT_SIZE);
  putU64(b, 0, fh);
  b.writeUInt32LE(openFlags, 8);
  return b;
}

export function encodeStatfsOut(s: StatFs): Buffer {
  const b = Buffer.alloc(STATFS_OUT_SIZE);
  putU64(b, 0, s.blocks);
  putU64(b, 8, s.bfree);
  putU64(b, 16, s.bavail);
  putU64(b, 24, s.files);
  putU64(b, 32, s.ffree);
  b.writeUInt32LE(s.bsize, 40);
  b.writeUInt32LE(s.namelen, 44);
  b.writeUInt32LE(s.bsize, 48); // frsize
  return b;
}

/** fuse_getxattr_out: the size a GETXATTR/LISTXATTR with size 0 asks for. */
export function encodeGetxattrOut(size: number): Buffer {
  const b = Buffer.alloc(GETXATTR_OUT_SIZE);
  b.writeUInt32LE(size, 0);
  return b;
}

/** Notification codes (the `error` field of an out header with unique 0). */
export const NotifyCode = {
  POLL: 1,
  INVAL_INODE: 2,
  INVAL_ENTRY: 3,
  STORE: 4,
  RETRIEVE: 5,
  DELETE: 6,
} as const;

export const NOTIFY_RETRIEVE_OUT_SIZE = 32;

/**
 * FUSE_NOTIFY_RETRIEVE for `nodeid`: the kernel answers with a NOTIFY_REPLY
 * request carrying the cached pages. Sent with size 0 it is a way to make the
 * kernel send *some* request, which wakes a reader blocked in read(2) of
 * /dev/fuse. Recent kernels accept it for cached regular files only (EINVAL
 * for a folder, ENOENT for a node they do not hold).
 */
export function encodeNotifyRetrieve(notifyUnique: number, nodeid: number, offset: number, size: number): Buffer {
  const b = Buffer.alloc(OUT_HEADER_SIZE + NOTIFY_RETRIEVE_OUT_SIZE);
  b.writeUInt32LE(b.length, 0);
  b.writeInt32LE(NotifyCode.RETRIEVE, 4);
  putU64(b, 8, 0); // unique 0: a notification
  putU64(b, 16, notifyUnique);
  putU64(b, 24, nodeid);
  putU64(b, 32, offset);
  b.writeUInt32LE(size, 40);
  return b;
}

/** Bytes a fuse_dirent takes, padded to 8. */
export function direntSize(nameLen: number): number {
  return (DIRENT_HEADER_SIZE + nameLen + 7) & ~7;
}

/** Bytes a fuse_direntplus takes, padded to 8. */
export function direntplusSize(nameLen: number): number {
  return (DIRENTPLUS_HEADER_SIZE + nameLen + 7) & ~7;
}

function putDirent(b: Buffer, off: number, e: DirEntry, name: Buffer, nextOff: number): void {
  putU64(b, off, e.ino);
  putU64(b, off + 8, nextOff);
  b.writeUInt32LE(name.length, off + 16);
  b.writeUInt32LE((e.type & 0o170000) >>> 12, off + 20);
  name.copy(b, off + DIRENT_HEADER_SIZE);
}

/**
 * READDIR's answer: entries from index `offset` on (the kernel's offset is
 * the `off` of the last entry it consumed; entry i carries off = i + 1),
 * as many whole dirents as fit in `size` bytes.
 */
export function packDirents(entries: readonly DirEntry[], offset: number, size: number): Buffer {
  const names: Buffer[] = [];
  let total = 0;
  for (let i = offset; i < entries.length; i++) {
    const name = Buffer.from(entries[i]!.name);
    const len = direntSize(name.length);
    if (total + len > size) break;
    names.push(name);
    total += len;
  }
  const b = Buffer.alloc(total);
  let pos = 0;
  names.forEach((name, k) => {
    putDirent(b, pos, entries[offset + k]!, name, offset + k + 1);
    pos += direntSize(name.length);
  });
  return b;
}

/**
 * READDIRPLUS's answer: like `packDirents`, each dirent preceded by the
 * entry_out a lookup of it gives (`undefined`: nodeid 0, the kernel then
 * takes the name only). `entryOf` is called only for entries that fit, since
 * each returned entry counts as a lookup in the kernel.
 */
export async function packDirentsPlus(
  entries: readonly DirEntry[],
  offset: number,
  size: number,
  entryOf: (e: DirEntry) => Entry | undefined | Promise<Entry | undefined>,
): Promise<Buffer> {
  const names: Buffer[] = [];
  let total = 0;
  for (let i = offset; i < entries.length; i++) {
    const name = Buffer.from(entries[i]!.name);
    const len = direntplusSize(name.length);
    if (total + len > size) break;
    names.push(name);
    total += len;
  }
  const b = Buffer.alloc(total);
  let pos = 0;
  for (let k = 0; k < names.length; k++) {
    const e = entries[offset + k]!;
    const name = names[k]!;
    encodeEntryOutAt(b, pos, await entryOf(e));
    putDirent(b, pos + ENTRY_OUT_SIZE, e, name, offset + k + 1);
    pos += direntplusSize(name.length);
  }
  return b;
}

// ---------------------------------------------------------------------------
// INIT negotiation

export interface ProtocolOptions {
  /** Largest READ the kernel may send, in pages (MAX_PAGES); default 256 = 1 MiB. */
  maxPages?: number;
  /** Readahead we accept, bytes (the kernel's offer caps it); default 1 MiB. */
  maxReadahead?: number;
  /** Background requests (readahead, async I/O) in flight; default 64. */
  maxBackground?: number;
  /** Background requests after which the kernel reports congestion; default 3/4 of maxBackground. */
  congestionThreshold?: number;
  /** Largest WRITE; nothing is written, so small; default 4096, at most 65536. */
  maxWrite?: number;
  /** Ask for READDIRPLUS (attributes along with names); default true. */
  readdirplus?: boolean;
}

export interface Negotiated {
  major: number;
  minor: number;
  /** Granted capability flags, bits 0–31 and 32–63. */
  flags: number;
  flags2: number;
  maxReadahead: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  maxPages: number;
  timeGran: number;
  /** What the kernel offered. */
  kernel: InitIn;
}

export type InitOutcome =
  /** The kernel's major is newer: answer with ours only; it may ask again. */
  | { action: 'major-only'; reply: Buffer }
  | { action: 'accept'; negotiated: Negotiated; reply: Buffer };

interface ResolvedOptions {
  maxPages: number;
  maxReadahead: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  readdirplus: boolean;
}

function intIn(name: string, v: number | undefined, dflt: number, min: number, max: number): number {
  const n = v ?? dflt;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`FUSE option ${name} must be an integer in [${min}, ${max}]: got ${String(v)}`);
  }
  return n;
}

export function resolveProtocolOptions(o: ProtocolOptions = {}): ResolvedOptions {
  const maxBackground = intIn('maxBackground', o.maxBackground, 64, 1, 0xffff);
  return {
    maxPages: intIn('maxPages', o.maxPages, 256, 1, 256),
    maxReadahead: intIn('maxReadahead', o.maxReadahead, 1 << 20, 0, 0xffff_ffff),
    maxBackground,
    congestionThreshold: intIn('congestionThreshold', o.congestionThreshold, Math.max(1, Math.floor((maxBackground * 3) / 4)), 1, maxBackground),
    maxWrite: intIn('maxWrite', o.maxWrite, 4096, 4096, 65536),
    readdirplus: o.readdirplus ?? true,
  };
}

/** Capabilities we ask for when the kernel offers them (flags, bits 0–31). */
export function wantedInitFlags(o: Pick<ResolvedOptions, 'readdirplus'>, minor: number): number {
  let f =
    InitFlag.ASYNC_READ | InitFlag.MAX_PAGES | InitFlag.PARALLEL_DIROPS | InitFlag.ASYNC_DIO | InitFlag.CACHE_SYMLINKS;
  if (o.readdirplus) f |= InitFlag.DO_READDIRPLUS;
  if (minor >= INIT_EXT_MINOR) f |= InitFlag.INIT_EXT;
  return f >>> 0;
}

/** Capabilities in bits 32–63 we ask for: none. */
export const WANTED_INIT_FLAGS2 = 0;

/** Bytes the reader of /dev/fuse needs per request for a given max_write. */
export function requestBufferSize(maxWrite: number): number {
  // Room for the largest write plus headers, and for SETXATTR values (refused, but read whole).
  return Math.max(FUSE_MIN_READ_BUFFER, WRITE_REQUEST_OVERHEAD + maxWrite, 64 * 1024 + PAGE_SIZE);
}

export function encodeInitOut(n: Negotiated): Buffer {
  const size = n.minor < 23 ? COMPAT_22_INIT_OUT_SIZE : INIT_OUT_SIZE;
  const b = Buffer.alloc(size);
  b.writeUInt32LE(n.major, 0);
  b.writeUInt32LE(n.minor, 4);
  b.writeUInt32LE(n.maxReadahead, 8);
  b.writeUInt32LE(n.flags >>> 0, 12);
  b.writeUInt16LE(n.maxBackground, 16);
  b.writeUInt16LE(n.congestionThreshold, 18);
  b.writeUInt32LE(n.maxWrite, 20);
  if (size === INIT_OUT_SIZE) {
    b.writeUInt32LE(n.timeGran, 24);
    b.writeUInt16LE(n.maxPages, 28);
    b.writeUInt16LE(0, 30); // map_alignment
    b.writeUInt32LE(n.flags2 >>> 0, 32);
  }
  return b;
}

/**
 * Negotiates INIT. A kernel with a newer major gets our major only; an
 * older major or a minor below FUSE_MIN_KERNEL_MINOR is a FuseProtocolError.
 * Otherwise minor = min(kernel, ours) and capabilities = offered ∩ wanted.
 */
export function negotiateInit(kernel: InitIn, options: ProtocolOptions | ResolvedOptions = {}): InitOutcome {
  const o = resolveProtocolOptions(options);
  if (kernel.major > FUSE_KERNEL_VERSION) {
    const reply = Buffer.alloc(COMPAT_INIT_OUT_SIZE);
    reply.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
    reply.writeUInt32LE(FUSE_KERNEL_MINOR_VERSION, 4);
    return { action: 'major-only', reply };
  }
  if (kernel.major < FUSE_KERNEL_VERSION) {
    throw new FuseProtocolError(`kernel speaks FUSE protocol ${kernel.major}.${kernel.minor}, expected major version ${FUSE_KERNEL_VERSION}`, {
      hint: 'this kernel is too old for hfk; boot a newer one',
    });
  }
  if (kernel.minor < FUSE_MIN_KERNEL_MINOR) {
    throw new FuseProtocolError(
      `kernel speaks FUSE protocol 7.${kernel.minor}, expected 7.${FUSE_MIN_KERNEL_MINOR} or newer`,
      { hint: 'this kernel is too old for hfk; boot a newer one' },
    );
  }
  const minor = Math.min(kernel.minor, FUSE_KERNEL_MINOR_VERSION);
  const ext = minor >= INIT_EXT_MINOR && (kernel.flags & InitFlag.INIT_EXT) !== 0;
  const flags = (kernel.flags & wantedInitFlags(o, minor)) >>> 0;
  const flags2 = ext ? (kernel.flags2 & WANTED_INIT_FLAGS2) >>> 0 : 0;
  const negotiated: Negotiated = {
    major: FUSE_KERNEL_VERSION,
    minor,
    flags,
    flags2,
    maxReadahead: Math.min(kernel.maxReadahead, o.maxReadahead),
    maxBackground: o.maxBackground,
    congestionThreshold: o.congestionThreshold,
    maxWrite: o.maxWrite,
    maxPages: (flags & InitFlag.MAX_PAGES) !== 0 ? o.maxPages : 0,
    timeGran: 1,
    kernel,
  };
  return { action: 'accept', negotiated, reply: encodeInitOut(negotiated) };
}

// ---------------------------------------------------------------------------
// Errors → errno

/**
 * The one place a thrown value becomes the errno of a reply. Only what hfk
 * raises on purpose keeps its meaning: a FuseErrnoError its own errno
 * (ENOENT for a missing name, ENOTDIR, ERANGE, …) and an AbortedError
 * EINTR (the kernel interrupted the request, or the reader is closing).
 * Everything else is EIO: a block the fetcher could not get (BrokenError,
 * InvalidError, MissingError), a bug, and any Node error, whose `code`
 * (ENOENT of a cache file, ECONNREFUSED of a mirror) says what failed
 * inside hfk, not what the caller did wrong.
 */
export function errnoOf(e: unknown): number {
  if (e instanceof FuseErrnoError) {
    return Number.isInteger(e.errno) && e.errno > 0 && e.errno < 4096 ? e.errno : Errno.EIO;
  }
  if (e instanceof AbortedError) return Errno.EINTR;
  return Errno.EIO;
}

// ---------------------------------------------------------------------------
// The connection: state (INIT, requests in flight) and dispatch

/** A reply as the buffers of one writev: out header first. */
export type Reply = Buffer[];

export function replyOk(unique: number, payload?: Buffer | readonly Buffer[]): Reply {
  if (payload === undefined) return [encodeOutHeader(OUT_HEADER_SIZE, 0, unique)];
  if (Buffer.isBuffer(payload)) return [encodeOutHeader(OUT_HEADER_SIZE + payload.length, 0, unique), payload];
  let len = OUT_HEADER_SIZE;
  for (const p of payload) len += p.length;
  return [encodeOutHeader(len, 0, unique), ...payload];
}

export function replyError(unique: number, errno: number): Reply {
  return [encodeOutHeader(OUT_HEADER_SIZE, errno, unique)];
}

export interface ConnectionEvents {
  /** INIT was answered: negotiated parameters, or why the kernel was refused. */
  onInit?(result: Negotiated | FuseProtocolError): void;
  /** A filesystem method failed with something other than FuseErrnoError (answered with errnoOf). */
  onFsError?(error: unknown, opcode: number): void;
  /** A request that cannot be understood (answered EIO when it can be answered at all). */
  onProtocolError?(error: FuseProtocolError): void;
}

/** Handle of a request being served: what INTERRUPT aborts. */
type Pending = AbortController;

/** READs at least this large go into reused buffers (smaller ones come from malloc's warm memory). */
export const POOLED_READ_MIN = 128 * 1024;
/** Reused READ buffers kept while idle. */
export const READ_POOL_BUFFERS = 16;

export class Connection {
  readonly fs: FileSystem;
  private readonly opts: ResolvedOptions;
  private readonly events: ConnectionEvents;
  private readonly pending = new Map<number, Pending>();
  /** Regular files the kernel holds lookups on: node id → lookup count (for NOTIFY_RETRIEVE). */
  private readonly knownFiles = new Map<number, number>();
  /** Buffers of max READ size for `readInto`, and which reply holds which. */
  private readonly readPool: BufferPool;
  private readonly leases = new WeakMap<Reply, Buffer>();
  private negotiatedState: Negotiated | undefined;
  private initFailed = false;
  private destroyedState = false;

  constructor(fs: FileSystem, options: ProtocolOptions = {}, events: ConnectionEvents = {}) {
    this.fs = fs;
    this.opts = resolveProtocolOptions(options);
    this.events = events;
    this.readPool = new BufferPool(this.opts.maxPages * PAGE_SIZE, READ_POOL_BUFFERS);
  }

  /**
   * The reply has been written (or dropped): buffers it borrowed from the
   * READ pool may be reused. Replies that borrowed nothing are ignored.
   */
  release(reply: Reply): void {
    const b = this.leases.get(reply);
    if (!b) return;
    this.leases.delete(reply);
    this.giveBack(b);
  }

  private takeBuffer(size: number): Buffer {
    return size >= POOLED_READ_MIN && size <= this.readPool.capacity ? this.readPool.get(size) : Buffer.allocUnsafe(size);
  }

  private giveBack(b: Buffer): void {
    if (b.byteOffset === 0 && b.buffer.byteLength === this.readPool.capacity) this.readPool.put(b.buffer);
  }

  /** The INIT result, once the kernel has been answered. */
  get negotiated(): Negotiated | undefined {
    return this.negotiatedState;
  }

  /** DESTROY arrived: the kernel is done with this connection. */
  get destroyed(): boolean {
    return this.destroyedState;
  }

  /** Requests whose answer can still be interrupted. */
  get inFlight(): number {
    return this.pending.size;
  }

  /**
   * A regular file the kernel currently has cached (it was looked up and not
   * forgotten): a node NOTIFY_RETRIEVE may name. Undefined if there is none.
   */
  get cachedFileId(): number | undefined {
    for (const id of this.knownFiles.keys()) return id;
    return undefined;
  }

  private remember(e: Entry | undefined): Entry | undefined {
    if (e && (e.attr.mode & S_IFMT) === S_IFREG) this.knownFiles.set(e.attr.ino, (this.knownFiles.get(e.attr.ino) ?? 0) + 1);
    return e;
  }

  private forget(nodeid: number, nlookup: number): void {
    const left = (this.knownFiles.get(nodeid) ?? 0) - nlookup;
    if (left > 0) this.knownFiles.set(nodeid, left);
    else this.knownFiles.delete(nodeid);
    this.fs.forget?.(nodeid, nlookup);
  }

  /** Aborts every request in flight (the connection is gone). */
  abortAll(): void {
    for (const ac of this.pending.values()) ac.abort(new AbortedError('FUSE connection closed'));
    this.pending.clear();
  }

  /**
   * Serves one request: the bytes as read from /dev/fuse in, the reply to
   * write (one writev) out, or undefined when the opcode is not answered.
   * Never rejects: failures become errno replies.
   */
  async dispatch(request: Buffer): Promise<Reply | undefined> {
    let h: InHeader;
    try {
      h = decodeInHeader(request);
    } catch (e) {
      this.events.onProtocolError?.(e as FuseProtocolError);
      return undefined;
    }
    const info = OPCODES.get(h.opcode);
    if (h.len !== request.length) {
      this.events.onProtocolError?.(
        new FuseProtocolError(`${opcodeName(h.opcode)} request says it is ${h.len} bytes long, read ${request.length}`),
      );
      return info?.reply === false ? undefined : replyError(h.unique, Errno.EIO);
    }
    const body = request.subarray(IN_HEADER_SIZE, Math.max(IN_HEADER_SIZE, h.len - h.totalExtlen * 8));
    if (!info) return replyError(h.unique, Errno.ENOSYS);
    if (body.length < info.inSize) {
      this.events.onProtocolError?.(
        new FuseProtocolError(`${info.name} request body is ${body.length} bytes, expected at least ${info.inSize}`),
      );
      return info.reply ? replyError(h.unique, Errno.EIO) : undefined;
    }
    if (h.opcode !== Op.INIT && !this.negotiatedState) {
      return info.reply ? replyError(h.unique, Errno.EIO) : undefined;
    }
    if (info.kind === 'read-only') return replyError(h.unique, Errno.EROFS);
    if (info.kind === 'unsupported') return replyError(h.unique, Errno.ENOSYS);
    try {
      return await this.serve(h, body);
    } catch (e) {
      if (!(e instanceof FuseErrnoError)) this.events.onFsError?.(e, h.opcode);
      return info.reply ? replyError(h.unique, errnoOf(e)) : undefined;
    }
  }

  private ctx(h: InHeader): RequestContext {
    return { uid: h.uid, gid: h.gid, pid: h.pid };
  }

  private async serve(h: InHeader, body: Buffer): Promise<Reply | undefined> {
    const fs = this.fs;
    switch (h.opcode) {
      case Op.INIT:
        return this.init(h, body);
      case Op.READ:
        return this.read(h, body);
      case Op.LOOKUP: {
        const entry = this.remember(await fs.lookup(h.nodeid, decodeName(body), this.ctx(h)));
        const negative = fs.negativeTimeoutMs ?? 0;
        if (!entry && negative <= 0) return replyError(h.unique, Errno.ENOENT);
        return replyOk(h.unique, encodeEntryOut(entry, negative));
      }
      case Op.GETATTR: {
        const g = decodeGetattrIn(body);
        const r = await fs.getattr(h.nodeid, (g.getattrFlags & GETATTR_FH) !== 0 ? g.fh : undefined, this.ctx(h));
        return replyOk(h.unique, encodeAttrOut(r.attr, r.attrTimeoutMs));
      }
      case Op.OPEN: {
        const o = decodeOpenIn(body);
        if ((o.flags & O_ACCMODE) !== O_RDONLY) return replyError(h.unique, Errno.EROFS);
        const r = await fs.open(h.nodeid, o.flags, this.ctx(h));
        // NOFLUSH: nothing is ever written, so close(2) needs no FLUSH round trip.
        return replyOk(h.unique, encodeOpenOut(r.fh ?? 0, openFlagsOf(r) | OpenFlag.NOFLUSH));
      }
      case Op.OPENDIR: {
        const r: OpenReply = fs.opendir ? await fs.opendir(h.nodeid, this.ctx(h)) : {};
        return replyOk(h.unique, encodeOpenOut(r.fh ?? 0, openFlagsOf(r)));
      }
      case Op.READDIR:
      case Op.READDIRPLUS: {
        const r = decodeReadIn(body);
        const entries = await fs.readdir(h.nodeid, r.fh, this.ctx(h));
        if (h.opcode === Op.READDIR) return replyOk(h.unique, packDirents(entries, r.offset, r.size));
        const ctx = this.ctx(h);
        const packed = await packDirentsPlus(entries, r.offset, r.size, async (e) =>
          e.name === '.' || e.name === '..' ? undefined : this.remember(await fs.lookup(h.nodeid, e.name, ctx)),
        );
        return replyOk(h.unique, packed);
      }
      case Op.RELEASE:
        await fs.release?.(h.nodeid, decodeReleaseIn(body).fh);
        return replyOk(h.unique);
      case Op.RELEASEDIR:
        await fs.releasedir?.(h.nodeid, decodeReleaseIn(body).fh);
        return replyOk(h.unique);
      case Op.STATFS:
        return replyOk(h.unique, encodeStatfsOut(await fs.statfs(h.nodeid)));
      case Op.READLINK:
        if (!fs.readlink) return replyError(h.unique, Errno.ENOSYS);
        return replyOk(h.unique, Buffer.from(await fs.readlink(h.nodeid)));
      case Op.GETXATTR: {
        if (!fs.getxattr) return replyError(h.unique, Errno.ENOSYS);
        const x = decodeGetxattrIn(body);
        const value = await fs.getxattr(h.nodeid, x.name);
        if (!value) return replyError(h.unique, Errno.ENODATA);
        return this.sized(h.unique, x.size, value);
      }
      case Op.LISTXATTR: {
        if (!fs.listxattr) return replyError(h.unique, Errno.ENOSYS);
        const x = decodeGetxattrIn(body);
        const names = await fs.listxattr(h.nodeid);
        return this.sized(h.unique, x.size, Buffer.from(names.map((n) => `${n}\0`).join('')));
      }
      case Op.ACCESS: {
        // Only asked without default_permissions. Nothing is writable; execute needs an x bit.
        const mask = decodeAccessIn(body).mask;
        if ((mask & W_OK) !== 0) return replyError(h.unique, Errno.EROFS);
        if ((mask & X_OK) !== 0) {
          const { attr } = await fs.getattr(h.nodeid, undefined, this.ctx(h));
          if ((attr.mode & 0o111) === 0) return replyError(h.unique, Errno.EACCES);
        }
        return replyError(h.unique, 0);
      }
      case Op.FLUSH:
      case Op.FSYNC:
      case Op.FSYNCDIR:
      case Op.SYNCFS:
        return replyOk(h.unique); // nothing is ever dirty
      case Op.FORGET:
        this.forget(h.nodeid, decodeForgetIn(body).nlookup);
        return undefined;
      case Op.BATCH_FORGET:
        for (const f of decodeBatchForgetIn(body)) this.forget(f.nodeid, f.nlookup);
        return undefined;
      case Op.INTERRUPT:
        this.pending.get(decodeInterruptIn(body).unique)?.abort(new AbortedError('request interrupted by the kernel'));
        return undefined;
      case Op.NOTIFY_REPLY:
        return undefined;
      case Op.DESTROY:
        this.destroyedState = true;
        this.abortAll();
        fs.destroy?.();
        return replyOk(h.unique);
      default:
        return replyError(h.unique, Errno.ENOSYS);
    }
  }

  /** GETXATTR/LISTXATTR: the size when asked with size 0, ERANGE when it does not fit. */
  private sized(unique: number, size: number, value: Buffer): Reply {
    if (size === 0) return replyOk(unique, encodeGetxattrOut(value.length));
    if (value.length > size) return replyError(unique, Errno.ERANGE);
    return replyOk(unique, value);
  }

  private init(h: InHeader, body: Buffer): Reply {
    let outcome: InitOutcome;
    try {
      outcome = negotiateInit(decodeInitIn(body), this.opts);
    } catch (e) {
      const err = e instanceof FuseProtocolError ? e : new FuseProtocolError(String(e));
      this.initFailed = true;
      this.events.onInit?.(err);
      return replyError(h.unique, Errno.EPROTO);
    }
    if (outcome.action === 'major-only') return replyOk(h.unique, outcome.reply);
    this.negotiatedState = outcome.negotiated;
    this.events.onInit?.(outcome.negotiated);
    return replyOk(h.unique, outcome.reply);
  }

  /** INIT was refused (the kernel's version is not one we serve). */
  get initRefused(): boolean {
    return this.initFailed;
  }

  private async read(h: InHeader, body: Buffer): Promise<Reply> {
    const r = decodeReadIn(body);
    const ac = new AbortController();
    this.pending.set(h.unique, ac);
    try {
      if (this.fs.readInto) return await this.readInto(h, r, ac.signal);
      const data = await this.fs.read(h.nodeid, r.offset, r.size, ac.signal, r.fh);
      if (data.length > r.size) {
        throw new FuseProtocolError(`filesystem read returned ${data.length} bytes, asked for at most ${r.size}`);
      }
      return data.length === 0 ? replyOk(h.unique) : replyOk(h.unique, data);
    } catch (e) {
      // Interrupted: EINTR (the abort's reason), whatever the cancelled work threw.
      throw ac.signal.aborted ? ac.signal.reason : e;
    } finally {
      this.pending.delete(h.unique);
    }
  }

  private async readInto(h: InHeader, r: ReadIn, signal: AbortSignal): Promise<Reply> {
    const dest = this.takeBuffer(r.size);
    let n: number;
    try {
      n = await this.fs.readInto!(h.nodeid, r.offset, dest, signal, r.fh);
    } catch (e) {
      this.giveBack(dest);
      throw e;
    }
    if (!Number.isInteger(n) || n < 0 || n > r.size) {
      this.giveBack(dest);
      throw new FuseProtocolError(`filesystem readInto returned ${n}, asked for at most ${r.size} bytes`);
    }
    if (n === 0) {
      this.giveBack(dest);
      return replyOk(h.unique);
    }
    const reply = replyOk(h.unique, dest.subarray(0, n));
    this.leases.set(reply, dest);
    return reply;
  }
}
