// The step framework of hfk-init (u-root's libinit is the model): a stage is
// a small value that knows how to run and how to describe itself; a runner
// orders them, times each, logs one line per stage, stops before the stage
// named by `hfk.break`, and turns a failed stage into a `StageFailure` that
// goes to the emergency shell. PID 1 never exits on its own.
//
// The pure parts (running, timing, failure text) are at the top; the edges
// (writing /dev/kmsg, spawning busybox sh, running commands) sit at the
// bottom, small and injectable.

import { spawn } from 'node:child_process';
import { appendFileSync, closeSync, constants, existsSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { StageName } from '../config/stages.ts';
import { errnoCode, HfkError } from '../errors.ts';

// ---------------------------------------------------------------------------
// Stages (their names, in boot order: STAGES in src/config/stages.ts)

/** What to try when a stage fails and its error carries no hint of its own. */
export const STAGE_HINTS: Readonly<Record<StageName, string>> = {
  early: 'the kernel needs proc, sysfs, devtmpfs and tmpfs built in; read the kernel messages with dmesg',
  config: 'check the kernel command line (cat /proc/cmdline) and /etc/hfk/hfk.yaml',
  probe: 'read dmesg for driver errors and lsmod for what is loaded; the initramfs modules must match uname -r',
  network: 'check the link and the driver (dmesg, ip link), then try ip=dhcp or a static ip=CLIENT::GW:NETMASK::DEV:off',
  mirrors: 'check that a mirror answers from here (wget -O- URL) and the hfk.mirrors, hfk.mirrorlist and hfk.proxy values',
  cache: 'check the device named by hfk.cache (blkid, ls -l /dev/disk); hfk.cache=tmpfs needs no disk',
  manifest: 'check hfk.image (NAME or NAME@VERSION) and that hfk.key is the publisher\'s public key',
  fuse: 'the fuse module must be loaded (lsmod) and /dev/fuse present',
  rootfs: 'the image\'s filesystem must be known to the kernel (cat /proc/filesystems); the loop module must be loaded',
  overlay: 'the overlay module must be loaded (lsmod); check the device named by hfk.overlay',
  switchroot: 'the image must contain /sbin/init; look at the mounts with cat /proc/mounts',
};

// ---------------------------------------------------------------------------
// Steps and the runner

/** One stage of the init: a value that runs and describes itself. */
export interface Step<C = unknown, T = unknown> {
  readonly name: StageName;
  /** One line for the log, e.g. "bring up eth0 with DHCP". */
  describe(): string;
  run(ctx: C): Promise<T>;
}

/** Builds a Step from its parts. */
export function step<C, T>(name: StageName, description: string | (() => string), run: (ctx: C) => Promise<T>): Step<C, T> {
  return {
    name,
    describe: typeof description === 'string' ? () => description : description,
    run,
  };
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** Why a stage failed and what to try: what the emergency shell shows. */
export interface StageFailure {
  readonly stage: StageName;
  readonly description: string;
  /** The error's message (without its hint). */
  readonly message: string;
  /** The error's stable code (HfkError code, errno code, or E_UNEXPECTED). */
  readonly code: string;
  /** What to try: the error's own hint, else the stage's default hint. */
  readonly hint: string;
  readonly elapsedMs: number;
  readonly error: unknown;
}

/** One line of the boot report per stage run. */
export interface StepRecord {
  readonly stage: StageName;
  readonly description: string;
  readonly ok: boolean;
  readonly elapsedMs: number;
  readonly code?: string;
}

export interface StepRuntime {
  readonly log: Logger;
  /** Interactive shell for `hfk.break`; boot continues when it returns. */
  shell(reason: string): Promise<void>;
  /** Shows the failure and never returns (in PID 1: a respawning shell). */
  emergency(failure: StageFailure): Promise<never>;
  /** Stop before this stage (from `hfk.break=STAGE`). */
  readonly breakAt?: StageName | undefined;
  /** Milliseconds, monotonic. Default: performance.now(). */
  readonly clock?: () => number;
  /** Per-stage hints that replace STAGE_HINTS entries. */
  readonly hints?: Partial<Record<StageName, string>>;
  /** Appended to as stages run (for the boot report). */
  readonly records?: StepRecord[];
}

export function stageFailure(
  stage: StageName,
  description: string,
  error: unknown,
  elapsedMs: number,
  hints: Partial<Record<StageName, string>> = {},
): StageFailure {
  const defaultHint = hints[stage] ?? STAGE_HINTS[stage];
  if (error instanceof HfkError) {
    return { stage, description, message: error.message, code: error.code, hint: error.hint ?? defaultHint, elapsedMs, error };
  }
  if (error instanceof Error) {
    return { stage, description, message: error.message, code: errnoCode(error) ?? 'E_UNEXPECTED', hint: defaultHint, elapsedMs, error };
  }
  return { stage, description, message: String(error), code: 'E_UNEXPECTED', hint: defaultHint, elapsedMs, error };
}

/** The failure as text for a person: what failed, why, and what to try. */
export function formatFailure(f: StageFailure): string {
  const cause = f.message.replace(/\n/g, '\n         ');
  return [
    `hfk: stage '${f.stage}' failed: ${f.description} (after ${Math.round(f.elapsedMs)} ms)`,
    `  cause: ${cause} [${f.code}]`,
    `  try:   ${f.hint}`,
  ].join('\n');
}

function breakReason(stage: StageName, description: string): string {
  return `hfk.break=${stage}: stopped before stage '${stage}' (${description}); exit the shell to continue the boot`;
}

/**
 * Runs one step: honours `breakAt`, logs and times it, and on failure hands
 * a StageFailure to `emergency` (which does not return). Returns the step's
 * value, so the init can thread typed results from stage to stage.
 */
export async function runStep<C, T>(s: Step<C, T>, ctx: C, rt: StepRuntime): Promise<T> {
  const clock = rt.clock ?? (() => performance.now());
  const description = s.describe();
  if (rt.breakAt === s.name) {
    const reason = breakReason(s.name, description);
    rt.log.info(reason);
    await rt.shell(reason);
  }
  rt.log.info(`[${s.name}] ${description} …`);
  const t0 = clock();
  let value: T;
  try {
    value = await s.run(ctx);
  } catch (e) {
    const failure = stageFailure(s.name, description, e, clock() - t0, rt.hints);
    rt.records?.push({ stage: s.name, description, ok: false, elapsedMs: failure.elapsedMs, code: failure.code });
    rt.log.error(formatFailure(failure).replace(/^hfk: /, ''));
    return rt.emergency(failure);
  }
  const elapsedMs = clock() - t0;
  rt.records?.push({ stage: s.name, description, ok: true, elapsedMs });
  rt.log.info(`[${s.name}] ${description} … done in ${Math.round(elapsedMs)} ms`);
  return value;
}

/**
 * Runs steps in order over one shared context. `runtime` is asked again
 * before each step, so what a step learns (hfk.break, hfk.debug) applies to
 * the steps after it.
 */
export async function runSteps<C>(steps: readonly Step<C, unknown>[], ctx: C, runtime: () => StepRuntime): Promise<void> {
  for (const s of steps) await runStep(s, ctx, runtime());
}

// ---------------------------------------------------------------------------
// Logging: console + /dev/kmsg (+ an optional file)

/** Receives each formatted line ("hfk: …") with its level. */
export type LogSink = (level: LogLevel, line: string) => void;

/**
 * A Logger that prefixes "hfk: " and writes every line to every sink; debug
 * lines only when `debug` (hfk.debug) is on. A sink that throws is dropped
 * for that line, never fatal: logging must not take PID 1 down.
 */
export function initLogger(sinks: readonly LogSink[], options: { debug?: boolean } = {}): Logger & { debugEnabled: boolean } {
  const emit = (level: LogLevel, message: string): void => {
    for (const text of message.split('\n')) {
      const line = `hfk: ${text}`;
      for (const sink of sinks) {
        try {
          sink(level, line);
        } catch {
          // a broken console or kmsg must not stop the boot
        }
      }
    }
  };
  const logger = {
    debugEnabled: options.debug ?? false,
    debug: (m: string) => {
      if (logger.debugEnabled) emit('debug', m);
    },
    info: (m: string) => emit('info', m),
    warn: (m: string) => emit('warn', `warning: ${m}`),
    error: (m: string) => emit('error', m),
  };
  return logger;
}

/** syslog priorities for /dev/kmsg records (facility user). */
const KMSG_PRIORITY: Record<LogLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 };
/** The kernel truncates longer records; keep well under LOG_LINE_MAX. */
const KMSG_MAX = 900;

/** One /dev/kmsg record: "<prio>text", one line, bounded. Pure. */
export function kmsgRecord(level: LogLevel, line: string): string {
  const text = line.length > KMSG_MAX ? `${line.slice(0, KMSG_MAX - 1)}…` : line;
  return `<${KMSG_PRIORITY[level]}>${text}\n`;
}

/** Writes raw bytes; each call must be one write(2) (one kmsg record). */
export type RecordWriter = (record: string) => void;

export function kmsgSink(write: RecordWriter): LogSink {
  return (level, line) => write(kmsgRecord(level, line));
}

/**
 * The edge: open /dev/kmsg for writing (never creating it: before devtmpfs
 * is mounted it does not exist); null when it cannot be opened.
 */
export function openKmsg(path = '/dev/kmsg'): (RecordWriter & { close(): void }) | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY);
  } catch {
    return null;
  }
  const writer = (record: string): void => {
    writeSync(fd, record);
  };
  writer.close = () => closeSync(fd);
  return writer;
}

