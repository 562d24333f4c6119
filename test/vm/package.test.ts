// The .deb on a running Debian 12 under systemd, in QEMU (TCG): the lab
// boots the Debian root from the host's mirror as usual, then the guest gets
// the package, a small store and its key on a second disk (a tar read
// straight off /dev/vda), installs the package with dpkg, and runs hfk the
// way an operator does: hfk-serve.service serves the store, and
// hfk-mount@demo.service mounts its image from that mirror. The mount unit
// is active exactly when the image can be read, fails for an image that is
// not there, and unmounts when stopped. The same boot has the boot reader's
// Prometheus metrics on (init.reader.metrics in the initrd's hfk.yaml).

import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { hfk } from '../helpers/cli.ts';
import { makeTree, mksquashfs } from '../helpers/images.ts';
import { type Server, startNginx } from '../helpers/mirrors.ts';
import { ensurePackage, VERSION } from '../helpers/package.ts';
import { buildInitrd, GUEST_MIRRORS, labAppend, loginAndReport, powerOff, type PublishedRoot, publishedDebian, shellOutput } from '../lab/hfkboot.ts';
import { findKernel, startVm } from '../lab/qemu.ts';

const kernel = findKernel();
const work = mkdtempSync(join(tmpdir(), 'hfk-vm-package-'));
const MIRROR = `http://${GUEST_MIRRORS[0]}/`;
const VM_MS = 1_500_000;
const METRICS_PORT = 9101;

let root: PublishedRoot;
let nginx: Server & { accessLog: string };
let initrd: string;
let bundle: string;
let imageSha256: string;

beforeAll(async () => {
  root = await publishedDebian((l) => process.stderr.write(`${l}\n`));
  nginx = await startNginx(root.store, work);
  writeFileSync(join(work, 'hfk.yaml'), `init:\n  reader:\n    metrics: 127.0.0.1:${METRICS_PORT}\n`);
  initrd = buildInitrd({ out: join(work, 'initrd.img'), pub: root.pub, mirrors: [MIRROR], image: 'debian', level: 3, config: join(work, 'hfk.yaml') });
  const { deb } = ensurePackage();
  // What the operator brings: the package, a store with one image, the publisher's public key.
  const payload = join(work, 'payload');
  mkdirSync(payload);
  copyFileSync(deb, join(payload, 'hfk.deb'));
  const tree = join(work, 'tree');
  makeTree(tree, 7);
  const image = mksquashfs(tree, join(work, 'demo.sqfs'));
  imageSha256 = createHash('sha256').update(readFileSync(image)).digest('hex');
  expect((await hfk(['keygen', '--out', join(work, 'demo')])).code).toBe(0);
  const pub = await hfk(['publish', image, '--store', join(payload, 'store'), '--name', 'demo', '--key', join(work, 'demo.key')]);
  expect(pub.code, pub.stderr).toBe(0);
  copyFileSync(join(work, 'demo.pub'), join(payload, 'hfk.pub'));
  bundle = join(work, 'payload.tar');
  execFileSync('tar', ['-cf', bundle, '-C', payload, '.']); // whole 10 KiB records: a disk QEMU reads to the end
  expect(statSync(bundle).size % 512).toBe(0);
}, 1_200_000);

afterAll(async () => {
  await nginx?.stop();
  rmSync(work, { recursive: true, force: true });
});

/** Runs CMD in the guest and returns its output and exit code. */
async function guest(vm: Parameters<typeof shellOutput>[0], cmd: string, timeoutMs = 300_000): Promise<{ out: string; code: number }> {
  const text = await shellOutput(vm, `{ ${cmd} ; } 2>&1; e=$?; echo; echo "exit=$e"`, timeoutMs);
  const m = /(?:^|\n)exit=(\d+)$/.exec(text);
  expect(m, text).not.toBeNull();
  return { out: text.slice(0, m!.index).trim(), code: Number(m![1]) };
}

