// Starting a block reader as its own process and waiting for its report: a
// small module of its own, so that the init (PID 1), which starts the reader
// and waits for its word, does not load the reader's code itself.
//
// A reader started in the background reports on a pipe (fd 3) once the
// mount is up, or why it failed, so the parent can exit with the right
// message and nothing is left mounted. What it is handed and what it
// reports: spec.ts.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { clientFor } from '../source/origin.ts';
import type { ProxySetting } from '../store/proxy.ts';
import type { ReaderSpec, ReadyMessage } from './spec.ts';

export interface SpawnReaderOptions {
  /** The command: [node, script, args…] (the reader's Node options, readerNodeFlags, go in after node). */
  argv: readonly string[];
  /** argv[0] of the process as others see it (hfk-init: '@hfk-keeper', whose readers are '@hfk-reader'). */
  argv0?: string;
  /** Where the reader's stdout/stderr go (default: inherited). */
  logFd?: number;
  /** Give up waiting after this long (the reader is then killed). */
  timeoutMs?: number;
  /** The JIT to run the reader with (default 'full'). */
  jit?: ReaderJit;
  env?: NodeJS.ProcessEnv;
}

export interface LaunchedReader {
  readonly pid: number;
  /** Sends the spec (if any) on the reader's stdin, closes it, and waits for the ready report (fd 3). */
  handOver(spec?: ReaderSpec): Promise<{ pid: number; message: ReadyMessage }>;
}

/**
 * OpenSSL's capability mask for an emulated CPU: SSSE3 and AVX (word 1) and
 * AVX2, BMI2 and the SHA extensions (word 2) off, so SHA-256 runs its plain
 * x86-64 code. See readerEnv.
 */
export const EMULATED_OPENSSL_CAPS = '~0x1000020000000000:~0x20000120';
/** glibc's string functions without their AVX variants (see readerEnv). */
export const EMULATED_GLIBC_HWCAPS = 'glibc.cpu.hwcaps=-AVX_Fast_Unaligned_Load,-AVX2';

/**
 * Whether this CPU is emulated instruction by instruction (QEMU's TCG, whose
 * "max" CPU names itself "QEMU TCG CPU"), from /proc/cpuinfo's text.
 */
export function emulatedCpu(cpuinfo: string): boolean {
  return /^model name\s*:.*\bQEMU TCG CPU\b/m.test(cpuinfo);
}

