// Entry point of the single executable (dist/hfk, Node's single executable
// applications): the executable is Node and hfk at once, so it takes no
// script argument. hfk starts copies of itself as [execPath, argv[1],
// ARGS…], with Node options before argv[1] for a reader; in a copy those
// arrive as arguments, and are taken off here before the CLI sees them.

import { realpathSync } from 'node:fs';
import { basename } from 'node:path';
import { setFlagsFromString } from 'node:v8';

/** Whether `arg` names this executable: its path, or its bare name as found on PATH. */
function isSelf(arg: string): boolean {
  if (!arg.includes('/')) return arg === basename(process.execPath);
  try {
    return realpathSync(arg) === realpathSync(process.execPath);
  } catch {
    return false;
  }
}

/**
 * The CLI's arguments from a single executable's: leading Node options and
 * then the executable's own path, as hfk passes them to a copy of itself,
 * are dropped; the options come back as `flags`.
 */
export function seaArguments(args: readonly string[]): { args: string[]; flags: string[] } {
  let i = 0;
  while (i < args.length && args[i]!.startsWith('--') && !isSelf(args[i]!)) i++;
  if (i < args.length && isSelf(args[i]!)) return { args: args.slice(i + 1), flags: args.slice(0, i) };
  return { args: [...args], flags: [] };
}

const { args, flags } = seaArguments(process.argv.slice(2));
// V8 options (the reader's JIT and young generation) still apply when set now; Node's own cannot be.
for (const f of flags) setFlagsFromString(f);
process.argv.splice(2, Infinity, ...args);
void import('./hfk.ts');
