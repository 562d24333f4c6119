// The read-only filesystem hfk mounts: a root folder with one regular file,
// NAME.img, whose bytes come from a BlockDevice, and a .hfk/ folder with
// stats.json. The kernel loop-mounts NAME.img.
//
//   /            0555
//   NAME.img     0444, size = device size; immutable: cached across opens
//   .hfk/        0555
//   .hfk/stats.json  0444; rendered at open from `stats()`, read with
//                    direct I/O so its size may change between opens

import { UsageError } from '../errors.ts';
import { FuseErrnoError } from '../fuse/errors.ts';
import {
  type Attr,
  type AttrReply,
  type DirEntry,
  type Entry,
  type FileSystem,
  type OpenReply,
  ROOT_ID,
  S_IFDIR,
  S_IFREG,
  type StatFs,
} from '../fuse/fs.ts';
import { Errno } from '../fuse/protocol.ts';
import { type BlockDevice, canReadInto } from './device.ts';

export const IMAGE_INO = 2;
export const HFK_DIR_INO = 3;
export const STATS_INO = 4;

export const HFK_DIR_NAME = '.hfk';
export const STATS_NAME = 'stats.json';

/** Cache time for what never changes while mounted (names, image attributes). */
export const IMMUTABLE_TIMEOUT_MS = 365 * 24 * 3600 * 1000;
const BLOCK_SIZE = 4096;

export interface BlockFsOptions {
  /** The image's name: the file is NAME.img. Letters, digits, '.', '_' and '-'; not starting with '.'. */
  name: string;
  device: BlockDevice;
  /** Content of .hfk/stats.json, rendered as JSON at each open; default: {}. */
  stats?: () => unknown;
  /** Time shown for every node, ms since the epoch; default: when the fs is made. */
  mtimeMs?: number;
  /** Owner shown for every node; default 0 (root). */
  uid?: number;
  gid?: number;
}

const NAME_RE = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$/;

function notFound(what: string): FuseErrnoError {
  return new FuseErrnoError(Errno.ENOENT, `no such node: ${what}`);
}

export class BlockFs implements FileSystem {
  /** The tree never changes while mounted: "no such name" may be cached as long as anything else. */
  readonly negativeTimeoutMs = IMMUTABLE_TIMEOUT_MS;
  readonly imageName: string;
  readonly device: BlockDevice;
  private readonly stats: () => unknown;
  private readonly mtimeMs: number;
  private readonly uid: number;
  private readonly gid: number;
  /** stats.json renderings by open handle. */
  private readonly snapshots = new Map<number, Buffer>();
  /** Random, so that a reader taking over a live mount (reader/keeper.ts) does not reuse its predecessor's handles. */
  private nextFh = 1 + Math.floor(Math.random() * 2 ** 40);
  /** Present when the device can fill the FUSE layer's buffers (FileSystem.readInto). */
  readonly readInto?: (ino: number, offset: number, dest: Buffer, signal: AbortSignal, fh: number) => Promise<number>;

  constructor(options: BlockFsOptions) {
    if (!NAME_RE.test(options.name)) {
      throw new UsageError(
        `image name must be letters, digits, '.', '_' or '-' (not starting with '.', at most 200): got ${JSON.stringify(options.name)}`,
      );
    }
    if (!Number.isSafeInteger(options.device.size) || options.device.size < 0) {
      throw new UsageError(`device size must be a non-negative integer: got ${options.device.size}`);
    }
    this.imageName = `${options.name}.img`;
    this.device = options.device;
    this.stats = options.stats ?? (() => ({}));
    this.mtimeMs = options.mtimeMs ?? Date.now();
    this.uid = options.uid ?? 0;
    this.gid = options.gid ?? 0;
    const device = options.device;
    if (canReadInto(device)) {
      this.readInto = async (ino, offset, dest, signal, fh) => {
        if (ino !== IMAGE_INO) {
          const data = await this.read(ino, offset, dest.length, signal, fh);
          return data.copy(dest);
        }
        const end = Math.min(device.size, offset + dest.length);
        if (offset >= end) return 0;
        return device.readInto(end - offset === dest.length ? dest : dest.subarray(0, end - offset), offset, signal);
      };
    }
  }

  private attr(ino: number, size?: number): Attr {
    const base = { ino, uid: this.uid, gid: this.gid, mtimeMs: this.mtimeMs, blksize: BLOCK_SIZE };
    switch (ino) {
      case ROOT_ID:
        return { ...base, mode: S_IFDIR | 0o555, size: 0, nlink: 3 };
      case HFK_DIR_INO:
        return { ...base, mode: S_IFDIR | 0o555, size: 0, nlink: 2 };
      case IMAGE_INO:
        return { ...base, mode: S_IFREG | 0o444, size: this.device.size, nlink: 1 };
      case STATS_INO:
        return { ...base, mode: S_IFREG | 0o444, size: size ?? this.renderStats().length, nlink: 1 };
      default:
        throw notFound(`node ${ino}`);
    }
  }

