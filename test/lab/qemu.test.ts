import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.ts';
import { ConsoleLog, findKernel, findModules, guestfwdRule, KERNEL_PACKAGE, liveVmCount, qemuArgs, shellQuote, startVm, VmError } from './qemu.ts';

const work = mkdtempSync(join(tmpdir(), 'hfk-qemu-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('qemuArgs', () => {
  it('boots a kernel under TCG with restricted user networking and cmd guestfwd rules', () => {
    expect(
      qemuArgs({
        name: 't1',
        kernel: '/boot/vmlinuz',
        initrd: '/tmp/initrd.img',
        append: 'console=ttyS0 panic=-1',
        net: { restrict: true, guestfwd: [{ guestPort: 80, hostPort: 8080 }, { guestIp: '10.0.2.101', guestPort: 80, hostPort: 8081 }] },
        timeoutMs: 1000,
      }),
    ).toEqual([
      '-name', 't1', '-machine', 'pc', '-accel', 'tcg', '-cpu', 'max', '-smp', '1', '-m', '1024',
      '-no-user-config', '-nodefaults', '-display', 'none', '-no-reboot', '-serial', 'stdio', '-monitor', 'none',
      '-kernel', '/boot/vmlinuz', '-initrd', '/tmp/initrd.img', '-append', 'console=ttyS0 panic=-1',
      '-netdev', 'user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:8080,,nodelay,guestfwd=tcp:10.0.2.101:80-cmd:socat - TCP:127.0.0.1:8081,,nodelay',
      '-device', 'virtio-net-pci,netdev=n0',
    ]);
  });

  it('adds disks, a CD, TFTP boot and picks the boot device when there is no kernel', () => {
    const a = qemuArgs({ name: 'pxe', net: { restrict: true, tftp: '/srv/tftp', bootfile: 'ipxe.efi' }, timeoutMs: 1 });
    expect(a.slice(a.indexOf('-netdev'))).toEqual(['-netdev', 'user,id=n0,restrict=on,tftp=/srv/tftp,bootfile=ipxe.efi', '-device', 'virtio-net-pci,netdev=n0', '-boot', 'n']);
    const b = qemuArgs({ name: 'cd', cdrom: '/x/a,b.iso', disks: ['/x/root.img', { path: '/x/ro.sqfs', readonly: true }], net: false, timeoutMs: 1 });
    expect(b.slice(b.indexOf('-drive'))).toEqual([
      '-drive', 'file=/x/root.img,format=raw,if=virtio,index=0',
      '-drive', 'file=/x/ro.sqfs,format=raw,if=virtio,index=1,readonly=on',
      '-drive', 'file=/x/a,,b.iso,media=cdrom,readonly=on,if=ide,index=2', // commas doubled for QEMU
      '-boot', 'd',
    ]);
    expect(b).not.toContain('-netdev');
  });

  it('UEFI: OVMF in pflash on q35 (SMM for Secure Boot), OVMF\'s own NIC driver, boot order by bootindex', () => {
    const uefi = { code: '/ovmf/CODE.fd', vars: '/w/vars.fd', secureBoot: true };
    const cd = qemuArgs({ name: 'cd', cdrom: '/x/hfk.iso', uefi, timeoutMs: 1 });
    expect(cd[cd.indexOf('-machine') + 1]).toBe('q35,smm=on');
    expect(cd.join(' ')).toContain('-global driver=cfi.pflash01,property=secure,value=on -drive if=pflash,format=raw,unit=0,readonly=on,file=/ovmf/CODE.fd -drive if=pflash,format=raw,unit=1,file=/w/vars.fd');
    expect(cd.slice(cd.indexOf('-netdev') + 2, cd.indexOf('-netdev') + 4)).toEqual(['-device', 'virtio-net-pci,netdev=n0,romfile=']);
    expect(cd.slice(-4)).toEqual(['-drive', 'file=/x/hfk.iso,media=cdrom,readonly=on,if=none,id=cd0', '-device', 'ide-cd,drive=cd0,bootindex=0']);
    expect(cd).not.toContain('-boot');
    const usb = qemuArgs({ name: 'usb', disks: [{ path: '/x/hfk.iso', readonly: true, interface: 'usb' }], uefi: { ...uefi, secureBoot: false }, timeoutMs: 1 });
    expect(usb[usb.indexOf('-machine') + 1]).toBe('q35');
    expect(usb).not.toContain('-global');
    expect(usb.slice(-6)).toEqual(['-device', 'qemu-xhci,id=xhci', '-drive', 'file=/x/hfk.iso,format=raw,if=none,id=d0,readonly=on', '-device', 'usb-storage,bus=xhci.0,drive=d0,bootindex=0']);
    const pxe = qemuArgs({ name: 'pxe', net: { restrict: true, tftp: '/t', bootfile: 'bootx64.efi' }, uefi, timeoutMs: 1 });
    expect(pxe.at(-1)).toBe('virtio-net-pci,netdev=n0,romfile=,bootindex=0');
    const http = qemuArgs({ name: 'http', uefi, timeoutMs: 1 }); // HTTP Boot: the variable store's BootOrder decides
    expect(http.join(' ')).not.toContain('bootindex');
  });

  it('refuses unrestricted networking, KVM, and options that do not go together', () => {
    expect(() => qemuArgs({ name: 'x', kernel: 'k', net: { restrict: false as true }, timeoutMs: 1 })).toThrow(/net.restrict must be true/);
    expect(() => qemuArgs({ name: 'x', kernel: 'k', extraArgs: ['-enable-kvm'], timeoutMs: 1 })).toThrow(/must not enable KVM/);
    expect(() => qemuArgs({ name: 'x', initrd: 'i', cdrom: 'c', timeoutMs: 1 })).toThrow(/initrd and append need kernel/);
    expect(() => qemuArgs({ name: 'x', timeoutMs: 1 })).toThrow(/nothing to boot/);
    expect(() => qemuArgs({ name: 'x', net: { restrict: true, bootfile: 'b' }, timeoutMs: 1 })).toThrow(/net.bootfile needs net.tftp/);
    expect(() => qemuArgs({ name: 'a b', kernel: 'k', timeoutMs: 1 })).toThrow(/name must be/);
  });

  it('writes the guestfwd rule and a command line a shell runs as is', () => {
    expect(guestfwdRule({ guestPort: 3128, hostPort: 40000 })).toBe('tcp:10.0.2.100:3128-cmd:socat - TCP:127.0.0.1:40000,nodelay');
    expect(shellQuote(['qemu', '-append', "console=ttyS0 x='y'", '-m', '512'])).toBe(`qemu -append 'console=ttyS0 x='\\''y'\\''' -m 512`);
  });
});

