// A store in a local folder: what the publisher writes and `hfk serve`,
// nginx or rsync hand out. Every write goes to a temporary name in the same
// folder and is renamed into place, so a reader sees a whole file or none.

import { constants as fsc } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { errnoCode, InvalidError, MissingError, StoreError } from '../errors.ts';
import { BLOCKS_DIR, IMAGES_DIR, imageDir, parseManifestFile } from '../format/layout.ts';
import { TMP_PREFIX, writeFileAtomic } from '../util/atomic.ts';
import type { ReadOptions, StoreWriter, WriteOptions } from './store.ts';

export { TMP_PREFIX };
const LOCK_FILE = '.hfk-lock';

export class LocalStore implements StoreWriter {
  readonly root: string;
  readonly location: string;

  private constructor(root: string) {
    this.root = root;
    this.location = root;
  }

  /** A store folder as given, unchecked: a read of a missing folder is a MissingError like any absent file. */
  static at(root: string): LocalStore {
    return new LocalStore(path.resolve(root));
  }

  /** Opens a store folder for reading; it must exist. */
  static async open(root: string): Promise<LocalStore> {
    const abs = path.resolve(root);
    let st;
    try {
      st = await fs.stat(abs);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') {
        throw new StoreError(`store ${root} does not exist`, { hint: 'publish an image into it first: hfk publish IMAGE --store DIR …' });
      }
      throw new StoreError(`cannot open store ${root}: ${(e as Error).message}`);
    }
    if (!st.isDirectory()) throw new StoreError(`store ${root} is not a folder`);
    return new LocalStore(abs);
  }

  /**
   * Opens a store folder for writing, creating it if needed, and proves
   * that it is writable before anything else is done.
   */
  static async openWritable(root: string): Promise<LocalStore> {
    const abs = path.resolve(root);
    try {
      await fs.mkdir(abs, { recursive: true });
    } catch (e) {
      // Node's recursive mkdir reports ENOENT where the last step failed for another reason (EROFS,
      // EACCES): a plain mkdir of the folder tells the real one when its parent exists.
      const again = await fs.mkdir(abs).then(() => null, (e2: unknown) => e2);
      if (again === null) return LocalStore.openWritable(root); // made after all
      const why = errnoCode(again) === 'ENOENT' ? e : again;
      throw new StoreError(`cannot create store folder ${root}: ${errnoCode(why) === 'EROFS' ? 'the filesystem is read-only' : (why as Error).message}`, {
        hint: 'choose a --store folder you can write to',
      });
    }
    const st = await fs.stat(abs);
    if (!st.isDirectory()) throw new StoreError(`store ${root} is not a folder`);
    try {
      await fs.access(abs, fsc.W_OK);
      for (const sub of [BLOCKS_DIR, IMAGES_DIR]) {
        await fs.mkdir(path.join(abs, sub), { recursive: true });
        await fs.access(path.join(abs, sub), fsc.W_OK);
      }
      // access() trusts mode bits; a read-only mount only shows on a real write.
      const probe = path.join(abs, `${TMP_PREFIX}probe.${process.pid}`);
      await fs.writeFile(probe, '');
      await fs.rm(probe);
    } catch (e) {
      throw new StoreError(`store ${root} is not writable: ${(e as Error).message}`, {
        hint: 'fix its permissions or choose another --store folder',
      });
    }
    return new LocalStore(abs);
  }

  abs(rel: string): string {
    return path.join(this.root, ...rel.split('/'));
  }

  async read(rel: string, options: ReadOptions = {}): Promise<Buffer> {
    try {
      if (options.maxBytes === undefined) return await fs.readFile(this.abs(rel));
      // A file of unknown size: its size is checked before it is read.
      const fh = await fs.open(this.abs(rel), 'r');
      try {
        const { size } = await fh.stat();
        if (size > options.maxBytes) throw new InvalidError(this.location, `${rel} in ${this.location} has ${size} bytes, more than such a file may have (${options.maxBytes} bytes)`);
        const buf = Buffer.alloc(size);
        const { bytesRead } = await fh.read(buf, 0, size, 0);
        return buf.subarray(0, bytesRead);
      } finally {
        await fh.close();
      }
    } catch (e) {
      if (e instanceof InvalidError) throw e;
      if (errnoCode(e) === 'ENOENT') throw new MissingError(this.location, `${rel} is not in store ${this.location}`);
      throw new StoreError(`cannot read ${rel} in store ${this.location}: ${(e as Error).message}`);
    }
  }

  /** Size of a file, or undefined if it does not exist. */
  async size(rel: string): Promise<number | undefined> {
    try {
      return (await fs.stat(this.abs(rel))).size;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** Writes a file atomically: temporary name, optional fsync, rename. */
  async write(rel: string, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    const dest = this.abs(rel);
    await fs.mkdir(path.dirname(dest), { recursive: true });
    await writeFileAtomic(dest, data, { mode: 0o644, ...(options.fsync ? { fsync: true } : {}) });
  }

  async remove(rel: string): Promise<void> {
    await fs.rm(this.abs(rel), { force: true });
  }

  async listImages(): Promise<string[]> {
    try {
      const names = await fs.readdir(this.abs(IMAGES_DIR));
      return names.filter((n) => !n.startsWith('.')).sort();
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return [];
      throw e;
    }
  }

  /** Versions with a manifest file, ascending. */
  async listVersions(name: string): Promise<number[]> {
    try {
      const files = await fs.readdir(this.abs(imageDir(name)));
      return files
        .map(parseManifestFile)
        .filter((v): v is number => v !== undefined)
        .sort((a, b) => a - b);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return [];
      throw e;
    }
  }

  /** Every block object in the store, and every leftover temporary file. */
  async listBlockFiles(): Promise<{ hashes: string[]; temporaries: string[] }> {
    const hashes: string[] = [];
    const temporaries: string[] = [];
    let fans: string[];
    try {
      fans = await fs.readdir(this.abs(BLOCKS_DIR));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return { hashes, temporaries };
      throw e;
    }
    for (const fan of fans.sort()) {
      if (!/^[0-9a-f]{2}$/.test(fan)) continue;
      for (const f of (await fs.readdir(this.abs(`${BLOCKS_DIR}/${fan}`))).sort()) {
        if (f.startsWith(TMP_PREFIX)) temporaries.push(`${BLOCKS_DIR}/${fan}/${f}`);
        else if (/^[0-9a-f]{64}$/.test(f) && f.startsWith(fan)) hashes.push(f);
      }
    }
    return { hashes, temporaries };
  }

  /**
   * Takes the store-wide lock (publish and gc hold it), so two writers never
   * interleave. A lock left by a process that no longer runs is taken over.
   */
  async lock(purpose: string): Promise<() => Promise<void>> {
    const file = this.abs(LOCK_FILE);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fh = await fs.open(file, 'wx', 0o644);
        await fh.writeFile(`${process.pid} ${purpose}\n`);
        await fh.close();
        let released = false;
        return async () => {
          if (released) return;
          released = true;
          await fs.rm(file, { force: true });
        };
      } catch (e) {
        if (errnoCode(e) !== 'EEXIST') throw new StoreError(`cannot lock store ${this.location}: ${(e as Error).message}`);
        const text = await fs.readFile(file, 'utf8').catch(() => '');
        const pid = Number(text.split(' ')[0]);
        if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
          throw new StoreError(`store ${this.location} is busy: process ${pid} holds it (${text.trim().split(' ').slice(1).join(' ')})`, {
            hint: 'wait for that command to finish; hfk publish and hfk gc take turns on one store',
          });
        }
        await fs.rm(file, { force: true }); // stale: its owner is gone
      }
    }
    throw new StoreError(`cannot lock store ${this.location}: another process keeps taking the lock`);
  }

  async close(): Promise<void> {}
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errnoCode(e) === 'EPERM';
  }
}