describe('the .deb under systemd in a QEMU guest', () => {
  it('installs with dpkg; hfk-serve serves a store, hfk-mount@ mounts its image and is active only once it is mounted', async () => {
    const startedAt = performance.now();
    const vm = startVm({
      name: 'package-systemd',
      kernel: kernel.kernel,
      initrd,
      append: labAppend(),
      memoryMiB: 3072,
      disks: [{ path: bundle, format: 'raw', readonly: true, interface: 'virtio' }],
      net: { restrict: true, guestfwd: [{ guestIp: GUEST_MIRRORS[0], guestPort: 80, hostPort: nginx.port }] },
      timeoutMs: VM_MS,
    });
    onTestFinished(() => void vm.stop());
    await loginAndReport(vm, startedAt, VM_MS);

    // The boot's reader serves its metrics: the root's blocks have been fetched through it.
    const scrape = await guest(vm, `bash -c 'exec 3<>/dev/tcp/127.0.0.1/${METRICS_PORT}; printf "GET /metrics HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n" >&3; cat <&3' | grep -E '^hfk_(blocks_fetched_total|mirror_chosen)'`);
    expect(Number(/^hfk_blocks_fetched_total (\d+)/m.exec(scrape.out)?.[1]), scrape.out).toBeGreaterThan(0);
    expect(scrape.out).toContain(`mirror="${MIRROR}"`);

    expect((await guest(vm, 'mkdir -p /root/x && tar -xf /dev/vda -C /root/x && ls -1 /root/x')).out.split('\n').sort()).toEqual(['hfk.deb', 'hfk.pub', 'store']);
    const install = await guest(vm, 'dpkg -i /root/x/hfk.deb', 600_000);
    expect(install.code, install.out).toBe(0);
    expect((await guest(vm, 'dpkg-query -W -f=\'${Status} ${Version}\' hfk')).out).toBe(`install ok installed ${VERSION}`);
    expect((await guest(vm, 'hfk --version')).out).toMatch(new RegExp(`^hfk ${VERSION.replaceAll('.', '\\.')} \\(node 24\\.`));

    // A mirror: the store in /srv/hfk, served by the unit on port 8080.
    await guest(vm, 'mkdir -p /srv && cp -a /root/x/store /srv/hfk && cp /root/x/hfk.pub /etc/hfk/hfk.pub');
    const serve = await guest(vm, 'systemctl start hfk-serve && systemctl is-active hfk-serve', 300_000);
    expect(serve.out, serve.out).toBe('active');
    // The mount unit reads the mirrors from the packaged config file.
    await guest(vm, "printf 'mirrors:\\n  - http://127.0.0.1:8080/\\n' > /etc/hfk/hfk.yaml");
    const start = await guest(vm, 'systemctl start hfk-mount@demo', 600_000);
    expect(start.code, `${start.out}\n${(await guest(vm, 'journalctl -u hfk-mount@demo -u hfk-serve --no-pager | tail -40')).out}`).toBe(0);
    // Right when `systemctl start` returns, the image is there and reads back exactly.
    const state = await guest(vm, 'systemctl is-active hfk-mount@demo; findmnt -n -o FSTYPE /run/hfk/mnt/demo; sha256sum /run/hfk/mnt/demo/demo.img');
    expect(state.out.split('\n').slice(0, 2)).toEqual(['active', 'fuse.hfk']);
    expect(state.out.split('\n')[2]).toMatch(new RegExp(`^${imageSha256} `));

    // An image the mirror does not have: the unit fails instead of becoming active.
    const missing = await guest(vm, 'systemctl start hfk-mount@nosuch', 600_000);
    expect(missing.code).not.toBe(0);
    expect((await guest(vm, 'systemctl is-active hfk-mount@nosuch; findmnt /run/hfk/mnt/nosuch >/dev/null && echo mounted')).out).not.toMatch(/^active$|mounted/m);

    // Stopping the unit unmounts the image.
    const stop = await guest(vm, 'systemctl stop hfk-mount@demo; systemctl is-active hfk-mount@demo; findmnt /run/hfk/mnt/demo >/dev/null && echo still-mounted || echo unmounted');
    expect(stop.out.split('\n').slice(-2)).toEqual(['inactive', 'unmounted']);
    await guest(vm, 'systemctl reset-failed hfk-mount@nosuch; systemctl stop hfk-mount@nosuch');
    await powerOff(vm);
  }, VM_MS + 300_000);
});
