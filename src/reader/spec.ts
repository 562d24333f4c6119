// The protocol between a block reader process and the one that starts it
// (hfk-init, or hfk mount in the background): the spec the reader is handed
// on its stdin (or as a file), and the one-line JSON report it writes on
// fd 3 once the mount is up, or why it failed.

import * as fs from 'node:fs';
import { z } from 'zod';
import { HfkError } from '../errors.ts';
import type { Ranking } from '../fetch/rank.ts';
import { ImageName } from '../format/manifest.ts';

/** The most worker threads that may verify blocks (config init.reader.verifyThreads, hfk mount --verify-threads). */
export const MAX_VERIFY_THREADS = 16;

/** Where a metrics endpoint listens: HOST:PORT, an IPv6 host in brackets ([::1]:9101). */
export const ListenAddress = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be HOST:PORT, e.g. 127.0.0.1:9101 or [::1]:9101')
  .refine((a) => splitListen(a).port <= 65535, 'the port must be from 0 to 65535');

/** HOST:PORT as a host (brackets of an IPv6 address taken off) and a port. */
export function splitListen(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(':');
  return { host: addr.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(addr.slice(i + 1)) };
}

/** Everything a background reader needs, handed over as a JSON file. */
export const ReaderSpec = z.strictObject({
  mountpoint: z.string().min(1),
  name: ImageName,
  version: z.number().int().positive().optional(),
  mirrors: z.array(z.string()).min(1),
  /** One proxy for every request, or per-scheme proxies and no_proxy hosts (src/store/proxy.ts). */
  proxy: z.union([z.string(), z.strictObject({ http: z.string().optional(), https: z.string().optional(), noProxy: z.array(z.string()).optional() })]).optional(),
  /** netrc logins for mirrors given without credentials (src/store/netrc.ts). */
  netrc: z.array(z.strictObject({ machine: z.string().optional(), login: z.string().optional(), password: z.string().optional() })).optional(),
  /** The pinned public key, base64 of its 32 bytes. */
  key: z.string(),
  /** A manifest file already fetched and checked (the init's): no second ranking or download. */
  manifestFile: z.string().optional(),
  seeds: z.array(z.strictObject({ url: z.string(), ttfbMs: z.number().nullable(), throughputMBps: z.number().nullable() })).optional(),
  cacheDir: z.string().optional(),
  cacheBytes: z.number().int().positive().optional(),
  /** Write-behind of the block cache, ms (see DiskCacheOptions.holdMs). */
  cacheHoldMs: z.number().int().nonnegative().optional(),
  memoryBytes: z.number().int().positive().optional(),
  trustFile: z.string().optional(),
  mode: z.enum(['hard', 'soft']).default('hard'),
  softTimeoutMs: z.number().int().positive().optional(),
  mountCommand: z.array(z.string()).optional(),
  umountCommand: z.array(z.string()).optional(),
  /** Kernel readahead of the mount, KiB (the FUSE layer's default is 4096, for big sequential reads). */
  readAheadKb: z.number().int().nonnegative().optional(),
  /** The fetcher's own readahead window for sequential reads, bytes. */
  prefetchBytes: z.number().int().nonnegative().optional(),
  /** Gaps between the boot profile's blocks the profile prefetch also fetches, bytes (FetcherOptions.profileGapBytes). */
  profileGapBytes: z.number().int().nonnegative().optional(),
  /** Whether that readahead also reads blocks the disk cache holds (default true; a boot turns it off). */
  prefetchCached: z.boolean().optional(),
  /** Worker threads that decode and verify blocks (0: the main thread does it). */
  verifyThreads: z.number().int().nonnegative().max(MAX_VERIFY_THREADS).optional(),
  /** The transfer budget (config fetch.headTimeout, minRate, rateGrace; see src/store/budget.ts). */
  transfer: z.strictObject({ headersTimeoutMs: z.number().int().positive(), minBytesPerSec: z.number().int().positive(), graceMs: z.number().int().positive() }).optional(),
  /** Keep-alive connections (requests in flight) per mirror. */
  connections: z.number().int().positive().max(256).optional(),
  /** Extra facts for stats.json (e.g. the init's ranking). */
  info: z.record(z.string(), z.unknown()).optional(),
  /** For developers: the reader process (daemon.ts) profiles its main thread; SIGUSR2 writes reader.cpuprofile. */
  cpuProfile: z.boolean().optional(),
  /** Serve Prometheus metrics of this reader on HOST:PORT (/metrics). */
  metrics: ListenAddress.optional(),
});
export type ReaderSpec = z.input<typeof ReaderSpec>;

export type ReadyMessage =
  | { ready: true; pid: number; mountpoint: string; image: string; version: number; size: number; ranking?: Ranking }
  | { ready: false; error: { code: string; message: string; hint?: string } };

export function errorMessage(e: unknown): ReadyMessage {
  if (e instanceof HfkError) return { ready: false, error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } };
  return { ready: false, error: { code: 'E_INTERNAL', message: e instanceof Error ? e.message : String(e) } };
}

/** Writes the ready message to the pipe the parent gave as fd `fd`, and closes it. */
export function reportReady(fd: number, m: ReadyMessage): void {
  try {
    fs.writeSync(fd, `${JSON.stringify(m)}\n`);
    fs.closeSync(fd);
  } catch {
    // the parent is gone; nothing to tell
  }
}

// ---------------------------------------------------------------------------
// Between a keeper (keeper.ts) and the reader processes it starts (child.ts),
// on Node's IPC channel with 'advanced' serialization (buffers and bigints).

/** What a reader that takes over is handed besides the spec: the connection's INIT and the image's signed manifest. */
export interface Resume {
  init: Uint8Array;
  manifest: Uint8Array;
}

export type KeeperMessage =
  | { t: 'start'; spec: ReaderSpec; fd: number; keeperPid: number; generation: number; title: string; resume?: Resume }
  /** A FUSE request, as read from /dev/fuse. */
  | { t: 'req'; b: Uint8Array }
  /** The mount is gone: finish and exit. */
  | { t: 'end' }
  /** Another reader takes over: answer what was handed over, then exit. */
  | { t: 'drain' };

export type ChildMessage =
  /** The mount command has mounted (the first reader): the keeper starts reading /dev/fuse. */
  | { t: 'mounted'; manifest: Uint8Array }
  | { t: 'ready'; m: ReadyMessage }
  /** Requests answered (or needing no answer), by their unique. */
  | { t: 'handled'; u: bigint[] };
