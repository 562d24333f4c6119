import { describe, expect, it } from 'vitest';
import { parseCmdline, resolveBootSettings } from '../config/cmdline.ts';
import { defaultConfig } from '../config/config.ts';
import type { BootContext, System } from './boot.ts';
import { runBootSteps } from './pid1.ts';
import { initLogger, type LogLevel, step, type StepRuntime } from './steps.ts';

const BASE = 'console=ttyS0 hfk.image=debian-12 hfk.mirrors=http://10.0.2.2:8080/hfk/';

/**
 * Boots two steps with a log that records its lines: a config step that
 * parses `cmdline` as the real one does, and a step that writes a debug line.
 */
async function debugLinesOf(cmdline: string): Promise<string[]> {
  const lines: Array<[LogLevel, string]> = [];
  const log = initLogger([(level, line) => lines.push([level, line])]);
  const ctx: BootContext = { sys: { log } as unknown as System, state: { startedUptime: 0, warnings: [] } };
  const config = step<BootContext, void>('config', 'read the kernel command line', async ({ state }) => {
    state.settings = resolveBootSettings(parseCmdline(cmdline), defaultConfig());
  });
  const probe = step<BootContext, void>('probe', 'probe hardware', async ({ sys }) => sys.log.debug('probe details'));
  const runtime = (): StepRuntime => ({
    log,
    shell: async () => {},
    emergency: async (f) => {
      throw new Error(`stage ${f.stage} failed: ${f.message}`);
    },
  });
  await runBootSteps([config, probe], ctx, log, runtime);
  return lines.filter(([level]) => level === 'debug').map(([, line]) => line);
}

describe('runBootSteps: debug lines follow hfk.debug as cmdline.ts parses it', () => {
  it.each([
    ['hfk.debug', true],
    ['hfk.debug=1', true],
    ['hfk.debug=yes', true],
    ['hfk.debug=0', false],
    ['hfk.debug=false', false],
    ['hfk.debug=no', false],
    ['', false],
  ])('%j → debug %s', async (flag, on) => {
    expect(await debugLinesOf(`${BASE} ${flag}`)).toEqual(on ? ['hfk: probe details'] : []);
  });
});
