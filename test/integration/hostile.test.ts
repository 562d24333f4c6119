// hfk get, the CLI as a user runs it, against a hostile mirror
// (test/helpers/hostile.ts): each misbehaviour alone ends in a one-line
// error naming the mirror within 60 s, and beside a good mirror (nginx)
// yields the exact image; either way the process's peak RSS stays under
// 400 MB. Then a damaged disk cache: only a miss.

import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it, type TestContext } from 'vitest';
import { hfk, hfkJson } from '../helpers/cli.ts';
import {
  forgedManifest,
  hfkMeasured,
  measured,
  type HostileMirror,
  type HostileOptions,
  hijackingPointer,
  MIRROR_LIST_PATH,
  type MeasuredRun,
  startHostileMirror,
  testCertificate,
  unfinishZstd,
} from '../helpers/hostile.ts';
import { loadPublicKey } from '../../src/format/keys.ts';
import { decodeManifest } from '../../src/format/manifest.ts';
import { makeTree, mksquashfs, pseudoRandom } from '../helpers/images.ts';
import { type Server, startNginx } from '../helpers/mirrors.ts';
import { tempDirKeep } from '../helpers/tmp.ts';

const PEAK_RSS_LIMIT = 400 * 1024 * 1024;
const DEADLINE_MS = 60_000;
/** --soft-timeout alone (every mirror fails) and beside a good mirror (which must win long before). */
const SOFT_ALONE = '5';
const SOFT_BESIDE = '20';

