import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zstdDecompressSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { type CommandContext, type Output, parseCommandArgs } from '../command.ts';
import { HfkError } from '../../errors.ts';
import { generateKeyPair } from '../../format/keys.ts';
import { findKernel } from '../../../test/lab/qemu.ts';
import type { BuildReport } from '../../mkinitrd/build.ts';
import { parseNewc } from '../../mkinitrd/cpio.ts';
import type { BootEntriesReport } from '../../mkinitrd/bootentries.ts';
import { initrdTarget, mkinitrdCommand, resolveInit } from './mkinitrd.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-mkinitrd-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const pair = generateKeyPair('test');
const pubFile = join(work, 'k.pub');
writeFileSync(pubFile, pair.publicLine);

function io(): Output & { stdout: string; stderr: string } {
  const o = { stdout: '', stderr: '', tty: false, out: (t: string) => void (o.stdout += t), err: (t: string) => void (o.stderr += t) };
  return o;
}

async function run(argv: string[]): Promise<{ code: number; out: ReturnType<typeof io> }> {
  const parsed = parseCommandArgs('hfk', mkinitrdCommand, argv);
  if (parsed === 'help') throw new Error('help');
  const out = io();
  const code = await mkinitrdCommand.run({ ...(parsed as Omit<CommandContext, 'io'>), io: out });
  return { code, out };
}

