// The disk cache: block objects exactly as a mirror served them, in the
// store's own layout (blocks/xx/HASH, images/NAME/vN.hfkm), so it is itself a
// partial store. Written atomically, verified again on every read, bounded
// in size with least-recently-used eviction. On a local partition it
// survives reboots: the next boot needs only a manifest check, and none at
// all when the network is gone but the blocks are here.

import { close, constants, fstat, lstatSync, open, read, readdirSync, rmSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { errnoCode, InvalidError, StoreError } from '../errors.ts';
import { decodeBlockSync, MAX_BLOCK_SIZE } from '../format/codec.ts';
import { blockPath, manifestFile, manifestPath, parseManifestFile, imageDir } from '../format/layout.ts';
import { MANIFEST_MAX_BYTES } from '../format/manifest.ts';
import { verifyObject } from '../store/images.ts';
import { TMP_PREFIX, writeFileAtomic } from '../util/atomic.ts';

export interface DiskCacheStats {
  dir: string;
  limitBytes: number;
  bytes: number;
  objects: number;
  hits: number;
  misses: number;
  evicted: number;
  discarded: number;
}

// node:fs's callback forms: the same system calls as fs/promises', with
// much less work around them (a boot reads hundreds of objects).
const cb = { open: promisify(open), fstat: promisify(fstat), read: promisify(read), close: promisify(close) };

/** Never follows a symlink, never waits on a FIFO. */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** No stored object is larger than this (a block stored raw, plus its tag byte). */
const MAX_OBJECT_BYTES = MAX_BLOCK_SIZE + 1;

/**
 * Reads a file the cache holds, trusting nothing about it: it must be a
 * regular file (not a symlink, folder or device) whose size `fits`, checked
 * on the open file before anything is read, so a huge or sparse file costs
 * one fstat. Throws for anything else.
 */
async function readUntrusted(file: string, fits: (size: number) => boolean): Promise<Buffer> {
  const fd = await cb.open(file, OPEN_FLAGS);
  try {
    const st = await cb.fstat(fd);
    if (!st.isFile()) throw new Error(`${file} is not a regular file`);
    if (!fits(st.size)) throw new Error(`${file} has ${st.size} bytes`);
    const buf = Buffer.allocUnsafe(st.size);
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await cb.read(fd, buf, got, buf.length - got, got);
      if (bytesRead === 0) throw new Error(`${file} ends at byte ${got} of ${buf.length}`);
      got += bytesRead;
    }
    return buf;
  } finally {
    await cb.close(fd).catch(() => {});
  }
}

/** Removes whatever is at `file` (a folder too); a failure only leaves it for the next try. */
async function remove(file: string): Promise<void> {
  await fs.rm(file, { recursive: true, force: true }).catch(() => {});
}

/** How long after a read its object's times are set on disk (in one batch with the others). */
const TOUCH_DELAY_MS = 30_000;

export interface DiskCacheOptions {
  /**
   * Write-behind: objects are held in memory and written only once no new
   * one has come for this long (or flush() is called, or `holdBytes` are
   * held). Default 0: each is written at once. For a cache that is itself
   * RAM (the initramfs's tmpfs), writing during a boot only takes CPU from
   * the boot (on an emulated CPU the writes were the largest cost on the
   * reader's main thread).
   */
  holdMs?: number;
  /** Most bytes held for write-behind; past this, objects are written at once. Default 64 MiB. */
  holdBytes?: number;
}

/** Held objects written at once when they are finally written (a burst would hold up reads on libuv's threads). */
const HELD_WRITERS = 2;

