// Benchmark: a soak. One `hfk mount` (hard mode, a disk cache in a temp
// folder, caches held small so reads keep reaching the mirrors) of a squashfs
// of ~210 MB of generated files, loop-mounted read-only and read by 8
// concurrent readers for 10 minutes, while:
//   - the three mirrors' faults rotate every 20 s (one mirror is good at any
//     time; each of the others steps through corrupt, cut, stall, 500, reset,
//     slow, 404);
//   - the mount's reader process is killed (kill -9) every 60 s, so its
//     keeper starts another that takes the unanswered requests over;
//   - the page cache is dropped after every reader's pass, so reads go
//     through FUSE again.
// Six readers sha256sum shuffled lists of whole files; two read random
// ranges and compare them with the source tree. Every read is checked: a
// failed read (EIO, …) is an I/O error, a mismatch wrong bytes. The RSS of
// the keeper and of the current reader is sampled every 5 s.
//
//   node bench/soak.ts [--minutes 10]      (npm run bench -- soak: 10 minutes)
//
// The mirrors live in this process: nothing here may make a blocking syscall
// against the mount (it would stop the mirrors the mount is waiting for).

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEFAULT_BLOCK_SIZE, DEFAULT_LEVEL } from '../src/format/codec.ts';
import { MANIFEST_FORMAT_VERSION } from '../src/format/manifest.ts';
import { hfk, hfkJson, NODE } from '../test/helpers/cli.ts';
import { makeTree, mksquashfs, pseudoRandom, snapshotTree } from '../test/helpers/images.ts';
import { type Fault, type FaultyMirror, startFaultyMirror } from '../test/helpers/mirrors.ts';
import { type BenchResult, saveResult, workDir } from './common.ts';

const READERS = 8;
const RANGE_READERS = 2;
const ROTATE_MS = 20_000;
const KILL_MS = 60_000;
const SAMPLE_MS = 5_000;
/** No read finished for this long: a hang, and the soak stops. */
const HANG_MS = 120_000;
/** A whole-file reader's pass: shuffled files up to this many bytes, then the page cache is dropped. */
const PASS_BYTES = 48 << 20;
const FAULTS: Fault[] = [{ kind: 'corrupt' }, { kind: 'cut' }, { kind: 'stall' }, { kind: '500' }, { kind: 'reset' }, { kind: 'slow', delayMs: 300 }, { kind: '404' }];
const TREE_TAG = `soak-tree-1:m${MANIFEST_FORMAT_VERSION}:zstd-${DEFAULT_LEVEL.zstd}:bs${DEFAULT_BLOCK_SIZE}`;

interface SourceFile {
  path: string;
  size: number;
  sha256: string;
}

interface Sample {
  t: number;
  keeperKB: number;
  readerPid: number;
  readerKB: number;
  generation: number;
}

const run = (cmd: string, args: string[]) =>
  new Promise<string>((resolve, reject) => execFile(cmd, args, { maxBuffer: 64 << 20 }, (e, out, err) => (e ? reject(new Error(`${cmd} ${args.join(' ')}: ${err || e.message}`)) : resolve(out))));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function isMounted(p: string): boolean {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === p);
}

