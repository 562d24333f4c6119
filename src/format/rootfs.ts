// Does PATH exist in a filesystem image, and what is it? Answered by reading
// the image through an async random-access function only, so the boot's dry
// run can check that the init exists in a root image before booting it,
// fetching the few blocks the lookup needs and nothing else.
//
// This file holds the path walk (symlinks, `..`, trailing slashes) and the
// bounded reader every filesystem goes through; rootfs-squashfs.ts,
// rootfs-ext4.ts and rootfs-erofs.ts each turn one on-disk format into the
// small Volume interface below. Every byte of the image is treated as
// hostile: a damaged image gives a FormatError, never a crash, a hang or a
// large allocation.

import { FormatError, UsageError, type HfkErrorOptions } from '../errors.ts';
import { openErofs } from './rootfs-erofs.ts';
import type { Node, PathKind, Volume } from './rootfs-image.ts';
import { openExt4 } from './rootfs-ext4.ts';
import { openSquashfs } from './rootfs-squashfs.ts';

/** Reads `length` bytes at `offset`; may return fewer only at the image's end. */
export type ReadAt = (offset: number, length: number) => Promise<Buffer>;

export const ROOTFS_FILESYSTEMS = ['squashfs', 'ext4', 'erofs'] as const;
export type RootFilesystem = (typeof ROOTFS_FILESYSTEMS)[number];

export type { PathKind };

export interface PathInfo {
  /** The path as asked. */
  path: string;
  kind: PathKind;
  /** Permission bits (07777), without the file type. */
  mode: number;
  /** Bytes: a file's length, a directory's listing size, a symlink's target length. */
  size: number;
  /** A regular file with any execute bit set. */
  executable: boolean;
  /** A symlink's target (only when the symlink itself is reported: follow: false). */
  target?: string;
  /** The absolute path of what was found, after following symlinks. */
  resolved: string;
}

export interface LookupOptions {
  /** Follow a symlink in the last component (lstat when false). Default true. */
  follow?: boolean;
  /** The image's real size, when known: no structure may claim more. */
  size?: number | undefined;
}

/** Linux's limit on symlinks followed in one lookup (MAXSYMLINKS). */
export const MAX_SYMLINK_HOPS = 40;
/** Longest path or symlink target, as on Linux (PATH_MAX, with its NUL). */
export const MAX_PATH_BYTES = 4096;
/** Longest name in a directory of any of the three filesystems. */
const MAX_NAME_BYTES = 256;
/** What one lookup may read in all before the image is called damaged. */
export const MAX_LOOKUP_BYTES = 64 * 1024 * 1024;
/**
 * What one lookup may go through in all, cached or not (directory entries
 * scanned, metadata decoded): a directory whose blocks all point at one
 * cached block costs no reads, and must still end.
 */
export const MAX_LOOKUP_WORK = 256 * 1024 * 1024;
/** The largest single read a filesystem reader asks for (an ext4 block). */
const MAX_READ = 64 * 1024;

/** A FormatError for an image that uses something this reader does not decode. */
export class UnsupportedFormatError extends FormatError {
  override name = 'UnsupportedFormatError';
  /** What is not supported, e.g. "compressor xz". */
  readonly feature: string;
  constructor(message: string, feature: string, options: HfkErrorOptions = {}) {
    super(message, options);
    this.feature = feature;
  }
}

/**
 * Looks PATH up, following symlinks (absolute targets resolve from the image
 * root; relative ones from the link's folder; at most 40 hops; a loop is an
 * error). undefined when it does not exist.
 */
export async function lookupPath(read: ReadAt, fs: RootFilesystem, path: string, options: LookupOptions = {}): Promise<PathInfo | undefined> {
  if (!ROOTFS_FILESYSTEMS.includes(fs)) {
    throw new UsageError(`cannot look paths up in a '${String(fs)}' image: expected one of ${ROOTFS_FILESYSTEMS.join(', ')}`);
  }
  const bytes = checkPath(path);
  const image = new Image(read, fs, options.size);
  const volume = await OPENERS[fs](image);
  return walk(volume, image, path, bytes, options.follow ?? true);
}

// ---- what each filesystem provides ------------------------------------------