let work: string;
let store: string;
let pubFile: string;
let imageSha: string;
let good: Server;
let tlsFiles: { ca: string; cert: string; key: string };
/** The unsigned manifest of the hijacking pointer, made once. */
let forged: Buffer | undefined;

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  work = tempDirKeep('hfk-hostile-');
  const k = await hfk(['keygen', '--out', join(work, 'k')]);
  if (k.code !== 0) throw new Error(`hfk keygen: ${k.stderr}`);
  pubFile = join(work, 'k.pub');
  const tree = join(work, 'tree');
  makeTree(tree, 11);
  const img = mksquashfs(tree, join(work, 'img.sqfs'), ['-noI', '-noD', '-noF', '-noX']);
  store = join(work, 'store');
  await hfkJson(['publish', img, '--store', store, '--name', 't', '--key', join(work, 'k.key'), '--block-size', '16K']);
  imageSha = sha256(readFileSync(img));
  good = await startNginx(store, work);
  tlsFiles = testCertificate(mkdtempSync(join(work, 'tls-')));
});
afterAll(async () => {
  await good?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

type Outcome = 'error' | 'bytes' | 'either';

interface Case {
  name: string;
  hostile: () => HostileOptions;
  /** How the hostile server is used: as a mirror, as the mirror list, or as the proxy for the good mirror. */
  via?: 'mirrors' | 'mirrorlist' | 'proxy';
  alone: Outcome;
  /** Where the hostile mirror is listed beside the good one (none: no beside run). */
  beside: ('first' | 'second')[];
  besideOutcome?: Outcome;
}

const OUTCOME_TEXT: Record<Outcome, string> = { error: 'a clear error', bytes: 'exact bytes', either: 'a clear error or exact bytes' };

const endless = (framing: 'length' | 'close' | 'chunked') => ({ kind: 'endless', framing }) as const;

const CASES: Case[] = [
  { name: 'endless pointer body with a Content-Length', hostile: () => ({ faults: { pointer: endless('length') } }), alone: 'error', beside: ['first'] },
  { name: 'endless manifest body without a Content-Length', hostile: () => ({ faults: { manifest: endless('close') } }), alone: 'error', beside: ['first'] },
  { name: 'endless chunked block bodies', hostile: () => ({ faults: { block: endless('chunked') } }), alone: 'error', beside: ['first'] },
  {
    name: 'endless chunked mirror list',
    hostile: () => ({ faults: { mirrorlist: endless('chunked') } }),
    via: 'mirrorlist',
    alone: 'error',
    beside: ['second'],
    besideOutcome: 'either',
  },
  {
    name: 'mirror list trickled one byte a second',
    hostile: () => ({ faults: { mirrorlist: { kind: 'trickle', part: 'body', everyMs: 1000 } }, mirrorList: `${good.url}\n` }),
    via: 'mirrorlist',
    alone: 'error',
    beside: [],
  },
  { name: 'endless pointer body through --proxy', hostile: () => ({ faults: { pointer: endless('length') } }), via: 'proxy', alone: 'error', beside: [] },
  { name: 'pointer status line trickled (1 byte / 4 s)', hostile: () => ({ faults: { pointer: { kind: 'trickle', part: 'status', everyMs: 4000 } } }), alone: 'error', beside: ['first'] },
  { name: 'manifest headers trickled (1 byte / 2 s)', hostile: () => ({ faults: { manifest: { kind: 'trickle', part: 'headers', everyMs: 2000 } } }), alone: 'error', beside: ['first'] },
  { name: 'block bodies trickled (1 byte / 0.5 s)', hostile: () => ({ faults: { block: { kind: 'trickle', part: 'body', everyMs: 500 } } }), alone: 'error', beside: ['first'] },
  { name: 'endless 100 Continue before the pointer', hostile: () => ({ faults: { pointer: { kind: 'continue' } } }), alone: 'error', beside: ['first'] },
  { name: 'endless 100 Continue before block objects', hostile: () => ({ faults: { block: { kind: 'continue' } } }), alone: 'error', beside: ['first'] },
  { name: 'endless trailers after the manifest', hostile: () => ({ faults: { manifest: { kind: 'trailers' } } }), alone: 'error', beside: ['first'] },
  { name: 'endless trailers after block objects', hostile: () => ({ faults: { block: { kind: 'trailers' } } }), alone: 'error', beside: ['first'] },
  { name: 'block objects declaring 10^14 bytes, sent slowly', hostile: () => ({ faults: { block: { kind: 'huge', everyMs: 200 } } }), alone: 'error', beside: ['first'] },
  { name: 'manifest declaring 10^14 bytes, sent slowly', hostile: () => ({ faults: { manifest: { kind: 'huge', everyMs: 200 } } }), alone: 'error', beside: ['first'] },
  {
    name: 'redirect chain (2 hops) to a good mirror',
    hostile: () => ({ faults: { all: { kind: 'redirect', mode: 'chain', target: good.url, hops: 2 } } }),
    alone: 'bytes',
    beside: ['first'],
  },
  { name: 'redirect loop', hostile: () => ({ faults: { all: { kind: 'redirect', mode: 'loop' } } }), alone: 'error', beside: ['first'] },
  { name: 'redirects without end (too many hops)', hostile: () => ({ faults: { all: { kind: 'redirect', mode: 'endless' } } }), alone: 'error', beside: ['first'] },
  {
    name: 'https mirror redirecting to http (a downgrade)',
    hostile: () => ({ faults: { all: { kind: 'redirect', mode: 'chain', target: good.url, hops: 0 } }, tls: tlsFiles }),
    alone: 'error',
    beside: ['first'],
  },
  { name: '403 for every block object', hostile: () => ({ faults: { block: { kind: 'status', code: 403 } } }), alone: 'error', beside: ['first'] },
  { name: 'unfinished zstd frame in every block object', hostile: () => ({ faults: { block: { kind: 'unfinished-zstd' } } }), alone: 'error', beside: ['first'] },
  {
    name: 'hijacking pointer (v99) with an endless manifest',
    hostile: () => ({ files: { 'images/t/latest.json': hijackingPointer('t', 99, { size: 1 << 30 }) }, faults: { manifest: endless('length') } }),
    alone: 'either',
    beside: ['first', 'second'],
  },
  {
    name: 'hijacking pointer (v99) with an unsigned 58 MB manifest (under the manifest ceiling)',
    hostile: () => {
      forged ??= forgedManifest('t', 99, 800_000, loadPublicKey(pubFile).id);
      return { files: { 'images/t/latest.json': hijackingPointer('t', 99, { bytes: forged, size: forged.length }), 'images/t/v99.hfkm': forged } };
    },
    alone: 'either',
    beside: ['first', 'second'],
  },
];

type Ctx = Pick<TestContext, 'expect' | 'onTestFinished' | 'task'>;

function scratch(ctx: Ctx): string {
  const dir = mkdtempSync(join(tmpdir(), 'hfk-hostile-run-'));
  ctx.onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function hostileFor(ctx: Ctx, c: Case): Promise<{ h: HostileMirror; tls: boolean }> {
  const options = c.hostile();
  const h = await startHostileMirror(store, options);
  ctx.onTestFinished(() => h.stop());
  return { h, tls: options.tls !== undefined };
}

/** The arguments that point hfk get at the hostile server (and the good mirror beside it, if `position`). */
function sources(c: Case, h: HostileMirror, position?: 'first' | 'second'): string[] {
  const via = c.via ?? 'mirrors';
  if (via === 'proxy') return ['--mirrors', good.url, '--proxy', h.url];
  if (via === 'mirrorlist') return [...(position ? ['--mirrors', good.url] : []), '--mirrorlist', `${h.url}${MIRROR_LIST_PATH}`];
  const urls = position === undefined ? [h.url] : position === 'first' ? [h.url, good.url] : [good.url, h.url];
  return ['--mirrors', urls.join(',')];
}

async function get(c: Case, { h, tls }: { h: HostileMirror; tls: boolean }, out: string, soft: string, position?: 'first' | 'second'): Promise<MeasuredRun> {
  const env = tls ? { NODE_EXTRA_CA_CERTS: tlsFiles.ca } : {};
  return hfkMeasured(['get', 't', ...sources(c, h, position), '--key', pubFile, '--out', out, '--quiet', '--soft', '--soft-timeout', soft], {
    env,
    limitMs: DEADLINE_MS + 15_000,
    rssLimitBytes: PEAK_RSS_LIMIT + (200 << 20),
  });
}

/** What the report shows of a run when an assertion fails. */
function about(r: MeasuredRun): string {
  const mb = (r.peakRssBytes / 2 ** 20).toFixed(0);
  return `exit ${r.code}${r.killed ? ` (killed: ${r.killed})` : ''} after ${(r.ms / 1000).toFixed(1)} s, peak RSS ${mb} MB; stderr: ${r.stderr.slice(0, 600)}`;
}

function expectBounded(ctx: Ctx, r: MeasuredRun): void {
  ctx.expect(r.killed, about(r)).toBeUndefined();
  ctx.expect(r.ms, about(r)).toBeLessThan(DEADLINE_MS);
  ctx.expect(r.peakRssBytes, about(r)).toBeLessThan(PEAK_RSS_LIMIT);
  ctx.expect(r.peakRssBytes, 'the peak RSS was measured').toBeGreaterThan(10 * 1024 * 1024);
}

function expectExactBytes(ctx: Ctx, r: MeasuredRun, out: string): void {
  ctx.expect(r.code, about(r)).toBe(0);
  ctx.expect(sha256(readFileSync(out)), 'the image written').toBe(imageSha);
}

/** One line `hfk get: …` that names the hostile server, no stack trace, and no image file left behind. */
function expectClearError(ctx: Ctx, r: MeasuredRun, out: string, names: string[]): void {
  ctx.expect(r.code, about(r)).toBe(1);
  const line = /^hfk get: .*$/m.exec(r.stderr)?.[0];
  ctx.expect(line, about(r)).toBeDefined();
  ctx.expect(line!.length, line).toBeLessThan(500);
  ctx.expect(
    names.some((n) => line!.includes(n)),
    `the error names ${names.join(' or ')}: ${line}`,
  ).toBe(true);
  ctx.expect(r.stderr, 'no stack trace').not.toMatch(/^\s+at .+:\d+:\d+\)?$/m);
  ctx.expect(existsSync(out), 'no image file').toBe(false);
}

function expectOutcome(ctx: Ctx, outcome: Outcome, r: MeasuredRun, out: string, names: string[]): void {
  // One line per run in the log: what hfk said, how long it took, how much memory it held.
  const said = /^hfk get: .*$/m.exec(r.stderr)?.[0] ?? (r.code === 0 ? r.stdout.split('\n')[0] : r.stderr.trim().split('\n').pop());
  console.log(`[hostile] ${ctx.task.name}\n  exit ${r.code}${r.killed ? ` killed (${r.killed})` : ''}, ${(r.ms / 1000).toFixed(1)} s, peak RSS ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MB: ${said}`);
  expectBounded(ctx, r);
  if (outcome === 'bytes' || (outcome === 'either' && r.code === 0)) expectExactBytes(ctx, r, out);
  else expectClearError(ctx, r, out, names);
}

describe.concurrent('a hostile mirror', () => {
  for (const c of CASES) {
    it(`${c.name}: alone, ${OUTCOME_TEXT[c.alone]}, bounded`, async (ctx) => {
      const hostile = await hostileFor(ctx, c);
      const h = hostile.h;
      const out = join(scratch(ctx), 't.img');
      const r = await get(c, hostile, out, SOFT_ALONE);
      const names = c.via === 'proxy' ? [h.hostPort, new URL(good.url).host] : [h.hostPort];
      expectOutcome(ctx, c.alone, r, out, names);
    }, 120_000);
    for (const position of c.beside) {
      it(`${c.name}: listed ${position} beside a good mirror, ${OUTCOME_TEXT[c.besideOutcome ?? 'bytes']}, bounded`, async (ctx) => {
        const hostile = await hostileFor(ctx, c);
        const out = join(scratch(ctx), 't.img');
        const r = await get(c, hostile, out, SOFT_BESIDE, position);
        expectOutcome(ctx, c.besideOutcome ?? 'bytes', r, out, [hostile.h.hostPort]);
      }, 120_000);
    }
  }
});

describe('the hostile mirror itself', () => {
  it('serves the store as it is until told otherwise, and stops with its connections', async ({ expect }) => {
    const h = await startHostileMirror(store, { faults: { block: { kind: 'status', code: 403 } } });
    try {
      const pointer = await fetch(`${h.url}images/t/latest.json`);
      expect(pointer.status).toBe(200);
      expect(Buffer.from(await pointer.arrayBuffer()).equals(readFileSync(join(store, 'images/t/latest.json')))).toBe(true);
      const block = await fetch(`${h.url}blocks/00/${'0'.repeat(64)}`);
      expect(block.status).toBe(403);
      expect(h.paths).toEqual(['images/t/latest.json', `blocks/00/${'0'.repeat(64)}`]);
    } finally {
      await h.stop();
    }
    await expect(fetch(`${h.url}images/t/latest.json`)).rejects.toThrow();
  });

  it('clears the last-block flag of a zstd object and nothing else', ({ expect }) => {
    const objects = blockObjects(store);
    const zstd = objects.map((p) => readFileSync(p)).find((o) => unfinishZstd(o) !== undefined)!;
    expect(zstd, 'the store has zstd objects').toBeDefined();
    const bad = unfinishZstd(zstd)!;
    expect(bad.length).toBe(zstd.length);
    const differing = [...bad.keys()].filter((i) => bad[i] !== zstd[i]);
    expect(differing).toHaveLength(1);
    expect(zstd[differing[0]!]! & 1).toBe(1);
    expect(bad[differing[0]!]! & 1).toBe(0);
    expect(unfinishZstd(Buffer.from([0, 1, 2, 3, 4, 5, 6, 7]))).toBeUndefined();
  });

  it('forges a manifest that only the signature check refuses, and a pointer to it', ({ expect }) => {
    const key = loadPublicKey(pubFile);
    const m = forgedManifest('t', 99, 1000, key.id);
    expect(decodeManifest(m, null, 'forged').blocks).toHaveLength(1000);
    expect(() => decodeManifest(m, key, 'forged')).toThrow(/signature/i);
    const p = JSON.parse(hijackingPointer('t', 99, { bytes: m, size: m.length }).toString());
    expect(p).toMatchObject({ name: 't', version: 99, manifest: 'v99.hfkm', size: m.length, sha256: sha256(m) });
  });

  it('measures the peak RSS of what it runs, and kills it past its memory or time limit', async ({ expect }) => {
    const node = (code: string, options = {}) => measured([process.execPath, '-e', code], options);
    const fifty = await node('const b = Buffer.alloc(80 << 20, 1); setTimeout(() => console.log(b[12345]), 100)');
    expect(fifty.code).toBe(0);
    expect(fifty.killed).toBeUndefined();
    expect(fifty.peakRssBytes).toBeGreaterThan(80 << 20);
    expect(fifty.peakRssBytes).toBeLessThan(PEAK_RSS_LIMIT);
    const greedy = await node('const k = []; setInterval(() => k.push(Buffer.alloc(16 << 20, 1)), 20)', { rssLimitBytes: 200 << 20, limitMs: 30_000 });
    expect(greedy.killed).toBe('memory');
    expect(greedy.peakRssBytes).toBeGreaterThan(200 << 20);
    const stuck = await node('setTimeout(() => {}, 60_000)', { limitMs: 500 });
    expect(stuck.killed).toBe('time');
    expect(stuck.ms).toBeLessThan(20_000);
    const help = await hfkMeasured(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/hfk/);
  }, 60_000);
});

function blockObjects(root: string): string[] {
  const out: string[] = [];
  for (const fan of readdirSync(join(root, 'blocks'))) {
    for (const f of readdirSync(join(root, 'blocks', fan))) if (!f.startsWith('.')) out.push(join(root, 'blocks', fan, f));
  }
  return out.sort();
}

describe('a damaged disk cache', () => {
  it('is only a miss: a 1.5 GB sparse object, garbage, an unfinished zstd frame and an empty file → exact bytes, bounded', async (ctx) => {
    const { expect, onTestFinished } = ctx;
    const dir = mkdtempSync(join(tmpdir(), 'hfk-hostile-cache-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const cache = join(dir, 'cache');
    const args = (out: string) => ['get', 't', '--mirrors', good.url, '--key', pubFile, '--out', out, '--cache', cache, '--json', '--soft', '--soft-timeout', SOFT_BESIDE];
    const first = await hfk(args(join(dir, 'first.img')));
    expect(first.code, first.stderr).toBe(0);

    const objects = blockObjects(cache);
    expect(objects.length).toBeGreaterThan(8);
    const zstdAt = objects.findIndex((p) => unfinishZstd(readFileSync(p)) !== undefined);
    expect(zstdAt, 'a zstd object in the cache').toBeGreaterThanOrEqual(0);
    const unfinished = objects[zstdAt]!;
    const [sparse, garbage, empty] = objects.filter((p) => p !== unfinished);
    truncateSync(sparse!, 1_500_000_000);
    writeFileSync(garbage!, pseudoRandom(5000, 3));
    writeFileSync(empty!, '');
    writeFileSync(unfinished, unfinishZstd(readFileSync(unfinished))!);
    const damaged = new Set([sparse, garbage, empty, unfinished]);
    const intact = new Map(objects.filter((p) => !damaged.has(p)).map((p) => [p, readFileSync(p)]));

    const out = join(dir, 'second.img');
    const r = await hfkMeasured(args(out));
    expectBounded(ctx, r);
    expectExactBytes(ctx, r, out);
    expect(JSON.parse(r.stdout).fetched.diskHits, 'the cache was read').toBeGreaterThan(0);
    // Damaged objects are dropped (or fetched again); the good ones are neither deleted nor changed.
    expect(statSync(sparse!, { throwIfNoEntry: false })?.size ?? 0).toBeLessThan(1 << 20);
    for (const [p, bytes] of intact) expect(readFileSync(p, { flag: 'r' }).equals(bytes), `${p} kept`).toBe(true);
  }, 180_000);
});
