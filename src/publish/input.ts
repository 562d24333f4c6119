// What the publisher reads: a plain image file, a block device, or a cloop
// V2 file whose image is inflated on the fly (no uncompressed copy on disk).
// Every input yields the image front to back as buffers whose lengths are
// multiples of the block size (except the very last).

import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { inflateCloopBlock, looksLikeCloop, readCloopIndex } from '../cloop/cloop.ts';
import { errnoCode, InputError } from '../errors.ts';
import type { BufferPool } from '../util/bufpool.ts';

export interface ImageInput {
  readonly kind: 'file' | 'blockdev' | 'cloop';
  readonly path: string;
  /** Size of the image (for cloop: of the image inside it). */
  readonly size: number;
  /** Bytes of the file read so far (compressed bytes for cloop). */
  readonly bytesRead: number;
  /**
   * The image front to back. With a pool, chunks are read into pooled
   * buffers that the caller gives back when done.
   */
  chunks(blockSize: number, pool?: BufferPool): AsyncIterable<Buffer>;
  close(): Promise<void>;
}

/** Chunk size for reading: about 8 MiB, a whole number of blocks. */
export function chunkSizeFor(blockSize: number): number {
  return Math.max(blockSize, Math.floor(READ_CHUNK / blockSize) * blockSize);
}

const READ_CHUNK = 2 * 1024 * 1024;

