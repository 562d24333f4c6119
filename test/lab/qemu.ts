// A vmtest-like harness (after hugelgupf/vmtest): boot a real kernel and
// initramfs in QEMU (TCG only), watch the serial console, talk to it, stop
// the VM by PID. Networking is always QEMU user networking with restrict=on:
// the guest reaches the host only through guestfwd rules, each running
// `socat - TCP:HOST:PORT,nodelay` per connection (the cmd: form; the chardev
// form serves a single connection).
//
// Logging: the exact QEMU command line (paste it into a shell to rerun) and
// the console log file are printed to stderr when a VM starts. The serial
// console (ttyS0) always goes to that log file — HFK_VM_LOG_DIR, default
// $TMPDIR/hfk-vm — and, with HFK_VM_LOG=1, is also streamed to stderr line
// by line with a "[vm NAME] " prefix.

import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readdirSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { z } from 'zod';
import { HfkError, InputError, type HfkErrorOptions } from '../../src/errors.ts';

/** A VM that did not do what a test waited for (timeout, early exit, failed start). */
export class VmError extends HfkError {
  override name = 'VmError';
  constructor(message: string, options: HfkErrorOptions = {}) {
    super('E_VM', message, options);
  }
}

// ---------------------------------------------------------------- kernel

export interface LabKernel {
  version: string;
  /** bzImage to pass to -kernel. */
  kernel: string;
  /** /lib/modules/VERSION */
  modulesDir: string;
}

/**
 * The kernel the lab boots: HFK_KERNEL (a vmlinuz) and HFK_MODULES
 * (/lib/modules/VERSION) if set, else the newest /boot/vmlinuz-VERSION that
 * has a /lib/modules/VERSION/modules.dep.
 */
export function findKernel(env: NodeJS.ProcessEnv = process.env, roots = { boot: '/boot', modules: '/lib/modules' }): LabKernel {
  if (env.HFK_KERNEL || env.HFK_MODULES) {
    if (!env.HFK_KERNEL || !env.HFK_MODULES) throw new InputError('HFK_KERNEL and HFK_MODULES go together: set both (a vmlinuz and its /lib/modules/VERSION) or neither');
    for (const p of [env.HFK_KERNEL, join(env.HFK_MODULES, 'modules.dep')]) {
      if (!existsSync(p)) throw new InputError(`${p} does not exist (from HFK_KERNEL/HFK_MODULES)`);
    }
    return { version: env.HFK_MODULES.replace(/\/+$/, '').split('/').pop()!, kernel: env.HFK_KERNEL, modulesDir: env.HFK_MODULES };
  }
  const names = existsSync(roots.boot) ? readdirSync(roots.boot) : [];
  const versions = names
    .filter((n) => n.startsWith('vmlinuz-'))
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((v) => existsSync(join(roots.modules, v, 'modules.dep')))
    .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
  const version = versions[0];
  if (!version) {
    throw new InputError(`no kernel to boot: expected ${roots.boot}/vmlinuz-VERSION with ${roots.modules}/VERSION/modules.dep`, {
      hint: `apt-get install ${KERNEL_PACKAGE}, or set HFK_KERNEL and HFK_MODULES`,
    });
  }
  return { version, kernel: join(roots.boot, `vmlinuz-${version}`), modulesDir: join(roots.modules, version) };
}

/** The package that brings the lab's kernel and its modules. */
export const KERNEL_PACKAGE = 'linux-image-cloud-amd64';

/**
 * The module folder of the lab's kernel, for tests that read a real depmod
 * index: HFK_MODULES (/lib/modules/VERSION) if set, else the newest
 * /lib/modules/VERSION that has a modules.dep — whatever its version. When
 * there is none this throws, naming the package to install: such tests
 * fail, they never skip.
 */
