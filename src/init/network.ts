// The network stage: wait for an interface, bring it up, wait for carrier,
// then DHCP (busybox udhcpc and its script) or the static address of ip=.
// The command runner, the filesystem root (sysfs, /etc/resolv.conf) and the
// clock are injected; waiting polls /sys/class/net/X/carrier, which has no
// event to wait on without netlink.
//
// The parsers and command builders at the top are pure and table-tested.

import { mkdirSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { HfkError } from '../errors.ts';
import type { IpConfig } from '../config/cmdline.ts';
import { type CommandRunner, commandFailure, type Logger } from './steps.ts';

export const UDHCPC_SCRIPT = '/usr/share/udhcpc/default.script';
/** Where that script writes lease.IFACE (its LEASE_DIR). */
export const LEASE_DIR = '/run/hfk';
/** Seconds between DHCP discover packets (udhcpc -T). */
const DHCP_RETRY_SECONDS = 3;

// ---------------------------------------------------------------------------
// Pure parts

/** IPv4 addresses (CIDR) in `ip addr show` output, busybox or iproute2. */
export function parseIpAddrShow(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\s)inet\s+(\d{1,3}(?:\.\d{1,3}){3}(?:\/\d{1,2})?)/gm)) out.push(m[1]!);
  return out;
}

/** The default gateway in `ip route show` output (on `device`, if given). */
export function parseDefaultGateway(text: string, device?: string): string | undefined {
  for (const line of text.split('\n')) {
    const m = /^default\s+via\s+(\S+)(?:.*?\sdev\s+(\S+))?/.exec(line.trim());
    if (m && (device === undefined || m[2] === undefined || m[2] === device)) return m[1]!;
  }
  return undefined;
}

export function parseResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m) out.push(m[1]!);
  }
  return out;
}

/**
 * The lease the udhcpc script (initramfs/udhcpc.script) writes to
 * LEASE_DIR/lease.IFACE: KEY='VALUE' lines, a ' inside a value written '\''.
 * Empty values are left out.
 */
export function parseLease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)='(.*)'$/.exec(line);
    if (m && m[2] !== '') out[m[1]!] = m[2]!.replace(/'\\''/g, "'");
  }
  return out;
}

export function formatResolvConf(dns: readonly string[]): string {
  return `# written by hfk-init from ip=\n${dns.map((d) => `nameserver ${d}\n`).join('')}`;
}

/** udhcpc for one interface: quit after a lease (-q), give up after `tries` discovers (-n). */
export function udhcpcArgs(iface: string, options: { tries: number; script: string; hostname?: string | undefined }): string[] {
  return [
    'udhcpc',
    '-i', iface,
    '-f', '-n', '-q',
    '-t', String(options.tries),
    '-T', String(DHCP_RETRY_SECONDS),
    '-s', options.script,
    ...(options.hostname ? ['-x', `hostname:${options.hostname}`] : []),
  ];
}

/** How many discovers fit in `timeoutMs` (at least one). */
export function dhcpTries(timeoutMs: number): number {
  return Math.max(1, Math.ceil(timeoutMs / 1000 / DHCP_RETRY_SECONDS));
}

