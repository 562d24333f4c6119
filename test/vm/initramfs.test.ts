// The proof that mkinitrd's initramfs boots: the real Debian cloud kernel in
// QEMU (TCG) with an initramfs built from its modules. A busybox /init loads
// virtio_net with modprobe (depmod's modules.dep), gets an address with
// udhcpc and our script, runs the packed Node, and fetches from an HTTP
// server on the host through guestfwd — several requests at once, which
// only the cmd: form of guestfwd serves. Its negative twin has no guestfwd
// and must see the fetch fail. A Node /init (a bundle with #!/usr/bin/node)
// runs as PID 1 with a worker thread and reads the baked config. And two
// builds of the same inputs are the same bytes.
//
// Set HFK_VM_LOG=1 to stream the consoles to stderr; they are always in
// $TMPDIR/hfk-vm/*.console.log.

import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../src/format/keys.ts';
import { bakeConfig } from '../../src/mkinitrd/bake.ts';
import { buildInitramfs, type BuildReport, formatSizeReport } from '../../src/mkinitrd/build.ts';
import { ensureDebianSquashfs } from '../lab/debian-root.ts';
import { findKernel, liveVmCount, startVm, type Vm, type VmOptions } from '../lab/qemu.ts';

const kernel = findKernel();
const work = mkdtempSync(join(tmpdir(), 'hfk-vm-initramfs-'));
const APPEND = 'console=ttyS0 panic=-1 loglevel=4';
const GUEST_HTTP = '10.0.2.100';
const TOKEN = createHash('sha256').update(`${process.pid}-${Date.now()}`).digest('hex').slice(0, 16);

// Every line the test looks for starts with "HFK-TEST:". `wget -T` is not
// used: Debian's static busybox 1.35 crashes on it (SIGSEGV); the busybox
// `timeout` applet bounds each fetch instead.
const SHELL_INIT = `#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "HFK-TEST: init started"
if modprobe virtio_pci && modprobe virtio_net; then echo "HFK-TEST: modprobe ok"; else echo "HFK-TEST: modprobe failed"; fi
echo "HFK-TEST: modules $(cut -d' ' -f1 /proc/modules | sort | tr '\\n' ' ')"
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
udhcpc -i eth0 -q -n -t 10
. /run/hfk/lease.eth0 && echo "HFK-TEST: dhcp ip=$ip router=$router dns=$dns"
/usr/bin/node -e 'console.log("HFK-TEST: NODE", process.version, process.arch)'
out=$(timeout 20 wget -q -O - http://${GUEST_HTTP}/hello.txt 2>&1); echo "HFK-TEST: wget rc=$? $out"
for n in 1 2 3 4; do
  ( o=$(timeout 30 wget -q -O - "http://${GUEST_HTTP}/hold?n=4&id=$n" 2>&1); echo "HFK-TEST: hold $n rc=$? $o" ) &
done
wait
echo "HFK-TEST: done"
poweroff -f
`;

const NODE_INIT = `import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
if (isMainThread) {
  console.log(\`HFK-TEST: node init pid=\${process.pid} \${process.version} \${process.argv[1]}\`);
  const w = new Worker(new URL(import.meta.url));
  console.log('HFK-TEST: worker says ' + (await new Promise((r) => w.once('message', r))));
  console.log('HFK-TEST: config ' + JSON.stringify(readFileSync('/etc/hfk/hfk.yaml', 'utf8')));
  console.log('HFK-TEST: key ' + readFileSync('/etc/hfk/hfk.pub', 'utf8').split(' ')[1]);
  execFileSync('/bin/busybox', ['poweroff', '-f']);
} else {
  parentPort.postMessage('hello from ' + import.meta.url);
}
`;

// Mounts the Debian squashfs from a virtio disk under a tmpfs overlay, the
// way hfk-init mounts the image it reads over HTTP, and hands over to systemd.
const SWITCH_ROOT_INIT = `#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
modprobe virtio_pci && modprobe virtio_blk && modprobe squashfs && modprobe overlay && echo "HFK-TEST: modules ok"
i=0; while [ ! -e /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /lower /rw /newroot
mount -t squashfs -o ro /dev/vda /lower
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot && echo "HFK-TEST: root mounted"
mkdir -p /newroot/run/hfk/lower /newroot/run/hfk/rw
mount --move /lower /newroot/run/hfk/lower
mount --move /rw /newroot/run/hfk/rw
mount --move /dev /newroot/dev
umount /proc /sys
echo "HFK-TEST: switch_root"
exec switch_root /newroot /sbin/init
`;

