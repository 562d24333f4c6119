// The block fetcher: an image as a readable device. It knows the image
// (block ↔ offset, the memory cache, readahead, the boot profile, stats);
// where blocks come from is the block source it is given (src/source/:
// disk cache, retries, mirrors, peers), composed by src/fetch/open.ts.
//
//   read(offset, length) → blocks → memory cache → one shared get per block → source
//   Sequential reads grow a readahead window that prefetches the next blocks.

import { zeroBlock } from '../format/codec.ts';
import { blockLength, type BootProfile, fromRuns, type Manifest, toRuns } from '../format/manifest.ts';
import { type BlockSource, emptyStats, type SourceStats, withSignal } from '../source/source.ts';
import { SizedBufferPool } from '../util/bufpool.ts';
import type { BlockMemory } from './memcache.ts';
import { Gate, profileGaps } from './profile.ts';

export interface FetcherOptions {
  source: BlockSource;
  manifest: Manifest;
  memory: BlockMemory;
  /** Largest readahead window for sequential reads (default 8 MiB). */
  readaheadBytes?: number;
  /**
   * Whether readahead may go to the network (default true). Off, it only
   * pulls blocks the source holds locally: a machine booting from a warm
   * cache then fetches nothing it does not read.
   */
  readaheadNetwork?: boolean;
  /**
   * Whether readahead may read blocks the source holds locally (default
   * true). Off on a small machine: its disk answers a read at once anyway,
   * and a block read ahead but never used costs CPU to decode and verify.
   */
  readaheadDisk?: boolean;
  /** Boot-profile blocks fetched at a time at start (default 24; 0: no profile prefetch). */
  profileConcurrency?: number;
  /**
   * After the profile, also fetch every gap of at most this many bytes
   * between blocks the profile names (default 0: none): a later boot reads
   * a little differently, mostly in such gaps. Only with a cache that
   * outlives this reader (see profileGapBudget).
   */
  profileGapBytes?: number;
  /** Most bytes the profile and its gaps may take together (half a persistent cache); undefined: no gaps. */
  profileGapBudget?: number | undefined;
  /** Whether the source verifies on other threads (block memory must then be shared). */
  sharedMemory?: boolean;
}

export interface FetcherStats extends SourceStats {
  image: { name: string; version: number; size: number; blockSize: number; blocks: number };
  memoryHits: number;
  memoryMisses: number;
  zeroBlocks: number;
  /** Reads that joined a fetch already under way. */
  sharedFetches: number;
  prefetched: number;
  inFlight: number;
  bytesRead: number;
  reads: number;
  memory: { bytes: number; limitBytes: number; blocks: number; backing: string };
  /** Buffers for objects and blocks in transit: bytes made in all, bytes idle for reuse. */
  buffers: { madeBytes: number; idleBytes: number } | null;
  /** The last blocks fetched from the source (at most RECENT_FETCHES, oldest first), and what asked for each. */
  recentFetches: { block: number; why: FetchReason }[];
  profilePrefetch: { total: number; done: number; fetched: number; running: boolean };
  readaheadNetwork: boolean;
  readaheadDisk: boolean;
}

/** What asked for a block: a reader, the readahead of sequential reads, the boot-profile prefetch, its gaps (profileGapBytes). */
export type FetchReason = 'read' | 'readahead' | 'profile' | 'gap';

/** How many of the last fetches stats() lists. */
export const RECENT_FETCHES = 32;

export class BlockFetcher {
  readonly size: number;
  readonly manifest: Manifest;
  private readonly o: Required<Omit<FetcherOptions, 'profileGapBudget'>> & Pick<FetcherOptions, 'profileGapBudget'>;
  private readonly source: BlockSource;
  /** Memory for objects and blocks, reused when the memory cache keeps copies: blocks are then transient (see load()). */
  private readonly pool: SizedBufferPool | undefined;
  private readonly inflight = new Map<string, Promise<Buffer>>();
  /** Background blocks (the boot profile's) are verified one per turn of the event loop. */
  private readonly gate = new Gate();
  private readonly closed = new AbortController();
  private readonly counters = { zeroBlocks: 0, sharedFetches: 0, prefetched: 0, bytesRead: 0, reads: 0 };
  private readonly recent: { block: number; why: FetchReason }[] = [];
  /** Blocks in the order they were first read (not prefetched): a boot profile. */
  private readonly firstRead: number[] = [];
  private readonly everRead: Uint8Array;
  private readonly profileState = { total: 0, done: 0, fetched: 0, running: false };
  // Sequential-read detection.
  private nextExpected = -1;
  private window = 0;
  private prefetchInFlight = 0;

  constructor(options: FetcherOptions) {
    this.o = {
      readaheadBytes: 8 << 20,
      profileConcurrency: 24,
      profileGapBytes: 0,
      readaheadNetwork: true,
      readaheadDisk: true,
      sharedMemory: false,
      ...options,
    };
    this.source = options.source;
    this.manifest = options.manifest;
    this.size = options.manifest.header.imageSize;
    this.pool = options.memory.copies ? new SizedBufferPool({ shared: this.o.sharedMemory }) : undefined;
    this.everRead = new Uint8Array(options.manifest.blocks.length);
  }

