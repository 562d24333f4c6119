// The keeper: a small process that holds a FUSE mount's /dev/fuse descriptor
// for the reader processes that serve it, so the mount outlives any one of
// them. The keeper reads every request from /dev/fuse, hands it to the
// current reader (child.ts) on an IPC channel, and keeps it until the reader
// says it was answered; the reader writes its replies to /dev/fuse itself,
// so block data never passes through the keeper. When a reader dies (an OOM
// kill, a bug, kill -9) the keeper starts another with what it needs to
// resume (the spec, the connection's INIT, the signed manifest) and hands it
// every request not yet answered: the processes reading the mount only wait.
// `hfk mount --upgrade` (SIGUSR1) swaps in a reader from the binary on disk
// the same way. A request answered twice is harmless: the kernel refuses the
// second answer (ENOENT), as request ids are never reused.
//
// After switch_root the keeper's root is the emptied initramfs; it holds
// what readers run from open, and puts it back there (readerLauncher).

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeError } from '../errors.ts';
import { constants as osc } from 'node:os';
import { findMount, FUSE_DEVICE, openFuseDevice, readMountinfo, unmount, unmountOnSignals } from '../fuse/mount.ts';
import { encodeOutHeader, Errno, OUT_HEADER_SIZE, Op, requestBufferSize, resolveProtocolOptions } from '../fuse/protocol.ts';
import { type ReaderMessage, startDeviceReader } from '../fuse/session.ts';
import { type ChildMessage, type KeeperMessage, ReaderSpec, type ReadyMessage } from './spec.ts';

/** The fd number of /dev/fuse in a reader process (after stdin, stdout, stderr and the IPC channel). */
export const CHILD_DEVICE_FD = 4;
const STATIC_BUSYBOX = '/bin/busybox';
/** Restarts back off from this to MAX_BACKOFF_MS while readers fail to come up; one that does resets it. */
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5000;
/** How long a reader that is told to drain or end may take before it is killed. */
const DRAIN_MS = 10_000;

export interface KeeperOptions {
  /** The reader's command: [node, script, …]; '--reader-child' is added. */
  argv: readonly string[];
  /** The process title of readers ('@hfk-reader' at boot: systemd spares '@' processes at shutdown). */
  title: string;
  log: (line: string) => void;
  /** hfk mount: SIGTERM/SIGINT unmount lazily and exit; the init's keeper ignores them. */
  unmountOnSignals?: boolean;
  /** Node options of a reader (launch.ts readerNodeFlags). */
  nodeFlags?: readonly string[];
  /** The init's keeper: hold what readers run from, for after switch_root (see readerLauncher). */
  holdRuntime?: boolean;
}

interface Child {
  generation: number;
  proc: ChildProcess;
  startedAt: number;
  /** Receives requests: after 'mounted' (the first) or 'ready' (one that took over). */
  active: boolean;
  draining: boolean;
}

interface Pending {
  req: Buffer;
  /** The reader it was handed to, if that one is alive. */
  sentTo: Child | undefined;
  /** Readers that died holding it: a request that kills every reader is answered EIO (POISON_DEATHS). */
  deaths: number;
}

/** A request that this many readers died holding is answered EIO by the keeper, so it cannot stall the mount forever. */
const POISON_DEATHS = 3;

/**
 * Runs a keeper to the end: starts the first reader with `spec`, reports its
 * ready message (with this process's pid: the one that holds the mount),
 * and resolves once the mount is gone and the readers have exited.
 */
