// Kernel module metadata, as depmod writes it under /lib/modules/RELEASE:
// modules.alias (glob patterns → module), modules.dep (module → the modules
// it needs), modules.builtin (modules compiled into the kernel) and
// modules.builtin.modinfo (the aliases of those). Parsers are pure; the
// index answers "which modules drive this modalias?" without trying every
// one of the thousands of patterns, and "in which order do I load X?".
// ModuleDb.fromDir is the one edge that reads the files.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode, HfkError } from '../errors.ts';

/** A module's name as the kernel knows it: basename, no .ko(.xz|.zst|.gz), '-' → '_'. */
export function moduleName(pathOrName: string): string {
  const base = pathOrName.slice(pathOrName.lastIndexOf('/') + 1);
  return base.replace(/\.ko(?:\.(?:xz|zst|gz))?$/, '').replace(/-/g, '_');
}

// ---------------------------------------------------------------------------
// fnmatch(3) without flags: * ? [...] [!...] and backslash escapes

const REGEX_SPECIAL = /[.*+?^${}()|[\]\\/]/g;

/**
 * A RegExp that matches exactly what fnmatch(pattern, text, 0) matches:
 * `*` any run (also '/'), `?` one character, `[abc]`, `[a-z]`, `[!x]` or
 * `[^x]` (negation), `]` first in a class is literal, an unclosed `[` is a
 * literal '[', and a backslash makes the next character literal.
 */
