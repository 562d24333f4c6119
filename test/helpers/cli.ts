// Runs the built hfk bundle (dist/hfk.mjs) as a user would: a separate
// process, with the Node 24 that npm ci installed.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const HFK = `${REPO}dist/hfk.mjs`;
export const HFK_INIT = `${REPO}dist/hfk-init.mjs`;
export const NODE = process.execPath;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function needBundle(file: string): void {
  if (!existsSync(file)) throw new Error(`${file} is missing: run npm run build (npm test does it first)`);
}

/** Runs `hfk ARGS…` to completion. Never throws for a non-zero exit. */
export function hfk(args: string[], options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  needBundle(HFK);
  return new Promise((resolve, reject) => {
    const child = execFile(
      NODE,
      [HFK, ...args],
      { env: { ...process.env, CI: 'true', ...options.env }, maxBuffer: 64 << 20, timeout: options.timeoutMs ?? 300_000 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') return reject(err);
        resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin!.end(options.input);
  });
}

/** Like hfk(), but the output must be JSON and the exit status 0. */
export async function hfkJson<T = any>(args: string[]): Promise<T> {
  const r = await hfk([...args, '--json']);
  if (r.code !== 0) throw new Error(`hfk ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** Starts a long-running hfk command (serve, mount --foreground). */
export function hfkSpawn(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  needBundle(HFK);
  return spawn(NODE, [HFK, ...args], { env: { ...process.env, CI: 'true', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Resolves with the first stdout line matching `re` (rejects if the process exits first). */
export function waitForLine(child: ChildProcess, re: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let err = '';
    const onData = (d: Buffer) => {
      buf += d.toString();
      const m = re.exec(buf);
      if (m) {
        child.stdout!.off('data', onData);
        resolve(m);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.once('exit', (code) => reject(new Error(`process exited (${code}) before printing ${re}: ${err}`)));
  });
}
