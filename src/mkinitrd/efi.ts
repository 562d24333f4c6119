// UEFI boot entries, from Debian's signed chain (shim → GRUB → kernel):
// the EFI system partition image of the hybrid ISO, the UEFI PXE files of
// the network boot tree, and a unified kernel image (kernel, initrd and
// command line in one EFI program, optionally signed with the user's key)
// for UEFI HTTP Boot and Secure Boot that covers the initrd too.
//
// Debian's signed GRUB images find their config by themselves: the CD
// build (gcdx64) looks for /.disk/info and reads /boot/grub/grub.cfg; the
// network build (grubnetx64) reads grub/grub.cfg at the TFTP root. shim
// loads grubx64.efi from its own folder, and the kernel through GRUB's
// shim_lock check, so a Secure Boot machine with Microsoft's keys boots
// them unchanged. The initrd is outside that chain.

import { createHash, X509Certificate } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { InputError, UsageError } from '../errors.ts';
import { removeOnInterrupt } from '../util/interrupt.ts';
import { type EntryFiles, grubQuote, type LoaderSource, type MenuEntry, type Runner, runTool, type TreeFile } from './loaders.ts';

export const EFI_LOADERS = ['shimx64.efi', 'mmx64.efi', 'gcdx64.efi', 'grubnetx64.efi'] as const;
export type EfiLoader = (typeof EFI_LOADERS)[number];

const SIGNED_GRUB = '/usr/lib/grub/x86_64-efi-signed';

/** Debian's signed UEFI loaders: shim and MokManager (signed by Microsoft), GRUB (signed by Debian). */
export const DEBIAN_EFI_LOADERS: Readonly<Record<EfiLoader, LoaderSource>> = {
  'shimx64.efi': { path: '/usr/lib/shim/shimx64.efi.signed', package: 'shim-signed' },
  'mmx64.efi': { path: '/usr/lib/shim/mmx64.efi.signed', package: 'shim-signed' },
  'gcdx64.efi': { path: `${SIGNED_GRUB}/gcdx64.efi.signed`, package: 'grub-efi-amd64-signed' },
  'grubnetx64.efi': { path: `${SIGNED_GRUB}/grubnetx64.efi.signed`, package: 'grub-efi-amd64-signed' },
};

/** systemd's EFI stub, which a UKI is built around. */
export const UKI_STUB: LoaderSource = { path: '/usr/lib/systemd/boot/efi/linuxx64.efi.stub', package: 'systemd-boot-efi' };

/** The ESP on the ISO (a FAT image El Torito points UEFI at), and what the ISO adds for GRUB. */
export const ISO_EFI = { image: 'boot/grub/efi.img', config: 'boot/grub/grub.cfg', diskInfo: '.disk/info' } as const;
/** UEFI files of the PXE tree: shim as the DHCP boot file, GRUB beside it, GRUB's config at TFTP-root/grub/. */
export const PXE_EFI = { shim: 'bootx64.efi', grub: 'grubx64.efi', mok: 'mmx64.efi', config: 'grub/grub.cfg' } as const;

// ---------------------------------------------------------------- configs (pure)

/**
 * grub.cfg for Debian's signed GRUB on UEFI: the entries as a menu that
 * starts the first after `timeout` seconds. `dir` prefixes the kernel and
 * initrd paths ('' on the ISO; $cmdpath over the network, the folder
 * grubx64.efi came from). Pure.
 */
export function grubEfiConfig(m: { entries: MenuEntry[]; files: EntryFiles; timeout: number; where: 'iso' | 'net' }): string {
  const lines = [
    `# GRUB (UEFI) menu written by hfk mkinitrd: ${m.entries[0]!.title}`,
    m.where === 'iso'
      ? "# Debian's signed GRUB for CDs (gcdx64) reads it from /boot/grub/ of the volume holding /.disk/info."
      : "# Debian's signed network GRUB (grubnetx64) reads it from grub/ at the TFTP root; the kernel and initrd are fetched from grubx64.efi's folder.",
    `set timeout=${m.timeout}`,
    `set default=${m.entries[0]!.id}`,
  ];
  const at = m.where === 'net' ? '$cmdpath/' : '';
  for (const e of m.entries) {
    lines.push('', `menuentry ${grubQuote(e.title)} --id ${e.id} {`, `\tlinux ${at}${m.files.kernel} ${e.params.join(' ')}`, `\tinitrd ${at}${m.files.initrd}`, '}');
  }
  return `${lines.join('\n')}\n`;
}

/** The files inside the ESP image: shim as the removable-media loader, the CD GRUB as shim's second stage. Pure. */
export function espTree(loaders: Readonly<Record<EfiLoader, LoaderSource>> = DEBIAN_EFI_LOADERS): TreeFile[] {
  return [
    { path: 'EFI/BOOT/BOOTX64.EFI', from: loaders['shimx64.efi'].path },
    { path: 'EFI/BOOT/grubx64.efi', from: loaders['gcdx64.efi'].path },
    { path: 'EFI/BOOT/mmx64.efi', from: loaders['mmx64.efi'].path },
  ];
}