/** Console sink: info/debug to stdout, warnings and errors to stderr. */
export function consoleSink(out: (t: string) => void = (t) => process.stdout.write(t), err: (t: string) => void = (t) => process.stderr.write(t)): LogSink {
  return (level, line) => (level === 'warn' || level === 'error' ? err : out)(`${line}\n`);
}

/** Appends every line to a file (e.g. /run/hfk/init.log), creating its folder. */
export function fileSink(path: string): LogSink {
  let ready = false;
  return (level, line) => {
    if (!ready) {
      mkdirSync(dirname(path), { recursive: true });
      ready = true;
    }
    appendFileSync(path, `${level.padEnd(5)} ${line}\n`);
  };
}

// ---------------------------------------------------------------------------
// Commands (the edge that runs busybox applets)

export interface CommandResult {
  /** Exit status; 127 when the program could not be started; null when killed. */
  readonly code: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Killed because `timeoutMs` passed. */
  readonly timedOut: boolean;
}

export interface CommandOptions {
  timeoutMs?: number;
  env?: Record<string, string>;
}

/** Runs argv[0] with argv[1..]; never throws for a failing program. */
export type CommandRunner = (argv: readonly string[], options?: CommandOptions) => Promise<CommandResult>;

/** The command in a form a person can paste. */
export function formatCommand(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** A one-line summary of why a command failed, for error messages. */
export function commandFailure(argv: readonly string[], r: CommandResult): string {
  const why = r.timedOut ? 'timed out' : r.code === null ? `killed by ${r.signal}` : `exit status ${r.code}`;
  const text = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' / ');
  return `${formatCommand(argv)}: ${why}${text ? `: ${text}` : ''}`;
}