export async function runKeeper(specInput: ReaderSpec, ready: (m: ReadyMessage) => void, o: KeeperOptions): Promise<void> {
  const spec = ReaderSpec.parse(specInput);
  const log = o.log;
  const fd = openFuseDevice(FUSE_DEVICE);
  const launch = readerLauncher(o, spec.cacheDir);
  const pending = new Map<bigint, Pending>();
  let init: Buffer | undefined;
  let manifest: Uint8Array | undefined;
  let generation = 0;
  let current: Child | undefined;
  let reported = false;
  let ended = false;
  let backoffMs = FIRST_BACKOFF_MS;
  let onMounted: (() => void) | undefined;
  const children = new Set<Child>();
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));

  const send = (c: Child, m: KeeperMessage) => {
    if (c.proc.pid !== undefined && c.proc.connected) c.proc.send(m, (e) => e && log(`keeper: cannot reach reader ${c.proc.pid}: ${e.message}`));
  };
  const handTo = (c: Child) => {
    for (const p of pending.values()) {
      if (p.sentTo) continue;
      p.sentTo = c;
      send(c, { t: 'req', b: p.req });
    }
  };
  const report = (m: ReadyMessage) => {
    if (reported) return;
    reported = true;
    ready(m.ready ? { ...m, pid: process.pid } : m);
  };
  /** Answers a request with an error from here (the keeper holds the fd too). */
  const answerError = (unique: bigint, errno: number) => {
    try {
      fs.writeSync(fd, encodeOutHeader(OUT_HEADER_SIZE, errno, Number(unique)));
    } catch {
      // interrupted or unmounted: nobody waits for it
    }
  };
  const finishIfIdle = () => {
    if (ended && children.size === 0) resolveDone();
  };

  // /dev/fuse, read from the first reader's mount on.
  let reading = false;
  const startReading = () => {
    if (reading) return;
    reading = true;
    const worker = startDeviceReader(fd, requestBufferSize(resolveProtocolOptions({}).maxWrite), new SharedArrayBuffer(4));
    worker.on('message', (m: ReaderMessage) => {
      if (!(m instanceof Uint8Array)) {
        if (m.code !== 'ENODEV' && m.code !== 'ECONNABORTED') log(`keeper: reading /dev/fuse ended: ${m.message}`);
        ended = true;
        for (const c of children) {
          send(c, { t: 'end' });
          setTimeout(() => c.proc.kill('SIGKILL'), DRAIN_MS).unref();
        }
        finishIfIdle();
        return;
      }
      const req = Buffer.from(m.buffer, m.byteOffset, m.byteLength);
      if (req.length < 40) return;
      if (req.readUInt32LE(4) === Op.INIT) init = req;
      const p: Pending = { req, sentTo: undefined, deaths: 0 };
      pending.set(req.readBigUInt64LE(8), p);
      if (current?.active) {
        p.sentTo = current;
        send(current, { t: 'req', b: req });
      }
    });
    worker.on('error', (e) => log(`keeper: the /dev/fuse reader thread failed: ${describeError(e)}`));
  };

  const start = () => {
    if (manifest && !init) return retry(); // mounted, and INIT not read yet: a moment
    const generationNow = ++generation;
    const resume = init && manifest ? { init, manifest } : undefined;
    let proc: ChildProcess;
    try {
      proc = launch(fd);
      proc.stdin?.end();
    } catch (e) {
      log(`keeper: cannot start a reader: ${describeError(e)}`);
      if (!resume) report({ ready: false, error: { code: 'E_READER', message: `cannot start the reader: ${describeError(e)}` } });
      else retry();
      return;
    }
    const c: Child = { generation: generationNow, proc, startedAt: Date.now(), active: false, draining: false };
    children.add(c);
    let gone = false;
    proc.on('message', (m: ChildMessage) => {
      if (gone) return; // late news from a reader already given up on
      if (m.t === 'handled') {
        for (const u of m.u) pending.delete(u);
      } else if (m.t === 'mounted') {
        if (!manifest) onMounted?.();
        manifest = m.manifest;
        c.active = true;
        current = c;
        startReading();
      } else if (m.t === 'ready') {
        if (!m.m.ready) {
          report(m.m);
          return;
        }
        if (c.draining) return; // replaced while it started
        if (resume) log(`keeper: reader ${proc.pid} took over (generation ${c.generation}); ${pending.size} request(s) outstanding`);
        backoffMs = FIRST_BACKOFF_MS; // a reader that comes up ends the backoff
        const before = current;
        c.active = true;
        current = c;
        if (before && before !== c && !before.draining) {
          before.draining = true;
          send(before, { t: 'drain' });
          setTimeout(() => before.proc.kill('SIGKILL'), DRAIN_MS).unref();
        }
        handTo(c);
        report(m.m);
      }
    });
    const onGone = (why: string) => {
      if (gone) return;
      gone = true;
      children.delete(c);
      for (const [u, p] of pending) {
        if (p.sentTo !== c) continue;
        p.sentTo = undefined;
        if (!c.draining && ++p.deaths >= POISON_DEATHS) {
          log(`keeper: ${POISON_DEATHS} readers died holding request ${u} (opcode ${p.req.readUInt32LE(4)}): answering it EIO`);
          answerError(u, Errno.EIO);
          pending.delete(u);
        }
      }
      if (current === c) current = undefined;
      if (current?.active) handTo(current);
      if (ended) return finishIfIdle();
      if (!c.draining) log(`keeper: reader ${proc.pid ?? '(not started)'} ${why} after ${((Date.now() - c.startedAt) / 1000).toFixed(1)} s`);
      if (!manifest) {
        // It never mounted: nothing to keep; the reader said why (or its log does).
        report({ ready: false, error: { code: 'E_READER', message: `the reader ${why} before the image was mounted` } });
        ended = true;
        fs.closeSync(fd);
        void unmountIfOurs(spec.mountpoint, spec.umountCommand);
        return finishIfIdle();
      }
      if (!current) retry();
    };
    // A process that cannot be started emits 'error' and no 'close'; 'close' comes after its last message.
    proc.once('error', (e) => onGone(`could not be started (${e.message})`));
    proc.once('close', (code, signal) => onGone(`exited (${signal ?? `status ${code}`})`));
    // A reader that takes over works in the keeper's folder (the cache's): after switch_root no absolute path reaches it.
    const resumeSpec: ReaderSpec = resume ? { ...spec, manifestFile: undefined, ...(spec.cacheDir ? { cacheDir: '.', trustFile: relativeTo(spec.cacheDir, spec.trustFile) } : {}) } : spec;
    send(c, { t: 'start', spec: resumeSpec, fd: CHILD_DEVICE_FD, keeperPid: process.pid, generation: generationNow, title: o.title, ...(resume ? { resume } : {}) });
  };
  const retry = () => {
    const wait = backoffMs;
    backoffMs = Math.min(MAX_BACKOFF_MS, backoffMs * 2);
    setTimeout(() => {
      if (!ended && !current) start();
    }, wait);
  };

  // hfk mount --upgrade: a new reader from the binary on disk takes over.
  process.on('SIGUSR1', () => {
    if (ended || !init || !manifest) return;
    log('keeper: SIGUSR1: starting a new reader to take over');
    start();
  });
  if (o.unmountOnSignals) {
    // Until mounted a signal ends the reader and this process; from then on it unmounts (lazily) first.
    const early = (sig: NodeJS.Signals) => {
      for (const c of children) c.proc.kill('SIGKILL');
      process.exit(128 + (osc.signals[sig] ?? 0));
    };
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, early);
    onMounted = () => {
      for (const sig of ['SIGTERM', 'SIGINT'] as const) process.off(sig, early);
      unmountOnSignals({ mountpoint: spec.mountpoint, unmount: async (opts) => (await unmount(spec.mountpoint, { lazy: opts?.lazy, ...(spec.umountCommand ? { umountCommand: spec.umountCommand } : {}) }), { reason: 'unmounted' as const }) }, {
        exit: (code) => void done.then(() => process.exit(code)),
      });
    };
  } else {
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => log(`keeper: ignoring ${sig}`));
  }
  start();
  await done;
}