async function readFully(fh: fs.FileHandle, buf: Buffer, position: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

async function blockDeviceSize(p: string, rdev: number): Promise<number> {
  // stat() reports 0 bytes for a block device; sysfs knows its size in sectors.
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
  try {
    const sectors = Number((await fs.readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8')).trim());
    return sectors * 512;
  } catch (e) {
    throw new InputError(`cannot find the size of block device ${p}: ${(e as Error).message}`);
  }
}

/** Opens IMAGE for publishing: checks it exists, is readable, and what it is. */
export async function openInput(p: string): Promise<ImageInput> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(p, 'r');
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ENOENT') throw new InputError(`image ${p} does not exist`, { hint: 'give the path of a filesystem image, block device or cloop file' });
    if (code === 'EACCES' || code === 'EPERM') throw new InputError(`image ${p} is not readable (permission denied)`, { hint: 'run as a user who can read it, or fix its permissions' });
    throw new InputError(`cannot open image ${p}: ${(e as Error).message}`);
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new InputError(`image ${p} is a folder; hfk publishes one image file`, { hint: 'pack the folder first, e.g. mksquashfs DIR root.sqfs' });
    if (!st.isFile() && !st.isBlockDevice()) throw new InputError(`image ${p} is not a regular file or a block device`);
    const size = st.isBlockDevice() ? await blockDeviceSize(p, st.rdev) : st.size;
    if (size === 0) throw new InputError(`image ${p} is empty`);
    const head = Buffer.alloc(Math.min(size, 4096));
    try {
      await readFully(fh, head, 0);
    } catch (e) {
      throw new InputError(`cannot read image ${p}: ${(e as Error).message}`);
    }
    if (looksLikeCloop(head)) return await CloopSource.open(fh, p, size);
    return new FileSource(fh, p, size, st.isBlockDevice() ? 'blockdev' : 'file');
  } catch (e) {
    await fh.close();
    throw e;
  }
}

class FileSource implements ImageInput {
  bytesRead = 0;
  private readonly fh: fs.FileHandle;
  readonly path: string;
  readonly size: number;
  readonly kind: 'file' | 'blockdev';

  constructor(fh: fs.FileHandle, p: string, size: number, kind: 'file' | 'blockdev') {
    this.fh = fh;
    this.path = p;
    this.size = size;
    this.kind = kind;
  }

  async *chunks(blockSize: number, pool?: BufferPool): AsyncIterable<Buffer> {
    const chunk = chunkSizeFor(blockSize);
    // Read one chunk ahead so the disk works while the caller hashes.
    const readAt = async (pos: number): Promise<Buffer> => {
      const size = Math.min(chunk, this.size - pos);
      const buf = pool ? pool.get(size) : Buffer.allocUnsafeSlow(size);
      let n: number;
      try {
        n = await readFully(this.fh, buf, pos);
      } catch (e) {
        throw new InputError(`cannot read image ${this.path} at byte ${pos}: ${(e as Error).message}`);
      }
      if (n !== buf.length) throw new InputError(`image ${this.path} shrank while being read: it ended at byte ${pos + n} of ${this.size}`);
      this.bytesRead += n;
      return buf;
    };
    let pos = 0;
    let next = this.size > 0 ? readAt(0) : undefined;
    while (next) {
      const buf = await next;
      pos += buf.length;
      next = pos < this.size ? readAt(pos) : undefined;
      next?.catch(() => {}); // surfaced when awaited
      yield buf;
    }
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

class CloopSource implements ImageInput {
  readonly kind = 'cloop' as const;
  bytesRead = 0;
  private readonly fh: fs.FileHandle;
  readonly path: string;
  readonly size: number;
  private readonly cloopBlockSize: number;
  private readonly offsets: number[];

  private constructor(fh: fs.FileHandle, p: string, size: number, cloopBlockSize: number, offsets: number[]) {
    this.fh = fh;
    this.path = p;
    this.size = size;
    this.cloopBlockSize = cloopBlockSize;
    this.offsets = offsets;
  }

  static async open(fh: fs.FileHandle, p: string, fileSize: number): Promise<CloopSource> {
    const what = `cloop file ${path.basename(p)}`;
    const index = await readCloopIndex((buf, position) => readFully(fh, buf, position), fileSize, what);
    return new CloopSource(fh, p, index.numBlocks * index.blockSize, index.blockSize, index.offsets);
  }

  async *chunks(blockSize: number, _pool?: BufferPool): AsyncIterable<Buffer> {
    const what = `cloop file ${path.basename(this.path)}`;
    const cbs = this.cloopBlockSize;
    const n = this.offsets.length - 1;
    // Group cloop blocks into reads of ~8 MiB of output; inflate them on the
    // threadpool in parallel while the next group is read.
    const perGroup = Math.max(1, Math.floor(READ_CHUNK / cbs));
    const loadGroup = async (first: number): Promise<Buffer[]> => {
      const last = Math.min(n, first + perGroup);
      const start = this.offsets[first]!;
      const raw = Buffer.allocUnsafe(this.offsets[last]! - start);
      const got = await readFully(this.fh, raw, start);
      if (got !== raw.length) throw new InputError(`${what} is truncated: it ends at byte ${start + got}`);
      this.bytesRead += got;
      const jobs: Promise<Buffer>[] = [];
      for (let i = first; i < last; i++) {
        jobs.push(inflateCloopBlock(raw.subarray(this.offsets[i]! - start, this.offsets[i + 1]! - start), cbs, i, what));
      }
      return Promise.all(jobs);
    };
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const emitSize = chunkSizeFor(blockSize);
    let next: Promise<Buffer[]> | undefined = n > 0 ? loadGroup(0) : undefined;
    let first = 0;
    while (next) {
      const blocks = await next;
      first += blocks.length;
      next = first < n ? loadGroup(first) : undefined;
      next?.catch(() => {});
      for (const b of blocks) {
        pending.push(b);
        pendingBytes += b.length;
      }
      while (pendingBytes >= emitSize || (!next && pendingBytes > 0)) {
        const all = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
        const take = !next ? all.length : emitSize;
        // Split before yielding: the consumer may transfer (detach) the chunk.
        const rest = all.length > take ? Buffer.from(all.subarray(take)) : undefined;
        pending = rest ? [rest] : [];
        pendingBytes = rest?.length ?? 0;
        yield all.subarray(0, take);
      }
    }
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}
