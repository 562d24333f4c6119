import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { HfkError, InputError, UsageError } from '../errors.ts';
import { findKernel } from '../../test/lab/qemu.ts';
import {
  bzImageVersion,
  checkKernel,
  checkLoaders,
  DEBIAN_LOADERS,
  formatBootEntries,
  grubQuote,
  grubSnippet,
  ipxeScript,
  isoTree,
  ISO_LOADERS,
  kernelParams,
  type LoaderFile,
  type LoaderSource,
  menuEntries,
  planBootEntries,
  PXE_LOADERS,
  pxeTree,
  runTool,
  splitParams,
  syslinuxConfig,
  writeBootEntries,
  writeIso,
  writeTree,
  xorrisoArgs,
} from './bootentries.ts';
import { DEBIAN_EFI_LOADERS, espTree } from './efi.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-bootentries-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const OPTS = { image: 'debian@3', mirrors: ['http://10.0.2.100/', 'https://m2.example/hfk/'] };
const CMDLINE = 'console=tty0 console=ttyS0,115200n8 hfk.image=debian@3 hfk.mirrors=http://10.0.2.100/,https://m2.example/hfk/';

function thrown(f: () => unknown): HfkError {
  try {
    f();
  } catch (e) {
    if (e instanceof HfkError) return e;
    throw e;
  }
  throw new Error('did not throw');
}

/** The first bytes of a bzImage: boot sector signature, HdrS, protocol, kernel_version pointing at `version`. */
function fakeBzImage(version: string, protocol = 0x020f): Buffer {
  const b = Buffer.alloc(0x1000);
  b.writeUInt16LE(0xaa55, 0x1fe);
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(protocol, 0x206);
  b.writeUInt16LE(0x0c00 - 0x200, 0x20e);
  b.write(`${version} (builder@example) #1 SMP\0`, 0x0c00, 'latin1');
  return b;
}

