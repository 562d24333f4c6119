// Benchmark: publishing the Debian root image (uncompressed squashfs, ~250
// MB), side by side: `hfk publish`, `casync make --chunk-size=65536`
// (Debian's casync) and `create_compressed_fs -B 65536` (cloop-utils). Wall
// time, throughput and store size; the image is in the page cache for all
// three. Each tool runs `--runs` times, each time onto a freshly made ext4; the
// median counts.
//
//   node bench/publish.ts [--runs 5]

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_LEVEL } from '../src/format/codec.ts';
import { HFK, NODE } from '../test/helpers/cli.ts';
import { benchStore, type BenchResult, debianImage, median, saveResult, turningOrder, workDir } from './common.ts';

function apparentBytes(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  let n = 0;
  for (const e of readdirSync(path)) n += apparentBytes(join(path, e));
  return n;
}

function timed(argv: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr?.toString().slice(-2000)}`);
  return (performance.now() - t0) / 1000;
}

export async function benchPublish(runs = 5): Promise<BenchResult> {
  const image = await debianImage();
  const { key } = await benchStore();
  const size = statSync(image).size;
  const dir = workDir('publish');
  readFileSync(image); // into the page cache
  const tools: { name: string; command: string; run: (out: string) => string[]; output: (out: string) => string }[] = [
    {
      name: 'hfk publish',
      command: `hfk publish IMAGE --store OUT --name debian --key KEY (zstd level ${DEFAULT_LEVEL.zstd}, 64 KiB blocks)`,
      run: (out) => [NODE, HFK, 'publish', image, '--store', out, '--name', 'debian', '--key', key],
      output: (out) => join(out, 'blocks'),
    },
    {
      name: 'casync make',
      command: 'casync make --chunk-size=65536 --store=OUT/store OUT/index.caibx IMAGE',
      run: (out) => ['casync', 'make', '--chunk-size=65536', `--store=${out}/store`, `${out}/index.caibx`, image],
      output: (out) => join(out, 'store'),
    },
    {
      name: 'create_compressed_fs',
      command: 'create_compressed_fs -q -B 65536 IMAGE OUT/image.cloop',
      run: (out) => ['create_compressed_fs', '-q', '-B', '65536', image, `${out}/image.cloop`],
      output: (out) => join(out, 'image.cloop'),
    },
  ];
  // Every run writes to a freshly made ext4 (on a loop device over a file in
  // RAM): the state a disk is left in by earlier runs (ext4 scanning inodes
  // freed moments ago, writeback) varies run to run by more than the tools
  // differ. Runs take turns, in an order that turns each round.
  const fsImage = join('/dev/shm', `hfk-bench-publish-${process.pid}.ext4`);
  const out = join(dir, 'out');
  mkdirSync(out, { recursive: true });
  const times = tools.map((): number[] => []);
  const stored = tools.map(() => 0);
  try {
    for (let i = 0; i < runs; i++) {
      turningOrder(tools.length, i).forEach((k) => {
        const t = tools[k]!;
        execFileSync('truncate', ['-s', '0', fsImage]);
        execFileSync('truncate', ['-s', '1G', fsImage]);
        execFileSync('mkfs.ext4', ['-q', '-F', fsImage]);
        execFileSync('mount', ['-o', 'loop', fsImage, out]);
        try {
          times[k]!.push(timed(t.run(out)));
          stored[k] = apparentBytes(t.output(out));
        } finally {
          execFileSync('umount', [out]);
        }
      });
    }
  } finally {
    rmSync(fsImage, { force: true });
  }
  const rows: Record<string, unknown>[] = tools.map((t, k) => {
    const secs = median(times[k]!);
    process.stderr.write(`${t.name}: ${secs.toFixed(2)} s, ${(size / secs / 1e6).toFixed(1)} MB/s, store ${(stored[k]! / 1e6).toFixed(1)} MB\n`);
    return { tool: t.name, command: t.command, seconds: Number(secs.toFixed(2)), MBps: Number((size / secs / 1e6).toFixed(1)), storeBytes: stored[k]!, storeMB: Number((stored[k]! / 1e6).toFixed(1)), runs: times[k]!.map((x) => Number(x.toFixed(2))) };
  });
  const hfkRow = rows[0] as { MBps: number; storeBytes: number };
  const casyncRow = rows[1] as { MBps: number; storeBytes: number };
  const result: BenchResult = {
    name: 'publish',
    command: 'node bench/publish.ts',
    summary: {
      imageBytes: size,
      hfkMBps: hfkRow.MBps,
      casyncMBps: casyncRow.MBps,
      hfkStoreBytes: hfkRow.storeBytes,
      casyncStoreBytes: casyncRow.storeBytes,
      targets: { throughputAtLeastCasync: hfkRow.MBps >= casyncRow.MBps, storeNoLargerThanCasync: hfkRow.storeBytes <= casyncRow.storeBytes },
    },
    pass: hfkRow.MBps >= casyncRow.MBps && hfkRow.storeBytes <= casyncRow.storeBytes,
    rows,
  };
  saveResult(result);
  return result;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { runs: { type: 'string' } } });
  const r = await benchPublish(Number(values.runs ?? 5));
  console.log(JSON.stringify(r, null, 2));
}
