// The kernel command line: split with the kernel's own quoting rules
// (lib/cmdline.c next_arg), then the hfk.* parameters, ip= and console= are
// validated by one zod schema into BootParams. Pure: /proc/cmdline is read
// in one place, the init's edge (src/init/system.ts).
//
// Parameters:
//   hfk.mirrors=URL,URL,…      mirror base URLs (repeat to add more)
//   hfk.mirrorlist=URL|PATH    a list of mirrors, one per line
//   hfk.image=NAME[@VERSION]   the image to boot (default: newest version)
//   hfk.key=BASE64|PATH        the publisher's public key
//   hfk.proxy=URL              HTTP proxy for every request
//   hfk.cache=SOURCE           tmpfs, /dev/…, LABEL=…, UUID=…
//   hfk.overlay=SOURCE         the same forms
//   hfk.break=STAGE            a shell before that stage (see STAGES)
//   hfk.debug                  debug lines in the log
//   hfk.timeout=SECONDS        how long each wait lasts
//   ip=…                       the kernel's syntax (Documentation/admin-guide/nfs/nfsroot.rst)
//   console=…                  collected, for the boot report
// Everything after a bare `--` belongs to init (initArgs).

import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { HfkError } from '../errors.ts';
import {
  type Config,
  ImageRef,
  keySource,
  mirrorListSource,
  MirrorUrl,
  MountSourceText,
  type MountSource,
  ProxyUrl,
  Seconds,
  StageValue,
} from './config.ts';
import type { StageName } from './stages.ts';

// ---------------------------------------------------------------------------
// Splitting, as the kernel does

export interface CmdlineParam {
  readonly key: string;
  /** undefined for a bare flag (no '='). */
  readonly value: string | undefined;
}

const isSpace = (c: string | undefined): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r';

/**
 * One argument from `pos`, following lib/cmdline.c next_arg: a leading
 * double quote starts a quoted word; quotes toggle "inside" anywhere; the
 * first '=' splits key from value; a value that starts with '"' loses it and
 * a matching closing quote; a word that started with '"' loses its last '"'.
 */
function nextArg(s: string, pos: number): { param: CmdlineParam; next: number } {
  let i = pos;
  let inQuote = false;
  let quoted = false;
  if (s[i] === '"') {
    i++;
    inQuote = true;
    quoted = true;
  }
  const start = i;
  let equals = -1;
  for (; i < s.length; i++) {
    if (isSpace(s[i]) && !inQuote) break;
    if (equals < 0 && s[i] === '=') equals = i;
    if (s[i] === '"') inQuote = !inQuote;
  }
  const end = i;
  let key: string;
  let value: string | undefined;
  let stripped = false;
  if (equals < 0) {
    key = s.slice(start, end);
  } else {
    key = s.slice(start, equals);
    let vstart = equals + 1;
    let vend = end;
    if (s[vstart] === '"') {
      vstart++;
      if (end > start && s[end - 1] === '"') {
        vend = end - 1;
        stripped = true;
      }
    }
    value = s.slice(vstart, Math.max(vstart, vend));
  }
  if (quoted && !stripped && end > start && s[end - 1] === '"') {
    if (value === undefined) key = key.slice(0, -1);
    else value = value.slice(0, -1);
  }
  let next = end < s.length ? end + 1 : end;
  while (isSpace(s[next])) next++;
  return { param: { key, value }, next };
}

/**
 * Splits a command line into parameters; the words after a bare `--` are
 * init's arguments (`key=value` re-joined, quotes removed, as the kernel
 * passes them in argv).
 */
export function splitCmdline(text: string): { params: CmdlineParam[]; initArgs: string[] } {
  const params: CmdlineParam[] = [];
  let pos = 0;
  while (isSpace(text[pos])) pos++;
  while (pos < text.length) {
    const { param, next } = nextArg(text, pos);
    pos = next;
    if (param.value === undefined && param.key === '--') {
      const initArgs: string[] = [];
      while (pos < text.length) {
        const a = nextArg(text, pos);
        pos = a.next;
        initArgs.push(a.param.value === undefined ? a.param.key : `${a.param.key}=${a.param.value}`);
      }
      return { params, initArgs };
    }
    if (param.key !== '' || param.value !== undefined) params.push(param);
  }
  return { params, initArgs: [] };
}

// ---------------------------------------------------------------------------
// ip=

