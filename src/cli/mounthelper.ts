// mount.hfk: the helper mount(8) runs for `mount -t hfk SPEC DIR` and fstab
// lines of type hfk, as `/sbin/mount.hfk SPEC DIR [-sfnv] [-o OPTS]`. It
// turns that into `hfk mount DIR --name … --mirrors …` (pure, below) and
// runs the hfk bundle beside it with the same Node.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describeError, UsageError } from '../errors.ts';

/** Where the .deb puts the publisher's key when -o key= is not given. */
export const DEFAULT_KEY = '/etc/hfk/hfk.pub';

/** -o options that are hfk mount options with a value, passed on as --NAME VALUE. */
const VALUE_OPTIONS = new Set(['key', 'config', 'mirrorlist', 'proxy', 'no-proxy', 'cache', 'cache-size', 'memory', 'soft-timeout', 'readahead', 'prefetch', 'connections', 'verify-threads', 'log', 'metrics']);
/** Value options whose empty value means something: proxy= turns proxies off, no-proxy= lists no host. */
const EMPTY_ALLOWED = new Set(['proxy', 'no-proxy']);
/** -o options that are hfk mount flags. */
const FLAG_OPTIONS = new Set(['soft']);
/** Options for mount(8) itself or every filesystem: hfk mounts are always read-only and need none of them. */
const GENERIC_OPTIONS = new Set(['defaults', 'ro', 'rw', 'auto', 'noauto', 'nofail', '_netdev', 'user', 'nouser', 'users', 'owner', 'group', 'suid', 'nosuid', 'dev', 'nodev', 'exec', 'noexec', 'sync', 'async', 'atime', 'noatime', 'relatime', 'norelatime', 'strictatime', 'lazytime', 'nolazytime', 'diratime', 'nodiratime', 'silent', 'loud']);

export interface MountHelperCall {
  /** -f: mount(8) only wants the helper to check its arguments. */
  fake: boolean;
  /** The arguments for `hfk …`. */
  hfkArgs: string[];
}

/**
 * The hfk command for a mount helper call. SPEC is NAME[@VERSION], or
 * NAME[@VERSION]@URL[,URL…] with the mirrors (an http:// or https:// URL
 * starts after the '@'); without mirrors they come from -o config=FILE or
 * mirrorlist=. Unknown -o options are errors, not silently dropped.
 */
export function mountHelperArgs(argv: readonly string[]): MountHelperCall {
  const positionals: string[] = [];
  const options: string[] = [];
  let fake = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-o') {
      const v = argv[++i];
      if (v === undefined) throw new UsageError('mount.hfk: -o needs a value', { hint: 'e.g. -o key=/etc/hfk/hfk.pub,cache=/var/cache/hfk' });
      options.push(...splitOptions(v));
    } else if (a.startsWith('-o')) options.push(...splitOptions(a.slice(2)));
    else if (a === '-t' || a === '-N') i++; // the type (hfk) and a namespace: nothing for hfk to do
    else if (/^-[sfnvrw]+$/.test(a)) fake ||= a.includes('f');
    else if (a.startsWith('-')) throw new UsageError(`mount.hfk: unknown flag '${a}'`, { hint: 'mount(8) calls mount.hfk SPEC DIR [-sfnv] [-o OPTIONS]' });
    else positionals.push(a);
  }
  if (positionals.length !== 2) {
    throw new UsageError(`mount.hfk takes SPEC and DIR: got ${positionals.length} argument${positionals.length === 1 ? '' : 's'}`, {
      hint: 'mount -t hfk NAME[@VERSION]@http://mirror/hfk/ /mnt/hfk (the image appears as /mnt/hfk/NAME.img)',
    });
  }
  const [spec, dir] = positionals as [string, string];
  const m = /^(.*?)@(https?:\/\/.*)$/.exec(spec);
  const name = m ? m[1]! : spec;
  if (name === '') throw new UsageError(`mount.hfk: '${spec}' names no image`, { hint: 'SPEC is NAME[@VERSION][@URL[,URL…]]' });
  const args = ['mount', dir, '--name', name];
  if (m) args.push('--mirrors', m[2]!);
  let key = false;
  for (const o of options) {
    const eq = o.indexOf('=');
    const k = eq < 0 ? o : o.slice(0, eq);
    if (GENERIC_OPTIONS.has(k) || k.startsWith('x-') || k === 'comment') continue;
    if (FLAG_OPTIONS.has(k)) {
      if (eq >= 0) throw new UsageError(`mount.hfk: option '${k}' takes no value: got '${o}'`);
      args.push(`--${k}`);
    } else if (VALUE_OPTIONS.has(k)) {
      if (eq < 0 || (eq === o.length - 1 && !EMPTY_ALLOWED.has(k))) throw new UsageError(`mount.hfk: option '${k}' needs a value: ${k}=…`);
      args.push(`--${k}`, unquote(o.slice(eq + 1)));
      key ||= k === 'key';
    } else {
      throw new UsageError(`mount.hfk: unknown option '${k}'`, { hint: `hfk's options: ${[...VALUE_OPTIONS].map((v) => `${v}=…`).concat([...FLAG_OPTIONS]).join(', ')}` });
    }
  }
  if (!key) args.push('--key', DEFAULT_KEY);
  return { fake, hfkArgs: args };
}

/**
 * Splits a mount option string at the commas outside double quotes, as
 * libmount does: `no-proxy="localhost,10.0.0.0/8",soft` is two options.
 */
export function splitOptions(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of text) {
    if (c === '"') quoted = !quoted;
    if (c === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (quoted) throw new UsageError(`mount.hfk: unbalanced '"' in options '${text}'`, { hint: 'quote a value with commas whole: no-proxy="localhost,10.0.0.0/8"' });
  out.push(cur);
  return out.filter(Boolean);
}

/** A value as written, without the double quotes that kept its commas in. */
function unquote(v: string): string {
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
}

/** Runs the helper: the hfk bundle beside this one, with this Node; returns the exit status for mount(8). */
export function runMountHelper(argv: readonly string[]): number {
  let call: MountHelperCall;
  try {
    call = mountHelperArgs(argv);
  } catch (e) {
    process.stderr.write(`${describeError(e)}\n`);
    return 1; // mount(8): incorrect invocation
  }
  if (call.fake) return 0;
  const hfk = fileURLToPath(new URL('./hfk.mjs', import.meta.url));
  const r = spawnSync(process.execPath, [hfk, ...call.hfkArgs], { stdio: 'inherit' });
  return r.status ?? 32; // killed by a signal: mount(8)'s "mount failure"
}