export class DiskCache {
  readonly dir: string;
  /**
   * The limit in bytes: as opened, or lower once the filesystem ran out of
   * room before the cache reached it (a cache partition smaller than the
   * configured size, a disk shared with other files). On ENOSPC or EDQUOT
   * the cache takes 90% of what it holds as its limit, evicts down to that
   * and writes the object again, so it keeps the newest blocks instead of
   * refusing every new one.
   */
  get limit(): number {
    return this.limitNow;
  }
  private limitNow: number;
  /** The eviction that a full filesystem started, which other failed writes wait for. */
  private makingRoom: Promise<void> | undefined;
  /** hash → object size; Map order is least recently used first. */
  private readonly index = new Map<string, number>();
  private bytes = 0;
  private hits = 0;
  private misses = 0;
  private evicted = 0;
  private discarded = 0;
  private readonly writing = new Set<string>();
  private readonly pending = new Set<Promise<void>>();
  /** Write-behind: objects not written yet, and their bytes. */
  private readonly held = new Map<string, { object: Buffer; written: () => void; taken: boolean }>();
  private heldBytes = 0;
  private holdTimer: NodeJS.Timeout | undefined;
  private readonly holdMs: number;
  private readonly holdBytes: number;
  /** Folders known to exist (a block's fan-out folder is made once, not per object). */
  private readonly folders = new Set<string>();
  /** Objects read since their times were last set, and the timer that sets them. */
  private readonly touched = new Set<string>();
  private touchTimer: NodeJS.Timeout | undefined;

  private constructor(dir: string, limit: number, options: DiskCacheOptions) {
    this.dir = dir;
    this.limitNow = limit;
    this.holdMs = options.holdMs ?? 0;
    this.holdBytes = options.holdBytes ?? 64 << 20;
  }

  /**
   * Opens (creating) a cache folder and indexes what it already holds. A
   * relative `dir` stays relative: it is resolved against the working
   * directory at every use, which is what the init's reader needs (its cwd
   * is the cache folder; absolute paths stop naming it once switch_root has
   * moved /run into the new root).
   */
  static async open(dir: string, limitBytes: number, options: DiskCacheOptions = {}): Promise<DiskCache> {
    const abs = path.normalize(dir);
    try {
      await fs.mkdir(path.join(abs, 'blocks'), { recursive: true });
      const probe = path.join(abs, `${TMP_PREFIX}probe.${process.pid}`);
      await fs.writeFile(probe, '');
      await fs.rm(probe);
    } catch (e) {
      throw new StoreError(`cache folder ${dir} is not usable: ${(e as Error).message}`, {
        hint: 'choose a writable --cache folder (or hfk.cache=tmpfs)',
      });
    }
    const c = new DiskCache(abs, limitBytes, options);
    // The index is read with synchronous calls: once, before anything is
    // served, and a cache partition holds thousands of objects: on a slow
    // machine a promise round trip per object made warm boots much slower
    // (figures: docs/PERFORMANCE.md).
    const found: { hash: string; size: number; used: number }[] = [];
    for (const fan of readdirSync(path.join(abs, 'blocks'))) {
      if (!/^[0-9a-f]{2}$/.test(fan)) continue;
      const fanDir = path.join(abs, 'blocks', fan);
      let names: string[];
      try {
        names = readdirSync(fanDir);
      } catch {
        continue; // not a folder
      }
      c.folders.add(fanDir);
      for (const f of names) {
        const p = path.join(fanDir, f);
        if (f.startsWith(TMP_PREFIX)) {
          rmSync(p, { force: true }); // left by a crash
          continue;
        }
        if (!/^[0-9a-f]{64}$/.test(f)) continue;
        const st = lstatSync(p, { throwIfNoEntry: false });
        if (!st) continue;
        if (st.isFile() && st.size > 0 && st.size <= MAX_OBJECT_BYTES) {
          found.push({ hash: f, size: st.size, used: st.mtimeMs });
          continue;
        }
        // Nothing a cache writes: a folder, symlink or device, or a file no object can be.
        // Removed now, or it would block the object's own file or count against the limit.
        try {
          rmSync(p, { recursive: true, force: true });
        } catch {
          // left as it is: not indexed, so never read
        }
        c.discarded++;
      }
    }
    found.sort((a, b) => a.used - b.used);
    for (const f of found) {
      c.index.set(f.hash, f.size);
      c.bytes += f.size;
    }
    await c.evict();
    return c;
  }

  private abs(rel: string): string {
    return path.join(this.dir, ...rel.split('/'));
  }

  has(hash: string): boolean {
    return this.index.has(hash) || this.held.has(hash);
  }

