// The publisher's worker threads: each takes a chunk of the image (many
// blocks), and for every block hashes it, skips it if it is all zero, keeps
// the store's object if it has one that decodes to the block, and otherwise
// compresses it and writes the object (temporary name, rename). Every
// object's digest goes into the manifest, which signs it: so an object already
// in the store is read and checked first (a damaged one is written again).
// All CPU and file work runs here, one worker per core; the main thread only
// reads the image and collects results.
//
// The threads run this module (see src/util/worker.ts).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { blockHash, type Codec, decodeBlockSync, encodeBlock, isZeroBlock, objectDigest } from '../format/codec.ts';
import { blockPath } from '../format/layout.ts';
import { writeFileAtomicSync } from '../util/atomic.ts';
import { startWorker, WorkerPool } from '../util/worker.ts';

const ROLE = 'hfk-publish-worker';

export interface WorkerConfig {
  role: typeof ROLE;
  root: string;
  codec: Codec;
  level: number;
  blockSize: number;
}

export interface ChunkJob {
  id: number;
  data: Uint8Array;
}

/** What happened to one block: all-zero, already in the store, or written now (with its object's size and SHA-256). */
export type BlockOutcome =
  | { state: 'zero' }
  | { state: 'existed' | 'written'; hash: string; size: number; digest: string };

/**
 * The reply hands the chunk's memory back (transferred) for reuse, and names
 * the fan-out folders the chunk created (a failed publish removes them again).
 */
export type ChunkReply =
  | { id: number; ok: true; blocks: BlockOutcome[]; data: Uint8Array; dirs: string[] }
  | {
      id: number;
      ok: false;
      message: string;
      code: string | undefined;
      data: Uint8Array;
      dirs: string[];
      /** Objects this chunk wrote before it failed (the publisher removes them). */
      written: string[];
    };

class ChunkError extends Error {
  readonly code: string | undefined;
  readonly written: string[];
  constructor(cause: NodeJS.ErrnoException, written: string[]) {
    super(cause.message);
    this.code = cause.code;
    this.written = written;
  }
}

/**
 * `threads` publish threads, each given at most two chunks at a time: one
 * it works on, one waiting, so a thread never waits for the reader.
 */
export function publishPool(threads: number, config: Omit<WorkerConfig, 'role'>): WorkerPool<Omit<ChunkJob, 'id'>, ChunkReply> {
  return new WorkerPool({
    threads,
    depth: 2,
    what: 'publish worker',
    start: () => startWorker('publish', new URL(import.meta.url), { ...config, role: ROLE } satisfies WorkerConfig),
  });
}

function processChunk(cfg: WorkerConfig, seen: Map<string, BlockOutcome>, madeDirs: Set<string>, job: ChunkJob, createdDirs: string[]): BlockOutcome[] {
  const data = Buffer.from(job.data.buffer, job.data.byteOffset, job.data.byteLength);
  const out: BlockOutcome[] = [];
  const written: string[] = [];
  try {
    blocksOf(cfg, seen, madeDirs, data, out, written, createdDirs);
  } catch (e) {
    throw new ChunkError(e as NodeJS.ErrnoException, written);
  }
  return out;
}

function blocksOf(
  cfg: WorkerConfig,
  seen: Map<string, BlockOutcome>,
  madeDirs: Set<string>,
  data: Buffer,
  out: BlockOutcome[],
  written: string[],
  createdDirs: string[],
): void {
  for (let off = 0; off < data.length; off += cfg.blockSize) {
    const block = data.subarray(off, Math.min(off + cfg.blockSize, data.length));
    if (isZeroBlock(block)) {
      out.push({ state: 'zero' });
      continue;
    }
    const hash = blockHash(block);
    const known = seen.get(hash);
    if (known) {
      out.push(known);
      continue;
    }
    const dest = path.join(cfg.root, ...blockPath(hash).split('/'));
    let outcome: BlockOutcome;
    const existing = storedObject(dest, block);
    if (existing) {
      outcome = { state: 'existed', hash, size: existing.length, digest: objectDigest(existing) };
    } else {
      const object = encodeBlock(block, cfg.codec, cfg.level, true); // written out below, before the next block
      const dir = path.dirname(dest);
      if (!madeDirs.has(dir)) {
        // mkdir names the topmost folder it created: it and every level below it down to `dir` are new.
        const first = fs.mkdirSync(dir, { recursive: true });
        if (first !== undefined) {
          for (let d = dir; d !== first && d.startsWith(first); d = path.dirname(d)) createdDirs.push(d);
          createdDirs.push(first);
        }
        madeDirs.add(dir);
      }
      writeFileAtomicSync(dest, object, { mode: 0o644 });
      written.push(hash);
      outcome = { state: 'written', hash, size: object.length, digest: objectDigest(object) };
    }
    seen.set(hash, outcome);
    out.push(outcome);
  }
}

/**
 * The store's object for `block`, if it has one that decodes to exactly that
 * block (the manifest will sign its digest); undefined when there is none or
 * it is damaged (then it is written again).
 */
function storedObject(dest: string, block: Buffer): Buffer | undefined {
  if (!fs.statSync(dest, { throwIfNoEntry: false })) return undefined; // no exception per new block
  const object = fs.readFileSync(dest);
  try {
    return decodeBlockSync(object, block.length).equals(block) ? object : undefined;
  } catch {
    return undefined; // does not decode
  }
}

function runWorker(cfg: WorkerConfig): void {
  const seen = new Map<string, BlockOutcome>();
  const madeDirs = new Set<string>();
  parentPort!.on('message', (job: ChunkJob) => {
    let reply: ChunkReply;
    const dirs: string[] = [];
    try {
      reply = { id: job.id, ok: true, blocks: processChunk(cfg, seen, madeDirs, job, dirs), data: job.data, dirs };
    } catch (e) {
      const err = e as ChunkError;
      reply = { id: job.id, ok: false, message: err.message, code: err.code, data: job.data, dirs, written: err.written ?? [] };
    }
    parentPort!.postMessage(reply, [job.data.buffer as ArrayBuffer]);
  });
}

if (!isMainThread && (workerData as WorkerConfig | undefined)?.role === ROLE) runWorker(workerData as WorkerConfig);
