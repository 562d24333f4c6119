// Runs the built hfk bundle (dist/hfk.mjs) as a user would: a separate
// process, with the Node 24 that npm ci installed.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
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

/**
 * Node and the given files, copied into a folder user nobody can read: the
 * checkout may sit below a folder only root may enter (a CI clone in a 0700
 * temp folder), and tests that drop to nobody must still run Node.
 */
export function copiesForNobody(files: string[]): { dir: string; node: string; path(file: string): string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'hfk-nobody-'));
  chmodSync(dir, 0o755);
  const place = (src: string) => {
    const dest = join(dir, basename(src));
    copyFileSync(src, dest);
    chmodSync(dest, 0o755);
    return dest;
  };
  const node = place(NODE);
  for (const f of files) place(f);
  return { dir, node, path: (file) => join(dir, basename(file)), remove: () => rmSync(dir, { recursive: true, force: true }) };
}
