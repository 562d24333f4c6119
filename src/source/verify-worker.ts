// The thread side of the verifier (verifier.ts): decodes and hash-checks the
// objects it is sent, and hands back the block (transferred, not copied).
// Kept apart so that the script the threads run holds only this and the codec.

import { writeSync } from 'node:fs';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { BlockDecodeError, decodeChecked } from '../format/codec.ts';
import { transferable } from '../util/transfer.ts';

export const VERIFY_ROLE = 'hfk-verify-worker';

export interface Job {
  id: number;
  hash: string;
  /** The object digest the manifest signs (format 2), if any. */
  digest?: string | undefined;
  length: number;
  object: Uint8Array;
  /** Where the block goes, when object and block lie in shared memory (then nothing is sent back but the verdict). */
  out?: Uint8Array;
  /** With `out`: also write the block there once verified (the memory cache's tmpfs file, a Reservation). */
  store?: { fd: number; offset: number } | undefined;
}

export type Reply =
  | { id: number; ok: true; data?: Uint8Array; object?: Uint8Array; stored?: boolean }
  | { id: number; ok: false; message: string; object?: Uint8Array };


export const asBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

/** Writes a verified block into the memory cache's file; false when the tmpfs refuses (full). */
function store(block: Uint8Array, at: { fd: number; offset: number }): boolean {
  try {
    for (let done = 0; done < block.length; ) done += writeSync(at.fd, block, done, block.length - done, at.offset + done);
    return true;
  } catch {
    return false;
  }
}

function runWorker(): void {
  parentPort!.on('message', (job: Job) => {
    const object = asBuffer(job.object);
    if (job.out) {
      let reply: Reply;
      try {
        const r = decodeChecked(object, job.length, job.hash, job.digest, asBuffer(job.out));
        reply = r.ok ? { id: job.id, ok: true, ...(job.store ? { stored: store(job.out, job.store) } : {}) } : { id: job.id, ok: false, message: `has content hash ${r.actual.slice(0, 12)}…: corrupt or forged` };
      } catch (e) {
        reply = { id: job.id, ok: false, message: `: ${e instanceof BlockDecodeError ? e.message : String(e)}` };
      }
      parentPort!.postMessage(reply);
      return;
    }
    let reply: Reply;
    try {
      const r = decodeChecked(object, job.length, job.hash, job.digest);
      if (!r.ok) {
        reply = { id: job.id, ok: false, message: `has content hash ${r.actual.slice(0, 12)}…: corrupt or forged`, object: job.object };
      } else {
        const out = transferable(r.data);
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

if (!isMainThread && (workerData as { role?: string } | undefined)?.role === VERIFY_ROLE) runWorker();
