// Shared by the benchmarks: where they work, the Debian root image they
// measure (built once, cached outside the repo), and where results go.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_BLOCK_SIZE, DEFAULT_LEVEL } from '../src/format/codec.ts';
import { MANIFEST_FORMAT_VERSION } from '../src/format/manifest.ts';
import { HFK, NODE, REPO } from '../test/helpers/cli.ts';

export const CACHE = process.env.HFK_CACHE ?? '/var/cache/hfk';

export interface BenchResult {
  name: string;
  command: string;
  summary: Record<string, unknown>;
  pass: boolean;
  rows?: unknown[];
}

/** The middle value (the upper one of an even count). */
export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
}

/**
 * The order in which `n` contenders run in round `round`: it turns each
 * round, so none always runs right after the same other one (on this VM,
 * memory one tool frees costs the next one fresh page faults).
 */
export function turningOrder(n: number, round: number): number[] {
  return Array.from({ length: n }, (_, j) => (j + round) % n);
}

export function workDir(name: string): string {
  const d = join(CACHE, 'bench-work', name);
  mkdirSync(d, { recursive: true });
  return d;
}

export function saveResult(r: BenchResult): void {
  const dir = join(REPO, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${r.name}.json`), `${JSON.stringify({ ...r, date: new Date().toISOString(), machine: machine() }, null, 2)}\n`);
}

function machine(): Record<string, unknown> {
  const cpu = readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1];
  return { cpu, cores: Number(execFileSync('nproc').toString().trim()), node: process.version, kernel: execFileSync('uname', ['-r']).toString().trim() };
}

/** The Debian root as an uncompressed squashfs (~250 MB), built once. */
export async function debianImage(): Promise<string> {
  const lab = (await import('../test/lab/debian-root.ts')) as { ensureDebianSquashfs: () => Promise<string> };
  return lab.ensureDebianSquashfs();
}

/**
 * The Debian image published into a cached store (republished when the
 * image, the default level or the manifest format changes), with the
 * default block size unless `blockSize` says otherwise.
 */
export async function benchStore(blockSize = DEFAULT_BLOCK_SIZE): Promise<{ store: string; name: string; image: string; key: string; pub: string }> {
  const image = await debianImage();
  const st = statSync(image);
  const bs = blockSize === DEFAULT_BLOCK_SIZE ? '' : `:bs${blockSize}`;
  const tag = createHash('sha256').update(`${image}:${st.size}:${st.mtimeMs}:zstd-${DEFAULT_LEVEL.zstd}:m${MANIFEST_FORMAT_VERSION}${bs}`).digest('hex').slice(0, 12);
  const base = join(CACHE, 'bench-store');
  const store = join(base, `store-${tag}`);
  const key = join(base, 'bench.key');
  const pub = join(base, 'bench.pub');
  mkdirSync(base, { recursive: true });
  if (!existsSync(key)) execFileSync(NODE, [HFK, 'keygen', '--out', join(base, 'bench')]);
  if (!existsSync(join(store, 'images', 'debian', 'latest.json'))) {
    execFileSync(NODE, [HFK, 'publish', image, '--store', store, '--name', 'debian', '--key', key, ...(bs ? ['--block-size', `${blockSize / 1024}K`] : [])], { stdio: 'inherit' });
  }
  return { store, name: 'debian', image, key, pub };
}
