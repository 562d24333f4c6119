// Writing a file so that a reader sees the old file or the whole new one,
// never a part: the data goes to a temporary name in the same folder (so the
// rename stays on one filesystem), is optionally fsync'd, and is renamed
// over the destination. A failed write removes its temporary file.

import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { errnoCode } from '../errors.ts';

// node:fs's callback forms: the same system calls as fs/promises', with much
// less work around them (a disk cache writes hundreds of objects during a
// boot, on an emulated CPU).
const cb = {
  open: promisify(fs.open),
  writeFile: promisify(fs.writeFile),
  fsync: promisify(fs.fsync),
  close: promisify(fs.close),
  rename: promisify(fs.rename),
  rm: promisify(fs.rm),
};

/** Temporary files start with this (a store's gc and a cache's start-up sweep remove leftovers by it). */
export const TMP_PREFIX = '.tmp.';

export interface AtomicWriteOptions {
  /**
   * Flush the file to disk before the rename, and the folder after it, so
   * the new file survives a crash once the call returns. Default false: the
   * file is whole or absent after a crash, but may be the old one.
   */
  fsync?: boolean;
  /** Permission bits of the new file (less the umask). Default 0o666, as fs.writeFile. */
  mode?: number;
}

/** `.tmp.NAME.PID.RANDOM` beside `file`. */
export function tempPathFor(file: string): string {
  return path.join(path.dirname(file), `${TMP_PREFIX}${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}`);
}

/** Writes `data` to `file` atomically (see the top of this file). The folder must exist. */
export async function writeFileAtomic(file: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): Promise<void> {
  const tmp = tempPathFor(file);
  const mode = options.mode ?? 0o666;
  if (options.fsync) {
    const fd = await cb.open(tmp, 'wx', mode);
    try {
      try {
        await cb.writeFile(fd, data);
        await cb.fsync(fd);
      } finally {
        await cb.close(fd);
      }
    } catch (e) {
      await cb.rm(tmp, { force: true });
      throw e;
    }
  } else {
    try {
      await cb.writeFile(tmp, data, { flag: 'wx', mode });
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') await cb.rm(tmp, { force: true }); // EEXIST: not ours
      throw e;
    }
  }
  try {
    await cb.rename(tmp, file);
  } catch (e) {
    await cb.rm(tmp, { force: true });
    throw e;
  }
  if (options.fsync) {
    const dir = await cb.open(path.dirname(file), 'r');
    try {
      await cb.fsync(dir);
    } finally {
      await cb.close(dir);
    }
  }
}

/** writeFileAtomic for code that must not yield: PID 1's report, worker threads, build steps. */
export function writeFileAtomicSync(file: string, data: string | Uint8Array, options: AtomicWriteOptions = {}): void {
  const tmp = tempPathFor(file);
  const fd = fs.openSync(tmp, 'wx', options.mode ?? 0o666);
  try {
    try {
      fs.writeFileSync(fd, data);
      if (options.fsync) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  if (options.fsync) {
    const dir = fs.openSync(path.dirname(file), 'r');
    try {
      fs.fsyncSync(dir);
    } finally {
      fs.closeSync(dir);
    }
  }
}
