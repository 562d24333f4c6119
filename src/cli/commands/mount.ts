import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HfkError, UsageError } from '../../errors.ts';
import { resolvePublicKey } from '../../format/keys.ts';
import { parseImageRef } from '../../format/manifest.ts';
import { FuseDeviceError, MountpointError, NotRootError } from '../../fuse/errors.ts';
import { checkMountpoint, findMount, readMountinfo, unmount } from '../../fuse/mount.ts';
import { runKeeper } from '../../reader/keeper.ts';
import { jitForMirrors, readerNodeFlags, spawnReader } from '../../reader/launch.ts';
import { errorMessage, ListenAddress, type ReaderSpec, type ReadyMessage, reportReady } from '../../reader/spec.ts';
import { formatRanking } from '../../fetch/rank.ts';
import { formatBytes, parseSize } from '../../util/size.ts';
import { type Command, flag, int, noteNewFolder, printJson, required, str } from '../command.ts';
import { MIRROR_OPTIONS, mirrorSources } from '../mirrorargs.ts';
import { splitCredentials } from '../../store/auth.ts';

function preflight(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new NotRootError(`hfk mount needs root (FUSE with allow_other, and loop mounts after it): running as uid ${process.getuid()}`);
  }
  if (!fs.existsSync('/dev/fuse')) {
    throw new FuseDeviceError('/dev/fuse does not exist: the kernel has no FUSE support loaded');
  }
}

