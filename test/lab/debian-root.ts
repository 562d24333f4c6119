// A real Debian root for tests, the demo and benchmarks: debootstrap
// bookworm (minbase + systemd, systemd-sysv, iproute2, procps) into a cache
// folder outside the repository — HFK_CACHE, default /var/cache/hfk — and
// make it bootable from hfk on a serial console: root logs in without a
// password, hostname hfk-demo, empty fstab, a getty on ttyS0.
//
// A root is built under a temporary name and renamed into place only when
// complete, with a stamp (.hfk-root.json) describing the recipe; a crash
// leaves no half-made cache, and a changed recipe rebuilds. A complete
// debootstrap already on the machine (the lead's CACHE/rootfs.tmp) is copied
// as the starting point instead of downloading again.
//
// ensureDebianSquashfs packs the root as an uncompressed squashfs (hfk
// compresses blocks itself), rebuilt when any file of the tree changes.
// ensurePackages installs missing Debian packages with apt-get (for the demo
// on a fresh machine).

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { HfkError, InputError, type HfkErrorOptions } from '../../src/errors.ts';

/** A lab tool (debootstrap, chroot, mksquashfs, apt-get) that failed. */
export class LabError extends HfkError {
  override name = 'LabError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_LAB', message, options);
  }
}

export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.HFK_CACHE || '/var/cache/hfk';
}

// ---------------------------------------------------------------- running tools

export interface RunOptions {
  /** Appends the tool's output here (and names it in errors). */
  logFile?: string;
  env?: NodeJS.ProcessEnv;
  /** Exit codes besides 0 that are not failures. */
  okCodes?: number[];
}

/** Runs a command to completion; fails with the end of its output. */
export function run(cmd: string, args: string[], o: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    if (o.logFile) mkdirSync(dirname(o.logFile), { recursive: true });
    const log = o.logFile ? createWriteStream(o.logFile, { flags: 'a' }) : null;
    log?.write(`\n$ ${[cmd, ...args].join(' ')}\n`);
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
    let out = '';
    const take = (b: Buffer) => {
      out += b.toString();
      if (out.length > 1 << 20) out = out.slice(-(1 << 19));
      log?.write(b);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.once('error', (e) => {
      log?.end();
      reject(new LabError(`cannot run ${cmd}: ${e.message}`, { hint: (e as NodeJS.ErrnoException).code === 'ENOENT' ? `install it: ensurePackages(['${cmd}'])` : undefined, cause: e }));
    });
    child.once('close', (code, signal) => {
      log?.end();
      if (code === 0 || (code !== null && o.okCodes?.includes(code))) return resolve(out);
      const tail = out.trim().split('\n').slice(-15).join('\n');
      reject(new LabError(`${cmd} ${args.join(' ')} failed (${signal ?? `exit ${code}`}):\n${tail}`, o.logFile ? { hint: `full output: ${o.logFile}` } : {}));
    });
  });
}

// ---------------------------------------------------------------- packages

/** dpkg-query -W -f '${Package} ${db:Status-Abbrev}\n' output → the names not installed. Pure. */
export function missingPackages(dpkgQueryOutput: string, wanted: readonly string[]): string[] {
  const installed = new Set<string>();
  for (const line of dpkgQueryOutput.split('\n')) {
    const [name, status] = line.trim().split(/\s+/);
    if (name && status?.startsWith('ii')) installed.add(name.replace(/:.*$/, ''));
  }
  return wanted.filter((p) => !installed.has(p));
}

/** Installs the Debian packages that are missing (apt-get update first). Returns what it installed. */
export async function ensurePackages(names: readonly string[], o: RunOptions = {}): Promise<string[]> {
  if (!names.length) return [];
  // dpkg-query exits 1 when a name is unknown to dpkg; it still lists the known ones
  const out = await run('dpkg-query', ['-W', '-f', '${Package} ${db:Status-Abbrev}\\n', ...names], { ...o, okCodes: [1] });
  const missing = missingPackages(out, names);
  if (!missing.length) return [];
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  await run('apt-get', ['update'], { ...o, env });
  await run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { ...o, env });
  return missing;
}

// ---------------------------------------------------------------- the root's recipe

export interface DebianRootOptions {
  /** Default HFK_CACHE or /var/cache/hfk. */
  cacheDir?: string;
  suite?: string;
  /** Default HFK_DEBIAN_MIRROR or http://deb.debian.org/debian. */
  mirror?: string;
  /** Packages on top of minbase. */
  include?: string[];
  hostname?: string;
  /**
   * A finished debootstrap of the same suite to copy instead of downloading
   * (default CACHE/rootfs.tmp when it is complete); null: always debootstrap.
   */
  seed?: string | null;
  /** More customisation steps, run after the standard ones (tests use this). */
  extraSteps?: RootStep[];
  log?: (line: string) => void;
}

/** One customisation of the root: a description and the action. */
export interface RootStep {
  describe: string;
  run(root: string, logFile: string): Promise<void> | void;
}

