#!/usr/bin/env node
// hfk-init: the initramfs init (one esbuild bundle, dist/hfk-init.mjs,
// installed as /init with #!/usr/bin/node).
//
//   /init                          as PID 1: boot (boot.ts)
//   hfk-init --dry-run [options]   on a running host: everything that changes nothing (dryrun.ts)
//   hfk-init --reader SPEC.json    the long-lived block reader the boot starts (its keeper)
//   hfk-init --reader-child        a reader process the keeper starts (../reader/child.ts)
//
// This file only picks the mode; each mode's code is loaded when it runs
// (pid1.ts, ../reader/daemon.ts, dryrun.ts), so a process evaluates only
// the modules it needs: the reader never loads the boot's, and neither
// loads undici (mirrors over plain HTTP use hfk's own client). On a slow
// machine evaluating the bundle's modules is most of Node's start.

import { isMainThread } from 'node:worker_threads';

/** When this bundle's code began to run, ms after the process started (Node's own start-up and the bundle's loading before it). */
const bundleStart = performance.now();

const USAGE = `Usage:
  hfk-init                          run as the initramfs init (PID 1)
  hfk-init --dry-run [--cmdline "…"] [--config FILE] [--key PUB] [--initrd FILE] [--modules DIR] [--json]
                                    check a boot on this host without changing anything
  hfk-init --reader SPEC.json       (internal) the block reader's keeper process
  hfk-init --reader-child           (internal) a reader process its keeper starts
`;

async function main(argv: string[]): Promise<void> {
  if (argv[0] === '--reader' && argv[1]) return (await import('../reader/daemon.ts')).readerDaemon(argv[1]);
  if (argv[0] === '--reader-child') return (await import('../reader/child.ts')).readerChild();
  if (argv.includes('--dry-run')) {
    const { runDryRun } = await import('./dryrun.ts');
    process.exitCode = await runDryRun(argv.filter((a) => a !== '--dry-run'));
    return;
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  if (process.pid === 1 || argv.includes('--init')) {
    await (await import('./pid1.ts')).boot(bundleStart);
    return;
  }
  process.stderr.write(`hfk-init: not PID 1, and no --dry-run given\n${USAGE}`);
  process.exitCode = 2;
}

if (isMainThread) {
  main(process.argv.slice(2)).catch(async (e: unknown) => {
    const { describeError } = await import('../errors.ts');
    process.stderr.write(`hfk-init: ${describeError(e)}\n`);
    if (process.pid === 1) {
      // PID 1 must never exit: a shell, forever.
      const shell = (await import('./steps.ts')).consoleShell();
      for (;;) await shell();
    }
    process.exitCode = 1;
  });
}
