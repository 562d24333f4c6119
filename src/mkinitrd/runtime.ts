// The userland of the initramfs apart from modules and the init: the Node
// binary with the shared libraries and dynamic loader it needs, busybox
// (static) with the applets an init uses, CA certificates, a minimal /etc,
// /dev/console and /dev/null, the folders everything mounts on, and the
// static files from initramfs/ (the udhcpc script).
//
// Each function returns cpio records tagged with their component, so the
// builder can report sizes per component.

import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { posix } from 'node:path';
import { InputError } from '../errors.ts';
import { MACHINE_CA_BUNDLE } from '../store/http.ts';
import { type CpioRecord, charDevice, dir, file, hostFile, symlink, tagged } from './cpio.ts';

/** Where things live inside the initramfs. */
export const NODE_PATH = '/usr/bin/node';
export const BUSYBOX_PATH = '/bin/busybox';
/** Debian's busybox looks here for the udhcpc script; upstream's default (/usr/share/udhcpc) links to it. */
export const UDHCPC_SCRIPT_PATH = '/etc/udhcpc/default.script';
export const UDHCPC_SCRIPT_UPSTREAM_PATH = '/usr/share/udhcpc/default.script';
/** Where the init's TLS looks for the CA bundle (trustMachineCAs): the same path as on the host. */
export const CA_CERTS_PATH = MACHINE_CA_BUNDLE;
export const HOST_CA_CERTS = MACHINE_CA_BUNDLE;
export const HOST_BUSYBOX = '/bin/busybox';

export type Component = 'node' | 'busybox' | 'modules' | 'init' | 'other';

// ---------------------------------------------------------------- ELF (pure)

const PT_INTERP = 3;

/**
 * The program interpreter (PT_INTERP) an ELF executable names, or null for a
 * static one. Needs the first bytes of the file (program headers and the
 * interpreter string; a few KiB is enough for normal binaries).
 */
export function elfInterpreter(head: Buffer, what = 'file'): string | null {
  if (head.length < 64 || head.readUInt32BE(0) !== 0x7f454c46) throw new InputError(`${what} is not an ELF executable: expected the bytes 7f 'E' 'L' 'F' at its start`);
  const is64 = head[4] === 2;
  if (head[5] !== 1) throw new InputError(`${what} is a big-endian ELF file: expected a little-endian (x86-64) executable`);
  const phoff = is64 ? Number(head.readBigUInt64LE(32)) : head.readUInt32LE(28);
  const phentsize = head.readUInt16LE(is64 ? 54 : 42);
  const phnum = head.readUInt16LE(is64 ? 56 : 44);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + phentsize > head.length) throw new InputError(`${what}: its program headers reach past the bytes read (${head.length}); expected them near the start`);
    if (head.readUInt32LE(ph) !== PT_INTERP) continue;
    const off = is64 ? Number(head.readBigUInt64LE(ph + 8)) : head.readUInt32LE(ph + 4);
    const size = is64 ? Number(head.readBigUInt64LE(ph + 32)) : head.readUInt32LE(ph + 16);
    if (off + size > head.length) throw new InputError(`${what}: its interpreter name lies past the bytes read; expected it near the start`);
    return head.toString('latin1', off, off + size).replace(/\0.*$/s, '');
  }
  return null;
}

export function readElfInterpreter(path: string): string | null {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(64 * 1024);
    const n = readSync(fd, head, 0, head.length, 0);
    return elfInterpreter(head.subarray(0, n), path);
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------- ldd (pure parser)

export interface LddResult {
  /** Libraries by the path the loader found them at (not resolved through symlinks). */
  libraries: { name: string; path: string }[];
  /** The loader line, e.g. /lib64/ld-linux-x86-64.so.2. */
  interpreter: string | null;
  /** Names the loader could not find. */
  missing: string[];
  static: boolean;
}

export function parseLdd(text: string): LddResult {
  const r: LddResult = { libraries: [], interpreter: null, missing: [], static: false };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    if (/not a dynamic executable|statically linked/.test(line)) {
      r.static = true;
      continue;
    }
    let m = line.match(/^(\S+) => not found$/);
    if (m) {
      r.missing.push(m[1]!);
      continue;
    }
    m = line.match(/^(\S+) => (\/\S+) \(0x[0-9a-f]+\)$/);
    if (m) {
      r.libraries.push({ name: m[1]!, path: m[2]! });
      continue;
    }
    m = line.match(/^(\/\S+) \(0x[0-9a-f]+\)$/);
    if (m) {
      r.interpreter = m[1]!;
      continue;
    }
    // linux-vdso.so.1 (0x…) and the like live in the kernel: nothing to copy
  }
  return r;
}

