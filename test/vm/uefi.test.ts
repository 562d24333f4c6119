// The UEFI boot entries, each proven in QEMU (TCG) with Debian's OVMF, no
// -kernel and no disk for the root: the machine has firmware, a CD, a USB
// stick or a network card, and the Debian root comes from nginx on the host
// (reached through a guestfwd rule) until the login prompt.
//
// One `hfk mkinitrd --iso --pxe --uki` writes them all:
//   - the hybrid ISO as a CD, with Secure Boot on (OVMF's variables with
//     Microsoft's keys): shim (signed by Microsoft) → GRUB → the kernel
//     (both signed by Debian),
//   - the same ISO as a USB stick on an xHCI controller (its GPT/MBR ESP),
//   - UEFI PXE: OVMF's own PXE fetches bootx64.efi (shim) from QEMU's TFTP
//     server, shim fetches grubx64.efi, GRUB its config, the kernel, initrd,
//   - UEFI HTTP Boot: the firmware fetches the UKI from nginx by URL (a boot
//     option with the URL, as a user enters it in the firmware's HTTP Boot
//     page: QEMU's DHCP server cannot send the HTTPClient class), with Secure
//     Boot on and the UKI's own key enrolled in db; and its negative twin, a
//     UKI signed with another key, which the firmware refuses.
//
// Consoles: $TMPDIR/hfk-vm/*.console.log (HFK_VM_LOG=1 streams them).

import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BootEntriesReport } from '../../src/mkinitrd/bootentries.ts';
import { hfk } from '../helpers/cli.ts';
import { countRequests, type Server, startNginx } from '../helpers/mirrors.ts';
import { addUriBootOption, enrollDbCertificate, readVarStore, writeVarStore } from '../lab/efivars.ts';
import { bootEntryToLogin, type EntryBoot, type EntryLab, startEntryVm } from '../lab/entryboot.ts';
import { GUEST_MIRRORS, type PublishedRoot, publishedDebian } from '../lab/hfkboot.ts';
import { findKernel } from '../lab/qemu.ts';

const OVMF = {
  code: '/usr/share/OVMF/OVMF_CODE_4M.fd',
  secureCode: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd',
  vars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
  msVars: '/usr/share/OVMF/OVMF_VARS_4M.ms.fd',
};
const kernel = findKernel();
const work = mkdtempSync(join(tmpdir(), 'hfk-vm-uefi-'));
const tftp = join(work, 'tftp');
const web = join(work, 'web');
const iso = join(work, 'hfk.iso');
const MIRROR = `http://${GUEST_MIRRORS[0]}/`;
/** Where the UKIs are served for HTTP Boot (a second nginx). */
const WEB = GUEST_MIRRORS[1];
const CMDLINE = `console=tty0 console=ttyS0,115200n8 hfk.image=debian hfk.mirrors=${MIRROR} panic=-1`;
const VM_MS = 900_000;
const TEST_MS = 960_000;

