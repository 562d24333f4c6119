// What every boot entry shares: the menu entries, the files of a layout,
// the loader files a host provides (and the packages that do), and running
// the tools that write them.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { InputError } from '../errors.ts';

export interface MenuEntry {
  /** Label/id in the loader's config (letters, digits, -). */
  id: string;
  title: string;
  params: string[];
}

/** Where a loader finds the kernel and the initrd. */
export interface EntryFiles {
  kernel: string;
  initrd: string;
}

/** A GRUB string literal: single quotes, with ' written as '\''. */
export function grubQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** Where a host keeps a loader file, and the Debian package that puts it there. */
export interface LoaderSource {
  path: string;
  package: string;
}

/** Throws an InputError naming every missing file and the packages that provide them. */
export function checkLoaders<K extends string>(needed: readonly K[], loaders: Readonly<Record<K, LoaderSource>>, exists: (p: string) => boolean = existsSync): void {
  const missing = needed.filter((f) => !exists(loaders[f].path));
  if (!missing.length) return;
  const packages = [...new Set(missing.map((f) => loaders[f].package))];
  throw new InputError(`boot loader file${missing.length > 1 ? 's' : ''} missing: ${missing.map((f) => `${loaders[f].path} (${f}, from package ${loaders[f].package})`).join(', ')}`, {
    hint: `apt-get install ${packages.join(' ')}`,
  });
}

/** A file of a layout: copied from a host file, or written from text. */
export type TreeFile = { path: string; from: string } | { path: string; content: string };

/** Runs a tool; says which package to install when it is not there. Injected in tests. */
export type Runner = (tool: string, args: string[], env: NodeJS.ProcessEnv) => void;

/** The Debian package of each tool the entries run, for the install hint. */
const TOOL_PACKAGES: Readonly<Record<string, string>> = { 'mkfs.vfat': 'dosfstools', mmd: 'mtools', mcopy: 'mtools', objcopy: 'binutils', sbsign: 'sbsigntool', sbverify: 'sbsigntool' };

export const runTool: Runner = (tool, args, env) => {
  try {
    execFileSync(tool, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT') throw new InputError(`${tool} is not installed`, { hint: `apt-get install ${TOOL_PACKAGES[tool] ?? tool}` });
    throw new InputError(`${tool} failed: ${err.stderr?.toString().trim().split('\n').slice(-5).join('\n') || err.message}`, { cause: e });
  }
};
