// The init's block reader process (`hfk-init --reader SPEC.json`): serves
// the image until it is unmounted, which for a root filesystem is never.
// main.ts loads this module only in that process.

import * as fs from 'node:fs';
import { describeError } from '../errors.ts';
import { errorMessage, reportReady } from './launch.ts';
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
    const spec = JSON.parse(text);
    await runReader(spec, (m) => reportReady(3, m), log);
  } catch (e) {
    reportReady(3, errorMessage(e));
    log(`reader: ${describeError(e)}`);
    process.exitCode = 1;
  }
}

