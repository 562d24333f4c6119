// hfk-init --dry-run: the boot's own steps (boot.ts) on a recording System.
// What only looks is done for real: the command line and config (given, from
// an initrd, or this host's), the hardware probe's plan, the mirror ranking,
// the manifest and its signature, the image's superblock and its init read
// through the fetcher, the cache and overlay devices. What would change the
// machine (mounts, modprobe, the network, files, the reader process) is
// recorded and listed as the plan. Exits 1, naming the stage, when the boot
// would fail.

import * as fs from 'node:fs';
import { networkInterfaces } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { describeError, HfkError, UsageError } from '../errors.ts';
import type { BlockFetcher } from '../fetch/fetcher.ts';
import { openFromManifest } from '../fetch/open.ts';
import { formatRanking, type Ranking } from '../fetch/rank.ts';
import { detectFilesystem, FSTYPE_PROBE_BYTES } from '../format/fstype.ts';
import { publicKeyFromRaw, resolvePublicKey } from '../format/keys.ts';
import { lookupPath, UnsupportedFormatError } from '../format/rootfs.ts';
import type { LaunchedReader } from '../reader/launch.ts';
import type { ReaderSpec } from '../reader/spec.ts';
import { formatMountSource } from '../config/config.ts';
import { BOOT_STEPS, type BootContext, type BootState, earlyMounts, PATHS, type System } from './boot.ts';
import { readInitrd } from './initrd.ts';
import type { NetworkReport } from './network.ts';
import { planProbe, type ProbeReport } from './probe.ts';
import { type CommandResult, formatCommand, type Logger, spawnRunner, type Step } from './steps.ts';
import { kernelRelease, procCmdline } from './system.ts';
import { redactUrl } from '../store/auth.ts';

interface Check {
  stage: string;
  ok: boolean;
  detail: string;
}

export interface DryRunReport {
  ok: boolean;
  cmdline: string;
  configFrom: string;
  settings: Record<string, unknown> | null;
  warnings: string[];
  checks: Check[];
  modules: { from: string; wouldLoad: string[]; devices: number } | null;
  network: { interface: string; address: string }[];
  ranking: Ranking | null;
  manifest: { name: string; version: number; size: number; filesystem: string; blocks: number; from: string } | null;
  firstBlock: { bytes: number; ms: number; filesystem: string } | null;
  /** The root image's init, as the boot would find it. */
  init: { path: string; resolved: string } | null;
  /** Every change the boot would make, in order: what the dry run skipped. */
  plan: string[];
  error: { stage: string; code: string; message: string; hint: string | null } | null;
}

export interface DryRunOptions {
  /** The kernel command line (default: this host's /proc/cmdline). */
  cmdline?: string | undefined;
  /** An hfk.yaml to use instead of the initrd's or this host's. */
  config?: string | undefined;
  /** The public key (PREFIX.pub or inline) instead of the configured one. */
  key?: string | undefined;
  /** An initrd made by hfk mkinitrd: its config, key and modules are used. */
  initrd?: string | undefined;
  /** A module tree (/lib/modules/RELEASE) for the probe's plan. */
  modules?: string | undefined;
  /** Seconds to wait for a block before the boot would be said to hang (default 10). */
  timeout?: string | undefined;
}

const OPTIONS = {
  cmdline: { type: 'string' },
  config: { type: 'string' },
  key: { type: 'string' },
  initrd: { type: 'string' },
  modules: { type: 'string' },
  json: { type: 'boolean' },
  timeout: { type: 'string' },
} as const;