/**
 * How this keeper starts a reader process with /dev/fuse as its fd 4: from
 * the Node binary and script it was started from. With `holdRuntime` (the
 * init's keeper) it first opens every file its own process runs from (Node,
 * its loader and libraries, the bundle, the CA bundle) and busybox: after
 * switch_root those are deleted from its root, the emptied initramfs, and a
 * reader must not be started from the new root either, which is read
 * through the very reader being replaced. Then it mounts /proc in its own
 * root again (busybox, reached through the new root's /proc from its
 * working folder under /run) and puts each file back as a symlink to its
 * open descriptor, so the reader starts exactly as the first one did.
 */
function readerLauncher(o: KeeperOptions, cacheDir: string | undefined): (fd: number) => ChildProcess {
  const [node, script] = o.argv;
  // The bundle this code runs from (at boot /init is only a bootstrap that imports it by its path).
  const bundle = fileURLToPath(import.meta.url);
  const held = o.holdRuntime ? holdFiles([...mappedFiles(), bundle, ...(process.env.SSL_CERT_FILE ? [process.env.SSL_CERT_FILE] : [])]) : new Map<string, number>();
  const busybox = o.holdRuntime ? tryOpen(STATIC_BUSYBOX) : undefined;
  // From a folder under /run the root is a fixed number of '..' away, before and after switch_root.
  let up: string | undefined;
  if (cacheDir) {
    const abs = path.resolve(cacheDir);
    fs.mkdirSync(abs, { recursive: true });
    process.chdir(abs);
    up = path.relative(abs, '/') || '.';
  }
  return (fd) => {
    // stdin a pipe, not 'ignore': that opens /dev/null, which is not there for the keeper after switch_root.
    const stdio: Array<'pipe' | 'inherit' | 'ipc' | number> = ['pipe', 'inherit', 'inherit', 'ipc', fd];
    const common = { stdio, detached: true, serialization: 'advanced' as const, argv0: o.title };
    if (fs.existsSync(node!) && (script === undefined || fs.existsSync(script))) {
      return spawn(node!, [...(o.nodeFlags ?? []), ...o.argv.slice(1), '--reader-child'], common);
    }
    if (held.size === 0 || busybox === undefined || up === undefined) {
      throw new Error(`${node} or ${script} is gone, and this keeper holds no copy to start a reader from`);
    }
    restoreRuntime(held, `${up}/proc/${process.pid}/fd/${busybox}`);
    // The bundle itself (not /init, which imports it by a path Node would resolve through the symlink to a deleted file).
    return spawn(node!, [...(o.nodeFlags ?? []), '--preserve-symlinks', '--preserve-symlinks-main', bundle, '--reader-child'], common);
  };
}

