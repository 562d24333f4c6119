import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../../errors.ts';
import { BootReport } from '../../init/report.ts';
import { bootTimelineSvg, formatBootReport } from '../../init/timeline.ts';
import { writeFileAtomicSync } from '../../util/atomic.ts';
import { type Command, flag, printJson, str } from '../command.ts';

/** Reads and checks a boot report, with messages that name the file. */
export function readBootReport(file: string): BootReport {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(`cannot read the boot report ${file}: ${(e as Error).message}`, {
      hint: 'a booted system has it at /run/hfk/boot-report.json; copy it off the machine to read it here',
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InputError(`${file} is not JSON: ${(e as Error).message}`, { hint: 'give the boot-report.json the init wrote (/run/hfk/boot-report.json)' });
  }
  const r = BootReport.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new InputError(`${file} is not an hfk boot report: ${issue.path.join('.') || '(top)'}: ${issue.message}`, {
      hint: 'hfk report reads the hfk-boot-report/1 file the init writes to /run/hfk/boot-report.json',
    });
  }
  return r.data;
}

export const reportCommand: Command = {
  name: 'report',
  summary: "Show a boot report: the init's stages, the mirror ranking and choice, what was fetched; --svg draws the timeline.",
  usage: 'BOOT-REPORT.json [--json] [--svg FILE]',
  description: `
The init writes the report to /run/hfk/boot-report.json, which the booted
system keeps. --svg draws the boot: the stages as bars on a time axis (seconds
since the kernel started), the blocks fetched over time below them, and a
marker where the reader switched mirrors.`,
  options: {
    json: { type: 'boolean', description: 'print the checked report as JSON' },
    svg: { type: 'string', arg: 'FILE', description: 'also write the boot timeline as an SVG picture to FILE' },
  },
  positionals: { min: 1, max: 1 },
  async run(ctx) {
    const file = ctx.positionals[0]!;
    const r = readBootReport(file);
    const svg = str(ctx, 'svg');
    if (svg) {
      try {
        writeFileAtomicSync(path.resolve(svg), bootTimelineSvg(r));
      } catch (e) {
        throw new InputError(`cannot write the timeline to ${svg}: ${(e as Error).message}`, { hint: 'choose a file in a folder that exists and you may write to' });
      }
    }
    if (flag(ctx, 'json')) printJson(ctx.io, r);
    else {
      ctx.io.out(formatBootReport(r));
      if (svg) ctx.io.out(`\ntimeline: ${svg}\n`);
    }
    return 0;
  },
};
