// Where blocks are verified (decoded and hashed): on the main thread, or on
// worker threads so that a fast reader is not limited by one core — the
// main thread then only speaks HTTP and FUSE.
//
// The threads run verify-worker.ts (see src/util/worker.ts).

import { BrokenError, HfkError, InvalidError } from '../errors.ts';
import { verifyObject } from '../store/images.ts';
import type { SizedBufferPool } from '../util/bufpool.ts';
import { startWorker, WorkerPool } from '../util/worker.ts';
import { transferable } from '../util/transfer.ts';
import { asBuffer, type Job, type Reply, VERIFY_ROLE } from './verify-worker.ts';

export interface Verified {
  data: Buffer;
  /** The object as received (for the disk cache). */
  object: Buffer;
  /** Whether the block went into the reservation given (written by the thread that verified it). */
  stored?: boolean;
}

export interface VerifyOptions {
  /** Memory for the block (see Verifier.verify). */
  pool?: SizedBufferPool | undefined;
  /** The object digest the manifest signs (format 2), which spares hashing the decoded block (decodeChecked in format/codec.ts). */
  digest?: string | undefined;
  /**
   * Room in the memory cache's file (BlockMemory.reserve) that a verifying
   * thread writes the block into (`stored` says whether it did; the caller
   * commits or cancels the reservation).
   */
  store?: { fd: number; offset: number } | undefined;
}

export interface Verifier {
  /**
   * Decodes and hash-checks an object; InvalidError naming `source` if it is
   * bad. With `pool`, a verifier that decodes on this thread takes the
   * block's memory from it (and gives it back if the object is bad).
   */
  verify(source: string, hash: string, object: Buffer, length: number, options?: VerifyOptions): Promise<Verified>;
  /**
   * Whether the verifier works on other threads, which then read the object
   * and write the block in place when both lie in shared memory (a pool made
   * with `shared`): no copy, no transfer, no new memory.
   */
  readonly threads: boolean;
  close(): Promise<void>;
}

/** Verification on the calling thread. */
export const inlineVerifier: Verifier = {
  threads: false,
  async verify(source, hash, object, length, { pool, digest } = {}) {
    const out = pool?.get(length);
    try {
      return { data: await verifyObject(source, hash, object, length, digest, out), object };
    } catch (e) {
      if (out) pool!.put(out);
      throw e;
    }
  },
  async close() {},
};


/** Verification on a pool of worker threads; on this thread once the pool is closed or its threads are gone. */
export class WorkerVerifier implements Verifier {
  private readonly pool: WorkerPool<Omit<Job, 'id'>, Reply>;
  readonly threads = true;

  constructor(threads: number) {
    this.pool = new WorkerPool({
      threads: Math.max(1, threads),
      what: 'verify worker',
      ref: false, // never keeps the process alive by itself
      start: () => startWorker('verify', new URL('./verify-worker.ts', import.meta.url), { role: VERIFY_ROLE }),
    });
  }

  async verify(source: string, hash: string, object: Buffer, length: number, options: VerifyOptions = {}): Promise<Verified> {
    if (this.pool.closed) return inlineVerifier.verify(source, hash, object, length, options);
    const { pool, digest, store } = options;
    // Shared memory in, shared memory out: the thread decodes in place.
    const out = pool?.shared && object.buffer instanceof SharedArrayBuffer ? pool.get(length) : undefined;
    let r: Reply;
    try {
      if (out) r = await this.pool.run({ hash, digest, length, object, out, store: store ? { fd: store.fd, offset: store.offset } : undefined });
      else {
        const obj = transferable(object);
        r = await this.pool.run({ hash, digest, length, object: obj }, [obj.buffer as ArrayBuffer]);
      }
    } catch (e) {
      if (out) pool!.put(out);
      if (!(e instanceof HfkError && e.code === 'E_WORKER')) throw e;
      // No thread took it (they died, or the pool closed): verify here, unless the object went to a
      // thread that then died (its memory is gone with it): then it is fetched again.
      if (object.buffer instanceof ArrayBuffer && object.buffer.detached) throw new BrokenError(source, `block ${hash.slice(0, 12)}… from ${source}: the thread verifying it stopped (${e.message})`, { cause: e });
      return inlineVerifier.verify(source, hash, object, length, options);
    }
    // The same words as verifyObject's, wherever the check ran.
    if (!r.ok) {
      if (out) pool!.put(out);
      throw new InvalidError(source, `block ${hash.slice(0, 12)}… from ${source}${r.message.startsWith(':') ? '' : ' '}${r.message}`);
    }
    if (out) return { data: out, object, ...(r.stored !== undefined ? { stored: r.stored } : {}) };
    return { data: asBuffer(r.data!), object: asBuffer(r.object!) };
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

export function makeVerifier(threads: number): Verifier {
  return threads > 0 ? new WorkerVerifier(threads) : inlineVerifier;
}