export function findModules(env: NodeJS.ProcessEnv = process.env, root = '/lib/modules'): { version: string; modulesDir: string } {
  if (env.HFK_MODULES) {
    if (!existsSync(join(env.HFK_MODULES, 'modules.dep'))) throw new InputError(`${join(env.HFK_MODULES, 'modules.dep')} does not exist (from HFK_MODULES)`);
    return { version: env.HFK_MODULES.replace(/\/+$/, '').split('/').pop()!, modulesDir: env.HFK_MODULES };
  }
  const versions = (existsSync(root) ? readdirSync(root) : [])
    .filter((v) => existsSync(join(root, v, 'modules.dep')))
    .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
  const version = versions[0];
  if (!version) {
    throw new InputError(`no kernel modules installed: expected ${root}/VERSION/modules.dep`, {
      hint: `apt-get install ${KERNEL_PACKAGE} (node test/lab/packages.ts installs it with the lab's other packages), or set HFK_MODULES`,
    });
  }
  return { version, modulesDir: join(root, version) };
}

// ---------------------------------------------------------------- options

export const GuestFwd = z.strictObject({
  /** Address the guest connects to (inside 10.0.2.0/24, not .2 .3 .15). */
  guestIp: z.ipv4().default('10.0.2.100'),
  guestPort: z.number().int().min(1).max(65535),
  hostPort: z.number().int().min(1).max(65535),
  hostAddress: z.string().default('127.0.0.1'),
});
export type GuestFwd = z.input<typeof GuestFwd>;

export const VmNet = z.strictObject({
  /** Always on: the guest must not reach the host or the world except through guestfwd. */
  restrict: z.literal(true, { error: 'net.restrict must be true: lab VMs reach the host only through guestfwd rules' }),
  guestfwd: z.array(GuestFwd).default([]),
  /** Folder served by QEMU's built-in TFTP server. */
  tftp: z.string().optional(),
  /** File the DHCP server offers for network boot (with tftp). */
  bootfile: z.string().optional(),
  device: z.enum(['virtio-net-pci']).default('virtio-net-pci'),
});

const Disk = z.union([
  z.string(),
  z.strictObject({
    path: z.string(),
    format: z.enum(['raw', 'qcow2']).default('raw'),
    readonly: z.boolean().default(false),
    /** usb: a USB stick on an xHCI controller. */
    interface: z.enum(['virtio', 'ide', 'scsi', 'usb']).default('virtio'),
  }),
]);

/** OVMF: its code, and the variable store this VM may write (a copy per VM). */
export const Uefi = z.strictObject({
  code: z.string(),
  vars: z.string(),
  /** The Secure Boot build: SMM on, the flash writable only from SMM. */
  secureBoot: z.boolean().default(false),
});
export type Uefi = z.input<typeof Uefi>;

export const VmOptions = z
  .strictObject({
    /** Names the log file and the stderr prefix. */
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'name must be 1-64 letters, digits, . _ -'),
    kernel: z.string().optional(),
    initrd: z.string().optional(),
    append: z.string().optional(),
    memoryMiB: z.number().int().min(64).default(1024),
    cpus: z.number().int().min(1).max(8).default(1),
    /** TCG CPU model; 'max' gives the guest SSE4/AVX, which Node's V8 wants. */
    cpu: z.string().default('max'),
    machine: z.string().default('pc'),
    cdrom: z.string().optional(),
    disks: z.array(Disk).default([]),
    /** false: no network card at all. */
    net: z.union([VmNet, z.literal(false)]).default({ restrict: true, guestfwd: [], device: 'virtio-net-pci' }),
    /** The VM is killed after this long; waiters are rejected. */
    timeoutMs: z.number().int().positive(),
    /** Where the console log goes (default HFK_VM_LOG_DIR or $TMPDIR/hfk-vm). */
    logDir: z.string().optional(),
    qemu: z.string().default('qemu-system-x86_64'),
    /** Appended verbatim (for experiments; prefer a typed option). */
    extraArgs: z.array(z.string()).default([]),
    /** UEFI firmware (OVMF) instead of SeaBIOS; the machine becomes q35 and boot order goes by bootindex. */
    uefi: Uefi.optional(),
  })
  .superRefine((o, ctx) => {
    if (!o.kernel && (o.initrd || o.append)) ctx.addIssue({ code: 'custom', message: 'initrd and append need kernel: QEMU passes them to a kernel it loads itself' });
    if (!o.kernel && !o.cdrom && !o.disks.length && !(o.net && o.net.bootfile) && !o.uefi) {
      ctx.addIssue({ code: 'custom', message: 'nothing to boot: give kernel, cdrom, disks or net.bootfile' });
    }
    if (o.net && o.net.bootfile && !o.net.tftp) ctx.addIssue({ code: 'custom', message: 'net.bootfile needs net.tftp: the folder QEMU serves it from' });
    for (const a of o.extraArgs) {
      if (/kvm/i.test(a)) ctx.addIssue({ code: 'custom', message: `extraArgs must not enable KVM (the lab is TCG only): got '${a}'` });
    }
  });