  get blockSize(): number {
    return this.manifest.header.blockSize;
  }

  /** Notes a read of blocks first..last (boot profile, readahead). */
  private noteRead(first: number, last: number): void {
    this.counters.reads++;
    for (let i = first; i <= last; i++) {
      if (this.everRead[i]) continue;
      this.everRead[i] = 1;
      this.firstRead.push(i);
    }
    this.noteAccess(first, last);
  }

  /** Bytes [offset, offset+length) of the image (short only at its end). */
  async read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    const end = Math.min(this.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const out = Buffer.allocUnsafe(end - offset);
    await this.readInto(out, offset, signal);
    return out;
  }

  /**
   * Fills `dest` from `offset` (the FUSE layer's reused buffers); short only
   * at the end of the image. Blocks the memory cache holds are copied
   * straight into `dest`; the others are fetched (concurrently), each copied
   * as it arrives — and never once the read has ended, so nothing is written
   * into `dest` after a failure or an interrupt has handed it back.
   */
  async readInto(dest: Buffer, offset: number, signal?: AbortSignal): Promise<number> {
    const end = Math.min(this.size, offset + dest.length);
    if (offset >= end) return 0;
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    this.noteRead(first, last);
    let waits: { block: Promise<Buffer>; at: number; from: number; n: number }[] | undefined;
    // Blocks the memory cache holds are copied straight in; the others are fetched, all at once.
    for (let i = first; i <= last; i++) {
      const start = i * bs;
      const from = Math.max(offset, start) - start;
      const n = Math.min(end, start + bs) - start - from;
      const at = start + from - offset;
      const h = this.manifest.blocks[i];
      if (h === null) {
        this.counters.zeroBlocks++;
        dest.fill(0, at, at + n);
      } else if (h === undefined || !this.o.memory.copyTo(h, dest, at, from, n)) {
        (waits ??= []).push({ block: withSignal(this.block(i), signal), at, from, n });
      }
    }
    if (waits) {
      // Each block is copied as it arrives (its buffer may be reused once this turn of the event loop ends).
      let live = true;
      try {
        await Promise.all(waits.map((w) => w.block.then((b) => void (live && b.copy(dest, w.at, w.from, w.from + w.n)))));
      } finally {
        live = false;
      }
    }
    this.counters.bytesRead += end - offset;
    return end - offset;
  }

  /**
   * Grows the readahead window on sequential access and prefetches ahead.
   * The kernel sends several READs of one sequential stream at once, and
   * they arrive in any order: a read counts as sequential when it starts
   * near where the stream is, not only exactly at its end.
   */
  private noteAccess(first: number, last: number): void {
    const bs = this.blockSize;
    const maxBlocks = Math.floor(this.o.readaheadBytes / bs);
    if (maxBlocks === 0) return;
    const near = this.nextExpected >= 0 && first >= this.nextExpected - maxBlocks - 1 && first <= this.nextExpected + maxBlocks;
    this.window = near ? Math.min(maxBlocks, Math.max(2, this.window * 2)) : 0;
    this.nextExpected = near ? Math.max(this.nextExpected, last + 1) : last + 1;
    if (this.window === 0) return;
    const from = Math.max(last + 1, this.nextExpected);
    const stop = Math.min(this.manifest.blocks.length - 1, from + this.window - 1);
    for (let i = from; i <= stop && this.prefetchInFlight < maxBlocks; i++) {
      const h = this.manifest.blocks[i];
      if (!h || this.inflight.has(h) || this.o.memory.has(h)) continue;
      if (this.source.holds?.(h) ? !this.o.readaheadDisk : !this.o.readaheadNetwork) continue;
      this.prefetchInFlight++;
      this.counters.prefetched++;
      this.block(i, 'readahead')
        .catch(() => {}) // a failed prefetch costs nothing; the real read will retry
        .finally(() => this.prefetchInFlight--);
    }
  }

  /**
   * Fetches the manifest's boot profile in its order, `concurrency` at a
   * time, in the background: the blocks a boot will read arrive before it
   * asks. Resolves when the whole profile is in (errors are left to the
   * reads that need the blocks). Requests leave in batches of a quarter of
   * `concurrency`, so that they share one write to the connection.
   */
  async prefetchProfile(concurrency = this.o.profileConcurrency): Promise<void> {
    const runs = this.manifest.header.profile;
    if (!runs?.length || concurrency <= 0 || this.profileState.running) return;
    const order = fromRuns(runs, this.manifest.blocks.length);
    const gaps = profileGaps(this.manifest, order, Math.floor(this.o.profileGapBytes / this.blockSize), this.o.profileGapBudget);
    order.push(...gaps);
    const isGap = new Set(gaps);
    this.profileState.total = order.length;
    this.profileState.running = true;
    const batch = Math.max(1, Math.floor(concurrency / 4));
    let next = 0;
    let active = 0;
    await new Promise<void>((resolve) => {
      const fill = () => {
        while (active < concurrency && next < order.length && !this.closed.signal.aborted) {
          const i = order[next++]!;
          const h = this.manifest.blocks[i];
          if (!h || this.o.memory.has(h) || this.inflight.has(h) || (isGap.has(i) && this.source.holds?.(h))) {
            this.profileState.done++;
            continue;
          }
          this.profileState.fetched++;
          active++;
          this.block(i, isGap.has(i) ? 'gap' : 'profile')
            .catch(() => {})
            .finally(() => {
              active--;
              this.profileState.done++;
              if (concurrency - active >= batch || next >= order.length) fill();
            });
        }
        if (active === 0) resolve();
      };
      fill();
    });
    this.profileState.running = false;
  }

