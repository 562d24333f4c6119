// The Debian packages the tests, the demo and the benchmarks use, in one
// list. `node test/lab/packages.ts` installs whatever is missing (as root);
// `npm test`, `npm run demo`, `npm run bench` and .ci/run all go through it.

import { cacheDir, ensurePackages } from './debian-root.ts';

export const PACKAGES = [
  // images, and the tools the publisher is compared with
  'squashfs-tools', 'e2fsprogs', 'erofs-utils', 'cloop-utils', 'casync',
  // mirrors and proxies, and what the mirror benchmarks compare against
  'nginx-light', 'squid', 'rclone', 'fuse', 'netselect', 'iputils-ping', 'socat',
  // the initramfs and the boots
  'linux-image-cloud-amd64', 'qemu-system-x86', 'qemu-utils', 'ipxe-qemu', 'busybox-static', 'debootstrap', 'kmod', 'cpio', 'zstd', 'binutils',
  // boot entries
  'xorriso', 'grub-pc-bin', 'grub-common', 'isolinux', 'syslinux', 'syslinux-common', 'pxelinux', 'mtools', 'dosfstools',
  // UEFI boot entries: Debian's signed chain, the UKI stub and signing, and OVMF to prove them
  'shim-signed', 'grub-efi-amd64-signed', 'systemd-boot-efi', 'sbsigntool', 'ovmf',
  'ca-certificates', 'openssl', 'iproute2', 'procps', 'util-linux',
  // peak memory of a command (/usr/bin/time -f %M)
  'time',
] as const;

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.getuid?.() !== 0) {
    process.stderr.write('installing Debian packages needs root; run as root, or install them yourself:\n  apt-get install ' + PACKAGES.join(' ') + '\n');
    process.exit(1);
  }
  const installed = await ensurePackages(PACKAGES, { logFile: `${cacheDir()}/apt.log` });
  process.stdout.write(installed.length ? `installed: ${installed.join(' ')}\n` : '');
}
