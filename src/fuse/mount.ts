// Mounting and unmounting: open /dev/fuse, check the mountpoint, run
// `mount -i -t fuse.hfk -o fd=3,rootmode=40000,… hfk MOUNTPOINT` with the
// descriptor as the child's fd 3, then serve the connection (session.ts).
// The mount command is injected: util-linux `mount` on a host, busybox's in
// the initramfs. Option strings, argument lists and /proc/self/mountinfo
// parsing are pure functions; the rest is a thin edge.

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { constants as osc } from 'node:os';
import { errnoCode, UsageError } from '../errors.ts';
import { FuseDeviceError, MountError, MountpointError, NotRootError } from './errors.ts';
import type { FileSystem } from './fs.ts';
import { PAGE_SIZE } from './protocol.ts';
import { FuseSession, type RequestFeed, type SessionEnd, type SessionOptions } from './session.ts';

export const FUSE_DEVICE = '/dev/fuse';
/** The descriptor number /dev/fuse gets in the mount command. */
export const CHILD_FUSE_FD = 3;
export const DEFAULT_MAX_READ = 1 << 20;

// ---------------------------------------------------------------------------
// Pure parts: options, arguments, mountinfo

export interface FuseMountOptionsSpec {
  /** The /dev/fuse descriptor as the mount process sees it. */
  fd: number;
  /** File type and mode of the root, octal in the option string; default 040000 (a folder). */
  rootMode?: number;
  /** Owner of the mount (who may access it without allow_other); default 0. */
  userId?: number;
  groupId?: number;
  /** Let every user access the mount; default true. */
  allowOther?: boolean;
  /** Let the kernel check permissions from the modes (no ACCESS requests); default true. */
  defaultPermissions?: boolean;
  /** Largest READ, bytes; default 1 MiB. */
  maxRead?: number;
  /** Mount read-only (MS_RDONLY); default true. */
  readOnly?: boolean;
}

function checkUint(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new UsageError(`mount option ${name} must be an unsigned 32-bit integer: got ${v}`);
  return v;
}

/**
 * The -o string for a FUSE mount, in the kernel's option names:
 * fd=3,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions,max_read=1048576,ro
 */
export function buildMountOptions(spec: FuseMountOptionsSpec): string {
  const maxRead = checkUint('max_read', spec.maxRead ?? DEFAULT_MAX_READ);
  if (maxRead < PAGE_SIZE) throw new UsageError(`mount option max_read must be at least ${PAGE_SIZE}: got ${maxRead}`);
  const opts = [
    `fd=${checkUint('fd', spec.fd)}`,
    `rootmode=${checkUint('rootmode', spec.rootMode ?? 0o40000).toString(8)}`,
    `user_id=${checkUint('user_id', spec.userId ?? 0)}`,
    `group_id=${checkUint('group_id', spec.groupId ?? 0)}`,
  ];
  if (spec.allowOther ?? true) opts.push('allow_other');
  if (spec.defaultPermissions ?? true) opts.push('default_permissions');
  opts.push(`max_read=${maxRead}`);
  if (spec.readOnly ?? true) opts.push('ro');
  return opts.join(',');
}

export interface MountArgsSpec {
  mountpoint: string;
  /** -o string from buildMountOptions. */
  options: string;
  /** Shown as the source in /proc/mounts; default "hfk". */
  source?: string;
  /** The fuse subtype: the type is fuse.SUBTYPE; default "hfk". */
  subtype?: string;
}

const WORD_RE = /^[A-Za-z0-9._:@+-]+$/;

/** Arguments for `mount` (util-linux or busybox): -i (no /sbin/mount.TYPE helper), type, options, source, target. */
export function buildMountArgs(spec: MountArgsSpec): string[] {
  const source = spec.source ?? 'hfk';
  const subtype = spec.subtype ?? 'hfk';
  if (!WORD_RE.test(source)) throw new UsageError(`mount source must be one word of [A-Za-z0-9._:@+-]: got ${JSON.stringify(source)}`);
  if (!/^[a-z0-9_]+$/.test(subtype)) throw new UsageError(`fuse subtype must be lowercase letters, digits or '_': got ${JSON.stringify(subtype)}`);
  if (spec.mountpoint === '' || /[\n\0]/.test(spec.mountpoint)) {
    throw new UsageError(`mountpoint must be a path without newlines: got ${JSON.stringify(spec.mountpoint)}`);
  }
  return ['-i', '-t', `fuse.${subtype}`, '-o', spec.options, source, spec.mountpoint];
}

