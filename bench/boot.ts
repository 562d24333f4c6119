// Benchmark: booting the same Debian root, the same QEMU settings (TCG, 2
// vCPUs, 2 GiB), measured from QEMU's start to the login prompt:
//   1. local disk: the squashfs as a virtio disk (the limit);
//   2. hfk, cold (empty tmpfs cache), from a local mirror;
//   3. hfk, warm: a second boot with a persistent cache partition;
//   (hfk's image carries a boot profile recorded by an earlier boot, which
//   the reader prefetches; the recording boot is reported too, as "hfk,
//   no profile");
//   4. full download: what dracut root=live:, casper url=, archiso and
//      live-boot fetch= do — download the whole image into RAM, then mount.
// Network methods go through the userspace link emulator, once unlimited
// (loopback) and once at 20 Mbit/s with a 50 ms round trip; it also counts
// the bytes delivered over time, drawn as a timeline (docs/boot-timeline.svg).
//
//   node bench/boot.ts [--links loopback,slow] [--methods local,hfk,warm,full] [--runs 3]
//
// Boots under TCG vary by a few seconds from run to run, so each method is
// booted --runs times (methods taking turns, round by round) and the median
// counts; every run is kept in the result.
//
// HFK_LAB_EXTRA='NAME=value …' adds kernel parameters to every boot, and
// HFK_LAB_CONFIG=FILE bakes an hfk.yaml into hfk's initramfs, e.g. one that
// sets the boot reader's init.reader.readahead or .prefetch (config/hfk.yaml).

import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildInitramfs } from '../src/mkinitrd/build.ts';
import { NODE, REPO } from '../test/helpers/cli.ts';
import { startNginx } from '../test/helpers/mirrors.ts';
import { buildInitrd, GUEST_MIRRORS, labAppend, loginAndReport, powerOff, publishedDebian, shellOutput } from '../test/lab/hfkboot.ts';
import { findKernel, startVm, type Vm } from '../test/lab/qemu.ts';
import { type BenchResult, median, saveResult, turningOrder, workDir } from './common.ts';

const LINKS = {
  loopback: { rtt: 0, rate: '100gbit' },
  slow: { rtt: 50, rate: '20mbit' },
} as const;
type LinkName = keyof typeof LINKS;
const METHODS = ['local', 'hfk', 'warm', 'full'] as const;
type RunMethod = Method | 'hfk-noprofile';
type Method = (typeof METHODS)[number];

const EARLY = `#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/hfk/ro /run/hfk/rw /newroot
`;
const OVERLAY = `mount -t tmpfs tmpfs /run/hfk/rw; mkdir -p /run/hfk/rw/upper /run/hfk/rw/work
mount -t overlay overlay -o lowerdir=/run/hfk/ro,upperdir=/run/hfk/rw/upper,workdir=/run/hfk/rw/work /newroot
for d in dev proc sys run; do mount -o move /$d /newroot/$d; done
exec switch_root /newroot /sbin/init
`;
/** The limit: the image is already on a local disk. */
const LOCAL_INIT = `${EARLY}modprobe -a virtio_pci virtio_blk loop squashfs overlay
i=0; while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
mount -t squashfs -o ro /dev/vda /run/hfk/ro
${OVERLAY}`;
/** Today's live-boot tools: download the whole image into RAM, then mount it. */
const FULL_INIT = `${EARLY}modprobe -a virtio_pci virtio_net loop squashfs overlay
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
ip link set lo up; ip link set eth0 up
udhcpc -i eth0 -q -n -t 20 -s /etc/udhcpc/default.script >/dev/null 2>&1
wget -q -O /run/root.sqfs http://${GUEST_MIRRORS[0]}/image/debian.img || echo "download failed"
mount -t squashfs -o loop,ro /run/root.sqfs /run/hfk/ro
${OVERLAY}`;

interface Run {
  method: RunMethod;
  link: LinkName | 'none';
  loginS: number;
  /** Bytes the guest read: over the link, or from the local disk. */
  bytes: number;
  /** Blocks the reader fetched from the mirrors by the login (its stats.json); none for the disk and full-download boots. */
  blocksFetched?: number;
  /** A warm boot's blocks fetched from the mirrors, at most the last 32 (stats.json's recentFetches). */
  recentFetches?: unknown[];
  timeline: [number, number][];
}