  private renderStats(): Buffer {
    return Buffer.from(`${JSON.stringify(this.stats(), null, 2)}\n`);
  }

  lookup(parent: number, name: string): Entry | undefined {
    let ino: number | undefined;
    if (parent === ROOT_ID) ino = name === this.imageName ? IMAGE_INO : name === HFK_DIR_NAME ? HFK_DIR_INO : undefined;
    else if (parent === HFK_DIR_INO) ino = name === STATS_NAME ? STATS_INO : undefined;
    else if (parent === IMAGE_INO || parent === STATS_INO) throw new FuseErrnoError(Errno.ENOTDIR, `node ${parent} is not a folder`);
    else throw notFound(`node ${parent}`);
    if (ino === undefined) return undefined;
    // stats.json's attributes change: the kernel must ask again each time.
    return { attr: this.attr(ino), entryTimeoutMs: IMMUTABLE_TIMEOUT_MS, attrTimeoutMs: ino === STATS_INO ? 0 : IMMUTABLE_TIMEOUT_MS };
  }

  getattr(ino: number, fh: number | undefined): AttrReply {
    if (ino === STATS_INO) {
      const snap = fh === undefined ? undefined : this.snapshots.get(fh);
      return { attr: this.attr(ino, snap?.length), attrTimeoutMs: 0 };
    }
    return { attr: this.attr(ino), attrTimeoutMs: IMMUTABLE_TIMEOUT_MS };
  }

  open(ino: number): OpenReply {
    switch (ino) {
      case IMAGE_INO:
        return { fh: 0, keepCache: true };
      case STATS_INO: {
        const fh = this.nextFh++;
        this.snapshots.set(fh, this.renderStats());
        return { fh, directIo: true };
      }
      case ROOT_ID:
      case HFK_DIR_INO:
        throw new FuseErrnoError(Errno.EISDIR, `node ${ino} is a folder`);
      default:
        throw notFound(`node ${ino}`);
    }
  }

  async read(ino: number, offset: number, size: number, signal: AbortSignal, fh: number): Promise<Buffer> {
    if (ino === IMAGE_INO) {
      const end = Math.min(this.device.size, offset + size);
      if (offset >= end) return Buffer.alloc(0);
      return this.device.read(offset, end - offset, signal);
    }
    if (ino === STATS_INO) {
      let snap = this.snapshots.get(fh);
      // A handle opened before a takeover: a fresh rendering from now on.
      if (!snap) this.snapshots.set(fh, (snap = this.renderStats()));
      return snap.subarray(Math.min(offset, snap.length), Math.min(offset + size, snap.length));
    }
    if (ino === ROOT_ID || ino === HFK_DIR_INO) throw new FuseErrnoError(Errno.EISDIR, `node ${ino} is a folder`);
    throw notFound(`node ${ino}`);
  }

  release(ino: number, fh: number): void {
    if (ino === STATS_INO) this.snapshots.delete(fh);
  }

  opendir(ino: number): OpenReply {
    if (ino !== ROOT_ID && ino !== HFK_DIR_INO) {
      if (ino === IMAGE_INO || ino === STATS_INO) throw new FuseErrnoError(Errno.ENOTDIR, `node ${ino} is not a folder`);
      throw notFound(`node ${ino}`);
    }
    // The listings never change while mounted.
    return { fh: 0, cacheDir: true, keepCache: true };
  }

  readdir(ino: number): DirEntry[] {
    const dir = (name: string, i: number): DirEntry => ({ name, ino: i, type: S_IFDIR });
    if (ino === ROOT_ID) {
      return [dir('.', ROOT_ID), dir('..', ROOT_ID), { name: this.imageName, ino: IMAGE_INO, type: S_IFREG }, dir(HFK_DIR_NAME, HFK_DIR_INO)];
    }
    if (ino === HFK_DIR_INO) return [dir('.', HFK_DIR_INO), dir('..', ROOT_ID), { name: STATS_NAME, ino: STATS_INO, type: S_IFREG }];
    if (ino === IMAGE_INO || ino === STATS_INO) throw new FuseErrnoError(Errno.ENOTDIR, `node ${ino} is not a folder`);
    throw notFound(`node ${ino}`);
  }

  statfs(): StatFs {
    return { blocks: Math.ceil(this.device.size / BLOCK_SIZE), bfree: 0, bavail: 0, files: 4, ffree: 0, bsize: BLOCK_SIZE, namelen: 255 };
  }

  getxattr(): undefined {
    return undefined;
  }

  listxattr(): string[] {
    return [];
  }
}