/** Arguments for `umount`: lazy detaches now and cleans up when the last user goes. */
export function buildUmountArgs(mountpoint: string, opts: { lazy?: boolean } = {}): string[] {
  return opts.lazy ? ['-l', mountpoint] : [mountpoint];
}

export interface MountinfoEntry {
  mountId: number;
  parentId: number;
  major: number;
  minor: number;
  /** Root of the mount within its filesystem. */
  root: string;
  mountpoint: string;
  options: string;
  fstype: string;
  source: string;
  superOptions: string;
}

/** Undoes mountinfo's octal escapes (\040 for a space, \011, \012, \134). */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/self/mountinfo (proc(5)); malformed lines are skipped. */
export function parseMountinfo(text: string): MountinfoEntry[] {
  const out: MountinfoEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    if (sep < 0 || fields.length < sep + 4) continue;
    const dev = /^(\d+):(\d+)$/.exec(fields[2]!);
    if (!dev) continue;
    out.push({
      mountId: Number(fields[0]),
      parentId: Number(fields[1]),
      major: Number(dev[1]),
      minor: Number(dev[2]),
      root: unescapeMountinfo(fields[3]!),
      mountpoint: unescapeMountinfo(fields[4]!),
      options: fields[5]!,
      fstype: fields[sep + 1]!,
      source: unescapeMountinfo(fields[sep + 2]!),
      superOptions: fields[sep + 3]!,
    });
  }
  return out;
}

/** The last (topmost) mount on `mountpoint`, if any. */
export function findMount(entries: readonly MountinfoEntry[], mountpoint: string): MountinfoEntry | undefined {
  for (let i = entries.length - 1; i >= 0; i--) if (entries[i]!.mountpoint === mountpoint) return entries[i];
  return undefined;
}

/** The name of the connection's folder under /sys/fs/fuse/connections (the kernel's dev_t). */
export function fuseConnectionId(e: Pick<MountinfoEntry, 'major' | 'minor'>): number {
  return e.major * 2 ** 20 + e.minor;
}

// ---------------------------------------------------------------------------
// Running mount and umount

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs a command with `fd` (if given) as its fd 3; never rejects except when it cannot start. */
function runCommand(argv: readonly string[], fd?: number): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    if (!cmd) {
      reject(new UsageError('empty mount/umount command'));
      return;
    }
    const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'ignore', 'pipe'];
    if (fd !== undefined) stdio.push(fd);
    const child = spawn(cmd, args, { stdio });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => (stderr += d));
    child.on('error', (e) =>
      reject(new MountError(`cannot run ${cmd}: ${e.message}`, { cause: e, hint: `install ${cmd} (util-linux or busybox) or pass another command` })),
    );
    child.on('close', (code, signal) => resolve({ code, signal, stderr: stderr.trim() }));
  });
}

function describeExit(argv: readonly string[], r: CommandResult): string {
  const status = r.signal ? `was killed by ${r.signal}` : `exited with status ${r.code}`;
  return `\`${argv.join(' ')}\` ${status}${r.stderr ? `: ${r.stderr}` : ''}`;
}

export interface UnmountOptions {
  /** Detach now, finish when the last user is gone (umount -l). */
  lazy?: boolean;
  /** The umount command; default ['umount']. */
  umountCommand?: readonly string[];
}

/** Unmounts a mountpoint with the umount command; MountError if it fails. */
export async function unmount(mountpoint: string, opts: UnmountOptions = {}): Promise<void> {
  const argv = [...(opts.umountCommand ?? ['umount']), ...buildUmountArgs(mountpoint, opts)];
  const r = await runCommand(argv);
  if (r.code !== 0) {
    throw new MountError(`cannot unmount ${mountpoint}: ${describeExit(argv, r)}`, {
      hint: opts.lazy ? 'see what still uses it: fuser -vm MOUNTPOINT' : 'something still uses it (a loop mount, an open file): unmount that first, or detach now with hfk umount --lazy (umount -l)',
    });
  }
}