/** What UEFI adds to the PXE tree. Pure. */
export function pxeEfiTree(i: { entries: MenuEntry[]; timeout: number; files: EntryFiles; loaders?: Readonly<Record<EfiLoader, LoaderSource>> }): TreeFile[] {
  const loaders = i.loaders ?? DEBIAN_EFI_LOADERS;
  return [
    { path: PXE_EFI.shim, from: loaders['shimx64.efi'].path },
    { path: PXE_EFI.grub, from: loaders['grubnetx64.efi'].path },
    { path: PXE_EFI.mok, from: loaders['mmx64.efi'].path },
    { path: PXE_EFI.config, content: grubEfiConfig({ entries: i.entries, files: i.files, timeout: i.timeout, where: 'net' }) },
  ];
}

/** FAT image size in KiB for files of these sizes: room for the FAT, the folders and cluster slack. Pure. */
export function espSizeKiB(fileBytes: readonly number[]): number {
  const data = fileBytes.reduce((a, b) => a + Math.ceil(b / 4096) * 4, 0);
  return Math.ceil((data * 1.05 + 512) / 1024) * 1024;
}

/**
 * mkfs.vfat and mtools' argv for the ESP image: fixed volume id and
 * --invariant so the same files give the same bytes; mcopy -s -m copies
 * each top-level folder recursively with the staged dates (mmd would date
 * folders now). Pure.
 */
export function espCommands(o: { image: string; sizeKiB: number; root: string; files: readonly string[] }): [string, string[]][] {
  const tops = [...new Set(o.files.map((f) => f.split('/')[0]!))].sort();
  return [
    ['mkfs.vfat', ['-C', '--invariant', '-i', '48464b45', '-n', 'HFK_EFI', o.image, String(o.sizeKiB)]],
    ...tops.map((t) => ['mcopy', ['-s', '-m', '-i', o.image, join(o.root, t), '::/']] as [string, string[]]),
  ];
}

/** Builds the ESP image from staged files (already dated). */
export function writeEspImage(o: { image: string; root: string; files: readonly string[]; run?: Runner }): void {
  const run = o.run ?? runTool;
  const sizeKiB = espSizeKiB(o.files.map((f) => statSync(join(o.root, f)).size));
  rmSync(o.image, { force: true });
  for (const [tool, args] of espCommands({ image: o.image, sizeKiB, root: o.root, files: o.files })) run(tool, args, { ...process.env, MTOOLS_SKIP_CHECK: '1' });
}

// ---------------------------------------------------------------- the unified kernel image

export interface UkiLayout {
  osrel: number;
  cmdline: number;
  linux: number;
  initrd: number;
}

/**
 * Where the UKI's sections go (virtual addresses above the stub's own, the
 * initrd after the kernel, each on a 1 MiB boundary for the big ones). Pure.
 */
export function ukiLayout(kernelBytes: number): UkiLayout {
  const mib = 0x100000;
  const linux = 0x2000000;
  return { osrel: 0x20000, cmdline: 0x30000, linux, initrd: linux + Math.ceil(kernelBytes / mib) * mib + mib };
}

/** objcopy's argv to add the UKI sections to the stub. Pure. */
export function ukiObjcopyArgs(o: { stub: string; out: string; osrel: string; cmdline: string; kernel: string; initrd: string; kernelBytes: number }): string[] {
  const at = ukiLayout(o.kernelBytes);
  const hex = (n: number) => `0x${n.toString(16)}`;
  return [
    '--add-section', `.osrel=${o.osrel}`, '--change-section-vma', `.osrel=${hex(at.osrel)}`,
    '--add-section', `.cmdline=${o.cmdline}`, '--change-section-vma', `.cmdline=${hex(at.cmdline)}`,
    '--add-section', `.linux=${o.kernel}`, '--change-section-vma', `.linux=${hex(at.linux)}`,
    '--add-section', `.initrd=${o.initrd}`, '--change-section-vma', `.initrd=${hex(at.initrd)}`,
    o.stub, o.out,
  ];
}

/**
 * Sets a PE file's COFF TimeDateStamp (objcopy writes the time of the run
 * there, and has no option against it) and zeroes the optional header's
 * CheckSum, which objcopy derives from it (firmware does not check it), so
 * the same inputs give the same bytes.
 */
