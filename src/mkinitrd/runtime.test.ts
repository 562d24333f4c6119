import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError } from '../errors.ts';
import type { CpioRecord } from './cpio.ts';
import { busybox, dynamicBinary, elfInterpreter, initramfsAsset, parseLdd, readElfInterpreter } from './runtime.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-runtime-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const NODE = process.execPath;
const NODE_LDD = `	linux-vdso.so.1 (0x00007ffd6b9f2000)
	libdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f5002f06000)
	libstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f5002c00000)
	libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f5002e26000)
	libgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f5002be0000)
	libpthread.so.0 => /lib/x86_64-linux-gnu/libpthread.so.0 (0x00007f5002e21000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f50029fe000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f5002f21000)
`;

const paths = (rs: CpioRecord[]) => rs.map((r) => (r.type === 'symlink' ? `${r.path} -> ${r.target}` : r.path));

describe('ELF and ldd', () => {
  it('reads the program interpreter of a dynamic binary and none of a static one', () => {
    expect(readElfInterpreter(NODE)).toBe('/lib64/ld-linux-x86-64.so.2');
    expect(readElfInterpreter('/bin/busybox')).toBeNull();
    expect(() => elfInterpreter(Buffer.from('#!/bin/sh\n'.padEnd(80)), 'x.sh')).toThrow(/x.sh is not an ELF executable/);
  });

  it('parses ldd output: libraries by path, the loader, what is missing, static binaries', () => {
    const r = parseLdd(NODE_LDD);
    expect(r.libraries.map((l) => l.path)).toEqual([
      '/lib/x86_64-linux-gnu/libdl.so.2',
      '/lib/x86_64-linux-gnu/libstdc++.so.6',
      '/lib/x86_64-linux-gnu/libm.so.6',
      '/lib/x86_64-linux-gnu/libgcc_s.so.1',
      '/lib/x86_64-linux-gnu/libpthread.so.0',
      '/lib/x86_64-linux-gnu/libc.so.6',
    ]);
    expect(r.interpreter).toBe('/lib64/ld-linux-x86-64.so.2');
    expect(r.static).toBe(false);
    expect(parseLdd('\tnot a dynamic executable\n').static).toBe(true);
    expect(parseLdd('\tlibfoo.so.1 => not found\n').missing).toEqual(['libfoo.so.1']);
  });
});

describe('dynamicBinary', () => {
  it('packs Node, its libraries where the loader found them, and the loader at its PT_INTERP path', () => {
    const recs = dynamicBinary(NODE, '/usr/bin/node', 'node', () => NODE_LDD);
    expect(paths(recs)).toEqual([
      'usr/bin/node',
      'lib/x86_64-linux-gnu/libdl.so.2',
      'lib/x86_64-linux-gnu/libstdc++.so.6',
      'lib/x86_64-linux-gnu/libm.so.6',
      'lib/x86_64-linux-gnu/libgcc_s.so.1',
      'lib/x86_64-linux-gnu/libpthread.so.0',
      'lib/x86_64-linux-gnu/libc.so.6',
      'lib64/ld-linux-x86-64.so.2',
    ]);
    // symlinks on the host (libstdc++.so.6 → libstdc++.so.6.0.30) become the real file's bytes
    const std = recs[2]!;
    expect(std.type === 'file' && std.data.kind === 'host' && std.data.path).toMatch(/libstdc\+\+\.so\.6\.0\.\d+$/);
    expect(recs.every((r) => r.tag === 'node')).toBe(true);
  });

  it('runs the real ldd and refuses binaries with missing libraries', () => {
    expect(paths(dynamicBinary(NODE, 'usr/bin/node', 'node'))).toContain('lib64/ld-linux-x86-64.so.2');
    expect(() => dynamicBinary(NODE, 'usr/bin/node', 'node', () => '\tlibicu.so.72 => not found\n')).toThrow(/needs libraries the host does not have: libicu.so.72/);
    expect(() => dynamicBinary('/nonexistent/node', 'usr/bin/node', 'node')).toThrow(InputError);
  });
});

