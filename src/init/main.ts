#!/usr/bin/env node
// hfk-init: the initramfs init (one esbuild bundle, dist/hfk-init.mjs,
// installed as /init with #!/usr/bin/node).
//
//   /init                          as PID 1: boot (boot.ts)
//   hfk-init --dry-run [options]   on a running host: everything that changes nothing (dryrun.ts)
//   hfk-init --reader SPEC.json    the long-lived block reader the boot starts
//
// This file holds the real edges (spawn, execve, /proc) and orders the boot;
// the steps themselves are in boot.ts.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { isMainThread } from 'node:worker_threads';
import { describeError, HfkError } from '../errors.ts';
import { errorMessage, launchReader, reportReady, runReader } from '../reader/reader.ts';
import { BOOT_STEPS, type BootContext, type BootState, earlyMounts, moveMounts, PATHS, type System } from './boot.ts';
import { runDryRun } from './dryrun.ts';
import { makeReport, writeReport } from './report.ts';
import {
  breakShell,
  consoleShell,
  consoleSink,
  emergencyShell,
  fileSink,
  initLogger,
  kmsgSink,
  openKmsg,
  runStep,
  spawnRunner,
  type StageFailure,
  type StepRecord,
  type StepRuntime,
} from './steps.ts';

const USAGE = `Usage:
  hfk-init                          run as the initramfs init (PID 1)
  hfk-init --dry-run [--cmdline "…"] [--config FILE] [--key PUB] [--initrd FILE] [--modules DIR] [--json]
                                    check a boot on this host without changing anything
  hfk-init --reader SPEC.json       (internal) the block reader process
`;

function uptime(): number {
  try {
    return Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  } catch {
    return process.uptime();
  }
}

/**
 * The kernel's uptime when it ran /init: now, less this process's age (Node's
 * own start-up is part of the init's time). Known once /proc is mounted.
 */
function initStartUptime(): number {
  return Math.max(0, uptime() - process.uptime());
}

