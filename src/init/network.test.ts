import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import type { IpConfig } from '../config/cmdline.ts';
import {
  bringUpNetwork,
  dhcpTries,
  formatNetworkReport,
  formatResolvConf,
  hasCarrier,
  listInterfaces,
  NetworkError,
  type NetworkOptions,
  parseDefaultGateway,
  parseIpAddrShow,
  parseLease,
  parseResolvConf,
  staticCommands,
  udhcpcArgs,
} from './network.ts';
import type { CommandResult } from './steps.ts';

const BUSYBOX_ADDR = `4: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400 qdisc pfifo_fast qlen 1000
    link/ether 02:fc:00:00:00:01 brd ff:ff:ff:ff:ff:ff
    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0
       valid_lft forever preferred_lft forever
    inet6 fe80::fc:ff:fe00:1/64 scope link
       valid_lft forever preferred_lft forever
`;
const IPROUTE2_ONELINE = '2: enp0s3    inet 10.0.2.15/24 metric 100 brd 10.0.2.255 scope global dynamic enp0s3\\       valid_lft 86000sec\n2: enp0s3    inet 10.0.3.7/16 scope global secondary enp0s3\n';

describe('parsers', () => {
  test.each([
    [BUSYBOX_ADDR, ['192.0.2.2/24']],
    [IPROUTE2_ONELINE, ['10.0.2.15/24', '10.0.3.7/16']],
    ['3: eth1: <BROADCAST,MULTICAST> mtu 1500\n    link/ether 52:54:00:12:34:56 brd ff:ff:ff:ff:ff:ff\n', []],
    ['', []],
  ])('parseIpAddrShow %#', (text, expected) => {
    expect(parseIpAddrShow(text)).toEqual(expected);
  });

  test.each([
    ['default via 192.0.2.1 dev eth0 \n192.0.2.0/24 dev eth0 scope link  src 192.0.2.2 \n', undefined, '192.0.2.1'],
    ['default via 10.0.2.2 dev enp0s3 proto dhcp src 10.0.2.15 metric 100\n', 'enp0s3', '10.0.2.2'],
    ['default via 10.0.9.1 dev eth1\ndefault via 10.0.2.2 dev eth0\n', 'eth0', '10.0.2.2'],
    ['192.0.2.0/24 dev eth0 scope link\n', 'eth0', undefined],
    ['', undefined, undefined],
  ] as const)('parseDefaultGateway %#', (text, dev, expected) => {
    expect(parseDefaultGateway(text, dev)).toBe(expected);
  });

  test('resolv.conf', () => {
    expect(parseResolvConf('# by udhcpc\nsearch lan\nnameserver 10.0.2.3\n nameserver 1.1.1.1 \noptions ndots:1\n')).toEqual(['10.0.2.3', '1.1.1.1']);
    expect(parseResolvConf(formatResolvConf(['9.9.9.9', '8.8.8.8']))).toEqual(['9.9.9.9', '8.8.8.8']);
  });

  test('the lease file of the udhcpc script', () => {
    const text = "interface='eth0'\nip='10.0.2.15'\nmask='24'\nrouter='10.0.2.2 10.0.2.1'\ndomain='it'\\''s.lan'\nhostname=''\nnot a line\n";
    expect(parseLease(text)).toEqual({ interface: 'eth0', ip: '10.0.2.15', mask: '24', router: '10.0.2.2 10.0.2.1', domain: "it's.lan" });
  });

  test('udhcpc command line', () => {
    expect(udhcpcArgs('eth0', { tries: 10, script: '/usr/share/udhcpc/default.script' })).toEqual([
      'udhcpc', '-i', 'eth0', '-f', '-n', '-q', '-t', '10', '-T', '3', '-s', '/usr/share/udhcpc/default.script',
    ]);
    expect(udhcpcArgs('eth1', { tries: 1, script: '/s', hostname: 'box' }).slice(-2)).toEqual(['-x', 'hostname:box']);
  });

  test.each([[30_000, 10], [1000, 1], [1, 1], [31_000, 11]])('dhcpTries(%d) = %d', (ms, tries) => {
    expect(dhcpTries(ms)).toBe(tries);
  });

  test('static commands', () => {
    expect(staticCommands('eth0', { mode: 'static', address: '10.0.2.15', prefix: 24, netmask: '255.255.255.0', gateway: '10.0.2.2', dns: [] })).toEqual([
      ['ip', 'addr', 'add', '10.0.2.15/24', 'dev', 'eth0'],
      ['ip', 'route', 'add', 'default', 'via', '10.0.2.2', 'dev', 'eth0'],
    ]);
    expect(staticCommands('eth0', { mode: 'static', address: '10.0.0.9', prefix: 8, netmask: '255.0.0.0', dns: [] })).toEqual([['ip', 'addr', 'add', '10.0.0.9/8', 'dev', 'eth0']]);
  });
});