/** minbase plus a real system's core: systemd as init, udev (device units, the serial getty), dbus, and everyday tools. */
export const DEFAULT_INCLUDE = ['systemd', 'systemd-sysv', 'udev', 'dbus', 'kmod', 'iproute2', 'iputils-ping', 'procps', 'less', 'vim-tiny', 'curl', 'ca-certificates'];
const RECIPE_VERSION = 3;
const STAMP = '.hfk-root.json';

function resolved(o: DebianRootOptions) {
  return {
    cache: o.cacheDir ?? cacheDir(),
    suite: o.suite ?? 'bookworm',
    mirror: o.mirror ?? (process.env.HFK_DEBIAN_MIRROR || 'http://deb.debian.org/debian'),
    include: [...(o.include ?? DEFAULT_INCLUDE)].sort(),
    hostname: o.hostname ?? 'hfk-demo',
  };
}

/** The steps that make a debootstrapped tree a root hfk boots on a serial console. */
export function customizeSteps(hostname: string): RootStep[] {
  return [
    {
      describe: 'passwd -d root: root logs in on the console without a password',
      run: async (root, logFile) => void (await run('chroot', [root, 'passwd', '-d', 'root'], { logFile })),
    },
    {
      describe: `hostname ${hostname}`,
      run: (root) => {
        writeFileSync(join(root, 'etc/hostname'), `${hostname}\n`);
        writeFileSync(join(root, 'etc/hosts'), `127.0.0.1\tlocalhost\n127.0.1.1\t${hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`);
      },
    },
    {
      describe: 'empty /etc/fstab: the initramfs mounts the root',
      run: (root) => writeFileSync(join(root, 'etc/fstab'), '# hfk: the root file system is mounted by the initramfs\n'),
    },
    {
      describe: 'empty /etc/machine-id: each boot makes its own',
      run: (root) => writeFileSync(join(root, 'etc/machine-id'), ''),
    },
    {
      describe: 'apt caches emptied (downloaded .debs, package lists)',
      run: (root) => {
        for (const d of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
          for (const n of existsSync(join(root, d)) ? readdirSync(join(root, d)) : []) {
            if (n !== 'partial' && n !== 'lock') rmSync(join(root, d, n), { recursive: true, force: true });
          }
        }
        for (const n of ['pkgcache.bin', 'srcpkgcache.bin']) rmSync(join(root, 'var/cache/apt', n), { force: true });
      },
    },
  ];
}

/** What the cached root is made of; a different recipe means a rebuild. */
export function recipeOf(o: DebianRootOptions): Record<string, unknown> {
  const r = resolved(o);
  return {
    recipe: RECIPE_VERSION,
    suite: r.suite,
    variant: 'minbase',
    include: r.include,
    steps: [...customizeSteps(r.hostname), ...(o.extraSteps ?? [])].map((s) => s.describe),
  };
}

/** Package names with "install ok installed" in a dpkg status file. Pure. */
export function installedPackages(dpkgStatus: string): Set<string> {
  const out = new Set<string>();
  for (const para of dpkgStatus.split(/\n\s*\n/)) {
    const name = para.match(/^Package: (\S+)$/m)?.[1];
    if (name && /^Status: install ok installed$/m.test(para)) out.add(name);
  }
  return out;
}

/** Why `dir` is not a finished debootstrap of `suite` with `include`, or null if it is one. */
export function seedProblem(dir: string, suite: string, include: readonly string[]): string | null {
  if (!existsSync(join(dir, 'var/lib/dpkg/status'))) return 'has no var/lib/dpkg/status';
  if (existsSync(join(dir, 'debootstrap'))) return 'is an unfinished debootstrap (debootstrap/ is still there)';
  const osRelease = existsSync(join(dir, 'etc/os-release')) ? readFileSync(join(dir, 'etc/os-release'), 'utf8') : '';
  if (!new RegExp(`^VERSION_CODENAME=${suite}$`, 'm').test(osRelease)) return `is not Debian ${suite}`;
  const have = installedPackages(readFileSync(join(dir, 'var/lib/dpkg/status'), 'utf8'));
  const lacking = include.filter((p) => !have.has(p));
  return lacking.length ? `lacks ${lacking.join(', ')}` : null;
}

function readStamp(dir: string): string | null {
  try {
    return readFileSync(join(dir, STAMP), 'utf8');
  } catch {
    return null;
  }
}

const stampText = (recipe: Record<string, unknown>) => `${JSON.stringify(recipe, null, 2)}\n`;

/** Unmounts anything below `dir` (a crashed debootstrap leaves proc and sys mounted in its target). */
async function unmountBelow(dir: string): Promise<void> {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run('umount', ['-l', m]);
}

async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  await unmountBelow(dir);
  rmSync(dir, { recursive: true, force: true });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Temporary build folders of processes that are gone. */