export type VmOptions = z.input<typeof VmOptions>;

// ---------------------------------------------------------------- command line (pure)

/** A value inside a QEMU -option a=b,c=d list: commas are doubled. */
export function qemuValue(v: string): string {
  return v.replaceAll(',', ',,');
}

/**
 * The relay for one guestfwd connection. `nodelay` turns Nagle's algorithm
 * off on socat's side, so that the relay passes the guest's requests on
 * as they come, like the wire it stands in for. With Nagle on, a burst of
 * pipelined requests that followed one still unanswered waited for that
 * answer's ACK. Cold boots (`node bench/boot.ts --links loopback --methods
 * hfk --runs 1`, five of each, taking turns) reached login at 33.1–34.7 s
 * with it, against 34.8–43.6 s without (medians 33.8 and 36.5 s).
 */
export function guestfwdRule(f: GuestFwd): string {
  const g = GuestFwd.parse(f);
  return `tcp:${g.guestIp}:${g.guestPort}-cmd:socat - TCP:${g.hostAddress}:${g.hostPort},nodelay`;
}

/** QEMU's argv (without the binary) for validated options. Pure. */
export function qemuArgs(input: VmOptions): string[] {
  const o = VmOptions.parse(input);
  const args = [
    '-name', o.name,
    '-machine', o.machine,
    '-accel', 'tcg',
    '-cpu', o.cpu,
    '-smp', String(o.cpus),
    '-m', String(o.memoryMiB),
    '-no-user-config',
    '-nodefaults',
    '-display', 'none',
    '-no-reboot',
    '-serial', 'stdio',
    '-monitor', 'none',
  ];
  if (o.kernel) args.push('-kernel', o.kernel);
  if (o.initrd) args.push('-initrd', o.initrd);
  if (o.append) args.push('-append', o.append);
  const uefi = o.uefi ? Uefi.parse(o.uefi) : undefined;
  if (uefi) {
    const at = args.indexOf('-machine') + 1;
    args[at] = `${o.machine === 'pc' ? 'q35' : o.machine}${uefi.secureBoot ? ',smm=on' : ''}`;
    if (uefi.secureBoot) args.push('-global', 'driver=cfi.pflash01,property=secure,value=on');
    args.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${qemuValue(uefi.code)}`, '-drive', `if=pflash,format=raw,unit=1,file=${qemuValue(uefi.vars)}`);
  }
  // UEFI boots what has bootindex 0: the CD, else the first disk, else the network card (PXE).
  // Without one (HTTP Boot), OVMF keeps the variable store's BootOrder.
  const first = o.kernel ? '' : o.cdrom ? 'cd' : o.disks.length ? 'disk' : o.net && o.net.bootfile ? 'net' : '';
  const bootindex = (what: string) => (uefi && first === what ? ',bootindex=0' : '');
  if (o.net) {
    const parts = ['user', 'id=n0', 'restrict=on'];
    if (o.net.tftp) parts.push(`tftp=${qemuValue(o.net.tftp)}`);
    if (o.net.bootfile) parts.push(`bootfile=${qemuValue(o.net.bootfile)}`);
    for (const f of o.net.guestfwd) parts.push(`guestfwd=${qemuValue(guestfwdRule(f))}`);
    // On UEFI, OVMF's own virtio-net driver and network stack (PXE, HTTP Boot), not iPXE's option ROM.
    args.push('-netdev', parts.join(','), '-device', `${o.net.device},netdev=n0${uefi ? ',romfile=' : ''}${bootindex('net')}`);
  }
  o.disks.forEach((d, i) => {
    const disk = typeof d === 'string' ? { path: d, format: 'raw', readonly: false, interface: 'virtio' } : d;
    const ro = disk.readonly ? ',readonly=on' : '';
    if (disk.interface === 'usb') {
      if (!args.includes('qemu-xhci,id=xhci')) args.push('-device', 'qemu-xhci,id=xhci');
      args.push('-drive', `file=${qemuValue(disk.path)},format=${disk.format},if=none,id=d${i}${ro}`, '-device', `usb-storage,bus=xhci.0,drive=d${i}${i === 0 ? bootindex('disk') : ''}`);
    } else if (uefi && disk.interface === 'virtio') {
      args.push('-drive', `file=${qemuValue(disk.path)},format=${disk.format},if=none,id=d${i}${ro}`, '-device', `virtio-blk-pci,drive=d${i}${i === 0 ? bootindex('disk') : ''}`);
    } else {
      args.push('-drive', `file=${qemuValue(disk.path)},format=${disk.format},if=${disk.interface},index=${i}${ro}`);
    }
  });
  if (o.cdrom) {
    if (uefi) args.push('-drive', `file=${qemuValue(o.cdrom)},media=cdrom,readonly=on,if=none,id=cd0`, '-device', `ide-cd,drive=cd0${bootindex('cd')}`);
    else args.push('-drive', `file=${qemuValue(o.cdrom)},media=cdrom,readonly=on,if=ide,index=2`);
  }
  if (!o.kernel && !uefi) args.push('-boot', o.cdrom ? 'd' : o.disks.length ? 'c' : 'n');
  args.push(...o.extraArgs);
  return args;
}

/** argv as one line a POSIX shell runs unchanged. */
export function shellQuote(argv: readonly string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`)).join(' ');
}

