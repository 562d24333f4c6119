// The publisher: image → block objects + signed manifest + pointer.
//
// Order of writes is what makes a publish safe to interrupt:
//   1. everything the user gave is checked before the store is touched;
//   2. block objects the store lacks are written (temporary name, rename);
//   3. the data is flushed, then the manifest is written, then the pointer.
// A reader therefore never sees a pointer to a manifest whose blocks are
// missing. If anything fails, the objects this run created are removed
// again, so the store is left exactly as it was.

import { execFile } from 'node:child_process';
import { rmdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { type Codec, DEFAULT_LEVEL, isValidBlockSize, LEVEL_RANGE } from '../format/codec.ts';
import { StoreError, UsageError } from '../errors.ts';
import { detectFilesystem, FSTYPE_PROBE_BYTES, type Filesystem } from '../format/fstype.ts';
import type { PrivateKey } from '../format/keys.ts';
import { blockPath, manifestPath } from '../format/layout.ts';
import { blockCountFor, type BootProfile, fromRuns, type Manifest, ManifestHeader, toRuns } from '../format/manifest.ts';
import type { StoreWriter } from '../store/store.ts';
import { chunkSizeFor, openInput } from './input.ts';
import { BufferPool } from '../util/bufpool.ts';
import { transferable } from '../util/transfer.ts';
import { defaultCreated, nextVersion, sameAsLatest, type WrittenVersion, writeVersion } from './version.ts';
import { publishPool } from './worker.ts';

export interface PublishOptions {
  image: string;
  store: StoreWriter;
  name: string;
  key: PrivateKey;
  blockSize: number;
  codec: Codec;
  level?: number;
  /** Creation time written into the manifest (default: now, or SOURCE_DATE_EPOCH). */
  created?: Date;
  /** Worker threads (default: one per core). */
  workers?: number;
  /** A boot profile to carry in the manifest (runs of block indices). */
  profile?: BootProfile;
  onProgress?: (p: PublishProgress) => void;
}

export interface PublishProgress {
  phase: 'blocks' | 'manifest';
  bytesDone: number;
  bytesTotal: number;
}

export interface PublishResult {
  name: string;
  /**
   * The image is the latest version over again (same blocks, codec, profile,
   * key): no manifest was written and the pointer was left alone; `version`
   * and `manifest` are the latest's.
   */
  unchanged: boolean;
  version: number;
  previousVersion: number | null;
  manifest: string;
  manifestSha256: string;
  image: { path: string; kind: string; size: number; filesystem: Filesystem };
  blockSize: number;
  codec: Codec;
  level: number;
  blocks: {
    total: number;
    zero: number;
    unique: number;
    /** unique blocks written by this run */
    new: number;
    /** unique blocks the store already had */
    reused: number;
  };
  bytes: {
    image: number;
    /** uncompressed bytes of the blocks written by this run */
    newData: number;
    /** bytes of block objects written (after compression) */
    written: number;
    manifest: number;
    /** total stored size of all unique blocks of this image */
    stored: number;
  };
  /** uncompressed / compressed for the blocks written by this run */
  compressionRatio: number;
  /** image size / size of its unique non-zero blocks */
  dedupRatio: number;
  seconds: number;
  cpuSeconds: number;
}

export function checkPublishOptions(o: Pick<PublishOptions, 'blockSize' | 'codec' | 'level' | 'name'>): number {
  if (!isValidBlockSize(o.blockSize)) {
    throw new UsageError(`--block-size must be a power of two from 4K to 1M: got ${o.blockSize}`);
  }
  const [lo, hi] = LEVEL_RANGE[o.codec];
  const level = o.level ?? DEFAULT_LEVEL[o.codec];
  if (!Number.isInteger(level) || level < lo || level > hi) {
    throw new UsageError(`--level for ${o.codec} must be a whole number from ${lo} to ${hi}: got ${o.level}`);
  }
  return level;
}

async function syncFilesystem(dir: string): Promise<void> {
  // syncfs(2) through coreutils: one call flushes every object just written.
  await promisify(execFile)('sync', ['-f', dir]).catch(() => promisify(execFile)('sync', []).catch(() => {}));
}

export async function publish(o: PublishOptions): Promise<PublishResult> {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const level = checkPublishOptions(o);
  ManifestHeader.shape.name.parse(o.name);
  const input = await openInput(o.image);
  const unlock = await o.store.lock(`publish ${o.name}`).catch(async (e) => {
    await input.close();
    throw e;
  });
  const created: string[] = []; // objects this run wrote; removed on failure
  const createdDirs: string[] = []; // fan-out folders this run made; removed on failure
  try {
    // The previous version, if any: its pointer gives the number to follow.
    const { latest, version } = await nextVersion(o.store, o.name);
    const previous = latest && { version: latest.manifest.header.version, sha256: latest.digest };

    const blockCount = blockCountFor(input.size, o.blockSize);
    const blocks: (string | null)[] = new Array(blockCount);
    const written = new Map<string, number>(); // hash → object size, new in this run
    const existed = new Map<string, number>(); // hash → object size, already stored
    const digests = new Map<string, string>(); // hash → SHA-256 of its object
    let zero = 0;
    let filesystem: Filesystem = 'unknown';
    let done = 0;
    let lastReport = 0;
    let firstError: unknown;
    const pool = publishPool(Math.max(1, o.workers ?? availableParallelism()), {
      root: o.store.root,
      codec: o.codec,
      level,
      blockSize: o.blockSize,
    });
    const replies: Promise<void>[] = [];
    const buffers = new BufferPool(chunkSizeFor(o.blockSize), 16);
    try {
      let index = 0;
      for await (const chunk of input.chunks(o.blockSize, buffers)) {
        if (firstError) break;
        if (index === 0) filesystem = detectFilesystem(chunk.subarray(0, FSTYPE_PROBE_BYTES));
        const first = index;
        index += Math.ceil(chunk.length / o.blockSize);
        const data = transferable(chunk); // handed over without a copy when the chunk owns its memory
        const { reply } = await pool.submit({ data }, [data.buffer as ArrayBuffer]);
        const length = chunk.length;
        replies.push(
          reply.then(
            (r) => {
              buffers.put(r.data.buffer);
              createdDirs.push(...r.dirs);
              if (!r.ok) {
                for (const h of r.written) written.set(h, 0);
                firstError ??= new StoreError(`cannot write to store ${o.store.location}: ${r.message}`, {
                  hint: r.code === 'ENOSPC' ? 'the disk of the store is full' : 'check the store folder',
                });
                return;
              }
              r.blocks.forEach((b, k) => {
                if (b.state === 'zero') {
                  blocks[first + k] = null;
                  zero++;
                  return;
                }
                blocks[first + k] = b.hash;
                (b.state === 'written' ? written : existed).set(b.hash, b.size);
                digests.set(b.hash, b.digest);
              });
              done += length;
              const now = performance.now();
              if (o.onProgress && now - lastReport > 100) {
                lastReport = now;
                o.onProgress({ phase: 'blocks', bytesDone: done, bytesTotal: input.size });
              }
            },
            (e) => {
              firstError ??= e;
            },
          ),
        );
      }
      await Promise.all(replies);
      if (firstError) throw firstError;
      if (index !== blockCount) throw new Error(`internal: read ${index} blocks, expected ${blockCount}`);
    } finally {
      // Every reply is in (or the pool is being torn down): list what was written.
      await Promise.allSettled(replies);
      for (const h of written.keys()) created.push(blockPath(h));
      await pool.close();
    }
    const sizes = new Map<string, number>([...existed, ...written]);
    const stats = { zero, new: written.size, reused: 0, newData: 0, written: 0 };
    for (const h of sizes.keys()) if (!written.has(h)) stats.reused++;
    for (const s of written.values()) stats.written += s;
    const counted = new Set<string>();
    blocks.forEach((h, i) => {
      if (h && written.has(h) && !counted.has(h)) {
        counted.add(h);
        stats.newData += Math.min(o.blockSize, input.size - i * o.blockSize);
      }
    });
    o.onProgress?.({ phase: 'manifest', bytesDone: input.size, bytesTotal: input.size });

    const manifest: Manifest = {
      header: {
        name: o.name,
        version,
        created: (o.created ?? defaultCreated()).toISOString(),
        imageSize: input.size,
        blockSize: o.blockSize,
        blockCount,
        codec: o.codec,
        filesystem,
        source: { kind: input.kind, name: path.basename(input.path) },
        previous,
        keyId: o.key.publicKey.id,
        ...(o.profile?.length ? { profile: toRuns(fromRuns(o.profile, blockCount)) } : {}),
      },
      blocks,
      objectSizes: sizes,
      objectDigests: digests,
    };
    // The latest version over again: nothing to write (blocks it lacked, if any, stay: it references them).
    const unchanged = latest !== null && sameAsLatest(manifest, latest, o.key);
    let out: WrittenVersion;
    if (unchanged) {
      out = { manifest: manifestPath(o.name, latest.manifest.header.version), sha256: latest.digest, bytes: 0 };
    } else {
      await syncFilesystem(o.store.root);
      out = await writeVersion(o.store, manifest, o.key);
    }
    created.length = 0; // published: nothing to roll back
    createdDirs.length = 0;

    let stored = 0;
    for (const s of sizes.values()) stored += s;
    const uniqueData = sizes.size * o.blockSize;
    const cpu = process.cpuUsage(cpu0);
    return {
      name: o.name,
      unchanged,
      version: unchanged ? latest.manifest.header.version : version,
      previousVersion: (unchanged ? latest.manifest.header.previous : previous)?.version ?? null,
      manifest: out.manifest,
      manifestSha256: out.sha256,
      image: { path: input.path, kind: input.kind, size: input.size, filesystem },
      blockSize: o.blockSize,
      codec: o.codec,
      level,
      blocks: { total: blockCount, zero: stats.zero, unique: sizes.size, new: stats.new, reused: stats.reused },
      bytes: { image: input.size, newData: stats.newData, written: stats.written, manifest: out.bytes, stored },
      compressionRatio: stats.written ? stats.newData / stats.written : 1,
      dedupRatio: uniqueData ? input.size / Math.min(uniqueData, input.size) : 1,
      seconds: (performance.now() - t0) / 1000,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
    };
  } finally {
    try {
      for (const rel of created) await o.store.remove(rel);
      // Deepest first; a folder something else has since written into stays.
      for (const dir of createdDirs.sort((a, b) => b.length - a.length)) await rmdir(dir).catch(() => {});
    } finally {
      await input.close();
      await unlock();
    }
  }
}