// ---------------------------------------------------------------------------
// The stage, against a fixture sysfs, a fake runner and a fake clock

const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

interface Iface {
  physical?: boolean;
  type?: number;
  carrier?: '0' | '1' | null; // null: reading fails, as while the link is down
}

function fixture(ifaces: Record<string, Iface>): string {
  const root = mkdtempSync(join(tmpdir(), 'hfk-net-'));
  roots.push(root);
  mkdirSync(join(root, 'sys/class/net'), { recursive: true });
  for (const [name, i] of Object.entries(ifaces)) addIface(root, name, i);
  return root;
}

function addIface(root: string, name: string, i: Iface): void {
  const dir = join(root, 'sys/class/net', name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'type'), `${i.type ?? (name === 'lo' ? 772 : 1)}\n`);
  if (i.physical ?? name.startsWith('eth')) {
    mkdirSync(join(root, 'sys/devices/pci0000:00', name), { recursive: true });
    symlinkSync(join(root, 'sys/devices/pci0000:00', name), join(dir, 'device'));
  }
  setCarrier(root, name, i.carrier ?? null);
}

function setCarrier(root: string, name: string, carrier: '0' | '1' | null): void {
  const path = join(root, 'sys/class/net', name, 'carrier');
  if (carrier === null) rmSync(path, { force: true });
  else writeFileSync(path, `${carrier}\n`);
}

const ok = (stdout = ''): CommandResult => ({ code: 0, signal: null, stdout, stderr: '', timedOut: false });
const fail = (code: number, stderr: string): CommandResult => ({ code, signal: null, stdout: '', stderr, timedOut: false });

type Rule = (argv: readonly string[]) => CommandResult | undefined;

/** A runner answering by rules (first match wins); records every command. */
function fakeRunner(root: string, rules: Rule[] = []) {
  const commands: string[] = [];
  const run = async (argv: readonly string[]): Promise<CommandResult> => {
    commands.push(argv.join(' '));
    for (const rule of rules) {
      const r = rule(argv);
      if (r) return r;
    }
    if (argv[0] === 'udhcpc') {
      // what the udhcpc script does on "bound"
      mkdirSync(join(root, 'etc'), { recursive: true });
      writeFileSync(join(root, 'etc/resolv.conf'), 'nameserver 10.0.2.3\n');
      mkdirSync(join(root, 'run/hfk'), { recursive: true });
      writeFileSync(join(root, 'run/hfk', `lease.${argv[2]}`), `interface='${argv[2]}'\nip='10.0.2.15'\nmask='24'\nrouter='10.0.2.2'\ndns='10.0.2.3'\nsiaddr='10.0.2.2'\n`);
      return ok('udhcpc: lease of 10.0.2.15 obtained from 10.0.2.2, lease time 86400\n');
    }
    if (argv.join(' ').startsWith('ip addr show dev')) return ok(BUSYBOX_ADDR.replace(/eth0/g, argv[4]!).replace('192.0.2.2/24', '10.0.2.15/24'));
    if (argv.join(' ') === 'ip route show') return ok(`default via 10.0.2.2 dev ${commands.find((c) => c.startsWith('udhcpc'))?.split(' ')[2] ?? 'eth0'}\n`);
    return ok();
  };
  return { commands, run };
}

/** A clock that moves only when the code under test sleeps; `onSleep` changes the world. */
function fakeTime(onSleep: (now: number) => void = () => {}) {
  let now = 0;
  return {
    clock: () => now,
    sleep: async (ms: number) => {
      now += ms;
      onSleep(now);
    },
  };
}

