// Which proxy, if any, carries a request: curl's rules for http_proxy,
// https_proxy, all_proxy and no_proxy, as pure functions. The environment is
// read in one place only (the CLI, src/cli/mirrorargs.ts) and turned into
// ProxyRules here; an explicit hfk proxy (--proxy, `proxy:`, hfk.proxy=)
// wins over it. The init (PID 1) has no such environment and gives either
// nothing or its one explicit proxy.

import { UsageError } from '../errors.ts';
import { isIP } from 'node:net';
import { redactUrl } from './auth.ts';

/** Per-scheme proxies and the hosts reached directly. */
export interface ProxyRules {
  /** Proxy for http:// URLs (plain HTTP is forwarded in absolute form, so caching proxies cache). */
  http?: string | undefined;
  /** Proxy for https:// URLs (a CONNECT tunnel). */
  https?: string | undefined;
  /** no_proxy entries: host suffixes, '*', IPs or IPv4 CIDR ranges, each with an optional :PORT. */
  noProxy?: string[] | undefined;
}

/** A proxy for every request (a string), or rules per scheme and host. */
export type ProxySetting = string | ProxyRules;

const DEFAULT_PORT: Record<string, number> = { 'http:': 80, 'https:': 443 };

/** The proxy that carries a request to `url`, or undefined to go direct. */
export function proxyFor(url: string | URL, setting: ProxySetting | undefined): string | undefined {
  if (!setting) return undefined;
  if (typeof setting === 'string') return setting;
  const u = typeof url === 'string' ? new URL(url) : url;
  const proxy = u.protocol === 'https:' ? setting.https : u.protocol === 'http:' ? setting.http : undefined;
  if (!proxy) return undefined;
  const port = u.port ? Number(u.port) : (DEFAULT_PORT[u.protocol] ?? 0);
  return bypassesProxy(u.hostname, port, setting.noProxy ?? []) ? undefined : proxy;
}

/** Whether a setting sends any request through a proxy. */
export function anyProxy(setting: ProxySetting | undefined): boolean {
  return typeof setting === 'string' ? setting !== '' : Boolean(setting?.http || setting?.https);
}

/** Splits a no_proxy value (commas and/or spaces) into entries. */
export function splitNoProxy(text: string): string[] {
  return text
    .split(/[,\s]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * Whether `hostname` (a name, an IPv4 or IPv6 address, bracketed or not) on
 * `port` is reached directly under these no_proxy entries, as curl reads
 * them: '*' matches every host; `example.org` and `.example.org` match it and
 * every name under it; an IP matches itself; `10.0.0.0/8` (IPv4) or
 * `fd00::/8` (IPv6) matches addresses in the range; `HOST:PORT` only that
 * port. Case and a trailing dot do not matter.
 */
export function bypassesProxy(hostname: string, port: number, entries: readonly string[]): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '').toLowerCase();
  for (const raw of entries) {
    const e = parseEntry(raw);
    if (!e) continue;
    if (e.port && e.port !== port) continue;
    if (e.host === '*') return true;
    if (e.bits !== undefined) {
      if (inCidr(host, e.host, e.bits)) return true;
      continue;
    }
    if (host === e.host) return true;
    if (!isIP(host) && !isIP(e.host) && host.endsWith(`.${e.host}`)) return true;
  }
  return false;
}

interface Entry {
  host: string;
  port: number;
  bits?: number;
}

function parseEntry(raw: string): Entry | undefined {
  let t = raw.trim().toLowerCase();
  if (!t) return undefined;
  let port = 0;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (v6) {
    t = v6[1]!;
    port = v6[2] ? Number(v6[2]) : 0;
  } else if ((t.match(/:/g) ?? []).length === 1) {
    const m = /^(.*):(\d+)$/.exec(t);
    if (m) {
      t = m[1]!;
      port = Number(m[2]);
    }
  }
  let bits: number | undefined;
  const cidr = /^(.*)\/(\d{1,3})$/.exec(t);
  if (cidr && isIP(cidr[1]!)) {
    t = cidr[1]!;
    bits = Number(cidr[2]);
  }
  t = t.replace(/^\*?\./, '').replace(/\.$/, '');
  return t ? { host: t, port, ...(bits !== undefined ? { bits } : {}) } : undefined;
}

