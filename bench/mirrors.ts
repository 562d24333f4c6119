// Benchmark: mirror choice. 20 local mirrors behind the userspace link
// emulator, each with its own round trip (5-300 ms) and bandwidth (2-100
// Mbit/s), one of them a decoy that answers at once but serves at 1 Mbit/s.
// Over 20 trials (new random links each time): how often `hfk mirrors rank`
// puts the truly fastest mirror first, and how long ranking takes. Debian's
// netselect is run on the same 20 hosts for comparison.
//
//   node bench/mirrors.ts [--trials 20] [--store DIR --name NAME]

import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { decodeManifest } from '../src/format/manifest.ts';
import { manifestPath } from '../src/format/layout.ts';
import { decodePointer } from '../src/format/manifest.ts';
import { pointerPath } from '../src/format/layout.ts';
import { HFK, NODE, REPO } from '../test/helpers/cli.ts';
import { startNginx } from '../test/helpers/mirrors.ts';
import { benchStore, type BenchResult, saveResult, workDir } from './common.ts';

const run = promisify(execFile);

interface Link {
  ip: string;
  rttMs: number;
  mbit: number;
  firstMs: number;
  decoy: boolean;
}

/** Small seeded generator, so a run can be repeated. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Expected ms to fetch one object of `bytes` over a link: what "fastest" means. */
export function linkCost(l: Link, bytes: number): number {
  return l.rttMs + l.firstMs + (bytes * 8) / (l.mbit * 1000); // request up, answer down, body through the pipe
}

function makeLinks(r: () => number, n: number, bytes: number): Link[] {
  for (;;) {
    const links: Link[] = Array.from({ length: n }, (_, i) => ({
      ip: `127.0.0.${i + 2}`,
      rttMs: Math.round(5 + r() * 295),
      mbit: Math.round(2 + r() * 98),
      firstMs: 0,
      decoy: false,
    }));
    // The decoy: the shortest round trip of all, but a thin pipe.
    const d = links[Math.floor(r() * n)]!;
    Object.assign(d, { rttMs: 2, mbit: 1, decoy: true });
    const costs = links.map((l) => linkCost(l, bytes)).sort((a, b) => a - b);
    // A clear winner (10% ahead), so "the fastest" is well defined.
    if (costs[1]! > costs[0]! * 1.1) return links;
  }
}

export async function benchMirrors(trials = 20, seed = 42): Promise<BenchResult> {
  const dir = workDir('mirrors');
  const { store, name, pub } = await benchStore();
  const nginx = await startNginx(store, dir);
  const pointer = decodePointer(readFileSync(join(store, pointerPath(name))));
  const manifest = decodeManifest(readFileSync(join(store, manifestPath(name, pointer.version))), null);
  const sizes = [...manifest.objectSizes.values()].sort((a, b) => a - b);
  const typical = sizes[sizes.length >> 1]!;
  const r = rng(seed);
  const rows: { trial: number; best: string; picked: string; ok: boolean; rankMs: number; netselect: string | null; netselectOk: boolean; measured: unknown[] }[] = [];
  try {
    for (let t = 1; t <= trials; t++) {
      const links = makeLinks(r, 20, typical);
      const best = [...links].sort((a, b) => linkCost(a, typical) - linkCost(b, typical))[0]!;
      const maps = links.flatMap((l) => ['--map', `${l.ip}:8000=127.0.0.1:${nginx.port},rtt=${l.rttMs},rate=${l.mbit}mbit,first=${l.firstMs}`]);
      const emu = spawn(NODE, [join(REPO, 'bench/linkemu.ts'), ...maps], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        emu.stdout!.once('data', () => resolve());
        emu.once('exit', (c) => reject(new Error(`link emulator exited ${c}`)));
      });
      try {
        const urls = links.map((l) => `http://${l.ip}:8000/`);
        const out = await run(NODE, [HFK, 'mirrors', 'rank', ...urls, '--name', name, '--key', pub, '--json'], { maxBuffer: 16 << 20 });
        const ranking = JSON.parse(out.stdout) as { ms: number; mirrors: { url: string; ttfbMs: number | null; blockMs: number | null; score: number; partial: boolean }[] };
        const picked = new URL(ranking.mirrors[0]!.url).hostname;
        // What hfk measured of the fastest mirror and of its pick, next to the truth.
        const seen = (ip: string) => {
          const l = links.find((x) => x.ip === ip)!;
          const m = ranking.mirrors.find((x) => new URL(x.url).hostname === ip);
          return { ip, rttMs: l.rttMs, mbit: l.mbit, costMs: Number(linkCost(l, typical).toFixed(1)), ttfbMs: m?.ttfbMs ?? null, blockMs: m?.blockMs ?? null, score: m?.score ?? null, partial: m?.partial ?? null, rank: ranking.mirrors.findIndex((x) => new URL(x.url).hostname === ip) + 1 };
        };
        let ns: string | null = null;
        try {
          const o = await run('netselect', ['-s', '1', ...links.map((l) => l.ip)], { timeout: 60_000 });
          ns = o.stdout.trim().split(/\s+/)[1] ?? null;
        } catch {
          ns = null;
        }
        rows.push({ trial: t, best: best.ip, picked, ok: picked === best.ip, rankMs: Math.round(ranking.ms), netselect: ns, netselectOk: ns === best.ip, measured: picked === best.ip ? [seen(best.ip)] : [seen(best.ip), seen(picked)] });
        process.stderr.write(`trial ${t}: fastest ${best.ip} (rtt ${best.rttMs} ms, ${best.mbit} Mbit/s), hfk picked ${picked} in ${Math.round(ranking.ms)} ms${picked === best.ip ? '' : ' (MISS)'}, netselect picked ${ns}\n`);
      } finally {
        emu.kill('SIGTERM');
        await new Promise((res) => emu.once('exit', res));
      }
    }
  } finally {
    await nginx.stop();
  }
  const hits = rows.filter((x) => x.ok).length;
  const times = rows.map((x) => x.rankMs).sort((a, b) => a - b);
  const nsHits = rows.filter((x) => x.netselectOk).length;
  const summary = {
    trials,
    typicalObjectBytes: typical,
    hfkPickedFastest: hits,
    hfkPickedFastestPct: Math.round((100 * hits) / trials),
    rankMsMedian: times[times.length >> 1]!,
    rankMsMax: times[times.length - 1]!,
    netselectPickedFastest: nsHits,
    targets: { pickedFastestPct: 95, rankMsMax: 1500 },
  };
  const result: BenchResult = {
    name: 'mirrors',
    command: 'node bench/mirrors.ts',
    summary,
    pass: summary.hfkPickedFastestPct >= 95 && summary.rankMsMax <= 1500,
    rows,
  };
  saveResult(result);
  return result;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { trials: { type: 'string' }, seed: { type: 'string' } } });
  const res = await benchMirrors(Number(values.trials ?? 20), Number(values.seed ?? 42));
  console.log(JSON.stringify(res.summary, null, 2));
}
