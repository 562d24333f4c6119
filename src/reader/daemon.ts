// The init's block reader process (`hfk-init --reader SPEC.json`): serves
// the image until it is unmounted, which for a root filesystem is never.
// main.ts loads this module only in that process.

import * as fs from 'node:fs';
import { describeError } from '../errors.ts';
import { errorMessage, ReaderSpec, reportReady } from './spec.ts';
import { runReader } from './reader.ts';

/** The reader process: serve until the image is unmounted (normally: never). SPEC is a file, or '-' for stdin. */
export async function readerDaemon(specFile: string): Promise<void> {
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  // Shutdown signals are not for us: the root filesystem needs us to the end.
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => log(`reader: ignoring ${sig}`));
  try {
    const text = specFile === '-' ? await new Promise<string>((resolve, reject) => {
      let t = '';
      process.stdin.setEncoding('utf8');
      process.stdin.on('data', (d) => (t += d));
      process.stdin.on('end', () => resolve(t));
      process.stdin.on('error', reject);
    }) : fs.readFileSync(specFile, 'utf8');
    if (!text.trim()) return; // the boot ended before it needed us
    const spec = ReaderSpec.parse(JSON.parse(text));
    if (spec.cpuProfile) await startProfiler(log);
    await runReader(spec, (m) => reportReady(3, m), log);
  } catch (e) {
    reportReady(3, errorMessage(e));
    log(`reader: ${describeError(e)}`);
    process.exitCode = 1;
  }
}

/**
 * For developers: with `cpuProfile` in its spec (init.reader.cpuProfile in
 * hfk.yaml) the boot's reader profiles its main thread from the moment it
 * is handed its work; `kill -USR2` writes the profile so far to
 * reader.cpuprofile in its working folder (the block cache: /run/hfk/cache
 * after a tmpfs boot), for Chrome's DevTools or any .cpuprofile reader.
 * See docs/DEVELOPING.md.
 */
async function startProfiler(log: (line: string) => void): Promise<void> {
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 1000 });
  await session.post('Profiler.start');
  process.on('SIGUSR2', () => {
    void (async () => {
      try {
        const { profile } = await session.post('Profiler.stop');
        fs.writeFileSync('reader.cpuprofile', JSON.stringify(profile));
        log(`reader: CPU profile written to ${process.cwd()}/reader.cpuprofile`);
        await session.post('Profiler.start');
      } catch (e) {
        log(`reader: cannot write the CPU profile: ${describeError(e)}`); // never fatal: this process serves the root filesystem
      }
    })();
  });
}