export const IpConfig = z.discriminatedUnion('mode', [
  /** ip=off / ip=none: hfk-init configures no interface. */
  z.strictObject({ mode: z.literal('none') }),
  z.strictObject({
    mode: z.literal('dhcp'),
    device: z.string().optional(),
    hostname: z.string().optional(),
    /** Name servers from ip=; they replace what DHCP gives. */
    dns: z.array(z.string()),
  }),
  z.strictObject({
    mode: z.literal('static'),
    address: z.string(),
    prefix: z.number().int().min(0).max(32),
    netmask: z.string(),
    gateway: z.string().optional(),
    server: z.string().optional(),
    device: z.string().optional(),
    hostname: z.string().optional(),
    dns: z.array(z.string()),
    ntp: z.string().optional(),
  }),
]);
export type IpConfig = z.infer<typeof IpConfig>;

/** 255.255.255.0 → 24; undefined when not a contiguous mask. */
export function netmaskToPrefix(mask: string): number | undefined {
  if (!isIPv4(mask)) return undefined;
  const n = mask.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const bits = n.toString(2).padStart(32, '0');
  if (!/^1*0*$/.test(bits)) return undefined;
  const zero = bits.indexOf('0');
  return zero < 0 ? 32 : zero;
}

/** The kernel's default when ip= gives no netmask: by address class. */
function classfulNetmask(address: string): string {
  const first = Number(address.split('.')[0]);
  return first < 128 ? '255.0.0.0' : first < 192 ? '255.255.0.0' : '255.255.255.0';
}

const AUTOCONF_DHCP = new Set(['on', 'any', 'dhcp']);
const AUTOCONF_NONE = new Set(['off', 'none']);
const AUTOCONF_UNSUPPORTED = new Set(['bootp', 'rarp', 'both']);

type IpResult = { ok: true; value: IpConfig } | { ok: false; problem: string };

/** Parses the value of ip= (kernel syntax). Pure. */
export function parseIp(text: string): IpResult {
  const t = text.trim();
  const fail = (problem: string): IpResult => ({ ok: false, problem });
  if (!t.includes(':') && !isIPv4(t)) {
    if (AUTOCONF_NONE.has(t)) return { ok: true, value: { mode: 'none' } };
    if (AUTOCONF_DHCP.has(t)) return { ok: true, value: { mode: 'dhcp', dns: [] } };
    if (AUTOCONF_UNSUPPORTED.has(t)) return fail('asks for BOOTP/RARP, which hfk-init does not speak: use ip=dhcp');
    return fail('is not dhcp, on, any, off, none or CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1');
  }
  const f = t.split(':');
  if (f.length > 10) return fail('has more than the 10 fields CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1:NTP0');
  if (f.length === 2 && /^[A-Za-z]/.test(f[0]!) && (AUTOCONF_DHCP.has(f[1]!) || AUTOCONF_NONE.has(f[1]!))) {
    return fail(`is dracut's form; the kernel's is ip=:::::${f[0]}:${f[1]}`);
  }
  const [client = '', server = '', gw = '', mask = '', hostname = '', device = '', autoconf = '', dns0 = '', dns1 = '', ntp = ''] = f;
  for (const [name, v] of [['client', client], ['server', server], ['gateway', gw], ['dns0', dns0], ['dns1', dns1], ['ntp0', ntp]] as const) {
    if (v !== '' && !isIPv4(v)) return fail(`has a ${name} address '${v}' that is not an IPv4 address`);
  }
  if (mask !== '' && netmaskToPrefix(mask) === undefined) return fail(`has a netmask '${mask}' that is not a dotted mask like 255.255.255.0`);
  if (device !== '' && !/^[A-Za-z0-9_.:-]{1,15}$/.test(device)) return fail(`has a device '${device}' that is not an interface name`);
  if (hostname !== '' && !/^[A-Za-z0-9.-]{1,64}$/.test(hostname)) return fail(`has a hostname '${hostname}' with characters other than letters, digits, '.' and '-'`);
  if (autoconf !== '' && !AUTOCONF_DHCP.has(autoconf) && !AUTOCONF_NONE.has(autoconf)) {
    if (AUTOCONF_UNSUPPORTED.has(autoconf)) return fail(`asks for ${autoconf}, which hfk-init does not speak: use dhcp or off`);
    return fail(`has autoconf '${autoconf}': expected dhcp, on, any, off or none`);
  }
  const dns = [dns0, dns1].filter((d) => d !== '');
  const common = { ...(device ? { device } : {}), ...(hostname ? { hostname } : {}), dns };
  // No autoconf field: static when the client address is given (the kernel
  // only asks a server for what is missing), else DHCP.
  const isStatic = AUTOCONF_NONE.has(autoconf) || (autoconf === '' && client !== '');
  if (!isStatic) return { ok: true, value: { mode: 'dhcp', ...common } };
  if (client === '') {
    return AUTOCONF_NONE.has(autoconf) && server === '' && gw === '' && mask === '' && dns.length === 0
      ? { ok: true, value: { mode: 'none' } }
      : fail('turns autoconfiguration off but gives no client address: CLIENT:SERVER:GW:NETMASK:…:off');
  }
  const netmask = mask || classfulNetmask(client);
  return {
    ok: true,
    value: {
      mode: 'static',
      address: client,
      prefix: netmaskToPrefix(netmask)!,
      netmask,
      ...(gw && gw !== '0.0.0.0' ? { gateway: gw } : {}),
      ...(server ? { server } : {}),
      ...(ntp ? { ntp } : {}),
      ...common,
    },
  };
}

