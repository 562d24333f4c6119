// Boot entries: what starts an hfk initrd from the boot loaders people use —
// pxelinux, iPXE and (UEFI) shim with GRUB over the network, GRUB on a
// disk, a hybrid ISO for a CD or a USB stick (isolinux on BIOS, shim and
// GRUB on UEFI), and a unified kernel image for UEFI HTTP Boot (efi.ts).
//
// The configs are data: small pure functions render them from typed options
// (golden-tested beside this file), and the layouts are lists of files
// (TreeFile) planned from those. The edges are small: checking the loader
// files are there, copying them, and running xorriso.
//
// Every entry's kernel command line starts with console=tty0
// console=ttyS0,115200n8 (the last console is /dev/console: init's output and
// the login prompt go to the serial port, the screen still shows the kernel),
// then hfk.image= and hfk.mirrors= when known, then the user's parameters.
// The menus wait DEFAULT_MENU_TIMEOUT seconds, then start the first entry.

import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { InputError, UsageError } from '../errors.ts';
import { parseCmdline } from '../config/cmdline.ts';
import { tempPathFor, writeFileAtomicSync } from '../util/atomic.ts';
import { removeOnInterrupt } from '../util/interrupt.ts';
import { checkUki, DEBIAN_EFI_LOADERS, EFI_LOADERS, type EfiLoader, espTree, grubEfiConfig, ISO_EFI, PXE_EFI, pxeEfiTree, type UkiResult, writeEspImage, writeUki } from './efi.ts';
import { checkLoaders, type EntryFiles, grubQuote, type LoaderSource, type MenuEntry, type Runner, runTool, type TreeFile } from './loaders.ts';

export { checkLoaders, type EntryFiles, grubQuote, type LoaderSource, type MenuEntry, type Runner, runTool, type TreeFile } from './loaders.ts';

// ---------------------------------------------------------------- kernel parameters

/** Screen and serial port; the last one is /dev/console (init's output, the login prompt). */
export const CONSOLE_PARAMS = ['console=tty0', 'console=ttyS0,115200n8'] as const;
export const SERIAL_BAUD = 115200;
/** Seconds a menu waits before it starts the default entry. */
export const DEFAULT_MENU_TIMEOUT = 2;

/**
 * Characters a parameter may hold. Each loader reads its config differently
 * (GRUB expands $ and quotes, iPXE expands ${…}, syslinux reads to the end
 * of the line): anything else would reach the kernel changed, or not at all.
 */
const PARAM_CHARS = /^[A-Za-z0-9_.,:/@%+=~[\]-]+$/;

export const EntryOptions = z.strictObject({
  /** NAME or NAME@VERSION, as hfk.image= (omitted: the initrd's config decides). */
  image: z.string().min(1).optional(),
  /** Mirror base URLs, as one hfk.mirrors= (empty: the initrd's config decides). */
  mirrors: z.array(z.string().min(1)).default([]),
  /** More kernel parameters, one word each, after hfk's. */
  append: z.array(z.string()).default([]),
  /** Seconds the menus wait before the default entry (default 2). */
  timeout: z.number().int().min(1).max(600).default(DEFAULT_MENU_TIMEOUT),
});
export type EntryOptions = z.input<typeof EntryOptions>;

/** Splits `--append 'a=1 b'` values into words. */
export function splitParams(texts: readonly string[]): string[] {
  return texts.flatMap((t) => t.split(/\s+/)).filter(Boolean);
}

/**
 * The kernel parameters of the default entry. Checked the way the init will
 * read them (its own command-line schema): a bad hfk.* value or an unknown
 * hfk.* key is refused here rather than at boot. Pure.
 */
export function kernelParams(input: EntryOptions): string[] {
  const o = EntryOptions.parse(input);
  const params = [
    ...CONSOLE_PARAMS,
    ...(o.image !== undefined ? [`hfk.image=${o.image}`] : []),
    ...(o.mirrors.length ? [`hfk.mirrors=${o.mirrors.join(',')}`] : []),
    ...o.append,
  ];
  for (const p of params) {
    const bad = [...p].find((c) => !PARAM_CHARS.test(c));
    if (bad !== undefined || p === '') {
      throw new UsageError(`kernel parameter '${p}' ${p === '' ? 'is empty' : `has '${bad}'`}: boot entries carry parameters made of letters, digits and _ . , : / @ % + = ~ - [ ]`, {
        hint: 'GRUB, iPXE and syslinux would each read other characters differently; put such settings in the config (--config) instead',
      });
    }
  }
  const parsed = parseCmdline(params.join(' '));
  if (parsed.warnings.length) throw new UsageError(`kernel parameters: ${parsed.warnings.join('; ')}`, { hint: 'correct or drop them in --append: hfk-init would ignore them' });
  return params;
}

