// The reader's memory cache of decompressed, verified blocks, keyed by block
// hash, bounded in bytes, least recently used out first. Two kinds with one
// interface:
//
//   ShmCache     the blocks live in an unnamed file on a tmpfs (/dev/shm or
//                /run): the kernel's shared memory, reached with pread and
//                pwrite. The default where such a tmpfs exists.
//   HeapCache    the blocks are Buffers in the process (the fallback, and
//                what unit tests of the fetcher use).
//
// Why a file: every block a reader keeps is new memory, and on virtual
// machines the first touch of a process's fresh pages (a page fault, zeroing,
// a page-table update the hypervisor must follow) is the largest cost of a
// cold read; writing into a tmpfs file is an order of magnitude cheaper (the
// kernel hands out pages it already has, without zeroing them and without
// mapping them into the process: docs/PERFORMANCE.md). The tmpfs file also keeps the cache out of the garbage
// collector's way, and its memory shows as shared memory (Shmem in
// /proc/meminfo), not as the reader's heap.

import * as fs from 'node:fs';
import type { Reservation } from '../source/source.ts';

export interface BlockMemory {
  /** Limit in bytes of block data. */
  readonly limit: number;
  hits: number;
  misses: number;
  /** Where the blocks are kept, for stats.json: 'heap', or the tmpfs folder's path. */
  readonly backing: string;
  /** Whether set() keeps a copy of the bytes (the caller may reuse its buffer) rather than the buffer itself. */
  readonly copies: boolean;
  /** Bytes of block data held. */
  readonly size: number;
  /** Blocks held. */
  readonly count: number;
  has(hash: string): boolean;
  /** A block's bytes (a copy for the tmpfs kind); counts a hit or a miss. */
  get(hash: string): Buffer | undefined;
  /**
   * Copies `length` bytes of a block from `from` into `dest` at `destOffset`
   * without any other buffer; counts a hit. False when the block is not held
   * (not counted: the caller's get() after the fetch counts the miss).
   */
  copyTo(hash: string, dest: Uint8Array, destOffset: number, from: number, length: number): boolean;
  /** Keeps the block: a copy of it (`copies`; the caller may reuse `data` once set() returns), or the buffer itself. */
  set(hash: string, data: Buffer): void;
  /**
   * Room for a block that another thread writes in (the tmpfs kind): the
   * file and where the block goes. The block is not held, nor readable,
   * until `commit()` after the write; `cancel()` gives the room back, and
   * `full()` too when the tmpfs refused the write. Undefined when the block
   * is held already or there is no room.
   */
  reserve?(hash: string, length: number): Reservation | undefined;
  /** Frees what the cache holds; later calls miss. Idempotent. */
  close(): void;
}

export type { Reservation };

/** Blocks as Buffers on the process's heap. */
export class HeapCache implements BlockMemory {
  private readonly map = new Map<string, Buffer>();
  private bytes = 0;
  readonly limit: number;
  readonly backing = 'heap';
  readonly copies = false;
  hits = 0;
  misses = 0;

  constructor(limitBytes: number) {
    this.limit = limitBytes;
  }

  get(hash: string): Buffer | undefined {
    const b = this.map.get(hash);
    if (b === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    // Re-insert: Map iteration order is insertion order, so the front is the LRU end.
    this.map.delete(hash);
    this.map.set(hash, b);
    return b;
  }

  copyTo(hash: string, dest: Uint8Array, destOffset: number, from: number, length: number): boolean {
    const b = this.map.get(hash);
    if (!b) return false;
    this.get(hash);
    b.copy(dest, destOffset, from, from + length);
    return true;
  }

  has(hash: string): boolean {
    return this.map.has(hash);
  }

  set(hash: string, data: Buffer): void {
    if (data.length > this.limit) return;
    const old = this.map.get(hash);
    if (old) {
      this.bytes -= old.length;
      this.map.delete(hash);
    }
    this.map.set(hash, data);
    this.bytes += data.length;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.limit) break;
      this.map.delete(k);
      this.bytes -= v.length;
    }
  }

  get size(): number {
    return this.bytes;
  }

  get count(): number {
    return this.map.size;
  }

  close(): void {
    this.map.clear();
    this.bytes = 0;
  }
}