describe('hfk mkinitrd', () => {
  const kernel = findKernel();

  it('builds an initramfs with the init bundle, config and key baked in, and reports sizes as JSON', async () => {
    const init = join(work, 'hfk-init.mjs');
    writeFileSync(init, "#!/usr/bin/env node\nconsole.log('init');\n");
    const out = join(work, 'initrd.img');
    const r = await run(['--modules', kernel.modulesDir, '--out', out, '--init', init, '--key', pubFile, '--mirrors', 'http://10.0.2.100/,http://10.0.2.101/', '--image', 'debian', '--level', '1', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out.stdout) as BuildReport;
    expect(report.compression).toEqual({ kind: 'zstd', level: 1 });
    expect(report.kernel.version).toBe(kernel.version);
    const files = new Map(parseNewc(zstdDecompressSync(readFileSync(out))).map((e) => [e.name, e]));
    expect(files.get('init')!.data.toString()).toMatch(/^#!\/usr\/bin\/node\n[\s\S]*import\('\/lib\/hfk\/hfk-init.mjs'\)/);
    expect(files.get('init')!.mode & 0o777).toBe(0o755);
    expect(files.get('lib/hfk/hfk-init.mjs')!.data.toString()).toBe("console.log('init');\n");
    expect([...files.keys()].some((k) => k.startsWith('lib/hfk/compile-cache/'))).toBe(false); // only with --compile-cache
    expect(files.get('etc/hfk/hfk.yaml')!.data.toString()).toBe('image: debian\nmirrors:\n  - http://10.0.2.100/\n  - http://10.0.2.101/\nkey: /etc/hfk/hfk.pub\n');
    expect(files.get('etc/hfk/hfk.pub')!.data.toString().split(' ')[1]).toBe(pair.publicLine.split(' ')[1]);
    expect(files.has(`lib/modules/${kernel.version}/modules.dep`)).toBe(true);
  });

  it('takes the image as --name too (as hfk mount does), but not both ways at once', async () => {
    const init = join(work, 'name-init.mjs');
    writeFileSync(init, "console.log('init');\n");
    const out = join(work, 'name-initrd.img');
    const r = await run(['--modules', kernel.modulesDir, '--out', out, '--init', init, '--key', pubFile, '--mirrors', 'http://10.0.2.100/', '--name', 'debian@2', '--level', '1']);
    expect(r.code, r.out.stderr).toBe(0);
    const files = new Map(parseNewc(zstdDecompressSync(readFileSync(out))).map((e) => [e.name, e]));
    expect(files.get('etc/hfk/hfk.yaml')!.data.toString()).toMatch(/^image: debian@2\n/);
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'twice.img'), '--init', init, '--key', pubFile, '--mirrors', 'http://10.0.2.100/', '--image', 'debian', '--name', 'other'])).rejects.toThrow(
      'the image is given twice (--image debian and --name other): give it once',
    );
    expect(existsSync(join(work, 'twice.img'))).toBe(false);
  });

  it('--compile-cache packs V8\'s cache for the bundle, keyed to the paths the initramfs has', async () => {
    const init = join(work, 'cc-init.mjs');
    writeFileSync(init, "export const answer = 42;\nif (process.argv.includes('--help')) console.log('help');\n");
    const out = join(work, 'cc.img');
    const r = await run(['--modules', kernel.modulesDir, '--out', out, '--init', init, '--key', pubFile, '--mirrors', 'http://10.0.2.100/', '--image', 'debian', '--level', '1', '--compile-cache']);
    expect(r.code, r.out.stderr).toBe(0);
    const files = new Map(parseNewc(zstdDecompressSync(readFileSync(out))).map((e) => [e.name, e]));
    const cache = [...files.keys()].filter((k) => /^lib\/hfk\/compile-cache\/v24\.[^/]+\/[0-9a-f]+$/.test(k));
    expect(cache.length).toBeGreaterThan(0);
    expect(files.get(cache[0]!)!.data.length).toBeGreaterThan(0);
  });

  it('--ca-certs packs the CA bundle HTTPS mirrors are checked against (the host\'s by default); a file with no certificate is refused', async () => {
    const init = join(work, 'ca-init.mjs');
    writeFileSync(init, "console.log('init');\n");
    const files = async (extra: string[]) => {
      const out = join(work, 'ca.img');
      const r = await run(['--modules', kernel.modulesDir, '--out', out, '--init', init, '--key', pubFile, '--mirrors', 'https://10.0.2.100/', '--image', 'debian', '--level', '1', ...extra]);
      expect(r.code, r.out.stderr).toBe(0);
      return new Map(parseNewc(zstdDecompressSync(readFileSync(out))).map((e) => [e.name, e]));
    };
    const host = readFileSync('/etc/ssl/certs/ca-certificates.crt');
    expect((await files([])).get('etc/ssl/certs/ca-certificates.crt')!.data.equals(host)).toBe(true);
    const bundle = join(work, 'bundle.pem');
    const ours = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
    writeFileSync(bundle, host.toString() + ours);
    expect((await files(['--ca-certs', bundle])).get('etc/ssl/certs/ca-certificates.crt')!.data.toString().endsWith(ours)).toBe(true);
    const empty = join(work, 'empty.pem');
    writeFileSync(empty, 'not a certificate\n');
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'x.img'), '--init', init, '--ca-certs', empty])).rejects.toThrow(`--ca-certs ${empty} holds no PEM certificate`);
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'x.img'), '--init', init, '--ca-certs', join(work, 'nope.pem')])).rejects.toThrow(/cannot read --ca-certs bundle .*nope\.pem/);
  });

  it('finds the init bundle next to itself or in the checkout, and says how to build it when it is missing', () => {
    const here = new URL('.', import.meta.url).pathname; // src/cli/commands/ (dist/ when bundled)
    expect(resolveInit(undefined, (p) => p === `${here}hfk-init.mjs`)).toBe(`${here}hfk-init.mjs`);
    expect(resolveInit(undefined, (p) => p.endsWith('/dist/hfk-init.mjs'))).toMatch(/\/dist\/hfk-init\.mjs$/);
    const e = (() => {
      try {
        return resolveInit(undefined, () => false);
      } catch (x) {
        return x;
      }
    })();
    expect(e).toBeInstanceOf(HfkError);
    expect((e as HfkError).message).toBe(`the init bundle ${here}hfk-init.mjs does not exist`);
    expect((e as HfkError).hint).toMatch(/npm run build/);
    expect(resolveInit('/x.mjs', () => true)).toBe('/x.mjs');
  });

  it('refuses a missing --init and bad options', async () => {
    const missing = join(work, 'nope', 'hfk-init.mjs');
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'x.img'), '--init', missing])).rejects.toThrow(`the init bundle ${missing} does not exist`);
    const init = join(work, 'hfk-init.mjs');
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'x.img'), '--init', init, '--compress', 'xz'])).rejects.toThrow(/--compress must be one of zstd, gzip: got 'xz'/);
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'x.img'), '--init', init, '--compress', 'gzip', '--level', '12'])).rejects.toThrow(/--level must be a whole number from 1 to 9: got '12'/);
    await expect(run(['--out', join(work, 'x.img')])).rejects.toThrow(/--modules is required/);
    // a bad mirror is named as the option given, not as a line of the config it would be baked into
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'x.img'), '--init', init, '--mirrors', 'notaurl'])).rejects.toThrow(/^--mirrors must be an http:\/\/ or https:\/\/ URL: got 'notaurl'$/);
    await expect(run(['--modules', kernel.modulesDir, '--out', join(work, 'x.img'), '--init', init, '--mirrors', 'http://127.0.0.1:99999/'])).rejects.toThrow(/--mirrors is not a valid URL: got 'http:\/\/127.0.0.1:99999\/' \(check its host name and port\)/);
  });
});

