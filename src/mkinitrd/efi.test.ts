import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError } from '../errors.ts';
import { menuEntries } from './bootentries.ts';
import { checkUki, DEBIAN_EFI_LOADERS, EFI_LOADERS, espCommands, espSizeKiB, espTree, grubEfiConfig, pxeEfiTree, UKI_STUB, ukiLayout, ukiObjcopyArgs, writeEspImage, writeUki } from './efi.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-efi-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const entries = menuEntries({ image: 'debian', mirrors: ['http://10.0.2.100/'] });
const files = { kernel: 'vmlinuz', initrd: 'initrd.img' };

describe('GRUB on UEFI', () => {
  it('the ISO menu: /hfk paths, the first entry after the timeout, every entry quoted', () => {
    const cfg = grubEfiConfig({ entries, files: { kernel: '/hfk/vmlinuz', initrd: '/hfk/initrd.img' }, timeout: 2, where: 'iso' });
    expect(cfg).toMatch(/^set timeout=2\nset default=hfk$/m);
    expect(cfg).toContain("menuentry 'Boot debian from HTTP mirrors (hfk)' --id hfk {\n\tlinux /hfk/vmlinuz console=tty0 console=ttyS0,115200n8 hfk.image=debian hfk.mirrors=http://10.0.2.100/\n\tinitrd /hfk/initrd.img\n}");
    expect(cfg.match(/^menuentry /gm)).toHaveLength(3);
    expect(cfg).toContain('\tlinux /hfk/vmlinuz console=tty0 console=ttyS0,115200n8 hfk.image=debian hfk.mirrors=http://10.0.2.100/ hfk.break=mirrors\n');
  });

  it('the network menu: the kernel and initrd from the folder GRUB was fetched from', () => {
    const cfg = grubEfiConfig({ entries, files, timeout: 5, where: 'net' });
    expect(cfg).toContain('\tlinux $cmdpath/vmlinuz console=tty0 ');
    expect(cfg).toContain('\tinitrd $cmdpath/initrd.img\n');
    expect(cfg).toMatch(/^set timeout=5$/m);
  });

  it('the PXE additions: shim as bootx64.efi, the network GRUB as grubx64.efi beside it, the menu in grub/', () => {
    const t = pxeEfiTree({ entries, timeout: 2, files });
    expect(t.map((f) => f.path)).toEqual(['bootx64.efi', 'grubx64.efi', 'mmx64.efi', 'grub/grub.cfg']);
    expect(t[0]).toEqual({ path: 'bootx64.efi', from: '/usr/lib/shim/shimx64.efi.signed' });
    expect(t[1]).toEqual({ path: 'grubx64.efi', from: '/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed' });
    expect(espTree().map((f) => f.path)).toEqual(['EFI/BOOT/BOOTX64.EFI', 'EFI/BOOT/grubx64.efi', 'EFI/BOOT/mmx64.efi']);
    expect(espTree()[1]).toEqual({ path: 'EFI/BOOT/grubx64.efi', from: '/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed' });
  });
});

describe('the ESP image', () => {
  it('is sized for its files with room for the FAT, in whole MiB', () => {
    expect(espSizeKiB([1_048_504, 3_835_328, 877_992]) % 1024).toBe(0);
    expect(espSizeKiB([1_048_504, 3_835_328, 877_992]) * 1024).toBeGreaterThan(1_048_504 + 3_835_328 + 877_992 + 64 * 1024);
    expect(espSizeKiB([])).toBe(1024);
  });

  it('mkfs.vfat with a fixed volume id and --invariant, then each top folder copied with its dates', () => {
    const c = espCommands({ image: '/s/efi.img', sizeKiB: 7168, root: '/e', files: ['EFI/BOOT/BOOTX64.EFI', 'EFI/BOOT/grubx64.efi', 'loader/x.conf'] });
    expect(c).toEqual([
      ['mkfs.vfat', ['-C', '--invariant', '-i', '48464b45', '-n', 'HFK_EFI', '/s/efi.img', '7168']],
      ['mcopy', ['-s', '-m', '-i', '/s/efi.img', '/e/EFI', '::/']],
      ['mcopy', ['-s', '-m', '-i', '/s/efi.img', '/e/loader', '::/']],
    ]);
  });

  it('writes a FAT image that holds the files, the same bytes twice', () => {
    const root = join(work, 'esp');
    execFileSync('mkdir', ['-p', join(root, 'EFI/BOOT')]);
    writeFileSync(join(root, 'EFI/BOOT/BOOTX64.EFI'), Buffer.alloc(300_000, 7));
    for (const p of ['EFI/BOOT/BOOTX64.EFI', 'EFI/BOOT', 'EFI']) execFileSync('touch', ['-d', '@1700000000', join(root, p)]);
    const a = join(work, 'a.img');
    const b = join(work, 'b.img');
    writeEspImage({ image: a, root, files: ['EFI/BOOT/BOOTX64.EFI'] });
    writeEspImage({ image: b, root, files: ['EFI/BOOT/BOOTX64.EFI'] });
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);
    expect(readFileSync(a).toString('latin1', 0x2b, 0x3e)).toBe('HFK_EFI    FAT12   '); // label and type in the boot sector
    const listing = execFileSync('mdir', ['-i', a, '-b', '::/EFI/BOOT'], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } }).toString();
    expect(listing).toContain('::/EFI/BOOT/BOOTX64.EFI');
    // every entry, folders too, carries the staged date, not the time of the build
    const dates = execFileSync('mdir', ['-i', a, '-/', '::/'], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } }).toString().match(/\d{4}-\d{2}-\d{2}/g);
    expect(new Set(dates)).toEqual(new Set([new Date(1_700_000_000_000).toISOString().slice(0, 10)]));
    execFileSync('mcopy', ['-i', a, '::/EFI/BOOT/BOOTX64.EFI', join(work, 'back.efi')], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
    expect(readFileSync(join(work, 'back.efi')).equals(Buffer.alloc(300_000, 7))).toBe(true);
  });
});

