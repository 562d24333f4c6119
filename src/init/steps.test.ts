import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { isStageName, STAGES, type StageName } from '../config/stages.ts';
import { HfkError } from '../errors.ts';
import {
  breakShell,
  commandFailure,
  consoleShell,
  diagnosticsText,
  emergencyShell,
  fileSink,
  formatCommand,
  formatFailure,
  initLogger,
  kmsgRecord,
  kmsgSink,
  type LogLevel,
  openKmsg,
  runStep,
  runSteps,
  spawnRunner,
  STAGE_HINTS,
  type StageFailure,
  step,
  type StepRecord,
  type StepRuntime,
} from './steps.ts';

const dir = mkdtempSync(join(tmpdir(), 'hfk-steps-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Stops the test's "PID 1" where the real one would sit in a shell forever. */
class Halted extends Error {
  readonly failure: StageFailure;
  constructor(failure: StageFailure) {
    super('halted');
    this.failure = failure;
  }
}

function runtime(extra: Partial<StepRuntime> = {}) {
  const lines: string[] = [];
  const shells: string[] = [];
  let now = 0;
  const rt: StepRuntime = {
    log: initLogger([(level, line) => lines.push(`${level} ${line}`)]),
    shell: async (reason) => {
      shells.push(reason);
    },
    emergency: async (failure) => {
      throw new Halted(failure);
    },
    clock: () => now,
    ...extra,
  };
  return { rt, lines, shells, advance: (ms: number) => void (now += ms) };
}

describe('stages', () => {
  test('every stage has a default hint, and names are recognised', () => {
    for (const s of STAGES) expect(STAGE_HINTS[s].length).toBeGreaterThan(10);
    expect(isStageName('network')).toBe(true);
    expect(isStageName('boot')).toBe(false);
  });
});

describe('runSteps', () => {
  test('runs steps in order, times, logs and records each', async () => {
    const records: StepRecord[] = [];
    const { rt, lines, shells, advance } = runtime({ records });
    const ran: string[] = [];
    const ctx = { n: 0 };
    await runSteps(
      [
        step('early', 'mount /proc, /sys, /dev', async (c: typeof ctx) => {
          ran.push('early');
          c.n++;
          advance(12);
        }),
        step('network', () => `bring up the network (n=${ctx.n})`, async () => {
          ran.push('network');
          advance(1500.4);
        }),
      ],
      ctx,
      () => rt,
    );
    expect(ran).toEqual(['early', 'network']);
    expect(shells).toEqual([]);
    expect(lines).toEqual([
      'info hfk: [early] mount /proc, /sys, /dev …',
      'info hfk: [early] mount /proc, /sys, /dev … done in 12 ms',
      'info hfk: [network] bring up the network (n=1) …',
      'info hfk: [network] bring up the network (n=1) … done in 1500 ms',
    ]);
    expect(records).toEqual([
      { stage: 'early', description: 'mount /proc, /sys, /dev', ok: true, elapsedMs: 12 },
      { stage: 'network', description: 'bring up the network (n=1)', ok: true, elapsedMs: 1500.4 },
    ]);
  });

  test('the runtime is asked before each step: what a step learns applies to the next', async () => {
    const { rt, shells } = runtime();
    const learnt: { breakAt?: StageName } = {};
    await runSteps(
      [step('config', 'read the config', async () => void (learnt.breakAt = 'network')), step('network', 'bring up eth0', async () => {})],
      undefined,
      () => ({ ...rt, breakAt: learnt.breakAt }),
    );
    expect(shells).toEqual(["hfk.break=network: stopped before stage 'network' (bring up eth0); exit the shell to continue the boot"]);
  });

  test('runStep returns the value of the step', async () => {
    const { rt } = runtime();
    const v = await runStep(step('config', 'read the config', async () => ({ image: 'debian' })), undefined, rt);
    expect(v).toEqual({ image: 'debian' });
  });

  test('hfk.break: a shell before the named stage, then the boot goes on', async () => {
    const order: string[] = [];
    const { rt, lines } = runtime({
      breakAt: 'network',
      shell: async (reason) => {
        order.push(`shell: ${reason}`);
      },
    });
    await runSteps(
      [step('probe', 'load drivers', async () => void order.push('probe')), step('network', 'bring up eth0', async () => void order.push('network'))],
      undefined,
      () => rt,
    );
    expect(order).toEqual([
      'probe',
      "shell: hfk.break=network: stopped before stage 'network' (bring up eth0); exit the shell to continue the boot",
      'network',
    ]);
    expect(lines).toContain("info hfk: hfk.break=network: stopped before stage 'network' (bring up eth0); exit the shell to continue the boot");
  });

  test('a failed stage becomes a StageFailure for the emergency shell; later stages do not run', async () => {
    const records: StepRecord[] = [];
    const { rt, lines, advance } = runtime({ records });
    const ran: string[] = [];
    const err = new HfkError('E_NO_CARRIER', 'no carrier on eth0 after 30 s: the link is down', { hint: 'plug in the cable' });
    const p = runSteps(
      [
        step('network', 'bring up the network', async () => {
          advance(30_000);
          throw err;
        }),
        step('mirrors', 'rank mirrors', async () => void ran.push('mirrors')),
      ],
      undefined,
      () => rt,
    );
    const halted = await p.then(
      () => undefined,
      (e: unknown) => e as Halted,
    );
    expect(halted).toBeInstanceOf(Halted);
    expect(halted!.failure).toEqual({
      stage: 'network',
      description: 'bring up the network',
      message: 'no carrier on eth0 after 30 s: the link is down',
      code: 'E_NO_CARRIER',
      hint: 'plug in the cable',
      elapsedMs: 30_000,
      error: err,
    });
    expect(ran).toEqual([]);
    expect(records).toEqual([{ stage: 'network', description: 'bring up the network', ok: false, elapsedMs: 30_000, code: 'E_NO_CARRIER' }]);
    expect(lines.slice(-3)).toEqual([
      "error hfk: stage 'network' failed: bring up the network (after 30000 ms)",
      'error hfk:   cause: no carrier on eth0 after 30 s: the link is down [E_NO_CARRIER]',
      'error hfk:   try:   plug in the cable',
    ]);
  });

  test.each([
    [Object.assign(new Error("ENOENT: no such file or directory, open '/dev/fuse'"), { code: 'ENOENT' }), 'ENOENT', STAGE_HINTS.fuse],
    [new TypeError('x is not a function'), 'E_UNEXPECTED', STAGE_HINTS.fuse],
    [new HfkError('E_X', 'no hint here'), 'E_X', STAGE_HINTS.fuse],
    ['a thrown string', 'E_UNEXPECTED', STAGE_HINTS.fuse],
  ])('failures without a hint of their own get the stage\'s: %s', async (thrown, code, hint) => {
    const { rt } = runtime();
    const halted = await runStep(step('fuse', 'start the FUSE reader', async () => { throw thrown; }), undefined, rt).then(
      () => undefined,
      (e: unknown) => e as Halted,
    );
    expect(halted!.failure).toMatchObject({ stage: 'fuse', code, hint });
  });

  test('per-stage hints can be replaced', async () => {
    const { rt } = runtime({ hints: { fuse: 'try hfk.debug' } });
    const halted = await runStep(step('fuse', 'x', async () => { throw new Error('boom'); }), undefined, rt).then(
      () => undefined,
      (e: unknown) => e as Halted,
    );
    expect(halted!.failure.hint).toBe('try hfk.debug');
  });

  test('formatFailure indents a multi-line cause', () => {
    const f: StageFailure = { stage: 'config', description: 'read the config', message: 'a.yaml:1: x\na.yaml:2: y', code: 'E_CONFIG', hint: 'fix it', elapsedMs: 3.6, error: null };
    expect(formatFailure(f)).toBe(
      "hfk: stage 'config' failed: read the config (after 4 ms)\n  cause: a.yaml:1: x\n         a.yaml:2: y [E_CONFIG]\n  try:   fix it",
    );
  });
});

describe('logging', () => {
  test('initLogger prefixes, splits lines, gates debug, survives a broken sink', () => {
    const got: string[] = [];
    const log = initLogger(
      [
        () => {
          throw new Error('console gone');
        },
        (level, line) => got.push(`${level}|${line}`),
      ],
      { debug: false },
    );
    log.info('one\ntwo');
    log.debug('hidden');
    log.warn('careful');
    log.error('bad');
    log.debugEnabled = true;
    log.debug('shown');
    expect(got).toEqual(['info|hfk: one', 'info|hfk: two', 'warn|hfk: warning: careful', 'error|hfk: bad', 'debug|hfk: shown']);
  });

  test.each([
    ['info', 'hfk: hello', '<6>hfk: hello\n'],
    ['error', 'hfk: bad', '<3>hfk: bad\n'],
    ['warn', 'hfk: w', '<4>hfk: w\n'],
    ['debug', 'hfk: d', '<7>hfk: d\n'],
  ] as [LogLevel, string, string][])('kmsgRecord(%s)', (level, line, record) => {
    expect(kmsgRecord(level, line)).toBe(record);
  });

  test('kmsg records are bounded', () => {
    const r = kmsgRecord('info', 'x'.repeat(5000));
    expect(r.length).toBeLessThan(1000);
    expect(r.endsWith('…\n')).toBe(true);
  });

  test('kmsg: one write per record, through a file standing in for /dev/kmsg', () => {
    const path = join(dir, 'kmsg');
    expect(openKmsg(path)).toBeNull(); // never created: /dev/kmsg before devtmpfs is mounted
    writeFileSync(path, '');
    const w = openKmsg(path)!;
    const log = initLogger([kmsgSink(w)]);
    log.info('[probe] load drivers …');
    log.warn('erofs missing');
    w.close();
    expect(readFileSync(path, 'utf8')).toBe('<6>hfk: [probe] load drivers …\n<4>hfk: warning: erofs missing\n');
    expect(openKmsg(join(dir, 'no/such/dir/kmsg'))).toBeNull();
  });

  test('fileSink creates its folder and appends', () => {
    const path = join(dir, 'run/hfk/init.log');
    const log = initLogger([fileSink(path)]);
    log.info('a');
    log.error('b');
    expect(readFileSync(path, 'utf8')).toBe('info  hfk: a\nerror hfk: b\n');
  });
});

describe('commands', () => {
  test('formatCommand quotes what a shell would split', () => {
    expect(formatCommand(['ip', 'addr', 'add', '10.0.2.15/24', 'dev', 'eth0'])).toBe('ip addr add 10.0.2.15/24 dev eth0');
    expect(formatCommand(['sh', '-c', "echo 'x y'"])).toBe(`sh -c 'echo '\\''x y'\\'''`);
  });

  test('commandFailure says why and shows the last lines of output', () => {
    const r = { code: 1, signal: null, stdout: '', stderr: 'a\nb\nc\nd\n', timedOut: false };
    expect(commandFailure(['x'], r)).toBe('x: exit status 1: b / c / d');
    expect(commandFailure(['x'], { ...r, stderr: '', timedOut: true, code: null, signal: 'SIGKILL' })).toBe('x: timed out');
    expect(commandFailure(['x'], { ...r, stderr: '', code: null, signal: 'SIGSEGV' })).toBe('x: killed by SIGSEGV');
  });

  test('spawnRunner runs a real program and collects its output', async () => {
    const run = spawnRunner();
    expect(await run(['sh', '-c', 'echo out; echo err >&2; exit 3'])).toEqual({ code: 3, signal: null, stdout: 'out\n', stderr: 'err\n', timedOut: false });
    expect(await run(['sh', '-c', 'echo "$HFK_X"'], { env: { HFK_X: 'set', PATH: process.env.PATH ?? '' } })).toMatchObject({ code: 0, stdout: 'set\n' });
  });

  test('spawnRunner: a missing program is status 127, a hung one is killed at its timeout', async () => {
    const run = spawnRunner();
    expect(await run(['/nonexistent/hfk-no-such-program'])).toMatchObject({ code: 127, stderr: expect.stringContaining('ENOENT') });
    expect(await run([])).toMatchObject({ code: 127 });
    expect(await run(['sleep', '30'], { timeoutMs: 50 })).toMatchObject({ code: null, signal: 'SIGKILL', timedOut: true });
  });
});

describe('shells', () => {
  const failure: StageFailure = {
    stage: 'mirrors', description: 'rank 3 mirrors', message: 'no mirror answered', code: 'E_BROKEN', hint: 'check hfk.mirrors', elapsedMs: 10, error: null,
  };

  test('the emergency shell shows the failure and where to look, and respawns the shell forever', async () => {
    const written: string[] = [];
    let spawns = 0;
    let third!: () => void;
    const thirdSpawn = new Promise<void>((r) => (third = r));
    const never = emergencyShell(failure, {
      write: (t) => written.push(t),
      where: { logFile: '/run/hfk/init.log', reportFile: '/run/hfk/boot.json' },
      pause: async () => {},
      spawnShell: async () => {
        spawns++;
        if (spawns === 3) {
          third();
          return new Promise<number | null>(() => {}); // the person is still typing
        }
        return spawns === 1 ? 0 : 127;
      },
    });
    let returned = false;
    void never.then(() => (returned = true));
    await thirdSpawn;
    expect(spawns).toBe(3);
    expect(returned).toBe(false);
    const text = written.join('');
    expect(text).toContain("hfk: stage 'mirrors' failed: rank 3 mirrors (after 10 ms)\n  cause: no mirror answered [E_BROKEN]\n  try:   check hfk.mirrors\n");
    expect(text).toContain("the init's log:    /run/hfk/init.log");
    expect(text).toContain('the boot report:   /run/hfk/boot.json');
    expect(text).toContain('dmesg');
    expect(text).toContain('ip addr');
    expect(written.filter((t) => t.startsWith('hfk: the emergency shell exited'))).toEqual([
      "hfk: the emergency shell exited (status 0); starting it again — stage 'mirrors' failed, the boot cannot continue.\n",
      "hfk: the emergency shell exited (status 127); starting it again — stage 'mirrors' failed, the boot cannot continue.\n",
    ]);
  });

  test('diagnosticsText leaves out what it does not know', () => {
    expect(diagnosticsText()).not.toContain('log:');
    expect(diagnosticsText()).toContain('cat /proc/cmdline');
  });

  test('the break shell runs once and returns', async () => {
    const written: string[] = [];
    let spawns = 0;
    await breakShell('hfk.break=fuse: stopped', { write: (t) => written.push(t), spawnShell: async () => ++spawns });
    expect(spawns).toBe(1);
    expect(written).toEqual(['\nhfk: hfk.break=fuse: stopped\n']);
  });

  test('consoleShell uses the first candidate whose programs are all on PATH', async () => {
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
    expect(await consoleShell([['hfk-no-such-applet', 'true'], ['false']], env)()).toBe(1);
    expect(await consoleShell([['true']], env)()).toBe(0);
    expect(await consoleShell([['/nonexistent/sh']], env)()).toBe(127);
  });
});