/** The entries every menu offers; the first is the default. Pure. */
export function menuEntries(input: EntryOptions): MenuEntry[] {
  const o = EntryOptions.parse(input);
  const params = kernelParams(o);
  const what = o.image ?? 'the configured image';
  return [
    { id: 'hfk', title: `Boot ${what} from HTTP mirrors (hfk)`, params },
    { id: 'hfk-debug', title: `Boot ${what}, with hfk debug messages`, params: [...params, 'hfk.debug'] },
    { id: 'hfk-shell', title: 'Shell once the network is up (hfk.break=mirrors)', params: [...params, 'hfk.break=mirrors'] },
  ];
}

// ---------------------------------------------------------------- configs (pure)

export interface SyslinuxMenu {
  entries: MenuEntry[];
  files: EntryFiles;
  /** Seconds before the default entry. */
  timeout: number;
  /** Which loader reads it (named in the header comment). */
  loader: 'pxelinux' | 'isolinux';
}

/**
 * pxelinux.cfg/default or isolinux.cfg: a menu.c32 menu, mirrored on the
 * first serial port (SERIAL must come first), that starts the first entry
 * after `timeout` seconds. Pure.
 */
export function syslinuxConfig(m: SyslinuxMenu): string {
  const lines = [
    `SERIAL 0 ${SERIAL_BAUD}`,
    `# ${m.loader} menu written by hfk mkinitrd: ${m.entries[0]!.title}`,
    'UI menu.c32',
    `MENU TITLE hfk: boot from HTTP mirrors`,
    `TIMEOUT ${m.timeout * 10}`,
    `DEFAULT ${m.entries[0]!.id}`,
  ];
  for (const e of m.entries) {
    lines.push('', `LABEL ${e.id}`, `  MENU LABEL ${e.title}`, `  KERNEL ${m.files.kernel}`, `  INITRD ${m.files.initrd}`, `  APPEND ${e.params.join(' ')}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * boot.ipxe: boots the default entry at once. File names are relative to
 * the script's own URL, so the same script works from TFTP and HTTP.
 * initrd= on the command line is what iPXE's EFI build needs to hand the
 * initrd over; the BIOS build ignores it. Pure.
 */
export function ipxeScript(entry: MenuEntry, files: EntryFiles): string {
  return [
    '#!ipxe',
    `# ${entry.title}: written by hfk mkinitrd.`,
    '# DHCP boot file, or from an iPXE prompt: chain tftp://SERVER/boot.ipxe (or http://…/boot.ipxe).',
    '# The kernel and initrd are fetched relative to this script.',
    `kernel ${files.kernel} initrd=${basenameOf(files.initrd)} ${entry.params.join(' ')}`,
    `initrd ${files.initrd}`,
    'boot',
    '',
  ].join('\n');
}

/**
 * grub.cfg snippet to paste into an existing GRUB (/etc/grub.d/40_custom):
 * the default entry, and the others in a submenu. `dir` is where the kernel
 * and initrd sit on some disk GRUB can read; `search` finds that disk. Pure.
 */
export function grubSnippet(entries: MenuEntry[], dir: string): string {
  const kernel = `${dir}/vmlinuz`;
  const initrd = `${dir}/initrd.img`;
  const entry = (e: MenuEntry, indent: string) => [
    `${indent}menuentry ${grubQuote(e.title)} --id ${e.id} {`,
    `${indent}\tsearch --no-floppy --set=root --file ${kernel}`,
    `${indent}\tlinux ${kernel} ${e.params.join(' ')}`,
    `${indent}\tinitrd ${initrd}`,
    `${indent}}`,
  ];
  const [first, ...rest] = entries;
  return [
    `# hfk: ${first!.title}. Written by hfk mkinitrd.`,
    `# Copy vmlinuz and initrd.img to ${dir}/, append this file to /etc/grub.d/40_custom,`,
    '# then run update-grub (grub2-mkconfig -o /boot/grub2/grub.cfg elsewhere).',
    ...entry(first!, ''),
    ...(rest.length ? [`submenu ${grubQuote('hfk: more boot options')} --id hfk-more {`, ...rest.flatMap((e) => entry(e, '\t')), '}'] : []),
    '',
  ].join('\n');
}

function basenameOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

// ---------------------------------------------------------------- loader files

export const LOADER_FILES = ['pxelinux.0', 'isolinux.bin', 'isohdpfx.bin', 'ldlinux.c32', 'menu.c32', 'libutil.c32', 'libcom32.c32'] as const;
export type LoaderFile = (typeof LOADER_FILES)[number];

const BIOS_MODULES = '/usr/lib/syslinux/modules/bios';

/** Debian's (and Ubuntu's) places for the syslinux family. */
export const DEBIAN_LOADERS: Readonly<Record<LoaderFile, LoaderSource>> = {
  'pxelinux.0': { path: '/usr/lib/PXELINUX/pxelinux.0', package: 'pxelinux' },
  'isolinux.bin': { path: '/usr/lib/ISOLINUX/isolinux.bin', package: 'isolinux' },
  'isohdpfx.bin': { path: '/usr/lib/ISOLINUX/isohdpfx.bin', package: 'isolinux' },
  'ldlinux.c32': { path: `${BIOS_MODULES}/ldlinux.c32`, package: 'syslinux-common' },
  'menu.c32': { path: `${BIOS_MODULES}/menu.c32`, package: 'syslinux-common' },
  'libutil.c32': { path: `${BIOS_MODULES}/libutil.c32`, package: 'syslinux-common' },
  'libcom32.c32': { path: `${BIOS_MODULES}/libcom32.c32`, package: 'syslinux-common' },
};

/** The modules menu.c32 needs; ldlinux.c32 is the loader's own second stage. */
export const SYSLINUX_MODULES = ['ldlinux.c32', 'menu.c32', 'libutil.c32', 'libcom32.c32'] as const;

export const PXE_LOADERS: readonly LoaderFile[] = ['pxelinux.0', ...SYSLINUX_MODULES];
export const ISO_LOADERS: readonly LoaderFile[] = ['isolinux.bin', 'isohdpfx.bin', ...SYSLINUX_MODULES];

// ---------------------------------------------------------------- the kernel

/**
 * The version a bzImage reports (the first word of its kernel_version
 * string), or undefined when the bytes are not a bzImage with that field.
 * `head` is the start of the file (64 KiB holds the setup code). Pure.
 */
export function bzImageVersion(head: Uint8Array): string | undefined {
  const b = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (b.length < 0x210 || b.readUInt16LE(0x1fe) !== 0xaa55 || b.toString('latin1', 0x202, 0x206) !== 'HdrS') return undefined;
  if (b.readUInt16LE(0x206) < 0x0200) return undefined; // boot protocol 2.00 added kernel_version
  const offset = b.readUInt16LE(0x20e);
  if (offset === 0) return undefined;
  const start = 0x200 + offset;
  const end = b.indexOf(0, start);
  if (start >= b.length || end < 0) return undefined;
  return b.toString('latin1', start, end).split(' ')[0] || undefined;
}

/**
 * Checks the kernel the entries boot is a bzImage of the version the
 * initrd's modules are for (else no module would load at boot), and
 * returns that version.
 */
export function checkKernel(path: string, modulesVersion: string): string {
  let head: Buffer;
  try {
    const fd = openSync(path, 'r');
    try {
      head = Buffer.alloc(65536); // the version string sits in the setup code (at most 64 sectors)
      head = head.subarray(0, readSync(fd, head, 0, head.length, 0));
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    throw new InputError(`cannot read the kernel ${path}: ${(e as Error).message}`, { hint: 'pass --kernel /boot/vmlinuz-VERSION', cause: e });
  }
  const version = bzImageVersion(head);
  if (version === undefined) throw new InputError(`${path} is not a Linux kernel (bzImage): no HdrS header with a version`, { hint: 'pass --kernel /boot/vmlinuz-VERSION' });
  if (version !== modulesVersion) {
    throw new InputError(`the kernel ${path} is version ${version}, but the modules are for ${modulesVersion}: the initrd's modules would not load`, {
      hint: `pass --kernel /boot/vmlinuz-${modulesVersion}, or --modules /lib/modules/${version}`,
    });
  }
  return version;
}

// ---------------------------------------------------------------- layouts (pure)

/** Names in the PXE tree (relative to its root, which may be a subfolder of the TFTP root). */
export const PXE_FILES = { kernel: 'vmlinuz', initrd: 'initrd.img', config: 'pxelinux.cfg/default', ipxe: 'boot.ipxe', grub: 'grub.cfg' } as const;
/** Names on the ISO (8.3, so they read the same without Rock Ridge). */
export const ISO_FILES = { kernel: '/hfk/vmlinuz', initrd: '/hfk/initrd.img', dir: 'isolinux', catalog: 'isolinux/boot.cat' } as const;
/** Where the GRUB snippet expects the kernel and initrd by default. */
export const GRUB_DIR = '/boot/hfk';

export interface LayoutInput {
  entries: MenuEntry[];
  timeout: number;
  /** Host paths of the kernel and the initrd. */
  kernel: string;
  initrd: string;
  loaders?: Readonly<Record<LoaderFile, LoaderSource>>;
  /** Where the GRUB snippet looks for vmlinuz and initrd.img (default /boot/hfk). */
  grubDir?: string;
  /** UEFI loaders too (shim, GRUB): their host files, or null for BIOS only. */
  efi?: Readonly<Record<EfiLoader, LoaderSource>> | null;
}

/**
 * The PXE tree: pxelinux.0 with its modules and menu, boot.ipxe, the GRUB
 * snippet, the kernel and the initrd. A DHCP server hands out pxelinux.0 or
 * boot.ipxe; the rest is found relative to it. Pure.
 */
export function pxeTree(i: LayoutInput): TreeFile[] {
  const loaders = i.loaders ?? DEBIAN_LOADERS;
  const files: EntryFiles = { kernel: PXE_FILES.kernel, initrd: PXE_FILES.initrd };
  return [
    ...PXE_LOADERS.map((f) => ({ path: f, from: loaders[f].path })),
    { path: PXE_FILES.config, content: syslinuxConfig({ entries: i.entries, files, timeout: i.timeout, loader: 'pxelinux' }) },
    { path: PXE_FILES.ipxe, content: ipxeScript(i.entries[0]!, files) },
    { path: PXE_FILES.grub, content: grubSnippet(i.entries, i.grubDir ?? GRUB_DIR) },
    { path: PXE_FILES.kernel, from: i.kernel },
    { path: PXE_FILES.initrd, from: i.initrd },
    ...(i.efi ? pxeEfiTree({ entries: i.entries, timeout: i.timeout, files, loaders: i.efi }) : []),
  ];
}

/**
 * What goes on the ISO (isohdpfx.bin is not a file on it: xorriso writes it
 * as the MBR). For UEFI, /.disk/info and GRUB's config; the ESP image
 * (espTree) is built beside it. Pure.
 */
export function isoTree(i: LayoutInput): TreeFile[] {
  const loaders = i.loaders ?? DEBIAN_LOADERS;
  const files = { kernel: ISO_FILES.kernel, initrd: ISO_FILES.initrd };
  return [
    ...(i.efi
      ? [
          { path: ISO_EFI.diskInfo, content: `hfk boot ISO: ${i.entries[0]!.title}\n` },
          { path: ISO_EFI.config, content: grubEfiConfig({ entries: i.entries, files, timeout: i.timeout, where: 'iso' }) },
        ]
      : []),
    { path: `${ISO_FILES.dir}/isolinux.bin`, from: loaders['isolinux.bin'].path },
    ...SYSLINUX_MODULES.map((f) => ({ path: `${ISO_FILES.dir}/${f}`, from: loaders[f].path })),
    { path: `${ISO_FILES.dir}/isolinux.cfg`, content: syslinuxConfig({ entries: i.entries, files: { kernel: ISO_FILES.kernel, initrd: ISO_FILES.initrd }, timeout: i.timeout, loader: 'isolinux' }) },
    { path: ISO_FILES.kernel.slice(1), from: i.kernel },
    { path: ISO_FILES.initrd.slice(1), from: i.initrd },
  ];
}

export interface XorrisoInput {
  out: string;
  /** The staged tree. */
  stage: string;
  /** The isohybrid MBR (isohdpfx.bin). */
  mbr: string;
  volid?: string;
  /** The ESP image inside the tree (UEFI's El Torito entry and the GPT partition on a stick). */
  efiImage?: string;
}

/**
 * xorriso's argv (mkisofs emulation) for a hybrid ISO: El Torito boots
 * isolinux from a CD; the isohybrid MBR boots it from a USB stick or disk.
 * With an ESP image, a second El Torito entry boots UEFI from a CD, and the
 * image is also a partition (MBR and GPT) that UEFI boots from a stick.
 * Dates come from SOURCE_DATE_EPOCH in xorriso's environment. Pure.
 */
export function xorrisoArgs(x: XorrisoInput): string[] {
  return [
    '-as', 'mkisofs',
    '-quiet',
    '-o', x.out,
    '-V', x.volid ?? 'HFK',
    '-R', '-J', '-iso-level', '3',
    '-isohybrid-mbr', x.mbr,
    '-partition_offset', '16',
    '-c', ISO_FILES.catalog,
    '-b', `${ISO_FILES.dir}/isolinux.bin`,
    '-no-emul-boot', '-boot-load-size', '4', '-boot-info-table',
    ...(x.efiImage ? ['-eltorito-alt-boot', '-e', x.efiImage, '-no-emul-boot', '-isohybrid-gpt-basdat'] : []),
    x.stage,
  ];
}

// ---------------------------------------------------------------- edges

/**
 * Writes the files under `dir` (each through a temporary name, so a reader
 * never sees half a file). A file whose source is already its destination
 * is left alone. With `mtime`, every file and folder gets that time.
 */
export function writeTree(files: readonly TreeFile[], dir: string, mtime?: number): void {
  for (const f of files) {
    const dest = join(dir, f.path);
    mkdirSync(dirname(dest), { recursive: true });
    if (!('from' in f)) {
      writeFileAtomicSync(dest, f.content);
      continue;
    }
    if (resolve(f.from) === resolve(dest)) continue;
    const tmp = tempPathFor(dest);
    try {
      copyFileSync(f.from, tmp);
      renameSync(tmp, dest);
    } finally {
      rmSync(tmp, { force: true });
    }
  }
  if (mtime !== undefined) {
    const dirs = new Set<string>([dir]);
    for (const f of files) {
      utimesSync(join(dir, f.path), mtime, mtime);
      for (let d = dirname(join(dir, f.path)); d.startsWith(dir) && d !== dir; d = dirname(d)) dirs.add(d);
    }
    for (const d of dirs) utimesSync(d, mtime, mtime);
  }
}

/** Fails early (before a long initrd build) when xorriso is missing. */
export function checkXorriso(run: Runner = runTool): void {
  run('xorriso', ['-version'], process.env);
}

export interface IsoResult {
  path: string;
  bytes: number;
  sha256: string;
}

/**
 * Stages the ISO tree in a temporary folder (every date set to `mtime`),
 * runs xorriso with SOURCE_DATE_EPOCH=mtime, and renames the result into
 * place: the same inputs give the same bytes.
 */
export function writeIso(o: { out: string; files: readonly TreeFile[]; esp?: readonly TreeFile[]; mbr: string; mtime: number; volid?: string; run?: Runner }): IsoResult {
  if (!existsSync(dirname(resolve(o.out)))) throw new InputError(`cannot write ${o.out}: folder ${dirname(resolve(o.out))} does not exist`);
  const stage = mkdtempSync(join(tmpdir(), 'hfk-iso-'));
  const espRoot = mkdtempSync(join(tmpdir(), 'hfk-esp-'));
  const tmp = `${o.out}.tmp-${process.pid}`;
  const forget = [removeOnInterrupt(stage), removeOnInterrupt(espRoot), removeOnInterrupt(tmp)];
  const run = o.run ?? runTool;
  try {
    writeTree(o.files, stage, o.mtime);
    if (o.esp?.length) {
      writeTree(o.esp, espRoot, o.mtime);
      const image = join(stage, ISO_EFI.image);
      mkdirSync(dirname(image), { recursive: true });
      writeEspImage({ image, root: espRoot, files: o.esp.map((f) => f.path), run });
      utimesSync(image, o.mtime, o.mtime);
      utimesSync(dirname(image), o.mtime, o.mtime);
    }
    rmSync(tmp, { force: true });
    run('xorriso', xorrisoArgs({ out: tmp, stage, mbr: o.mbr, ...(o.volid ? { volid: o.volid } : {}), ...(o.esp?.length ? { efiImage: ISO_EFI.image } : {}) }), { ...process.env, SOURCE_DATE_EPOCH: String(o.mtime) });
    renameSync(tmp, o.out);
  } finally {
    rmSync(tmp, { force: true });
    rmSync(stage, { recursive: true, force: true });
    rmSync(espRoot, { recursive: true, force: true });
    for (const f of forget) f();
  }
  return { path: o.out, bytes: statSync(o.out).size, sha256: createHash('sha256').update(readFileSync(o.out)).digest('hex') };
}

// ---------------------------------------------------------------- the whole job

export const BootEntriesOptions = z.strictObject({
  entry: EntryOptions,
  /** The kernel the entries start. */
  kernel: z.string().min(1),
  /** The modules' kernel version: the kernel must be the same. */
  modulesVersion: z.string().min(1),
  /** A hybrid ISO to write. */
  iso: z.string().min(1).optional(),
  /** A folder for the PXE tree. */
  pxe: z.string().min(1).optional(),
  /** UEFI entries too (shim and GRUB on the ISO and in the PXE tree). */
  uefi: z.boolean().default(true),
  /** A unified kernel image to write (UEFI HTTP Boot, Secure Boot with one's own key). */
  uki: z.string().min(1).optional(),
  /** Sign the UKI with this key pair (sbsign). */
  ukiSigning: z.strictObject({ key: z.string().min(1), cert: z.string().min(1) }).optional(),
  /** Dates on the ISO (default SOURCE_DATE_EPOCH or 0, as the initrd). */
  mtime: z.number().int().min(0).max(0xffffffff).default(0),
  /** Where the GRUB snippet looks for vmlinuz and initrd.img. */
  grubDir: z.string().regex(/^(\/[A-Za-z0-9_.-]+)+$/, 'must be an absolute path of letters, digits, _ . - such as /boot/hfk').default(GRUB_DIR),
});
export type BootEntriesOptions = z.input<typeof BootEntriesOptions>;

export interface BootEntriesPlan {
  options: z.output<typeof BootEntriesOptions>;
  entries: MenuEntry[];
  loaders: Readonly<Record<LoaderFile, LoaderSource>>;
  efi: Readonly<Record<EfiLoader, LoaderSource>> | null;
}

export interface BootEntriesReport {
  /** The default entry's kernel command line. */
  cmdline: string;
  entries: { id: string; title: string }[];
  pxe: { dir: string; files: string[]; bootfiles: string[] } | null;
  iso: IsoResult | null;
  /** Whether the ISO and the PXE tree boot UEFI machines too. */
  uefi: boolean;
  uki: UkiResult | null;
}

/**
 * Everything that can be checked before the initrd is built: the options,
 * the kernel parameters, the kernel's version, the loader files, the tools.
 */
export function planBootEntries(
  input: BootEntriesOptions,
  deps: { loaders?: Readonly<Record<LoaderFile, LoaderSource>>; efi?: Readonly<Record<EfiLoader, LoaderSource>>; run?: Runner; exists?: (p: string) => boolean } = {},
): BootEntriesPlan {
  const parsed = BootEntriesOptions.safeParse(input);
  if (!parsed.success) throw new UsageError(`boot entry options: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'options'}: ${i.message}`).join('; ')}`);
  const o = parsed.data;
  if (!o.iso && !o.pxe && !o.uki) throw new UsageError('boot entries need somewhere to go: --iso FILE, --pxe DIR, --uki FILE, or several');
  if (o.ukiSigning && !o.uki) throw new UsageError('--uki-key and --uki-cert sign the UKI: give --uki FILE with them');
  const entries = menuEntries(o.entry);
  checkKernel(o.kernel, o.modulesVersion);
  const exists = deps.exists ?? existsSync;
  const loaders = deps.loaders ?? DEBIAN_LOADERS;
  checkLoaders([...new Set([...(o.pxe ? PXE_LOADERS : []), ...(o.iso ? ISO_LOADERS : [])])], loaders, exists);
  const efi = o.uefi && (o.iso || o.pxe) ? (deps.efi ?? DEBIAN_EFI_LOADERS) : null;
  if (efi) {
    try {
      checkLoaders([...EFI_LOADERS], efi, exists);
    } catch (e) {
      throw new InputError(`${(e as Error).message}: the UEFI entries need them`, { hint: `${(e as InputError).hint ?? ''}, or pass --no-uefi for BIOS entries only`, cause: e });
    }
  }
  if (o.iso) checkXorriso(deps.run);
  if (o.iso && efi) for (const tool of ['mkfs.vfat', 'mcopy']) (deps.run ?? runTool)(tool, ['--help'], process.env);
  if (o.uki) checkUki({ ...(o.ukiSigning ? { signing: o.ukiSigning } : {}), ...(deps.run ? { run: deps.run } : {}), exists });
  return { options: o, entries, loaders, efi };
}

/** Writes the PXE tree and/or the ISO around a built initrd. */
export function writeBootEntries(plan: BootEntriesPlan, initrd: string, deps: { run?: Runner } = {}): BootEntriesReport {
  const o = plan.options;
  const layout: LayoutInput = { entries: plan.entries, timeout: o.entry.timeout ?? DEFAULT_MENU_TIMEOUT, kernel: o.kernel, initrd, loaders: plan.loaders, grubDir: o.grubDir, efi: plan.efi };
  let pxe: BootEntriesReport['pxe'] = null;
  if (o.pxe) {
    const files = pxeTree(layout);
    mkdirSync(o.pxe, { recursive: true });
    writeTree(files, o.pxe);
    pxe = { dir: o.pxe, files: files.map((f) => f.path), bootfiles: ['pxelinux.0', PXE_FILES.ipxe, ...(plan.efi ? [PXE_EFI.shim] : [])] };
  }
  const run = deps.run ? { run: deps.run } : {};
  const iso = o.iso ? writeIso({ out: o.iso, files: isoTree(layout), ...(plan.efi ? { esp: espTree(plan.efi) } : {}), mbr: plan.loaders['isohdpfx.bin'].path, mtime: o.mtime, ...run }) : null;
  const first = plan.entries[0]!;
  const uki = o.uki ? writeUki({ out: o.uki, kernel: o.kernel, initrd, cmdline: first.params.join(' '), title: first.title, ...(o.ukiSigning ? { signing: o.ukiSigning } : {}), mtime: o.mtime, ...run }) : null;
  return { cmdline: first.params.join(' '), entries: plan.entries.map((e) => ({ id: e.id, title: e.title })), pxe, iso, uefi: plan.efi !== null, uki };
}

/** The report as text for a person. */
export function formatBootEntries(r: BootEntriesReport): string {
  const lines = [`boot entries: ${r.cmdline}`];
  if (r.pxe) {
    lines.push(`  PXE tree ${r.pxe.dir}: ${r.pxe.files.join(' ')}`);
    lines.push(`    DHCP boot file: pxelinux.0 (BIOS PXE ROMs), ${PXE_FILES.ipxe} (iPXE)${r.uefi ? `, ${PXE_EFI.shim} (UEFI PXE; GRUB reads ${PXE_EFI.config} at the TFTP root)` : ''}; GRUB snippet: ${join(r.pxe.dir, PXE_FILES.grub)}`);
  }
  if (r.iso) lines.push(`  ISO ${r.iso.path}: ${(r.iso.bytes / 1e6).toFixed(1)} MB, sha256 ${r.iso.sha256} (CD, or dd to a USB stick; ${r.uefi ? 'BIOS and UEFI, Secure Boot through Debian\'s shim' : 'BIOS only'})`);
  if (r.uki) lines.push(`  UKI ${r.uki.path}: ${(r.uki.bytes / 1e6).toFixed(1)} MB, ${r.uki.signedBy ? `signed by ${r.uki.signedBy}` : 'unsigned'} (UEFI HTTP Boot, or \\EFI\\BOOT\\BOOTX64.EFI on a stick)`);
  return `${lines.join('\n')}\n`;
}
