// Benchmark: reading a remote image. The same image (the Debian root as an
// uncompressed squashfs) behind the same nginx on loopback, read three ways:
//   - hfk mount (its blocks, compressed and content-addressed);
//   - rclone mount :http: --vfs-cache-mode full (the image as one file);
//   - the local file, as the limit;
//   - and, for comparison only (the targets count the default), hfk mount of
//     the same image published with 128 KiB blocks instead of 64 KiB: half
//     as many objects to request, verify and store.
// Figures: cold and warm sequential read of the image (dd bs=1M, MB/s), and
// cold and warm full-tree read through loop + squashfs (tar of every file
// piped to wc, seconds). Before every figure dirty pages are written back
// (sync, untimed) and the client side's kernel caches of the image are evicted (posix_fadvise DONTNEED through dd iflag=nocache,
// and a fresh loop mount), so "cold" means a fresh client (a new hfk or rclone
// mount with empty caches) and "warm" means the tool's own cache (hfk's
// memory cache, rclone's disk cache). The mirror is a warmed-up server: its
// page cache holds what it serves, as a busy mirror's does.
//
//   node bench/mount.ts [--runs 3]

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { HFK, NODE } from '../test/helpers/cli.ts';
import { startNginx } from '../test/helpers/mirrors.ts';
import { benchStore, type BenchResult, median, saveResult, turningOrder, workDir } from './common.ts';

function sh(cmd: string): string {
  return execFileSync('sh', ['-c', cmd], { maxBuffer: 64 << 20 }).toString();
}

/** Drops the page cache of one file (a FUSE file's too: the next read goes to its server). */
function evict(file: string): void {
  sh(`dd if=${file} iflag=nocache count=0 status=none`);
}

/**
 * Seconds to run a shell command (after writing back dirty pages and
 * evicting the image from the page cache). `atStart` runs just before it.
 */
