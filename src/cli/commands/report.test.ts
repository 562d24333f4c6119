import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../../../test/helpers/tmp.ts';
import { main } from '../main.ts';

const REPORT = {
  format: 'hfk-boot-report/1',
  ok: true,
  failedStage: null,
  error: null,
  kernel: { release: '6.12', cmdline: null },
  uptime: { initStart: 1, switchRoot: 2 },
  stages: [{ stage: 'root', description: 'mount the image', ms: 1000, ok: true }],
  image: null,
  mirrors: { chosen: null, ranking: [], rankingMs: null },
  modules: { loaded: [], builtin: [], failed: [], devices: 0 },
  network: null,
  reader: null,
  fetched: null,
  cache: null,
  warnings: [],
};

async function run(args: string[]) {
  let out = '';
  let err = '';
  const code = await main(['report', ...args], { out: (t) => void (out += t), err: (t) => void (err += t), tty: false });
  return { code, out, err };
}

describe('hfk report', () => {
  it('prints the stages and writes the timeline with --svg', async () => {
    const dir = tempDir('hfk-report-');
    writeFileSync(join(dir, 'boot-report.json'), JSON.stringify(REPORT));
    const r = await run([join(dir, 'boot-report.json'), '--svg', join(dir, 'boot.svg')]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/\n {2}root +1\.00 s +1000 ms {2}mount the image\n/);
    expect(readFileSync(join(dir, 'boot.svg'), 'utf8')).toMatch(/^<\?xml[^]*<svg [^]*data-stage="root"[^]*<\/svg>\n$/);
  });

  it('names the file and the field when it is not a boot report', async () => {
    const dir = tempDir('hfk-report-');
    writeFileSync(join(dir, 'x.json'), JSON.stringify({ ...REPORT, stages: 'none' }));
    const r = await run([join(dir, 'x.json')]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${join(dir, 'x.json')} is not an hfk boot report: stages:`);
  });

  it('has help', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.out).toContain('Usage: hfk report BOOT-REPORT.json [--json] [--svg FILE]');
  });
});
