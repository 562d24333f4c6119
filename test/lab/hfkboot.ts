// The whole hfk boot as a lab setup, shared by the QEMU tests, the demo and
// the boot benchmark: the Debian root published into a store (cached), an
// initrd built by `hfk mkinitrd`, mirrors on the host that the guest reaches
// through guestfwd, and a login on the serial console that reads the boot
// report back.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { MANIFEST_FORMAT_VERSION } from '../../src/format/manifest.ts';
import { BootReport } from '../../src/init/report.ts';
import { HFK, NODE } from '../helpers/cli.ts';
import { cacheDir, ensureDebianSquashfs } from './debian-root.ts';
import { findKernel, type Vm } from './qemu.ts';

/** Guest addresses of the mirrors (guestfwd rules map them to host ports). */
export const GUEST_MIRRORS = ['10.0.2.100', '10.0.2.101', '10.0.2.102', '10.0.2.103'] as const;

export interface PublishedRoot {
  image: string;
  store: string;
  key: string;
  pub: string;
  name: string;
}

/**
 * The Debian root (squashfs) published as image "debian" into a store under
 * the lab cache, signed by a lab key; republished only when the image or
 * the manifest format changes.
 */
export async function publishedDebian(log: (l: string) => void = () => {}): Promise<PublishedRoot> {
  const image = await ensureDebianSquashfs({ log });
  const base = join(cacheDir(), 'lab-store');
  mkdirSync(base, { recursive: true });
  const key = join(base, 'lab.key');
  const pub = join(base, 'lab.pub');
  if (!existsSync(key)) execFileSync(NODE, [HFK, 'keygen', '--out', join(base, 'lab')]);
  const st = statSync(image);
  // The manifest format is in the tag: a store published by an older hfk is published again.
  const tag = createHash('sha256').update(`${st.size}:${st.mtimeMs}:${statSync(key).mtimeMs}:m${MANIFEST_FORMAT_VERSION}`).digest('hex').slice(0, 12);
  const store = join(base, `store-${tag}`);
  if (!existsSync(join(store, 'images/debian/latest.json'))) {
    log(`publishing ${image} into ${store}`);
    execFileSync(NODE, [HFK, 'publish', image, '--store', store, '--name', 'debian', '--key', key], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return { image, store, key, pub, name: 'debian' };
}

export interface InitrdOptions {
  out: string;
  pub: string;
  mirrors: string[];
  image: string;
  /** zstd level (tests use a fast one; the default build uses 19). */
  level?: number;
  /** Pack V8's compile cache (default true: Node starts seconds sooner under emulation). */
  compileCache?: boolean;
  /** More kernel modules (mkinitrd --module). */
  modules?: string[];
  /** The CA bundle to pack (mkinitrd --ca-certs). */
  caCerts?: string;
  /** A base hfk.yaml to bake in (mkinitrd --config); default HFK_LAB_CONFIG, for experiments (e.g. init.reader settings). */
  config?: string;
}

/** `hfk mkinitrd` for the lab kernel, through the real CLI. */
export function buildInitrd(o: InitrdOptions): string {
  const k = findKernel();
  const args = ['mkinitrd', '--modules', k.modulesDir, '--out', o.out, '--key', o.pub, '--mirrors', o.mirrors.join(','), '--image', o.image];
  if (o.level !== undefined) args.push('--level', String(o.level));
  if (o.compileCache !== false) args.push('--compile-cache');
  for (const m of o.modules ?? []) args.push('--module', m);
  if (o.caCerts) args.push('--ca-certs', o.caCerts);
  const config = o.config ?? process.env.HFK_LAB_CONFIG;
  if (config) args.push('--config', config);
  execFileSync(NODE, [HFK, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
  return o.out;
}

/** The kernel command line for a lab boot: serial console, no reboot loops. */
export function labAppend(extra = ''): string {
  // HFK_LAB_EXTRA: kernel parameters added to every lab boot, for experiments (e.g. hfk.timeout=…).
  return ['console=ttyS0 panic=-1 loglevel=4', process.env.HFK_LAB_EXTRA, extra].filter(Boolean).join(' ');
}

export interface LoginResult {
  /** ms from the VM start to the login prompt. */
  timeToLoginMs: number;
  report: BootReport;
  /** The reader's live counters (MOUNT/.hfk/stats.json) once logged in. */
  stats: Record<string, unknown>;
}

/**
 * Waits for the login prompt, logs in as root (no password in the lab
 * root), and reads the boot report and the reader's stats back over the
 * serial console.
 */
export async function loginAndReport(vm: Vm, startedAt: number, timeoutMs = 600_000): Promise<LoginResult> {
  await vm.waitFor(/hfk-demo login:/, timeoutMs);
  const timeToLoginMs = performance.now() - startedAt;
  vm.send('root\n');
  await vm.waitFor(/root@hfk-demo:~#/, 60_000);
  const report = BootReport.parse(JSON.parse(await shellOutput(vm, 'cat /run/hfk/boot-report.json')));
  const stats = JSON.parse(await shellOutput(vm, 'cat /run/hfk/img/.hfk/stats.json')) as Record<string, unknown>;
  return { timeToLoginMs, report, stats };
}

/** A kernel message on the console: `[   89.223860] hrtimer: interrupt took 11824032 ns`. */
const PRINTK_LINE = /^\[\s*\d+\.\d+\] .*(?:\n|$)/gm;

/** Drops the kernel's own console messages from text read off the serial console. */
export function withoutKernelMessages(text: string): string {
  return text.replace(PRINTK_LINE, '');
}

/**
 * Runs CMD in the guest's logged-in root shell and returns what it printed.
 * The kernel writes its messages to the same serial console, in between the
 * shell's output (a boot entry without `loglevel=` shows warnings), so the
 * console log level is lowered first and any kernel line that still slips
 * in is dropped.
 */
export async function shellOutput(vm: Vm, cmd: string, timeoutMs = 60_000): Promise<string> {
  // Markers are printed by the shell (so the echo of the typed command does not match).
  vm.send(`dmesg -n 1; echo BEGIN''OUT; ${cmd}; echo; echo END''OUT\n`);
  const m = await vm.waitFor(/BEGINOUT\n([\s\S]*?)\nENDOUT/, timeoutMs); // the console log has no '\r'
  return withoutKernelMessages(m[1]!).trim();
}

/** Powers the guest off from its shell and waits for QEMU to exit. */
export async function powerOff(vm: Vm): Promise<void> {
  vm.send('systemctl poweroff\n');
  let timer: NodeJS.Timeout | undefined;
  const end = await Promise.race([vm.exited, new Promise((r) => (timer = setTimeout(r, 120_000)))]);
  clearTimeout(timer); // else it keeps the process (the demo, a benchmark) alive for two minutes more
  if (!end) await vm.stop();
}
