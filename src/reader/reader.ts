// The block reader: a fetcher shown through the block filesystem on a FUSE
// mount. `hfk mount` runs it (in the foreground, or as a background process),
// and hfk-init starts it as its own long-lived process that outlives the
// switch_root ('@' argv[0], out of the OOM killer's reach).
//
// A reader started in the background reports on a pipe (fd 3) once the
// mount is up, or why it failed, so the parent can exit with the right
// message and nothing is left mounted.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { BlockFs } from '../blockfs/blockfs.ts';
import { HfkError } from '../errors.ts';
import type { BlockFetcher } from '../fetch/fetcher.ts';
import { openFromManifest, openImage } from '../fetch/open.ts';
import type { Ranking } from '../fetch/rank.ts';
import { publicKeyFromRaw } from '../format/keys.ts';
import { ImageName } from '../format/manifest.ts';
import { type FuseMount, mount, unmountOnSignals } from '../fuse/mount.ts';

export interface ServeOptions {
  fetcher: BlockFetcher;
  mountpoint: string;
  readAheadKb?: number;
  mountCommand?: readonly string[];
  umountCommand?: readonly string[];
  /** Added to .hfk/stats.json (ranking, where the manifest came from, …). */
  info?: () => Record<string, unknown>;
  onError?: (e: unknown) => void;
}

/** Mounts NAME.img (and .hfk/stats.json) for a fetcher. */
export async function serveImage(o: ServeOptions): Promise<FuseMount> {
  const started = new Date();
  const fs_ = new BlockFs({
    name: o.fetcher.manifest.header.name,
    device: o.fetcher,
    mtimeMs: Date.parse(o.fetcher.manifest.header.created),
    stats: () => ({ pid: process.pid, mountedAt: started.toISOString(), mountpoint: o.mountpoint, ...o.info?.(), ...o.fetcher.stats(), profile: o.fetcher.profile() }),
  });
  return mount(fs_, {
    mountpoint: o.mountpoint,
    allowOther: true,
    ...(o.readAheadKb !== undefined ? { readAheadKb: o.readAheadKb } : {}),
    ...(o.mountCommand ? { mountCommand: o.mountCommand } : {}),
    ...(o.umountCommand ? { umountCommand: o.umountCommand } : {}),
    ...(o.onError ? { onError: o.onError } : {}),
  });
}

/** Everything a background reader needs, handed over as a JSON file. */
export const ReaderSpec = z.strictObject({
  mountpoint: z.string().min(1),
  name: ImageName,
  version: z.number().int().positive().optional(),
  mirrors: z.array(z.string()).min(1),
  proxy: z.string().optional(),
  /** The pinned public key, base64 of its 32 bytes. */
  key: z.string(),
  /** A manifest file already fetched and checked (the init's): no second ranking or download. */
  manifestFile: z.string().optional(),
  seeds: z.array(z.strictObject({ url: z.string(), ttfbMs: z.number().nullable(), throughputMBps: z.number().nullable() })).optional(),
  cacheDir: z.string().optional(),
  cacheBytes: z.number().int().positive().optional(),
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
  /** Worker threads that decode and verify blocks (0: the main thread does it). */
  verifyThreads: z.number().int().nonnegative().max(16).optional(),
  /** Keep-alive connections (requests in flight) per mirror. */
  connections: z.number().int().positive().max(256).optional(),
  /** Extra facts for stats.json (e.g. the init's ranking). */
  info: z.record(z.string(), z.unknown()).optional(),
});
export type ReaderSpec = z.input<typeof ReaderSpec>;

export type ReadyMessage =
  | { ready: true; pid: number; mountpoint: string; image: string; version: number; size: number; ranking?: Ranking }
  | { ready: false; error: { code: string; message: string; hint?: string } };

export function errorMessage(e: unknown): ReadyMessage {
  if (e instanceof HfkError) return { ready: false, error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) } };
  return { ready: false, error: { code: 'E_INTERNAL', message: e instanceof Error ? e.message : String(e) } };
}

/**
 * Runs a reader to the end: opens the image, mounts it, reports `ready`,
 * and resolves when the mount goes away (unmount or signal).
 */