const IpValue = z.unknown().transform((v, ctx): IpConfig => {
  const r = parseIp(String(v));
  if (r.ok) return r.value;
  ctx.addIssue({ code: 'custom', message: r.problem, params: { found: v } });
  return z.NEVER;
});

const DebugValue = z.unknown().transform((v, ctx) => {
  if (v === true) return true;
  const t = String(v).toLowerCase();
  if (['1', 'y', 'yes', 'on', 'true'].includes(t)) return true;
  if (['0', 'n', 'no', 'off', 'false'].includes(t)) return false;
  ctx.addIssue({ code: 'custom', message: 'is not a flag: give hfk.debug alone, or =1 / =0', params: { found: v } });
  return z.NEVER;
});

// ---------------------------------------------------------------------------
// BootParams

/** Every parameter hfk-init reads, validated; absent ones are undefined. */
export const BootParams = z.strictObject({
  mirrors: z.array(MirrorUrl).optional(),
  mirrorlist: mirrorListSource(false).optional(),
  image: ImageRef.optional(),
  key: keySource(false).optional(),
  proxy: ProxyUrl.optional(),
  cache: MountSourceText.optional(),
  overlay: MountSourceText.optional(),
  ip: IpValue.optional(),
  break: StageValue.optional(),
  debug: DebugValue.optional(),
  timeout: Seconds.optional(),
  console: z.array(z.string()).default([]),
});
export type BootParams = z.output<typeof BootParams>;
type Field = keyof BootParams;

interface KeySpec {
  readonly field: Field;
  /** Takes no value (a bare flag). */
  readonly flag?: boolean;
  /** Repeats add up instead of the last one winning. */
  readonly list?: boolean;
  readonly example: string;
}

/** The parameters, by their name on the command line. */
export const PARAMS: Readonly<Record<string, KeySpec>> = {
  'hfk.mirrors': { field: 'mirrors', list: true, example: 'hfk.mirrors=http://10.0.2.2:8080/hfk/,https://mirror.example.org/hfk/' },
  'hfk.mirrorlist': { field: 'mirrorlist', example: 'hfk.mirrorlist=https://example.org/hfk/mirrors.txt' },
  'hfk.image': { field: 'image', example: 'hfk.image=debian-12 or hfk.image=debian-12@7' },
  'hfk.key': { field: 'key', example: 'hfk.key=<the base64 in PREFIX.pub> or hfk.key=/etc/hfk/hfk.pub' },
  'hfk.proxy': { field: 'proxy', example: 'hfk.proxy=http://proxy.example.org:3128' },
  'hfk.cache': { field: 'cache', example: 'hfk.cache=tmpfs, hfk.cache=/dev/vdb, hfk.cache=LABEL=hfk-cache' },
  'hfk.overlay': { field: 'overlay', example: 'hfk.overlay=tmpfs, hfk.overlay=/dev/vdc1, hfk.overlay=UUID=…' },
  'hfk.break': { field: 'break', example: 'hfk.break=network' },
  'hfk.debug': { field: 'debug', flag: true, example: 'hfk.debug' },
  'hfk.timeout': { field: 'timeout', example: 'hfk.timeout=60' },
  ip: { field: 'ip', example: 'ip=dhcp, ip=:::::eth0:dhcp, ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off:10.0.2.3' },
  console: { field: 'console', list: true, example: 'console=ttyS0,115200' },
};

