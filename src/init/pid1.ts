// hfk-init as PID 1: the real edges (spawn, execve, /proc, the console)
// and the order of the boot; the steps themselves are in boot.ts. main.ts
// loads this module only when it runs as the init.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { describeError, HfkError } from '../errors.ts';
import { launchReader } from '../reader/launch.ts';
import { BOOT_STEPS, type BootContext, type BootState, earlyMounts, moveMounts, PATHS, type System } from './boot.ts';
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
export async function boot(bundleStart: number): Promise<never> {
  const bootStart = performance.now();
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
  // Where Node's start went: its own bootstrap, loading the bundle, loading the boot's modules.
  const sec = (ms: number) => (ms / 1000).toFixed(2);
  log.info(`hfk-init: kernel ${kernelRelease()}, started at ${state.startedUptime.toFixed(2)} s of uptime, node ${process.version} (ready ${sec(performance.nodeTiming.bootstrapComplete)} s, bundle ${sec(bundleStart)} s, boot code ${sec(bootStart)} s after the start)`);
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