/** Runs ldd; injected so tests can feed canned output. */
export type Ldd = (binary: string) => string;

export const runLdd: Ldd = (binary) => {
  try {
    return execFileSync('ldd', [binary], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  } catch (e) {
    const err = e as { code?: string | number; stdout?: Buffer; stderr?: Buffer };
    if (err.code === 'ENOENT') throw new InputError('ldd is not installed: it lists the libraries Node needs', { hint: 'apt-get install libc-bin', cause: e });
    // ldd exits 1 for static binaries and says so
    return `${err.stdout?.toString() ?? ''}${err.stderr?.toString() ?? ''}`;
  }
};

/**
 * A dynamically linked executable at `dest`, plus every shared library at
 * the path the host's loader found it (contents of the real file behind any
 * symlinks), plus the loader at the exact path the binary names (PT_INTERP).
 */
export function dynamicBinary(binary: string, dest: string, component: Component, ldd: Ldd = runLdd): CpioRecord[] {
  if (!existsSync(binary)) throw new InputError(`${binary} does not exist: expected the executable to put at ${dest}`);
  const interp = readElfInterpreter(binary);
  const out: CpioRecord[] = [hostFile(dest, binary, 0o755)];
  if (interp === null) return tagged(component, out);
  const r = parseLdd(ldd(binary));
  if (r.missing.length) {
    throw new InputError(`${binary} needs libraries the host does not have: ${r.missing.join(', ')}`, { hint: 'install them (ldd shows what is missing) or use another build of the binary' });
  }
  for (const lib of r.libraries) out.push(hostFile(lib.path, realpathSync(lib.path), 0o755));
  out.push(hostFile(interp, realpathSync(interp), 0o755));
  return tagged(component, out);
}

// ---------------------------------------------------------------- busybox

/** Applets an init and a rescue shell need; the first group must exist. */
export const REQUIRED_APPLETS = ['sh', 'mount', 'umount', 'switch_root', 'modprobe', 'insmod', 'udhcpc', 'ip', 'mkdir', 'cat', 'poweroff', 'reboot', 'sleep'] as const;
export const OPTIONAL_APPLETS = [
  'ash', 'blkid', 'findfs', 'losetup', 'ifconfig', 'route', 'ping', 'wget', 'nc', 'nslookup', 'traceroute', 'ipneigh',
  'ls', 'ln', 'cp', 'mv', 'rm', 'rmdir', 'mknod', 'chmod', 'chown', 'touch', 'dd', 'df', 'du', 'stat', 'readlink', 'realpath', 'basename', 'dirname',
  'echo', 'printf', 'test', '[', '[[', 'true', 'false', 'env', 'grep', 'egrep', 'sed', 'awk', 'head', 'tail', 'tr', 'cut', 'wc', 'sort', 'uniq', 'xargs', 'find', 'tee',
  'dmesg', 'halt', 'usleep', 'ps', 'kill', 'killall', 'pidof', 'top', 'free', 'uptime', 'uname', 'hostname', 'date', 'sync', 'sysctl', 'mdev', 'timeout', 'watch',
  'rmmod', 'lsmod', 'modinfo', 'depmod', 'pivot_root', 'chroot', 'setsid', 'cttyhack', 'getty', 'stty', 'tty', 'clear', 'reset', 'vi', 'less', 'more',
  'hexdump', 'xxd', 'md5sum', 'sha256sum', 'gzip', 'gunzip', 'zcat', 'tar', 'cpio', 'id', 'whoami', 'which', 'nproc', 'mountpoint',
] as const;

/** `busybox --list-full`: applet paths like usr/bin/wget. Injected for tests. */
export type BusyboxList = (busybox: string) => string;

export const runBusyboxList: BusyboxList = (busybox) => {
  try {
    return execFileSync(busybox, ['--list-full'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  } catch (e) {
    throw new InputError(`cannot run ${busybox} --list-full: ${(e as Error).message}`, { hint: 'apt-get install busybox-static', cause: e });
  }
};

export interface BusyboxResult {
  records: CpioRecord[];
  /** Applets asked for that this busybox lacks (optional ones only; required ones throw). */
  missing: string[];
}

/**
 * Busybox at /bin/busybox and a symlink for each wanted applet at the place
 * busybox itself lists it (bin/sh, sbin/switch_root, usr/bin/wget, …).
 * Busybox must be static: the initramfs has no loader for it to lean on
 * besides Node's, and a rescue shell must work even if that is broken.
 */
export function busybox(path = HOST_BUSYBOX, applets: readonly string[] = [...REQUIRED_APPLETS, ...OPTIONAL_APPLETS], list: BusyboxList = runBusyboxList): BusyboxResult {
  if (!existsSync(path)) throw new InputError(`${path} does not exist: expected a static busybox`, { hint: 'apt-get install busybox-static' });
  const interp = readElfInterpreter(path);
  if (interp !== null) {
    throw new InputError(`${path} is dynamically linked (loader ${interp}): expected a static busybox`, { hint: 'apt-get install busybox-static (Debian puts it at /bin/busybox)' });
  }
  const where = new Map<string, string>();
  for (const line of list(path).split('\n')) {
    const p = line.trim().replace(/^\/+/, '');
    if (p) where.set(posix.basename(p), p);
  }
  const records: CpioRecord[] = [hostFile(BUSYBOX_PATH, path, 0o755)];
  const missing: string[] = [];
  const lacking: string[] = [];
  for (const a of new Set(applets)) {
    const at = where.get(a);
    if (!at) {
      ((REQUIRED_APPLETS as readonly string[]).includes(a) ? lacking : missing).push(a);
      continue;
    }
    if (`/${at}` === BUSYBOX_PATH) continue;
    records.push(symlink(at, posix.relative(posix.dirname(`/${at}`), BUSYBOX_PATH)));
  }
  if (lacking.length) throw new InputError(`${path} lacks applets the init needs: ${lacking.join(', ')}`, { hint: 'use a fuller busybox build such as Debian busybox-static' });
  return { records: tagged('busybox', records), missing };
}

// ---------------------------------------------------------------- /etc, /dev, folders

export function etcFiles(): CpioRecord[] {
  return tagged('other', [
    file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n'),
    file('etc/group', 'root:x:0:\n'),
    file('etc/nsswitch.conf', 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n'),
    file('etc/hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'),
    symlink('etc/mtab', '../proc/self/mounts'),
    dir('etc/hfk'),
  ]);
}

/** The nodes the kernel needs before anything mounts devtmpfs: the console for /init's stdio, and null. */
export function deviceNodes(): CpioRecord[] {
  return tagged('other', [charDevice('dev/console', 5, 1, 0o600), charDevice('dev/null', 1, 3, 0o666)]);
}

export function folders(): CpioRecord[] {
  return tagged('other', [
    ...['bin', 'sbin', 'usr/bin', 'usr/sbin', 'lib', 'dev', 'proc', 'sys', 'run', 'mnt', 'var'].map((p) => dir(p)),
    dir('tmp', 0o1777),
    dir('root', 0o700),
    symlink('var/run', '../run'),
  ]);
}

export function caCertificates(path = HOST_CA_CERTS): CpioRecord[] {
  if (!existsSync(path)) throw new InputError(`${path} does not exist: expected the CA bundle for HTTPS mirrors`, { hint: 'apt-get install ca-certificates' });
  return tagged('other', [hostFile(CA_CERTS_PATH, realpathSync(path), 0o644)]);
}

/** A file of the repository's initramfs/ folder: next to dist/ for the bundle, two levels up from this file in a checkout (src/mkinitrd/). */
export function initramfsAsset(name: string): string {
  const fromSources = import.meta.url.endsWith('.ts');
  const p = fileURLToPath(new URL(`${fromSources ? '../../' : '../'}initramfs/${name}`, import.meta.url));
  if (!existsSync(p)) throw new InputError(`${p} is missing: hfk's initramfs/ folder must sit next to the program`, { hint: 'reinstall hfk, or run from a checkout' });
  return p;
}

export function udhcpcScript(path = initramfsAsset('udhcpc.script')): CpioRecord[] {
  return tagged('other', [
    hostFile(UDHCPC_SCRIPT_PATH, path, 0o755),
    symlink(UDHCPC_SCRIPT_UPSTREAM_PATH, posix.relative(posix.dirname(UDHCPC_SCRIPT_UPSTREAM_PATH), UDHCPC_SCRIPT_PATH)),
  ]);
}