describe('busybox', () => {
  it('links applets where busybox lists them, relative to /bin/busybox', () => {
    const { records, missing } = busybox('/bin/busybox', ['sh', 'mount', 'umount', 'switch_root', 'modprobe', 'insmod', 'udhcpc', 'ip', 'mkdir', 'cat', 'poweroff', 'reboot', 'sleep', 'wget', 'blkid']);
    const p = paths(records);
    expect(p).toContain('bin/busybox');
    expect(p).toContain('bin/sh -> busybox');
    expect(p).toContain('sbin/switch_root -> ../bin/busybox');
    expect(p).toContain('usr/bin/wget -> ../../bin/busybox');
    expect(missing).toEqual(['blkid']); // Debian's busybox-static has findfs, not blkid
  });

  it('refuses a dynamic busybox and one that lacks what the init needs', () => {
    expect(() => busybox(NODE)).toThrow(/is dynamically linked \(loader \/lib64\/ld-linux-x86-64.so.2\): expected a static busybox/);
    expect(() => busybox('/bin/busybox', ['sh', 'switch_root'], () => 'bin/sh\n')).toThrow(/lacks applets the init needs: switch_root/);
  });
});

describe('initramfs/udhcpc.script', () => {
  // Run by busybox sh with busybox applets only, in a network namespace
  // with a veth pair standing in for eth0.
  const bin = join(work, 'bin');
  mkdirSync(bin);
  for (const a of ['sh', 'ip', 'grep', 'mkdir', 'mv', 'rm', 'sed', 'printf', 'cat', 'echo']) symlinkSync('/bin/busybox', join(bin, a));
  const script = initramfsAsset('udhcpc.script');

  function inNetns(body: string): string {
    writeFileSync(join(work, 'run.sh'), `set -e\nPATH=${bin}\n/usr/sbin/ip link add eth0 type veth peer name peer0\n${body}\n`);
    return execFileSync('unshare', ['-n', '/bin/busybox', 'sh', join(work, 'run.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  it('configures address, routes and resolv.conf on bound, records the lease, and keeps the address on renew', () => {
    const env = `export interface=eth0 ip=10.0.2.15 mask=24 subnet=255.255.255.0 router='10.0.2.2 10.0.2.254' dns='10.0.2.3 9.9.9.9' domain=lab search='lab example' lease=86400 siaddr=10.0.2.2 boot_file="pxe'linux" mtu=1400 RESOLV_CONF=${work}/resolv.conf LEASE_DIR=${work}/run`;
    const out = inNetns(`${env}\nsh ${script} deconfig\nsh ${script} bound\nsh ${script} renew\necho ---\nip -4 addr show dev eth0\nip -4 route\n. ${work}/run/lease.eth0\necho "boot_file=$boot_file router=$router"`);
    expect(out).toMatch(/udhcpc: eth0: deconfigured/);
    expect(out).toMatch(/udhcpc: eth0: bound 10\.0\.2\.15\/24 via 10\.0\.2\.2 10\.0\.2\.254 dns 10\.0\.2\.3 9\.9\.9\.9 lease 86400s/);
    expect(out).toMatch(/udhcpc: eth0: renew 10\.0\.2\.15\/24/);
    const after = out.split('---')[1]!;
    expect(after).toMatch(/mtu 1400/);
    expect(after.match(/inet 10\.0\.2\.15\/24 brd 10\.0\.2\.255/g)).toHaveLength(1);
    expect(after).toMatch(/default via 10\.0\.2\.2 dev eth0 onlink/);
    expect(after).toMatch(/default via 10\.0\.2\.254 dev eth0 +metric 1 onlink/);
    expect(after).toMatch(/boot_file=pxe'linux router=10\.0\.2\.2 10\.0\.2\.254/);
    expect(readFileSync(join(work, 'resolv.conf'), 'utf8')).toBe('domain lab\nsearch lab example\nnameserver 10.0.2.3\nnameserver 9.9.9.9\n');
  });

  it('moves to a new address on a renew that changes it, and complains when not called by udhcpc', () => {
    const env = `export interface=eth0 mask=24 RESOLV_CONF=${work}/resolv2.conf LEASE_DIR=${work}/run2`;
    const out = inNetns(`${env}\nip=10.0.2.15 sh ${script} bound\nip=10.0.2.16 sh ${script} renew\nip -4 addr show dev eth0\nsh ${script} 2>&1 || echo "rc=$?"`);
    expect(out).not.toMatch(/10\.0\.2\.15\/24 brd/);
    expect(out).toMatch(/inet 10\.0\.2\.16\/24 brd/);
    expect(out).toMatch(/must be called by udhcpc with an event name\nrc=1/);
  });
});