export async function runReader(
  specInput: ReaderSpec,
  ready: (m: ReadyMessage) => void,
  log: (line: string) => void,
  options: { unmountOnSignals?: boolean } = {},
): Promise<void> {
  const spec = ReaderSpec.parse(specInput);
  const key = publicKeyFromRaw(Buffer.from(spec.key, 'base64'));
  // Work inside the cache folder with relative paths: the init's reader keeps
  // running after switch_root has moved /run (and the cache mounted below it)
  // into the new root, where absolute paths would name the old, emptied root.
  // The working directory follows the folder wherever its mount goes.
  let cacheDir = spec.cacheDir;
  let trustFile = spec.trustFile;
  if (cacheDir) {
    const abs = path.resolve(cacheDir);
    const trustAbs = trustFile ? path.resolve(trustFile) : undefined;
    fs.mkdirSync(abs, { recursive: true });
    process.chdir(abs);
    cacheDir = '.';
    if (trustAbs?.startsWith(`${abs}/`)) trustFile = path.relative(abs, trustAbs);
  }
  const common = {
    mirrors: spec.mirrors,
    proxy: spec.proxy,
    key,
    cacheDir,
    ...(spec.cacheBytes ? { cacheBytes: spec.cacheBytes } : {}),
    ...(spec.memoryBytes ? { memoryBytes: spec.memoryBytes } : {}),
    trustFile,
    mode: spec.mode,
    ...(spec.prefetchBytes !== undefined ? { fetcher: { readaheadBytes: spec.prefetchBytes } } : {}),
    ...(spec.verifyThreads !== undefined ? { verifyThreads: spec.verifyThreads } : {}),
    ...(spec.connections !== undefined ? { mirrorOptions: { connections: spec.connections } } : {}),
    ...(spec.softTimeoutMs ? { softTimeoutMs: spec.softTimeoutMs } : {}),
    log,
  };
  let opened: { fetcher: BlockFetcher; close(): Promise<void> };
  let ranking: Ranking | undefined;
  let from: string | undefined;
  if (spec.manifestFile) {
    opened = await openFromManifest({ ...common, manifestBytes: fs.readFileSync(spec.manifestFile), ...(spec.seeds ? { seeds: spec.seeds } : {}) });
  } else {
    const o = await openImage({ ...common, name: spec.name, version: spec.version });
    opened = o;
    ranking = o.ranking;
    from = o.image.from;
  }
  let m: FuseMount;
  try {
    m = await serveImage({
      fetcher: opened.fetcher,
      mountpoint: spec.mountpoint,
      ...(spec.readAheadKb !== undefined ? { readAheadKb: spec.readAheadKb } : {}),
      ...(spec.mountCommand ? { mountCommand: spec.mountCommand } : {}),
      ...(spec.umountCommand ? { umountCommand: spec.umountCommand } : {}),
      info: () => ({ ...spec.info, ...(ranking ? { ranking } : {}), ...(from ? { manifestFrom: from } : {}) }),
      onError: (e) => log(`reader: ${e instanceof Error ? e.message : String(e)}`),
    });
  } catch (e) {
    await opened.close();
    throw e;
  }
  const h = opened.fetcher.manifest.header;
  // A boot profile in the manifest: fetch those blocks now, before they are asked for.
  void opened.fetcher.prefetchProfile();
  // hfk mount: SIGTERM/SIGINT unmount lazily and exit. The init's reader
  // ignores them: it must outlive the system it serves until the very end.
  if (options.unmountOnSignals) unmountOnSignals(m);
  ready({ ready: true, pid: process.pid, mountpoint: m.mountpoint, image: h.name, version: h.version, size: h.imageSize, ...(ranking ? { ranking } : {}) });
  const end = await m.done;
  await opened.close();
  if (end.reason === 'failed') log(`reader: session ended: ${end.error?.message ?? 'unknown error'}`);
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

export interface SpawnReaderOptions {
  /** The command: [node, script, args…]. */
  argv: readonly string[];
  /** argv[0] of the process as others see it (hfk-init: '@hfk-reader'). */
  argv0?: string;
  /** Where the reader's stdout/stderr go (default: inherited). */
  logFd?: number;
  /** Give up waiting after this long (the reader is then killed). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface LaunchedReader {
  readonly pid: number;
  /** Sends the spec (if any) on the reader's stdin, closes it, and waits for the ready report (fd 3). */
  handOver(spec?: ReaderSpec): Promise<{ pid: number; message: ReadyMessage }>;
}

/**
 * The environment of a reader process: as given, plus the glibc tunable that
 * backs malloc's heap with transparent huge pages (glibc 2.35+; older ones
 * ignore it). A reader keeps every block it decodes in fresh memory, and
 * first touches of 4 KiB pages are its largest cost on virtual machines:
 * measured on this project's 2-core VM, a cold dd of a 183 MB image through
 * `hfk mount` took 2.2–2.8 s with 4 KiB pages (reader's main thread
 * 1.3–1.8 s of user CPU) and 1.7–2.1 s with huge pages (0.9–1.2 s), three
 * runs each, taking turns; under load (CI running alongside), 1.8 against
 * 1.0 s of user CPU. A tunable the user set (`glibc.malloc.hugetlb=0`) is left alone.
 */
export function readerEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const tunables = env.GLIBC_TUNABLES ?? '';
  if (/(?:^|:)glibc\.malloc\.hugetlb=/.test(tunables)) return env;
  return { ...env, GLIBC_TUNABLES: tunables ? `${tunables}:glibc.malloc.hugetlb=1` : 'glibc.malloc.hugetlb=1' };
}

