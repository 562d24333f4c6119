// The boot entries users start hfk from, each proven in QEMU (TCG) with no
// -kernel and no disk: the machine has firmware, a CD or a network card,
// and the Debian root comes from nginx on the host (reached through a
// guestfwd rule) until the login prompt.
//
// One `hfk mkinitrd --pxe DIR --iso FILE --kernel VMLINUZ` writes them all:
//   - the ISO as a CD (-cdrom → isolinux menu → kernel),
//   - the same ISO as a USB stick (a disk: the BIOS boots its isohybrid MBR),
//   - PXE: QEMU's virtio-net ROM (iPXE) fetches pxelinux.0 from QEMU's TFTP
//     server, which loads its menu, the kernel and the initrd over TFTP,
//   - iPXE: the same ROM runs boot.ipxe as the DHCP boot file,
//   - GRUB: the grub.cfg snippet, pasted into the grub.cfg of a GRUB rescue
//     CD (grub-mkrescue) as a user pastes it into theirs.
//
// Consoles: $TMPDIR/hfk-vm/*.console.log (HFK_VM_LOG=1 streams them).

import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BootEntriesReport } from '../../src/mkinitrd/bootentries.ts';
import { hfk } from '../helpers/cli.ts';
import { requireTool } from '../helpers/images.ts';
import { type Server, startNginx } from '../helpers/mirrors.ts';
import { bootEntryToLogin, type EntryBoot, type EntryLab } from '../lab/entryboot.ts';
import { GUEST_MIRRORS, type PublishedRoot, publishedDebian } from '../lab/hfkboot.ts';
import { findKernel } from '../lab/qemu.ts';

const kernel = findKernel();
const work = mkdtempSync(join(tmpdir(), 'hfk-vm-entries-'));
const tftp = join(work, 'tftp');
const iso = join(work, 'hfk.iso');
const MIRROR = `http://${GUEST_MIRRORS[0]}/`;
/** What every entry's command line carries, in this order. */
const CMDLINE = `console=tty0 console=ttyS0,115200n8 hfk.image=debian hfk.mirrors=${MIRROR} panic=-1`;
const VM_MS = 840_000;
const TEST_MS = 900_000;

let root: PublishedRoot;
let nginx: Server & { accessLog: string };
let entries: BootEntriesReport;
const timings: string[] = [];

beforeAll(async () => {
  root = await publishedDebian((l) => process.stderr.write(`${l}\n`));
  nginx = await startNginx(root.store, work);
  // panic=-1: a boot that panics ends (QEMU runs with -no-reboot) instead of hanging until the timeout.
  const r = await hfk([
    'mkinitrd', '--modules', kernel.modulesDir, '--kernel', kernel.kernel, '--key', root.pub, '--image', 'debian', '--mirrors', MIRROR,
    '--level', '3', '--append', 'panic=-1', '--pxe', tftp, '--iso', iso, '--json',
  ]);
  expect(r.code, r.stderr).toBe(0);
  entries = (JSON.parse(r.stdout) as { bootEntries: BootEntriesReport }).bootEntries;
  expect(entries.cmdline).toBe(CMDLINE);
}, TEST_MS);

afterAll(async () => {
  await nginx?.stop();
  rmSync(work, { recursive: true, force: true });
  if (timings.length) process.stderr.write(`boot entries, time to login:\n${timings.map((t) => `  ${t}\n`).join('')}`);
});

const lab = (): EntryLab => ({ mirror: nginx, cmdline: CMDLINE, vmMs: VM_MS, timings });
const bootToLogin = (name: string, boot: EntryBoot) => bootEntryToLogin(lab(), name, boot);

