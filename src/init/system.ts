// The machine's own System: what PID 1 boots with. Every edge the boot
// steps touch (files, commands, the network, the reader process, the new
// root) is here, small; the steps in boot.ts only order and describe.

import * as fs from 'node:fs';
import * as os from 'node:os';
import { launchReader } from '../reader/launch.ts';
import { PATHS, type System } from './boot.ts';
import { bringUpNetwork } from './network.ts';
import { modprobeBatchLoader, modprobeLoader, probeHardware } from './probe.ts';
import type { CommandRunner, Logger } from './steps.ts';

export const SYSTEM_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

/** /proc/cmdline: the one place the kernel command line is read. */
export function procCmdline(): string {
  return fs.readFileSync('/proc/cmdline', 'utf8');
}

/** Seconds since the kernel started (/proc/uptime). */
export function uptime(): number {
  try {
    return Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  } catch {
    return process.uptime();
  }
}

/** `uname -r`. */
export function kernelRelease(): string {
  return os.release();
}

export function machineSystem(o: { run: CommandRunner; log: () => Logger }): System {
  return {
    run: o.run,
    query: o.run,
    get log() {
      return o.log();
    },
    kernelRelease,
    uptime,
    cmdline: procCmdline,
    readFile: (file) => {
      try {
        return { data: fs.readFileSync(file), from: file };
      } catch {
        return undefined;
      }
    },
    exists: (file) => fs.existsSync(file),
    modulesDir: () => `/lib/modules/${kernelRelease()}`,
    mkdir: (dir) => void fs.mkdirSync(dir, { recursive: true }),
    writeFile: (file, data) => fs.writeFileSync(file, data),
    probe: (options) => probeHardware({ ...options, root: '/', load: modprobeLoader(o.run), loadBatch: modprobeBatchLoader(o.run), log: o.log() }),
    network: (options) => bringUpNetwork({ ...options, root: '/', run: o.run, log: o.log() }),
    cacheDir: (dir) => dir,
    launchReader: () => {
      fs.mkdirSync(PATHS.run, { recursive: true });
      const logFd = fs.openSync(PATHS.readerLog, 'a');
      try {
        // '@' as argv[0]: systemd's mark of a root-storage daemon, spared at shutdown. This is the
        // reader's keeper (reader/keeper.ts), which holds the mount; its readers are '@hfk-reader'.
        return launchReader({ argv: [process.execPath, process.argv[1]!, '--reader', '-'], argv0: '@hfk-keeper', logFd, timeoutMs: 300_000 });
      } finally {
        fs.closeSync(logFd); // the child has its own copy
      }
    },
    readAt: async (file, offset, length) => {
      const fh = await fs.promises.open(file, 'r');
      try {
        const buf = Buffer.alloc(length);
        const { bytesRead } = await fh.read(buf, 0, length, offset);
        return buf.subarray(0, bytesRead);
      } finally {
        await fh.close();
      }
    },
    isExecutable: async (file) => {
      try {
        fs.accessSync(file, fs.constants.X_OK);
        return fs.statSync(file).isFile();
      } catch {
        return false; // a dangling symlink (usrmerge) among them: the next candidate
      }
    },
    execSwitchRoot: (newRoot, init, args) => {
      const execve = (process as unknown as { execve: (file: string, args: string[], env: NodeJS.ProcessEnv) => never }).execve;
      return execve('/bin/busybox', ['switch_root', newRoot, init, ...args], { PATH: SYSTEM_PATH, TERM: 'linux' });
    },
  };
}