/** The files this process has mapped (its executable, loader and libraries). */
function mappedFiles(): string[] {
  const out = new Set<string>();
  for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const file = line.slice(line.indexOf('/'));
    if (line.includes('/') && !file.endsWith('(deleted)') && !file.startsWith('/dev/') && !file.startsWith('/memfd:')) out.add(file);
  }
  return [...out];
}

function holdFiles(files: readonly string[]): Map<string, number> {
  const held = new Map<string, number>();
  for (const f of files) {
    const fd = tryOpen(f);
    if (fd !== undefined) held.set(f, fd);
  }
  return held;
}

/** Puts held files back where they were, as symlinks to this process's descriptors (after switch_root). */
function restoreRuntime(held: ReadonlyMap<string, number>, busybox: string): void {
  if (!fs.existsSync(`/proc/${process.pid}`)) {
    fs.mkdirSync('/proc', { recursive: true });
    const r = spawnSync(busybox, ['-t', 'proc', 'proc', '/proc'], { argv0: 'mount', stdio: ['pipe', 'inherit', 'inherit'], timeout: 10_000 });
    if (r.status !== 0) throw new Error(`cannot mount /proc in the keeper's root: busybox mount ${r.error?.message ?? `exited ${r.status}`}`);
  }
  for (const [file, fd] of held) {
    if (fs.existsSync(file)) continue;
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.rmSync(file, { force: true }); // a dangling symlink of an earlier restore
    fs.symlinkSync(`/proc/${process.pid}/fd/${fd}`, file);
  }
}

/** A first reader that died after mount(2) but before it said so leaves a dead mount: undo it. */
async function unmountIfOurs(mountpoint: string, umountCommand: readonly string[] | undefined): Promise<void> {
  const on = findMount(await readMountinfo().catch(() => []), path.resolve(mountpoint));
  if (on?.fstype === 'fuse.hfk') await unmount(path.resolve(mountpoint), { lazy: true, ...(umountCommand ? { umountCommand } : {}) }).catch(() => {});
}

/** `file` relative to `dir` when it lies inside it (else as it is). */
function relativeTo(dir: string, file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  const rel = path.relative(path.resolve(dir), path.resolve(file));
  return rel.startsWith('..') || path.isAbsolute(rel) ? file : rel;
}

function tryOpen(file: string): number | undefined {
  try {
    return fs.openSync(file, 'r');
  } catch {
    return undefined;
  }
}