// Each volume takes its own kind of node; the walk hands a node back only to
// the volume that made it.
const OPENERS: Record<RootFilesystem, (image: Image) => Promise<Volume>> = {
  squashfs: openSquashfs,
  ext4: openExt4,
  erofs: openErofs,
};

// ---- the bounded reader -----------------------------------------------------

const PAGE = 4096;
const MAX_PAGES = 1024;

/**
 * The image as the filesystem readers see it: exact reads checked against
 * the image's declared size and the lookup's read budget, cached by 4 KiB
 * page so that neighbouring structures (inodes in one table block, a
 * directory header and its entries) cost one read.
 */
export class Image {
  readonly fs: RootFilesystem;
  /** Bytes asked of `read` so far. */
  bytesRead = 0;
  /** Bytes gone through so far, cached or not (MAX_LOOKUP_WORK). */
  private work = 0;
  /** The real size, when the caller knows it. */
  private readonly real: number | undefined;
  /** The size the superblock declares, once known; reads past it are damage. */
  private declared: number | undefined;
  private readonly read: ReadAt;
  private readonly pages = new Map<number, Buffer>();

  constructor(read: ReadAt, fs: RootFilesystem, realSize?: number) {
    this.read = read;
    this.fs = fs;
    this.real = realSize;
  }

  /** Records the image size its superblock declares. */
  declareSize(bytes: number, what: string): void {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw this.damaged('superblock', `${what} of ${bytes} bytes is impossible`);
    this.declared = bytes;
  }

  /** The image size: what the superblock declared, at most the real size (MAX_SAFE_INTEGER while neither is known). */
  get size(): number {
    return Math.min(this.declared ?? Number.MAX_SAFE_INTEGER, this.real ?? Number.MAX_SAFE_INTEGER);
  }

  /** Counts `bytes` gone through against the lookup's work budget. */
  charge(bytes: number, what: string): void {
    this.work += bytes;
    if (this.work > MAX_LOOKUP_WORK) throw this.damaged(what, `the lookup would go through more than ${MAX_LOOKUP_WORK} bytes`);
  }

  /** Exactly `length` bytes at `offset`, or a FormatError naming `what`. */
  async at(offset: number, length: number, what: string): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || length > MAX_READ) {
      throw this.damaged(what, `a read of ${length} bytes at offset ${offset} is impossible`);
    }
    if (offset + length > this.size) {
      throw this.damaged(what, `${length} bytes at offset ${offset} lie past the image's end at ${this.size}`);
    }
    if (length === 0) return Buffer.alloc(0);
    this.charge(length, what);
    const first = Math.floor(offset / PAGE);
    const last = Math.floor((offset + length - 1) / PAGE);
    const parts: Buffer[] = [];
    for (let p = first; p <= last; ) {
      const cached = this.pages.get(p);
      if (cached) {
        parts.push(cached);
        if (cached.length < PAGE) break; // the image ends in this page
        p++;
        continue;
      }
      let q = p;
      while (q < last && !this.pages.has(q + 1)) q++;
      const data = await this.fetch(p, q, what);
      parts.push(data);
      if (data.length < (q + 1 - p) * PAGE) break;
      p = q + 1;
    }
    const joined = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    const start = offset - first * PAGE;
    if (joined.length < start + length) {
      throw this.damaged(what, `${length} bytes at offset ${offset} lie past the image's end at ${first * PAGE + joined.length}`);
    }
    return joined.subarray(start, start + length);
  }

  /** Pages `fromPage`..`toPage` in one read; shorter where the image ends. */
  private async fetch(fromPage: number, toPage: number, what: string): Promise<Buffer> {
    const offset = fromPage * PAGE;
    const length = Math.min((toPage + 1 - fromPage) * PAGE, this.size - offset);
    this.bytesRead += length;
    if (this.bytesRead > MAX_LOOKUP_BYTES) {
      throw this.damaged(what, `the lookup would read more than ${MAX_LOOKUP_BYTES} bytes`);
    }
    const got = await this.read(offset, length);
    const data = got.length > length ? got.subarray(0, length) : got;
    for (let p = fromPage; p <= toPage; p++) {
      const from = (p - fromPage) * PAGE;
      if (from >= data.length) break;
      this.remember(p, data.subarray(from, Math.min(from + PAGE, data.length)));
    }
    return data;
  }

  private remember(page: number, data: Buffer): void {
    if (this.pages.size >= MAX_PAGES) this.pages.delete(this.pages.keys().next().value!);
    this.pages.set(page, data);
  }

  /** A FormatError: `structure` of this image holds something impossible. */
  damaged(structure: string, found: string): FormatError {
    return new FormatError(`${this.fs} image is damaged: ${structure}: ${found}`, {
      hint: 'the image is truncated or corrupt, or is not a ' + this.fs + ' image; publish it again',
    });
  }

  /** A FormatError for a feature this reader does not decode. */
  unsupported(feature: string, where?: string): UnsupportedFormatError {
    return new UnsupportedFormatError(`cannot read this ${this.fs} image: ${where ? where + ' uses ' : 'it uses '}${feature}, which hfk does not decode`, feature, {
      hint: 'the path cannot be checked before the boot; the kernel may still mount the image',
    });
  }
}