export function setPeTimestamp(path: string, seconds: number): void {
  const fd = openSync(path, 'r+');
  try {
    const head = Buffer.alloc(0x40);
    readSync(fd, head, 0, head.length, 0);
    if (head.toString('latin1', 0, 2) !== 'MZ') throw new InputError(`${path} is not a PE file (no MZ header)`);
    const pe = head.readUInt32LE(0x3c);
    const sig = Buffer.alloc(4);
    readSync(fd, sig, 0, 4, pe);
    if (sig.toString('latin1') !== 'PE\0\0') throw new InputError(`${path} is not a PE file (no PE signature at ${pe})`);
    const stamp = Buffer.alloc(4);
    stamp.writeUInt32LE(seconds >>> 0);
    writeSync(fd, stamp, 0, 4, pe + 8);
    writeSync(fd, Buffer.alloc(4), 0, 4, pe + 24 + 64);
  } finally {
    closeSync(fd);
  }
}

/** The .osrel section: names the UKI for boot menus (systemd-boot lists it by these). Pure. */
export function ukiOsRelease(title: string): string {
  return `NAME="hfk"\nID=hfk\nPRETTY_NAME=${JSON.stringify(title)}\n`;
}

export interface UkiSigning {
  key: string;
  cert: string;
}

export interface UkiResult {
  path: string;
  bytes: number;
  sha256: string;
  /** The signing certificate's subject, when signed. */
  signedBy: string | null;
}

/** Checks the stub, the signing tools and the key pair before the long initrd build. */
export function checkUki(o: { signing?: UkiSigning; stub?: LoaderSource; run?: Runner; exists: (p: string) => boolean }): void {
  const stub = o.stub ?? UKI_STUB;
  if (!o.exists(stub.path)) throw new InputError(`the UKI needs systemd's EFI stub ${stub.path}: missing`, { hint: `apt-get install ${stub.package}` });
  const run = o.run ?? runTool;
  run('objcopy', ['--version'], process.env);
  if (!o.signing) return;
  for (const [what, p] of [['--uki-key', o.signing.key], ['--uki-cert', o.signing.cert]] as const) {
    if (!o.exists(p)) throw new InputError(`${what} ${p}: no such file`, { hint: 'make a key pair: openssl req -new -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=my UKI key/" -keyout uki.key -out uki.crt' });
  }
  if (!/-----BEGIN CERTIFICATE-----/.test(readFileSync(o.signing.cert, 'latin1'))) throw new InputError(`--uki-cert ${o.signing.cert} is not a PEM certificate`, { hint: 'sbsign takes the X.509 certificate in PEM (-----BEGIN CERTIFICATE-----)' });
  run('sbsign', ['--help'], process.env);
}

/**
 * Builds the UKI (objcopy around systemd's stub) and, with `signing`, signs
 * it with sbsign and checks the signature with sbverify. Written through a
 * temporary name. Unsigned, the same inputs give the same bytes; a
 * signature carries its signing time.
 */
export function writeUki(o: { out: string; kernel: string; initrd: string; cmdline: string; title: string; signing?: UkiSigning; stub?: string; run?: Runner; mtime?: number; certSubject?: (cert: string) => string }): UkiResult {
  const out = resolve(o.out);
  const dir = dirname(out);
  mkdirSync(dir, { recursive: true });
  const base = `${out}.tmp-${process.pid}`;
  const parts = { osrel: `${base}.osrel`, cmdline: `${base}.cmdline`, unsigned: `${base}.unsigned`, signed: `${base}.signed` };
  const forget = Object.values(parts).map((p) => removeOnInterrupt(p));
  const run = o.run ?? runTool;
  try {
    writeFileSync(parts.osrel, ukiOsRelease(o.title));
    writeFileSync(parts.cmdline, `${o.cmdline}\0`);
    run('objcopy', ukiObjcopyArgs({ stub: o.stub ?? UKI_STUB.path, out: parts.unsigned, osrel: parts.osrel, cmdline: parts.cmdline, kernel: o.kernel, initrd: o.initrd, kernelBytes: statSync(o.kernel).size }), process.env);
    setPeTimestamp(parts.unsigned, o.mtime ?? 0);
    let result = parts.unsigned;
    if (o.signing) {
      run('sbsign', ['--key', o.signing.key, '--cert', o.signing.cert, '--output', parts.signed, parts.unsigned], process.env);
      run('sbverify', ['--cert', o.signing.cert, parts.signed], process.env);
      result = parts.signed;
    }
    renameSync(result, out);
  } finally {
    for (const p of Object.values(parts)) rmSync(p, { force: true });
    for (const f of forget) f();
  }
  const bytes = readFileSync(out);
  return { path: out, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), signedBy: o.signing ? (o.certSubject ?? certSubject)(o.signing.cert) : null };
}

/** The subject of a PEM certificate, as one line. */
export function certSubject(cert: string): string {
  try {
    return new X509Certificate(readFileSync(cert)).subject.replaceAll('\n', ', ');
  } catch (e) {
    throw new UsageError(`--uki-cert ${cert}: cannot read the certificate: ${(e as Error).message}`);
  }
}