  /**
   * The verified block, or undefined if the cache lacks it. What is on disk
   * is untrusted: a file of another size than `objectSize` (the manifest's;
   * when unknown, any size an object can have for a block of `length`), one
   * that cannot be read, or one that fails verification is removed, counted
   * as discarded, and reported as a miss; nothing larger is ever read.
   * `digest`: the object digest the manifest signs, if any (verifyObject).
   */
  async getBlock(hash: string, length: number, digest?: string, objectSize?: number): Promise<Buffer | undefined> {
    const held = this.held.get(hash);
    if (held) {
      this.hits++;
      return decodeBlockSync(held.object, length); // verified when it came (only verified objects are put): decoded again, not checked again
    }
    if (!this.index.has(hash)) {
      this.misses++;
      return undefined;
    }
    const p = this.abs(blockPath(hash));
    const fits = (size: number) => (objectSize === undefined ? size > 0 && size <= length + 1 : size === objectSize);
    let object: Buffer;
    try {
      if (!fits(this.index.get(hash)!)) throw new Error(`${p} has another size than the object`);
      object = await readUntrusted(p, fits);
    } catch (e) {
      return this.discard(hash, p, errnoCode(e) !== 'ENOENT');
    }
    try {
      const data = await verifyObject(`disk cache ${this.dir}`, hash, object, length, digest);
      this.hits++;
      this.touch(hash);
      return data;
    } catch (e) {
      if (!(e instanceof InvalidError)) throw e;
      return this.discard(hash, p, true);
    }
  }

  /** A cached object that is gone or damaged: forgotten, removed, and a miss. */
  private async discard(hash: string, file: string, damaged: boolean): Promise<undefined> {
    this.drop(hash);
    if (damaged) {
      this.discarded++;
      await remove(file);
    }
    this.misses++;
    return undefined;
  }

  /**
   * Marks an object used: first in memory, and on disk (its times, so the
   * LRU order survives a reboot) a while later and in one batch, off the
   * path of the reads that are waiting now (a boot reads hundreds at once).
   */
  private touch(hash: string): void {
    const size = this.index.get(hash)!;
    this.index.delete(hash);
    this.index.set(hash, size);
    this.touched.add(hash);
    this.touchTimer ??= setTimeout(() => void this.touchNow(), TOUCH_DELAY_MS).unref();
  }

  private async touchNow(): Promise<void> {
    clearTimeout(this.touchTimer);
    this.touchTimer = undefined;
    const hashes = [...this.touched];
    this.touched.clear();
    const now = new Date();
    for (const h of hashes) {
      if (this.index.has(h)) await fs.utimes(this.abs(blockPath(h)), now, now).catch(() => {});
    }
  }

  private drop(hash: string): void {
    const size = this.index.get(hash);
    if (size !== undefined) {
      this.bytes -= size;
      this.index.delete(hash);
    }
  }

  /**
   * Stores a verified object (atomically); never throws for a full disk.
   * Resolves once it is written (with write-behind, later): until then the
   * caller must leave `object` as it is.
   */
  putObject(hash: string, object: Buffer): Promise<void> {
    if (this.index.has(hash) || this.writing.has(hash) || this.held.has(hash) || object.length > this.limit) return Promise.resolve();
    if (this.holdMs > 0 && this.heldBytes + object.length <= this.holdBytes) {
      return new Promise((written) => {
        this.held.set(hash, { object, written, taken: false });
        this.heldBytes += object.length;
        if (this.holdTimer) this.holdTimer.refresh();
        else this.holdTimer = setTimeout(() => void this.writeHeld(), this.holdMs).unref();
      });
    }
    return this.track(this.write(hash, object));
  }

  private track(p: Promise<void>): Promise<void> {
    const t = p.finally(() => this.pending.delete(t));
    this.pending.add(t);
    return t;
  }

  /** Writes what write-behind holds, a few at a time. */
  private writeHeld(): Promise<void> {
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    const jobs = [...this.held].filter(([, h]) => !h.taken);
    if (jobs.length === 0) return Promise.resolve();
    for (const [, h] of jobs) h.taken = true;
    const writer = async () => {
      for (let job = jobs.shift(); job; job = jobs.shift()) {
        const [hash, { object, written }] = job;
        await this.write(hash, object);
        this.held.delete(hash); // only now: until it is on disk, reads find it here
        this.heldBytes -= object.length;
        written();
      }
    };
    return this.track(Promise.all(Array.from({ length: HELD_WRITERS }, writer)).then(() => {}));
  }