/** The real runner: node:child_process.spawn, output collected. */
export function spawnRunner(defaults: { env?: Record<string, string> } = {}): CommandRunner {
  return (argv, options = {}) =>
    new Promise((resolve) => {
      const [cmd, ...args] = argv;
      if (!cmd) {
        resolve({ code: 127, signal: null, stdout: '', stderr: 'empty command', timedOut: false });
        return;
      }
      const env = options.env ?? defaults.env;
      const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env } : {}) });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let timedOut = false;
      let settled = false;
      const timer =
        options.timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              timedOut = true;
              child.kill('SIGKILL');
            }, options.timeoutMs);
      const finish = (r: CommandResult): void => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        resolve(r);
      };
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      child.on('error', (e) => {
        finish({ code: 127, signal: null, stdout: '', stderr: `${cmd}: ${e.message}`, timedOut: false });
      });
      child.on('close', (code, signal) => {
        finish({
          code,
          signal,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
          timedOut,
        });
      });
    });
}

// ---------------------------------------------------------------------------
// Shells: hfk.break and the emergency shell

/** Where a person finds more, shown under the failure. Pure. */
export function diagnosticsText(where: { logFile?: string; reportFile?: string } = {}): string {
  const lines = ['hfk: to look around:'];
  if (where.logFile) lines.push(`  the init's log:    ${where.logFile}`);
  if (where.reportFile) lines.push(`  the boot report:   ${where.reportFile}`);
  lines.push(
    '  kernel messages:   dmesg | tail -50',
    '  network:           ip addr; ip route; cat /etc/resolv.conf',
    '  modules:           lsmod; cat /proc/filesystems',
    '  command line:      cat /proc/cmdline',
    'hfk: this shell is PID 1\'s child; PID 1 keeps running and starts a new shell when it exits.',
  );
  return lines.join('\n');
}

