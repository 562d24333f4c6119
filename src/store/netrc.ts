// netrc files (~/.netrc, or the config's `netrc:`): logins for private
// mirrors given without credentials in their URL, read as curl
// --netrc-optional reads them. Parsing is pure; loadNetrc is the edge.

import { readFileSync } from 'node:fs';
import { errnoCode, InputError } from '../errors.ts';

/** One `machine` entry (or the `default` one, with machine undefined). */
export interface NetrcEntry {
  machine?: string | undefined;
  login?: string | undefined;
  password?: string | undefined;
}

/**
 * Parses netrc text: `machine NAME`, `default`, then `login`, `password`,
 * `account` tokens; `macdef NAME` skips its body up to a blank line; `#`
 * starts a comment; a token may be quoted ("a b", with \" and \\). Tokens
 * after `default` belong to it. Unknown tokens are skipped, as curl does.
 */
export function parseNetrc(text: string): NetrcEntry[] {
  const out: NetrcEntry[] = [];
  let cur: NetrcEntry | undefined;
  let i = 0;
  const n = text.length;
  const token = (): string | undefined => {
    for (;;) {
      while (i < n && /\s/.test(text[i]!)) i++;
      if (i >= n) return undefined;
      if (text[i] !== '#') break;
      while (i < n && text[i] !== '\n') i++;
    }
    if (text[i] === '"') {
      let s = '';
      i++;
      while (i < n && text[i] !== '"') {
        if (text[i] === '\\' && i + 1 < n) i++;
        s += text[i++];
      }
      i++;
      return s;
    }
    const start = i;
    while (i < n && !/\s/.test(text[i]!)) i++;
    return text.slice(start, i);
  };
  for (let t = token(); t !== undefined; t = token()) {
    switch (t) {
      case 'machine':
        cur = { machine: token()?.toLowerCase() };
        out.push(cur);
        break;
      case 'default':
        cur = {};
        out.push(cur);
        break;
      case 'login':
      case 'password': {
        const v = token();
        if (cur && v !== undefined) cur[t] = v;
        break;
      }
      case 'account':
        token();
        break;
      case 'macdef': {
        token();
        const end = text.indexOf('\n\n', i);
        i = end < 0 ? n : end + 2;
        break;
      }
      default:
        break;
    }
  }
  return out;
}

/**
 * The login for `host` (and `user`, when the URL names one): the first
 * `machine` entry for the host, else the `default` entry.
 */
export function netrcLogin(entries: readonly NetrcEntry[], host: string, user?: string): NetrcEntry | undefined {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  const fits = (e: NetrcEntry) => e.password !== undefined && (user === undefined || e.login === user);
  return entries.find((e) => e.machine === h && fits(e)) ?? entries.find((e) => e.machine === undefined && fits(e));
}

/**
 * Reads a netrc file; when `optional` (~/.netrc) one that is missing, or
 * out of reach (another user's HOME, as under setpriv or sudo -u), is no
 * entries; else an error naming it.
 */
export function loadNetrc(path: string, options: { optional?: boolean } = {}): NetrcEntry[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (options.optional && ['ENOENT', 'EACCES', 'ENOTDIR'].includes(errnoCode(e) ?? '')) return [];
    throw new InputError(`the netrc file ${path} ${errnoCode(e) === 'ENOENT' ? 'does not exist' : `cannot be read: ${(e as Error).message}`}`, {
      hint: 'fix the netrc: setting, or create the file (machine HOST login USER password PASS)',
    });
  }
  return parseNetrc(text);
}
