// The block fetcher: an image as a readable device, assembled from block
// objects fetched on demand from the best mirror.
//
//   read(offset, length) → blocks → memory cache → one shared fetch per block
//     → disk cache (verified) → mirrors, best first, with
//        - failover by error kind: 404 → next mirror; bad bytes → discard,
//          blame the mirror, next; transport → back the mirror off, next;
//        - hedging: a block that takes much longer than the mirror usually
//          needs is asked of the next mirror too; the first valid answer wins;
//        - when every mirror fails: "hard" mode (the root device) retries
//          with backoff forever and says so loudly; "soft" mode gives up after
//          a time limit.
//   Sequential reads grow a readahead window that prefetches the next blocks.

import { AbortedError, BrokenError, HfkError } from '../errors.ts';
import { zeroBlock } from '../format/codec.ts';
import { blockPath } from '../format/layout.ts';
import { blockLength, type BootProfile, fromRuns, type Manifest, toRuns } from '../format/manifest.ts';
import { SizedBufferPool } from '../util/bufpool.ts';
import type { DiskCache, DiskCacheStats } from './diskcache.ts';
import type { BlockMemory } from './memcache.ts';
import type { Mirror, MirrorSet } from './mirror.ts';
import type { HealthSnapshot } from './score.ts';
import { inlineVerifier, type Verifier } from './verifier.ts';

export interface FetcherOptions {
  mirrors: MirrorSet;
  manifest: Manifest;
  memory: BlockMemory;
  disk?: DiskCache | undefined;
  /** 'hard' (default): retry forever when every mirror fails. 'soft': give up after softTimeoutMs. */
  mode?: 'hard' | 'soft';
  softTimeoutMs?: number;
  /** Ask a second mirror when one is slow (default true). */
  hedge?: boolean;
  /** Never hedge sooner than this (default 40 ms). */
  minHedgeMs?: number;
  /** Largest readahead window for sequential reads (default 8 MiB). */
  readaheadBytes?: number;
  /** Fraction of fetches sent to the runner-up mirror to keep its score fresh (default 0.02). */
  explore?: number;
  /** Longest wait between retry rounds when every mirror fails (default 10 s). */
  maxRetryDelayMs?: number;
  /**
   * Whether readahead may fetch from mirrors (default true). Off, it only
   * pulls blocks the disk cache holds: a machine booting from a warm cache
   * then fetches nothing it does not read.
   */
  readaheadNetwork?: boolean;
  /**
   * Whether readahead may read blocks the disk cache holds (default true).
   * A boot on a small machine turns it off: its disk answers a read at once
   * anyway, and every block read ahead but never used costs the CPU to
   * decode and verify it.
   */
  readaheadDisk?: boolean;
  /**
   * Blocks fetched in the manifest's boot-profile order at start, this many
   * at a time (default 24; 0: do not prefetch the profile).
   */
  profileConcurrency?: number;
  /**
   * With a disk cache that outlives this reader (a cache partition): after
   * the boot profile, the profile prefetch also fetches every gap of at most
   * this many bytes between blocks that the profile names (default 0:
   * none). A later boot reads a little differently (the kernel's readahead
   * windows around its page faults, the order services start in), and the
   * blocks it reads that this boot did not lie mostly in such gaps. Gap
   * blocks the disk cache holds are left there, not read. None when the
   * profile's and the gaps' objects together would take more than half the
   * disk cache's limit: gaps must not push out what the boots read.
   */
  profileGapBytes?: number;
  /** Where blocks are decoded and hash-checked (default: on this thread). */
  verifier?: Verifier;
  log?: (line: string) => void;
}