// ---------------------------------------------------------------------------
// Checks before mounting

/** Reads /proc/self/mountinfo; separate so that callers may pass their own. */
export async function readMountinfo(): Promise<MountinfoEntry[]> {
  return parseMountinfo(await fsp.readFile('/proc/self/mountinfo', 'utf8'));
}

/**
 * Resolves and checks a mountpoint: it must exist, be a folder, and have
 * nothing mounted on it. Returns the real path (as mountinfo shows it).
 */
export async function checkMountpoint(mountpoint: string, mounts?: readonly MountinfoEntry[]): Promise<string> {
  let real: string;
  try {
    real = await fsp.realpath(mountpoint);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') {
      throw new MountpointError('missing', mountpoint, `mountpoint ${mountpoint} does not exist`);
    }
    if (errnoCode(e) === 'ENOTCONN') {
      throw new MountpointError('busy', mountpoint, `mountpoint ${mountpoint} has a dead FUSE mount on it (ENOTCONN)`);
    }
    throw new MountpointError('missing', mountpoint, `cannot resolve mountpoint ${mountpoint}: ${(e as Error).message}`, { cause: e });
  }
  const st = await fsp.stat(real);
  if (!st.isDirectory()) throw new MountpointError('not-directory', mountpoint, `mountpoint ${mountpoint} is not a folder`);
  const on = findMount(mounts ?? (await readMountinfo()), real);
  if (on) {
    throw new MountpointError('busy', mountpoint, `mountpoint ${mountpoint} already has ${on.fstype} (${on.source}) mounted on it`);
  }
  return real;
}

/** Opens the FUSE device read-write; typed errors for a missing device and for no permission. */
export function openFuseDevice(device: string = FUSE_DEVICE): number {
  try {
    return fs.openSync(device, fs.constants.O_RDWR);
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ENOENT' || code === 'ENXIO' || code === 'ENODEV') {
      throw new FuseDeviceError(`${device} is not available (${code}): the kernel has no FUSE support loaded`, { cause: e });
    }
    if (code === 'EACCES' || code === 'EPERM') throw new NotRootError(`cannot open ${device} (${code})`, { cause: e });
    throw new FuseDeviceError(`cannot open ${device}: ${(e as Error).message}`, { cause: e });
  }
}

/** Args for `umount -f -l`: MNT_FORCE makes the kernel abort a FUSE connection, MNT_DETACH unmounts it. */
export function buildForceUmountArgs(mountpoint: string): string[] {
  return ['-f', '-l', mountpoint];
}

/**
 * Aborts a FUSE connection synchronously, so that its reader's blocked read
 * fails with ENODEV: through /sys/fs/fuse/connections/ID/abort when fusectl
 * is mounted, else with `umount -f -l` (which also detaches the mount;
 * umount skips statfs/stat of the target for forced and lazy unmounts, so
 * it does not wait on the server this process can no longer run).
 */
export function abortConnection(entry: MountinfoEntry | undefined, mountpoint: string, umountCommand: readonly string[]): void {
  if (entry) {
    try {
      fs.writeFileSync(`/sys/fs/fuse/connections/${fuseConnectionId(entry)}/abort`, '1');
      return;
    } catch {
      // fusectl is not mounted
    }
  }
  const [cmd, ...args] = umountCommand;
  spawnSync(cmd!, [...args, ...buildForceUmountArgs(mountpoint)], { stdio: 'ignore', timeout: 10_000 });
}

// ---------------------------------------------------------------------------
// Mount