function kernelRelease(): string {
  try {
    return fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {
    return execFileSync('uname', ['-r']).toString().trim();
  }
}

/** PID 1: boot, and never return. */
async function boot(): Promise<never> {
  const state: BootState = { startedUptime: 0, warnings: [] }; // set once /proc is mounted
  const records: StepRecord[] = [];
  process.env.PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
  const run = spawnRunner({ env: { PATH: process.env.PATH } });
  const write = (t: string) => process.stdout.write(t);
  const shell = consoleShell();
  let log = initLogger([consoleSink()]);
  const emergency = async (failure: StageFailure): Promise<never> => {
    try {
      fs.mkdirSync(PATHS.run, { recursive: true });
      writeReport(
        PATHS.report,
        makeReport(state, records, {
          kernelRelease: kernelRelease(),
          switchRootUptime: null,
          failure: { stage: failure.stage, code: failure.code, message: failure.message, hint: failure.hint ?? null },
        }),
      );
    } catch {
      // the report is a convenience; the shell is what matters now
    }
    return emergencyShell(failure, { write, spawnShell: shell, where: { logFile: PATHS.log, reportFile: PATHS.report } });
  };
  const sys: System = {
    run,
    get log() {
      return log;
    },
    kernelRelease,
    uptime,
    launchReader: () => {
      fs.mkdirSync(PATHS.run, { recursive: true });
      const logFd = fs.openSync(PATHS.readerLog, 'a');
      try {
        // '@' as argv[0]: systemd's mark of a root-storage daemon, spared at shutdown.
        return launchReader({ argv: [process.execPath, process.argv[1]!, '--reader', '-'], argv0: '@hfk-reader', logFd, timeoutMs: 300_000 });
      } finally {
        fs.closeSync(logFd); // the child has its own copy
      }
    },
    execSwitchRoot: (newRoot, init, args) => {
      const execve = (process as unknown as { execve: (file: string, args: string[], env: NodeJS.ProcessEnv) => never }).execve;
      return execve('/bin/busybox', ['switch_root', newRoot, init, ...args], { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', TERM: 'linux' });
    },
  };
  const ctx: BootContext = { sys, state };
  const runtime = (): StepRuntime => ({
    log,
    records,
    breakAt: state.settings?.break,
    shell: (reason) => breakShell(reason, { write, spawnShell: shell }),
    emergency,
  });
  await runStep(earlyMounts, ctx, runtime());
  state.startedUptime = initStartUptime();
  // The reader is a second Node process: start it now, so its start-up runs
  // while the probe, network and mirror stages do; it gets its spec later.
  try {
    state.launched = sys.launchReader();
  } catch {
    // started again (and reported) at the fuse stage
  }
  // /run and /dev exist now: log to the console, the kernel log and a file.
  const kmsg = openKmsg();
  try {
    fs.writeFileSync('/proc/sys/kernel/printk_devkmsg', 'on\n');
  } catch {
    // locked by printk.devkmsg=
  }
  const debug = /(^|\s)hfk\.debug(\s|=|$)/.test(fs.readFileSync('/proc/cmdline', 'utf8'));
  log = initLogger([consoleSink(), ...(kmsg ? [kmsgSink(kmsg)] : []), fileSink(PATHS.log)], { debug });
  log.info(`hfk-init: kernel ${kernelRelease()}, started at ${state.startedUptime.toFixed(2)} s of uptime, node ${process.version}`);
  for (const s of BOOT_STEPS) await runStep(s, ctx, runtime());

  // switch_root: the last step cannot report its own end (the process is
  // replaced), so it is timed and written into the report before it runs.
  const t0 = performance.now();
  if (runtime().breakAt === 'switchroot') await breakShell('hfk.break=switchroot: stopped before switch_root; exit the shell to continue', { write, spawnShell: shell });
  try {
    records.push({ stage: 'switchroot', description: 'move /dev /proc /sys /run into the new root and switch_root', ok: true, elapsedMs: performance.now() - t0 });
    const report = makeReport(state, records, { kernelRelease: kernelRelease(), switchRootUptime: uptime() });
    fs.mkdirSync(PATHS.run, { recursive: true });
    writeReport(PATHS.report, report);
    log.info(`switching to ${state.rootInit} on the ${state.filesystem} image, ${(uptime() - state.startedUptime).toFixed(1)} s after the init started; report: ${PATHS.report}`);
    kmsg?.close();
    await moveMounts(sys);
    return sys.execSwitchRoot(PATHS.newroot, state.rootInit!, state.settings?.initArgs ?? []);
  } catch (e) {
    const failure: StageFailure = {
      stage: 'switchroot',
      description: 'switch_root into the new root',
      message: describeError(e),
      code: e instanceof HfkError ? e.code : 'E_SWITCHROOT',
      hint: 'the new root is mounted at /newroot; look around in the shell',
      elapsedMs: performance.now() - t0,
      error: e,
    } as StageFailure;
    return emergency(failure);
  }
}

/** The reader process: serve until the image is unmounted (normally: never). SPEC is a file, or '-' for stdin. */
async function reader(specFile: string): Promise<void> {
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  // Shutdown signals are not for us: the root filesystem needs us to the end.
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => log(`reader: ignoring ${sig}`));
  try {
    const text = specFile === '-' ? await new Promise<string>((resolve, reject) => {
      let t = '';
      process.stdin.setEncoding('utf8');
      process.stdin.on('data', (d) => (t += d));
      process.stdin.on('end', () => resolve(t));
      process.stdin.on('error', reject);
    }) : fs.readFileSync(specFile, 'utf8');
    if (!text.trim()) return; // the boot ended before it needed us
    const spec = JSON.parse(text);
    await runReader(spec, (m) => reportReady(3, m), log);
  } catch (e) {
    reportReady(3, errorMessage(e));
    log(`reader: ${describeError(e)}`);
    process.exitCode = 1;
  }
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === '--reader' && argv[1]) return reader(argv[1]);
  if (argv.includes('--dry-run')) {
    process.exitCode = await runDryRun(argv.filter((a) => a !== '--dry-run'));
    return;
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  if (process.pid === 1 || argv.includes('--init')) {
    await boot();
    return;
  }
  process.stderr.write(`hfk-init: not PID 1, and no --dry-run given\n${USAGE}`);
  process.exitCode = 2;
}

if (isMainThread) {
  main(process.argv.slice(2)).catch(async (e: unknown) => {
    process.stderr.write(`hfk-init: ${describeError(e)}\n`);
    if (process.pid === 1) {
      // PID 1 must never exit: a shell, forever.
      const shell = consoleShell();
      for (;;) await shell();
    }
    process.exitCode = 1;
  });
}