export interface FetcherStats {
  image: { name: string; version: number; size: number; blockSize: number; blocks: number };
  /** Block-object bytes received from mirrors. */
  bytesFetched: number;
  blocksFetched: number;
  memoryHits: number;
  diskHits: number;
  zeroBlocks: number;
  /** Reads that joined a fetch already under way. */
  sharedFetches: number;
  prefetched: number;
  hedges: number;
  hedgesWon: number;
  failovers: number;
  retryRounds: number;
  inFlight: number;
  bytesRead: number;
  reads: number;
  memory: { bytes: number; limitBytes: number; blocks: number; backing: string };
  /** Buffers for objects and blocks in transit: bytes made in all, bytes idle for reuse. */
  buffers: { madeBytes: number; idleBytes: number } | null;
  disk: DiskCacheStats | null;
  /**
   * The last blocks fetched from mirrors (at most RECENT_FETCHES, oldest
   * first): which block, and what asked for it (a read, the readahead, the
   * boot profile or one of its gaps). Says, for one, which blocks a warm boot
   * still had to fetch.
   */
  recentFetches: { block: number; why: FetchReason }[];
  /** Progress of the boot-profile prefetch. */
  profilePrefetch: { total: number; done: number; fetched: number; running: boolean };
  /** Whether readahead may go to the mirrors (off with a warm disk cache). */
  readaheadNetwork: boolean;
  /** Whether readahead may read blocks from the disk cache. */
  readaheadDisk: boolean;
  mirrors: ({ url: string; inFlight: number } & HealthSnapshot)[];
}

/** What asked for a block: a reader, the readahead of sequential reads, the boot-profile prefetch, its gaps (profileGapBytes). */
export type FetchReason = 'read' | 'readahead' | 'profile' | 'gap';