export interface MountOptions extends SessionOptions {
  /** An existing, empty folder. */
  mountpoint: string;
  /** The mount command; default ['mount'] (busybox: ['busybox', 'mount']). */
  mountCommand?: readonly string[];
  /** The umount command; default ['umount']. */
  umountCommand?: readonly string[];
  /** Source shown in /proc/mounts; default "hfk". */
  source?: string;
  /** Type is fuse.SUBTYPE; default "hfk". */
  subtype?: string;
  /** Largest READ in bytes (max_read); default 1 MiB. maxPages follows it unless set. */
  maxRead?: number;
  allowOther?: boolean;
  defaultPermissions?: boolean;
  /** The FUSE device; default /dev/fuse. */
  device?: string;
  /**
   * Kernel readahead for files of this mount, KiB, set through
   * /sys/class/bdi/MAJ:MIN/read_ahead_kb once mounted (the kernel offers only
   * 128 KiB at INIT). Sequential reads then keep several max-size READs in
   * flight. Default 4096; 0 leaves the kernel's choice.
   */
  readAheadKb?: number;
  /** An open /dev/fuse descriptor to mount with (a keeper's, see reader/keeper.ts) instead of opening the device. */
  fd?: number;
  /** Called once the mount command has mounted, before INIT is answered (a keeper then starts reading the fd). */
  onMounted?: () => void;
}

export const DEFAULT_READ_AHEAD_KB = 4096;

/** Where the kernel keeps the readahead of a mount's backing device info. */
export function readAheadPath(e: Pick<MountinfoEntry, 'major' | 'minor'>): string {
  return `/sys/class/bdi/${e.major}:${e.minor}/read_ahead_kb`;
}

export interface FuseMount {
  /** The real path of the mountpoint. */
  readonly mountpoint: string;
  readonly session: FuseSession;
  /** The connection's folder name under /sys/fs/fuse/connections. */
  readonly connectionId: number | undefined;
  /** Unmounts (lazy: detach now) and resolves when the session has ended. */
  unmount(opts?: { lazy?: boolean }): Promise<SessionEnd>;
  /** Resolves when the session ends, whoever unmounted. */
  readonly done: Promise<SessionEnd>;
}

/**
 * Mounts `filesystem` on `options.mountpoint` and serves it. Resolves once
 * the kernel's INIT has been answered. On failure nothing stays mounted and
 * the error says why: NotRootError, FuseDeviceError, MountpointError,
 * MountError, FuseProtocolError (INIT refused).
 */
export async function mount(filesystem: FileSystem, options: MountOptions): Promise<FuseMount> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new NotRootError(`mounting a FUSE filesystem needs root: running as uid ${process.getuid()}`);
  }
  const maxRead = options.maxRead ?? DEFAULT_MAX_READ;
  if (options.readAheadKb !== undefined && (!Number.isInteger(options.readAheadKb) || options.readAheadKb < 0)) {
    throw new UsageError(`readAheadKb must be a non-negative integer: got ${options.readAheadKb}`);
  }
  const sessionOptions: SessionOptions = {
    maxPages: options.maxPages ?? Math.max(1, Math.min(256, Math.floor(maxRead / PAGE_SIZE))),
    maxReadahead: options.maxReadahead,
    maxBackground: options.maxBackground,
    congestionThreshold: options.congestionThreshold,
    maxWrite: options.maxWrite,
    readdirplus: options.readdirplus,
    onError: options.onError,
    feed: options.feed,
  };
  const umountCommand = options.umountCommand ?? ['umount'];
  const mountpoint = await checkMountpoint(options.mountpoint);
  const fd = options.fd ?? openFuseDevice(options.device ?? FUSE_DEVICE);

  const argv = [
    ...(options.mountCommand ?? ['mount']),
    ...buildMountArgs({
      mountpoint,
      source: options.source,
      subtype: options.subtype,
      options: buildMountOptions({
        fd: CHILD_FUSE_FD,
        maxRead,
        allowOther: options.allowOther,
        defaultPermissions: options.defaultPermissions,
      }),
    }),
  ];
  let result: CommandResult;
  try {
    result = await runCommand(argv, fd);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  if (result.code !== 0) {
    fs.closeSync(fd);
    // A mount command killed after mount(2) could leave it mounted.
    if (findMount(await readMountinfo(), mountpoint)) await unmount(mountpoint, { lazy: true, umountCommand }).catch(() => {});
    throw new MountError(`cannot mount FUSE on ${mountpoint}: ${describeExit(argv, result)}`, {
      hint: 'check that the kernel has FUSE (modprobe fuse) and that the mount command supports -i and fuse types',
    });
  }

  let entry: MountinfoEntry | undefined;
  const abort = () => abortConnection(entry, mountpoint, umountCommand);
  const session = FuseSession.start(fd, filesystem, { ...sessionOptions, abort });
  options.onMounted?.();
  try {
    entry = findMount(await readMountinfo(), mountpoint);
    await session.initialized;
  } catch (e) {
    await unmount(mountpoint, { lazy: true, umountCommand }).catch(() => {});
    await session.done;
    throw e;
  }
  const connectionId = entry ? fuseConnectionId(entry) : undefined;
  const readAheadKb = options.readAheadKb ?? DEFAULT_READ_AHEAD_KB;
  if (entry && readAheadKb > 0) {
    // Before anyone opens a file: a file's readahead state is set up at open.
    await fsp.writeFile(readAheadPath(entry), `${readAheadKb}\n`).catch((e: unknown) =>
      options.onError?.(new MountError(`cannot set readahead of ${mountpoint} to ${readAheadKb} KiB: ${(e as Error).message}`, { cause: e })),
    );
  }
  const m: FuseMount = {
    mountpoint,
    session,
    connectionId,
    done: session.done,
    async unmount(opts: { lazy?: boolean } = {}): Promise<SessionEnd> {
      if (session.running) await unmount(mountpoint, { lazy: opts.lazy, umountCommand });
      return session.done;
    },
  };
  return m;
}