/** The `ip` commands for a static ip= (the link is already up). */
export function staticCommands(iface: string, cfg: Extract<IpConfig, { mode: 'static' }>): string[][] {
  const cmds = [['ip', 'addr', 'add', `${cfg.address}/${cfg.prefix}`, 'dev', iface]];
  if (cfg.gateway) cmds.push(['ip', 'route', 'add', 'default', 'via', cfg.gateway, 'dev', iface]);
  return cmds;
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

// ---------------------------------------------------------------------------
// Errors

export type NetworkErrorCode = 'E_NO_INTERFACE' | 'E_NO_CARRIER' | 'E_DHCP_TIMEOUT' | 'E_NETWORK_CONFIG';

export class NetworkError extends HfkError {
  override name = 'NetworkError';
  declare readonly code: NetworkErrorCode;
  constructor(code: NetworkErrorCode, message: string, hint: string) {
    super(code, message, { hint });
  }
}

// ---------------------------------------------------------------------------
// sysfs (under the injected root)

export interface NetInterface {
  readonly name: string;
  /** Backed by a device (has a `device` link); virtual ones (tunl0, sit0, bonds) are not. */
  readonly physical: boolean;
  /** ARPHRD type: 1 Ethernet, 772 loopback, 32 InfiniBand. */
  readonly type: number | undefined;
}

function sysNet(root: string, ...parts: string[]): string {
  return join(root, 'sys', 'class', 'net', ...parts);
}

/** The interfaces in ROOT/sys/class/net, without the loopback, sorted by name. */
export function listInterfaces(root: string): NetInterface[] {
  let names: string[];
  try {
    names = readdirSync(sysNet(root));
  } catch {
    return [];
  }
  const out: NetInterface[] = [];
  for (const name of names.sort()) {
    let type: number | undefined;
    try {
      type = Number(readFileSync(sysNet(root, name, 'type'), 'utf8').trim());
    } catch {
      type = undefined;
    }
    if (name === 'lo' || type === 772) continue;
    out.push({ name, physical: existsSync(sysNet(root, name, 'device')), type });
  }
  return out;
}

/** carrier reads 1 when the link is up; reading it fails (EINVAL) while the interface is down. */
export function hasCarrier(root: string, name: string): boolean {
  try {
    return readFileSync(sysNet(root, name, 'carrier'), 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// The stage

export interface NetworkOptions {
  /** Filesystem root: sysfs at ROOT/sys, ROOT/etc/resolv.conf, ROOT/proc/sys/kernel/hostname. */
  readonly root: string;
  readonly ip: IpConfig;
  readonly run: CommandRunner;
  /** How long each wait lasts: for an interface, for carrier, for DHCP (hfk.timeout). */
  readonly timeoutMs: number;
  readonly udhcpcScript?: string;
  /** The script's LEASE_DIR, under ROOT (default /run/hfk). */
  readonly leaseDir?: string;
  /** Named in the "no interface" error: what the probe loaded. */
  readonly loadedModules?: readonly string[];
  readonly pollMs?: number;
  readonly clock?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly log?: Logger;
}

export interface DhcpAttempt {
  readonly interface: string;
  readonly ok: boolean;
  readonly message?: string;
}

export interface NetworkReport {
  readonly method: 'dhcp' | 'static' | 'none';
  /** The configured interface; null for ip=off. */
  readonly interface: string | null;
  /** IPv4 address with prefix, e.g. 10.0.2.15/24. */
  readonly address: string | null;
  readonly gateway: string | null;
  readonly dns: readonly string[];
  readonly hostname: string | null;
  /** The interfaces that were candidates, in order. */
  readonly interfaces: readonly string[];
  readonly attempts: readonly DhcpAttempt[];
  /** What the DHCP server said (router, dns, domain, siaddr, lease, …), when the script saved it. */
  readonly lease: Readonly<Record<string, string>> | null;
  /** How long each phase took, and the whole stage. */
  readonly waitInterfaceMs: number;
  readonly waitCarrierMs: number;
  readonly configureMs: number;
  readonly elapsedMs: number;
}

async function poll<T>(check: () => T | undefined, timeoutMs: number, o: Required<Pick<NetworkOptions, 'clock' | 'sleep' | 'pollMs'>>): Promise<T | undefined> {
  const deadline = o.clock() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined) return v;
    if (o.clock() >= deadline) return undefined;
    await o.sleep(Math.min(o.pollMs, Math.max(1, deadline - o.clock())));
  }
}

function writeFileMkdir(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
}

/**
 * Brings up the network as ip= says (DHCP by default). Throws NetworkError:
 * E_NO_INTERFACE, E_NO_CARRIER, E_DHCP_TIMEOUT or E_NETWORK_CONFIG.
 */
export async function bringUpNetwork(options: NetworkOptions): Promise<NetworkReport> {
  const { root, ip, run, log } = options;
  const clock = options.clock ?? (() => performance.now());
  const timing = {
    clock,
    sleep: options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms))),
    pollMs: options.pollMs ?? 100,
  };
  const t0 = clock();
  const none: NetworkReport = {
    method: 'none', interface: null, address: null, gateway: null, dns: [], hostname: null, interfaces: [], attempts: [], lease: null,
    waitInterfaceMs: 0, waitCarrierMs: 0, configureMs: 0, elapsedMs: 0,
  };
  if (ip.mode === 'none') return none;
  const wanted = ip.device;

  // 1. an interface
  const candidates = await poll(() => {
    const all = listInterfaces(root);
    const picked = wanted === undefined ? all.filter((i) => i.physical).map((i) => i.name) : all.some((i) => i.name === wanted) ? [wanted] : [];
    return picked.length ? picked : undefined;
  }, options.timeoutMs, timing);
  const t1 = clock();
  if (!candidates) {
    const present = listInterfaces(root).map((i) => i.name);
    const modules = options.loadedModules?.length ? options.loadedModules.join(', ') : 'none';
    throw wanted === undefined
      ? new NetworkError(
          'E_NO_INTERFACE',
          `no network interface appeared within ${seconds(options.timeoutMs)}: the driver may be missing; loaded modules: ${modules}` +
            (present.length ? ` (only virtual interfaces: ${present.join(', ')})` : ''),
          "find the NIC's PCI id with cat /sys/bus/pci/devices/*/modalias and add its driver to init.modules in hfk.yaml, or rebuild the initramfs with it",
        )
      : new NetworkError(
          'E_NO_INTERFACE',
          `interface ${wanted} (named by ip=) did not appear within ${seconds(options.timeoutMs)}; present: ${present.join(', ') || 'none'}; loaded modules: ${modules}`,
          'kernel interface names (eth0, eth1, …) are used in the initramfs: no udev renames them; check ip link',
        );
  }
  log?.debug(`network interfaces: ${candidates.join(', ')}`);

  // 2. links up; the loopback too (it has 127.0.0.1 only once up): a reader may serve metrics there
  const lo = await run(['ip', 'link', 'set', 'lo', 'up'], { timeoutMs: 10_000 });
  if (lo.code !== 0) log?.warn(`cannot bring the loopback up: ${commandFailure(['ip', 'link', 'set', 'lo', 'up'], lo)}`);
  for (const name of candidates) {
    const argv = ['ip', 'link', 'set', name, 'up'];
    const r = await run(argv, { timeoutMs: 10_000 });
    if (r.code !== 0) throw new NetworkError('E_NETWORK_CONFIG', `cannot bring ${name} up: ${commandFailure(argv, r)}`, 'read dmesg for driver errors about this interface');
  }

  // 3. carrier
  const withCarrier = (): string[] | undefined => {
    const up = candidates.filter((n) => hasCarrier(root, n));
    return up.length ? up : undefined;
  };
  const linked = await poll(withCarrier, options.timeoutMs, timing);
  const t2 = clock();
  if (!linked) {
    throw new NetworkError(
      'E_NO_CARRIER',
      `no carrier on ${candidates.join(', ')} after ${seconds(options.timeoutMs)}: the link is down`,
      'plug in the cable or connect the virtual NIC (QEMU: -nic user,model=virtio-net-pci); ip link shows LOWER_UP when the link is up',
    );
  }

  // 4. addresses
  const hostname = ip.hostname ?? null;
  if (hostname) {
    try {
      writeFileMkdir(join(root, 'proc', 'sys', 'kernel', 'hostname'), `${hostname}\n`);
    } catch (e) {
      log?.warn(`cannot set the hostname to ${hostname}: ${(e as Error).message}`);
    }
  }
  const resolvConf = join(root, 'etc', 'resolv.conf');
  const attempts: DhcpAttempt[] = [];
  let iface: string;
  if (ip.mode === 'static') {
    iface = linked[0]!;
    for (const argv of staticCommands(iface, ip)) {
      const r = await run(argv, { timeoutMs: 10_000 });
      if (r.code !== 0 && !/File exists/i.test(r.stderr)) {
        throw new NetworkError('E_NETWORK_CONFIG', `cannot configure ${iface} from ip=: ${commandFailure(argv, r)}`, 'check the address, netmask and gateway given in ip=');
      }
    }
  } else {
    const script = options.udhcpcScript ?? UDHCPC_SCRIPT;
    const tries = dhcpTries(options.timeoutMs);
    let leased: string | undefined;
    // the interfaces with carrier now first, then any that got it meanwhile
    const queue = [...linked];
    while (queue.length) {
      const name = queue.shift()!;
      const argv = udhcpcArgs(name, { tries, script, hostname: ip.hostname });
      log?.debug(argv.join(' '));
      const r = await run(argv, { timeoutMs: options.timeoutMs + 15_000 });
      for (const line of `${r.stdout}${r.stderr}`.split('\n')) if (line.trim()) log?.debug(line.trim());
      if (r.code === 0) {
        attempts.push({ interface: name, ok: true });
        leased = name;
        break;
      }
      attempts.push({ interface: name, ok: false, message: commandFailure(argv, r) });
      for (const n of withCarrier() ?? []) if (!attempts.some((a) => a.interface === n) && !queue.includes(n)) queue.push(n);
    }
    if (leased === undefined) {
      throw new NetworkError(
        'E_DHCP_TIMEOUT',
        `DHCP timed out: no lease on ${attempts.map((a) => a.interface).join(', ')} after ${tries} discover${tries === 1 ? '' : 's'} ` +
          `(${attempts.map((a) => a.message).join('; ')})`,
        'check that a DHCP server answers on this network, or give a static address: ip=CLIENT::GATEWAY:NETMASK::eth0:off:DNS',
      );
    }
    iface = leased;
  }
  if (ip.dns.length) writeFileMkdir(resolvConf, formatResolvConf(ip.dns));

  // 5. what we got, for the report
  const addr = await run(['ip', 'addr', 'show', 'dev', iface], { timeoutMs: 10_000 });
  const routes = await run(['ip', 'route', 'show'], { timeoutMs: 10_000 });
  let dns: string[] = [];
  try {
    dns = parseResolvConf(readFileSync(resolvConf, 'utf8'));
  } catch {
    dns = [];
  }
  let lease: Record<string, string> | null = null;
  if (ip.mode === 'dhcp') {
    try {
      lease = parseLease(readFileSync(join(root, options.leaseDir ?? LEASE_DIR, `lease.${iface}`), 'utf8'));
    } catch {
      lease = null;
    }
  }
  const t3 = clock();
  return {
    method: ip.mode,
    interface: iface,
    address: parseIpAddrShow(addr.stdout)[0] ?? (ip.mode === 'static' ? `${ip.address}/${ip.prefix}` : lease?.ip ? `${lease.ip}/${lease.mask ?? 24}` : null),
    gateway: parseDefaultGateway(routes.stdout, iface) ?? (ip.mode === 'static' ? (ip.gateway ?? null) : (lease?.router?.split(' ')[0] ?? null)),
    dns,
    hostname,
    interfaces: candidates,
    attempts,
    lease,
    waitInterfaceMs: t1 - t0,
    waitCarrierMs: t2 - t1,
    configureMs: t3 - t2,
    elapsedMs: t3 - t0,
  };
}

/** One line for the log: "eth0 10.0.2.15/24 via 10.0.2.2, dns 10.0.2.3 (dhcp, 1234 ms)". */
export function formatNetworkReport(r: NetworkReport): string {
  if (r.method === 'none') return 'no network configured (ip=off)';
  const via = r.gateway ? ` via ${r.gateway}` : ', no gateway';
  const dns = r.dns.length ? `, dns ${r.dns.join(' ')}` : ', no dns';
  return `${r.interface} ${r.address ?? 'without an address'}${via}${dns} (${r.method}, ${Math.round(r.elapsedMs)} ms)`;
}