/** VmRSS (or VmHWM, the peak) of a process in KiB (0 if it is gone). */
function rssKB(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  try {
    return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * The source tree (makeTree, 160 MiB of big pseudo-random files and 300
 * middle-sized ones, half random, half hex text), its squashfs published
 * into a store; built once and kept in the bench's work folder.
 */
async function soakStore(dir: string): Promise<{ tree: string; store: string; pub: string; files: SourceFile[] }> {
  const tree = join(dir, 'tree');
  const store = join(dir, 'store');
  const tag = join(dir, 'built');
  if (!fs.existsSync(tag) || fs.readFileSync(tag, 'utf8') !== TREE_TAG) {
    process.stderr.write('soak: generating the tree and publishing it\n');
    for (const d of [tree, store, tag]) fs.rmSync(d, { recursive: true, force: true });
    makeTree(tree, 21);
    fs.mkdirSync(join(tree, 'big'));
    for (let i = 0; i < 20; i++) fs.writeFileSync(join(tree, `big/b${i}.bin`), pseudoRandom(8 << 20, 1000 + i));
    fs.mkdirSync(join(tree, 'mid'));
    for (let i = 0; i < 300; i++) {
      const n = 1000 + ((i * 7919) % 300) * 1000;
      const data = pseudoRandom(n, 5000 + i);
      fs.writeFileSync(join(tree, `mid/m${i}`), i % 2 ? data : Buffer.from(data.toString('hex').slice(0, n)));
    }
    const img = mksquashfs(tree, join(dir, 'soak.sqfs'), ['-noI', '-noD', '-noF', '-noX']);
    await hfk(['keygen', '--out', join(dir, 'k'), '--force']);
    await hfkJson(['publish', img, '--store', store, '--name', 'soak', '--key', join(dir, 'k.key')]);
    fs.rmSync(img);
    fs.writeFileSync(tag, TREE_TAG);
  }
  const files: SourceFile[] = [];
  for (const [p, e] of snapshotTree(tree)) if (e.type === 'file') files.push({ path: p, size: fs.statSync(join(tree, p)).size, sha256: e.sha256! });
  return { tree, store, pub: join(dir, 'k.pub'), files };
}

function shuffled<T>(xs: T[]): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

export async function benchSoak(minutes = 10): Promise<BenchResult> {
  const durationMs = Math.round(minutes * 60_000);
  const work = workDir('soak');
  const src = await soakStore(work);
  const byPath = new Map(src.files.map((f) => [f.path, f]));
  const treeBytes = src.files.reduce((s, f) => s + f.size, 0);
  const tmp = fs.mkdtempSync(join(tmpdir(), 'hfk-soak-'));
  const fuse = join(tmp, 'fuse');
  const root = join(tmp, 'root');
  fs.mkdirSync(fuse);
  fs.mkdirSync(root);
  const log = join(work, 'keeper.log');
  fs.rmSync(log, { force: true });
  const listFile = join(tmp, 'files.json');
  fs.writeFileSync(listFile, JSON.stringify(src.files.filter((f) => f.size > 0).map((f) => ({ path: f.path, size: f.size }))));

  const mirrors: FaultyMirror[] = [];
  const children = new Set<ChildProcess>();
  const timers: NodeJS.Timeout[] = [];
  let keeper = 0;
  let stopped = false;
  const stopReaders = async () => {
    stopped = true;
    for (const t of timers) clearInterval(t);
    const exits = [...children].map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('close', r))));
    for (const c of children) c.kill('SIGKILL');
    await Promise.race([Promise.all(exits), sleep(10_000)]);
  };
  let cleaned: Promise<void> | undefined;
  const cleanup = () =>
    (cleaned ??= (async () => {
      await stopReaders();
      try {
        if (isMounted(root)) await run('umount', [root]).catch(() => run('umount', ['-l', root]));
        if (isMounted(fuse)) await hfk(['umount', fuse]).then((r) => (r.code === 0 ? undefined : hfk(['umount', '--lazy', fuse])));
        for (let i = 0; keeper && i < 100 && fs.existsSync(`/proc/${keeper}`); i++) await sleep(100);
        if (keeper && fs.existsSync(`/proc/${keeper}`)) process.kill(keeper, 'SIGKILL');
      } finally {
        await Promise.all(mirrors.map((m) => m.stop()));
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    })());
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`soak: ${sig}: cleaning up\n`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const t0 = { at: 0 };
  const now = () => (Date.now() - t0.at) / 1000;
  const events: { t: number; what: string }[] = [];
  const event = (what: string) => {
    events.push({ t: Math.round(now()), what });
    process.stderr.write(`soak ${now().toFixed(0).padStart(4)} s: ${what}\n`);
  };
  const tally = { reads: 0, bytes: 0, wrong: 0, ioErrors: 0, lastReadAt: 0, longestGapMs: 0, longestGapEndedAt: 0, slowestRangeReadMs: 0 };
  const failures: string[] = [];
  const readDone = (bytes: number) => {
    const at = Date.now();
    if (at - tally.lastReadAt > tally.longestGapMs) {
      tally.longestGapMs = at - tally.lastReadAt;
      tally.longestGapEndedAt = now();
    }
    tally.lastReadAt = at;
    tally.reads++;
    tally.bytes += bytes;
  };
  const fail = (kind: 'wrong' | 'io', what: string) => {
    if (kind === 'wrong') tally.wrong++;
    else tally.ioErrors++;
    if (failures.length < 50) failures.push(`${now().toFixed(0)} s: ${what}`);
    event(`${kind === 'wrong' ? 'WRONG BYTES' : 'I/O ERROR'}: ${what}`);
  };

  try {
    for (let i = 0; i < 3; i++) mirrors.push(await startFaultyMirror(src.store));
    const cache = join(tmp, 'cache');
    const mounted = await hfkJson<{ pid: number }>(['mount', fuse, '--name', 'soak', '--mirrors', mirrors.map((m) => m.url).join(','), '--key', src.pub, '--cache', cache, '--cache-size', '32M', '--memory', '16M', '--log', log]);
    keeper = mounted.pid;
    await run('mount', ['-o', 'loop,ro', join(fuse, 'soak.img'), root]);
    const loopDev = (await run('findmnt', ['-n', '-o', 'SOURCE', root])).trim().replace('/dev/', '');
    const dmesgBefore = (await run('dmesg', [])).split('\n').length;

    // stats.json through the mount, asynchronously (it waits while a new reader takes over), and to
    // its end: its size as stat() reports it is a fresh rendering, which may be shorter than the one read.
    const statsOnce = async () => {
      const read = (async () => {
        let text = '';
        for await (const chunk of fs.createReadStream(join(fuse, '.hfk/stats.json'), 'utf8')) text += chunk as string;
        return JSON.parse(text) as { pid: number; keeper: { pid: number; generation: number } };
      })();
      const r = await Promise.race([read, sleep(30_000).then(() => undefined)]);
      if (!r) throw new Error(`${fuse}/.hfk/stats.json did not answer within 30 s`);
      return r;
    };
    // A handle opened on a reader that then died is unknown to the next one (EBADF): open it again.
    const stats = async () => {
      for (let i = 0; ; i++) {
        try {
          return await statsOnce();
        } catch (e) {
          if (i >= 2 || (e as NodeJS.ErrnoException).code !== 'EBADF') throw e;
        }
      }
    };
    const samples: Sample[] = [];
    let readerPeakKB = 0;
    const sample = async (): Promise<Sample> => {
      const s = await stats();
      const x = { t: Math.round(now()), keeperKB: rssKB(keeper), readerPid: s.pid, readerKB: rssKB(s.pid), generation: s.keeper.generation };
      if (x.readerKB > 0) samples.push(x); // else the reader died between stats.json and /proc
      readerPeakKB = Math.max(readerPeakKB, rssKB(s.pid, 'VmHWM'));
      return x;
    };

    t0.at = Date.now();
    tally.lastReadAt = t0.at;
    const deadline = t0.at + durationMs;
    let hang = false;

    // Faults: every ROTATE_MS one mirror (in turn) is good, the other two take their next fault.
    const next = [0, 2, 4];
    let step = 0;
    const rotate = () => {
      const good = step++ % mirrors.length;
      mirrors.forEach((m, i) => {
        m.paths.length = 0; // the helper keeps every path asked for; not needed here
        m.fault = i === good ? { kind: 'ok' } : FAULTS[next[i]!++ % FAULTS.length]!;
      });
      event(`faults: ${mirrors.map((m) => m.fault.kind).join(', ')}`);
    };
    rotate();
    timers.push(setInterval(rotate, ROTATE_MS));

    // The page cache, dropped after each pass (at most every 2 s).
    let droppedAt = 0;
    const dropCaches = async () => {
      if (Date.now() - droppedAt < 2000) return;
      droppedAt = Date.now();
      await fs.promises.writeFile('/proc/sys/vm/drop_caches', '3\n');
    };

    const wholeFileReader = async (id: number) => {
      while (!stopped && Date.now() < deadline) {
        const list: string[] = [];
        let bytes = 0;
        for (const f of shuffled(src.files)) {
          if (bytes >= PASS_BYTES) break;
          list.push(f.path);
          bytes += f.size;
        }
        const c = spawn('stdbuf', ['-oL', 'sha256sum', '--', ...list], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
        children.add(c);
        createInterface({ input: c.stdout! }).on('line', (line) => {
          const m = /^([0-9a-f]{64}) [ *](.*)$/.exec(line);
          const f = m && byPath.get(m[2]!);
          if (!m || !f) return void (stopped || fail('wrong', `reader ${id}: unexpected output '${line}'`)); // a line cut by the kill at the end
          if (m[1] !== f.sha256) return fail('wrong', `reader ${id}: ${f.path}: sha256 ${m[1]}, want ${f.sha256}`);
          readDone(f.size);
        });
        createInterface({ input: c.stderr! }).on('line', (line) => {
          if (!stopped) fail('io', `reader ${id}: ${line}`);
        });
        await new Promise((r) => c.once('close', r));
        children.delete(c);
        if (!stopped) await dropCaches();
      }
    };

    const rangeReader = async (id: number) => {
      const c = spawn(NODE, [fileURLToPath(import.meta.url), '--range-reader', root, src.tree, listFile, String(deadline)], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(c);
      createInterface({ input: c.stdout! }).on('line', (line) => {
        let r: { f: string; o: number; n: number; ms: number; ok?: boolean; e?: string };
        try {
          r = JSON.parse(line) as typeof r;
        } catch {
          return void (stopped || fail('wrong', `range reader ${id}: unexpected output '${line}'`));
        }
        if (r.e) return fail('io', `range reader ${id}: ${r.f} at ${r.o} (+${r.n}): ${r.e}`);
        if (!r.ok) return fail('wrong', `range reader ${id}: ${r.f} at ${r.o} (+${r.n}) differs from the source`);
        tally.slowestRangeReadMs = Math.max(tally.slowestRangeReadMs, r.ms);
        readDone(r.n);
      });
      createInterface({ input: c.stderr! }).on('line', (line) => {
        if (!stopped) fail('io', `range reader ${id}: ${line}`);
      });
      await new Promise((r) => c.once('close', r));
      children.delete(c);
    };

    // Every KILL_MS: a sample (the reader is then always about KILL_MS old), then kill -9 of the reader.
    const beforeKills: Sample[] = [];
    const killReader = async () => {
      if (stopped || Date.now() > deadline - KILL_MS / 2) return;
      const s = await sample();
      beforeKills.push(s);
      if (s.readerPid === keeper) throw new Error(`stats.json names the keeper (${keeper}) as the reader`);
      process.kill(s.readerPid, 'SIGKILL');
      event(`kill -9 reader ${s.readerPid} (generation ${s.generation}; keeper ${(s.keeperKB / 1024).toFixed(1)} MB, reader ${(s.readerKB / 1024).toFixed(1)} MB)`);
    };
    timers.push(setInterval(() => void killReader().catch((e: Error) => event(`kill failed: ${e.message}`)), KILL_MS));
    timers.push(
      setInterval(() => {
        if (Date.now() - tally.lastReadAt > HANG_MS && !stopped) {
          hang = true;
          event(`HANG: no read finished for ${HANG_MS / 1000} s; stopping (keeper log: ${log})`);
          void stopReaders();
        }
      }, 5000),
    );
    timers.push(
      setInterval(
        () =>
          void sample()
            .then((s) => {
              if (s.t % 20 < 5) event(`${tally.reads} reads, ${(tally.bytes / 1e6).toFixed(0)} MB, ${tally.ioErrors} I/O errors, ${tally.wrong} wrong; keeper ${(s.keeperKB / 1024).toFixed(1)} MB, reader ${(s.readerKB / 1024).toFixed(1)} MB, generation ${s.generation}`);
            })
            .catch((e: Error) => event(`sample failed: ${e.message}`)),
        SAMPLE_MS,
      ),
    );

    const readers = Array.from({ length: READERS }, (_, i) => (i < READERS - RANGE_READERS ? wholeFileReader(i) : rangeReader(i)));
    const ended = new Promise<void>((r) => timers.push(setTimeout(r, durationMs)));
    await Promise.race([ended, new Promise<void>((r) => timers.push(setInterval(() => hang && r(), 1000)))]);
    const last = hang ? undefined : await sample();
    const keeperPeakKB = rssKB(keeper, 'VmHWM');
    await stopReaders();
    await Promise.all(readers);

    const kernel = (await run('dmesg', []))
      .split('\n')
      .slice(dmesgBefore - 1)
      .filter((l) => l.includes(loopDev) || /SQUASHFS error|fuse/i.test(l));
    const keeperLog = fs.readFileSync(log, 'utf8');
    const takeoversLogged = (keeperLog.match(/took over/g) ?? []).length;
    const first = beforeKills[0];
    const mb = (kb: number) => Number((kb / 1024).toFixed(1));
    const peak = (f: (s: Sample) => number) => mb(Math.max(...samples.map(f)));
    const total = (s: Sample | undefined) => (s ? s.keeperKB + s.readerKB : 0);
    const endVsFirst = first && last ? Number((total(last) / total(first)).toFixed(3)) : null;
    const targets = {
      noWrongBytes: tally.wrong === 0,
      noIoErrors: tally.ioErrors === 0 && kernel.length === 0,
      noHang: !hang,
      memoryFlat: endVsFirst !== null && endVsFirst <= 1.1,
    };
    const result: BenchResult = {
      name: 'soak',
      command: `node bench/soak.ts --minutes ${minutes}`,
      summary: {
        minutes,
        readers: READERS,
        treeFiles: src.files.length,
        treeMB: Number((treeBytes / 1e6).toFixed(1)),
        reads: tally.reads,
        bytesReadMB: Math.round(tally.bytes / 1e6),
        wrongBytesReads: tally.wrong,
        ioErrors: tally.ioErrors,
        kernelLogErrors: kernel.length,
        readerKills: beforeKills.length,
        takeovers: last ? last.generation - 1 : null,
        takeoversLogged,
        faultRotations: step,
        longestGapS: Number((tally.longestGapMs / 1000).toFixed(1)),
        longestGapEndedAtS: Math.round(tally.longestGapEndedAt),
        slowestRangeReadS: Number((tally.slowestRangeReadMs / 1000).toFixed(1)),
        rssMB: {
          compared: 'keeper + reader, sampled just before the first kill and at the end, each time with a reader about a minute old',
          keeper: { at1min: first ? mb(first.keeperKB) : null, end: last ? mb(last.keeperKB) : null, peak: mb(keeperPeakKB) },
          reader: { at1min: first ? mb(first.readerKB) : null, end: last ? mb(last.readerKB) : null, peak: mb(readerPeakKB) },
          total: { at1min: first ? mb(total(first)) : null, end: last ? mb(total(last)) : null, peakSampled: peak((s) => s.keeperKB + s.readerKB), endVs1min: endVsFirst },
          totalBeforeEachKillAndAtEnd: [...beforeKills, ...(last ? [last] : [])].map((s) => mb(total(s))),
        },
        mirrorRequests: mirrors.map((m) => m.requests),
        hang,
        targets,
      },
      pass: Object.values(targets).every(Boolean),
      rows: [{ failures }, { kernel }, { events }, { samples }],
    };
    saveResult(result);
    process.stderr.write(`soak: ${JSON.stringify(result.summary)}\nkeeper log: ${log}\n`);
    return result;
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * A range reader (a child process: blocking reads here stop nothing): until
 * the deadline, a random range (up to 1 MiB) of a random file, read through
 * the mount and compared with the source tree; one JSON line per read.
 */
function rangeReaderMain(root: string, tree: string, listFile: string, deadline: number): void {
  const files = JSON.parse(fs.readFileSync(listFile, 'utf8')) as { path: string; size: number }[];
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  while (Date.now() < deadline) {
    const f = files[Math.floor(Math.random() * files.length)]!;
    const o = Math.floor(Math.random() * f.size);
    const n = Math.min(f.size - o, 1 + Math.floor(Math.random() * (1 << 20)));
    const got = Buffer.alloc(n);
    const want = Buffer.alloc(n);
    const t = performance.now();
    let line: Record<string, unknown>;
    try {
      const fd = fs.openSync(join(root, f.path), 'r');
      let off = 0;
      try {
        while (off < n) {
          const k = fs.readSync(fd, got, off, n - off, o + off);
          if (k === 0) break;
          off += k;
        }
      } finally {
        fs.closeSync(fd);
      }
      const ms = performance.now() - t;
      const sfd = fs.openSync(join(tree, f.path), 'r');
      fs.readSync(sfd, want, 0, n, o);
      fs.closeSync(sfd);
      line = { f: f.path, o, n, ms: Math.round(ms), ok: off === n && sha(got) === sha(want) };
    } catch (e) {
      line = { f: f.path, o, n, ms: Math.round(performance.now() - t), e: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
    }
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({ options: { minutes: { type: 'string' }, 'range-reader': { type: 'boolean' } }, allowPositionals: true });
  if (values['range-reader']) {
    const [root, tree, list, deadline] = positionals;
    rangeReaderMain(root!, tree!, list!, Number(deadline));
  } else {
    const r = await benchSoak(Number(values.minutes ?? 10));
    console.log(JSON.stringify(r.summary, null, 2));
  }
}