let root: PublishedRoot;
let nginx: Server & { accessLog: string };
let webServer: Server & { accessLog: string };
let entries: BootEntriesReport;
const timings: string[] = [];

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A self-signed code-signing key pair, as docs/BOOT.md makes one. */
function keyPair(name: string, cn: string): { key: string; cert: string } {
  const key = join(work, `${name}.key`);
  const cert = join(work, `${name}.crt`);
  openssl(['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '3650', '-subj', `/CN=${cn}/`, '-keyout', key, '-out', cert]);
  return { key, cert };
}

beforeAll(async () => {
  for (const f of Object.values(OVMF)) if (!existsSync(f)) throw new Error(`${f} is missing: apt-get install ovmf`);
  root = await publishedDebian((l) => process.stderr.write(`${l}\n`));
  nginx = await startNginx(root.store, work);
  mkdirSync(web, { recursive: true });
  const mine = keyPair('uki', 'hfk test UKI key');
  const other = keyPair('other', 'someone else');
  const r = await hfk([
    'mkinitrd', '--modules', kernel.modulesDir, '--kernel', kernel.kernel, '--key', root.pub, '--image', 'debian', '--mirrors', MIRROR,
    '--level', '3', '--append', 'panic=-1', '--pxe', tftp, '--iso', iso, '--uki', join(web, 'hfk.efi'), '--uki-key', mine.key, '--uki-cert', mine.cert, '--json',
  ]);
  expect(r.code, r.stderr).toBe(0);
  entries = (JSON.parse(r.stdout) as { bootEntries: BootEntriesReport }).bootEntries;
  expect(entries.cmdline).toBe(CMDLINE);
  expect(entries.uefi).toBe(true);
  expect(entries.uki?.signedBy).toBe('CN=hfk test UKI key');
  // The negative twin: the same UKI bytes signed with a key the firmware does not know.
  copyFileSync(join(web, 'hfk.efi'), join(work, 'unsigned.efi'));
  execFileSync('sbattach', ['--remove', join(work, 'unsigned.efi')], { stdio: ['ignore', 'ignore', 'pipe'] });
  execFileSync('sbsign', ['--key', other.key, '--cert', other.cert, '--output', join(web, 'other.efi'), join(work, 'unsigned.efi')], { stdio: ['ignore', 'ignore', 'pipe'] });
  webServer = await startNginx(web, work);
  // Secure Boot with the user's key: Microsoft's keys (as shipped), the UKI key appended to db.
  const vars = readVarStore(readFileSync(OVMF.msVars));
  enrollDbCertificate(vars, readFileSync(mine.cert, 'latin1')); // what docs/BOOT.md says to do, offline
  writeVarStore(join(work, 'vars-mykey.fd'), vars);
}, TEST_MS);

afterAll(async () => {
  await nginx?.stop();
  await webServer?.stop();
  rmSync(work, { recursive: true, force: true });
  if (timings.length) process.stderr.write(`UEFI boot entries, time to login (QEMU TCG, emulated CPU):\n${timings.map((t) => `  ${t}\n`).join('')}`);
});

let vmCount = 0;

/** A fresh copy of a variable store for one VM (the firmware writes to it), with a boot option for `uri`. */
function varsCopy(from: string, uri?: { url: string; title: string }): string {
  const vars = readVarStore(readFileSync(from));
  if (uri) addUriBootOption(vars, uri.url, uri.title);
  const to = join(work, `vars-${++vmCount}.fd`);
  writeVarStore(to, vars);
  return to;
}

const lab = (): EntryLab => ({ mirror: nginx, cmdline: CMDLINE, vmMs: VM_MS, guestfwd: [{ guestIp: WEB, guestPort: 80, hostPort: webServer.port }], timings });

type Boot = Omit<EntryBoot, 'uefi'> & { vars: string; secureBoot: boolean };

function uefiBoot(boot: Boot): EntryBoot {
  const { vars, secureBoot, ...rest } = boot;
  return { ...rest, uefi: { code: secureBoot ? OVMF.secureCode : OVMF.code, vars, secureBoot } };
}

const bootToLogin = (name: string, boot: Boot) => bootEntryToLogin(lab(), name, uefiBoot(boot));

describe('the hybrid ISO on UEFI', () => {
  it("boots as a CD with Secure Boot on: Microsoft's keys, shim, Debian's signed GRUB and kernel", async () => {
    const r = await bootToLogin('uefi-iso-cd-secureboot', { cdrom: iso, vars: varsCopy(OVMF.msVars), secureBoot: true });
    expect(r.commandLine).toContain('OVMF_CODE_4M.secboot.fd');
    expect(r.firmware.split('\n').slice(0, 2)).toEqual(['uefi', 'secureboot: Secure boot enabled']);
    expect(r.firmware).toMatch(/\[integrity\]/); // Debian's kernel locks itself down under Secure Boot
    expect(r.console).toMatch(/GNU GRUB/);
    expect(r.report.kernel.cmdline).toMatch(/^BOOT_IMAGE=\/hfk\/vmlinuz /);
  }, TEST_MS);

  it('boots as a USB stick (the ISO bytes on a USB disk: its EFI system partition)', async () => {
    const r = await bootToLogin('uefi-iso-usb', { disks: [{ path: iso, format: 'raw', readonly: true, interface: 'usb' }], vars: varsCopy(OVMF.vars), secureBoot: false });
    expect(r.commandLine).toContain('usb-storage');
    expect(r.firmware.split('\n').slice(0, 2)).toEqual(['uefi', 'secureboot: Secure boot disabled']);
    expect(r.console).toMatch(/GNU GRUB/);
    expect(r.report.kernel.cmdline).toMatch(/^BOOT_IMAGE=\/hfk\/vmlinuz /);
  }, TEST_MS);
});

describe('UEFI network boot', () => {
  it("UEFI PXE: OVMF's PXE loads shim over TFTP, shim GRUB, GRUB the kernel and initrd", async () => {
    expect(entries.pxe!.bootfiles).toContain('bootx64.efi');
    const r = await bootToLogin('uefi-pxe', { tftp, bootfile: 'bootx64.efi', vars: varsCopy(OVMF.vars), secureBoot: false });
    expect(r.commandLine).not.toMatch(/-drive file=(?!\/usr\/share\/OVMF)/);
    expect(r.console).toMatch(/PXEv4|PXE/);
    expect(r.console).toMatch(/GNU GRUB/);
    expect(r.report.kernel.cmdline).toMatch(/^BOOT_IMAGE=\(tftp,[0-9.]+\)\/?vmlinuz /);
  }, TEST_MS);

  it('UEFI HTTP Boot with Secure Boot: the firmware fetches the UKI signed with the enrolled key', async () => {
    const path = varsCopy(join(work, 'vars-mykey.fd'), { url: `http://${WEB}/hfk.efi`, title: 'hfk UKI over HTTP' });
    const webBefore = countRequests(webServer.accessLog, '/hfk.efi');
    const r = await bootToLogin('uefi-http-uki-secureboot', { vars: path, secureBoot: true });
    expect(countRequests(webServer.accessLog, '/hfk.efi')).toBeGreaterThan(webBefore); // the firmware fetched it
    expect(r.firmware.split('\n').slice(0, 2)).toEqual(['uefi', 'secureboot: Secure boot enabled']);
    expect(r.firmware).toMatch(/\[integrity\]/);
    expect(r.console).not.toMatch(/GNU GRUB/); // no loader: the UKI is the EFI program
    expect(r.report.kernel.cmdline).toBe(CMDLINE); // the UKI's own .cmdline, nothing added
  }, TEST_MS);

  it('refuses a UKI signed with a key that is not enrolled (the negative twin)', async () => {
    const path = varsCopy(join(work, 'vars-mykey.fd'), { url: `http://${WEB}/other.efi`, title: 'UKI signed by someone else' });
    const vm = startEntryVm(lab(), 'uefi-http-uki-wrong-key', uefiBoot({ vars: path, secureBoot: true }));
    await vm.waitFor(/Access Denied|Security Violation/, VM_MS);
    expect(countRequests(webServer.accessLog, '/other.efi')).toBeGreaterThan(0); // fetched, then refused
    expect(vm.console).not.toMatch(/Linux version|hfk-demo login:/);
    await vm.stop();
  }, TEST_MS);
});
