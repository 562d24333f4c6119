// hfk-init --dry-run: everything a boot would do that changes nothing on
// this host. Parses the command line (given, or /proc/cmdline) and the
// config (given, from an initrd, or /etc/hfk/hfk.yaml), lists the modules the
// probe would load, ranks the mirrors for real, fetches and verifies the
// manifest, reads the first block through the fetcher, and prints the plan.
// Exits 1, with the reason, when the boot would fail.

import * as fs from 'node:fs';
import { networkInterfaces } from 'node:os';
import { parseArgs } from 'node:util';
import { describeError, HfkError, UsageError } from '../errors.ts';
import { BlockFetcher } from '../fetch/fetcher.ts';
import { HeapCache } from '../fetch/memcache.ts';
import { MirrorSet } from '../fetch/mirror.ts';
import { formatRanking, rankMirrors, type Ranking } from '../fetch/rank.ts';
import { loadImage, TrustState } from '../fetch/trust.ts';
import { detectFilesystem, FSTYPE_PROBE_BYTES } from '../format/fstype.ts';
import { loadPublicKey, parsePublicKey, type PublicKey, resolvePublicKey } from '../format/keys.ts';
import { PATHS } from './boot.ts';
import { type BootSettings, parseCmdline, resolveBootSettings } from './cmdline.ts';
import { type Config, defaultConfig, formatMountSource, loadConfig, parseConfig, parseMirrorList } from './config.ts';
import { readInitrd } from './initrd.ts';
import { ModuleDb } from './modalias.ts';
import { planProbe } from './probe.ts';

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
  plan: string[];
  error: { stage: string; code: string; message: string; hint: string | null } | null;
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

