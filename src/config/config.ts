// hfk.yaml: the configuration baked into the initramfs (/etc/hfk/hfk.yaml)
// and used on hosts (config/hfk.yaml is the documented example). The zod
// schema below is the one source of truth: the types are inferred from it,
// the defaults live in it, and unknown keys are errors.
//
// The value schemas (mirror URL, image reference, key, mount source, size,
// seconds, stage) are shared with the kernel command line (cmdline.ts), so a
// value means the same thing in both places. Their messages read after
// "KEY: 'FOUND' ", e.g. "is not an http:// or https:// URL".

import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { isMap, LineCounter, parseDocument, type Node as YamlNode, type YAMLMap } from 'yaml';
import { z } from 'zod';
import { errnoCode, HfkError } from '../errors.ts';
import { parseImageRef } from '../format/manifest.ts';
import { normalizeBaseUrl } from '../store/http.ts';
import { redactUrl } from '../store/auth.ts';
import { DEFAULT_BUDGET } from '../store/budget.ts';
import { parseSize } from '../util/size.ts';
import { STAGES, type StageName } from './stages.ts';
import { ListenAddress, MAX_VERIFY_THREADS } from '../reader/spec.ts';

export const DEFAULT_CONFIG_PATH = '/etc/hfk/hfk.yaml';

// ---------------------------------------------------------------------------
// Value schemas, shared with the command line

type Ctx = z.core.$RefinementCtx;

/** Adds a custom issue that carries the offending value, and fails. */
function bad(ctx: Ctx, found: unknown, message: string): typeof z.NEVER {
  ctx.addIssue({ code: 'custom', message, params: { found } });
  return z.NEVER;
}

/** Why `text` is not a base URL (http(s), no query or fragment); undefined if it is one. */
function httpUrlProblem(text: string, options: { base?: boolean } = {}): string | undefined {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return 'is not an http:// or https:// URL';
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return 'is not an http:// or https:// URL';
  if ((options.base ?? true) && (u.search || u.hash)) return 'is a URL with a query (?…) or fragment (#…): give the plain base URL';
  return undefined;
}

/** A mirror's base URL, normalized to end in '/'. */
export const MirrorUrl = z.unknown().transform((v, ctx) => {
  if (typeof v !== 'string') return bad(ctx, v, 'is not a URL (a string like http://mirror.example/hfk/)');
  const problem = httpUrlProblem(v.trim());
  if (problem) return bad(ctx, redactUrl(v), problem);
  return normalizeBaseUrl(v.trim(), 'mirror');
});

/** An HTTP proxy for every request: http://HOST:PORT or https://HOST:PORT. */
export const ProxyUrl = z.unknown().transform((v, ctx) => {
  if (typeof v !== 'string') return bad(ctx, v, 'is not a proxy URL (http://HOST:PORT)');
  const problem = httpUrlProblem(v.trim());
  if (problem) return bad(ctx, redactUrl(v), problem.replace('URL', 'proxy URL'));
  return v.trim();
});

/** One no_proxy entry: a host name or suffix, '*', an IP or a CIDR range, with an optional :PORT. */
export const NoProxyEntry = z.unknown().transform((v, ctx) => {
  if (typeof v === 'string' && /^[A-Za-z0-9*.:\[\]\/_-]+$/.test(v.trim())) return v.trim();
  return bad(ctx, v, "is not a host name, '.domain', '*', an IP or a CIDR range (with an optional :PORT)");
});

function pathProblem(text: string, relativeOk: boolean): string | undefined {
  if (text === '' || text.includes('\0')) return 'is not a file path';
  if (!relativeOk && !isAbsolute(text)) return 'is not an absolute path (the initramfs has no working directory to resolve it from)';
  return undefined;
}