describe('findKernel', () => {
  it('picks the newest kernel that has modules, or HFK_KERNEL/HFK_MODULES', () => {
    const boot = join(work, 'boot');
    const mods = join(work, 'modules');
    mkdirSync(boot);
    for (const v of ['6.1.0-9', '6.10.0-1', '6.2.0-1']) writeFileSync(join(boot, `vmlinuz-${v}`), ''); // 6.10 has no modules
    for (const v of ['6.1.0-9', '6.2.0-1']) {
      mkdirSync(join(mods, v), { recursive: true });
      writeFileSync(join(mods, v, 'modules.dep'), '');
    }
    expect(findKernel({}, { boot, modules: mods })).toEqual({ version: '6.2.0-1', kernel: join(boot, 'vmlinuz-6.2.0-1'), modulesDir: join(mods, '6.2.0-1') });
    expect(findKernel({ HFK_KERNEL: join(boot, 'vmlinuz-6.1.0-9'), HFK_MODULES: join(mods, '6.1.0-9') }).version).toBe('6.1.0-9');
    expect(() => findKernel({ HFK_KERNEL: 'x' })).toThrow(/HFK_KERNEL and HFK_MODULES go together/);
    expect(() => findKernel({}, { boot: join(work, 'none'), modules: mods })).toThrow(/no kernel to boot/);
  });
});

