// Where blocks are verified (decoded and hashed): on the main thread, or on
// worker threads so that a fast reader is not limited by one core — the
// main thread then only speaks HTTP and FUSE.
//
// The threads run verify-worker.ts (see src/util/worker.ts).

import type { Worker } from 'node:worker_threads';
import { InvalidError } from '../errors.ts';
import { verifyObject } from '../store/images.ts';
import type { SizedBufferPool } from '../util/bufpool.ts';
import { startWorker } from '../util/worker.ts';
import { asBuffer, type Job, type Reply, transferable, VERIFY_ROLE } from './verify-worker.ts';

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


/** Verification on a pool of worker threads. */
export class WorkerVerifier implements Verifier {
  private readonly workers: Worker[];
  private readonly load: number[];
  private readonly waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void; worker: number }>();
  private nextId = 0;
  private closed = false;
  readonly threads = true;

  constructor(threads: number) {
    this.workers = Array.from({ length: Math.max(1, threads) }, () => startWorker('verify', new URL('./verify-worker.ts', import.meta.url), { role: VERIFY_ROLE }));
    this.load = this.workers.map(() => 0);
    this.workers.forEach((w, i) => {
      w.unref(); // never keeps the process alive by itself
      w.on('message', (r: Reply) => {
        const job = this.waiting.get(r.id);
        if (!job) return;
        this.waiting.delete(r.id);
        this.load[i]!--;
        job.resolve(r);
      });
      const fail = (e: Error) => {
        for (const [id, job] of this.waiting) {
          if (job.worker !== i) continue;
          this.waiting.delete(id);
          this.load[i]!--;
          job.reject(e);
        }
      };
      w.on('error', fail);
      w.on('exit', (code) => fail(new Error(`verify worker exited with status ${code}`)));
    });
  }

  async verify(source: string, hash: string, object: Buffer, length: number, options: VerifyOptions = {}): Promise<Verified> {
    if (this.closed) return inlineVerifier.verify(source, hash, object, length, options);
    const { pool, digest, store } = options;
    let best = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.load[i]! < this.load[best]!) best = i;
    const id = this.nextId++;
    const reply = new Promise<Reply>((resolve, reject) => this.waiting.set(id, { resolve, reject, worker: best }));
    this.load[best]!++;
    // Shared memory in, shared memory out: the thread decodes in place.
    const out = pool?.shared && object.buffer instanceof SharedArrayBuffer ? pool.get(length) : undefined;
    if (out) this.workers[best]!.postMessage({ id, hash, digest, length, object, out, store: store ? { fd: store.fd, offset: store.offset } : undefined } satisfies Job);
    else {
      const obj = transferable(object);
      this.workers[best]!.postMessage({ id, hash, digest, length, object: obj } satisfies Job, [obj.buffer as ArrayBuffer]);
    }
    const r = await reply.catch((e: unknown) => {
      if (out) pool!.put(out);
      throw e;
    });
    // The same words as verifyObject's, wherever the check ran.
    if (!r.ok) {
      if (out) pool!.put(out);
      throw new InvalidError(source, `block ${hash.slice(0, 12)}… from ${source}${r.message.startsWith(':') ? '' : ' '}${r.message}`);
    }
    if (out) return { data: out, object, ...(r.stored !== undefined ? { stored: r.stored } : {}) };
    return { data: asBuffer(r.data!), object: asBuffer(r.object!) };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

export function makeVerifier(threads: number): Verifier {
  return threads > 0 ? new WorkerVerifier(threads) : inlineVerifier;
}