function options(root: string, ip: IpConfig, rest: Partial<NetworkOptions> & Pick<NetworkOptions, 'run'>): NetworkOptions {
  return { root, ip, timeoutMs: 5000, pollMs: 100, udhcpcScript: '/usr/share/udhcpc/default.script', ...fakeTime(), ...rest };
}

async function networkError(p: Promise<unknown>): Promise<NetworkError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(NetworkError);
    return e as NetworkError;
  }
  throw new Error('expected a NetworkError');
}

describe('bringUpNetwork', () => {
  test('DHCP: waits for carrier after the link goes up, runs udhcpc, reports what it got', async () => {
    const root = fixture({ lo: {}, eth0: {}, tunl0: { physical: false, type: 768 } });
    const { commands, run } = fakeRunner(root);
    // carrier comes 300 ms after the link is set up
    let upAt: number | undefined;
    const time = fakeTime((now) => {
      if (upAt !== undefined && now - upAt >= 300) setCarrier(root, 'eth0', '1');
    });
    const report = await bringUpNetwork(
      options(root, { mode: 'dhcp', dns: [] }, {
        ...time,
        run: async (argv) => {
          if (argv.join(' ') === 'ip link set eth0 up') upAt = time.clock();
          return run(argv);
        },
      }),
    );
    expect(commands).toEqual([
      'ip link set lo up', // the loopback first: 127.0.0.1 exists only once it is up
      'ip link set eth0 up',
      'udhcpc -i eth0 -f -n -q -t 2 -T 3 -s /usr/share/udhcpc/default.script',
      'ip addr show dev eth0',
      'ip route show',
    ]);
    expect(report).toEqual({
      method: 'dhcp', interface: 'eth0', address: '10.0.2.15/24', gateway: '10.0.2.2', dns: ['10.0.2.3'], hostname: null,
      interfaces: ['eth0'], attempts: [{ interface: 'eth0', ok: true }],
      lease: { interface: 'eth0', ip: '10.0.2.15', mask: '24', router: '10.0.2.2', dns: '10.0.2.3', siaddr: '10.0.2.2' },
      waitInterfaceMs: 0, waitCarrierMs: 300, configureMs: 0, elapsedMs: 300,
    });
    expect(formatNetworkReport(report)).toBe('eth0 10.0.2.15/24 via 10.0.2.2, dns 10.0.2.3 (dhcp, 300 ms)');
  });

  test('waits for an interface that appears late (a driver still probing)', async () => {
    const root = fixture({ lo: {} });
    const { commands, run } = fakeRunner(root);
    const time = fakeTime((now) => {
      if (now === 400) addIface(root, 'eth0', { carrier: '1' });
    });
    const report = await bringUpNetwork(options(root, { mode: 'dhcp', dns: [] }, { ...time, run }));
    expect(report.interface).toBe('eth0');
    expect(report.waitInterfaceMs).toBe(400);
    expect(commands.slice(0, 2)).toEqual(['ip link set lo up', 'ip link set eth0 up']);
  });

  test('no interface: names the loaded modules and the virtual interfaces', async () => {
    const root = fixture({ lo: {}, tunl0: { physical: false, type: 768 }, sit0: { physical: false, type: 776 } });
    const { commands, run } = fakeRunner(root);
    const e = await networkError(bringUpNetwork(options(root, { mode: 'dhcp', dns: [] }, { run, loadedModules: ['virtio_pci', 'virtio_blk'] })));
    expect(e.code).toBe('E_NO_INTERFACE');
    expect(e.message).toBe('no network interface appeared within 5 s: the driver may be missing; loaded modules: virtio_pci, virtio_blk (only virtual interfaces: sit0, tunl0)');
    expect(e.hint).toContain('init.modules');
    expect(commands).toEqual([]);
  });

  test('the interface named by ip= must appear', async () => {
    const root = fixture({ lo: {}, eth0: { carrier: '1' } });
    const { run } = fakeRunner(root);
    const e = await networkError(bringUpNetwork(options(root, { mode: 'dhcp', device: 'eth1', dns: [] }, { run })));
    expect(e.code).toBe('E_NO_INTERFACE');
    expect(e.message).toBe('interface eth1 (named by ip=) did not appear within 5 s; present: eth0; loaded modules: none');
  });

  test('an interface named by ip= is used even when virtual', async () => {
    const root = fixture({ lo: {}, eth0: { carrier: '1' }, br0: { physical: false, carrier: '1' } });
    const { commands, run } = fakeRunner(root);
    const report = await bringUpNetwork(options(root, { mode: 'dhcp', device: 'br0', dns: [] }, { run }));
    expect(report.interface).toBe('br0');
    expect(commands.slice(0, 3)).toEqual(['ip link set lo up', 'ip link set br0 up', 'udhcpc -i br0 -f -n -q -t 2 -T 3 -s /usr/share/udhcpc/default.script']);
  });

  test('no carrier', async () => {
    const root = fixture({ lo: {}, eth0: { carrier: '0' }, eth1: { carrier: null } });
    const { commands, run } = fakeRunner(root);
    const e = await networkError(bringUpNetwork(options(root, { mode: 'dhcp', dns: [] }, { run, timeoutMs: 2500 })));
    expect(e.code).toBe('E_NO_CARRIER');
    expect(e.message).toBe('no carrier on eth0, eth1 after 2.5 s: the link is down');
    expect(commands).toEqual(['ip link set lo up', 'ip link set eth0 up', 'ip link set eth1 up']);
  });

  test('DHCP fails on one interface: the next one with carrier is tried', async () => {
    const root = fixture({ eth0: { carrier: '1' }, eth1: { carrier: '0' } });
    const { commands, run } = fakeRunner(root, [
      (argv) => {
        if (argv[0] === 'udhcpc' && argv[2] === 'eth0') {
          setCarrier(root, 'eth1', '1'); // eth1's link came up meanwhile
          return fail(1, 'udhcpc: started, v1.35.0\nudhcpc: broadcasting discover\nudhcpc: no lease, failing\n');
        }
        return undefined;
      },
    ]);
    const report = await bringUpNetwork(options(root, { mode: 'dhcp', hostname: 'box', dns: [] }, { run }));
    expect(report.interface).toBe('eth1');
    expect(report.hostname).toBe('box');
    expect(readFileSync(join(root, 'proc/sys/kernel/hostname'), 'utf8')).toBe('box\n');
    expect(report.attempts).toEqual([
      { interface: 'eth0', ok: false, message: 'udhcpc -i eth0 -f -n -q -t 2 -T 3 -s /usr/share/udhcpc/default.script -x hostname:box: exit status 1: udhcpc: started, v1.35.0 / udhcpc: broadcasting discover / udhcpc: no lease, failing' },
      { interface: 'eth1', ok: true },
    ]);
    expect(commands.filter((c) => c.startsWith('udhcpc')).map((c) => c.split(' ')[2])).toEqual(['eth0', 'eth1']);
  });

  test('DHCP timed out everywhere', async () => {
    const root = fixture({ eth0: { carrier: '1' } });
    const { run } = fakeRunner(root, [(argv) => (argv[0] === 'udhcpc' ? fail(1, 'udhcpc: no lease, failing') : undefined)]);
    const e = await networkError(bringUpNetwork(options(root, { mode: 'dhcp', dns: [] }, { run, timeoutMs: 30_000 })));
    expect(e.code).toBe('E_DHCP_TIMEOUT');
    expect(e.message).toBe('DHCP timed out: no lease on eth0 after 10 discovers (udhcpc -i eth0 -f -n -q -t 10 -T 3 -s /usr/share/udhcpc/default.script: exit status 1: udhcpc: no lease, failing)');
    expect(e.hint).toContain('ip=CLIENT::GATEWAY:NETMASK::eth0:off:DNS');
  });

  test('DNS servers given in ip= replace those from DHCP', async () => {
    const root = fixture({ eth0: { carrier: '1' } });
    const { run } = fakeRunner(root);
    const report = await bringUpNetwork(options(root, { mode: 'dhcp', dns: ['9.9.9.9'] }, { run }));
    expect(report.dns).toEqual(['9.9.9.9']);
  });

  test('static ip=: address, default route, resolv.conf', async () => {
    const root = fixture({ eth0: { carrier: '1' }, eth1: { carrier: '1' } });
    const { commands, run } = fakeRunner(root, [(argv) => (argv.join(' ') === 'ip route show' ? ok('default via 10.0.2.2 dev eth1\n') : undefined)]);
    const report = await bringUpNetwork(
      options(root, { mode: 'static', address: '10.0.2.15', prefix: 24, netmask: '255.255.255.0', gateway: '10.0.2.2', device: 'eth1', dns: ['10.0.2.3', '1.1.1.1'] }, { run }),
    );
    expect(commands).toEqual([
      'ip link set lo up',
      'ip link set eth1 up',
      'ip addr add 10.0.2.15/24 dev eth1',
      'ip route add default via 10.0.2.2 dev eth1',
      'ip addr show dev eth1',
      'ip route show',
    ]);
    expect(readFileSync(join(root, 'etc/resolv.conf'), 'utf8')).toBe('# written by hfk-init from ip=\nnameserver 10.0.2.3\nnameserver 1.1.1.1\n');
    expect(report).toMatchObject({ method: 'static', interface: 'eth1', address: '10.0.2.15/24', gateway: '10.0.2.2', dns: ['10.0.2.3', '1.1.1.1'], attempts: [], lease: null });
  });

  test('static ip=: an address already there is fine, a refused one is an error', async () => {
    const root = fixture({ eth0: { carrier: '1' } });
    const cfg: IpConfig = { mode: 'static', address: '10.0.2.15', prefix: 24, netmask: '255.255.255.0', gateway: '10.0.2.2', dns: [] };
    const exists = fakeRunner(root, [(argv) => (argv[1] === 'addr' && argv[2] === 'add' ? fail(2, 'ip: RTNETLINK answers: File exists') : undefined)]);
    await expect(bringUpNetwork(options(root, cfg, { run: exists.run }))).resolves.toMatchObject({ interface: 'eth0' });
    const refused = fakeRunner(root, [(argv) => (argv[1] === 'route' ? fail(2, 'ip: RTNETLINK answers: Network is unreachable') : undefined)]);
    const e = await networkError(bringUpNetwork(options(root, cfg, { run: refused.run })));
    expect(e.code).toBe('E_NETWORK_CONFIG');
    expect(e.message).toBe('cannot configure eth0 from ip=: ip route add default via 10.0.2.2 dev eth0: exit status 2: ip: RTNETLINK answers: Network is unreachable');
  });

  test('a link that cannot be set up', async () => {
    const root = fixture({ eth0: {} });
    const { run } = fakeRunner(root, [(argv) => (argv[1] === 'link' ? fail(1, 'ip: SIOCSIFFLAGS: No such device') : undefined)]);
    const e = await networkError(bringUpNetwork(options(root, { mode: 'dhcp', dns: [] }, { run })));
    expect(e.code).toBe('E_NETWORK_CONFIG');
    expect(e.message).toBe('cannot bring eth0 up: ip link set eth0 up: exit status 1: ip: SIOCSIFFLAGS: No such device');
  });

  test('ip=off configures nothing', async () => {
    const root = fixture({ eth0: { carrier: '1' } });
    const { commands, run } = fakeRunner(root);
    const report = await bringUpNetwork(options(root, { mode: 'none' }, { run }));
    expect(report.method).toBe('none');
    expect(commands).toEqual([]);
    expect(formatNetworkReport(report)).toBe('no network configured (ip=off)');
  });
});

describe("this host's /sys/class/net", () => {
  test('lists interfaces without the loopback; virtual ones are marked', () => {
    expect(existsSync('/sys/class/net/lo'), 'this host has no /sys/class/net/lo: sysfs is not mounted').toBe(true);
    const all = listInterfaces('/');
    expect(all.map((i) => i.name)).not.toContain('lo');
    for (const i of all) {
      expect(i.physical).toBe(existsSync(`/sys/class/net/${i.name}/device`));
      expect(typeof hasCarrier('/', i.name)).toBe('boolean');
    }
  });
});