const FIELD_KEY = new Map<string, string>(Object.entries(PARAMS).map(([k, s]) => [s.field, k]));

export interface CmdlineProblem {
  readonly key: string;
  /** The value found (undefined for a missing value). */
  readonly found: string | undefined;
  /** What is wrong / what is allowed, e.g. "is not an http:// or https:// URL". */
  readonly problem: string;
}

/** A kernel command line parameter of hfk's with a bad value. */
export class CmdlineError extends HfkError {
  override name = 'CmdlineError';
  readonly problems: readonly CmdlineProblem[];
  /** The first bad parameter. */
  readonly key: string;
  constructor(problems: readonly CmdlineProblem[], hint?: string) {
    const text = problems.map((p) => (p.found === undefined ? `${p.key} ${p.problem}` : `${p.key}: '${p.found}' ${p.problem}`));
    const first = problems[0]!;
    super('E_CMDLINE', text.join('\n'), { hint: hint ?? `for example ${PARAMS[first.key]?.example ?? first.key}` });
    this.problems = problems;
    this.key = first.key;
  }
}

export interface ParsedCmdline {
  readonly params: BootParams;
  /** Unknown hfk.* keys and repeated parameters: shown, never fatal. */
  readonly warnings: string[];
  /** Words after `--`: init's own arguments. */
  readonly initArgs: string[];
  /** Every parameter as split (for the boot report). */
  readonly all: CmdlineParam[];
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

function didYouMean(key: string): string {
  const near = Object.keys(PARAMS)
    .filter((k) => k.startsWith('hfk.'))
    .map((k) => [k, editDistance(key, k)] as const)
    .filter(([, d]) => d <= 2)
    .sort((a, b) => a[1] - b[1])[0];
  return near ? `; did you mean ${near[0]}?` : `; hfk reads ${Object.keys(PARAMS).filter((k) => k.startsWith('hfk.')).join(', ')}`;
}

/**
 * Parses a kernel command line (the text of /proc/cmdline). Throws a
 * CmdlineError naming every bad hfk parameter; unknown hfk.* keys and
 * repeats come back as warnings. Pure.
 */
export function parseCmdline(text: string): ParsedCmdline {
  const { params, initArgs } = splitCmdline(text);
  const raw: Record<string, unknown> = {};
  const given = new Map<string, string | undefined>();
  const warnings: string[] = [];
  const problems: CmdlineProblem[] = [];
  for (const { key, value } of params) {
    const spec = PARAMS[key];
    if (!spec) {
      if (key.startsWith('hfk.')) warnings.push(`unknown parameter ${key} ignored${didYouMean(key)}`);
      continue;
    }
    if (!spec.flag && value === undefined) {
      if (!key.startsWith('hfk.') && key !== 'ip') {
        warnings.push(`${key} without a value ignored`);
        continue;
      }
      problems.push({ key, found: undefined, problem: `needs a value, like ${spec.example}` });
      continue;
    }
    const v: string | true = value ?? true;
    if (spec.list) {
      const items = spec.field === 'mirrors' ? String(v).split(',').map((s) => s.trim()).filter((s) => s !== '') : [String(v)];
      raw[spec.field] = [...((raw[spec.field] as unknown[] | undefined) ?? []), ...items];
    } else {
      if (given.has(key) && given.get(key) !== value) warnings.push(`${key} is given more than once; using the last, '${value ?? ''}'`);
      raw[spec.field] = v;
    }
    given.set(key, value);
  }
  if (raw.mirrors !== undefined && (raw.mirrors as unknown[]).length === 0) {
    problems.push({ key: 'hfk.mirrors', found: '', problem: 'lists no URL' });
    delete raw.mirrors;
  }
  const r = BootParams.safeParse(raw);
  if (!r.success) {
    for (const issue of r.error.issues) {
      const field = String(issue.path[0]);
      const key = FIELD_KEY.get(field) ?? field;
      const found = issue.code === 'custom' ? (issue.params as { found?: unknown } | undefined)?.found : undefined;
      problems.push({ key, found: found === undefined ? undefined : String(found), problem: issue.message });
    }
  }
  if (problems.length) throw new CmdlineError(problems);
  return { params: r.data!, warnings, initArgs, all: params };
}

// ---------------------------------------------------------------------------
// Merging with the baked config: the command line wins

export type Origin = 'cmdline' | 'config' | 'default';

/** What the init will do, with every default filled in. */
export interface BootSettings {
  readonly image: ImageRef;
  /** Mirror base URLs given directly (may be empty when mirrorlist is set). */
  readonly mirrors: readonly string[];
  readonly mirrorlist: string | undefined;
  readonly key: string | undefined;
  readonly proxy: string | undefined;
  readonly cache: MountSource;
  readonly overlay: MountSource;
  readonly ip: IpConfig;
  readonly break: StageName | undefined;
  readonly debug: boolean;
  /** Seconds each wait lasts (interface, carrier, DHCP, first mirror). */
  readonly timeout: number;
  /** Modules to load besides the hardware's (config init.modules). */
  readonly modules: readonly string[];
  readonly consoles: readonly string[];
  readonly initArgs: readonly string[];
  /** The rest of the config (memory cache size, disk cache, soft mode). */
  readonly config: Config;
  /** Where each setting came from, for the boot report. */
  readonly origin: Readonly<Record<'image' | 'mirrors' | 'key' | 'proxy' | 'cache' | 'overlay' | 'ip' | 'break' | 'timeout', Origin>>;
}

function pick<T>(fromCmdline: T | undefined, fromConfig: T | undefined, fallback: T): [T, Origin] {
  if (fromCmdline !== undefined) return [fromCmdline, 'cmdline'];
  if (fromConfig !== undefined) return [fromConfig, 'config'];
  return [fallback, 'default'];
}

/**
 * The settings the init runs with: each command line parameter replaces the
 * config's value. Mirrors are one setting: hfk.mirrors or hfk.mirrorlist on
 * the command line replace both `mirrors` and `mirrorlist` of the config.
 * Throws when no image or no mirror is named anywhere. Pure.
 */
export function resolveBootSettings(parsed: Pick<ParsedCmdline, 'params' | 'initArgs'>, config: Config, configFile = '/etc/hfk/hfk.yaml'): BootSettings {
  const p = parsed.params;
  const image = p.image ?? config.image;
  if (!image) {
    throw new CmdlineError([{ key: 'hfk.image', found: undefined, problem: 'is not set: hfk-init does not know which image to boot' }],
      `add hfk.image=NAME to the kernel command line, or image: NAME to ${configFile}`);
  }
  const cmdlineMirrors = p.mirrors !== undefined || p.mirrorlist !== undefined;
  const mirrors = cmdlineMirrors ? (p.mirrors ?? []) : config.mirrors;
  const mirrorlist = cmdlineMirrors ? p.mirrorlist : config.mirrorlist;
  if (mirrors.length === 0 && mirrorlist === undefined) {
    throw new CmdlineError([{ key: 'hfk.mirrors', found: undefined, problem: 'is not set: hfk-init knows no mirror to fetch the image from' }],
      `add hfk.mirrors=URL,… or hfk.mirrorlist=URL to the kernel command line, or mirrors: to ${configFile}`);
  }
  const [key, keyFrom] = pick(p.key, config.key, undefined);
  const [proxy, proxyFrom] = pick(p.proxy, config.proxy, undefined);
  const [cache, cacheFrom] = pick(p.cache, config.init.cache, { kind: 'tmpfs' } as MountSource);
  const [overlay, overlayFrom] = pick(p.overlay, config.init.overlay, { kind: 'tmpfs' } as MountSource);
  const [brk, breakFrom] = pick(p.break, config.init.break, undefined);
  const [timeout, timeoutFrom] = pick(p.timeout, config.init.timeout, 30);
  const [ip, ipFrom] = pick<IpConfig>(p.ip, undefined, { mode: 'dhcp', dns: [] });
  return {
    image,
    mirrors,
    mirrorlist,
    key,
    proxy,
    cache,
    overlay,
    ip,
    break: brk,
    debug: p.debug ?? false,
    timeout,
    modules: config.init.modules,
    consoles: p.console,
    initArgs: parsed.initArgs,
    config,
    origin: {
      image: p.image ? 'cmdline' : 'config',
      mirrors: cmdlineMirrors ? 'cmdline' : 'config',
      key: keyFrom,
      proxy: proxyFrom,
      cache: cacheFrom,
      overlay: overlayFrom,
      ip: ipFrom,
      break: breakFrom,
      timeout: timeoutFrom,
    },
  };
}