describe('findModules', () => {
  it('picks the newest module folder that has modules.dep, whatever its version, or HFK_MODULES', () => {
    const mods = join(work, 'lib-modules');
    for (const v of ['6.1.0-56-cloud-amd64', '6.1.0-57-cloud-amd64', '6.12.0-1-cloud-amd64']) {
      mkdirSync(join(mods, v), { recursive: true });
      if (v !== '6.12.0-1-cloud-amd64') writeFileSync(join(mods, v, 'modules.dep'), ''); // 6.12 has no index
    }
    expect(findModules({}, mods)).toEqual({ version: '6.1.0-57-cloud-amd64', modulesDir: join(mods, '6.1.0-57-cloud-amd64') });
    expect(findModules({ HFK_MODULES: join(mods, '6.1.0-56-cloud-amd64/') }, mods).version).toBe('6.1.0-56-cloud-amd64');
    expect(() => findModules({ HFK_MODULES: join(mods, '6.12.0-1-cloud-amd64') }, mods)).toThrow(/modules\.dep does not exist \(from HFK_MODULES\)/);
  });

  it('fails, naming the package to install, when no kernel has modules', () => {
    const e = (() => {
      try {
        return findModules({}, join(work, 'no-modules'));
      } catch (x) {
        return x as InputError;
      }
    })();
    expect(e).toBeInstanceOf(InputError);
    expect((e as InputError).message).toMatch(/^no kernel modules installed: expected .*no-modules\/VERSION\/modules\.dep$/);
    expect((e as InputError).hint).toContain(`apt-get install ${KERNEL_PACKAGE}`);
  });
});

describe('ConsoleLog', () => {
  it('finds markers in order, whether they came before or after the wait', async () => {
    const c = new ConsoleLog('VM t');
    c.append('boot\r\nA=1\n');
    await expect(c.waitFor('A=1', 1000)).resolves.toMatchObject({ 0: 'A=1' });
    const later = c.waitFor(/B=(\d+)/, 1000);
    c.append('A=2\nB=');
    c.append('7\n');
    expect((await later)[1]).toBe('7');
    // A=1 was consumed by the first wait: the next A is A=2, which came before B
    await expect(c.waitFor('A=', 50)).rejects.toThrow(/VM t did not print \/A=\/ within 0.05s; last console lines:\nboot\nA=1\nA=2\nB=7/);
  });

  it('fails pending and later waits once the VM is gone', async () => {
    const c = new ConsoleLog('VM t');
    const pending = c.waitFor('never', 10_000);
    c.close('exited (code 0)');
    await expect(pending).rejects.toThrow(VmError);
    await expect(pending).rejects.toThrow(/VM t exited \(code 0\) before printing \/never\//);
    await expect(c.waitFor('x', 10_000)).rejects.toThrow(/exited \(code 0\) before printing/);
  });
});

describe('startVm', () => {
  it("rejects waiters with QEMU's own message when it cannot boot, logs the command line, and leaves nothing running", async () => {
    const logs: string[] = [];
    const vm = startVm({ name: 'nokernel', kernel: join(work, 'missing-vmlinuz'), net: false, timeoutMs: 30_000, logDir: work }, (l) => logs.push(l));
    await expect(vm.waitFor('Linux version')).rejects.toThrow(/VM nokernel exited \(code 1: .*missing-vmlinuz/);
    expect((await vm.exited).reason).toBe('exited');
    expect(await vm.stop()).toEqual(await vm.exited); // idempotent after exit
    expect(logs[0]).toContain(`vm nokernel: qemu-system-x86_64 -name nokernel`);
    expect(readFileSync(vm.logFile, 'utf8')).toMatch(/^# qemu-system-x86_64 -name nokernel .*-accel tcg/);
    expect(liveVmCount()).toBe(0);
  });

  it('reports a QEMU binary that does not exist', async () => {
    const vm = startVm({ name: 'noqemu', kernel: 'k', qemu: join(work, 'no-qemu'), net: false, timeoutMs: 30_000, logDir: work }, () => {});
    expect((await vm.exited).reason).toBe('failed-to-start');
    await expect(vm.waitFor('x')).rejects.toThrow(/VM noqemu could not start \(spawn .*no-qemu ENOENT\)/);
  });
});
