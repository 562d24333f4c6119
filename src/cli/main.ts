// hfk: the command-line tool. Each subcommand lives in ./commands/.

import { describeError, HfkError } from '../errors.ts';
import { type Command, helpText, type Output, parseCommandArgs, stdio } from './command.ts';
import { diffCommand } from './commands/diff.ts';
import { gcCommand } from './commands/gc.ts';
import { getCommand } from './commands/get.ts';
import { keygen } from './commands/keygen.ts';
import { listCommand } from './commands/list.ts';
import { mkinitrdCommand } from './commands/mkinitrd.ts';
import { mirrorsCommand } from './commands/mirrors.ts';
import { mountCommand, umountCommand } from './commands/mount.ts';
import { promoteCommand } from './commands/promote.ts';
import { publishCommand } from './commands/publish.ts';
import { reportCommand } from './commands/report.ts';
import { serveCommand } from './commands/serve.ts';
import { verifyCommand } from './commands/verify.ts';

declare const HFK_VERSION: string;
export const VERSION = typeof HFK_VERSION === 'string' ? HFK_VERSION : 'dev';

export const COMMANDS: Command[] = [keygen, publishCommand, verifyCommand, diffCommand, gcCommand, listCommand, promoteCommand, serveCommand, mirrorsCommand, getCommand, mountCommand, umountCommand, mkinitrdCommand, reportCommand];

function overview(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    'hfk — boot an operating system from plain HTTP mirrors',
    '',
    'Usage: hfk COMMAND [options]      hfk COMMAND --help',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}${c.summary}`),
    '',
    'Docs: README.md, docs/FORMAT.md (the store), docs/BOOT.md (boot entries)',
    '',
  ].join('\n');
}

export async function main(argv: string[], io: Output = stdio()): Promise<number> {
  const [name, ...rest] = argv;
  // (internal) a reader process started by hfk mount's keeper (reader/keeper.ts)
  if (name === '--reader-child') {
    await (await import('../reader/child.ts')).readerChild();
    return 0;
  }
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const sub = name === 'help' ? COMMANDS.find((c) => c.name === rest[0]) : undefined;
    io.out(sub ? helpText('hfk', sub) : overview());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V' || name === '-v') {
    io.out(`hfk ${VERSION} (node ${process.versions.node})\n`);
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    const near = COMMANDS.filter((c) => c.name.startsWith(name.slice(0, 2))).map((c) => c.name);
    io.err(`hfk: unknown command '${name}'${near.length ? ` (did you mean ${near.join(' or ')}?)` : ''}\nrun hfk --help for the list of commands\n`);
    return 2;
  }
  const json = rest.includes('--json');
  try {
    const parsed = parseCommandArgs('hfk', cmd, rest);
    if (parsed === 'help') {
      io.out(helpText('hfk', cmd));
      return 0;
    }
    return await cmd.run({ ...parsed, io });
  } catch (e) {
    const code = e instanceof HfkError ? e.code : 'E_INTERNAL';
    if (json) {
      io.out(`${JSON.stringify({ ok: false, error: { code, message: e instanceof Error ? e.message : String(e), ...(e instanceof HfkError && e.hint ? { hint: e.hint } : {}) } }, null, 2)}\n`);
    }
    io.err(`hfk ${cmd.name}: ${describeError(e)}\n`);
    // Not one of hfk's own errors: a bug. The trace is what a report of it needs.
    if (!(e instanceof HfkError) && e instanceof Error && e.stack) io.err(`this is a bug in hfk; please report it with this trace:\n${e.stack}\n`);
    return code === 'E_USAGE' ? 2 : 1;
  }
}

