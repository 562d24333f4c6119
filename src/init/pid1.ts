// hfk-init as PID 1: the real edges (spawn, execve, /proc, the console)
// and the order of the boot; the steps themselves are in boot.ts. main.ts
// loads this module only when it runs as the init.

import * as fs from 'node:fs';
import { describeError, HfkError } from '../errors.ts';
import { BOOT_STEPS, type BootContext, type BootState, earlyMounts, moveMounts, PATHS, type System } from './boot.ts';
import { makeReport, writeReport } from './report.ts';
import { kernelRelease, machineSystem, SYSTEM_PATH, uptime } from './system.ts';
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
  runSteps,
  spawnRunner,
  type StageFailure,
  type Step,
  type StepRecord,
  type StepRuntime,
} from './steps.ts';

/**
 * The kernel's uptime when it ran /init: now, less this process's age (Node's
 * own start-up is part of the init's time). Known once /proc is mounted.
 */
function initStartUptime(): number {
  return Math.max(0, uptime() - process.uptime());
}

/**
 * Runs the boot's steps in order. Debug lines follow hfk.debug as the config
 * step parsed it (cmdline.ts, the one parser of the command line): off
 * before that step, and off when the command line does not parse.
 */
export function runBootSteps(
  steps: readonly Step<BootContext, unknown>[],
  ctx: BootContext,
  log: { debugEnabled: boolean },
  runtime: () => StepRuntime,
): Promise<void> {
  return runSteps(steps, ctx, () => {
    log.debugEnabled = ctx.state.settings?.debug ?? false;
    return runtime();
  });
}

/** PID 1: boot, and never return. */
export async function boot(bundleStart: number): Promise<never> {
  const bootStart = performance.now();
  const state: BootState = { startedUptime: 0, warnings: [] }; // set once /proc is mounted
  const records: StepRecord[] = [];
  process.env.PATH = SYSTEM_PATH;
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
  const sys: System = machineSystem({ run, log: () => log });
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
  log = initLogger([consoleSink(), ...(kmsg ? [kmsgSink(kmsg)] : []), fileSink(PATHS.log)]);
  // Where Node's start went: its own bootstrap, loading the bundle, loading the boot's modules.
  const sec = (ms: number) => (ms / 1000).toFixed(2);
  log.info(`hfk-init: kernel ${kernelRelease()}, started at ${state.startedUptime.toFixed(2)} s of uptime, node ${process.version} (ready ${sec(performance.nodeTiming.bootstrapComplete)} s, bundle ${sec(bundleStart)} s, boot code ${sec(bootStart)} s after the start)`);
  await runBootSteps(BOOT_STEPS, ctx, log, runtime);

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