describe('kernel parameters', () => {
  it('start with the consoles, then hfk.image= and one hfk.mirrors=, then the extra ones', () => {
    expect(kernelParams(OPTS).join(' ')).toBe(CMDLINE);
    expect(kernelParams({ ...OPTS, append: ['quiet', 'hfk.timeout=60', 'ip=dhcp'] }).slice(-3)).toEqual(['quiet', 'hfk.timeout=60', 'ip=dhcp']);
    expect(kernelParams({})).toEqual(['console=tty0', 'console=ttyS0,115200n8']);
    expect(splitParams(['a=1  b', ' c=x,y '])).toEqual(['a=1', 'b', 'c=x,y']);
  });

  it("refuses what the init's command-line schema refuses, and characters a loader would read specially", () => {
    expect(() => kernelParams({ mirrors: ['ftp://x/'] })).toThrow(/hfk\.mirrors: 'ftp:\/\/x\/' is not an http:\/\/ or https:\/\/ URL/);
    expect(() => kernelParams({ append: ['hfk.imgae=debian'] })).toThrow(/unknown parameter hfk\.imgae ignored; did you mean hfk\.image\?/);
    const e = thrown(() => kernelParams({ append: ['hfk.proxy=http://$HOST:3128'] }));
    expect(e).toBeInstanceOf(UsageError);
    expect(e.message).toBe("kernel parameter 'hfk.proxy=http://$HOST:3128' has '$': boot entries carry parameters made of letters, digits and _ . , : / @ % + = ~ - [ ]");
    expect(e.hint).toMatch(/--config/);
    expect(() => kernelParams({ image: 'a b' })).toThrow(/'hfk.image=a b' has ' '/);
    expect(() => kernelParams({ append: ["x='y'"] })).toThrow(/has '''/);
  });

  it('give three menu entries: the default, debug, and a shell once the network is up', () => {
    const e = menuEntries(OPTS);
    expect(e.map((x) => x.id)).toEqual(['hfk', 'hfk-debug', 'hfk-shell']);
    expect(e[0]!.title).toBe('Boot debian@3 from HTTP mirrors (hfk)');
    expect(e[1]!.params.join(' ')).toBe(`${CMDLINE} hfk.debug`);
    expect(e[2]!.params.join(' ')).toBe(`${CMDLINE} hfk.break=mirrors`);
    expect(menuEntries({})[0]!.title).toBe('Boot the configured image from HTTP mirrors (hfk)');
  });
});

describe('configs', () => {
  const entries = menuEntries({ image: 'debian', mirrors: ['http://10.0.2.100/'] });
  const P = 'console=tty0 console=ttyS0,115200n8 hfk.image=debian hfk.mirrors=http://10.0.2.100/';

  it('syslinux: SERIAL first, a menu that starts the first entry after the timeout', () => {
    expect(syslinuxConfig({ entries, files: { kernel: 'vmlinuz', initrd: 'initrd.img' }, timeout: 2, loader: 'pxelinux' })).toBe(
      `SERIAL 0 115200
# pxelinux menu written by hfk mkinitrd: Boot debian from HTTP mirrors (hfk)
UI menu.c32
MENU TITLE hfk: boot from HTTP mirrors
TIMEOUT 20
DEFAULT hfk

LABEL hfk
  MENU LABEL Boot debian from HTTP mirrors (hfk)
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND ${P}

LABEL hfk-debug
  MENU LABEL Boot debian, with hfk debug messages
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND ${P} hfk.debug

LABEL hfk-shell
  MENU LABEL Shell once the network is up (hfk.break=mirrors)
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND ${P} hfk.break=mirrors
`,
    );
    expect(syslinuxConfig({ entries: entries.slice(0, 1), files: { kernel: '/hfk/vmlinuz', initrd: '/hfk/initrd.img' }, timeout: 3, loader: 'isolinux' })).toMatch(
      /^SERIAL 0 115200\n# isolinux menu .*\nUI menu.c32\nMENU TITLE .*\nTIMEOUT 30\nDEFAULT hfk\n\nLABEL hfk\n {2}MENU LABEL .*\n {2}KERNEL \/hfk\/vmlinuz\n {2}INITRD \/hfk\/initrd.img\n {2}APPEND .*\n$/,
    );
  });

  it('iPXE: boots the default entry at once, files relative to the script', () => {
    expect(ipxeScript(entries[0]!, { kernel: 'vmlinuz', initrd: 'initrd.img' })).toBe(
      `#!ipxe
# Boot debian from HTTP mirrors (hfk): written by hfk mkinitrd.
# DHCP boot file, or from an iPXE prompt: chain tftp://SERVER/boot.ipxe (or http://…/boot.ipxe).
# The kernel and initrd are fetched relative to this script.
kernel vmlinuz initrd=initrd.img ${P}
initrd initrd.img
boot
`,
    );
  });

  it('GRUB: a menuentry that finds its disk, and the other entries in a submenu', () => {
    expect(grubSnippet(entries, '/boot/hfk')).toBe(
      `# hfk: Boot debian from HTTP mirrors (hfk). Written by hfk mkinitrd.
# Copy vmlinuz and initrd.img to /boot/hfk/, append this file to /etc/grub.d/40_custom,
# then run update-grub (grub2-mkconfig -o /boot/grub2/grub.cfg elsewhere).
menuentry 'Boot debian from HTTP mirrors (hfk)' --id hfk {
\tsearch --no-floppy --set=root --file /boot/hfk/vmlinuz
\tlinux /boot/hfk/vmlinuz ${P}
\tinitrd /boot/hfk/initrd.img
}
submenu 'hfk: more boot options' --id hfk-more {
\tmenuentry 'Boot debian, with hfk debug messages' --id hfk-debug {
\t\tsearch --no-floppy --set=root --file /boot/hfk/vmlinuz
\t\tlinux /boot/hfk/vmlinuz ${P} hfk.debug
\t\tinitrd /boot/hfk/initrd.img
\t}
\tmenuentry 'Shell once the network is up (hfk.break=mirrors)' --id hfk-shell {
\t\tsearch --no-floppy --set=root --file /boot/hfk/vmlinuz
\t\tlinux /boot/hfk/vmlinuz ${P} hfk.break=mirrors
\t\tinitrd /boot/hfk/initrd.img
\t}
}
`,
    );
    expect(grubSnippet(entries.slice(0, 1), '/hfk')).not.toMatch(/submenu/);
    expect(grubQuote("it's")).toBe("'it'\\''s'");
  });
});

describe('layouts', () => {
  const entries = menuEntries({ image: 'debian' });
  const input = { entries, timeout: 2, kernel: '/k/vmlinuz-6', initrd: '/out/initrd.img' };

  it('the PXE tree: loader, modules, menu, iPXE script, GRUB snippet, kernel, initrd', () => {
    const t = pxeTree(input);
    expect(t.map((f) => f.path)).toEqual(['pxelinux.0', 'ldlinux.c32', 'menu.c32', 'libutil.c32', 'libcom32.c32', 'pxelinux.cfg/default', 'boot.ipxe', 'grub.cfg', 'vmlinuz', 'initrd.img']);
    expect(t[0]).toEqual({ path: 'pxelinux.0', from: '/usr/lib/PXELINUX/pxelinux.0' });
    expect(t.find((f) => f.path === 'vmlinuz')).toEqual({ path: 'vmlinuz', from: '/k/vmlinuz-6' });
    const cfg = t.find((f) => f.path === 'pxelinux.cfg/default') as { content: string };
    expect(cfg.content).toMatch(/\n {2}KERNEL vmlinuz\n {2}INITRD initrd.img\n/);
    expect((t.find((f) => f.path === 'grub.cfg') as { content: string }).content).toMatch(/linux \/boot\/hfk\/vmlinuz /);
    expect((pxeTree({ ...input, grubDir: '/hfk' }).find((f) => f.path === 'grub.cfg') as { content: string }).content).toMatch(/linux \/hfk\/vmlinuz /);
  });

  it('the ISO tree: isolinux and its modules in isolinux/, the kernel and initrd in hfk/', () => {
    const t = isoTree(input);
    expect(t.map((f) => f.path)).toEqual([
      'isolinux/isolinux.bin', 'isolinux/ldlinux.c32', 'isolinux/menu.c32', 'isolinux/libutil.c32', 'isolinux/libcom32.c32', 'isolinux/isolinux.cfg', 'hfk/vmlinuz', 'hfk/initrd.img',
    ]);
    expect((t[5] as { content: string }).content).toMatch(/\n {2}KERNEL \/hfk\/vmlinuz\n {2}INITRD \/hfk\/initrd.img\n/);
  });

  it('for UEFI too: the ISO gets /.disk/info and GRUB\'s menu, the PXE tree shim, GRUB and its menu', () => {
    const iso = isoTree({ ...input, efi: DEBIAN_EFI_LOADERS });
    expect(iso.slice(0, 2).map((f) => f.path)).toEqual(['.disk/info', 'boot/grub/grub.cfg']);
    expect((iso[1] as { content: string }).content).toMatch(/^\tlinux \/hfk\/vmlinuz console=tty0 .*\n\tinitrd \/hfk\/initrd.img$/m);
    expect(iso.slice(2)).toEqual(isoTree(input)); // the BIOS part unchanged
    const pxe = pxeTree({ ...input, efi: DEBIAN_EFI_LOADERS });
    expect(pxe.slice(-4).map((f) => f.path)).toEqual(['bootx64.efi', 'grubx64.efi', 'mmx64.efi', 'grub/grub.cfg']);
    expect(pxe.slice(0, -4)).toEqual(pxeTree(input));
  });

  it('xorriso: El Torito for CDs, the isohybrid MBR for USB sticks', () => {
    expect(xorrisoArgs({ out: '/o.iso', stage: '/s', mbr: '/usr/lib/ISOLINUX/isohdpfx.bin' }).join(' ')).toBe(
      '-as mkisofs -quiet -o /o.iso -V HFK -R -J -iso-level 3 -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin -partition_offset 16 ' +
        '-c isolinux/boot.cat -b isolinux/isolinux.bin -no-emul-boot -boot-load-size 4 -boot-info-table /s',
    );
    expect(xorrisoArgs({ out: '/o.iso', stage: '/s', mbr: '/m', efiImage: 'boot/grub/efi.img' }).slice(-6).join(' ')).toBe('-eltorito-alt-boot -e boot/grub/efi.img -no-emul-boot -isohybrid-gpt-basdat /s');
  });
});

describe('loader files and the kernel', () => {
  it('names each missing loader file and the package that provides it', () => {
    const fake = Object.fromEntries(Object.entries(DEBIAN_LOADERS).map(([k, v]) => [k, { ...v, path: join(work, 'none', k) }])) as Record<LoaderFile, LoaderSource>;
    const e = thrown(() => checkLoaders(['pxelinux.0', 'ldlinux.c32', 'menu.c32'], fake));
    expect(e).toBeInstanceOf(InputError);
    expect(e.message).toBe(
      `boot loader files missing: ${join(work, 'none/pxelinux.0')} (pxelinux.0, from package pxelinux), ${join(work, 'none/ldlinux.c32')} (ldlinux.c32, from package syslinux-common), ${join(work, 'none/menu.c32')} (menu.c32, from package syslinux-common)`,
    );
    expect(e.hint).toBe('apt-get install pxelinux syslinux-common');
    expect(thrown(() => checkLoaders(['isohdpfx.bin'], fake)).message).toMatch(/^boot loader file missing: .*isohdpfx.bin \(isohdpfx.bin, from package isolinux\)$/);
    expect(() => checkLoaders([...PXE_LOADERS, ...ISO_LOADERS], DEBIAN_LOADERS, () => true)).not.toThrow();
  });

  it("reads a bzImage's version; anything else is not a kernel", () => {
    expect(bzImageVersion(fakeBzImage('6.1.0-56-cloud-amd64'))).toBe('6.1.0-56-cloud-amd64');
    expect(bzImageVersion(fakeBzImage('6.1.0', 0x0105))).toBeUndefined();
    expect(bzImageVersion(Buffer.alloc(0x1000))).toBeUndefined();
    expect(bzImageVersion(Buffer.from('#!/bin/sh\n'))).toBeUndefined();
    const k = findKernel();
    expect(checkKernel(k.kernel, k.version)).toBe(k.version);
  });

  it('refuses a kernel of another version than the modules, and a file that is no kernel', () => {
    const kernel = join(work, 'vmlinuz-6.1.0-9');
    writeFileSync(kernel, fakeBzImage('6.1.0-9-amd64'));
    const e = thrown(() => checkKernel(kernel, '6.1.0-56-cloud-amd64'));
    expect(e.message).toBe(`the kernel ${kernel} is version 6.1.0-9-amd64, but the modules are for 6.1.0-56-cloud-amd64: the initrd's modules would not load`);
    expect(e.hint).toBe('pass --kernel /boot/vmlinuz-6.1.0-56-cloud-amd64, or --modules /lib/modules/6.1.0-9-amd64');
    const text = join(work, 'notes.txt');
    writeFileSync(text, 'hello');
    expect(() => checkKernel(text, '6.1.0')).toThrow(`${text} is not a Linux kernel (bzImage): no HdrS header with a version`);
    expect(() => checkKernel(join(work, 'nope'), '6.1.0')).toThrow(/^cannot read the kernel .*nope: ENOENT/);
  });

  it('says which package to install when a tool is missing', () => {
    const e = thrown(() => runTool('hfk-no-such-tool', [], process.env));
    expect(e.message).toBe('hfk-no-such-tool is not installed');
    expect(e.hint).toBe('apt-get install hfk-no-such-tool');
    expect(() => runTool('sh', ['-c', 'echo broken >&2; exit 3'], process.env)).toThrow('sh failed: broken');
  });
});

describe('writing', () => {
  const kernel = join(work, 'vmlinuz');
  const initrd = join(work, 'initrd.img');
  writeFileSync(kernel, fakeBzImage('6.1.0-test'));
  writeFileSync(initrd, 'initrd bytes');

  it('writes a tree with dates set, and leaves a file that is its own source alone', () => {
    const dir = join(work, 'tree');
    mkdirSync(dir);
    writeFileSync(join(dir, 'initrd.img'), 'already here');
    writeTree([{ path: 'a/b.txt', content: 'b' }, { path: 'k', from: kernel }, { path: 'initrd.img', from: join(dir, 'initrd.img') }], dir, 1234);
    expect(readFileSync(join(dir, 'a/b.txt'), 'utf8')).toBe('b');
    expect(readFileSync(join(dir, 'k')).equals(readFileSync(kernel))).toBe(true);
    expect(readFileSync(join(dir, 'initrd.img'), 'utf8')).toBe('already here');
    for (const p of ['a/b.txt', 'a', 'k', '.']) expect(statSync(join(dir, p)).mtimeMs).toBe(1_234_000);
    expect([...readdirSync(dir), ...readdirSync(join(dir, 'a'))].sort()).toEqual(['a', 'b.txt', 'initrd.img', 'k']); // no temporary file left
  });

  it('writes the same hybrid ISO twice, byte for byte (xorriso, SOURCE_DATE_EPOCH; the EFI partition too)', () => {
    const files = isoTree({ entries: menuEntries({ image: 'debian' }), timeout: 2, kernel, initrd, efi: DEBIAN_EFI_LOADERS });
    const a = writeIso({ out: join(work, 'a.iso'), files, esp: espTree(), mbr: DEBIAN_LOADERS['isohdpfx.bin'].path, mtime: 1_700_000_000 });
    const b = writeIso({ out: join(work, 'b.iso'), files, esp: espTree(), mbr: DEBIAN_LOADERS['isohdpfx.bin'].path, mtime: 1_700_000_000 });
    expect(a.sha256).toBe(b.sha256);
    expect(readFileSync(a.path).toString('latin1', 512, 520)).toBe('EFI PART');
    const bytes = readFileSync(a.path);
    expect(bytes.readUInt16LE(510)).toBe(0xaa55); // the MBR a BIOS boots from a stick
    expect(bytes.toString('latin1', 0x8801, 0x8806)).toBe('CD001'); // ISO 9660 primary volume descriptor
    expect(bytes.toString('latin1', 0x8807, 0x881e)).toBe('EL TORITO SPECIFICATION'); // boot record: a CD boots it
    expect(bytes.includes('APPEND console=tty0 console=ttyS0,115200n8 hfk.image=debian')).toBe(true);
    expect(existsSync(`${a.path}.tmp-${process.pid}`)).toBe(false);
    expect(() => writeIso({ out: join(work, 'no/dir/x.iso'), files, mbr: '/x', mtime: 0 })).toThrow(/cannot write .*x.iso: folder .*no\/dir does not exist/);
  });

  it('plans (checking everything first) and writes the PXE tree and the ISO', () => {
    const pxe = join(work, 'pxe');
    const iso = join(work, 'plan.iso');
    expect(() => planBootEntries({ entry: {}, kernel, modulesVersion: '6.1.0-test' })).toThrow('boot entries need somewhere to go: --iso FILE, --pxe DIR, --uki FILE, or several');
    expect(() => planBootEntries({ entry: {}, kernel, modulesVersion: '6.1.0-test', pxe, ukiSigning: { key: 'k', cert: 'c' } })).toThrow('--uki-key and --uki-cert sign the UKI: give --uki FILE with them');
    const noShim = { ...DEBIAN_EFI_LOADERS, 'shimx64.efi': { path: join(work, 'none/shimx64.efi.signed'), package: 'shim-signed' } };
    const e = thrown(() => planBootEntries({ entry: {}, kernel, modulesVersion: '6.1.0-test', pxe }, { efi: noShim }));
    expect(e.message).toMatch(/^boot loader file missing: .*shimx64.efi.signed \(shimx64.efi, from package shim-signed\): the UEFI entries need them$/);
    expect(e.hint).toBe('apt-get install shim-signed, or pass --no-uefi for BIOS entries only');
    expect(planBootEntries({ entry: {}, kernel, modulesVersion: '6.1.0-test', pxe, uefi: false }, { efi: noShim }).efi).toBeNull();
    expect(() => planBootEntries({ entry: {}, kernel, modulesVersion: '6.1.0-other', pxe })).toThrow(/is version 6.1.0-test, but the modules are for 6.1.0-other/);
    expect(() => planBootEntries({ entry: {}, kernel, modulesVersion: '6.1.0-test', pxe, grubDir: 'boot' })).toThrow(/grubDir: must be an absolute path/);
    const noXorriso = () => {
      throw new InputError('xorriso is not installed', { hint: 'apt-get install xorriso' });
    };
    expect(() => planBootEntries({ entry: {}, kernel, modulesVersion: '6.1.0-test', iso }, { run: noXorriso })).toThrow('xorriso is not installed');
    expect(() => planBootEntries({ entry: {}, kernel, modulesVersion: '6.1.0-test', pxe }, { run: noXorriso })).not.toThrow(); // PXE needs no xorriso

    const plan = planBootEntries({ entry: { image: 'debian', mirrors: ['http://10.0.2.100/'], append: ['quiet'] }, kernel, modulesVersion: '6.1.0-test', pxe, iso, mtime: 5 });
    const r = writeBootEntries(plan, initrd);
    expect(r.cmdline).toBe('console=tty0 console=ttyS0,115200n8 hfk.image=debian hfk.mirrors=http://10.0.2.100/ quiet');
    expect(r.entries.map((e) => e.id)).toEqual(['hfk', 'hfk-debug', 'hfk-shell']);
    expect(r.pxe!.files).toContain('pxelinux.cfg/default');
    for (const f of r.pxe!.files) expect(existsSync(join(pxe, f)), f).toBe(true);
    expect(readFileSync(join(pxe, 'boot.ipxe'), 'utf8')).toMatch(/^kernel vmlinuz initrd=initrd.img console=tty0 .* quiet$/m);
    expect(r.iso).toMatchObject({ path: iso, bytes: statSync(iso).size });
    // UEFI: shim and GRUB in the PXE tree, an ESP on the ISO
    expect(r.uefi).toBe(true);
    expect(r.pxe!.bootfiles).toEqual(['pxelinux.0', 'boot.ipxe', 'bootx64.efi']);
    expect(readFileSync(join(pxe, 'bootx64.efi')).equals(readFileSync(DEBIAN_EFI_LOADERS['shimx64.efi'].path))).toBe(true);
    expect(readFileSync(join(pxe, 'grub/grub.cfg'), 'utf8')).toMatch(/^\tlinux \$cmdpath\/vmlinuz console=tty0 .* quiet$/m);
    const bytes = readFileSync(iso);
    expect(bytes.toString('latin1', 512, 520)).toBe('EFI PART'); // the GPT a UEFI machine finds the ESP on a stick by
    expect(bytes.includes('\tlinux /hfk/vmlinuz console=tty0 console=ttyS0,115200n8 hfk.image=debian')).toBe(true); // GRUB's menu
    expect(bytes.includes(readFileSync(DEBIAN_EFI_LOADERS['gcdx64.efi'].path).subarray(0, 65536))).toBe(true); // inside the ESP image
    expect(formatBootEntries(r)).toMatch(/BIOS and UEFI, Secure Boot through Debian's shim/);
  });
});
