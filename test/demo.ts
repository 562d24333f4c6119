// npm run demo: the main job, end to end, on this machine.
//
//   1. install what is missing (Debian packages: QEMU, the kernel, nginx, …)
//   2. build a real Debian root (debootstrap minbase + systemd; cached)
//   3. publish it as an hfk image (blocks + signed manifest)
//   4. start two local mirrors: nginx and `hfk serve`
//   5. build the initrd with `hfk mkinitrd`
//   6. boot it in QEMU (software emulation), console shown, network
//      restricted to the two mirrors
//   7. log in on the serial console, read the boot report, power off
//   8. print the report: time to login, bytes fetched against the image
//      size, the mirror ranking, time per stage

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HFK, NODE } from './helpers/cli.ts';
import { startNginx, waitForPort, freePort } from './helpers/mirrors.ts';
import { cacheDir, ensurePackages } from './lab/debian-root.ts';
import { buildInitrd, GUEST_MIRRORS, labAppend, loginAndReport, powerOff, publishedDebian } from './lab/hfkboot.ts';
import { PACKAGES } from './lab/packages.ts';
import { findKernel, startVm } from './lab/qemu.ts';


const say = (t: string) => process.stdout.write(`\n\x1b[1m== ${t}\x1b[0m\n`);
const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('npm run demo needs root: it installs packages, mounts filesystems and runs QEMU (sudo npm run demo)\n');
    process.exit(1);
  }
  if (!existsSync(HFK)) throw new Error(`${HFK} is missing: npm run build`);

  say('1/7 Debian packages');
  const installed = await ensurePackages(PACKAGES, { logFile: join(cacheDir(), 'demo-apt.log') });
  console.log(installed.length ? `installed ${installed.join(' ')}` : 'all present');

  say('2/7 the Debian root (debootstrap minbase + systemd + udev; cached in ' + cacheDir() + ')');
  const root = await publishedDebian((l) => console.log(l));
  console.log(`image ${root.image}: ${mb(readFileSync(root.image).length)} squashfs`);

  say('3/7 published as image "debian"');
  console.log(execFileSync(NODE, [HFK, 'verify', '--store', root.store, '--name', 'debian', '--key', root.pub]).toString().trim());

  const work = join(cacheDir(), 'demo');
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });

  say('4/7 two local mirrors: nginx and hfk serve');
  const nginx = await startNginx(root.store, work);
  const port = await freePort();
  const serve = spawn(NODE, [HFK, 'serve', '--store', root.store, '--port', String(port), '--quiet'], { stdio: 'ignore' });
  await waitForPort(port, serve);
  console.log(`mirror A: nginx      ${nginx.url} (guest: http://${GUEST_MIRRORS[0]}/)`);
  console.log(`mirror B: hfk serve  http://127.0.0.1:${port}/ (guest: http://${GUEST_MIRRORS[1]}/)`);

  try {
    say('5/7 the initrd (hfk mkinitrd)');
    const initrd = join(work, 'initrd.img');
    const mirrors = [`http://${GUEST_MIRRORS[0]}/`, `http://${GUEST_MIRRORS[1]}/`];
    const t0 = performance.now();
    buildInitrd({ out: initrd, pub: root.pub, mirrors, image: 'debian', level: Number(process.env.HFK_DEMO_ZSTD_LEVEL ?? 19) });
    console.log(`${initrd}: ${mb(readFileSync(initrd).length)} (built in ${((performance.now() - t0) / 1000).toFixed(0)} s)`);

    say('6/7 booting it in QEMU (TCG); the console follows');
    process.env.HFK_VM_LOG = '1';
    const kernel = findKernel();
    const started = performance.now();
    const vm = startVm(
      {
        name: 'demo',
        kernel: kernel.kernel,
        initrd,
        append: labAppend(),
        memoryMiB: 2048,
        cpus: 2,
        net: {
          restrict: true,
          guestfwd: [
            { guestIp: GUEST_MIRRORS[0], guestPort: 80, hostPort: nginx.port },
            { guestIp: GUEST_MIRRORS[1], guestPort: 80, hostPort: port },
          ],
        },
        timeoutMs: 1_200_000,
      },
      (l) => console.log(l),
    );
    try {
      const { report, stats, timeToLoginMs } = await loginAndReport(vm, started);
      say('7/7 logged in as root; powering off');
      await powerOff(vm);
      const fetched = stats.bytesFetched as number;
      say('boot report (/run/hfk/boot-report.json in the booted system)');
      console.log(`time to login:   ${(timeToLoginMs / 1000).toFixed(1)} s from QEMU start (init handed over at ${report.uptime.switchRoot?.toFixed(1)} s of uptime)`);
      console.log(`image:           ${report.image!.name} v${report.image!.version}, ${report.image!.filesystem}, ${mb(report.image!.size)} in ${report.image!.blocks} blocks`);
      console.log(`fetched:         ${mb(fetched)} of block objects at login (${((100 * fetched) / report.image!.size).toFixed(1)}% of the image size), ${stats.blocksFetched} blocks`);
      console.log(`mirror used:     ${report.mirrors.chosen}`);
      console.log(`modules loaded:  ${report.modules.loaded.join(' ')}`);
      console.log(`network:         ${report.network?.interface} ${report.network?.address} (${report.network?.method})`);
      // The stages, ranking and timeline as hfk report shows them, and the boot drawn next to the report.
      const reportFile = join(work, 'boot-report.json');
      writeFileSync(reportFile, `${JSON.stringify(report, null, 2)}\n`);
      say(`hfk report ${reportFile} --svg ${join(work, 'boot-timeline.svg')}`);
      process.stdout.write(execFileSync(NODE, [HFK, 'report', reportFile, '--svg', join(work, 'boot-timeline.svg')], { encoding: 'utf8' }));
    } finally {
      await vm.stop();
    }
  } finally {
    serve.kill('SIGTERM');
    await nginx.stop();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