/** Where the mirror list is: an http(s) URL, or a file path. */
export function mirrorListSource(relativeOk: boolean) {
  return z.unknown().transform((v, ctx) => {
    if (typeof v !== 'string') return bad(ctx, v, 'is not a URL or a file path');
    const t = v.trim();
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(t)) {
      // the URL of a file, not a base: a query is fine
      const problem = httpUrlProblem(t, { base: false });
      return problem ? bad(ctx, v, `${problem} (nor a file path)`) : t;
    }
    const problem = pathProblem(t, relativeOk);
    return problem ? bad(ctx, v, `${problem}; give an http(s) URL or a file path`) : t;
  });
}

export const ImageRef = z.unknown().transform((v, ctx) => {
  if (typeof v !== 'string') return bad(ctx, v, 'is not an image name (NAME or NAME@VERSION)');
  try {
    const { name, version } = parseImageRef(v.trim(), 'image');
    return version === undefined ? { name } : { name, version };
  } catch {
    return bad(ctx, v, "is not NAME or NAME@VERSION (NAME: 1-64 letters, digits, '.', '-', '_'; VERSION: a positive whole number)");
  }
});
export type ImageRef = z.output<typeof ImageRef>;

const INLINE_KEY = /^(?:[A-Za-z0-9+/]{43}=|hfk-ed25519\s+[A-Za-z0-9+/]{43}=(?:\s.*)?)$/;

/** Whether a key value is the key itself (base64, or the whole `hfk-ed25519 …` line), not the path of a .pub file. */
export function isInlineKey(text: string): boolean {
  return INLINE_KEY.test(text);
}

/**
 * The publisher's public key: inline (the base64 of its 32 bytes, or the
 * whole `hfk-ed25519 …` line) or the path of its .pub file. Both forms go
 * as they are to resolvePublicKey (format/keys.ts).
 */
export function keySource(relativeOk: boolean) {
  return z.unknown().transform((v, ctx) => {
    if (typeof v !== 'string') return bad(ctx, v, 'is not a public key or the path of one');
    const t = v.trim();
    if (INLINE_KEY.test(t)) return t;
    if (/^[A-Za-z0-9+/]{20,}={0,2}$/.test(t) && !t.includes('/')) {
      return bad(ctx, v, 'is not an Ed25519 public key: expected the base64 of 32 bytes (44 characters ending in =)');
    }
    const problem = pathProblem(t, relativeOk);
    return problem ? bad(ctx, v, `${problem}; give the base64 key or the path of the .pub file`) : t;
  });
}

/** What backs the cache or the overlay's upper layer. */
export const MountSourceValue = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('tmpfs') }),
  z.strictObject({ kind: z.literal('device'), path: z.string() }),
  z.strictObject({ kind: z.literal('label'), label: z.string() }),
  z.strictObject({ kind: z.literal('uuid'), uuid: z.string() }),
]);
export type MountSource = z.infer<typeof MountSourceValue>;

const MOUNT_SOURCE_FORMS = "is not 'tmpfs', a /dev/… path, LABEL=… or UUID=…";

/** Parses `tmpfs`, `/dev/…`, `LABEL=…` or `UUID=…`. */
export const MountSourceText = z.unknown().transform((v, ctx): MountSource => {
  if (typeof v !== 'string') return bad(ctx, v, MOUNT_SOURCE_FORMS);
  const t = v.trim();
  if (t === 'tmpfs') return { kind: 'tmpfs' };
  if (t.startsWith('/dev/')) {
    if (t.length === 5 || t.includes('/../') || t.endsWith('/..')) return bad(ctx, v, 'is not a device path under /dev/');
    return { kind: 'device', path: t };
  }
  const m = /^(LABEL|UUID)=(.*)$/i.exec(t);
  if (m) {
    const value = m[2]!;
    if (m[1]!.toUpperCase() === 'LABEL') {
      if (value === '' || value.includes('/')) return bad(ctx, v, "has an empty label or one with '/'");
      return { kind: 'label', label: value };
    }
    // ext4/xfs: 8-4-4-4-12 hex; vfat: XXXX-XXXX; ntfs: 16 hex digits.
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$|^[0-9a-f]{4}-[0-9a-f]{4}$|^[0-9a-f]{16}$/i.test(value)) {
      return bad(ctx, v, 'has a UUID that is not 8-4-4-4-12 hex digits, XXXX-XXXX (FAT) or 16 hex digits (NTFS)');
    }
    return { kind: 'uuid', uuid: value.toLowerCase() };
  }
  return bad(ctx, v, MOUNT_SOURCE_FORMS);
});