  /** One block, verified, in a buffer of its own. */
  async getBlock(index: number): Promise<Buffer> {
    const b = await this.block(index);
    return this.pool ? Buffer.from(b) : b;
  }

  /**
   * One block, verified; concurrent callers share one fetch. With a pool the
   * buffer is transient: use it before the event loop turns (no await in between).
   */
  private block(index: number, why: FetchReason = 'read'): Promise<Buffer> {
    const background = why === 'profile' || why === 'gap';
    const h = this.manifest.blocks[index];
    const len = blockLength(this.manifest.header, index);
    if (h === undefined) return Promise.reject(new RangeError(`block ${index} is outside the image`));
    if (h === null) {
      this.counters.zeroBlocks++;
      return Promise.resolve(zeroBlock(len));
    }
    const cached = this.o.memory.get(h);
    if (cached) return Promise.resolve(cached);
    const running = this.inflight.get(h);
    if (running) {
      this.counters.sharedFetches++;
      if (!background) this.gate.hurry(h);
      return running;
    }
    const p = this.load(index, h, len, why).finally(() => {
      this.inflight.delete(h);
      this.gate.forget(h);
    });
    this.inflight.set(h, p);
    return p;
  }

  private async load(index: number, hash: string, len: number, why: FetchReason): Promise<Buffer> {
    const background = why === 'profile' || why === 'gap';
    if (background && this.source.holds?.(hash)) await this.gate.turn(hash);
    // No signal: close() closes the source, which cancels what is under way.
    const block = await this.source.get({
      hash,
      length: len,
      objectSize: this.manifest.objectSizes.get(hash),
      digest: this.manifest.objectDigests?.get(hash),
      index,
      pace: background ? this.pace : undefined,
      pool: this.pool,
      reserve: this.reserve,
    });
    if (block.object && this.recent.push({ block: index, why }) > RECENT_FETCHES) this.recent.shift();
    this.o.memory.set(hash, block.data);
    const pool = this.pool;
    if (pool) {
      // The memory cache has its copy; the readers waiting for this block copy it in the promise
      // reactions that run before the event loop turns, and then its memory goes back. The
      // object's goes back once the layers below are done with it (a cache writing it).
      this.returnSoon(block.data);
      const object = block.object;
      if (object) void (block.kept ?? Promise.resolve()).finally(() => pool.put(object));
    }
    return block.data;
  }

  private readonly pace = (hash: string): Promise<void> => this.gate.turn(hash);
  private readonly reserve = (hash: string, length: number) => this.o.memory.reserve?.(hash, length);

  /** Decoded blocks to give back to the pool at the next turn of the event loop (one setImmediate for all). */
  private readonly toReturn: Buffer[] = [];
  private readonly returnAll = (): void => {
    for (const b of this.toReturn) this.pool!.put(b);
    this.toReturn.length = 0;
  };

  /** Gives a block's memory back once the promise reactions of this turn (the readers copying it) have run. */
  private returnSoon(b: Buffer): void {
    if (this.toReturn.push(b) === 1) setImmediate(this.returnAll);
  }

  /** The blocks read so far, in first-read order, as runs: a boot profile for `hfk publish --profile`. */
  profile(): BootProfile {
    return toRuns(this.firstRead);
  }

  stats(): FetcherStats {
    const h = this.manifest.header;
    const sources = emptyStats();
    this.source.stats?.(sources);
    return {
      image: { name: h.name, version: h.version, size: h.imageSize, blockSize: h.blockSize, blocks: h.blockCount },
      ...sources,
      ...this.counters,
      memoryHits: this.o.memory.hits,
      memoryMisses: this.o.memory.misses,
      inFlight: this.inflight.size,
      memory: { bytes: this.o.memory.size, limitBytes: this.o.memory.limit, blocks: this.o.memory.count, backing: this.o.memory.backing },
      buffers: this.pool ? { madeBytes: this.pool.made, idleBytes: this.pool.idleBytes } : null,
      recentFetches: this.recent.map((r) => ({ ...r })),
      profilePrefetch: { ...this.profileState },
      readaheadNetwork: this.o.readaheadNetwork,
      readaheadDisk: this.o.readaheadDisk,
    };
  }

  /** Stops retries and cancels requests in flight, then closes the source (a cache finishes its writes). Idempotent. */
  async close(): Promise<void> {
    if (this.closed.signal.aborted) return;
    this.closed.abort();
    await this.source.close();
    this.o.memory.close();
  }
}
