// One boot entry booted in QEMU to the login prompt of the Debian root,
// with no -kernel: the entry under test (a CD, a stick, PXE, HTTP Boot)
// starts the kernel, and the root comes from the lab mirror. Shared by the
// BIOS and the UEFI boot entry tests.

import { expect, onTestFinished } from 'vitest';
import { countRequests } from '../helpers/mirrors.ts';
import { GUEST_MIRRORS, type LoginResult, loginAndReport, powerOff, shellOutput } from './hfkboot.ts';
import { type GuestFwd, startVm, type Vm, type VmOptions } from './qemu.ts';

export interface EntryLab {
  /** The mirror nginx (its access log counts block requests). */
  mirror: { port: number; accessLog: string };
  /** The command line every entry carries. */
  cmdline: string;
  vmMs: number;
  /** More guestfwd rules (e.g. a web server for HTTP Boot). */
  guestfwd?: GuestFwd[];
  /** `name: N s` lines, one per boot. */
  timings: string[];
}

export type EntryBoot = Pick<VmOptions, 'cdrom' | 'disks' | 'uefi'> & { tftp?: string; bootfile?: string };

export interface EntryLogin extends LoginResult {
  /** The console without ANSI colours and cursor moves. */
  console: string;
  commandLine: string;
  /** What the booted kernel says of its firmware: `uefi`, the Secure Boot line, the lockdown modes. */
  firmware: string;
}

/** Console text without the menus' ANSI colours and cursor moves. */
export function plain(text: string): string {
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
}

/** Starts a VM whose only way to the root is the lab mirror; stopped when the test ends. */
export function startEntryVm(lab: EntryLab, name: string, boot: EntryBoot): Vm {
  const vm = startVm({
    name,
    memoryMiB: 2048,
    ...(boot.cdrom ? { cdrom: boot.cdrom } : {}),
    ...(boot.disks ? { disks: boot.disks } : {}),
    ...(boot.uefi ? { uefi: boot.uefi } : {}),
    net: {
      restrict: true,
      ...(boot.tftp ? { tftp: boot.tftp } : {}),
      ...(boot.bootfile ? { bootfile: boot.bootfile } : {}),
      guestfwd: [{ guestIp: GUEST_MIRRORS[0], guestPort: 80, hostPort: lab.mirror.port }, ...(lab.guestfwd ?? [])],
    },
    timeoutMs: lab.vmMs,
  });
  onTestFinished(() => void vm.stop());
  return vm;
}

/** Boots the entry, logs in, checks the boot report came from the mirror, and powers off. */
export async function bootEntryToLogin(lab: EntryLab, name: string, boot: EntryBoot): Promise<EntryLogin> {
  const blocksBefore = countRequests(lab.mirror.accessLog, '/blocks/');
  const startedAt = performance.now();
  const vm = startEntryVm(lab, name, boot);
  const result = await loginAndReport(vm, startedAt, lab.vmMs);
  const { report } = result;
  expect(report.ok, JSON.stringify(report.error)).toBe(true);
  expect(report.image).toMatchObject({ name: 'debian', filesystem: 'squashfs' });
  expect(report.mirrors.chosen).toBe(`http://${GUEST_MIRRORS[0]}/`);
  expect(report.kernel.cmdline).toContain(lab.cmdline);
  expect(countRequests(lab.mirror.accessLog, '/blocks/')).toBeGreaterThan(blocksBefore);
  // The guest booted with no kernel from QEMU: the entry under test started it.
  expect(vm.commandLine).not.toMatch(/ -kernel | -initrd /);
  const firmware = await shellOutput(vm, "test -d /sys/firmware/efi && echo uefi; dmesg | grep -o 'secureboot: Secure boot [a-z]*'; cat /sys/kernel/security/lockdown 2>/dev/null");
  lab.timings.push(`${name}: ${(result.timeToLoginMs / 1000).toFixed(1)} s`);
  process.stderr.write(`${name}: login after ${(result.timeToLoginMs / 1000).toFixed(1)} s\n`);
  const out = { ...result, console: plain(vm.console), commandLine: vm.commandLine, firmware };
  await powerOff(vm);
  return out;
}