// ---------------------------------------------------------------- console matching (timers, no process)

function tail(text: string, lines = 30): string {
  return text.split('\n').slice(-lines).join('\n');
}

interface Waiter {
  pattern: RegExp;
  resolve(m: RegExpMatchArray): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

/**
 * The console text of one VM and the tests waiting on it. A match consumes
 * the console up to its end, so consecutive waits find markers in order.
 * A pattern is tried as output arrives, so one that ends in a variable part
 * (like x=.*) may match a line cut short: end such patterns with \n.
 */
export class ConsoleLog {
  #text = '';
  #cursor = 0;
  #closed: string | null = null;
  #waiters = new Set<Waiter>();
  readonly label: string;

  constructor(label: string) {
    this.label = label;
  }

  get text(): string {
    return this.#text;
  }

  append(chunk: string): void {
    this.#text += chunk.replaceAll('\r', '');
    for (const w of [...this.#waiters]) this.#try(w);
  }

  /** No more output will come (the VM exited): pending and later waits fail with `why`. */
  close(why: string): void {
    if (this.#closed !== null) return;
    this.#closed = why;
    for (const w of [...this.#waiters]) this.#fail(w, `${this.label} ${why} before printing ${w.pattern}`);
  }

  waitFor(pattern: string | RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        pattern: re,
        resolve,
        reject,
        timer: setTimeout(() => this.#fail(w, `${this.label} did not print ${re} within ${timeoutMs / 1000}s`), timeoutMs),
      };
      this.#waiters.add(w);
      this.#try(w);
      if (this.#waiters.has(w) && this.#closed !== null) this.#fail(w, `${this.label} ${this.#closed} before printing ${re}`);
    });
  }

  #try(w: Waiter): void {
    const rest = this.#text.slice(this.#cursor);
    const m = rest.match(new RegExp(w.pattern.source, w.pattern.flags.replace('g', '')));
    if (!m || m.index === undefined) return;
    this.#cursor += m.index + m[0].length;
    this.#waiters.delete(w);
    clearTimeout(w.timer);
    w.resolve(m);
  }

  #fail(w: Waiter, message: string): void {
    if (!this.#waiters.delete(w)) return;
    clearTimeout(w.timer);
    w.reject(new VmError(`${message}; last console lines:\n${tail(this.#text)}`));
  }
}

// ---------------------------------------------------------------- the VM

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** exited: by itself (poweroff, crash); stopped: stop(); timeout: timeoutMs passed. */
  reason: 'exited' | 'stopped' | 'timeout' | 'failed-to-start';
}

export interface Vm {
  readonly name: string;
  readonly pid: number;
  /** The exact command line, shell-quoted. */
  readonly commandLine: string;
  readonly logFile: string;
  /** Everything the serial console printed so far ('\r' removed). */
  readonly console: string;
  /** QEMU's own stderr (warnings, errors). */
  readonly stderr: string;
  readonly exited: Promise<VmExit>;
  /** Resolves with the next match after the previous one; rejects on timeout or exit, with the console tail. */
  waitFor(pattern: string | RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Types text on the serial console. */
  send(text: string): void;
  /** Kills QEMU by PID (SIGTERM, then SIGKILL); idempotent. */
  stop(): Promise<VmExit>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function killAllOnExit(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const c of live) if (c.pid) try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
  });
}

/** How many QEMU processes this process started and has not seen exit. */
export function liveVmCount(): number {
  return live.size;
}

let serial = 0;

export function startVm(input: VmOptions, log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Vm {
  const o = VmOptions.parse(input);
  const argv = [o.qemu, ...qemuArgs(input)];
  const logDir = o.logDir ?? process.env.HFK_VM_LOG_DIR ?? join(tmpdir(), 'hfk-vm');
  mkdirSync(logDir, { recursive: true });
  const logFile = join(logDir, `${o.name}.${process.pid}.${++serial}.console.log`);
  const commandLine = shellQuote(argv);
  log(`vm ${o.name}: ${commandLine}\nvm ${o.name}: console → ${logFile}`);

  const out: WriteStream = createWriteStream(logFile);
  out.write(`# ${commandLine}\n`);
  const stream = process.env.HFK_VM_LOG === '1';
  const label = `VM ${o.name}`;
  const con = new ConsoleLog(label);
  let stderr = '';
  let pending = '';

  killAllOnExit();
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  live.add(child);
  const decoder = new StringDecoder('utf8');
  child.stdout!.on('data', (b: Buffer) => {
    const text = decoder.write(b);
    out.write(text);
    con.append(text);
    if (stream) {
      pending += text.replaceAll('\r', '');
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const l of lines) process.stderr.write(`[vm ${o.name}] ${l}\n`);
    }
  });
  child.stderr!.on('data', (b: Buffer) => {
    stderr += b.toString();
    out.write(`# qemu stderr: ${b.toString()}`);
  });
  child.stdin!.on('error', () => { /* the VM is gone; send() after exit is a no-op */ });

  let reason: VmExit['reason'] = 'exited';
  const timer = setTimeout(() => {
    reason = 'timeout';
    if (child.pid) try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
  }, o.timeoutMs);

  const exited = new Promise<VmExit>((resolve) => {
    let finished = false;
    const done = (r: VmExit) => {
      // a failed spawn emits 'error' and then 'close': report it once
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      live.delete(child);
      if (stream && pending) process.stderr.write(`[vm ${o.name}] ${pending}\n`);
      const why =
        r.reason === 'timeout' ? `was killed after its ${o.timeoutMs / 1000}s limit`
        : r.reason === 'stopped' ? 'was stopped'
        : r.reason === 'failed-to-start' ? `could not start (${stderr.trim()})`
        : `exited (${r.signal ?? `code ${r.code}`}${stderr.trim() ? `: ${stderr.trim().split('\n').pop()}` : ''})`;
      con.close(why);
      out.end(`\n# ${label} ${why}\n`, () => resolve(r));
    };
    child.once('error', (e) => {
      stderr += `${e.message}\n`;
      done({ code: null, signal: null, reason: 'failed-to-start' });
    });
    // 'close', not 'exit': the console may still be draining when QEMU exits
    child.once('close', (code, signal) => done({ code, signal, reason }));
  });

  let stopping: Promise<VmExit> | null = null;
  const vm: Vm = {
    name: o.name,
    pid: child.pid ?? -1,
    commandLine,
    logFile,
    get console() {
      return con.text;
    },
    get stderr() {
      return stderr;
    },
    exited,
    waitFor: (pattern, timeoutMs = o.timeoutMs) => con.waitFor(pattern, timeoutMs),
    send(text) {
      if (child.exitCode === null && child.signalCode === null) child.stdin!.write(text);
    },
    stop() {
      if (stopping) return stopping;
      stopping = (async () => {
        if (!live.has(child)) return exited;
        reason = 'stopped';
        if (child.pid) try { process.kill(child.pid, 'SIGTERM'); } catch { /* gone */ }
        const escalate = setTimeout(() => {
          if (child.pid) try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
        }, 5000);
        const r = await exited;
        clearTimeout(escalate);
        return r;
      })();
      return stopping;
    },
  };
  return vm;
}