/** The link emulator in front of nginx; counts bytes towards the guest over time. */
async function link(name: LinkName, upstreamPort: number): Promise<{ port: number; timeline: [number, number][]; stop: () => Promise<void> }> {
  const { freePort } = await import('../test/helpers/mirrors.ts');
  const port = await freePort();
  const l = LINKS[name];
  const emu = spawn(NODE, [join(REPO, 'bench/linkemu.ts'), '--map', `127.0.0.1:${port}=127.0.0.1:${upstreamPort},rtt=${l.rtt},rate=${l.rate}`, '--report-ms', '250'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const timeline: [number, number][] = [];
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    emu.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line === 'ready') resolve();
        else {
          const [t, b] = line.split(' ').map(Number);
          timeline.push([t!, b!]);
        }
      }
    });
    emu.once('exit', (c) => reject(new Error(`link emulator exited ${c}`)));
  });
  return {
    port,
    timeline,
    stop: () =>
      new Promise<void>((resolve) => {
        emu.once('exit', () => resolve());
        emu.kill('SIGTERM');
      }),
  };
}

async function waitLogin(vm: Vm, t0: number): Promise<number> {
  await vm.waitFor(/hfk-demo login:/, 1_200_000);
  return (performance.now() - t0) / 1000;
}

export async function benchBoot(opts: { links?: LinkName[]; methods?: Method[]; runs?: number } = {}): Promise<BenchResult> {
  const links = opts.links ?? ['loopback', 'slow'];
  const methods = opts.methods ?? [...METHODS];
  const rounds = opts.runs ?? 3;
  const root = await publishedDebian();
  const dir = workDir('boot');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'www', 'image'), { recursive: true });
  // The benchmark's own copy of the store (hard links): it adds a version with a boot profile.
  const store = join(dir, 'www', 'store');
  execFileSync('cp', ['-al', root.store, store]);
  symlinkSync(root.image, join(dir, 'www', 'image', 'debian.img'));
  const nginx = await startNginx(join(dir, 'www'), dir);
  const kernel = findKernel();
  const guestMirror = `http://${GUEST_MIRRORS[0]}/store/`;
  const hfkInitrd = buildInitrd({ out: join(dir, 'hfk.img'), pub: root.pub, mirrors: [guestMirror], image: 'debian', level: 19, compileCache: true });
  const shellInitrd = async (name: string, content: string) => {
    const out = join(dir, `${name}.img`);
    await buildInitramfs({ out, modulesDir: kernel.modulesDir, init: { kind: 'shell', content }, compress: 'zstd', level: 19 });
    return out;
  };
  const localInitrd = methods.includes('local') ? await shellInitrd('local', LOCAL_INIT) : '';
  const fullInitrd = methods.includes('full') ? await shellInitrd('full', FULL_INIT) : '';
  const vmBase = { kernel: kernel.kernel, memoryMiB: 2048, cpus: 2, timeoutMs: 1_500_000 } as const;
  /** Every measured boot; `runs` below keeps the median one of each method and link. */
  const all: Run[] = [];
  const failures: { method: string; link: string; error: string }[] = [];
  try {
    if (methods.includes('hfk') || methods.includes('warm')) {
      // A first boot (no profile yet) records the profile; hfk publishes it with the image.
      const l = await link('loopback', nginx.port);
      const t0 = performance.now();
      const vm = startVm({ ...vmBase, name: 'bench-hfk-record', initrd: hfkInitrd, append: labAppend(), net: { restrict: true, guestfwd: [{ guestIp: GUEST_MIRRORS[0], guestPort: 80, hostPort: l.port }] } });
      try {
        const r = await loginAndReport(vm, t0, 1_200_000);
        const tl = l.timeline.filter(([t]) => t <= r.timeToLoginMs + 500);
        const bytes = tl.length ? tl[tl.length - 1]![1] : 0;
        all.push({ method: 'hfk-noprofile', link: 'loopback', loginS: r.timeToLoginMs / 1000, bytes, timeline: tl });
        process.stderr.write(`hfk without a profile over loopback: login ${(r.timeToLoginMs / 1000).toFixed(1)} s, fetched ${(bytes / 1e6).toFixed(1)} MB\n`);
        writeFileSync(join(dir, 'profile.json'), JSON.stringify({ profile: r.stats.profile }));
        await powerOff(vm);
      } finally {
        await vm.stop();
        await l.stop();
      }
      execFileSync(NODE, [join(REPO, 'dist/hfk.mjs'), 'publish', root.image, '--store', store, '--name', 'debian', '--key', root.key, '--profile', join(dir, 'profile.json')], { stdio: 'ignore' });
    }
    const bootLocal = async () => {
      const t0 = performance.now();
      const vm = startVm({ ...vmBase, name: 'bench-local', initrd: localInitrd, append: labAppend(), disks: [{ path: root.image, format: 'raw', readonly: true, interface: 'virtio' }], net: false });
      try {
        const loginS = await waitLogin(vm, t0);
        vm.send('root\n');
        await vm.waitFor(/root@hfk-demo:~#/, 60_000);
        const stat = await shellOutput(vm, 'cat /sys/block/vda/stat');
        const bytes = Number(stat.split(/\s+/)[2]) * 512;
        all.push({ method: 'local', link: 'none', loginS, bytes, timeline: [] });
        process.stderr.write(`local disk: login ${loginS.toFixed(1)} s, read ${(bytes / 1e6).toFixed(1)} MB\n`);
        await powerOff(vm);
      } finally {
        await vm.stop();
      }
    };
    // Each round boots every method once, in an order that turns round by round.
    const filled = new Set<LinkName>();
    const order = [...(methods.includes('local') ? ['local' as const] : []), ...links.flatMap((ln) => methods.filter((m) => m !== 'local').map((m) => [ln, m] as const))];
    for (let round = 0; round < rounds; round++) {
      for (const k of turningOrder(order.length, round)) {
        const item = order[k]!;
        if (item === 'local') {
          await bootLocal();
          continue;
        }
        const [ln, method] = item;
        const cacheDisk = join(dir, `cache-${ln}.img`);
        if (method === 'warm' && !filled.has(ln)) {
          rmSync(cacheDisk, { force: true });
          execFileSync('truncate', ['-s', '512M', cacheDisk]);
          execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'hfk-cache', cacheDisk]);
        }
        // warm: a first boot fills the cache partition (once per link); the later ones are measured
        const passes = method === 'warm' && !filled.has(ln) ? ['fill', 'measure'] : ['measure'];
        if (method === 'warm') filled.add(ln);
        for (const pass of passes) {
          const l = await link(ln, nginx.port);
          const t0 = performance.now();
          const vm = startVm({
            ...vmBase,
            name: `bench-${method}-${ln}${pass === 'fill' ? '-fill' : ''}`,
            initrd: method === 'full' ? fullInitrd : hfkInitrd,
            append: labAppend(method === 'warm' ? 'hfk.cache=LABEL=hfk-cache' : ''),
            disks: method === 'warm' ? [{ path: cacheDisk, format: 'raw', interface: 'virtio' }] : [],
            net: { restrict: true, guestfwd: [{ guestIp: GUEST_MIRRORS[0], guestPort: 80, hostPort: l.port }] },
          });
          try {
            const got = method === 'full' ? undefined : await loginAndReport(vm, t0, 1_200_000);
            const loginS = got ? got.timeToLoginMs / 1000 : await waitLogin(vm, t0);
            const blocksFetched = typeof got?.stats.blocksFetched === 'number' ? got.stats.blocksFetched : undefined;
            if (!Number.isFinite(loginS)) throw new Error('no login');
            const tl = l.timeline.filter(([t]) => t <= loginS * 1000 + 500);
            const bytes = tl.length ? tl[tl.length - 1]![1] : 0;
            if (pass === 'measure') {
              const recent = method === 'warm' && Array.isArray(got?.stats.recentFetches) ? { recentFetches: got.stats.recentFetches as unknown[] } : {};
              all.push({ method, link: ln, loginS, bytes, timeline: tl, ...(blocksFetched === undefined ? {} : { blocksFetched }), ...recent });
              process.stderr.write(`${method} over ${ln}: login ${loginS.toFixed(1)} s, fetched ${(bytes / 1e6).toFixed(1)} MB${blocksFetched === undefined ? '' : ` (${blocksFetched} blocks)`}\n`);
            }
            if (method === 'full') {
              vm.send('root\n');
              await vm.waitFor(/root@hfk-demo:~#/, 60_000);
            }
            await powerOff(vm);
          } catch (e) {
            // One failed boot is a result too; the others still run.
            process.stderr.write(`${method} over ${ln} (${pass}) failed: ${(e as Error).message.split('\n')[0]} (console: ${vm.logFile})\n`);
            if (pass === 'measure') failures.push({ method, link: ln, error: (e as Error).message.split('\n')[0]! });
          } finally {
            await vm.stop();
            await l.stop();
          }
        }
      }
    }
  } finally {
    await nginx.stop();
  }
  // The median boot of each method and link (by time to login) stands for it.
  const runs: Run[] = [];
  for (const r of all) {
    if (runs.some((x) => x.method === r.method && x.link === r.link)) continue;
    const same = all.filter((x) => x.method === r.method && x.link === r.link);
    const mid = median(same.map((x) => x.loginS));
    runs.push(same.find((x) => x.loginS === mid)!);
  }
  const find = (m: RunMethod, l: LinkName | 'none') => runs.find((r) => r.method === m && r.link === l);
  const local = find('local', 'none');
  const targets = {
    coldBytesVsLocal: local && find('hfk', 'loopback') ? Number((find('hfk', 'loopback')!.bytes / local.bytes).toFixed(2)) : null,
    coldLoopbackTimeVsLocal: local && find('hfk', 'loopback') ? Number((find('hfk', 'loopback')!.loginS / local.loginS).toFixed(2)) : null,
    slowTimeVsFull: find('hfk', 'slow') && find('full', 'slow') ? Number((find('hfk', 'slow')!.loginS / find('full', 'slow')!.loginS).toFixed(2)) : null,
    warmBytes: find('warm', 'loopback')?.bytes ?? null,
    /** Blocks each warm boot fetched, every run on every link (the target: none). */
    warmBlocks: all.filter((x) => x.method === 'warm').map((x) => x.blocksFetched ?? null),
    /** Which blocks those were, and what asked for them (empty lists: none fetched). */
    warmFetches: all.filter((x) => x.method === 'warm').map((x) => ({ link: x.link, fetched: x.recentFetches ?? null })),
  };
  writeFileSync(join(REPO, 'docs', 'boot-timeline.svg'), timelineSvg(runs));
  const result: BenchResult = {
    name: 'boot',
    command: `node bench/boot.ts --runs ${rounds}`,
    summary: {
      runs: runs.map((r) => ({
        method: r.method,
        link: r.link,
        loginS: Number(r.loginS.toFixed(1)),
        MB: Number((r.bytes / 1e6).toFixed(1)),
        allLoginS: all.filter((x) => x.method === r.method && x.link === r.link).map((x) => Number(x.loginS.toFixed(1))),
        ...(r.blocksFetched === undefined ? {} : { blocksFetched: r.blocksFetched }),
      })),
      ratios: targets,
      failures,
      targets: { coldBytesVsLocal: 1.3, coldLoopbackTimeVsLocal: 1.25, slowTimeVsFull: 0.5, warmBytes: 'no blocks (manifest check only)', warmBlocks: 'none in every warm boot' },
    },
    pass:
      targets.coldBytesVsLocal !== null &&
      targets.coldBytesVsLocal <= 1.3 &&
      targets.coldLoopbackTimeVsLocal !== null &&
      targets.coldLoopbackTimeVsLocal <= 1.25 &&
      targets.slowTimeVsFull !== null &&
      targets.slowTimeVsFull <= 0.5 &&
      targets.warmBlocks.every((n) => n === 0),
    rows: runs.map((r) => ({ ...r, timeline: r.timeline.filter((_, i) => i % 4 === 0) })),
  };
  saveResult(result);
  return result;
}