const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;
/** open(2)'s O_TMPFILE on Linux (__O_TMPFILE | O_DIRECTORY); node:fs does not export it. */
const O_TMPFILE = 0o20000000 | fs.constants.O_DIRECTORY;

/** Folders tried for the tmpfs file, in order (the initramfs has /run, most hosts /dev/shm). */
export const SHM_DIRS = ['/dev/shm', '/run'] as const;

/** Whether `dir` is a tmpfs or ramfs folder (memory, never written back to a disk). */
export function isMemoryFs(dir: string): boolean {
  try {
    const t = fs.statfsSync(dir).type;
    return t === TMPFS_MAGIC || t === RAMFS_MAGIC;
  } catch {
    return false;
  }
}

/**
 * Opens a file in `dir` that has no name: O_TMPFILE where the filesystem
 * supports it, else a new file unlinked at once. Nothing is left behind
 * whichever way the process ends.
 */
function openUnnamed(dir: string): number {
  try {
    return fs.openSync(dir, fs.constants.O_RDWR | O_TMPFILE, 0o600);
  } catch {
    const name = `${dir}/.hfk-memory-${process.pid}-${Date.now()}`;
    const fd = fs.openSync(name, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    fs.unlinkSync(name);
    return fd;
  }
}

interface Slot {
  slot: number;
  length: number;
}

/**
 * Blocks in fixed slots of an unnamed tmpfs file. Slots of evicted blocks are
 * reused, so the file never outgrows the limit, nor the room its tmpfs had
 * (less a reserve for others). A write the tmpfs refuses (full after all)
 * leaves that block uncached and stops the growth: from then on new blocks
 * replace the least recently used.
 *
 * Writes are synchronous: handing them to libuv's threads instead took the
 * reader's thread as long in bookkeeping as the copy itself (figures:
 * docs/PERFORMANCE.md).
 */
export class ShmCache implements BlockMemory {
  private readonly map = new Map<string, Slot>();
  private readonly free: number[] = [];
  private fd: number | undefined;
  private bytes = 0;
  private nextSlot = 0;
  private maxSlots: number;
  readonly limit: number;
  readonly slotBytes: number;
  readonly backing: string;
  readonly copies = true;
  hits = 0;
  misses = 0;

  /**
   * Throws the filesystem's error when no unnamed file can be made in `dir`.
   * The file grows at most to what leaves `reserveBytes` of the tmpfs free
   * as it is now (default: 16 MiB or 5% of it, whichever is more). Decided
   * here, once: the init's reader cannot name its tmpfs (/run) after
   * switch_root has moved it.
   */
  constructor(limitBytes: number, slotBytes: number, dir: string, options: { reserveBytes?: number } = {}) {
    if (!Number.isSafeInteger(slotBytes) || slotBytes <= 0) throw new RangeError(`slotBytes must be a positive integer: got ${slotBytes}`);
    this.limit = limitBytes;
    this.slotBytes = slotBytes;
    this.maxSlots = Math.floor(limitBytes / slotBytes);
    try {
      const st = fs.statfsSync(dir);
      const reserve = options.reserveBytes ?? Math.max(16 << 20, st.blocks * st.bsize * 0.05);
      this.maxSlots = Math.max(0, Math.min(this.maxSlots, Math.floor((st.bavail * st.bsize - reserve) / slotBytes)));
    } catch {
      // no figures: the limit alone (a write the tmpfs refuses still stops the growth)
    }
    this.backing = dir;
    this.fd = openUnnamed(dir);
  }

  has(hash: string): boolean {
    return this.map.has(hash);
  }

  /** The slot of a block, marked most recently used; counts a hit (or a miss, if asked). */
  private touch(hash: string, countMiss: boolean): Slot | undefined {
    const s = this.map.get(hash);
    if (s === undefined || this.fd === undefined) {
      if (countMiss) this.misses++;
      return undefined;
    }
    this.hits++;
    this.map.delete(hash);
    this.map.set(hash, s);
    return s;
  }

  private readAt(s: Slot, dest: Uint8Array, destOffset: number, from: number, length: number): boolean {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(this.fd!, dest, destOffset + done, length - done, s.slot * this.slotBytes + from + done);
      if (n === 0) return false;
      done += n;
    }
    return true;
  }

  get(hash: string): Buffer | undefined {
    const s = this.touch(hash, true);
    if (!s) return undefined;
    const out = Buffer.allocUnsafe(s.length);
    if (this.readAt(s, out, 0, 0, s.length)) return out;
    this.drop(hash);
    return undefined;
  }

  copyTo(hash: string, dest: Uint8Array, destOffset: number, from: number, length: number): boolean {
    const held = this.map.get(hash);
    if (held && (from < 0 || length < 0 || from + length > held.length)) throw new RangeError(`bytes ${from}+${length} are outside the block (${held.length} bytes)`);
    const s = this.touch(hash, false);
    if (!s) return false;
    if (this.readAt(s, dest, destOffset, from, length)) return true;
    this.drop(hash);
    return false;
  }

  private drop(hash: string): void {
    const s = this.map.get(hash);
    if (!s) return;
    this.map.delete(hash);
    this.bytes -= s.length;
    if (s.slot < this.maxSlots) this.free.push(s.slot);
  }

  /** A slot for a new block: a free one, a new one while under the limit, else the least recently used block's. */
  private takeSlot(): number | undefined {
    while (this.free.length) {
      const f = this.free.pop()!;
      if (f < this.maxSlots) return f;
    }
    if (this.nextSlot < this.maxSlots) return this.nextSlot++;
    for (const [k, s] of this.map) {
      this.map.delete(k);
      this.bytes -= s.length;
      return s.slot;
    }
    return undefined;
  }

  reserve(hash: string, length: number): Reservation | undefined {
    if (this.fd === undefined || length > this.slotBytes || this.map.has(hash)) return undefined;
    const slot = this.takeSlot();
    if (slot === undefined) return undefined;
    const fd = this.fd;
    let settled = false;
    const settle = (keep: boolean) => {
      if (settled) return;
      settled = true;
      // Kept only if the cache is still open on the same file and nobody kept the block meanwhile.
      if (keep && this.fd === fd && !this.map.has(hash)) {
        this.map.set(hash, { slot, length });
        this.bytes += length;
      } else if (this.fd === fd && slot < this.maxSlots) this.free.push(slot);
    };
    return {
      fd,
      offset: slot * this.slotBytes,
      commit: () => settle(true),
      cancel: () => settle(false),
      full: () => {
        this.maxSlots = Math.min(this.maxSlots, slot);
        settle(false);
      },
    };
  }

  set(hash: string, data: Buffer): void {
    const held = this.map.get(hash);
    if (held) {
      // Same name, same bytes: only the recency changes.
      this.map.delete(hash);
      this.map.set(hash, held);
    }
    const slot = held || this.fd === undefined || data.length > this.slotBytes ? undefined : this.takeSlot();
    if (slot !== undefined) {
      try {
        let at = 0;
        while (at < data.length) at += fs.writeSync(this.fd!, data, at, data.length - at, slot * this.slotBytes + at);
        this.map.set(hash, { slot, length: data.length });
        this.bytes += data.length;
      } catch {
        // The tmpfs is full (or over its size limit): the file grows no more, the block is not kept.
        this.maxSlots = Math.min(this.maxSlots, slot);
      }
    }
  }

  get size(): number {
    return this.bytes;
  }

  get count(): number {
    return this.map.size;
  }

  close(): void {
    if (this.fd === undefined) return;
    fs.closeSync(this.fd);
    this.fd = undefined;
    this.map.clear();
    this.free.length = 0;
    this.bytes = 0;
  }
}

export interface MemoryCacheOptions {
  /** Bytes of block data to keep. */
  limitBytes: number;
  /** The image's block size (the tmpfs kind keeps blocks in slots of this size). */
  blockSize: number;
  /** 'shm' (default): a tmpfs file when one of `dirs` is a tmpfs, else the heap. 'heap': the heap. */
  kind?: 'shm' | 'heap';
  /** Folders to try for the tmpfs file (default SHM_DIRS). */
  dirs?: readonly string[];
}

/** The cache a reader uses: a tmpfs file where one can be made, else the heap. */
export function openMemoryCache(o: MemoryCacheOptions): BlockMemory {
  if (o.kind !== 'heap') {
    for (const dir of o.dirs ?? SHM_DIRS) {
      if (!isMemoryFs(dir)) continue;
      try {
        return new ShmCache(o.limitBytes, o.blockSize, dir);
      } catch {
        // not writable here (read-only, no permission): the next folder
      }
    }
  }
  return new HeapCache(o.limitBytes);
}