  /** Writes what write-behind holds, waits for every write under way, and records the use of objects read. */
  async flush(): Promise<void> {
    await this.writeHeld();
    while (this.pending.size) await Promise.all([...this.pending]);
    if (this.touched.size) await this.touchNow();
  }

  private async write(hash: string, object: Buffer): Promise<void> {
    this.writing.add(hash);
    try {
      try {
        await this.writeAtomic(blockPath(hash), object);
      } catch (e) {
        const code = errnoCode(e);
        if ((code !== 'ENOSPC' && code !== 'EDQUOT') || this.index.size === 0) throw e;
        await this.makeRoom();
        await this.writeAtomic(blockPath(hash), object);
      }
      this.index.set(hash, object.length);
      this.bytes += object.length;
      // Done writing before evicting: with many writes finishing together, each eviction
      // must be free to remove the others' objects, or the cache can stay over its limit.
      this.writing.delete(hash);
      await this.evict();
    } catch {
      // A cache that cannot write only makes the next boot slower.
    } finally {
      this.writing.delete(hash);
    }
  }

  private async writeAtomic(rel: string, data: Uint8Array): Promise<void> {
    const dest = this.abs(rel);
    const dir = path.dirname(dest);
    if (!this.folders.has(dir)) {
      await fs.mkdir(dir, { recursive: true });
      this.folders.add(dir);
    }
    try {
      await writeFileAtomic(dest, data);
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
      await fs.mkdir(dir, { recursive: true }); // the folder went (removed by hand): make it again
      await writeFileAtomic(dest, data);
    }
  }

  /** The filesystem is full: the limit drops to 90% of what the cache holds, and it evicts down to that (once for writes failing together). */
  private makeRoom(): Promise<void> {
    if (!this.makingRoom) {
      this.limitNow = Math.min(this.limitNow, Math.floor(this.bytes * 0.9));
      this.makingRoom = this.evict().finally(() => (this.makingRoom = undefined));
    }
    return this.makingRoom;
  }

  private async evict(): Promise<void> {
    if (this.bytes <= this.limit) return;
    const target = this.limit * 0.9;
    for (const [hash, size] of this.index) {
      if (this.bytes <= target) break;
      this.index.delete(hash);
      this.bytes -= size;
      this.evicted++;
      await fs.rm(this.abs(blockPath(hash)), { force: true });
    }
  }

  /** Keeps a verified manifest, so a later boot can start without the network. */
  async putManifest(name: string, version: number, bytes: Buffer): Promise<void> {
    try {
      await this.writeAtomic(manifestPath(name, version), bytes);
    } catch {
      // see putObject
    }
  }

  /** Cached manifests of an image, newest first. */
  async manifests(name: string): Promise<{ version: number; bytes: Buffer }[]> {
    let files: string[];
    try {
      files = await fs.readdir(this.abs(imageDir(name)));
    } catch {
      return [];
    }
    const versions = files
      .map(parseManifestFile)
      .filter((v): v is number => v !== undefined)
      .sort((a, b) => b - a);
    const out: { version: number; bytes: Buffer }[] = [];
    for (const v of versions) {
      // Bounded like a manifest from a mirror; what fails here is only not offered (it is checked again when used).
      const file = this.abs(`${imageDir(name)}/${manifestFile(v)}`);
      const bytes = await readUntrusted(file, (size) => size > 0 && size <= MANIFEST_MAX_BYTES).catch(() => undefined);
      if (bytes) out.push({ version: v, bytes });
    }
    return out;
  }

  stats(): DiskCacheStats {
    return {
      dir: this.dir,
      limitBytes: this.limit,
      bytes: this.bytes,
      objects: this.index.size,
      hits: this.hits,
      misses: this.misses,
      evicted: this.evicted,
      discarded: this.discarded,
    };
  }
}
