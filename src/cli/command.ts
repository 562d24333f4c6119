// A small command framework over node:util parseArgs: each command declares
// its options once, and both parsing and --help come from that declaration.

import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { UsageError } from '../errors.ts';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Placeholder shown in help, e.g. DIR. */
  arg?: string;
  description: string;
  /** Shown in help as "(default: …)". */
  default?: string;
}

export interface Output {
  out(text: string): void;
  err(text: string): void;
  /** stderr is a terminal: progress bars are drawn. */
  readonly tty: boolean;
}

export interface CommandContext {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  io: Output;
}

export interface Command {
  name: string;
  summary: string;
  usage: string;
  description?: string;
  options: Record<string, OptionSpec>;
  /** Number of positional arguments allowed. */
  positionals: { min: number; max: number };
  run(ctx: CommandContext): Promise<number>;
}

export function stdio(): Output {
  return {
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    tty: Boolean(process.stderr.isTTY) && process.env.CI !== 'true',
  };
}

export function helpText(prog: string, cmd: Command): string {
  const lines = [`Usage: ${prog} ${cmd.name} ${cmd.usage}`, '', cmd.summary];
  if (cmd.description) lines.push('', cmd.description.trim());
  const opts = Object.entries(cmd.options);
  if (opts.length) {
    lines.push('', 'Options:');
    const rows = opts.map(([name, o]) => {
      const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` ${o.arg ?? 'VALUE'}` : ''}`;
      return [flag, `${o.description}${o.default !== undefined ? ` (default: ${o.default})` : ''}`] as const;
    });
    rows.push(['-h, --help', 'show this help']);
    const w = Math.min(34, Math.max(...rows.map((r) => r[0].length)) + 2);
    for (const [f, d] of rows) lines.push(`  ${f.padEnd(w)}${f.length >= w ? `\n  ${' '.repeat(w)}` : ''}${d}`);
  }
  return `${lines.join('\n')}\n`;
}

export function parseCommandArgs(prog: string, cmd: Command, argv: string[]): Omit<CommandContext, 'io'> | 'help' {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const [name, o] of Object.entries(cmd.options)) {
    options[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    const msg = (e as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    // `--level -1`: parseArgs cannot tell a negative value from a missing one; say it on one line, with the fix.
    const ambiguous = /^Option '(--[\w-]+)(?: <value>)?' argument is ambiguous/.exec(msg);
    if (ambiguous) {
      const value = argv[argv.indexOf(ambiguous[1]!) + 1] ?? '-…';
      throw new UsageError(`${ambiguous[1]} needs a value, and '${value}' looks like an option`, { hint: `a value that starts with '-' goes after '=': ${ambiguous[1]}=${value}` });
    }
    throw new UsageError(msg, { hint: `see ${prog} ${cmd.name} --help` }); // main() names the command
  }
  if (parsed.values.help) return 'help';
  const { min, max } = cmd.positionals;
  const n = parsed.positionals.length;
  if (n < min || n > max) {
    const want = min === max ? `${min}` : max === Infinity ? `at least ${min}` : `${min} to ${max}`;
    const one = (min === max || max === Infinity ? min : max) === 1;
    throw new UsageError(`takes ${want} argument${one ? '' : 's'} (${cmd.usage}): got ${n}${n > max ? `: ${parsed.positionals.slice(max).join(' ')}` : ''}`, {
      hint: `see ${prog} ${cmd.name} --help`,
    });
  }
  return { values: parsed.values as CommandContext['values'], positionals: parsed.positionals };
}

// Typed accessors that fail with a message naming the option.

export function str(ctx: Pick<CommandContext, 'values'>, name: string): string | undefined {
  const v = ctx.values[name];
  if (Array.isArray(v)) return v[v.length - 1];
  return typeof v === 'string' ? v : undefined;
}

export function required(ctx: Pick<CommandContext, 'values'>, name: string, what: string): string {
  const v = str(ctx, name);
  if (v === undefined || v === '') throw new UsageError(`--${name} is required: ${what}`);
  return v;
}

export function flag(ctx: Pick<CommandContext, 'values'>, name: string): boolean {
  return ctx.values[name] === true;
}

export function int(ctx: Pick<CommandContext, 'values'>, name: string, min: number, max: number): number | undefined {
  const v = str(ctx, name);
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}: got '${v}'`);
  }
  return Number(v);
}

/** Comma- or repeat-separated list option: --mirrors a,b --mirrors c. */
export function list(ctx: Pick<CommandContext, 'values'>, name: string): string[] {
  const v = ctx.values[name];
  const items = Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
  return items.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
}

/**
 * Says on stderr that a folder an option names does not exist yet and will
 * be made: a mistyped --cache would otherwise start an empty cache unseen.
 */
export function noteNewFolder(io: Output, option: string, dir: string): void {
  if (!existsSync(dir)) io.err(`${option}: folder ${dir} does not exist yet; creating it\n`);
}

export function printJson(io: Output, value: unknown): void {
  io.out(`${JSON.stringify(value, null, 2)}\n`);
}
