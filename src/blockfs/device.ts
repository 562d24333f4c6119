// What blockfs reads the image through: a byte-addressed, read-only device.
// The fetcher implements it over HTTP mirrors; `FileBlockDevice` reads a
// local image file (tests, benchmarks, `hfk mount --image FILE`).

import * as fsp from 'node:fs/promises';
import { AbortedError, InputError } from '../errors.ts';

export interface BlockDevice {
  readonly size: number;
  /** Bytes [offset, offset+length), exactly (short only at end of image). */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer>;
}

/**
 * A BlockDevice that can also fill a caller's buffer: blockfs then reads
 * into buffers the FUSE layer reuses, instead of fresh memory per READ.
 */
export interface BlockDeviceInto extends BlockDevice {
  /** Fills `dest` with bytes [offset, offset+dest.length); the count is short only at end of image. */
  readInto(dest: Buffer, offset: number, signal?: AbortSignal): Promise<number>;
}

export function canReadInto(device: BlockDevice): device is BlockDeviceInto {
  return typeof (device as Partial<BlockDeviceInto>).readInto === 'function';
}

function checkRange(offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new RangeError(`read of ${length} bytes at ${offset}: offset and length must be non-negative integers`);
  }
}

/** A BlockDevice over a local file. */
export class FileBlockDevice implements BlockDeviceInto {
  readonly path: string;
  readonly size: number;
  private readonly handle: fsp.FileHandle;

  private constructor(path: string, handle: fsp.FileHandle, size: number) {
    this.path = path;
    this.handle = handle;
    this.size = size;
  }

  /** Opens an image file for reading; its size is fixed at open. */
  static async open(path: string): Promise<FileBlockDevice> {
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(path, 'r');
    } catch (e) {
      throw new InputError(`cannot open image ${path}: ${(e as Error).message}`, { cause: e, hint: 'check the path of the image file' });
    }
    const st = await handle.stat();
    if (!st.isFile() && !st.isBlockDevice()) {
      await handle.close();
      throw new InputError(`image ${path} is not a regular file or block device`);
    }
    return new FileBlockDevice(path, handle, st.size);
  }

  async read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    checkRange(offset, length);
    const buf = Buffer.allocUnsafe(Math.max(0, Math.min(length, this.size - offset)));
    const got = await this.readInto(buf, offset, signal);
    return got === buf.length ? buf : buf.subarray(0, got);
  }

  async readInto(dest: Buffer, offset: number, signal?: AbortSignal): Promise<number> {
    if (signal?.aborted) throw new AbortedError('read aborted');
    checkRange(offset, dest.length);
    const want = Math.max(0, Math.min(dest.length, this.size - offset));
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.handle.read(dest, got, want - got, offset + got);
      if (bytesRead === 0) break; // the file shrank under us
      got += bytesRead;
    }
    return got;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