/** The form a person writes: tmpfs, /dev/vdb, LABEL=hfk-cache, UUID=…. */
export function formatMountSource(s: MountSource): string {
  switch (s.kind) {
    case 'tmpfs':
      return 'tmpfs';
    case 'device':
      return s.path;
    case 'label':
      return `LABEL=${s.label}`;
    case 'uuid':
      return `UUID=${s.uuid}`;
  }
}

/** A byte size: 268435456, "256M", "1.5G" (binary units). */
export const Size = z.unknown().transform((v, ctx) => {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  if (typeof v === 'string') {
    try {
      return parseSize(v, 'size');
    } catch {
      // fall through to the message below
    }
  }
  return bad(ctx, v, 'is not a size like 268435456, 256M or 2G');
});

export const MAX_TIMEOUT_SECONDS = 86_400;

/** Whole seconds, 1 to a day; numbers or digit strings. */
export const Seconds = z.unknown().transform((v, ctx) => {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_TIMEOUT_SECONDS) {
    return bad(ctx, v, `is not a whole number of seconds from 1 to ${MAX_TIMEOUT_SECONDS}`);
  }
  return n;
});

export const StageValue = z.unknown().transform((v, ctx): StageName => {
  if (typeof v === 'string' && (STAGES as readonly string[]).includes(v.trim())) return v.trim() as StageName;
  return bad(ctx, v, `is not a stage: the stages are ${STAGES.join(', ')}`);
});

export const ModuleName = z.unknown().transform((v, ctx) => {
  if (typeof v === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(v.trim())) return v.trim().replace(/-/g, '_');
  return bad(ctx, v, 'is not a kernel module name (letters, digits, - and _)');
});

export const Bool = z.unknown().transform((v, ctx) => {
  if (typeof v === 'boolean') return v;
  return bad(ctx, v, 'is not true or false');
});


/** Worker threads that decode and verify blocks: a whole number from 0 to MAX_VERIFY_THREADS. */
export const ThreadCount = z.unknown().transform((v, ctx) => {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : Number.NaN;
  if (!Number.isInteger(n) || n < 0 || n > MAX_VERIFY_THREADS) return bad(ctx, v, `is not a whole number of threads from 0 to ${MAX_VERIFY_THREADS}`);
  return n;
});

// ---------------------------------------------------------------------------
// The config file

export const DEFAULTS = {
  cacheMemory: 256 * 1024 ** 2,
  cacheMaxSize: 4 * 1024 ** 3,
  timeout: 30,
  softTimeout: 60,
  headTimeout: DEFAULT_BUDGET.headTimeoutMs / 1000,
  minRate: DEFAULT_BUDGET.minBytesPerSec,
  rateGrace: DEFAULT_BUDGET.graceMs / 1000,
  readerReadahead: 512 * 1024,
  readerVerifyThreads: 0,
} as const;

/**
 * The block reader hfk-init starts for the root image. Its settings differ
 * from `hfk mount`'s (options of that command) because a boot reads many
 * small files on what is often a small machine.
 */
