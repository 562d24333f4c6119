// The mount bench's cold dd alone, for comparing settings of the reader: the
// same image and nginx as bench/mount.ts, a fresh `hfk mount` for every run
// and the dd timed as there (dirty pages written back, the image evicted first),
// configurations taking turns. Per configuration: the median of the dd's
// MB/s, of the reader's CPU time (ticks of 10 ms, user + system, from
// /proc/PID/stat; split by thread: the main thread, V8's helper threads, the
// worker threads) and of its minor page faults during the dd. On this VM the
// MB/s spread widely from one minute to the next; the reader's CPU and page
// faults show what a setting changes with much less noise. The CPU counts
// the reader and, where hfk mount runs one, its keeper ('keeper').
//
//   node bench/cold-read.ts [--runs 12] [--json] [CONFIG ...]
//
// A CONFIG is a quoted list of VAR=value (the environment of `hfk mount` and
// so of its reader), nginx:NAME=VALUE (a directive of the mirror's server
// block; such configurations get an nginx of their own) and --options of
// `hfk mount`; '' is the defaults. E.g.
//   node bench/cold-read.ts '' 'NODE_OPTIONS=--max-semi-space-size=0'
//   node bench/cold-read.ts '' '--verify-threads 2'
//   node bench/cold-read.ts '' 'nginx:tcp_nopush=on'
// Besides the reader's figures, the machine's idle time during the dd (both
// cores, ticks of 10 ms from /proc/stat): time in which nothing was ready to
// run, a reader waiting on the network, say.
// HFK_BUNDLE=FILE in a CONFIG runs that build of hfk instead of dist/hfk.mjs
// (a copy of it from before a change, say):
//   node bench/cold-read.ts '' 'HFK_BUNDLE=/tmp/hfk-before.mjs'
// This is a tool for experiments: `npm run bench` does not run it.

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { HFK, NODE } from '../test/helpers/cli.ts';
import { startNginx } from '../test/helpers/mirrors.ts';
import { benchStore, median, turningOrder, workDir } from './common.ts';
import { isMounted, timed } from './mount.ts';

const THREAD_KINDS = ['main', 'v8', 'workers', 'other', 'keeper'] as const;

interface Run {
  mbps: number;
  cpuTicks: number;
  /** Idle ticks of all CPUs together during the dd. */
  idleTicks: number;
  minorFaults: number;
  /** cpuTicks by thread: main, v8 (V8's helpers), workers (verify, /dev/fuse reader), other. */
  threads: Record<string, number>;
}

/** A CONFIG's environment, nginx directives and `hfk mount` options. */
export function parseConfig(config: string): { env: Record<string, string>; nginx: Record<string, string>; options: string[] } {
  const env: Record<string, string> = {};
  const nginx: Record<string, string> = {};
  const options: string[] = [];
  for (const t of config.split(/\s+/).filter(Boolean)) {
    const d = /^nginx:([a-z_]+)=(.+)$/.exec(t);
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(t);
    if (d) nginx[d[1]!] = d[2]!;
    else if (t.startsWith('nginx:')) throw new Error(`'${t}': an nginx directive is given as nginx:NAME=VALUE, e.g. nginx:tcp_nopush=on`);
    else if (m) env[m[1]!] = m[2]!;
    else options.push(t);
  }
  return { env, nginx, options };
}

/** Idle and iowait ticks of all CPUs together, from /proc/stat. */
function idleTicks(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  return Number(f[4]) + Number(f[5]);
}

/** User + system CPU ticks and minor faults of a process or thread, from its stat file. */
function statOf(file: string): { ticks: number; minflt: number } {
  const f = readFileSync(file, 'utf8').split(') ')[1]!.split(' ');
  return { ticks: Number(f[11]) + Number(f[12]), minflt: Number(f[7]) };
}

function procStat(pid: number): { ticks: number; minflt: number } {
  return statOf(`/proc/${pid}/stat`);
}

/**
 * CPU ticks of a process's threads by kind: the main thread, V8's helper
 * threads (compilers, garbage collection), worker threads (the verify
 * thread, the /dev/fuse reader) and any others.
 */
