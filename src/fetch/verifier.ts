// Where blocks are verified (decoded and hashed): on the main thread, or on
// worker threads so that a fast reader is not limited by one core — the
// main thread then only speaks HTTP and FUSE.
//
// Workers run this very module (the esbuild bundle, or the .ts source under
// vitest), like the publisher's and the FUSE session's.

import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { InvalidError } from '../errors.ts';
import { BlockDecodeError, blockHash, decodeBlockSync } from '../format/codec.ts';
import { verifyObject } from '../store/images.ts';

const ROLE = 'hfk-verify-worker';

export interface Verified {
  data: Buffer;
  /** The object as received (for the disk cache). */
  object: Buffer;
}

export interface Verifier {
  /** Decodes and hash-checks an object; InvalidError naming `source` if it is bad. */
  verify(source: string, hash: string, object: Buffer, length: number): Promise<Verified>;
  close(): Promise<void>;
}

/** Verification on the calling thread. */
export const inlineVerifier: Verifier = {
  async verify(source, hash, object, length) {
    return { data: await verifyObject(source, hash, object, length), object };
  },
  async close() {},
};

interface Job {
  id: number;
  hash: string;
  length: number;
  object: Uint8Array;
}

type Reply = { id: number; ok: true; data: Uint8Array; object: Uint8Array } | { id: number; ok: false; message: string; object: Uint8Array };

/** A Buffer that owns its whole ArrayBuffer can be transferred; anything else is copied. */
function transferable(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.buffer instanceof ArrayBuffer && b.byteLength === b.buffer.byteLength ? b : new Uint8Array(b);
}

const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

/** Verification on a pool of worker threads. */
export class WorkerVerifier implements Verifier {
  private readonly workers: Worker[];
  private readonly load: number[];
  private readonly waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void; worker: number }>();
  private nextId = 0;
  private closed = false;

  constructor(threads: number) {
    this.workers = Array.from({ length: Math.max(1, threads) }, () => new Worker(new URL(import.meta.url), { workerData: { role: ROLE } }));
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

  async verify(source: string, hash: string, object: Buffer, length: number): Promise<Verified> {
    if (this.closed) return inlineVerifier.verify(source, hash, object, length);
    let best = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.load[i]! < this.load[best]!) best = i;
    const id = this.nextId++;
    const obj = transferable(object);
    const reply = new Promise<Reply>((resolve, reject) => this.waiting.set(id, { resolve, reject, worker: best }));
    this.load[best]!++;
    this.workers[best]!.postMessage({ id, hash, length, object: obj } satisfies Job, [obj.buffer as ArrayBuffer]);
    const r = await reply;
    // The same words as verifyObject's, wherever the check ran.
    if (!r.ok) throw new InvalidError(source, `block ${hash.slice(0, 12)}… from ${source}${r.message.startsWith(':') ? '' : ' '}${r.message}`);
    return { data: asBuffer(r.data), object: asBuffer(r.object) };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

export function makeVerifier(threads: number): Verifier {
  return threads > 0 ? new WorkerVerifier(threads) : inlineVerifier;
}

function runWorker(): void {
  parentPort!.on('message', (job: Job) => {
    const object = asBuffer(job.object);
    let reply: Reply;
    try {
      const data = decodeBlockSync(object, job.length);
      const actual = blockHash(data);
      if (actual !== job.hash) {
        reply = { id: job.id, ok: false, message: `has content hash ${actual.slice(0, 12)}…: corrupt or forged`, object: job.object };
      } else {
        const out = transferable(data);
        reply = { id: job.id, ok: true, data: out, object: job.object };
        parentPort!.postMessage(reply, [out.buffer as ArrayBuffer, job.object.buffer as ArrayBuffer]);
        return;
      }
    } catch (e) {
      reply = { id: job.id, ok: false, message: `: ${e instanceof BlockDecodeError ? e.message : String(e)}`, object: job.object };
    }
    parentPort!.postMessage(reply, [job.object.buffer as ArrayBuffer]);
  });
}

if (!isMainThread && (workerData as { role?: string } | undefined)?.role === ROLE) runWorker();