/** The host end: /hello.txt, and /hold?n=N which answers once N requests wait at the same time. */
function startServer(): Promise<{ server: Server; port: number; requests: string[]; peakConnections: () => number }> {
  const requests: string[] = [];
  const held: [ServerResponse, string][] = [];
  const sockets = new Set<Socket>();
  let peak = 0;
  const server = createServer((req, res) => {
    requests.push(req.url ?? '');
    const u = new URL(req.url ?? '/', 'http://host');
    if (u.pathname === '/hello.txt') return void res.end(`HELLO ${TOKEN}\n`);
    if (u.pathname === '/hold') {
      held.push([res, u.searchParams.get('id') ?? '?']);
      if (held.length >= Number(u.searchParams.get('n'))) for (const [r, id] of held.splice(0)) r.end(`HELD ${id}\n`);
      return;
    }
    res.statusCode = 404;
    res.end();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    peak = Math.max(peak, sockets.size);
    s.on('close', () => sockets.delete(s));
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as AddressInfo).port, requests, peakConnections: () => peak })),
  );
}

function closeServer(s: Server): Promise<void> {
  s.closeAllConnections();
  return new Promise((r) => s.close(() => r()));
}

let vm: Vm | undefined;
afterEach(async () => {
  await vm?.stop();
  vm = undefined;
  expect(liveVmCount()).toBe(0);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

function boot(name: string, initrd: string, net: VmOptions['net']): Vm {
  vm = startVm({ name, kernel: kernel.kernel, initrd, append: APPEND, memoryMiB: 1024, net, timeoutMs: 240_000 });
  return vm;
}

/** Waits for each marker in order; returns seconds since boot at which each appeared. */
async function markers(v: Vm, patterns: (string | RegExp)[]): Promise<{ at: number; text: string }[]> {
  const t0 = performance.now();
  const out = [];
  for (const p of patterns) {
    const m = await v.waitFor(p, 180_000);
    out.push({ at: (performance.now() - t0) / 1000, text: m[0] });
  }
  return out;
}

const shellInit = join(work, 'init.sh');
writeFileSync(shellInit, SHELL_INIT);

describe('the network in the initramfs', () => {
  let zstdImage: BuildReport;
  let gzipImage: BuildReport;

  beforeAll(async () => {
    // the default compression (zstd -19) for the main boot, gzip -9 for the twin
    zstdImage = await buildInitramfs({ out: join(work, 'zstd.img'), modulesDir: kernel.modulesDir, init: { kind: 'shell', path: shellInit } });
    process.stderr.write(formatSizeReport(zstdImage));
    gzipImage = await buildInitramfs({ out: join(work, 'gzip.img'), modulesDir: kernel.modulesDir, init: { kind: 'shell', path: shellInit }, compress: 'gzip' });
    process.stderr.write(formatSizeReport(gzipImage));
  }, 600_000);

  it('loads virtio_net, gets a DHCP lease, runs Node and fetches from the host, four connections at once', async () => {
    const host = await startServer();
    try {
      const v = boot('initramfs-net', zstdImage.out, { restrict: true, guestfwd: [{ guestIp: GUEST_HTTP, guestPort: 80, hostPort: host.port }] });
      const seen = await markers(v, [
        'HFK-TEST: init started',
        'HFK-TEST: modprobe ok',
        /HFK-TEST: modules .*\n/,
        // restrict=on: QEMU's DHCP offers no router and no DNS; 10.0.2.0/24 is on-link
        'HFK-TEST: dhcp ip=10.0.2.15 router= dns=\n',
        /HFK-TEST: NODE v24\.\d+\.\d+ x64/,
        `HFK-TEST: wget rc=0 HELLO ${TOKEN}`,
        'HFK-TEST: done',
      ]);
      process.stderr.write(`boot to markers (zstd -19 initramfs, TCG): ${seen.map((s) => `${s.text.trim().slice(0, 40)} @ ${s.at.toFixed(1)} s`).join('; ')}\n`);
      expect(seen[2]!.text).toMatch(/\bvirtio_net\b.*\bvirtio_pci\b|\bvirtio_pci\b.*\bvirtio_net\b/);
      expect(seen[2]!.text).toMatch(/\bnet_failover\b/); // a dependency, found through modules.dep
      for (const n of [1, 2, 3, 4]) expect(v.console).toContain(`HFK-TEST: hold ${n} rc=0 HELD ${n}`);
      expect(host.peakConnections()).toBeGreaterThanOrEqual(4);
      expect(host.requests.filter((r) => r.startsWith('/hold'))).toHaveLength(4);
      expect((await v.exited).reason).toBe('exited'); // it powered itself off
    } finally {
      await vm?.stop();
      await closeServer(host.server);
    }
  }, 300_000);

  it('negative twin: without a guestfwd rule the fetch fails (and gzip boots too)', async () => {
    const host = await startServer();
    try {
      const v = boot('initramfs-nofwd', gzipImage.out, { restrict: true, guestfwd: [] });
      await markers(v, ['HFK-TEST: modprobe ok', /HFK-TEST: dhcp ip=10\.0\.2\.15/, /HFK-TEST: NODE v24/]);
      const [wget] = await markers(v, [/HFK-TEST: wget rc=\d+ .*\n/]);
      // nothing answers ARP for 10.0.2.100 when no rule claims it
      expect(wget!.text).toBe("HFK-TEST: wget rc=1 wget: can't connect to remote host (10.0.2.100): No route to host\n");
      await markers(v, ['HFK-TEST: done']);
      expect(host.requests).toEqual([]);
    } finally {
      await vm?.stop();
      await closeServer(host.server);
    }
  }, 300_000);

});

describe('the init', () => {
  it('runs a Node bundle as /init (PID 1, ESM, a worker thread) with the baked config and key', async () => {
    const bundle = join(work, 'hfk-init.mjs');
    writeFileSync(bundle, `#!/usr/bin/env node\n${NODE_INIT}`);
    const pair = generateKeyPair('vm-test');
    const baked = bakeConfig({ image: 'debian', mirrors: [`http://${GUEST_HTTP}/`], publicKey: pair.publicLine });
    const r = await buildInitramfs({
      out: join(work, 'node-init.img'),
      modulesDir: kernel.modulesDir,
      modules: ['virtio_net'],
      init: { kind: 'node', path: bundle },
      config: baked.config,
      ...(baked.publicKey ? { publicKey: baked.publicKey } : {}),
      level: 3,
    });
    const v = boot('initramfs-node-init', r.out, false);
    // each pattern ends in \n: a match is taken as soon as it appears, so a trailing .* would stop at the chunk's end
    const [pid1, worker, config, key] = await markers(v, [/HFK-TEST: node init .*\n/, /HFK-TEST: worker says .*\n/, /HFK-TEST: config .*\n/, /HFK-TEST: key .*\n/]);
    expect(pid1!.text).toMatch(/^HFK-TEST: node init pid=1 v24\.\d+\.\d+ \/init\n$/);
    expect(worker!.text).toBe('HFK-TEST: worker says hello from file:///lib/hfk/hfk-init.mjs\n');
    expect(config!.text).toBe(`HFK-TEST: config ${JSON.stringify(baked.config)}\n`);
    expect(key!.text).toBe(`HFK-TEST: key ${pair.publicLine.split(' ')[1]}\n`);
    expect((await v.exited).reason).toBe('exited');
  }, 300_000);

  it('switches root into the Debian root: systemd comes up and root logs in on ttyS0 without a password', async () => {
    const sqfs = await ensureDebianSquashfs();
    const r = await buildInitramfs({ out: join(work, 'switch-root.img'), modulesDir: kernel.modulesDir, init: { kind: 'shell', content: SWITCH_ROOT_INIT }, level: 3 });
    vm = startVm({ name: 'debian-root', kernel: kernel.kernel, initrd: r.out, append: APPEND, memoryMiB: 1024, disks: [{ path: sqfs, readonly: true }], net: false, timeoutMs: 400_000 });
    const v = vm;
    const seen = await markers(v, ['HFK-TEST: modules ok', 'HFK-TEST: root mounted', 'HFK-TEST: switch_root', 'hfk-demo login: ']);
    process.stderr.write(`Debian root: login prompt ${seen[3]!.at.toFixed(1)} s after boot (TCG)\n`);
    v.send('root\n');
    await v.waitFor(/root@hfk-demo:~# $/, 60_000);
    v.send('echo "HFK-TEST: $(hostname) $(id -un) $(cat /proc/1/comm) $((6 * 7))"; systemctl is-system-running --wait\n');
    await v.waitFor('HFK-TEST: hfk-demo root systemd 42', 60_000);
    const [state] = await markers(v, [/\n(running|degraded)\n/]);
    process.stderr.write(`Debian root: systemd is ${state!.text.trim()}\n`);
    v.send('systemctl poweroff\n');
    expect((await v.exited).reason).toBe('exited');
  }, 600_000);

  it('is reproducible: the same inputs give the same bytes', async () => {
    const opts = { modulesDir: kernel.modulesDir, init: { kind: 'shell' as const, path: shellInit }, level: 3 };
    const a = await buildInitramfs({ ...opts, out: join(work, 'a.img') });
    utimesSync(shellInit, new Date(), new Date(2001, 1, 1)); // host mtimes do not leak in
    const b = await buildInitramfs({ ...opts, out: join(work, 'b.img'), workDir: mkdtempSync(join(work, 'other-staging-')) });
    expect(b.sha256).toBe(a.sha256);
    expect(readFileSync(b.out).equals(readFileSync(a.out))).toBe(true);
    const c = await buildInitramfs({ ...opts, out: join(work, 'c.img'), mtime: 1_700_000_000 });
    expect(c.sha256).not.toBe(a.sha256); // the fixed mtime is in the bytes: SOURCE_DATE_EPOCH matters
  }, 300_000);
});