export function timed(cmd: string, img: string, atStart?: () => void): number {
  // Dirty pages written before, outside the figure: rclone's cache file (the
  // whole image, 180 MB dirty after its cold read) would otherwise be written
  // back in the middle of whatever the next figure is, 30 s later.
  sh('sync');
  evict(img);
  atStart?.();
  const t0 = performance.now();
  const r = spawnSync('sh', ['-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr.toString()}`);
  return (performance.now() - t0) / 1000;
}

export function isMounted(p: string): boolean {
  return sh('cat /proc/self/mountinfo').split('\n').some((l) => l.split(' ')[4] === p);
}

interface Figures {
  ddColdMBps: number;
  ddWarmMBps: number;
  treeColdS: number;
  treeWarmS: number;
}

/** The four figures for an image file at `img` (reachable through whatever mount). */
function measure(img: string, size: number, fresh: () => void, dir: string): Figures {
  const root = join(dir, 'root');
  mkdirSync(root, { recursive: true });
  const dd = () => size / timed(`dd if=${img} of=/dev/null bs=1M status=none`, img) / 1e6;
  const tree = () => {
    execFileSync('mount', ['-o', 'loop,ro', img, root]);
    try {
      return timed(`tar cf - -C ${root} . | wc -c`, img);
    } finally {
      execFileSync('umount', [root]);
    }
  };
  fresh();
  const ddColdMBps = dd();
  const ddWarmMBps = dd();
  fresh();
  const treeColdS = tree();
  const treeWarmS = tree();
  return { ddColdMBps, ddWarmMBps, treeColdS, treeWarmS };
}

export async function benchMount(runs = 3): Promise<BenchResult> {
  const { store, image, pub } = await benchStore();
  const big = await benchStore(128 * 1024);
  const size = statSync(image).size;
  const dir = workDir('mount');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'www', 'image'), { recursive: true });
  symlinkSync(store, join(dir, 'www', 'store'));
  symlinkSync(big.store, join(dir, 'www', 'store128'));
  symlinkSync(image, join(dir, 'www', 'image', 'debian.img'));
  // rclone's http backend lists a folder from its HTML index.
  writeFileSync(join(dir, 'www', 'image', 'index.html'), '<html><body><a href="debian.img">debian.img</a></body></html>\n');
  const nginx = await startNginx(join(dir, 'www'), dir);
  // A warmed-up mirror: its page cache holds what it serves, as a busy mirror's does.
  sh(`cat ${image} > /dev/null; find ${store}/ ${big.store}/ -type f -exec cat {} + > /dev/null`);
  const hfkMnt = join(dir, 'hfk');
  const rcMnt = join(dir, 'rclone');
  const rcCache = join(dir, 'rclone-cache');
  mkdirSync(hfkMnt);
  mkdirSync(rcMnt);

  // hfk: a fresh reader (empty memory cache) for each cold figure.
  const hfkStop = () => {
    if (isMounted(hfkMnt)) execFileSync(NODE, [HFK, 'umount', hfkMnt]);
  };
  const hfkFresh = (storePath = 'store/') => () => {
    hfkStop();
    execFileSync(NODE, [HFK, 'mount', hfkMnt, '--name', 'debian', '--mirrors', `${nginx.url}${storePath}`, '--key', pub, '--memory', '512M', '--log', join(dir, 'hfk.log')], { stdio: 'ignore' });
  };
  // rclone: a fresh mount with an empty VFS cache for each cold figure.
  let rc: ReturnType<typeof spawn> | undefined;
  const rcStop = () => {
    if (isMounted(rcMnt)) execFileSync('umount', [rcMnt]);
    if (rc && rc.exitCode === null) rc.kill('SIGTERM');
  };
  const rcFresh = () => {
    rcStop();
    rmSync(rcCache, { recursive: true, force: true });
    rc = spawn('rclone', ['mount', ':http:', rcMnt, '--http-url', `${nginx.url}image/`, '--vfs-cache-mode', 'full', '--cache-dir', rcCache, '--read-only', '--allow-other'], { stdio: 'ignore' });
    for (let i = 0; i < 200 && !isMounted(rcMnt); i++) spawnSync('sleep', ['0.05']);
    if (!isMounted(rcMnt)) throw new Error('rclone mount did not come up');
    for (let i = 0; i < 200 && spawnSync('test', ['-e', join(rcMnt, 'debian.img')]).status !== 0; i++) spawnSync('sleep', ['0.05']);
  };
  const methods = [
    { name: 'hfk mount', img: join(hfkMnt, 'debian.img'), fresh: hfkFresh(), stop: hfkStop },
    { name: 'rclone mount --vfs-cache-mode full', img: join(rcMnt, 'debian.img'), fresh: rcFresh, stop: rcStop },
    { name: 'local file', img: image, fresh: () => {}, stop: () => {} },
    { name: 'hfk mount, published with --block-size 128K', img: join(hfkMnt, 'debian.img'), fresh: hfkFresh('store128/'), stop: hfkStop },
  ];
  // Figures on this VM spread widely run to run: each method runs `runs`
  // times, taking turns in an order that turns each round; the median counts.
  const all = methods.map((): Figures[] => []);
  try {
    for (let i = 0; i < runs; i++) {
      for (const k of turningOrder(methods.length, i)) {
        const m = methods[k]!;
        try {
          all[k]!.push(measure(m.img, size, m.fresh, dir));
        } finally {
          m.stop();
        }
        process.stderr.write(`run ${i + 1}/${runs} ${m.name}: ${JSON.stringify(round(all[k]!.at(-1)!))}\n`);
      }
    }
  } finally {
    if (isMounted(join(dir, 'root'))) execFileSync('umount', [join(dir, 'root')]);
    if (isMounted(hfkMnt)) execFileSync(NODE, [HFK, 'umount', '--lazy', hfkMnt]);
    rcStop();
    await nginx.stop();
  }
  const medians: Figures[] = [];
  const rows: Record<string, unknown>[] = methods.map((m, k) => {
    const f = all[k]!;
    const med: Figures = {
      ddColdMBps: median(f.map((x) => x.ddColdMBps)),
      ddWarmMBps: median(f.map((x) => x.ddWarmMBps)),
      treeColdS: median(f.map((x) => x.treeColdS)),
      treeWarmS: median(f.map((x) => x.treeWarmS)),
    };
    medians.push(round(med));
    process.stderr.write(`${m.name} (median of ${runs}): ${JSON.stringify(round(med))}\n`);
    return { method: m.name, ...round(med), runs: f.map(round) };
  });
  const [h, r, l, h128] = medians;
  const atLeastRclone = h!.ddColdMBps >= r!.ddColdMBps && h!.ddWarmMBps >= r!.ddWarmMBps && h!.treeColdS <= r!.treeColdS && h!.treeWarmS <= r!.treeWarmS;
  const warmTreeWithin13 = h!.treeWarmS <= 1.3 * l!.treeWarmS;
  const pass = atLeastRclone && warmTreeWithin13;
  const result: BenchResult = {
    name: 'mount',
    command: `node bench/mount.ts --runs ${runs}`,
    summary: { imageBytes: size, hfk: h, rclone: r, local: l, hfk128KBlocks: h128, warmTreeVsLocal: Number((h!.treeWarmS / l!.treeWarmS).toFixed(2)), targets: { hfkAtLeastRcloneEverywhere: atLeastRclone, warmTreeWithin13xLocal: warmTreeWithin13 } },
    pass,
    rows,
  };
  saveResult(result);
  return result;
}

function round(f: Figures): Figures {
  return { ddColdMBps: Math.round(f.ddColdMBps), ddWarmMBps: Math.round(f.ddWarmMBps), treeColdS: Number(f.treeColdS.toFixed(2)), treeWarmS: Number(f.treeWarmS.toFixed(2)) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { runs: { type: 'string' } } });
  const r = await benchMount(Number(values.runs ?? 3));
  console.log(JSON.stringify(r, null, 2));
}
