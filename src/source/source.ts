// The block-source layer: one small interface for "a verified block by its
// digest", and decorators with the same interface that the caller composes
// (desync's store algebra):
//
//   ReadThroughCache(disk) → Retrying(hard|soft) → Router([peers…, MirrorGroup([Mirror…])])
//
// A source fails with one of four typed errors (src/errors.ts), and the kind
// decides what the layer above does: MissingError (not there: try the next
// source), InvalidError (bad bytes: discard, blame the sender), BrokenError
// (transport: fail over, retry with backoff), AbortedError (cancelled).

import { AbortedError, BrokenError, HfkError, InvalidError, MissingError } from '../errors.ts';
import type { SizedBufferPool } from '../util/bufpool.ts';
import type { DiskCacheStats } from './diskcache.ts';
import type { HealthSnapshot } from './score.ts';
import type { TimelineSnapshot } from './timeline.ts';

/** Room in the memory cache that a verifying thread writes the block into. */
export interface Reservation {
  readonly fd: number;
  readonly offset: number;
  commit(): void;
  cancel(): void;
  full(): void;
}

/** One block as asked of a source. */
export interface BlockRequest {
  /** The block's name: SHA-256 of its decoded bytes. */
  hash: string;
  /** Decoded length. */
  length: number;
  /** The stored object's exact size, when the manifest says. */
  objectSize?: number | undefined;
  /** The object digest the manifest signs (format 2). */
  digest?: string | undefined;
  /** The block's index in its image, for messages (blockName). */
  index?: number | undefined;
  /** Awaited (with the hash) once the object has arrived and before it is verified: background work yields to reads. */
  pace?: ((hash: string) => Promise<void>) | undefined;
  /** Memory for the object and the block (given back by whoever took it when it is no longer needed). */
  pool?: SizedBufferPool | undefined;
  /** Room in the memory cache for a verifying thread to write the block into. */
  reserve?: ((hash: string, length: number) => Reservation | undefined) | undefined;
}

/** A verified block. */
export interface Block {
  data: Buffer;
  /** The object as received, when it came over the network (for caches). */
  object?: Buffer | undefined;
  /** Resolves when the layers below no longer need `object` (a cache has written it). */
  kept?: Promise<void> | undefined;
  /** Where it came from: a mirror URL, 'disk', a peer. */
  from: string;
}

/** Counters every source adds its own part to. */
export interface SourceStats {
  /** Block-object bytes received from the network (hedge losers included). */
  bytesFetched: number;
  blocksFetched: number;
  diskHits: number;
  hedges: number;
  hedgesWon: number;
  failovers: number;
  retryRounds: number;
  disk: DiskCacheStats | null;
  mirrors: ({ url: string; inFlight: number } & HealthSnapshot)[];
  /** The mirror the last block came from (a mirror group's). */
  mirror?: string | null;
  /** Blocks fetched over time and the mirror switches (a mirror group's). */
  timeline?: TimelineSnapshot;
}

export function emptyStats(): SourceStats {
  return { bytesFetched: 0, blocksFetched: 0, diskHits: 0, hedges: 0, hedgesWon: 0, failovers: 0, retryRounds: 0, disk: null, mirrors: [] };
}

export interface BlockSource {
  /** For messages: a URL, a folder, or what a decorator wraps. */
  readonly location: string;
  /** A verified block, or a typed error (see the top of this file). */
  get(req: BlockRequest, signal?: AbortSignal): Promise<Block>;
  /** Whether the block is at hand without the network (a disk cache): cheap, no I/O. */
  holds?(hash: string): boolean;
  /** Adds this source's counters (and its inner sources') to `into`. */
  stats?(into: SourceStats): void;
  /** Cancels what is under way and releases connections and files. Idempotent. */
  close(): Promise<void>;
}

/** The block as messages name it: "block 12 (0123456789ab…)". */
export function blockName(req: Pick<BlockRequest, 'hash' | 'index'>): string {
  return req.index === undefined ? `block ${req.hash.slice(0, 12)}…` : `block ${req.index} (${req.hash.slice(0, 12)}…)`;
}

export type FailureKind = 'missing' | 'invalid' | 'broken' | 'aborted';

/** The kind of a failure; anything that is not a typed source error counts as broken. */
export function failureKind(e: unknown): FailureKind {
  if (e instanceof MissingError) return 'missing';
  if (e instanceof InvalidError) return 'invalid';
  if (e instanceof AbortedError || (e instanceof HfkError && e.code === 'E_ABORTED')) return 'aborted';
  return 'broken';
}

/** Any error as a typed source error (an untyped one becomes BrokenError naming `source`). */
export function asSourceError(e: unknown, source: string): HfkError {
  return e instanceof HfkError ? e : new BrokenError(source, e instanceof Error ? e.message : String(e), { cause: e });
}

/** Sleeps, or rejects with AbortedError once `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
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
export function withSignal<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
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