export async function dryRun(o: { cmdline?: string; config?: string; key?: string; initrd?: string; modules?: string; timeout?: string }): Promise<DryRunReport> {
  const r: DryRunReport = {
    ok: false,
    cmdline: '',
    configFrom: '',
    settings: null,
    warnings: [],
    checks: [],
    modules: null,
    network: [],
    ranking: null,
    manifest: null,
    firstBlock: null,
    plan: [],
    error: null,
  };
  let stage = 'config';
  const pass = (detail: string) => r.checks.push({ stage, ok: true, detail });
  try {
    // config: the command line, the config file, the key
    const initrd = o.initrd ? readInitrd(fs.readFileSync(o.initrd), `initrd ${o.initrd}`) : undefined;
    r.cmdline = (o.cmdline ?? fs.readFileSync('/proc/cmdline', 'utf8')).trim();
    const parsed = parseCmdline(r.cmdline);
    r.warnings.push(...parsed.warnings);
    let config: Config;
    if (o.config) {
      config = loadConfig(o.config);
      r.configFrom = o.config;
    } else if (initrd?.has(PATHS.config.slice(1))) {
      config = parseConfig(initrd.get(PATHS.config.slice(1))!.data.toString('utf8'), `${o.initrd}:${PATHS.config}`);
      r.configFrom = `${o.initrd}:${PATHS.config}`;
    } else if (fs.existsSync(PATHS.config)) {
      config = loadConfig(PATHS.config);
      r.configFrom = PATHS.config;
    } else {
      config = defaultConfig();
      r.configFrom = '(defaults)';
    }
    const s: BootSettings = resolveBootSettings(parsed, config, r.configFrom);
    let key: PublicKey;
    const inInitrd = (p: string | undefined) => (p && initrd?.has(p.replace(/^\//, '')) ? initrd.get(p.replace(/^\//, ''))! : undefined);
    if (o.key) key = resolvePublicKey(o.key, '--key');
    else if (inInitrd(s.key)) key = parsePublicKey(inInitrd(s.key)!.data.toString('utf8'), `${o.initrd}:${s.key}`);
    else if (s.key) key = resolvePublicKey(s.key, 'hfk.key');
    else if (initrd?.has(PATHS.key.slice(1))) key = parsePublicKey(initrd.get(PATHS.key.slice(1))!.data.toString('utf8'), `${o.initrd}:${PATHS.key}`);
    else if (fs.existsSync(PATHS.key)) key = loadPublicKey(PATHS.key);
    else throw new HfkError('E_KEY', 'no public key: none of --key, hfk.key=, the initrd\'s or this host\'s /etc/hfk/hfk.pub', { hint: 'pass --key PREFIX.pub' });
    r.settings = {
      image: `${s.image.name}${s.image.version ? `@${s.image.version}` : ''}`,
      mirrors: s.mirrors,
      mirrorlist: s.mirrorlist ?? null,
      proxy: s.proxy ?? null,
      key: key.id,
      cache: formatMountSource(s.cache),
      overlay: formatMountSource(s.overlay),
      ip: s.ip,
      timeout: s.timeout,
      break: s.break ?? null,
      origin: s.origin,
    };
    pass(`image ${r.settings.image}, key ${key.id}, config from ${r.configFrom}`);

    // probe: what would be loaded for this machine's devices
    stage = 'probe';
    let modulesDir = o.modules;
    let tmp: string | undefined;
    if (!modulesDir && initrd) {
      const dep = [...initrd.keys()].find((k) => /^lib\/modules\/[^/]+\/modules\.dep$/.test(k));
      if (dep) {
        tmp = fs.mkdtempSync('/tmp/hfk-dryrun-');
        for (const f of ['modules.dep', 'modules.alias', 'modules.builtin', 'modules.builtin.modinfo']) {
          const e = initrd.get(dep.replace('modules.dep', f));
          if (e) fs.writeFileSync(`${tmp}/${f}`, e.data);
        }
        modulesDir = tmp;
      }
    }
    const release = fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
    modulesDir ??= fs.existsSync(`/lib/modules/${release}/modules.dep`) ? `/lib/modules/${release}` : undefined;
    if (modulesDir) {
      try {
        const plan = await planProbe({ root: '/', db: ModuleDb.fromDir(modulesDir), extra: s.modules });
        r.modules = { from: o.initrd && tmp ? `${o.initrd} (${[...initrd!.keys()].find((k) => k.endsWith('/modules.dep'))})` : modulesDir, wouldLoad: plan.loaded.map((l) => l.module), devices: plan.devices.length };
        r.warnings.push(...plan.warnings);
        pass(`${plan.devices.length} devices; would load ${plan.loaded.length} modules`);
      } finally {
        if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
      }
    } else {
      r.warnings.push(`no module files for ${release} (this kernel may have everything built in): the probe is not planned`);
    }

    // network: this host's, as it is
    stage = 'network';
    for (const [name, addrs] of Object.entries(networkInterfaces())) {
      for (const a of addrs ?? []) if (!a.internal && a.family === 'IPv4') r.network.push({ interface: name, address: a.cidr ?? a.address });
    }
    pass(`ip=${s.ip.mode}; this host has ${r.network.length} IPv4 address(es) besides loopback (left as they are)`);

    // mirrors: for real
    stage = 'mirrors';
    const list = [...s.mirrors];
    if (s.mirrorlist) {
      const { request } = await import('undici');
      const res = await request(s.mirrorlist, { headersTimeout: 10_000, bodyTimeout: 10_000 });
      if (res.statusCode !== 200) throw new HfkError('E_MIRRORLIST', `mirror list ${s.mirrorlist}: HTTP ${res.statusCode}`);
      list.push(...parseMirrorList(await res.body.text(), s.mirrorlist));
    }
    if (list.length === 0) throw new UsageError('no mirrors: give hfk.mirrors= or hfk.mirrorlist=');
    const set = new MirrorSet([...new Set(list)], s.proxy ? { proxy: s.proxy } : {});
    try {
      r.ranking = await rankMirrors(set, { name: s.image.name, viaProxy: Boolean(s.proxy) });
      if (!r.ranking.mirrors.some((m) => m.ok > 0)) {
        throw new HfkError('E_BROKEN', `none of the ${list.length} mirrors answered: ${r.ranking.mirrors.map((m) => `${m.url}: ${m.error}`).join('; ')}`, { hint: 'check the mirror URLs and the image name' });
      }
      pass(`${r.ranking.mirrors.filter((m) => m.ok > 0).length} of ${list.length} mirrors answer; best ${r.ranking.mirrors[0]!.url}`);

      // manifest: fetched and verified
      stage = 'manifest';
      const ranked = r.ranking.mirrors.map((m) => set.mirrors.find((x) => x.url === m.url)!);
      const image = await loadImage({ name: s.image.name, version: s.image.version, key, mirrors: ranked, trust: TrustState.memory() });
      const h = image.manifest.header;
      r.manifest = { name: h.name, version: h.version, size: h.imageSize, filesystem: h.filesystem, blocks: h.blockCount, from: image.from };
      pass(`${h.name} v${h.version} signed by ${h.keyId}, ${h.blockCount} blocks, ${h.filesystem}`);

      // the first block, through the fetcher
      stage = 'fuse';
      const f = new BlockFetcher({ mirrors: set, manifest: image.manifest, memory: new HeapCache(1 << 20), mode: 'soft', softTimeoutMs: Number(o.timeout ?? 10) * 1000, readaheadBytes: 0 });
      const t0 = performance.now();
      const head = await f.read(0, Math.min(FSTYPE_PROBE_BYTES, h.imageSize));
      await f.close();
      const fsType = detectFilesystem(head);
      r.firstBlock = { bytes: head.length, ms: Math.round(performance.now() - t0), filesystem: fsType };
      if (fsType === 'unknown') throw new HfkError('E_FORMAT', `the image starts with no filesystem the init can mount`, { hint: 'publish a squashfs, ext4, iso9660 or erofs image' });
      pass(`read ${head.length} bytes in ${r.firstBlock.ms} ms: a ${fsType} superblock`);
      stage = 'rootfs';
      r.plan = [
        `probe: modprobe ${r.modules?.wouldLoad.join(' ') || '(nothing)'} + fuse loop squashfs overlay`,
        `network: ${s.ip.mode === 'static' ? `static ${s.ip.address}/${s.ip.prefix}` : s.ip.mode}`,
        `mirrors: ${r.ranking.mirrors.filter((m) => m.ok > 0).map((m) => m.url).join(' > ')}`,
        `cache: ${formatMountSource(s.cache)} → ${s.cache.kind === 'tmpfs' ? PATHS.cacheTmpfs : `${PATHS.cacheDev}/hfk-cache`}`,
        `reader: @hfk-reader serving ${PATHS.fuse}/${h.name}.img (${h.name} v${h.version})`,
        `mount -t ${fsType} -o loop,ro ${PATHS.fuse}/${h.name}.img ${PATHS.ro}`,
        `overlay: ${formatMountSource(s.overlay)} at ${PATHS.rw}; mount -t overlay overlay -o lowerdir=${PATHS.ro},upperdir=${PATHS.rw}/upper,workdir=${PATHS.rw}/work ${PATHS.newroot}`,
        `switch_root ${PATHS.newroot} /sbin/init${s.initArgs.length ? ` ${s.initArgs.join(' ')}` : ''}`,
      ];
    } finally {
      await set.close();
    }
    r.ok = true;
  } catch (e) {
    r.checks.push({ stage, ok: false, detail: describeError(e) });
    r.error = {
      stage,
      code: e instanceof HfkError ? e.code : 'E_INTERNAL',
      message: e instanceof Error ? e.message : String(e),
      hint: e instanceof HfkError ? (e.hint ?? null) : null,
    };
  }
  return r;
}

export function formatDryRun(r: DryRunReport): string {
  const lines: string[] = [`hfk-init --dry-run: kernel command line: ${r.cmdline || '(empty)'}`];
  for (const w of r.warnings) lines.push(`warning: ${w}`);
  for (const c of r.checks) lines.push(`${c.ok ? 'ok  ' : 'FAIL'} [${c.stage}] ${c.detail}`);
  if (r.modules) lines.push(`modules the probe would load (${r.modules.from}): ${r.modules.wouldLoad.join(' ') || 'none'}`);
  if (r.ranking) lines.push(formatRanking(r.ranking).trimEnd());
  if (r.plan.length) lines.push('plan:', ...r.plan.map((p) => `  ${p}`));
  lines.push(r.ok ? 'the boot would succeed' : `the boot would fail at stage ${r.error?.stage}: ${r.error?.message}${r.error?.hint ? `\n  hint: ${r.error.hint}` : ''}`);
  return `${lines.join('\n')}\n`;
}