function threadTicks(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const kind = comm === 'MainThread' ? 'main' : comm === 'V8Worker' ? 'v8' : comm === 'WorkerThread' ? 'workers' : 'other';
      out[kind] = (out[kind] ?? 0) + statOf(`/proc/${pid}/task/${tid}/stat`).ticks;
    } catch {
      // the thread ended
    }
  }
  return out;
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: 'string', default: '12' }, json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    process.stdout.write(readFileSync(new URL(import.meta.url), 'utf8').split('\n\n')[0]!.replace(/^\/\/ ?/gm, '') + '\n');
    return;
  }
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs must be a whole number of at least 1, not '${values.runs}'`);
  const configs = positionals.length ? positionals : [''];
  const { store, image, pub } = await benchStore();
  const size = statSync(image).size;
  const dir = workDir('cold-read');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'www'), { recursive: true });
  symlinkSync(store, join(dir, 'www', 'store'));
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  // One nginx per set of directives (the file's own for most).
  const parsed = configs.map(parseConfig);
  const servers = new Map<string, Awaited<ReturnType<typeof startNginx>>>();
  for (const p of parsed) {
    const key = JSON.stringify(p.nginx);
    if (!servers.has(key)) servers.set(key, await startNginx(join(dir, 'www'), join(dir, `nginx-${servers.size}`), undefined, undefined, p.nginx));
  }
  spawnSync('sh', ['-c', `find ${store}/ -type f -exec cat {} + > /dev/null`]); // a warmed-up mirror, as in bench/mount.ts
  const mounted = () => isMounted(mnt);
  const results = configs.map((): Run[] => []);
  try {
    for (let round = 0; round < runs; round++) {
      for (const k of turningOrder(configs.length, round)) {
        const { env, nginx, options } = parsed[k]!;
        const server = servers.get(JSON.stringify(nginx))!;
        const bundle = env.HFK_BUNDLE ?? HFK;
        if (mounted()) execFileSync(NODE, [bundle, 'umount', mnt]);
        const out = execFileSync(NODE, [bundle, 'mount', mnt, '--name', 'debian', '--mirrors', `${server.url}store/`, '--key', pub, '--memory', '512M', '--log', join(dir, 'hfk.log'), '--json', ...options], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'ignore'] }).toString();
        // The pid hfk mount reports holds the mount; the reader that serves it is stats.json's pid (the same process before hfk had a keeper).
        const keeper = (JSON.parse(out) as { pid: number }).pid;
        const pid = (JSON.parse(readFileSync(join(mnt, '.hfk/stats.json'), 'utf8')) as { pid: number }).pid;
        let i0 = 0;
        const img = join(mnt, 'debian.img');
        const k0 = keeper === pid ? 0 : procStat(keeper).ticks;
        const s0 = procStat(pid);
        const t0 = threadTicks(pid);
        const s = timed(`dd if=${img} of=/dev/null bs=1M status=none`, img, () => (i0 = idleTicks())); // as bench/mount.ts times it
        const i1 = idleTicks();
        const k1 = keeper === pid ? 0 : procStat(keeper).ticks;
        const s1 = procStat(pid);
        const t1 = threadTicks(pid);
        const threads = Object.fromEntries(Object.keys(t1).map((kind) => [kind, t1[kind]! - (t0[kind] ?? 0)]));
        threads.keeper = k1 - k0;
        results[k]!.push({ mbps: Math.round(size / s / 1e6), cpuTicks: s1.ticks - s0.ticks + (k1 - k0), idleTicks: i1 - i0, minorFaults: s1.minflt - s0.minflt, threads });
        process.stderr.write(`round ${round + 1}/${runs} ${JSON.stringify(configs[k])}: ${results[k]!.at(-1)!.mbps} MB/s\n`);
      }
    }
  } finally {
    if (mounted()) execFileSync(NODE, [HFK, 'umount', mnt]);
    for (const n of servers.values()) await n.stop();
  }
  const summary = configs.map((c, k) => ({
    config: c,
    mbps: median(results[k]!.map((r) => r.mbps)),
    cpuTicks: median(results[k]!.map((r) => r.cpuTicks)),
    idleTicks: median(results[k]!.map((r) => r.idleTicks)),
    minorFaults: median(results[k]!.map((r) => r.minorFaults)),
    threads: Object.fromEntries(THREAD_KINDS.map((kind) => [kind, median(results[k]!.map((r) => r.threads[kind] ?? 0))])),
    runs: results[k]!,
  }));
  if (values.json) process.stdout.write(`${JSON.stringify({ imageBytes: size, runs, configs: summary })}\n`);
  else {
    process.stdout.write(`cold dd of ${size} bytes, medians of ${runs} runs each\n`);
    for (const r of summary) {
      const threads = THREAD_KINDS.map((kind) => `${kind} ${r.threads[kind]}`).join(', ');
      process.stdout.write(`  ${(r.config || '(defaults)').padEnd(48)} ${String(r.mbps).padStart(5)} MB/s  ${String(r.cpuTicks).padStart(4)} ticks (${threads})  ${String(r.minorFaults).padStart(6)} faults  ${String(r.idleTicks).padStart(3)} idle   [${r.runs.map((x) => x.mbps).join(' ')}]\n`);
    }
  }
}

await main();
