// The init's block reader (`hfk-init --reader SPEC.json`): a keeper
// (keeper.ts) that holds the mount and runs reader processes for it, until
// the image is unmounted, which for a root filesystem is never. main.ts
// loads this module only in that process.

import * as fs from 'node:fs';
import { describeError } from '../errors.ts';
import { errorMessage, ReaderSpec, reportReady } from './spec.ts';
import { runKeeper } from './keeper.ts';
import { readerNodeFlags } from './launch.ts';

/** The reader process: serve until the image is unmounted (normally: never). SPEC is a file, or '-' for stdin. */
export async function readerDaemon(specFile: string): Promise<void> {
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  // Shutdown signals are not for us (the keeper ignores them): the root filesystem needs us to the end.
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
    await runKeeper(spec, (m) => reportReady(3, m), {
      argv: [process.execPath, process.argv[1]!],
      title: '@hfk-reader',
      log,
      nodeFlags: readerNodeFlags(process.env),
      holdRuntime: true,
    });
  } catch (e) {
    reportReady(3, errorMessage(e));
    log(`reader: ${describeError(e)}`);
    process.exitCode = 1;
  }
}
