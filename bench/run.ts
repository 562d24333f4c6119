// npm run bench: every benchmark (or the ones named), one after another,
// each writing bench/results/NAME.json; then a summary.
//
//   npm run bench                  all
//   npm run bench -- publish mount only these
//
// Benchmarks measure; they do not pass or fail the build. Each result says
// whether its target was met.

import type { BenchResult } from './common.ts';

const BENCHES: Record<string, () => Promise<BenchResult>> = {
  publish: async () => (await import('./publish.ts')).benchPublish(),
  mirrors: async () => (await import('./mirrors.ts')).benchMirrors(),
  mount: async () => (await import('./mount.ts')).benchMount(),
  boot: async () => (await import('./boot.ts')).benchBoot(),
  soak: async () => (await import('./soak.ts')).benchSoak(),
};

const wanted = process.argv.slice(2).filter((a) => a !== '--');
const names = wanted.length ? wanted : Object.keys(BENCHES);
for (const n of names) {
  if (!BENCHES[n]) {
    process.stderr.write(`unknown benchmark '${n}': choose from ${Object.keys(BENCHES).join(', ')}\n`);
    process.exit(2);
  }
}
const results: BenchResult[] = [];
for (const n of names) {
  process.stderr.write(`\n== benchmark ${n}\n`);
  results.push(await BENCHES[n]!());
}
process.stdout.write('\nsummary\n');
for (const r of results) process.stdout.write(`  ${r.name.padEnd(8)} ${r.pass ? 'target met ' : 'target MISSED'}  ${JSON.stringify(r.summary)}\n`);