// ---- the walk -----------------------------------------------------------------

const SLASH = 0x2f;
const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

function checkPath(path: string): Buffer {
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw new UsageError(`cannot look up '${String(path)}' in the image: the path must be absolute (start with /)`);
  }
  if (path.includes('\0')) throw new UsageError(`cannot look up ${JSON.stringify(path)} in the image: the path holds a NUL byte`);
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.length >= MAX_PATH_BYTES) {
    throw new UsageError(`cannot look up a path of ${bytes.length} bytes in the image: at most ${MAX_PATH_BYTES - 1}`);
  }
  return bytes;
}

/**
 * The components of a path, last first (the walk pops from the end). A
 * trailing slash adds a `.` so that the name before it must be a directory,
 * and is followed if it is a symlink, as POSIX says.
 */
function componentsReversed(path: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    if (i === path.length || path[i] === SLASH) {
      if (i > start) out.push(path.subarray(start, i));
      start = i + 1;
    }
  }
  if (path.length > 1 && path[path.length - 1] === SLASH && out.length > 0) out.push(DOT);
  return out.reverse();
}

async function walk(volume: Volume, image: Image, path: string, bytes: Buffer, follow: boolean): Promise<PathInfo | undefined> {
  const root = await volume.root();
  if (root.kind !== 'dir') throw image.damaged('root inode', `it is ${root.kind === 'other' ? 'a special file' : 'a ' + root.kind}, not a directory`);
  // The directories walked into, from the root down; the last entry may be
  // the final non-directory.
  let stack: { name: Buffer; node: Node }[] = [];
  const pending = componentsReversed(bytes);
  let hops = 0;
  while (pending.length > 0) {
    const name = pending.pop()!;
    if (name.equals(DOT)) continue;
    if (name.equals(DOTDOT)) {
      stack.pop(); // `..` of the root is the root
      continue;
    }
    if (name.length > MAX_NAME_BYTES) return undefined;
    const dir = stack.length > 0 ? stack[stack.length - 1]!.node : root;
    const node = await volume.child(dir, name);
    if (!node) return undefined;
    const last = pending.length === 0;
    if (node.kind === 'symlink' && (!last || follow)) {
      if (++hops > MAX_SYMLINK_HOPS) {
        throw new FormatError(`${image.fs} image: cannot resolve ${path}: more than ${MAX_SYMLINK_HOPS} symlinks to follow (a symlink loop)`, {
          hint: 'fix the symlinks in the image, or point the boot at the real path',
        });
      }
      const target = await volume.readlink(node);
      if (target.length === 0) return undefined; // Linux: ENOENT
      if (target[0] === SLASH) stack = [];
      pending.push(...componentsReversed(target));
      continue;
    }
    if (!last && node.kind !== 'dir') return undefined; // ENOTDIR: nothing lies below a file
    stack.push({ name, node });
  }
  const found = stack.length > 0 ? stack[stack.length - 1]!.node : root;
  const info: PathInfo = {
    path,
    kind: found.kind,
    mode: found.mode & 0o7777,
    size: found.size,
    executable: found.kind === 'file' && (found.mode & 0o111) !== 0,
    resolved: '/' + stack.map((s) => s.name.toString('utf8')).join('/'),
  };
  if (found.kind === 'symlink') info.target = (await volume.readlink(found)).toString('utf8');
  return info;
}