export function globToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') {
      re += '[\\s\\S]*';
    } else if (c === '?') {
      re += '[\\s\\S]';
    } else if (c === '\\' && i + 1 < pattern.length) {
      i++;
      re += pattern[i]!.replace(REGEX_SPECIAL, '\\$&');
    } else if (c === '[') {
      let j = i + 1;
      let negate = false;
      if (pattern[j] === '!' || pattern[j] === '^') {
        negate = true;
        j++;
      }
      let body = '';
      let first = true;
      let closed = false;
      for (; j < pattern.length; j++) {
        const d = pattern[j]!;
        if (d === ']' && !first) {
          closed = true;
          break;
        }
        first = false;
        if (d === '\\' && j + 1 < pattern.length) {
          j++;
          body += `\\${pattern[j]!}`.replace(/^\\([A-Za-z0-9])$/, '$1');
        } else if (d === '-' && body !== '' && pattern[j + 1] !== ']' && j + 1 < pattern.length) {
          body += '-';
        } else {
          body += d.replace(/[\]\\^-]/g, '\\$&');
        }
      }
      if (!closed) {
        re += '\\[';
        continue;
      }
      re += `[${negate ? '^' : ''}${body}]`;
      i = j;
    } else {
      re += c.replace(REGEX_SPECIAL, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

// ---------------------------------------------------------------------------
// modules.alias

export interface AliasEntry {
  readonly pattern: string;
  readonly module: string;
}

/** Parses "alias PATTERN MODULE" lines; comments and other lines are skipped. */
export function parseModulesAlias(text: string): AliasEntry[] {
  const out: AliasEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^alias\s+(\S+)\s+(\S+)\s*$/.exec(line);
    if (m) out.push({ pattern: m[1]!, module: moduleName(m[2]!) });
  }
  return out;
}

/**
 * Parses modules.builtin.modinfo (NUL-separated "module.key=value" records)
 * into the aliases of built-in modules.
 */
export function parseBuiltinModinfo(text: string): AliasEntry[] {
  const out: AliasEntry[] = [];
  for (const rec of text.split('\0')) {
    const m = /^([^.=]+)\.alias=(.+)$/.exec(rec);
    if (m) out.push({ pattern: m[2]!, module: moduleName(m[1]!) });
  }
  return out;
}

const WILDCARD = /[*?[\\]/;

interface Indexed {
  readonly order: number;
  readonly entry: AliasEntry;
  regex?: RegExp;
}

/**
 * modules.alias, indexed. Patterns without wildcards go into an exact map;
 * the others are bucketed by their literal prefix (the text before the first
 * wildcard, e.g. "virtio:d00000001v" or "pci:v00001AF4d"). A lookup probes
 * only the buckets whose prefix the modalias starts with, and compiles a
 * pattern the first time it is tried.
 */
export class AliasIndex {
  readonly size: number;
  readonly #exact = new Map<string, Indexed[]>();
  readonly #byPrefix = new Map<string, Indexed[]>();
  readonly #prefixLengths: number[];

  constructor(entries: readonly AliasEntry[]) {
    const lengths = new Set<number>();
    entries.forEach((entry, order) => {
      const at = entry.pattern.search(WILDCARD);
      const item: Indexed = { order, entry };
      if (at < 0) {
        push(this.#exact, entry.pattern, item);
      } else {
        const prefix = entry.pattern.slice(0, at);
        push(this.#byPrefix, prefix, item);
        lengths.add(prefix.length);
      }
    });
    this.#prefixLengths = [...lengths].sort((a, b) => a - b);
    this.size = entries.length;
  }

  /** The modules whose alias matches, in modules.alias order, each once. */
  match(modalias: string): string[] {
    const hits: Indexed[] = [...(this.#exact.get(modalias) ?? [])];
    for (const len of this.#prefixLengths) {
      if (len > modalias.length) break;
      for (const item of this.#byPrefix.get(modalias.slice(0, len)) ?? []) {
        item.regex ??= globToRegExp(item.entry.pattern);
        if (item.regex.test(modalias)) hits.push(item);
      }
    }
    hits.sort((a, b) => a.order - b.order);
    return [...new Set(hits.map((h) => h.entry.module))];
  }
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

// ---------------------------------------------------------------------------
// modules.dep and modules.builtin

export interface DepEntry {
  /** Path relative to /lib/modules/RELEASE, e.g. kernel/fs/fuse/fuse.ko. */
  readonly path: string;
  /** Names of the modules it needs, as modules.dep lists them. */
  readonly deps: readonly string[];
}

/** Parses "path/mod.ko: path/dep.ko …" lines into name → entry. */
export function parseModulesDep(text: string): Map<string, DepEntry> {
  const out = new Map<string, DepEntry>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0 || line.startsWith('#')) continue;
    const path = line.slice(0, colon).trim();
    const deps = line.slice(colon + 1).trim().split(/\s+/).filter((d) => d !== '').map(moduleName);
    out.set(moduleName(path), { path, deps });
  }
  return out;
}

/** Parses modules.builtin (one path per line) into module names. */
export function parseModulesBuiltin(text: string): Set<string> {
  return new Set(text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).map(moduleName));
}

/** A module the kernel cannot load: neither built in nor in modules.dep. */
export class ModulesError extends HfkError {
  override name = 'ModulesError';
  constructor(message: string, hint?: string) {
    super('E_MODULES', message, hint === undefined ? {} : { hint });
  }
}

export interface ModuleDbFiles {
  alias: string;
  dep: string;
  builtin?: string;
  builtinModinfo?: string;
}

export type ModuleStatus = 'builtin' | 'module' | 'unknown';

/** What one kernel's module files say, queryable. */
export class ModuleDb {
  readonly aliases: AliasIndex;
  readonly builtinAliases: AliasIndex;
  readonly dep: ReadonlyMap<string, DepEntry>;
  readonly builtin: ReadonlySet<string>;

  constructor(files: ModuleDbFiles) {
    this.aliases = new AliasIndex(parseModulesAlias(files.alias));
    this.dep = parseModulesDep(files.dep);
    this.builtin = parseModulesBuiltin(files.builtin ?? '');
    this.builtinAliases = new AliasIndex(parseBuiltinModinfo(files.builtinModinfo ?? ''));
  }

  /** The edge: reads the files depmod wrote in `dir` (/lib/modules/RELEASE). */
  static fromDir(dir: string): ModuleDb {
    const read = (name: string, required: boolean): string | undefined => {
      const path = join(dir, name);
      if (!required && !existsSync(path)) return undefined;
      try {
        return readFileSync(path, 'latin1');
      } catch (e) {
        throw new ModulesError(
          `cannot read ${path}: ${errnoCode(e) === 'ENOENT' ? 'it does not exist' : (e as Error).message}`,
          'the initramfs must carry the module files (depmod output) of the kernel it boots with: compare uname -r with ls /lib/modules',
        );
      }
    };
    const builtin = read('modules.builtin', false);
    const builtinModinfo = read('modules.builtin.modinfo', false);
    return new ModuleDb({
      alias: read('modules.alias', true)!,
      dep: read('modules.dep', true)!,
      ...(builtin !== undefined ? { builtin } : {}),
      ...(builtinModinfo !== undefined ? { builtinModinfo } : {}),
    });
  }

  status(name: string): ModuleStatus {
    const n = moduleName(name);
    if (this.builtin.has(n)) return 'builtin';
    if (this.dep.has(n)) return 'module';
    return 'unknown';
  }

  /**
   * Which modules drive a device: `modules` from modules.alias (loadable),
   * `builtin` from modules.builtin.modinfo (already in the kernel).
   */
  resolve(modalias: string): { modules: string[]; builtin: string[] } {
    return { modules: this.aliases.match(modalias), builtin: this.builtinAliases.match(modalias) };
  }

  /**
   * The order to load `name` in: its dependencies first (each after its own),
   * then the module; built-ins left out. modprobe loads a modules.dep line
   * right to left, and so does this. Throws for an unknown module.
   */
  loadOrder(name: string): string[] {
    const root = moduleName(name);
    const order: string[] = [];
    const done = new Set<string>();
    const visiting = new Set<string>();
    const visit = (m: string, from: string | undefined): void => {
      if (done.has(m) || visiting.has(m) || this.builtin.has(m)) return;
      const entry = this.dep.get(m);
      if (!entry) {
        throw new ModulesError(
          from === undefined ? `module ${m} is neither built in nor in modules.dep` : `module ${m}, needed by ${from}, is not in modules.dep`,
          'the kernel may not have it, or the initramfs left it out',
        );
      }
      visiting.add(m);
      for (let i = entry.deps.length - 1; i >= 0; i--) visit(entry.deps[i]!, m);
      visiting.delete(m);
      done.add(m);
      order.push(m);
    };
    visit(root, undefined);
    return order;
  }
}