/**
 * Starts a reader process in its own session now, to be given its spec
 * later: the process (a Node start, slow on small machines) comes up while
 * the caller does other work. The reader reads its spec from stdin.
 */
export function launchReader(o: SpawnReaderOptions): LaunchedReader {
  const [cmd, ...args] = o.argv;
  const out = o.logFd ?? 'inherit';
  const child = spawn(cmd!, args, {
    argv0: o.argv0 ?? cmd!,
    detached: true,
    stdio: ['pipe', out, out, 'pipe'],
    env: readerEnv(o.env ?? process.env),
  });
  let buf = '';
  let settled = false;
  let resolveReport!: (v: ReadyMessage | Error) => void;
  const report = new Promise<ReadyMessage | Error>((resolve) => (resolveReport = resolve));
  const pipe = child.stdio[3] as NodeJS.ReadableStream;
  const finish = (v: ReadyMessage | Error) => {
    if (settled) return;
    settled = true;
    pipe.removeAllListeners();
    (pipe as unknown as { destroy?: () => void }).destroy?.();
    if (v instanceof Error) child.kill('SIGKILL');
    else if (v.ready) child.unref();
    resolveReport(v);
  };
  pipe.on('data', (d: Buffer) => {
    buf += d.toString();
    const nl = buf.indexOf('\n');
    if (nl < 0) return;
    try {
      finish(JSON.parse(buf.slice(0, nl)) as ReadyMessage);
    } catch (e) {
      finish(new Error(`the reader sent an unreadable report: ${(e as Error).message}`));
    }
  });
  child.stdin!.on('error', () => {}); // a reader that died is reported by 'exit'
  child.once('error', (e) => finish(e));
  child.once('exit', (code, signal) => finish(new Error(`the reader exited (${signal ?? code}) before reporting`)));
  return {
    pid: child.pid ?? -1,
    async handOver(spec) {
      child.stdin!.end(spec === undefined ? undefined : JSON.stringify(spec));
      const timer = setTimeout(() => finish(new Error(`the reader did not report within ${o.timeoutMs} ms`)), o.timeoutMs ?? 600_000);
      const v = await report;
      clearTimeout(timer);
      if (v instanceof Error) throw v;
      return { pid: child.pid!, message: v };
    },
  };
}

/**
 * Starts a reader in its own session and waits for its ready report on fd 3.
 * Resolves with the report (ready or failed) and the pid.
 */
export function spawnReader(o: SpawnReaderOptions): Promise<{ pid: number; message: ReadyMessage }> {
  return launchReader(o).handOver();
}