/** How many of the last fetches stats() lists. */
export const RECENT_FETCHES = 32;

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new AbortedError());
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new AbortedError());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Resolves like `p`, but rejects as soon as `signal` aborts (p goes on). */
function withSignal<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(new AbortedError('read interrupted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortedError('read interrupted'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

export class BlockFetcher {
  readonly size: number;
  readonly manifest: Manifest;
  private readonly o: Required<Omit<FetcherOptions, 'disk' | 'log' | 'verifier'>> & Pick<FetcherOptions, 'disk' | 'log'>;
  private readonly verifier: Verifier;
  /**
   * Memory for block objects and decoded blocks, reused from one block to
   * the next — present when the memory cache copies what it keeps. A block
   * then reaches its readers as a transient buffer, valid until the next
   * turn of the event loop (see load()).
   */
  private readonly pool: SizedBufferPool | undefined;
  private readonly inflight = new Map<string, Promise<Buffer>>();
  /**
   * Background blocks (the boot profile's) waiting for their turn to be
   * verified and cached: one per turn of the event loop, so the FUSE
   * requests and reads that arrive meanwhile are served in between. Without
   * this, one socket read that brings in twenty pipelined answers ran their
   * verification back to back: in a QEMU (TCG) boot the reader's event loop
   * then lagged 90–350 ms for the five seconds the profile took, and every
   * page fault of systemd's start waited that long.
   */
  private readonly gate: { hash: string; go: () => void }[] = [];
  private gateScheduled = false;
  /** Blocks a reader waits for: they skip the gate. */
  private readonly wanted = new Set<string>();
  private readonly closed = new AbortController();
  /** Requests to mirrors in flight, cancelled by close() (instead of a listener on `closed` for each). */
  private readonly requests = new Set<AbortController>();
  private readonly counters = {
    bytesFetched: 0,
    blocksFetched: 0,
    diskHits: 0,
    zeroBlocks: 0,
    sharedFetches: 0,
    prefetched: 0,
    hedges: 0,
    hedgesWon: 0,
    failovers: 0,
    retryRounds: 0,
    bytesRead: 0,
    reads: 0,
  };
  private fetchCount = 0;
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
      mode: 'hard',
      softTimeoutMs: 30_000,
      hedge: true,
      minHedgeMs: 40,
      readaheadBytes: 8 << 20,
      explore: 0.02,
      maxRetryDelayMs: 10_000,
      profileConcurrency: 24,
      profileGapBytes: 0,
      readaheadNetwork: true,
      readaheadDisk: true,
      ...options,
    };
    this.manifest = options.manifest;
    this.size = options.manifest.header.imageSize;
    this.verifier = options.verifier ?? inlineVerifier;
    this.pool = options.memory.copies ? new SizedBufferPool({ shared: this.verifier.threads }) : undefined;
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
      if (this.o.disk?.has(h) ? !this.o.readaheadDisk : !this.o.readaheadNetwork) continue;
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
   * reads that need the blocks).
   *
   * New requests leave in batches: once `concurrency` are out, the next go
   * out only when a quarter of them are done, together, so that they share
   * one write to the connection. Blocks finish one per turn of the event
   * loop (the gate), and refilling at once sent one request per write: in a
   * QEMU (TCG) boot those writes, each a system call and a virtio-net kick,
   * cost 0.9 s of the reader's CPU.
   */
  async prefetchProfile(concurrency = this.o.profileConcurrency): Promise<void> {
    const runs = this.manifest.header.profile;
    if (!runs?.length || concurrency <= 0 || this.profileState.running) return;
    const order = fromRuns(runs, this.manifest.blocks.length);
    const gaps = this.profileGaps(order);
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
          if (!h || this.o.memory.has(h) || this.inflight.has(h) || (isGap.has(i) && this.o.disk?.has(h))) {
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

  /**
   * The blocks in gaps of at most profileGapBytes between blocks the profile
   * names, in image order; one block per content, none the profile names, no
   * zero block. The same for every boot of one image version.
   */
  private profileGaps(profile: number[]): number[] {
    const maxBlocks = Math.floor(this.o.profileGapBytes / this.blockSize);
    if (maxBlocks === 0 || !this.o.disk) return [];
    const blocks = this.manifest.blocks;
    const named = new Set(profile);
    const known = new Set<string>();
    for (const i of profile) if (blocks[i]) known.add(blocks[i]);
    // Not the disk cache's blocks: they differ from boot to boot, and so would the gaps (a warm boot
    // would fetch gaps that its fill boot's reads had cut out of larger ones).
    const covered = (i: number) => named.has(i);
    const out: number[] = [];
    for (let i = 0; i < blocks.length; ) {
      if (covered(i)) {
        i++;
        continue;
      }
      let j = i;
      while (j < blocks.length && !covered(j)) j++;
      // Only gaps with covered blocks on both sides: not the image's untouched start or end.
      if (i > 0 && j < blocks.length && j - i <= maxBlocks) {
        for (let k = i; k < j; k++) {
          const h = blocks[k];
          if (h && !known.has(h)) {
            known.add(h);
            out.push(k);
          }
        }
      }
      i = j;
    }
    let bytes = 0;
    for (const h of known) bytes += this.manifest.objectSizes.get(h) ?? this.blockSize;
    return bytes * 2 <= this.o.disk.limit ? out : [];
  }

  /** Waits for a background block's turn (or until a reader asks for it). */
  private turn(hash: string): Promise<void> {
    if (this.wanted.has(hash)) return Promise.resolve();
    return new Promise((go) => {
      this.gate.push({ hash, go });
      this.openGateSoon();
    });
  }

  private openGateSoon(): void {
    if (this.gateScheduled || this.gate.length === 0) return;
    this.gateScheduled = true;
    setImmediate(() => {
      this.gateScheduled = false;
      this.gate.shift()?.go();
      this.openGateSoon();
    });
  }

  /** A reader waits for this block: let it through the gate now. */
  private hurry(hash: string): void {
    this.wanted.add(hash);
    const i = this.gate.findIndex((w) => w.hash === hash);
    if (i >= 0) this.gate.splice(i, 1)[0]!.go();
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
      if (!background) this.hurry(h);
      return running;
    }
    const p = this.load(index, h, len, why).finally(() => {
      this.inflight.delete(h);
      this.wanted.delete(h);
    });
    this.inflight.set(h, p);
    return p;
  }

  private async load(index: number, hash: string, len: number, why: FetchReason): Promise<Buffer> {
    const background = why === 'profile' || why === 'gap';
    if (this.o.disk?.has(hash) && background) await this.turn(hash);
    if (this.o.disk) {
      const data = await this.o.disk.getBlock(hash, len, this.manifest.objectDigests?.get(hash));
      if (data) {
        this.counters.diskHits++;
        this.o.memory.set(hash, data);
        return data;
      }
    }
    const { data, object } = await this.fetchFromMirrors(index, hash, len, background);
    if (this.recent.push({ block: index, why }) > RECENT_FETCHES) this.recent.shift();
    this.o.memory.set(hash, data);
    const written = this.o.disk?.putObject(hash, object);
    const pool = this.pool;
    if (pool) {
      // The memory cache has its copy; the readers waiting for this block copy it in the promise
      // reactions that run before the event loop turns, and then its memory goes back. The
      // object's goes back once it is on disk.
      this.returnSoon(data);
      if (written) void written.finally(() => pool.put(object));
      else pool.put(object);
    }
    return data;
  }

  private hedgeDelay(m: Mirror, bytes: number): number {
    const h = m.health;
    const expected = (h.latencyMs ?? 200) + (h.throughput ? bytes / h.throughput : 0);
    return Math.min(5000, Math.max(this.o.minHedgeMs, 3 * expected));
  }

  private readonly alloc = (size: number): Buffer => this.pool!.get(size);

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

  /** Orders mirrors for one fetch, sometimes promoting the runner-up to keep its score fresh. */
  private candidates(bytes: number): Mirror[] {
    const order = this.o.mirrors.order(bytes);
    this.fetchCount++;
    if (order.length > 1 && !order[1]!.isDown() && this.o.explore > 0 && this.fetchCount % Math.round(1 / this.o.explore) === 0) {
      [order[0], order[1]] = [order[1]!, order[0]!];
    }
    return order;
  }

  private async fetchFromMirrors(index: number, hash: string, len: number, background = false): Promise<{ data: Buffer; object: Buffer }> {
    const objectSize = this.manifest.objectSizes.get(hash);
    const started = Date.now();
    for (let round = 0; ; round++) {
      if (this.closed.signal.aborted) throw new AbortedError('fetcher closed');
      const errors: HfkError[] = [];
      const got = await this.tryMirrors(hash, len, objectSize, errors, background);
      if (got) return got;
      if (this.closed.signal.aborted) throw new AbortedError('fetcher closed'); // its requests were cancelled: no warning
      this.counters.retryRounds++;
      const what = `block ${index} (${hash.slice(0, 12)}…)`;
      const detail = errors.map((e) => e.message).join('; ');
      if (this.o.mode === 'soft' && Date.now() - started >= this.o.softTimeoutMs) {
        throw new BrokenError('(all mirrors)', `every mirror failed for ${what} for ${Math.round((Date.now() - started) / 1000)} s: ${detail}`, {
          hint: 'check the network and the mirrors; hard mode (the default for a root device) keeps retrying',
        });
      }
      const delay = Math.min(this.o.maxRetryDelayMs, 250 * 2 ** Math.min(round, 10));
      this.o.log?.(`WARNING: all ${this.o.mirrors.mirrors.length} mirrors failed for ${what}; retrying in ${(delay / 1000).toFixed(1)} s (${detail})`);
      await sleep(delay, this.closed.signal);
    }
  }

  /**
   * One pass over the mirrors with hedging. Returns the first verified
   * answer, or undefined when every mirror failed (errors collected).
   */
  private tryMirrors(
    hash: string,
    len: number,
    objectSize: number | undefined,
    errors: HfkError[],
    background: boolean,
  ): Promise<{ data: Buffer; object: Buffer } | undefined> {
    const order = this.candidates(objectSize ?? len);
    const rel = blockPath(hash);
    return new Promise((resolve) => {
      let next = 0;
      let active = 0;
      let done = false;
      let hedgeTimer: NodeJS.Timeout | undefined;
      const controllers = new Set<AbortController>();
      const finish = (v: { data: Buffer; object: Buffer } | undefined, winner?: AbortController) => {
        if (done) return;
        done = true;
        clearTimeout(hedgeTimer);
        for (const c of controllers) if (c !== winner) c.abort(); // cancel the other requests
        resolve(v);
      };
      const launch = (hedged: boolean) => {
        if (done || next >= order.length) return;
        const m = order[next++]!;
        if (hedged) this.counters.hedges++;
        if (next > 1 && !hedged) this.counters.failovers++;
        active++;
        const ac = new AbortController();
        controllers.add(ac);
        this.requests.add(ac);
        if (this.closed.signal.aborted) ac.abort(); // closed while this pass ran: fail at once
        m.read(rel, { signal: ac.signal, expectedSize: objectSize, alloc: this.pool ? this.alloc : undefined })
          .then(async (object) => {
            this.counters.bytesFetched += object.length; // real traffic, hedge losers included
            if (done) return this.pool?.put(object);
            if (background) await this.turn(hash);
            if (done) return this.pool?.put(object);
            // A verifying thread also writes the block into the memory cache's file: the copy leaves this thread.
            const room = this.verifier.threads ? this.o.memory.reserve?.(hash, len) : undefined;
            const v = await this.verifier.verify(m.url, hash, object, len, { pool: this.pool, digest: this.manifest.objectDigests?.get(hash), store: room }).catch((e) => {
              room?.cancel();
              m.book(e); // corrupt data counts against the mirror that sent it
              this.pool?.put(object);
              throw e;
            });
            if (v.stored) room!.commit(); // load()'s memory.set() then only marks it recently used
            else if (v.stored === false) room!.full();
            else room?.cancel();
            if (v.object !== object) this.pool?.put(object); // the verifier sent back a copy
            if (done) {
              this.pool?.put(v.data);
              return;
            }
            this.counters.blocksFetched++;
            if (hedged) this.counters.hedgesWon++;
            finish(v, ac);
          })
          .catch((e: unknown) => {
            if (done) return;
            errors.push(e instanceof HfkError ? e : new BrokenError(m.url, String(e)));
            if (active === 1) launch(false); // nothing else running: fail over now
          })
          .finally(() => {
            active--;
            controllers.delete(ac);
            this.requests.delete(ac);
            if (!done && active === 0 && next >= order.length) finish(undefined);
          });
        // Hedge: if this request is much slower than the mirror usually is, ask the next one too.
        if (this.o.hedge && next < order.length) {
          clearTimeout(hedgeTimer);
          hedgeTimer = setTimeout(() => {
            if (!done && active === 1 && next < order.length && !order[next]!.isDown()) launch(true);
          }, this.hedgeDelay(m, objectSize ?? len));
        }
      };
      launch(false);
    });
  }

  /** The blocks read so far, in first-read order, as runs: a boot profile for `hfk publish --profile`. */
  profile(): BootProfile {
    return toRuns(this.firstRead);
  }

  stats(): FetcherStats {
    const h = this.manifest.header;
    const now = Date.now();
    return {
      image: { name: h.name, version: h.version, size: h.imageSize, blockSize: h.blockSize, blocks: h.blockCount },
      ...this.counters,
      memoryHits: this.o.memory.hits,
      inFlight: this.inflight.size,
      memory: { bytes: this.o.memory.size, limitBytes: this.o.memory.limit, blocks: this.o.memory.count, backing: this.o.memory.backing },
      buffers: this.pool ? { madeBytes: this.pool.made, idleBytes: this.pool.idleBytes } : null,
      disk: this.o.disk?.stats() ?? null,
      recentFetches: this.recent.map((r) => ({ ...r })),
      profilePrefetch: { ...this.profileState },
      readaheadNetwork: this.o.readaheadNetwork,
      readaheadDisk: this.o.readaheadDisk,
      mirrors: this.o.mirrors.mirrors.map((m) => ({ url: m.url, inFlight: m.inFlight, ...m.health.snapshot(now) })),
    };
  }

  /** Stops retries and cancels requests in flight, then lets the disk cache finish its writes. Idempotent. */
  async close(): Promise<void> {
    this.closed.abort();
    for (const ac of this.requests) ac.abort();
    this.requests.clear();
    await this.o.disk?.flush();
    await this.verifier.close();
    this.o.memory.close();
  }
}