async function removeStaleBuilds(cache: string, base: string): Promise<void> {
  for (const n of readdirSync(cache)) {
    const m = n.match(new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.tmp-(\\d+)-`));
    if (m && !pidAlive(Number(m[1]))) await removeTree(join(cache, n));
  }
}

/**
 * The path of a finished, customised Debian root (CACHE/debian-SUITE), built
 * if it is missing or its recipe changed.
 */
export async function ensureDebianRoot(options: DebianRootOptions = {}): Promise<string> {
  const r = resolved(options);
  const log = options.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const base = `debian-${r.suite}`;
  const final = join(r.cache, base);
  const recipe = stampText(recipeOf(options));
  if (readStamp(final) === recipe) return final;

  assertRoot();
  mkdirSync(r.cache, { recursive: true });
  await removeStaleBuilds(r.cache, base);
  const tmp = join(r.cache, `${base}.tmp-${process.pid}-${Date.now().toString(36)}`);
  const logFile = join(r.cache, `${base}.log`);
  writeFileSync(logFile, `# ${new Date().toISOString()} building ${final}\n`);
  try {
    const seed = options.seed === undefined ? join(r.cache, 'rootfs.tmp') : options.seed;
    const problem = seed === null ? 'not used' : existsSync(seed) ? seedProblem(seed, r.suite, r.include) : 'does not exist';
    if (seed !== null && problem === null) {
      log(`debian root: copying the finished debootstrap ${seed} → ${tmp}`);
      await run('cp', ['-a', '--reflink=auto', seed, tmp], { logFile });
    } else {
      log(`debian root: debootstrap ${r.suite} (minbase + ${r.include.join(', ')}) from ${r.mirror} → ${tmp}${seed ? ` (seed ${seed} ${problem})` : ''}; log: ${logFile}`);
      await run('debootstrap', ['--variant=minbase', `--include=${r.include.join(',')}`, r.suite, tmp, r.mirror], { logFile });
    }
    for (const step of [...customizeSteps(r.hostname), ...(options.extraSteps ?? [])]) {
      log(`debian root: ${step.describe}`);
      try {
        await step.run(tmp, logFile);
      } catch (e) {
        throw new LabError(`customising the Debian root failed at "${step.describe}": ${(e as Error).message}`, { hint: `log: ${logFile}`, cause: e });
      }
    }
    writeFileSync(join(tmp, STAMP), recipe);
    if (existsSync(final)) {
      if (readStamp(final) === recipe) {
        // another process finished the same root first
        await removeTree(tmp);
        return final;
      }
      const old = `${final}.old-${process.pid}`;
      renameSync(final, old);
      await removeTree(old);
    }
    renameSync(tmp, final);
    log(`debian root: ready at ${final}`);
    return final;
  } catch (e) {
    await removeTree(tmp);
    throw e;
  }
}

// ---------------------------------------------------------------- squashfs

/**
 * A fingerprint of a tree: every entry's path, kind, mode, owner, size,
 * mtime and link target. Editing, adding, removing or touching a file
 * changes it. (The stamp of the root is in the tree, so a rebuilt root does too.)
 */
export function treeFingerprint(root: string): string {
  const h = createHash('sha256');
  const walk = (dir: string, rel: string) => {
    for (const n of readdirSync(dir).sort()) {
      const p = join(dir, n);
      const st = lstatSync(p, { bigint: true });
      h.update(`${rel}/${n}\0${st.mode}\0${st.uid}:${st.gid}\0${st.size}\0${st.mtimeNs}\0${st.isSymbolicLink() ? readlinkSync(p) : ''}\n`);
      if (st.isDirectory()) walk(p, `${rel}/${n}`);
    }
  };
  walk(root, '');
  return h.digest('hex');
}

export const SQUASHFS_OPTIONS = ['-noI', '-noD', '-noF', '-noX', '-all-root', '-mkfs-time', '0', '-noappend', '-no-progress'];

/** CACHE/debian-SUITE.sqfs: the root as an uncompressed squashfs, rebuilt when the tree changes. */
export async function ensureDebianSquashfs(options: DebianRootOptions = {}): Promise<string> {
  const root = await ensureDebianRoot(options);
  const out = `${root}.sqfs`;
  const sidecar = `${out}.json`;
  const want = `${JSON.stringify({ fingerprint: treeFingerprint(root), options: SQUASHFS_OPTIONS })}\n`;
  if (existsSync(out) && existsSync(sidecar) && readFileSync(sidecar, 'utf8') === want) return out;
  const log = options.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const tmp = `${out}.tmp-${process.pid}`;
  log(`debian squashfs: mksquashfs ${root} → ${out}`);
  try {
    await run('mksquashfs', [root, tmp, ...SQUASHFS_OPTIONS], { logFile: `${root}.log` });
    rmSync(sidecar, { force: true });
    renameSync(tmp, out);
    writeFileSync(sidecar, want);
  } finally {
    rmSync(tmp, { force: true });
  }
  return out;
}

export function assertRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new InputError('building the Debian root needs root (debootstrap, chroot)', { hint: 'run the tests or the demo as root' });
  }
}