export const InitReader = z.strictObject({
  /**
   * The kernel's readahead on the image while it boots and after: modest,
   * since a boot reads many small files and a larger window fetches blocks
   * nobody reads (figures: docs/PERFORMANCE.md).
   */
  readahead: Size.default(DEFAULTS.readerReadahead),
  /**
   * How far the reader fetches ahead of sequential reads. Default: none
   * with init.cache tmpfs (every block costs CPU, and the next boot starts
   * empty), 1M with a cache partition (what it fetches is there for the
   * next boot). See bootPrefetchBytes in src/init/boot.ts.
   */
  prefetch: Size.optional(),
  /**
   * Worker threads that decode and verify blocks; 0: the reader's main
   * thread does it, which costs less than a worker on a machine with one or
   * two (emulated) CPUs (figures: docs/PERFORMANCE.md). More may pay on
   * real hardware with cores to spare.
   */
  verifyThreads: ThreadCount.default(DEFAULTS.readerVerifyThreads),
  /**
   * For developers: the reader profiles its main thread from the start, and
   * `kill -USR2 PID` writes the profile so far to reader.cpuprofile in its
   * working folder (the block cache: /run/hfk/cache with init.cache tmpfs),
   * for Chrome's DevTools or any .cpuprofile reader.
   */
  cpuProfile: Bool.default(false),
  /**
   * Serve the reader's Prometheus metrics on HOST:PORT (/metrics) for the
   * life of the system, e.g. 0.0.0.0:9101. Default: off.
   */
  metrics: ListenAddress.optional(),
});
export type InitReader = z.output<typeof InitReader>;

const INIT_READER_DEFAULTS = { readahead: DEFAULTS.readerReadahead, verifyThreads: DEFAULTS.readerVerifyThreads, cpuProfile: false } as const;

export const Config = z.strictObject({
  /** The image to boot: NAME or NAME@VERSION (default: the newest version). */
  image: ImageRef.optional(),
  /** Mirror base URLs. */
  mirrors: z.array(MirrorUrl).default([]),
  /** A URL or file with more mirrors, one per line. */
  mirrorlist: mirrorListSource(true).optional(),
  /**
   * HTTP proxy for every request; wins over http_proxy/https_proxy/all_proxy
   * in the environment (which hfk reads as curl does when this is unset).
   */
  proxy: ProxyUrl.optional(),
  /** Hosts reached directly, not through the proxy (replaces no_proxy): names (and the names under them), '*', IPs, CIDR ranges, each with an optional :PORT. */
  noProxy: z.array(NoProxyEntry).optional(),
  /** A netrc file with logins for mirrors given without credentials (default: ~/.netrc if it exists). */
  netrc: z.string().min(1).optional(),
  /** The publisher's public key (inline or a .pub path). */
  key: keySource(true).optional(),
  cache: z
    .strictObject({
      /** Blocks kept in memory. */
      memory: Size.default(DEFAULTS.cacheMemory),
      /** Folder of the on-disk block cache; none: memory only. */
      dir: z.string().min(1).optional(),
      /** Upper bound of the on-disk cache. */
      maxSize: Size.default(DEFAULTS.cacheMaxSize),
    })
    .default({ memory: DEFAULTS.cacheMemory, maxSize: DEFAULTS.cacheMaxSize }),
  init: z
    .strictObject({
      /** What backs the block cache in the initramfs. */
      cache: MountSourceText.default({ kind: 'tmpfs' }),
      /** What backs the overlay's writable layer. */
      overlay: MountSourceText.default({ kind: 'tmpfs' }),
      /** How long each wait (interface, carrier, DHCP, first mirror) lasts. */
      timeout: Seconds.default(DEFAULTS.timeout),
      /** Modules to load besides those the hardware asks for. */
      modules: z.array(ModuleName).default([]),
      /** Stop with a shell before this stage. */
      break: StageValue.optional(),
      /** The block reader it starts for the root image. */
      reader: InitReader.default(INIT_READER_DEFAULTS),
    })
    .default({ cache: { kind: 'tmpfs' }, overlay: { kind: 'tmpfs' }, timeout: DEFAULTS.timeout, modules: [], reader: INIT_READER_DEFAULTS }),
  fetch: z
    .strictObject({
      /** Soft: a block that cannot be fetched fails the read (EIO) after softTimeout; hard: retry forever. */
      soft: Bool.default(false),
      softTimeout: Seconds.default(DEFAULTS.softTimeout),
      /** Longest wait for an answer's head (status line and headers) from a mirror; bytes trickled do not extend it. */
      headTimeout: Seconds.default(DEFAULTS.headTimeout),
      /** After rateGrace, a body slower than this (bytes a second, over windows of rateGrace) counts as a timeout. */
      minRate: Size.default(DEFAULTS.minRate),
      /** Seconds after an answer's head in which its body may be slow. */
      rateGrace: Seconds.default(DEFAULTS.rateGrace),
    })
    .default({ soft: false, softTimeout: DEFAULTS.softTimeout, headTimeout: DEFAULTS.headTimeout, minRate: DEFAULTS.minRate, rateGrace: DEFAULTS.rateGrace }),
});
export type Config = z.output<typeof Config>;