describe('the hybrid ISO', () => {
  it('boots as a CD (-cdrom, no disk): isolinux menu, then Debian from the mirror', async () => {
    const r = await bootToLogin('entry-iso-cdrom', { cdrom: iso });
    expect(r.commandLine).not.toMatch(/if=virtio|if=scsi/);
    expect(r.firmware).not.toMatch(/^uefi/); // SeaBIOS, not UEFI: the ISO's EFI partition does not get in the way
    expect(r.console).toMatch(/ISOLINUX \d+\.\d+/);
    expect(r.console).toMatch(/Automatic boot in \d seconds?/); // the menu timed out to its default entry
    expect(r.report.kernel.cmdline).toMatch(/^BOOT_IMAGE=\/hfk\/vmlinuz /);
  }, TEST_MS);

  it('boots as a USB stick (a disk holding the ISO bytes: the isohybrid MBR)', async () => {
    const r = await bootToLogin('entry-iso-usb', { disks: [{ path: iso, format: 'raw', readonly: true, interface: 'virtio' }] });
    expect(r.commandLine).toContain('-boot c');
    expect(r.console).toMatch(/ISOLINUX \d+\.\d+/);
    expect(r.report.kernel.cmdline).toMatch(/^BOOT_IMAGE=\/hfk\/vmlinuz /);
  }, TEST_MS);
});

describe('network boot from the PXE tree, through QEMU\'s TFTP server (no disk, no CD)', () => {
  it('PXE: the NIC\'s ROM loads pxelinux.0, its menu, the kernel and the initrd', async () => {
    expect(entries.pxe!.files).toEqual(expect.arrayContaining(['pxelinux.0', 'ldlinux.c32', 'pxelinux.cfg/default', 'vmlinuz', 'initrd.img', 'boot.ipxe', 'grub.cfg']));
    const r = await bootToLogin('entry-pxelinux', { tftp, bootfile: 'pxelinux.0' });
    expect(r.commandLine).toContain('-boot n');
    expect(r.commandLine).not.toMatch(/-drive/);
    expect(r.console).toMatch(/PXELINUX \d+\.\d+/);
    expect(r.console).toMatch(/Automatic boot in \d seconds?/);
    expect(r.report.kernel.cmdline).toMatch(/^BOOT_IMAGE=vmlinuz /);
  }, TEST_MS);

  it('iPXE: the ROM (iPXE) runs boot.ipxe as the DHCP boot file', async () => {
    const r = await bootToLogin('entry-ipxe', { tftp, bootfile: 'boot.ipxe' });
    expect(r.commandLine).not.toMatch(/-drive/);
    expect(r.console).not.toMatch(/PXELINUX/);
    expect(r.report.kernel.cmdline).toMatch(/^initrd=initrd\.img console=tty0/); // the script's own line, no loader in between
  }, TEST_MS);
});

describe('the GRUB snippet', () => {
  it('boots from a GRUB whose grub.cfg has the snippet pasted in (a GRUB rescue CD)', async () => {
    requireTool('grub-mkrescue', 'grub-common');
    if (!existsSync('/usr/lib/grub/i386-pc')) throw new Error('GRUB for BIOS is not installed: apt-get install grub-pc-bin');
    const tree = join(work, 'grub-cd');
    mkdirSync(join(tree, 'boot/grub'), { recursive: true });
    mkdirSync(join(tree, 'boot/hfk'), { recursive: true });
    // As docs/BOOT.md says: the kernel and initrd in /boot/hfk, the snippet appended to the config.
    copyFileSync(join(tftp, 'vmlinuz'), join(tree, 'boot/hfk/vmlinuz'));
    copyFileSync(join(tftp, 'initrd.img'), join(tree, 'boot/hfk/initrd.img'));
    const site = ['serial --unit=0 --speed=115200', 'terminal_input serial console', 'terminal_output serial console', 'set timeout=1', 'set default=hfk', ''].join('\n');
    writeFileSync(join(tree, 'boot/grub/grub.cfg'), site + readFileSync(join(tftp, 'grub.cfg'), 'utf8'));
    const cd = join(work, 'grub.iso');
    execFileSync('grub-mkrescue', ['-o', cd, tree], { stdio: ['ignore', 'ignore', 'pipe'] });
    const r = await bootToLogin('entry-grub', { cdrom: cd });
    expect(r.console).toMatch(/GNU GRUB/);
    expect(r.report.kernel.cmdline).toMatch(/^BOOT_IMAGE=\/boot\/hfk\/vmlinuz /);
  }, TEST_MS);
});
