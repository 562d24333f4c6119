// One mirror as a block source: an origin (any client, see origin.ts), its
// live health, and how many requests it has in flight. Every outcome is
// booked against the mirror by kind; blocks leave it verified.

import { AbortedError, BrokenError, HfkError, InvalidError, MissingError } from '../errors.ts';
import { blockPath } from '../format/layout.ts';
import type { ReadOptions, RequestTiming, StoreReader } from '../store/store.ts';
import type { SizedBufferPool } from '../util/bufpool.ts';
import { MirrorHealth, type HealthOptions } from './score.ts';
import type { Block, BlockRequest, BlockSource, SourceStats } from './source.ts';
import { inlineVerifier, type Verifier } from './verifier.ts';

export interface MirrorOptions {
  /** Requests the mirror can have in flight at once (connections × pipelining; default 32). */
  capacity?: number;
  health?: Partial<HealthOptions>;
  /** Where blocks are decoded and checked (default: this thread). */
  verifier?: Verifier;
  now?: () => number;
}

export class Mirror implements BlockSource {
  readonly url: string;
  readonly location: string;
  readonly health: MirrorHealth;
  readonly capacity: number;
  inFlight = 0;
  /** Block-object bytes received (hedge losers included). */
  bytesFetched = 0;
  private readonly origin: StoreReader;
  private readonly verifier: Verifier;
  private readonly now: () => number;

  constructor(url: string, origin: StoreReader, options: MirrorOptions = {}) {
    this.url = url;
    this.location = url;
    this.origin = origin;
    this.capacity = options.capacity ?? 32;
    this.health = new MirrorHealth(options.health);
    this.verifier = options.verifier ?? inlineVerifier;
    this.now = options.now ?? Date.now;
  }

  /** Reads any file of the store (pointer, manifest, object) and books the outcome. */
  async read(rel: string, options: ReadOptions = {}): Promise<Buffer> {
    const timing: RequestTiming = { ttfbMs: 0, bodyMs: 0 };
    this.inFlight++;
    try {
      const body = await this.origin.read(rel, { ...options, timing });
      this.health.success(timing.ttfbMs, body.length, timing.bodyMs);
      if (options.timing) Object.assign(options.timing, timing);
      return body;
    } catch (e) {
      this.book(e);
      throw e;
    } finally {
      this.inFlight--;
    }
  }

  /** One block object, fetched and verified. */
  async get(req: BlockRequest, signal?: AbortSignal): Promise<Block> {
    const { pool } = req;
    const object = await this.read(blockPath(req.hash), {
      ...(signal ? { signal } : {}),
      expectedSize: req.objectSize,
      ...(pool ? { alloc: this.allocFrom(pool) } : {}),
    });
    this.bytesFetched += object.length;
    if (req.pace) await req.pace(req.hash);
    if (signal?.aborted) {
      pool?.put(object);
      throw new AbortedError(`${this.url}: cancelled`);
    }
    // A verifying thread also writes the block into the memory cache: the copy leaves this thread.
    const room = this.verifier.threads ? req.reserve?.(req.hash, req.length) : undefined;
    const v = await this.verifier.verify(this.url, req.hash, object, req.length, { pool, digest: req.digest, store: room }).catch((e: unknown) => {
      room?.cancel();
      this.book(e); // corrupt data counts against the mirror that sent it
      pool?.put(object);
      throw e;
    });
    if (v.stored) room!.commit();
    else if (v.stored === false) room!.full();
    else room?.cancel();
    if (v.object !== object) pool?.put(object); // the verifier sent back a copy
    return { data: v.data, object: v.object, from: this.url };
  }

  private lastPool: SizedBufferPool | undefined;
  private lastAlloc: ((n: number) => Buffer) | undefined;

  /** The pool's allocator, made once per pool rather than once per block. */
  private allocFrom(pool: SizedBufferPool): (n: number) => Buffer {
    if (pool !== this.lastPool) {
      this.lastPool = pool;
      this.lastAlloc = (n) => pool.get(n);
    }
    return this.lastAlloc!;
  }

  /** Counts a failure of the right kind (a caller's verification too). */
  book(e: unknown): void {
    if (e instanceof MissingError) this.health.lacks();
    else if (e instanceof InvalidError) this.health.corrupt(this.now());
    else if (e instanceof BrokenError) this.health.broken(this.now());
    else if (e instanceof HfkError && e.code === 'E_ABORTED') return;
    else if (!(e instanceof HfkError)) this.health.broken(this.now());
  }

  isDown(): boolean {
    return this.health.isDown(this.now());
  }

  cost(bytes: number): number {
    return this.health.expectedCost(bytes, this.inFlight, this.capacity);
  }

  stats(into: SourceStats): void {
    into.bytesFetched += this.bytesFetched;
    into.mirrors.push({ url: this.url, inFlight: this.inFlight, ...this.health.snapshot(this.now()) });
  }

  async close(): Promise<void> {
    await this.origin.close();
  }
}