/** Spawns an interactive shell on the console; resolves with its exit status. */
export type ShellSpawner = () => Promise<number | null>;

export interface EmergencyOptions {
  /** Writes text to the console. */
  write(text: string): void;
  spawnShell: ShellSpawner;
  where?: { logFile?: string; reportFile?: string };
  /** Pause between respawns so a shell that cannot start does not spin. */
  pause?: () => Promise<void>;
}

/**
 * The emergency shell: prints the failure and where to look, then keeps a
 * shell on the console forever. PID 1 must not return, so neither does this.
 * (It spawns rather than execs: the FUSE reader lives in this process.)
 */
export async function emergencyShell(failure: StageFailure, options: EmergencyOptions): Promise<never> {
  const pause = options.pause ?? (() => new Promise<void>((r) => setTimeout(r, 1000)));
  options.write(`\n${formatFailure(failure)}\n${diagnosticsText(options.where)}\n`);
  for (;;) {
    const code = await options.spawnShell();
    options.write(`hfk: the emergency shell exited (status ${code}); starting it again — stage '${failure.stage}' failed, the boot cannot continue.\n`);
    await pause();
  }
}

/** The break shell: one shell; boot goes on when it exits. */
export async function breakShell(reason: string, options: Pick<EmergencyOptions, 'write' | 'spawnShell'>): Promise<void> {
  options.write(`\nhfk: ${reason}\n`);
  await options.spawnShell();
}

/** Whether every program of a chain like `setsid cttyhack sh` is on PATH. */
function chainOnPath(argv: readonly string[], path: string): boolean {
  return argv.every((prog) =>
    prog.includes('/') ? existsSync(prog) : path.split(':').some((dir) => dir !== '' && existsSync(join(dir, prog))),
  );
}

/**
 * The edge: spawn a shell on the inherited console (stdin/stdout/stderr of
 * PID 1 are /dev/console). Each candidate is a chain of programs that exec
 * one another; the first whose programs are all on PATH is used. busybox
 * `setsid cttyhack sh` gives the shell a controlling tty so Ctrl-C works;
 * plain `sh` is the fallback.
 */
export function consoleShell(
  candidates: readonly (readonly string[])[] = [['setsid', 'cttyhack', 'sh'], ['sh']],
  env: Record<string, string> = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/', TERM: 'linux', PS1: '(hfk) \\w # ' },
): ShellSpawner {
  return () =>
    new Promise((resolve) => {
      const argv = candidates.find((c) => chainOnPath(c, env.PATH ?? '')) ?? candidates[candidates.length - 1] ?? ['sh'];
      const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit', env });
      child.on('error', () => resolve(127));
      child.on('exit', (code) => resolve(code));
    });
}