describe('the unified kernel image', () => {
  it('places the sections above the stub, the initrd after the kernel, none overlapping', () => {
    for (const kernelBytes of [1, 0x100000, 14_190_528, 40 << 20]) {
      const at = ukiLayout(kernelBytes);
      expect(at.osrel).toBeGreaterThanOrEqual(0x1a000); // the stub's sections end below
      expect(at.cmdline).toBeGreaterThan(at.osrel);
      expect(at.linux).toBeGreaterThan(at.cmdline + 0x10000);
      expect(at.initrd).toBeGreaterThanOrEqual(at.linux + kernelBytes);
      expect(at.initrd % 0x100000).toBe(0);
    }
    const args = ukiObjcopyArgs({ stub: '/stub', out: '/o', osrel: '/r', cmdline: '/c', kernel: '/k', initrd: '/i', kernelBytes: 14_190_528 });
    expect(args.join(' ')).toBe(
      '--add-section .osrel=/r --change-section-vma .osrel=0x20000 --add-section .cmdline=/c --change-section-vma .cmdline=0x30000 ' +
        '--add-section .linux=/k --change-section-vma .linux=0x2000000 --add-section .initrd=/i --change-section-vma .initrd=0x2f00000 /stub /o',
    );
  });

  it('checks the stub and the key pair before the build, naming the option and the fix', () => {
    expect(() => checkUki({ exists: () => false })).toThrow(`the UKI needs systemd's EFI stub ${UKI_STUB.path}: missing`);
    const e = (() => {
      try {
        checkUki({ exists: (p) => p === UKI_STUB.path, signing: { key: '/no/key', cert: '/no/cert' }, run: () => {} });
      } catch (err) {
        return err as InputError;
      }
      throw new Error('did not throw');
    })();
    expect(e).toBeInstanceOf(InputError);
    expect(e.message).toBe('--uki-key /no/key: no such file');
    expect(e.hint).toMatch(/^make a key pair: openssl req /);
    const notPem = join(work, 'cert.txt');
    writeFileSync(notPem, 'hello');
    expect(() => checkUki({ exists: () => true, signing: { key: notPem, cert: notPem }, run: () => {} })).toThrow(`--uki-cert ${notPem} is not a PEM certificate`);
  });

  it('builds around systemd\'s stub, signs with sbsign (sbverify checks it); unsigned, the same bytes twice', () => {
    if (!existsSync(UKI_STUB.path)) throw new Error(`${UKI_STUB.path} missing: apt-get install ${UKI_STUB.package}`);
    const key = join(work, 'uki.key');
    const cert = join(work, 'uki.crt');
    execFileSync('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '30', '-subj', '/CN=hfk unit test/', '-keyout', key, '-out', cert], { stdio: 'ignore' });
    const kernel = join(work, 'vmlinuz');
    const initrd = join(work, 'initrd.img');
    writeFileSync(kernel, Buffer.alloc(2_000_000, 1));
    writeFileSync(initrd, Buffer.alloc(3_000_000, 2));
    const o = { kernel, initrd, cmdline: 'console=ttyS0 hfk.image=debian', title: 'Boot debian', signing: { key, cert } };
    const a = writeUki({ ...o, out: join(work, 'a.efi') });
    expect(a.signedBy).toBe('CN=hfk unit test');
    expect(a.bytes).toBeGreaterThan(5_000_000);
    const sections = execFileSync('objdump', ['-h', a.path]).toString();
    for (const s of ['.osrel', '.cmdline', '.linux', '.initrd', '.sbat']) expect(sections).toContain(` ${s} `);
    execFileSync('objcopy', ['-O', 'binary', '--only-section=.cmdline', a.path, join(work, 'cmdline')]);
    expect(readFileSync(join(work, 'cmdline'), 'latin1').replace(/\0+$/, '')).toBe('console=ttyS0 hfk.image=debian');
    expect(execFileSync('sbverify', ['--cert', cert, a.path], { stdio: ['ignore', 'pipe', 'pipe'] }).toString()).toMatch(/Signature verification OK/);
    // Unsigned, the same inputs give the same bytes (a signature carries its signing time).
    const { signing: _, ...unsigned } = o;
    const u1 = writeUki({ ...unsigned, out: join(work, 'u1.efi'), mtime: 1_700_000_000 });
    execFileSync('sleep', ['1.1']); // objcopy stamps the time of its run: a later build must still match
    const u2 = writeUki({ ...unsigned, out: join(work, 'u2.efi'), mtime: 1_700_000_000 });
    expect(u1.signedBy).toBeNull();
    expect(u1.sha256).toBe(u2.sha256);
    expect(readFileSync(u1.path).readUInt32LE(readFileSync(u1.path).readUInt32LE(0x3c) + 8)).toBe(1_700_000_000); // the PE header's date
    expect(readdirSync(work).filter((f) => f.includes('.tmp-'))).toEqual([]); // nothing half-written left
  });
});

it('names every signed loader the UEFI entries use, with its package', () => {
  expect(Object.keys(DEBIAN_EFI_LOADERS).sort()).toEqual([...EFI_LOADERS].sort());
  for (const l of Object.values(DEBIAN_EFI_LOADERS)) expect(['shim-signed', 'grub-efi-amd64-signed']).toContain(l.package);
});