describe('hfk mkinitrd boot entries (--iso, --pxe, --kernel)', () => {
  const kernel = findKernel();
  const init = join(work, 'entries-init.mjs');
  writeFileSync(init, "console.log('init');\n");
  const base = ['--modules', kernel.modulesDir, '--init', init];

  it('puts the initrd at --out, else in the PXE tree, else in a temporary file for the ISO', () => {
    expect(initrdTarget({ out: '/o/i.img', pxe: '/p' })).toEqual({ path: '/o/i.img', temporary: false });
    expect(initrdTarget({ pxe: '/p', iso: '/x.iso' })).toEqual({ path: '/p/initrd.img', temporary: false });
    const t = initrdTarget({ iso: '/x.iso' });
    expect(t.temporary).toBe(true);
    expect(t.path).toMatch(/hfk-mkinitrd-iso-.*\/initrd\.img$/);
    rmSync(join(t.path, '..'), { recursive: true, force: true });
    expect(() => initrdTarget({})).toThrow(/--out is required/);
  });

  it('refuses options that do not go together, before building anything', async () => {
    const out = join(work, 'never.img');
    await expect(run([...base, '--out', out, '--kernel', kernel.kernel])).rejects.toThrow('--kernel is for boot entries: give --iso FILE, --pxe DIR or --uki FILE with it');
    await expect(run([...base, '--out', out, '--append', 'quiet'])).rejects.toThrow('--append is for boot entries: give --iso FILE, --pxe DIR or --uki FILE with it');
    await expect(run([...base, '--uki', join(work, 'x.efi')])).rejects.toThrow(/^--uki needs --kernel VMLINUZ/);
    await expect(run([...base, '--out', out, '--uki-key', 'k.pem', '--uki-cert', 'c.pem'])).rejects.toThrow('--uki-key and --uki-cert sign the UKI: give --uki FILE with them');
    await expect(run([...base, '--uki', join(work, 'x.efi'), '--kernel', kernel.kernel, '--uki-key', 'k.pem'])).rejects.toThrow('--uki-key needs --uki-cert: sbsign takes the key and its certificate together');
    await expect(run([...base, '--uki', join(work, 'x.efi'), '--kernel', kernel.kernel, '--uki-key', join(work, 'no.key'), '--uki-cert', join(work, 'no.crt')])).rejects.toThrow(`--uki-key ${join(work, 'no.key')}: no such file`);
    expect(existsSync(join(work, 'x.efi'))).toBe(false);
    await expect(run([...base, '--iso', join(work, 'x.iso')])).rejects.toThrow(`--iso needs --kernel VMLINUZ: the kernel its entries start (the one ${kernel.modulesDir} belongs to)`);
    await expect(run([...base, '--pxe', join(work, 'p')])).rejects.toThrow(/--pxe needs --kernel VMLINUZ/);
    await expect(run(base)).rejects.toThrow(/--out is required/);
    await expect(run([...base, '--pxe', join(work, 'p'), '--kernel', kernel.kernel, '--append', 'hfk.proxy=$x'])).rejects.toThrow(/kernel parameter 'hfk.proxy=\$x' has '\$'/);
    // modules of another kernel: the check reads the version inside the vmlinuz
    const other = join(work, 'lib/modules/9.9.9-test');
    mkdirSync(other, { recursive: true });
    writeFileSync(join(other, 'modules.dep'), '');
    await expect(run(['--modules', other, '--init', init, '--pxe', join(work, 'p'), '--kernel', kernel.kernel])).rejects.toThrow(
      `the kernel ${kernel.kernel} is version ${kernel.version}, but the modules are for 9.9.9-test: the initrd's modules would not load`,
    );
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(work, 'p'))).toBe(false);
  });

  it('writes the PXE tree with the initrd in it, and the ISO, and reports them', async () => {
    const pxe = join(work, 'tftp', 'hfk');
    const iso = join(work, 'hfk.iso');
    const r = await run([...base, '--key', pubFile, '--mirrors', 'http://10.0.2.100/', '--image', 'debian', '--level', '1', '--kernel', kernel.kernel, '--append', 'quiet hfk.timeout=60', '--append', 'ip=dhcp', '--pxe', pxe, '--iso', iso, '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out.stdout) as BuildReport & { bootEntries: BootEntriesReport };
    expect(report.out).toBe(join(pxe, 'initrd.img'));
    const entries = report.bootEntries;
    expect(entries.cmdline).toBe('console=tty0 console=ttyS0,115200n8 hfk.image=debian hfk.mirrors=http://10.0.2.100/ quiet hfk.timeout=60 ip=dhcp');
    expect(entries.pxe!.files.sort()).toEqual([
      'boot.ipxe', 'bootx64.efi', 'grub.cfg', 'grub/grub.cfg', 'grubx64.efi', 'initrd.img', 'ldlinux.c32', 'libcom32.c32', 'libutil.c32', 'menu.c32', 'mmx64.efi', 'pxelinux.0', 'pxelinux.cfg/default', 'vmlinuz',
    ]);
    expect(readFileSync(join(pxe, 'vmlinuz')).equals(readFileSync(kernel.kernel))).toBe(true);
    expect(readFileSync(join(pxe, 'pxelinux.cfg/default'), 'utf8')).toContain(`APPEND ${entries.cmdline}\n`);
    expect(entries.iso!.path).toBe(iso);
    expect(entries.iso!.bytes).toBeGreaterThan(readFileSync(join(pxe, 'initrd.img')).length);
    // the text report names both
    const text = await run([...base, '--mirrors', 'http://10.0.2.100/', '--image', 'debian', '--level', '1', '--kernel', kernel.kernel, '--iso', join(work, 'only.iso')]);
    expect(text.out.stdout).toMatch(/^built the initrd for the boot entries: /);
    expect(text.out.stdout).toMatch(/\nboot entries: console=tty0 console=ttyS0,115200n8 hfk.image=debian hfk.mirrors=http:\/\/10.0.2.100\/\n {2}ISO .*only.iso: \d+\.\d MB, sha256 [0-9a-f]{64} /);
    // --no-uefi: BIOS entries only
    const bios = await run([...base, '--level', '1', '--kernel', kernel.kernel, '--pxe', join(work, 'bios'), '--no-uefi', '--json']);
    expect((JSON.parse(bios.out.stdout) as { bootEntries: BootEntriesReport }).bootEntries.uefi).toBe(false);
    expect(existsSync(join(work, 'bios', 'bootx64.efi'))).toBe(false);
  }, 120_000);
});