/** Whether address `host` is in `net`/`bits` (both of the same family). */
function inCidr(host: string, net: string, bits: number): boolean {
  const a = ipBytes(host);
  const b = ipBytes(net);
  if (!a || !b || a.length !== b.length || bits > a.length * 8) return false;
  for (let i = 0; i < bits; i++) {
    const bit = 7 - (i % 8);
    if (((a[i >> 3]! >> bit) & 1) !== ((b[i >> 3]! >> bit) & 1)) return false;
  }
  return true;
}

function ipBytes(ip: string): number[] | undefined {
  const kind = isIP(ip);
  if (kind === 4) return ip.split('.').map(Number);
  if (kind !== 6) return undefined;
  let text = ip;
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (tail) {
    const [a, b, c, d] = tail[1]!.split('.').map(Number);
    text = text.slice(0, -tail[1]!.length) + `${((a! << 8) | b!).toString(16)}:${((c! << 8) | d!).toString(16)}`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const hs = head ? head.split(':') : [];
  const rs = rest ? rest.split(':') : [];
  const groups = rest === undefined ? hs : [...hs, ...Array<string>(8 - hs.length - rs.length).fill('0'), ...rs];
  return groups.flatMap((g) => {
    const n = parseInt(g, 16);
    return [n >> 8, n & 255];
  });
}

/** A proxy URL from the environment or a flag: `HOST:PORT` means http://HOST:PORT, as for curl. */
export function normalizeProxyUrl(text: string, what: string): string {
  const t = text.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(t) ? t : `http://${t}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new UsageError(`${what} is not a proxy URL: got '${redactUrl(t)}'`, { hint: 'give http://HOST:PORT' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new UsageError(`${what} is a ${u.protocol.slice(0, -1)} proxy: hfk speaks to http:// and https:// proxies only (got '${redactUrl(t)}')`, { hint: 'give an HTTP proxy, or unset the variable' });
  }
  return u.href;
}

/**
 * The proxy variables of an environment, as curl reads them: http_proxy
 * (lower case only: HTTP_PROXY may be set by a CGI request's Proxy header),
 * https_proxy or HTTPS_PROXY, all_proxy or ALL_PROXY for a scheme without
 * its own, no_proxy or NO_PROXY. An empty variable counts as unset. Pure.
 */
export function proxyFromEnv(env: Readonly<Record<string, string | undefined>>): ProxyRules {
  const get = (...names: string[]): [string, string] | undefined => {
    for (const n of names) {
      const v = env[n]?.trim();
      if (v) return [n, v];
    }
    return undefined;
  };
  const all = get('all_proxy', 'ALL_PROXY');
  const http = get('http_proxy') ?? all;
  const https = get('https_proxy', 'HTTPS_PROXY') ?? all;
  const no = get('no_proxy', 'NO_PROXY');
  return {
    ...(http ? { http: normalizeProxyUrl(http[1], `the ${http[0]} variable`) } : {}),
    ...(https ? { https: normalizeProxyUrl(https[1], `the ${https[0]} variable`) } : {}),
    ...(no ? { noProxy: splitNoProxy(no[1]) } : {}),
  };
}

/**
 * The proxy setting of a command: an explicit proxy (the flag, else the
 * config's `proxy:`) for every request, reaching the `noProxy` hosts
 * directly; an explicit empty proxy for none; else the environment's rules
 * (an explicit `noProxy` replaces no_proxy). Undefined when nothing is proxied.
 */
export function resolveProxy(o: { explicit?: string | undefined; noProxy?: string[] | undefined; env: ProxyRules }): ProxySetting | undefined {
  if (o.explicit !== undefined) {
    if (o.explicit.trim() === '') return undefined;
    const p = normalizeProxyUrl(o.explicit, '--proxy');
    return o.noProxy?.length ? { http: p, https: p, noProxy: o.noProxy } : p;
  }
  const r: ProxyRules = { ...o.env, ...(o.noProxy ? { noProxy: o.noProxy } : {}) };
  if (!anyProxy(r)) return undefined;
  return r;
}