export const mountCommand: Command = {
  name: 'mount',
  summary: 'Mount a remote image lazily: MOUNTPOINT/NAME.img reads blocks from the mirrors on demand.',
  usage: 'MOUNTPOINT --mirrors URL,… --name NAME[@VERSION] --key PREFIX.pub [options]',
  description: `
Then: mount -o loop,ro MOUNTPOINT/NAME.img /somewhere. MOUNTPOINT/.hfk/stats.json
shows what the reader is doing. By default the reader runs in the background
(its log goes to --log) and hfk mount returns once the image is mounted;
hfk umount MOUNTPOINT ends it.

The process that holds the mount (its keeper) serves it through a reader
process of its own: a reader that dies (kill -9, out of memory, a bug) is
replaced within a second and the reads it had in hand are answered by the
next one, so no read fails. hfk mount --upgrade MOUNTPOINT swaps in a reader
from the hfk installed now the same way.`,
  options: {
    name: { type: 'string', arg: 'NAME[@VERSION]', description: 'image to mount (the newest version if none given)' },
    ...MIRROR_OPTIONS,
    key: { type: 'string', arg: 'PREFIX.pub', description: 'public key the manifest must be signed with' },
    cache: { type: 'string', arg: 'DIR', description: 'disk cache folder, made if missing (kept between mounts)' },
    'cache-size': { type: 'string', arg: 'SIZE', description: 'disk cache limit', default: '4G' },
    memory: { type: 'string', arg: 'SIZE', description: 'memory cache of decoded blocks (a file on /dev/shm where it is a tmpfs)', default: '256M' },
    soft: { type: 'boolean', description: 'reads fail (EIO) after --soft-timeout when every mirror fails (default: retry forever)' },
    'soft-timeout': { type: 'string', arg: 'SECONDS', description: 'how long soft mode keeps trying', default: '30' },
    readahead: { type: 'string', arg: 'SIZE', description: "the kernel's readahead on the image file", default: '4M' },
    prefetch: { type: 'string', arg: 'SIZE', description: 'how far the reader fetches ahead of sequential reads (0: off)', default: '8M' },
    connections: { type: 'string', arg: 'N', description: 'keep-alive connections per mirror (each pipelines 8 requests)', default: '4' },
    'verify-threads': { type: 'string', arg: 'N', description: 'worker threads that decompress and verify blocks (0: the main thread does it)', default: '1 with 2 or more CPUs, else 0' },
    foreground: { type: 'boolean', description: 'serve in this process until unmounted or signalled' },
    upgrade: { type: 'boolean', description: 'replace the reader of the hfk mount on MOUNTPOINT by one from the hfk installed now (reads wait, none fail); no other option needed' },
    log: { type: 'string', arg: 'FILE', description: 'log of a background reader', default: '/run/hfk/mount-<hash>.log' },
    metrics: { type: 'string', arg: 'HOST:PORT', description: 'serve Prometheus metrics of the reader on http://HOST:PORT/metrics (e.g. 127.0.0.1:9101)' },
    'ready-fd': { type: 'string', arg: 'FD', description: '(internal) report readiness on this file descriptor' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 1, max: 1 },
  async run(ctx) {
    const mp = ctx.positionals[0]!;
    if (flag(ctx, 'upgrade')) return upgradeReader(ctx, mp);
    const ref = parseImageRef(required(ctx, 'name', 'the image to mount, NAME or NAME@VERSION'), '--name');
    const keyText = required(ctx, 'key', 'the public key (PREFIX.pub) the manifest must be signed with');
    const key = resolvePublicKey(keyText, '--key');
    const src = await mirrorSources(ctx);
    const readyFd = int(ctx, 'ready-fd', 3, 1000);
    const json = flag(ctx, 'json');
    const metrics = str(ctx, 'metrics');
    if (metrics !== undefined && !ListenAddress.safeParse(metrics).success) {
      throw new UsageError(`--metrics must be HOST:PORT, e.g. 127.0.0.1:9101 or [::1]:9101: got '${metrics}'`);
    }
    const fail = (e: unknown): never => {
      if (readyFd !== undefined) reportReady(readyFd, errorMessage(e));
      throw e;
    };
    try {
      preflight();
      await checkMountpoint(mp);
    } catch (e) {
      fail(e);
    }
    const spec: ReaderSpec = {
      mountpoint: path.resolve(mp),
      name: ref.name,
      ...(ref.version ? { version: ref.version } : {}),
      mirrors: src.mirrors,
      ...(src.proxy ? { proxy: src.proxy } : {}),
      ...(src.netrc.length ? { netrc: src.netrc } : {}),
      key: key.raw.toString('base64'),
      ...(str(ctx, 'cache') ? { cacheDir: path.resolve(str(ctx, 'cache')!) } : {}),
      cacheBytes: parseSize(str(ctx, 'cache-size') ?? '4G', '--cache-size'),
      memoryBytes: parseSize(str(ctx, 'memory') ?? '256M', '--memory'),
      mode: flag(ctx, 'soft') ? 'soft' : 'hard',
      softTimeoutMs: (int(ctx, 'soft-timeout', 1, 86_400) ?? 30) * 1000,
      // With two or more cores, one thread decodes and verifies beside the main one (FUSE and the network): a faster cold read (figures: docs/PERFORMANCE.md).
      verifyThreads: int(ctx, 'verify-threads', 0, 16) ?? (os.availableParallelism() >= 2 ? 1 : 0),
      connections: int(ctx, 'connections', 1, 256) ?? 4,
      transfer: src.transfer,
      ...(str(ctx, 'readahead') ? { readAheadKb: Math.round(parseSize(str(ctx, 'readahead')!, '--readahead') / 1024) } : {}),
      ...(str(ctx, 'prefetch') ? { prefetchBytes: parseSize(str(ctx, 'prefetch')!, '--prefetch') } : {}),
      ...(metrics ? { metrics } : {}),
    };

    // Said once, by the command the user ran (not again by the background reader it starts).
    if (spec.cacheDir && readyFd === undefined) noteNewFolder(ctx.io, `--cache ${str(ctx, 'cache')}`, spec.cacheDir);

    if (flag(ctx, 'foreground')) {
      // This process keeps the mount; reader processes serve it, and one that dies is replaced (reader/keeper.ts).
      let failed: Extract<ReadyMessage, { ready: false }> | undefined;
      await runKeeper(
        spec,
        (m) => {
          if (readyFd !== undefined) reportReady(readyFd, m);
          if (!m.ready) failed = m;
          else if (readyFd !== undefined) return;
          else if (json) printJson(ctx.io, m);
          else {
            if (m.ranking) ctx.io.err(formatRanking(m.ranking));
            ctx.io.out(`mounted ${m.image} v${m.version} (${formatBytes(m.size)}) at ${path.join(m.mountpoint, `${m.image}.img`)}; Ctrl-C or hfk umount ${m.mountpoint} to stop\n`);
          }
        },
        {
          argv: [process.execPath, process.argv[1] ?? fileURLToPath(import.meta.url)],
          title: 'hfk-reader',
          log: (line) => ctx.io.err(`${new Date().toISOString()} ${line}\n`),
          unmountOnSignals: true,
          nodeFlags: readerNodeFlags(process.env, jitForMirrors(src.mirrors, src.proxy)),
        },
      );
      if (failed) throw new HfkError(failed.error.code, failed.error.message, failed.error.hint ? { hint: failed.error.hint } : {});
      return 0;
    }

    // Background: the same command with --foreground, reporting on fd 3.
    const logFile = str(ctx, 'log') ?? `/run/hfk/mount-${createHash('sha256').update(spec.mountpoint).digest('hex').slice(0, 8)}.log`;
    if (str(ctx, 'log')) noteNewFolder(ctx.io, `--log ${logFile}`, path.dirname(path.resolve(logFile)));
    fs.mkdirSync(path.dirname(logFile), { recursive: true });
    const logFd = fs.openSync(logFile, 'a', 0o600);
    const script = process.argv[1] ?? fileURLToPath(import.meta.url);
    // Mirrors with credentials go in a private mirror list, not on a command line any user can read.
    const secret = src.mirrors.some((u) => splitCredentials(u).url !== u) ? privateMirrorList(src.mirrors) : undefined;
    const forward = ['mount', spec.mountpoint, '--name', str(ctx, 'name')!, '--key', keyText, ...(secret ? ['--mirrorlist', secret.file] : ['--mirrors', src.mirrors.join(',')])];
    // The proxy: as given (the reader has this environment, so it reads http_proxy and the rest the same way).
    for (const o of ['proxy', 'no-proxy'] as const) if (str(ctx, o) !== undefined) forward.push(`--${o}`, str(ctx, o)!);
    for (const o of ['cache', 'cache-size', 'memory', 'soft-timeout', 'verify-threads', 'connections', 'readahead', 'prefetch', 'metrics', 'config'] as const) if (str(ctx, o)) forward.push(`--${o}`, str(ctx, o)!);
    if (flag(ctx, 'soft')) forward.push('--soft');
    forward.push('--foreground', '--ready-fd', '3');
    let r;
    try {
      r = await spawnReader({ argv: [process.execPath, script, ...forward], logFd, timeoutMs: 300_000, jit: jitForMirrors(src.mirrors, src.proxy) });
    } finally {
      fs.closeSync(logFd);
      secret?.remove();
    }
    const m = r.message;
    if (!m.ready) throw new HfkError(m.error.code, m.error.message, m.error.hint ? { hint: m.error.hint } : {});
    if (json) printJson(ctx.io, { ...m, pid: r.pid, log: logFile });
    else {
      if (m.ranking) ctx.io.err(formatRanking(m.ranking));
      ctx.io.out(`mounted ${m.image} v${m.version} (${formatBytes(m.size)}) at ${path.join(m.mountpoint, `${m.image}.img`)}; reader pid ${r.pid}, log ${logFile}\n`);
    }
    return 0;
  },
};

interface KeeperStats {
  pid: number;
  keeper?: { pid: number; generation: number };
}

function readStats(fuse: string): KeeperStats | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(fuse, '.hfk', 'stats.json'), 'utf8')) as KeeperStats;
  } catch {
    return undefined;
  }
}