/**
 * Serves a connection that is already mounted, for a reader that takes over
 * from another (reader/keeper.ts): requests come from `feed`, which replays
 * the connection's INIT first, so this resolves once that is handled.
 */
export async function attach(
  filesystem: FileSystem,
  options: { fd: number; feed: RequestFeed; mountpoint: string; umountCommand?: readonly string[]; onError?: SessionOptions['onError'] },
): Promise<FuseMount> {
  const umountCommand = options.umountCommand ?? ['umount'];
  // The options mount() negotiated with (its defaults): the replayed INIT must come out the same.
  const maxPages = Math.max(1, Math.min(256, Math.floor(DEFAULT_MAX_READ / PAGE_SIZE)));
  const session = FuseSession.start(options.fd, filesystem, { feed: options.feed, onError: options.onError, maxPages });
  await session.initialized;
  return {
    mountpoint: options.mountpoint,
    session,
    connectionId: undefined,
    done: session.done,
    async unmount(opts: { lazy?: boolean } = {}): Promise<SessionEnd> {
      if (session.running) await unmount(options.mountpoint, { lazy: opts.lazy, umountCommand });
      return session.done;
    },
  };
}

// ---------------------------------------------------------------------------
// Signals

export interface SignalOptions {
  /** Default SIGTERM and SIGINT. */
  signals?: readonly NodeJS.Signals[];
  /** Called after the unmount with 128 + the signal number; default process.exit. */
  exit?: (code: number) => void;
  /** Told about a failed unmount; default: written to stderr. */
  onError?: (e: unknown) => void;
  /** Where signals come from; default process. */
  emitter?: NodeJS.EventEmitter;
}

/**
 * On SIGTERM/SIGINT: unmount lazily (the kernel then ends the session once
 * the last user is gone), wait for the session to end, and exit with
 * 128 + signal number. Returns a function that removes the handlers.
 */
export function unmountOnSignals(m: Pick<FuseMount, 'unmount' | 'mountpoint'>, opts: SignalOptions = {}): () => void {
  const emitter = opts.emitter ?? process;
  const signals = opts.signals ?? ['SIGTERM', 'SIGINT'];
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const onError = opts.onError ?? ((e: unknown) => process.stderr.write(`hfk: ${e instanceof Error ? e.message : String(e)}\n`));
  let started = false;
  const handler = (signal: NodeJS.Signals) => {
    if (started) return;
    started = true;
    const code = 128 + (osc.signals[signal] ?? 0);
    m.unmount({ lazy: true }).then(
      () => exit(code),
      (e) => {
        onError(e);
        exit(code);
      },
    );
  };
  for (const s of signals) emitter.on(s, handler);
  return () => {
    for (const s of signals) emitter.off(s, handler);
  };
}