export async function runDryRun(argv: string[], out = (t: string) => process.stdout.write(t)): Promise<number> {
  let values;
  try {
    values = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (e) {
    process.stderr.write(`hfk-init --dry-run: ${(e as Error).message}\n`);
    return 2;
  }
  const r = await dryRun(values);
  if (values.json) out(`${JSON.stringify(r, null, 2)}\n`);
  else out(formatDryRun(r));
  return r.ok ? 0 : 1;
}

const OK: CommandResult = { code: 0, signal: null, stdout: '', stderr: '', timedOut: false };

/** A System that reads for real and records every change instead of making it. */
export class RecordingSystem implements System {
  /** The changes a boot would make, in order. */
  readonly changes: string[] = [];
  readonly warnings: string[] = [];
  readonly query = spawnRunner();
  /** The block fetcher the reader would run, opened in this process. */
  fetcher: BlockFetcher | undefined;
  firstRead: { bytes: number; ms: number } | undefined;
  private readonly written = new Map<string, Buffer>();
  private readonly o: { cmdline: string; config?: string | undefined; initrd?: { file: string; files: ReturnType<typeof readInitrd> } | undefined; modulesDir: string; softTimeoutMs: number };
  readonly log: Logger;

  constructor(o: RecordingSystem['o']) {
    this.o = o;
    this.log = { debug: () => {}, info: () => {}, warn: (m) => this.warnings.push(m), error: () => {} };
  }

  run = async (argv: readonly string[]): Promise<CommandResult> => {
    this.changes.push(formatCommand(argv));
    return OK;
  };

  kernelRelease = kernelRelease;
  uptime = (): number => process.uptime();
  cmdline = (): string => this.o.cmdline;
  modulesDir = (): string => this.o.modulesDir;

  readFile(file: string): { data: Buffer; from: string } | undefined {
    if (file === PATHS.config && this.o.config) return { data: fs.readFileSync(this.o.config), from: this.o.config };
    const made = this.written.get(file);
    if (made) return { data: made, from: file };
    const inInitrd = this.o.initrd?.files.get(file.replace(/^\//, ''));
    if (inInitrd) return { data: inInitrd.data, from: `${this.o.initrd!.file}:${file}` };
    try {
      return { data: fs.readFileSync(file), from: file };
    } catch {
      return undefined;
    }
  }

  exists(file: string): boolean {
    return this.written.has(file) || Boolean(this.o.initrd?.files.has(file.replace(/^\//, ''))) || fs.existsSync(file);
  }

  mkdir(dir: string): void {
    if (!fs.existsSync(dir)) this.changes.push(`mkdir -p ${dir}`);
  }

  writeFile(file: string, data: string | Uint8Array): void {
    this.written.set(file, Buffer.from(data));
    this.changes.push(`write ${file} (${Buffer.byteLength(data)} bytes)`);
  }

  /** What the probe would load on this host's devices, as if nothing were loaded yet (a fresh initramfs). */
  async probe(o: Parameters<System['probe']>[0]): Promise<ProbeReport> {
    const report = await planProbe({ ...o, root: '/' });
    if (report.loaded.length) this.changes.push(`modprobe -a ${report.loaded.map((l) => l.module).join(' ')}`);
    return report;
  }

  async network(o: Parameters<System['network']>[0]): Promise<NetworkReport> {
    this.changes.push(`bring up the network: ip=${o.ip.mode}`);
    const found = Object.entries(networkInterfaces()).flatMap(([name, addrs]) =>
      (addrs ?? []).filter((a) => !a.internal && a.family === 'IPv4').map((a) => ({ name, address: a.cidr ?? a.address })),
    );
    return {
      method: 'none', interface: found[0]?.name ?? null, address: found[0]?.address ?? null, gateway: null, dns: [], hostname: null,
      interfaces: found.map((f) => f.name), attempts: [], lease: null, waitInterfaceMs: 0, waitCarrierMs: 0, configureMs: 0, elapsedMs: 0,
    };
  }

  cacheDir(dir: string): string | undefined {
    this.changes.push(`use ${dir} as the block cache (the dry run keeps nothing)`);
    return undefined;
  }

  launchReader(): LaunchedReader {
    return {
      pid: process.pid,
      handOver: async (spec?: ReaderSpec) => {
        if (!spec) throw new Error('the reader needs its spec');
        this.changes.push(`start the block reader: serve ${spec.name} v${spec.version} at ${spec.mountpoint}/${spec.name}.img`);
        const manifest = this.written.get(spec.manifestFile ?? '');
        if (!manifest) throw new HfkError('E_INTERNAL', 'the manifest stage wrote no manifest');
        const opened = await openFromManifest({
          mirrors: spec.mirrors,
          proxy: spec.proxy,
          key: publicKeyFromRaw(Buffer.from(spec.key, 'base64')),
          manifestBytes: manifest,
          seeds: spec.seeds,
          memoryBytes: 4 << 20,
          mode: 'soft',
          softTimeoutMs: this.o.softTimeoutMs,
          fetcher: { readaheadBytes: 0 },
        });
        this.fetcher = opened.fetcher;
        const h = opened.manifest.header;
        return { pid: process.pid, message: { ready: true, pid: process.pid, mountpoint: spec.mountpoint, image: h.name, version: h.version, size: h.imageSize } };
      },
    };
  }

  async readAt(file: string, offset: number, length: number): Promise<Buffer> {
    if (!this.fetcher || !file.startsWith(`${PATHS.fuse}/`)) throw new HfkError('E_INTERNAL', `the dry run cannot read ${file}`);
    const t0 = performance.now();
    const data = await this.fetcher.read(offset, length);
    if (offset === 0) this.firstRead = { bytes: data.length, ms: Math.round(performance.now() - t0) };
    return data;
  }

  /** A path in the new root, looked up in the image through the fetcher. */
  async isExecutable(file: string): Promise<boolean> {
    const f = this.fetcher;
    if (!f || !file.startsWith(`${PATHS.newroot}/`)) return false;
    const inImage = file.slice(PATHS.newroot.length);
    const fsType = detectFilesystem(await f.read(0, Math.min(FSTYPE_PROBE_BYTES, f.size)));
    if (fsType !== 'squashfs' && fsType !== 'ext4' && fsType !== 'erofs') {
      this.warnings.push(`the init in a ${fsType} image is not checked before the boot`);
      return true;
    }
    let info;
    try {
      info = await lookupPath((o, n) => f.read(o, n), fsType, inImage, { size: f.size });
    } catch (e) {
      if (!(e instanceof UnsupportedFormatError)) throw e;
      this.warnings.push(`the init is not checked before the boot: this ${fsType} image uses ${e.feature}, which the check does not read`);
      return true;
    }
    if (info?.kind === 'file' && info.executable) this.found ??= { path: inImage, resolved: info.resolved };
    return info?.kind === 'file' && info.executable;
  }

  /** The init the overlay stage found. */
  found: { path: string; resolved: string } | undefined;

  execSwitchRoot(): never {
    throw new HfkError('E_INTERNAL', 'a dry run does not switch roots');
  }

  async close(): Promise<void> {
    await this.fetcher?.close();
  }
}

/** Where the probe's module tree comes from: --modules, the initrd's (unpacked to `scratch`), or this host's. */
function modulesFor(o: DryRunOptions, initrd: ReturnType<typeof readInitrd> | undefined, scratch: () => string): string | undefined {
  if (o.modules) return o.modules;
  const dep = initrd && [...initrd.keys()].find((k) => /^lib\/modules\/[^/]+\/modules\.dep$/.test(k));
  if (dep) {
    const dir = scratch();
    for (const f of ['modules.dep', 'modules.alias', 'modules.builtin', 'modules.builtin.modinfo']) {
      const e = initrd!.get(dep.replace('modules.dep', f));
      if (e) fs.writeFileSync(path.join(dir, f), e.data);
    }
    return dir;
  }
  const host = `/lib/modules/${kernelRelease()}`;
  return fs.existsSync(`${host}/modules.dep`) ? host : undefined;
}

/** One line per stage that passed: what it found. */
function summary(stage: string, state: BootState, sys: RecordingSystem): string {
  const s = state.settings;
  const h = state.image?.manifest.header;
  switch (stage) {
    case 'config':
      return `image ${s!.image.name}${s!.image.version ? `@${s!.image.version}` : ''}, key ${state.key!.id}, config from ${state.configFrom}`;
    case 'probe':
      return `${state.probe!.devices.length} devices; would load ${state.probe!.loaded.length} modules`;
    case 'network':
      return `ip=${s!.ip.mode}; this host's network is left as it is`;
    case 'mirrors': {
      const up = state.ranking!.mirrors.filter((m) => m.ok > 0);
      return up.length ? `${up.length} of ${state.mirrors!.length} mirrors answer; best ${up[0]!.url}` : `none of the ${state.mirrors!.length} mirrors answered`;
    }
    case 'cache':
      return `block cache: ${formatMountSource(s!.cache)} (${state.cacheDir})`;
    case 'manifest':
      return `${h!.name} v${h!.version} signed by ${h!.keyId}, ${h!.blockCount} blocks, ${h!.filesystem}, from ${state.image!.from}`;
    case 'fuse':
      return `the reader's fetcher opens ${h!.name} v${h!.version}`;
    case 'rootfs':
      return `read ${sys.firstRead?.bytes ?? 0} bytes in ${sys.firstRead?.ms ?? 0} ms: a ${state.filesystem} superblock`;
    case 'overlay':
      return `overlay: ${formatMountSource(s!.overlay)}; init ${state.rootInit}${sys.found && sys.found.resolved !== sys.found.path ? ` (${sys.found.resolved})` : ''} is in the image`;
    default:
      return 'done';
  }
}

export async function dryRun(o: DryRunOptions): Promise<DryRunReport> {
  const r: DryRunReport = {
    ok: false, cmdline: '', configFrom: '', settings: null, warnings: [], checks: [], modules: null, network: [],
    ranking: null, manifest: null, firstBlock: null, init: null, plan: [], error: null,
  };
  let scratch: string | undefined;
  let sys: RecordingSystem | undefined;
  let stage = 'config';
  const state: BootState = { startedUptime: 0, warnings: [] };
  try {
    const initrd = o.initrd ? readInitrd(fs.readFileSync(o.initrd), `initrd ${o.initrd}`) : undefined;
    r.cmdline = (o.cmdline ?? procCmdline()).trim();
    if (o.key) state.key = resolvePublicKey(o.key, '--key');
    const timeout = Number(o.timeout ?? 10);
    if (!Number.isFinite(timeout) || timeout <= 0) throw new UsageError(`--timeout must be a number of seconds: got '${o.timeout}'`);
    const modulesDir = modulesFor(o, initrd, () => (scratch = fs.mkdtempSync('/tmp/hfk-dryrun-')));
    sys = new RecordingSystem({
      cmdline: r.cmdline,
      config: o.config,
      initrd: initrd && o.initrd ? { file: o.initrd, files: initrd } : undefined,
      modulesDir: modulesDir ?? `/lib/modules/${kernelRelease()}`,
      softTimeoutMs: timeout * 1000,
    });
    const ctx: BootContext = { sys, state };
    const steps: Step<BootContext, void>[] = [earlyMounts, ...BOOT_STEPS];
    for (const s of steps) {
      stage = s.name;
      if (s.name === 'probe' && !modulesDir) {
        r.warnings.push(`no module tree for ${kernelRelease()} (give --initrd or --modules): the probe is not planned`);
        r.checks.push({ stage, ok: true, detail: 'skipped: no module tree' });
        continue;
      }
      await s.run(ctx);
      if (s.name !== 'early') r.checks.push({ stage, ok: true, detail: summary(s.name, state, sys) });
    }
    r.plan = [...sys.changes, `switch_root ${PATHS.newroot} ${state.rootInit}${state.settings?.initArgs.length ? ` ${state.settings.initArgs.join(' ')}` : ''}`];
    r.ok = true;
  } catch (e) {
    r.checks.push({ stage, ok: false, detail: describeError(e) });
    r.error = {
      stage,
      code: e instanceof HfkError ? e.code : 'E_INTERNAL',
      message: e instanceof Error ? e.message : String(e),
      hint: e instanceof HfkError ? (e.hint ?? null) : null,
    };
    if (sys) r.plan = [...sys.changes];
  } finally {
    await state.opener?.close().catch(() => {});
    await sys?.close().catch(() => {});
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
  fill(r, state, sys);
  return r;
}

/** The report's fields from what the stages learned. */
function fill(r: DryRunReport, state: BootState, sys: RecordingSystem | undefined): void {
  const s = state.settings;
  r.configFrom = state.configFrom ?? '';
  r.warnings.unshift(...state.warnings.filter((w) => !r.warnings.includes(w)));
  if (sys) r.warnings.push(...sys.warnings.filter((w) => !r.warnings.includes(w)));
  if (s && state.key) {
    r.settings = {
      image: `${s.image.name}${s.image.version ? `@${s.image.version}` : ''}`,
      mirrors: s.mirrors.map(redactUrl),
      mirrorlist: s.mirrorlist ? redactUrl(s.mirrorlist) : null,
      proxy: s.proxy ? redactUrl(s.proxy) : null,
      key: state.key.id,
      cache: formatMountSource(s.cache),
      overlay: formatMountSource(s.overlay),
      ip: s.ip,
      timeout: s.timeout,
      break: s.break ?? null,
      origin: s.origin,
    };
  }
  if (state.probe && sys) r.modules = { from: sys.modulesDir(), wouldLoad: state.probe.loaded.map((l) => l.module), devices: state.probe.devices.length };
  if (state.network?.interface) r.network = state.network.interfaces.map((i) => ({ interface: i, address: i === state.network!.interface ? (state.network!.address ?? '') : '' }));
  r.ranking = state.ranking ?? null;
  const h = state.image?.manifest.header;
  if (h) r.manifest = { name: h.name, version: h.version, size: h.imageSize, filesystem: h.filesystem, blocks: h.blockCount, from: state.image!.from };
  if (sys?.firstRead && state.filesystem) r.firstBlock = { ...sys.firstRead, filesystem: state.filesystem };
  if (sys?.found) r.init = sys.found;
}

export function formatDryRun(r: DryRunReport): string {
  const lines: string[] = [`hfk-init --dry-run: kernel command line: ${r.cmdline || '(empty)'}`];
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  for (const c of r.checks) lines.push(`${c.ok ? 'ok  ' : 'FAIL'} [${c.stage}] ${c.detail}`);
  if (r.modules) lines.push(`modules the probe would load (${r.modules.from}): ${r.modules.wouldLoad.join(' ') || 'none'}`);
  if (r.ranking) lines.push(formatRanking(r.ranking).trimEnd());
  if (r.plan.length) lines.push(r.ok ? 'plan (skipped by the dry run):' : 'plan up to the failure (skipped by the dry run):', ...r.plan.map((p) => `  ${p}`));
  lines.push(r.ok ? 'the boot would succeed' : `the boot would fail at stage ${r.error?.stage}: ${r.error?.message}${r.error?.hint ? `\n  hint: ${r.error.hint}` : ''}`);
  return `${lines.join('\n')}\n`;
}