/** hfk mount --upgrade: the keeper starts a reader from the binary on disk, which takes over (reader/keeper.ts). */
async function upgradeReader(ctx: Parameters<Command['run']>[0], mp: string): Promise<number> {
  const abs = path.resolve(mp);
  const on = findMount(await readMountinfo(), abs);
  if (!on || on.fstype !== 'fuse.hfk') {
    throw new MountpointError('missing', mp, `no hfk mount on ${mp}${on ? ` (it is ${on.fstype})` : ''}`, { hint: 'grep fuse.hfk /proc/self/mounts lists the hfk mounts there are' });
  }
  const before = readStats(abs);
  if (!before?.keeper) {
    throw new HfkError('E_USAGE', `the reader of ${mp} has no keeper to upgrade it (it was started by an older hfk)`, { hint: `remount it: hfk umount ${mp}, then hfk mount again` });
  }
  process.kill(before.keeper.pid, 'SIGUSR1');
  const deadline = Date.now() + 120_000;
  for (;;) {
    const now = readStats(abs);
    if (now?.keeper && now.keeper.generation > before.keeper.generation && now.pid !== before.pid) {
      const out = { mountpoint: abs, keeper: before.keeper.pid, previousReader: before.pid, reader: now.pid, generation: now.keeper.generation };
      if (flag(ctx, 'json')) printJson(ctx.io, out);
      else ctx.io.out(`${abs}: reader ${before.pid} replaced by ${now.pid} (keeper ${before.keeper.pid})\n`);
      return 0;
    }
    if (Date.now() > deadline) {
      throw new HfkError('E_TIMEOUT', `no new reader took over ${mp} within 120 s`, { hint: `see the keeper's log (hfk mount --log, default /run/hfk/mount-*.log)` });
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

export const umountCommand: Command = {
  name: 'umount',
  summary: 'Unmount an image mounted by hfk mount; its reader then exits.',
  usage: 'MOUNTPOINT [--lazy] [--json]',
  options: {
    lazy: { type: 'boolean', description: 'detach now even if in use (a loop mount on it); the reader exits when the last user is gone' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
  positionals: { min: 1, max: 1 },
  async run(ctx) {
    const mp = ctx.positionals[0]!;
    const abs = path.resolve(mp);
    const on = findMount(await readMountinfo(), abs);
    if (!on) {
      throw new MountpointError('missing', mp, `nothing is mounted on ${mp}`, {
        hint: 'check the folder: grep fuse.hfk /proc/self/mounts lists the hfk mounts there are',
      });
    }
    if (on.fstype !== 'fuse.hfk') throw new UsageError(`${mp} is a ${on.fstype} mount, not one of hfk's (fuse.hfk)`);
    const lazy = flag(ctx, 'lazy');
    await unmount(abs, { lazy });
    if (flag(ctx, 'json')) printJson(ctx.io, { unmounted: abs, lazy });
    else ctx.io.out(`unmounted ${abs}\n`);
    return 0;
  },
};

/** A mirror list only this user can read, removed once the reader has started. */
function privateMirrorList(mirrors: readonly string[]): { file: string; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hfk-mirrors-'));
  const file = path.join(dir, 'mirrors.txt');
  fs.writeFileSync(file, `${mirrors.join('\n')}\n`, { mode: 0o600 });
  return { file, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