/** The configuration when there is no file: every default. */
export function defaultConfig(): Config {
  return Config.parse({});
}

export interface ConfigProblem {
  /** Dotted path of the setting, e.g. "cache.maxSize" or "mirrors[1]". */
  readonly key: string;
  readonly line: number | undefined;
  readonly message: string;
}

/** The config file is not YAML, or a setting is unknown or has a bad value. */
export class ConfigError extends HfkError {
  override name = 'ConfigError';
  readonly file: string;
  readonly problems: readonly ConfigProblem[];
  constructor(file: string, problems: readonly ConfigProblem[]) {
    const lines = problems.map((p) => `${file}${p.line === undefined ? '' : `:${p.line}`}: ${p.message}`);
    super('E_CONFIG', lines.join('\n'), {
      hint: 'config/hfk.yaml in the hfk sources shows every setting with its default',
    });
    this.file = file;
    this.problems = problems;
  }
}

function pathText(path: readonly PropertyKey[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s === '' ? String(p) : `.${String(p)}`;
  return s;
}

function shown(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`;
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/** The keys a strict object schema allows at `path` (for "unknown key" messages). */
function knownKeysAt(path: readonly PropertyKey[]): string[] {
  let schema: z.ZodType = Config;
  for (const p of path) {
    while (schema instanceof z.ZodDefault || schema instanceof z.ZodOptional) schema = schema.unwrap() as z.ZodType;
    if (!(schema instanceof z.ZodObject)) return [];
    const next = (schema.shape as Record<string, z.ZodType>)[String(p)];
    if (!next) return [];
    schema = next;
  }
  while (schema instanceof z.ZodDefault || schema instanceof z.ZodOptional) schema = schema.unwrap() as z.ZodType;
  return schema instanceof z.ZodObject ? Object.keys(schema.shape) : [];
}

/** Turns zod issues into "KEY: 'FOUND' is not …" problems. */
export function issueMessage(key: string, issue: z.core.$ZodIssue, input: unknown): string {
  if (issue.code === 'custom') {
    const found = (issue.params as { found?: unknown } | undefined)?.found;
    return `${key}: ${shown(found)} ${issue.message}`;
  }
  if (issue.code === 'invalid_type') {
    const want = issue.expected === 'array' ? 'a list' : issue.expected === 'object' ? 'a mapping' : `a ${issue.expected}`;
    return `${key}: ${shown(valueAt(input, issue.path))} is not ${want}`;
  }
  return `${key}: ${issue.message}`;
}

function problemsFromIssues(issues: readonly z.core.$ZodIssue[], input: unknown, lineOf: (path: readonly PropertyKey[], key?: string) => number | undefined): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const allowed = knownKeysAt(issue.path);
      for (const k of issue.keys) {
        const key = pathText([...issue.path, k]);
        out.push({ key, line: lineOf(issue.path, k), message: `unknown key '${key}'${allowed.length ? ` (allowed here: ${allowed.join(', ')})` : ''}` });
      }
      continue;
    }
    const key = pathText(issue.path) || '(top level)';
    out.push({ key, line: lineOf(issue.path), message: issueMessage(key, issue, input) });
  }
  return out.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
}

/** Makes relative paths in the config relative to the file's folder. */
function resolvePaths(c: Config, file: string): Config {
  const base = dirname(file);
  const abs = (p: string): string => (isAbsolute(p) ? p : resolvePath(base, p));
  const isUrl = (p: string): boolean => /^[a-z][a-z0-9+.-]*:\/\//i.test(p);
  const isPath = (k: string): boolean => !INLINE_KEY.test(k);
  return {
    ...c,
    ...(c.key !== undefined ? { key: isPath(c.key) ? abs(c.key) : c.key } : {}),
    ...(c.mirrorlist !== undefined ? { mirrorlist: isUrl(c.mirrorlist) ? c.mirrorlist : abs(c.mirrorlist) } : {}),
    ...(c.netrc !== undefined ? { netrc: abs(c.netrc) } : {}),
    cache: { ...c.cache, ...(c.cache.dir !== undefined ? { dir: abs(c.cache.dir) } : {}) },
  };
}

/**
 * Parses hfk.yaml text. `file` names it in errors and is the base for
 * relative paths (key, mirrorlist, cache.dir). Pure.
 */
export function parseConfig(text: string, file: string): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const lineAt = (offset: number | undefined): number | undefined => (offset === undefined ? undefined : lineCounter.linePos(offset).line);
  if (doc.errors.length) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => ({ key: '', line: lineAt(e.pos[0]), message: `not valid YAML: ${e.message.split('\n')[0]}` })),
    );
  }
  const input: unknown = doc.toJS() ?? {};
  const lineOf = (path: readonly PropertyKey[], key?: string): number | undefined => {
    const node = (path.length ? doc.getIn(path as unknown[], true) : doc.contents) as YamlNode | undefined;
    if (key !== undefined && node && isMap(node)) {
      const pair = (node as YAMLMap).items.find((p) => (p.key as { value?: unknown } | null)?.value === key);
      return lineAt((pair?.key as YamlNode | undefined)?.range?.[0]);
    }
    return lineAt(node?.range?.[0]);
  };
  const r = Config.safeParse(input);
  if (!r.success) throw new ConfigError(file, problemsFromIssues(r.error.issues, input, lineOf));
  return resolvePaths(r.data, file);
}

/**
 * Reads and parses a config file (the edge). A missing file gives the
 * defaults when `optional` (the initramfs may carry no config at all).
 */
export function loadConfig(path: string = DEFAULT_CONFIG_PATH, options: { optional?: boolean } = {}): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' && options.optional) return defaultConfig();
    const why = errnoCode(e) === 'ENOENT' ? 'does not exist' : `cannot be read: ${(e as Error).message}`;
    throw new ConfigError(path, [{ key: '', line: undefined, message: `the config file ${why}` }]);
  }
  return parseConfig(text, path);
}

// ---------------------------------------------------------------------------
// Mirror lists: one URL per line, # comments

/** A mirror list line that is not a mirror URL. */
export class MirrorListError extends HfkError {
  override name = 'MirrorListError';
  readonly source: string;
  constructor(source: string, message: string) {
    super('E_MIRRORLIST', message, { hint: 'a mirror list has one http:// or https:// base URL per line; # starts a comment' });
    this.source = source;
  }
}

/**
 * Parses a mirror list: one base URL per line, blank lines and `#` comments
 * (a whole line, or after a space) ignored, duplicates dropped. Returns the
 * normalized URLs in order. `source` names the file or URL in errors.
 */
export function parseMirrorList(text: string, source: string): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/(^|\s)#.*$/, '').trim();
    if (line === '') continue;
    const where = `${source}:${i + 1}`;
    if (/\s/.test(line)) throw new MirrorListError(source, `${where}: '${redactUrl(line)}' is more than one URL: give one mirror per line`);
    const problem = httpUrlProblem(line);
    if (problem) throw new MirrorListError(source, `${where}: '${redactUrl(line)}' ${problem}`);
    const url = normalizeBaseUrl(line, where);
    if (!seen.has(url)) {
      seen.add(url);
      out.push(url);
    }
  }
  if (out.length === 0) throw new MirrorListError(source, `${source} lists no mirrors`);
  return out;
}

/** The transfer budget of `fetch:` (headTimeout, minRate, rateGrace) as the mirrors' options. */
export function transferOptions(f: Config['fetch']): { headersTimeoutMs: number; minBytesPerSec: number; graceMs: number } {
  return { headersTimeoutMs: f.headTimeout * 1000, minBytesPerSec: f.minRate, graceMs: f.rateGrace * 1000 };
}