function procCpuinfo(): string {
  try {
    return fs.readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
}

/**
 * The environment of a reader process: as given, plus glibc and OpenSSL
 * tunables. Settings the user made themselves are left alone.
 *
 * - Huge pages behind malloc's heap (`glibc.malloc.hugetlb=1`, glibc 2.35+;
 *   older ones ignore it). A reader keeps every block it decodes in fresh
 *   memory, and first touches of 4 KiB pages are its largest cost on virtual
 *   machines; huge pages mean far fewer of them.
 * - On an emulated CPU (emulatedCpu), no vector code in glibc's memcpy and
 *   OpenSSL's SHA-256: an emulator runs plain integer code nearly as it
 *   comes but each vector instruction through a helper, so there the plain
 *   code is the faster. On real hardware the vector paths are the fast
 *   ones, so they stay.
 *   (glibc 2.36 cuts GLIBC_TUNABLES short in place as it reads it: the
 *   reader's /proc/PID/environ shows only the first tunable, yet all apply.)
 *
 * (figures: docs/PERFORMANCE.md)
 */
export function readerEnv(env: NodeJS.ProcessEnv, cpuinfo: () => string = procCpuinfo): NodeJS.ProcessEnv {
  const out = { ...env };
  const add = (tunable: string) => (out.GLIBC_TUNABLES = out.GLIBC_TUNABLES ? `${out.GLIBC_TUNABLES}:${tunable}` : tunable);
  const has = (name: string) => new RegExp(`(?:^|:)${name.replace(/\./g, '\\.')}=`).test(env.GLIBC_TUNABLES ?? '');
  if (!has('glibc.malloc.hugetlb')) add('glibc.malloc.hugetlb=1');
  if (emulatedCpu(cpuinfo())) {
    if (!has('glibc.cpu.hwcaps')) add(EMULATED_GLIBC_HWCAPS);
    if (out.OPENSSL_ia32cap === undefined) out.OPENSSL_ia32cap = EMULATED_OPENSSL_CAPS;
  }
  return out;
}

/**
 * How much of V8's JIT a reader runs with: 'baseline' compiles its code with
 * Sparkplug only (no Maglev, no TurboFan); 'full' is V8's own tiers.
 *
 * A reader's own JavaScript per block is short: its work is zstd, SHA-256
 * and system calls. With hfk's HTTP client (h1.ts) the optimizing compilers
 * cost more than they give back: they compile on V8's helper threads, which
 * take CPU from the verify thread, nginx and the kernel on a small machine,
 * and they keep at it after the reader is warm. undici's client (HTTPS
 * mirrors, a proxy) runs far more JavaScript per request, and there the
 * optimized code pays. So `hfk mount` picks by its mirrors (jitForMirrors);
 * the init's reader, started before the mirrors are known, keeps V8's own
 * tiers: Sparkplug alone did not make cold boots faster. (V8 takes these
 * flags only on the command line, not in NODE_OPTIONS.)
 * (figures: docs/PERFORMANCE.md)
 */
export type ReaderJit = 'baseline' | 'full';

/** The JIT a reader of these mirrors should run with (see ReaderJit). */
export function jitForMirrors(mirrors: readonly string[], proxy?: ProxySetting): ReaderJit {
  return mirrors.some((u) => clientFor(u, proxy) === 'undici') ? 'full' : 'baseline';
}

/**
 * Node options of a reader process, put before its script: the JIT (see
 * ReaderJit), and V8's young generation held to 8 MiB per semi-space
 * (`--max-semi-space-size=8`).
 *
 * A reader makes short-lived objects for every block (requests, promises,
 * messages to the verify thread), and V8 grows the young generation while
 * they come, as far as the machine's memory lets it (a memory cgroup's
 * limit counts). Every page it grows into is a first touch, which on a
 * virtual machine is a page fault into the hypervisor. Of the sizes
 * compared (V8's own, 4 and 8 MiB), 8 MiB gave the fastest cold read with
 * the least CPU (figures: docs/PERFORMANCE.md).
 *
 * Objects still live after two scavenges move to the old generation as
 * before. A setting the user made in NODE_OPTIONS is kept.
 */
export function readerNodeFlags(env: NodeJS.ProcessEnv, jit: ReaderJit = 'full'): string[] {
  const flags: string[] = jit === 'baseline' ? [...BASELINE_JIT_FLAGS] : [];
  if (!/(?:^|\s)--max-semi-space-size(?:[=\s]|$)/.test(env.NODE_OPTIONS ?? '')) flags.push('--max-semi-space-size=8');
  return flags;
}

/** V8 flags of the 'baseline' JIT: Sparkplug only. */
export const BASELINE_JIT_FLAGS = ['--no-maglev', '--no-turbofan'] as const;

/**
 * Starts a reader process in its own session now, to be given its spec
 * later: the process (a Node start, slow on small machines) comes up while
 * the caller does other work. The reader reads its spec from stdin.
 */
export function launchReader(o: SpawnReaderOptions): LaunchedReader {
  const [cmd, ...args] = o.argv;
  const out = o.logFd ?? 'inherit';
  const env = o.env ?? process.env;
  const child = spawn(cmd!, [...readerNodeFlags(env, o.jit), ...args], {
    argv0: o.argv0 ?? cmd!,
    detached: true,
    stdio: ['pipe', out, out, 'pipe'],
    env: readerEnv(env),
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