/** Bytes fetched against time, one line per method and link; the local disk's login as a marker. */
export function timelineSvg(runs: Run[]): string {
  const W = 860;
  const H = 420;
  const pad = { l: 70, r: 260, t: 30, b: 50 };
  const maxT = Math.max(10, ...runs.map((r) => r.loginS)) * 1.05;
  const maxB = Math.max(1, ...runs.map((r) => r.bytes)) * 1.05;
  const x = (t: number) => pad.l + ((W - pad.l - pad.r) * t) / maxT;
  const y = (b: number) => H - pad.b - ((H - pad.t - pad.b) * b) / maxB;
  const colors: Record<string, string> = { hfk: '#1b7f3b', 'hfk-noprofile': '#8bc34a', warm: '#3a6fd8', full: '#c0392b', local: '#555' };
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${pad.l}" y="18" font-size="14">Boot to login: bytes fetched over time (node bench/boot.ts)</text>`,
    `<line x1="${pad.l}" y1="${H - pad.b}" x2="${W - pad.r}" y2="${H - pad.b}" stroke="black"/>`,
    `<line x1="${pad.l}" y1="${pad.t}" x2="${pad.l}" y2="${H - pad.b}" stroke="black"/>`,
    `<text x="${(W - pad.r + pad.l) / 2}" y="${H - 12}" text-anchor="middle">seconds since QEMU started</text>`,
    `<text x="16" y="${(H - pad.b + pad.t) / 2}" transform="rotate(-90 16 ${(H - pad.b + pad.t) / 2})" text-anchor="middle">MB fetched</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const t = (maxT * i) / 5;
    const b = (maxB * i) / 5;
    parts.push(`<text x="${x(t)}" y="${H - pad.b + 16}" text-anchor="middle">${t.toFixed(0)}</text>`);
    parts.push(`<text x="${pad.l - 6}" y="${y(b) + 4}" text-anchor="end">${(b / 1e6).toFixed(0)}</text>`);
  }
  let legend = pad.t;
  for (const r of runs) {
    const color = colors[r.method] ?? '#000';
    const dash = r.link === 'slow' ? ' stroke-dasharray="6 3"' : '';
    const names: Record<RunMethod, string> = { hfk: 'hfk cold', 'hfk-noprofile': 'hfk cold, no profile', warm: 'hfk warm cache', full: 'full download', local: 'local disk' };
    const label = `${names[r.method]}${r.link === 'none' ? '' : `, ${r.link}`}: ${r.loginS.toFixed(0)} s`;
    if (r.method === 'local') {
      parts.push(`<line x1="${x(r.loginS)}" y1="${pad.t}" x2="${x(r.loginS)}" y2="${H - pad.b}" stroke="${color}" stroke-dasharray="2 3"/>`);
    } else {
      const pts = [[0, 0] as [number, number], ...r.timeline.map(([t, b]) => [t / 1000, b] as [number, number])];
      parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.map(([t, b]) => `${x(t).toFixed(1)},${y(b).toFixed(1)}`).join(' ')}"/>`);
      parts.push(`<circle cx="${x(r.loginS)}" cy="${y(r.bytes)}" r="3" fill="${color}"/>`);
    }
    parts.push(`<line x1="${W - pad.r + 10}" y1="${legend}" x2="${W - pad.r + 30}" y2="${legend}" stroke="${color}" stroke-width="2"${dash}/>`);
    parts.push(`<text x="${W - pad.r + 35}" y="${legend + 4}">${label}</text>`);
    legend += 18;
  }
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { links: { type: 'string' }, methods: { type: 'string' }, runs: { type: 'string' } } });
  const r = await benchBoot({
    ...(values.runs ? { runs: Number(values.runs) } : {}),
    ...(values.links ? { links: values.links.split(',') as LinkName[] } : {}),
    ...(values.methods ? { methods: values.methods.split(',') as Method[] } : {}),
  });
  console.log(JSON.stringify(r.summary, null, 2));
}

