// The fetcher against real local mirrors: nginx, Squid, and mirrors that are
// slow, dead, partial (404), corrupting, cutting responses short, stalling.

import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { AbortedError, BrokenError, MissingError, RollbackError, SignatureError } from '../../src/errors.ts';
import { type BlockFetcher, RECENT_FETCHES } from '../../src/fetch/fetcher.ts';
import { HeapCache, ShmCache } from '../../src/fetch/memcache.ts';
import { makeFetcher } from '../../src/fetch/compose.ts';
import { openImage, openMirrors } from '../../src/fetch/open.ts';
import { rankMirrors } from '../../src/fetch/rank.ts';
import { loadImage, TrustState } from '../../src/fetch/trust.ts';
import { DiskCache } from '../../src/source/diskcache.ts';
import type { Verifier } from '../../src/source/verifier.ts';
import { makeVerifier } from '../../src/source/verifier.ts';
import { generateKeyPair, loadPublicKey, parsePublicKey } from '../../src/format/keys.ts';
import { blockHash, encodeBlock } from '../../src/format/codec.ts';
import { blockPath, manifestPath } from '../../src/format/layout.ts';
import { decodeManifest } from '../../src/format/manifest.ts';
import { hfk, hfkJson, hfkSpawn } from '../helpers/cli.ts';
import { makeTree, mksquashfs, pseudoRandom } from '../helpers/images.ts';
import { countRequests, deadUrl, type FaultyMirror, startFaultyMirror, startNginx, startSquid, withDirectives } from '../helpers/mirrors.ts';
import { tempDir, tempDirKeep } from '../helpers/tmp.ts';

let work: string;
let store: string; // image "t", versions 1 and 2
let storeV1: string; // a stale copy: version 1 only
let image: Buffer; // the bytes of t v2
let pubFile: string;

beforeAll(async () => {
  work = tempDirKeep('hfk-fetch-');
  await hfk(['keygen', '--out', join(work, 'k')]);
  pubFile = join(work, 'k.pub');
  const tree = join(work, 'tree');
  makeTree(tree, 5);
  store = join(work, 'store');
  const pub = (img: string) => hfkJson(['publish', img, '--store', store, '--name', 't', '--key', join(work, 'k.key'), '--block-size', '16K']);
  await pub(mksquashfs(tree, join(work, 'v1.sqfs'), ['-noI', '-noD', '-noF', '-noX']));
  storeV1 = join(work, 'store-v1');
  cpSync(store, storeV1, { recursive: true });
  writeFileSync(join(tree, 'usr/random.bin'), pseudoRandom(1_500_000, 77));
  await pub(mksquashfs(tree, join(work, 'v2.sqfs'), ['-noI', '-noD', '-noF', '-noX']));
  image = readFileSync(join(work, 'v2.sqfs'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

const key = () => loadPublicKey(pubFile);

async function mirror(fault: Parameters<typeof startFaultyMirror>[1] = { kind: 'ok' }, root = store): Promise<FaultyMirror> {
  const m = await startFaultyMirror(root, fault);
  onTestFinished(() => m.stop());
  return m;
}

type FetcherOptions = Partial<Omit<Parameters<typeof makeFetcher>[0], 'mirrors'>>;
type MirrorSet = ReturnType<typeof openMirrors>;

/** Mirrors for `urls` (closed when the test ends); blocks are verified by `verifier` (default: this thread). */
function mirrorsFor(urls: string[], mirrorOptions: NonNullable<Parameters<typeof openMirrors>[1]>['mirrorOptions'] = {}, verifier?: Verifier): MirrorSet {
  const set = openMirrors(urls, { mirrorOptions, ...(verifier ? { verifier } : {}) });
  onTestFinished(() => set.close());
  return set;
}

/**
 * A fetcher over `set`'s mirrors (closed when the test ends). It takes them over: closing it closes
 * them. A verifier in `opts` must be the one the mirrors verify with (mirrorsFor's).
 */
function fetcherOver(set: MirrorSet, manifest: BlockFetcher['manifest'], opts: FetcherOptions = {}): BlockFetcher {
  const f = makeFetcher({ mirrors: set.mirrors, manifest, memory: new HeapCache(64 << 20), ...opts });
  onTestFinished(() => f.close());
  return f;
}

/** A fetcher over `urls` for t's latest version, without ranking (the order given is the order used). */
async function fetcherFor(urls: string[], opts: FetcherOptions = {}, timeouts = { headersTimeoutMs: 2000, bodyTimeoutMs: 1000 }) {
  const set = mirrorsFor(urls, timeouts, opts.verifier);
  const loaded = await loadImage({ name: 't', version: undefined, key: key(), mirrors: set.mirrors, trust: TrustState.memory() });
  const f = fetcherOver(set, loaded.manifest, opts);
  return { set, f };
}

async function readAll(f: BlockFetcher, chunk = 100_000): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let off = 0; off < f.size; off += chunk) parts.push(await f.read(off, chunk));
  return Buffer.concat(parts);
}

describe('ranking (netselect for HTTP)', () => {
  it('puts the fast mirror first, the slow, throttled and stale ones after it, and the dead last', async () => {
    const dir = tempDir();
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const slow = await mirror({ kind: 'slow', delayMs: 150 });
    const decoy = await mirror({ kind: 'throttle', bytesPerSecond: 100_000 }); // accepts at once, serves slowly
    const stale = await mirror({ kind: 'ok' }, storeV1);
    const dead = await deadUrl();
    const set = mirrorsFor([dead, slow.url, decoy.url, stale.url, nginx.url]);
    const r = await rankMirrors(set.mirrors, { name: 't', key: key(), rounds: 3, deadlineMs: 3000 });
    const order = r.mirrors.map((m) => m.url);
    expect(order[0]).toBe(nginx.url);
    expect(new Set(order.slice(1, 3))).toEqual(new Set([slow.url, decoy.url]));
    expect(order.slice(3)).toEqual([stale.url, dead]);
    expect(r.mirrors[0]!.version).toBe(2);
    expect(r.mirrors[3]!.claimed).toBe(1); // its pointer says v1: stale, whether or not its manifest was verified before ranking stopped
    expect(r.mirrors[4]!.score).toBe(Infinity);
    expect(r.mirrors[4]!.error).toMatch(/ECONNREFUSED/);
    const by = (u: string) => r.mirrors.find((m) => m.url === u)!;
    // The slow mirror either answered (after its 150 ms) or was left behind still waiting.
    expect(by(slow.url).ttfbMs ?? Infinity).toBeGreaterThanOrEqual(150);
    // The decoy answers at once; what a block really costs gives it away.
    // (Its block may still be on the way when ranking stops: then its score is an estimate.)
    expect(by(decoy.url).ttfbMs!).toBeLessThan(by(slow.url).ttfbMs ?? Infinity);
    expect(by(decoy.url).score).toBeGreaterThan(by(nginx.url).score);
    expect(by(decoy.url).blockMs ?? Infinity).toBeGreaterThan(50);
  });

  it('hfk mirrors rank prints the table and JSON', async () => {
    const a = await mirror();
    const dead = await deadUrl();
    const t = await hfk(['mirrors', 'rank', a.url, dead, '--name', 't']);
    expect(t.code).toBe(0);
    expect(t.stdout).toMatch(/#\s+mirror\s+connect\s+TTFB\s+block\s+MB\/s\s+ICMP\s+loss\s+score/);
    expect(t.stdout).toMatch(new RegExp(` 1  ${a.url.replace(/[.]/g, '\\.')}`));
    expect(t.stdout).toMatch(/dead/);
    const j = await hfkJson(['mirrors', 'rank', a.url, '--name', 't']);
    expect(j.mirrors[0].url).toBe(a.url);
    expect(j.mirrors[0].icmpMs).toBeNull(); // only with --icmp
    // --icmp: the system ping's round trip, in time for the ranking (it once came after its deadline)
    const icmp = await hfkJson(['mirrors', 'rank', a.url, '--name', 't', '--icmp']);
    expect(icmp.mirrors[0].icmpMs).toBeGreaterThanOrEqual(0);
    const none = await hfk(['mirrors', 'rank', dead, '--name', 't']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no mirror answered for t: all 1 dead/);
    const bad = await hfk(['mirrors', 'rank', 'ftp://x/', '--name', 't']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/mirror URL must be an http:\/\/ or https:\/\/ URL: got 'ftp:\/\/x\/'/);
  });
});

describe('what each failure means', () => {
  it('404 (a partial mirror): tries the next mirror, does not back the mirror off', async () => {
    const partial = await mirror({ kind: '404' });
    const good = await mirror();
    const { set, f } = await fetcherFor([partial.url, good.url], { hedge: false });
    expect((await readAll(f)).equals(image)).toBe(true);
    const p = set.mirrors[0]!.health;
    expect(p.missing).toBeGreaterThan(0);
    expect(p.consecutiveFailures).toBe(0);
    expect(set.mirrors[0]!.isDown()).toBe(false);
  });

  it('corrupt bytes: never handed out, counted against the mirror, fetched elsewhere', async () => {
    const liar = await mirror({ kind: 'corrupt' });
    const good = await mirror();
    const { set, f } = await fetcherFor([liar.url, good.url], { hedge: false });
    expect((await readAll(f)).equals(image)).toBe(true);
    expect(set.mirrors[0]!.health.invalid).toBeGreaterThan(0);
    // With only the liar, soft mode fails with the liar named, and no bytes come out.
    const { f: only } = await fetcherFor([liar.url], { mode: 'soft', softTimeoutMs: 300, hedge: false });
    const h = only.manifest.blocks.find((x) => x !== null)!;
    const i = only.manifest.blocks.indexOf(h);
    await expect(only.getBlock(i)).rejects.toThrow(BrokenError);
    await expect(only.getBlock(i)).rejects.toThrow(new RegExp(`every mirror failed for block ${i}.*content hash|corrupt`));
  });

  it('a response cut short, a stalled response, 5xx, a reset: the mirror is backed off and the next one serves', async () => {
    for (const kind of ['cut', 'stall', '500', 'reset'] as const) {
      const bad = await mirror({ kind: 'ok' });
      const good = await mirror();
      const { set, f } = await fetcherFor([bad.url, good.url], { hedge: false }, { headersTimeoutMs: 1000, bodyTimeoutMs: 300 });
      bad.fault = { kind };
      expect((await readAll(f)).equals(image), kind).toBe(true);
      expect(set.mirrors[0]!.health.failures, kind).toBeGreaterThan(0);
      expect(good.blockRequests, kind).toBeGreaterThan(0);
    }
  });

  it('a dead mirror in the list costs nothing once it is known dead', async () => {
    const good = await mirror();
    const { set, f } = await fetcherFor([await deadUrl(), good.url], { hedge: false });
    expect((await readAll(f)).equals(image)).toBe(true);
    expect(set.mirrors[0]!.isDown()).toBe(true);
    expect(f.stats().failovers).toBeLessThan(5);
  });
});

describe('verification on worker threads', () => {
  // In the heap cache the threads hand blocks back; with the tmpfs cache they decode in place, in shared memory.
  for (const memory of ['heap', 'shm'] as const) {
    it(`gives the exact image through a corrupting and a good mirror (${memory} cache)`, async () => {
      const liar = await mirror({ kind: 'corrupt' });
      const good = await mirror();
      const mem = memory === 'heap' ? new HeapCache(64 << 20) : new ShmCache(64 << 20, 16384, '/dev/shm');
      // Blocks the main thread writes into the memory cache itself (with the tmpfs cache the threads do it).
      let mainWrites = 0;
      const keep = mem.set.bind(mem);
      mem.set = (h: string, d: Buffer) => {
        if (!mem.has(h)) mainWrites++;
        keep(h, d);
      };
      const { set, f } = await fetcherFor([liar.url, good.url], { hedge: false, verifier: makeVerifier(2), memory: mem });
      expect((await readAll(f)).equals(image)).toBe(true);
      expect(set.mirrors[0]!.health.invalid).toBeGreaterThan(0);
      const s = f.stats();
      expect(s.memory.backing).toBe(memory === 'heap' ? 'heap' : '/dev/shm');
      if (memory === 'heap') return expect(s.buffers).toBeNull();
      // In the tmpfs case objects and blocks travel in pooled memory: once all is done, every buffer is back.
      await vi.waitFor(() => expect(f.stats().inFlight).toBe(0));
      await new Promise((r) => setImmediate(r));
      const b = f.stats().buffers!;
      expect(b.madeBytes).toBeGreaterThan(0);
      expect(b.idleBytes).toBe(b.madeBytes);
      expect(mainWrites).toBe(0);
      // What the threads wrote is the image: a second pass comes from the memory cache alone, exact.
      const fetched = f.stats().blocksFetched;
      expect((await readAll(f)).equals(image)).toBe(true);
      expect(f.stats().blocksFetched).toBe(fetched);
    });
  }
});

describe('boot profiles', () => {
  it('a reader records what it reads; published with the image, the next reader fetches it before it is asked', async () => {
    const m = await mirror();
    const { f } = await fetcherFor([m.url], { hedge: false, readaheadBytes: 0 });
    // A "boot": a few scattered reads.
    for (const [off, len] of [[0, 5000], [700_000, 40_000], [100_000, 1]]) await f.read(off, len);
    const profile = f.profile();
    expect(profile.map(([first]) => first)).toEqual([0, Math.floor(700_000 / 16384), Math.floor(100_000 / 16384)]);
    const byBlock = (l: { block: number }[]) => [...l].sort((a, b) => a.block - b.block);
    expect(byBlock(f.stats().recentFetches)).toEqual([0, 6, 42, 43, 44, 45].map((block) => ({ block, why: 'read' })));
    const { set, loaded, m: m2 } = await everyBlockProfiled(profile);
    expect(loaded.manifest.header.profile).toEqual(profile);
    const f2 = fetcherOver(set, loaded.manifest, { hedge: false, readaheadBytes: 0 });
    await f2.prefetchProfile();
    const before = m2.blockRequests;
    const blocks = profile.reduce((n, [, count]) => n + count, 0);
    expect(blocks).toBe(6); // block 0; blocks 42-45 (700000..739999); block 6
    expect(f2.stats().profilePrefetch).toMatchObject({ total: blocks, done: blocks });
    expect(byBlock(f2.stats().recentFetches)).toEqual([0, 6, 42, 43, 44, 45].map((block) => ({ block, why: 'profile' })));
    // The "boot" now finds everything it reads already fetched.
    for (const [off, len] of [[0, 5000], [700_000, 40_000], [100_000, 1]]) expect((await f2.read(off, len)).equals(image.subarray(off, off + len))).toBe(true);
    expect(m2.blockRequests).toBe(before);
    const dir = tempDir();
    const bad = await hfk(['publish', join(work, 'v2.sqfs'), '--store', join(dir, 'store'), '--name', 't', '--key', join(work, 'k.key'), '--profile', join(dir, 'none.json')]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/cannot read boot profile .*none.json/);
  });
});

describe('stats: the last blocks fetched', () => {
  it('says which blocks came from mirrors and what asked for them, the last RECENT_FETCHES of them', async () => {
    const m = await mirror();
    const { f } = await fetcherFor([m.url], { hedge: false, readaheadBytes: 8 * 16384 });
    const hashes = f.manifest.blocks;
    const firsts = firstCopies(hashes);
    expect(firsts.length).toBeGreaterThan(RECENT_FETCHES + 8);
    // Sequential reads of one block each, where every block is new (usr/random.bin): the first are
    // fetched for the reads, then the readahead runs ahead of them.
    const run = newRun(hashes, 24);
    for (let b = run; b < run + 12; b++) await f.read(b * 16384, 16384);
    await vi.waitFor(() => expect(f.stats().inFlight).toBe(0)); // the readahead's last fetches
    const first = f.stats().recentFetches;
    expect(first.length).toBe(f.stats().blocksFetched);
    const fetched = first.map((r) => hashes[r.block]);
    expect(fetched.every((h) => typeof h === 'string')).toBe(true); // never a zero block
    expect(new Set(fetched).size).toBe(first.length); // each content once
    // (listed as they arrive: the readahead that the second read starts may come in before it)
    expect(first[0]).toEqual({ block: run, why: 'read' });
    expect(first.find((r) => r.block === run + 1)).toEqual({ block: run + 1, why: 'read' });
    const ahead = first.filter((r) => r.why === 'readahead').map((r) => r.block);
    expect(ahead.length).toBeGreaterThan(0);
    expect(Math.max(...ahead)).toBeGreaterThan(run + 11); // fetched beyond the last read
    // Far more blocks than the list keeps, no readahead: the newest RECENT_FETCHES, oldest first.
    const { f: g } = await fetcherFor([m.url], { hedge: false, readaheadBytes: 0 });
    for (let b = 0; b < hashes.length; b++) await g.read(b * 16384, 1);
    expect(g.stats().recentFetches).toEqual(firsts.slice(-RECENT_FETCHES).map((block) => ({ block, why: 'read' })));
  });
});

/** Blocks whose content comes first there (later copies and zero blocks are never fetched). */
function firstCopies(hashes: readonly (string | null)[]): number[] {
  return hashes.flatMap((h, i) => (h !== null && hashes.indexOf(h) === i ? [i] : []));
}

/** The first block of `length` blocks in a row whose contents are all new (usr/random.bin). */
function newRun(hashes: readonly (string | null)[], length: number): number {
  const firsts = new Set(firstCopies(hashes));
  const run = [...firsts].find((b) => Array.from({ length }, (_, k) => b + k).every((k) => firsts.has(k)));
  expect(run).toBeDefined();
  return run!;
}

/** The test image published with a boot profile (default: every block), served by a mirror (its blocks verified by `verifier`). */
async function everyBlockProfiled(runs?: [number, number][], verifier?: Verifier): Promise<{ blocks: number; set: MirrorSet; loaded: Awaited<ReturnType<typeof loadImage>>; m: FaultyMirror }> {
  const dir = tempDir();
  const blocks = Math.ceil(image.length / 16384);
  writeFileSync(join(dir, 'stats.json'), JSON.stringify({ profile: runs ?? [[0, blocks]] }));
  const store2 = join(dir, 'store');
  await hfkJson(['publish', join(work, 'v2.sqfs'), '--store', store2, '--name', 't', '--key', join(work, 'k.key'), '--block-size', '16K', '--profile', join(dir, 'stats.json')]);
  const m = await mirror({ kind: 'ok' }, store2);
  const set = mirrorsFor([m.url], {}, verifier);
  const loaded = await loadImage({ name: 't', version: undefined, key: key(), mirrors: set.mirrors, trust: TrustState.memory() });
  return { blocks, set, loaded, m };
}

describe('the gaps of the boot profile (a cache partition)', () => {
  it('fetches the small gaps between profile blocks into the disk cache once; a warm reader neither fetches nor reads them', async () => {
    // Where every block is new (usr/random.bin): profile blocks r, r+1, r+5, r+6, r+30.
    const r = newRun((await fetcherFor([(await mirror()).url])).f.manifest.blocks, 40);
    const { loaded, m } = await everyBlockProfiled([[r, 2], [r + 5, 2], [r + 30, 1]]);
    const dir = tempDir();
    // Each reader has mirrors of its own (a fetcher closes the mirrors it was given).
    const open = async (gapBytes: number) => {
      const disk = await DiskCache.open(join(dir, 'c'), 1 << 30);
      return fetcherOver(mirrorsFor([m.url]), loaded.manifest, { disk, hedge: false, readaheadBytes: 0, profileGapBytes: gapBytes });
    };
    // Gaps of at most 4 blocks: r+2..r+4 (3 blocks) is one, r+7..r+29 (23) is not.
    const fill = await open(4 * 16384);
    await fill.prefetchProfile();
    const got = fill.stats().recentFetches;
    const sortedBlocks = (why: string) => got.filter((x) => x.why === why).map((x) => x.block).sort((a, b) => a - b);
    expect(sortedBlocks('profile')).toEqual([r, r + 1, r + 5, r + 6, r + 30]);
    expect(sortedBlocks('gap')).toEqual([r + 2, r + 3, r + 4]);
    expect(fill.stats().profilePrefetch).toMatchObject({ total: 8, done: 8, fetched: 8 });
    await fill.close();
    // The next reader with the same cache: nothing from the mirror; the profile is read from the disk, the gaps are not.
    const before = m.blockRequests;
    const warm = await open(4 * 16384);
    await warm.prefetchProfile();
    expect(m.blockRequests).toBe(before);
    expect(warm.stats().diskHits).toBe(5);
    expect(warm.stats().profilePrefetch).toMatchObject({ total: 8, done: 8, fetched: 5 });
    for (const b of [r + 2, r + 3, r + 4]) expect((await warm.read(b * 16384, 16384)).equals(image.subarray(b * 16384, (b + 1) * 16384))).toBe(true);
    expect(m.blockRequests).toBe(before); // the gap blocks were on the disk
    // A disk cache too small to hold the profile and its gaps twice over: the profile alone.
    const small = fetcherOver(mirrorsFor([m.url]), loaded.manifest, { disk: await DiskCache.open(join(dir, 'small'), 8 * 16384), hedge: false, readaheadBytes: 0, profileGapBytes: 4 * 16384 });
    await small.prefetchProfile();
    expect(small.stats().profilePrefetch).toMatchObject({ total: 5, done: 5 });
    // Without the option, or without a disk cache, the profile alone.
    const plain = fetcherOver(mirrorsFor([m.url]), loaded.manifest, { hedge: false, readaheadBytes: 0, profileGapBytes: 4 * 16384 });
    await plain.prefetchProfile();
    expect(plain.stats().profilePrefetch).toMatchObject({ total: 5, done: 5 });
    expect(plain.stats().recentFetches.every((x) => x.why === 'profile')).toBe(true);
  });
});

describe('the profile prefetch leaves room for reads', () => {
  it('verifies its blocks one per turn of the event loop, and reads made meanwhile get exact bytes at once', async () => {
    // Count verifications per turn of the event loop (a turn ends at our setImmediate).
    const inline = makeVerifier(0);
    let inTurn = 0;
    let most = 0;
    let verified = 0;
    const verifier = { ...inline, verify: (...a: Parameters<typeof inline.verify>) => (inTurn++, verified++, inline.verify(...a)) };
    const { blocks, set, loaded } = await everyBlockProfiled(undefined, verifier);
    let ticking = true;
    const tick = () => {
      most = Math.max(most, inTurn);
      inTurn = 0;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const f = fetcherOver(set, loaded.manifest, { hedge: false, readaheadBytes: 0, verifier });
    const prefetch = f.prefetchProfile(24);
    await vi.waitFor(() => expect(verified).toBeGreaterThan(10));
    ticking = false;
    expect(most).toBe(1); // without the gate, one socket read brings several answers, verified back to back
    // Reads while the prefetch runs: blocks it has in flight or waiting for their turn are handed over, exact.
    const reads = [0, 20, blocks - 1, Math.floor(blocks / 2)].map((b) => f.read(b * 16384, 16384).then((buf) => ({ b, buf })));
    for (const { b, buf } of await Promise.all(reads)) expect(buf.equals(image.subarray(b * 16384, b * 16384 + buf.length))).toBe(true);
    await prefetch;
    expect(f.stats().profilePrefetch).toMatchObject({ total: blocks, done: blocks });
    expect(verified).toBeLessThanOrEqual(blocks + 4); // each block verified once (reads may share the profile's fetches)
  });

  it('sends its requests in batches (one write for many), not one per finished block', async () => {
    const { set, loaded } = await everyBlockProfiled();
    // Requests started per turn of the event loop (a turn ends at our setImmediate).
    const mm = set.mirrors[0]!;
    const read = mm.read.bind(mm);
    let turn = 0;
    const perTurn = new Map<number, number>();
    mm.read = (...a: Parameters<typeof read>) => (perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1), read(...a));
    let ticking = true;
    const tick = () => {
      turn++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const f = fetcherOver(set, loaded.manifest, { hedge: false, readaheadBytes: 0 });
    await f.prefetchProfile(24);
    ticking = false;
    const counts = [...perTurn.values()];
    expect(counts.reduce((a, b) => a + b, 0)).toBe(loaded.manifest.objectSizes.size); // each distinct block once
    expect(counts[0]).toBe(24);
    // then a quarter of the lanes at a time (the last batch may be smaller)
    expect(counts.slice(1, -1).every((n) => n >= 6), counts.join(' ')).toBe(true);
  });
});

describe('hedged requests', () => {
  it('asks a second mirror when the first is much slower than usual; the first valid answer wins', async () => {
    const slow = await mirror();
    const fast = await mirror();
    const { set, f } = await fetcherFor([slow.url, fast.url], { minHedgeMs: 20, explore: 0 });
    // Both look equally good at first (a few ms); then the first turns slow.
    for (const m of set.mirrors) m.health.seed(2, 50_000);
    slow.fault = { kind: 'slow', delayMs: 800 };
    const h = f.manifest.blocks.findIndex((x) => x !== null);
    const t0 = performance.now();
    const data = await f.getBlock(h);
    expect(data.length).toBe(16384);
    expect(f.stats().hedges).toBe(1);
    expect(f.stats().hedgesWon).toBe(1);
    expect(fast.blockRequests).toBe(1);
    // The loser was cancelled, not awaited.
    expect(performance.now() - t0).toBeLessThan(800);
  });
});

describe('when every mirror fails', () => {
  it('hard mode keeps retrying, says so loudly, and completes when a mirror comes back', async () => {
    const a = await mirror();
    const b = await mirror();
    const logs: string[] = [];
    let sawRetry!: () => void;
    const retrying = new Promise<void>((r) => (sawRetry = r));
    const { f } = await fetcherFor([a.url, b.url], {
      hedge: false,
      maxDelayMs: 200,
      log: (l) => {
        logs.push(l);
        if (/retrying/.test(l)) sawRetry();
      },
    });
    a.fault = { kind: '500' };
    b.fault = { kind: 'reset' };
    const reading = readAll(f);
    await retrying;
    expect(logs.find((l) => /retrying/.test(l))).toMatch(/^WARNING: every mirror failed for block \d+ .*retrying in/);
    // and each mirror's own failure, once, before it
    expect(logs.filter((l) => l.startsWith(`mirror ${a.url}`))).toHaveLength(1);
    expect(logs.filter((l) => l.startsWith(`mirror ${b.url}`))).toHaveLength(1);
    b.fault = { kind: 'ok' };
    expect((await reading).equals(image)).toBe(true);
    expect(f.stats().retryRounds).toBeGreaterThan(0);
  });

  it('soft mode returns an error after its time limit', async () => {
    const a = await mirror({ kind: 'ok' });
    const { f } = await fetcherFor([a.url], { mode: 'soft', softTimeoutMs: 400, maxDelayMs: 100, hedge: false });
    a.fault = { kind: '500' };
    const i = f.manifest.blocks.findIndex((x) => x !== null);
    await expect(f.getBlock(i)).rejects.toThrow(/every mirror failed for block \d+ .*HTTP 500/);
  });

  it('a mirror that failed is retried later and comes back when it recovers', async () => {
    const flaky = await mirror();
    const other = await mirror({ kind: 'slow', delayMs: 30 });
    const set = mirrorsFor([flaky.url, other.url], { health: { backoffBaseMs: 50 } });
    const loaded = await loadImage({ name: 't', version: undefined, key: key(), mirrors: set.mirrors, trust: TrustState.memory() });
    const f = fetcherOver(set, loaded.manifest, { memory: new HeapCache(1), hedge: false, explore: 0 });
    flaky.fault = { kind: '500' };
    await f.read(0, 50_000);
    expect(set.mirrors[0]!.health.failures).toBeGreaterThan(0);
    flaky.fault = { kind: 'ok' };
    const before = flaky.blockRequests;
    // Read until the flaky mirror has served again (its backoff is 50 ms; the other costs 30 ms a request).
    for (let off = 50_000; flaky.blockRequests === before && off < f.size; off += 16384) await f.read(off, 16384);
    expect(flaky.blockRequests).toBeGreaterThan(before);
    expect(set.mirrors[0]!.isDown()).toBe(false);
  });
});

describe('trust', () => {
  it('refuses a manifest older than one already seen (rollback), skipping a stale mirror', async () => {
    const stale = await mirror({ kind: 'ok' }, storeV1);
    const fresh = await mirror();
    const trust = TrustState.memory();
    const set = mirrorsFor([stale.url, fresh.url]);
    // First this machine sees v2…
    const a = await loadImage({ name: 't', version: undefined, key: key(), mirrors: [set.mirrors[1]!], trust });
    expect(a.manifest.header.version).toBe(2);
    // …then a stale mirror offers v1: refused with a clear message.
    await expect(loadImage({ name: 't', version: undefined, key: key(), mirrors: [set.mirrors[0]!], trust })).rejects.toThrow(RollbackError);
    await expect(loadImage({ name: 't', version: undefined, key: key(), mirrors: [set.mirrors[0]!], trust })).rejects.toThrow(
      /offers t v1, but this machine has already seen v2: refusing to go back/,
    );
    // With both, the stale one is skipped.
    const b = await loadImage({ name: 't', version: undefined, key: key(), mirrors: set.mirrors, trust });
    expect(b.from).toBe(fresh.url);
    // The trust file persists across runs.
    const file = join(tempDir(), 'trust.json');
    const t1 = await TrustState.open(file);
    await t1.record('t', key().id, 2, 'a'.repeat(64));
    expect((await TrustState.open(file)).seen('t', key().id)).toBe(2);
  });

  it('refuses manifests signed by another key', async () => {
    const m = await mirror();
    const other = parsePublicKey(generateKeyPair().publicLine, 'x');
    const set = mirrorsFor([m.url]);
    await expect(loadImage({ name: 't', version: undefined, key: other, mirrors: set.mirrors, trust: TrustState.memory() })).rejects.toThrow(SignatureError);
  });

  it('reports an unknown image as missing on every mirror', async () => {
    const m = await mirror();
    const set = mirrorsFor([m.url]);
    await expect(loadImage({ name: 'nope', version: undefined, key: key(), mirrors: set.mirrors, trust: TrustState.memory() })).rejects.toThrow(MissingError);
    await expect(loadImage({ name: 'nope', version: undefined, key: key(), mirrors: set.mirrors, trust: TrustState.memory() })).rejects.toThrow(/no mirror has image 'nope'/);
  });

  it("logs a mirror's failure when another mirror is tried next, and leaves the last one's to the error", async () => {
    const a = await mirror();
    const b = await mirror();
    const set = mirrorsFor([a.url, b.url]);
    const lines: string[] = [];
    const log = (l: string) => lines.push(l);
    await expect(loadImage({ name: 'nope', version: undefined, key: key(), mirrors: set.mirrors, trust: TrustState.memory(), log })).rejects.toThrow(
      new RegExp(`no mirror has image 'nope':.*${a.url}.*;.*${b.url}`),
    );
    expect(lines).toEqual([expect.stringMatching(new RegExp(`^manifest from ${set.mirrors[0]!.url}: .*; trying the next mirror$`))]);
    lines.length = 0;
    const loaded = await loadImage({ name: 't', version: undefined, key: key(), mirrors: [...set.mirrors].reverse(), trust: TrustState.memory(), log });
    expect(loaded.manifest.header.version).toBeGreaterThan(0);
    expect(lines).toEqual([]);
  });
});

describe('nginx with config/nginx-hfk.conf', () => {
  for (const sub of ['', 'mirror/hfk/']) {
    it(`serves the new pointer as soon as a publish has moved it (no stale open-file cache), store at /${sub}`, async () => {
      const dir = tempDir();
      const s = join(dir, 'www', sub, 'store');
      mkdirSync(join(s, '..'), { recursive: true });
      cpSync(storeV1, s, { recursive: true });
      const nginx = await startNginx(join(dir, 'www'), dir);
      onTestFinished(() => nginx.stop());
      const base = `${nginx.url}${sub}store/`;
      const version = async () => JSON.parse(await (await fetch(`${base}images/t/latest.json`)).text()).version as number;
      expect(await version()).toBe(1);
      await hfkJson(['publish', join(work, 'v2.sqfs'), '--store', s, '--name', 't', '--key', join(work, 'k.key'), '--block-size', '16K']);
      expect(await version()).toBe(2);
      const res = await fetch(`${base}images/t/latest.json`);
      expect(res.headers.get('cache-control')).toBe('public, max-age=5, must-revalidate');
      const man = await fetch(`${base}images/t/v2.hfkm`);
      expect(man.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
      const m = decodeManifest(Buffer.from(await man.arrayBuffer()), null);
      const blk = await fetch(`${base}${blockPath(m.blocks.find((h) => h !== null)!)}`);
      expect(blk.status).toBe(200);
      expect(blk.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    });
  }
});

describe('startNginx directives (the benchmarks\' nginx:NAME=VALUE)', () => {
  it('replace a directive the server block has and add one it lacks', async () => {
    const dir = tempDir();
    const plain = await startNginx(store, join(dir, 'a'));
    onTestFinished(() => plain.stop());
    const changed = await startNginx(store, join(dir, 'b'), undefined, undefined, { autoindex: 'on', server_tokens: 'off' });
    onTestFinished(() => changed.stop());
    // autoindex off in config/nginx-hfk.conf: no listing; replaced by on: a listing of the store.
    expect((await fetch(`${plain.url}blocks/`)).status).toBe(403);
    const listing = await fetch(`${changed.url}blocks/`);
    expect(listing.status).toBe(200);
    expect(await listing.text()).toMatch(/Index of \/blocks\//);
    // server_tokens is not in the file: added, the Server header loses its version.
    expect((await fetch(`${plain.url}images/t/latest.json`)).headers.get('server')).toMatch(/^nginx\/\d/);
    expect((await fetch(`${changed.url}images/t/latest.json`)).headers.get('server')).toBe('nginx');
    expect(() => withDirectives('root /x;', { 'bad name': 'on' })).toThrow(/not an nginx directive/);
    expect(() => withDirectives('root /x;', { autoindex: 'on; root /' })).toThrow(/not an nginx directive/);
  });
});

describe('HTTPS mirrors', () => {
  it('are read over TLS when their certificate verifies, and refused (as unreachable) when it does not', async () => {
    const dir = tempDir();
    const ssl = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore', cwd: dir });
    ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=hfk test CA']);
    ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=127.0.0.1']);
    writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
    ssl(['x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.pem', '-days', '2', '-extfile', 'ext.cnf']);
    const nginx = await startNginx(store, dir, undefined, { cert: join(dir, 'srv.pem'), key: join(dir, 'srv.key') });
    onTestFinished(() => nginx.stop());
    expect(nginx.url).toMatch(/^https:/);
    const out = join(dir, 't.img');
    const ok = await hfk(['get', 't', '--mirrors', nginx.url, '--key', pubFile, '--out', out, '--quiet'], { env: { NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') } });
    expect(ok.code, ok.stderr).toBe(0);
    expect(readFileSync(out).equals(image)).toBe(true);
    const bad = await hfk(['get', 't', '--mirrors', nginx.url, '--key', pubFile, '--out', join(dir, 'u.img'), '--soft', '--soft-timeout', '2']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/no mirror could be reached for t: .*(certificate|UNABLE_TO|SELF_SIGNED).*update-ca-certificates; SSL_CERT_FILE=FILE/i);
    // A CA in the machine's bundle is trusted, as curl and apt trust it (here the bundle is named by SSL_CERT_FILE).
    const bundle = join(dir, 'bundle.pem');
    writeFileSync(bundle, readFileSync('/etc/ssl/certs/ca-certificates.crt', 'utf8') + readFileSync(join(dir, 'ca.pem'), 'utf8'));
    const viaBundle = await hfk(['get', 't', '--mirrors', nginx.url, '--key', pubFile, '--out', join(dir, 'v.img'), '--quiet'], { env: { SSL_CERT_FILE: bundle } });
    expect(viaBundle.code, viaBundle.stderr).toBe(0);
    expect(readFileSync(join(dir, 'v.img')).equals(image)).toBe(true);
  });

  it('an https:// URL for a plain HTTP mirror gets one line that says so', async () => {
    const dir = tempDir();
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const url = nginx.url.replace(/^http:/, 'https:');
    const r = await hfk(['get', 't', '--mirrors', url, '--key', pubFile, '--out', join(dir, 'x.img'), '--soft', '--soft-timeout', '2']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no mirror could be reached for t: .*the server does not speak TLS on this port; if it is a plain HTTP server, give the mirror as http:\/\//);
    expect(r.stderr).not.toMatch(/SSL routines|\.c:\d+:/);
    // The message, then its hint: no line broken in the middle.
    expect(r.stderr.trim().split('\n')).toHaveLength(2);
  });
});

describe('loading the image', () => {
  it('fetches the manifest once: the bytes the mirror ranking fetched are used when the pointer names them', async () => {
    const m = await mirror();
    const o = await openImage({ mirrors: [m.url], name: 't', key: key(), memoryBytes: 1 << 20, rank: { deadlineMs: 1000 } });
    onTestFinished(() => o.close());
    const manifests = () => m.paths.filter((p) => p.endsWith('.hfkm'));
    expect(manifests()).toEqual([manifestPath('t', o.image.manifest.header.version)]);
    expect(m.paths.filter((p) => p.endsWith('latest.json')).length).toBeGreaterThanOrEqual(2); // ranking rounds, then loadImage's own
    // Bytes the pointer does not name are not used: the manifest is fetched.
    const set = mirrorsFor([m.url]);
    const known = new Map([[manifests()[0]!, Buffer.from('not the manifest')]]);
    const again = await loadImage({ name: 't', version: undefined, key: key(), mirrors: set.mirrors, trust: TrustState.memory(), known });
    expect(again.digest).toBe(o.image.digest);
    expect(manifests().length).toBe(2);
  });
});

describe('disk cache', () => {
  it('on a filesystem smaller than its limit, keeps caching when it fills: it lowers its limit and evicts the oldest', async () => {
    // A real 1 MiB tmpfs under a cache opened with a 1 GiB limit (a small cache partition).
    const dir = tempDir();
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir]);
    onTestFinished(() => {
      execFileSync('umount', [dir]);
    });
    const c = await DiskCache.open(join(dir, 'c'), 1 << 30);
    // Incompressible 16 KiB blocks, stored as they are: about 64 fill the filesystem.
    const put: string[] = [];
    for (let i = 0; i < 150; i++) {
      const data = pseudoRandom(16384, 1000 + i);
      const hash = blockHash(data);
      await c.putObject(hash, encodeBlock(data, 'none'));
      put.push(hash);
    }
    await c.flush();
    const st = c.stats();
    expect(st.limitBytes).toBeLessThan(1 << 20); // learnt from the full filesystem
    expect(st.evicted).toBeGreaterThan(0);
    expect(st.bytes).toBeLessThanOrEqual(st.limitBytes);
    // The newest objects are there (without this, every write after the filesystem filled failed)...
    for (const h of put.slice(-20)) expect(c.has(h)).toBe(true);
    expect(c.has(put[0]!)).toBe(false); // ...the oldest went
    // ...and exactly what the index holds is on the disk, each object whole.
    const files = readdirSync(join(dir, 'c', 'blocks'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(files.length).toBe(st.objects);
    for (const f of files) expect(statSync(join(f.parentPath, f.name)).size).toBe(16385);
  });

  it('a second run needs only the manifest; with no network at all it starts from the cache', async () => {
    const dir = tempDir();
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const cacheDir = join(dir, 'cache');
    const run = async (mirrors: string[]) => {
      const o = await openImage({ mirrors, name: 't', key: key(), cacheDir, memoryBytes: 1 << 20, rank: { deadlineMs: 500 }, mode: 'soft', softTimeoutMs: 1000 });
      try {
        const data = await readAll(o.fetcher);
        return { data, stats: o.fetcher.stats(), from: o.image.from };
      } finally {
        await o.close();
      }
    };
    const first = await run([nginx.url]);
    expect(first.data.equals(image)).toBe(true);
    expect(first.stats.blocksFetched).toBeGreaterThan(0);
    const blockGets = countRequests(nginx.accessLog, '/blocks/');
    const second = await run([nginx.url]);
    expect(second.data.equals(image)).toBe(true);
    expect(second.stats.bytesFetched).toBe(0);
    expect(countRequests(nginx.accessLog, '/blocks/')).toBe(blockGets);
    await nginx.stop();
    const offline = await run([nginx.url, await deadUrl()]);
    expect(offline.from).toBe('cache');
    expect(offline.data.equals(image)).toBe(true);
    expect(offline.stats.bytesFetched).toBe(0);
  });

  it('verifies on read: a damaged cached object is discarded and fetched again', async () => {
    const dir = tempDir();
    const m = await mirror();
    const cache = await DiskCache.open(join(dir, 'c'), 1 << 30);
    const { f } = await fetcherFor([m.url], { disk: cache, hedge: false });
    await readAll(f);
    await new Promise((r) => setImmediate(r));
    // Wait for the background cache writes to land.
    for (let i = 0; i < 100 && cache.stats().objects < f.manifest.objectSizes.size; i++) await new Promise((r) => setTimeout(r, 20));
    const h = [...f.manifest.objectSizes.keys()][0]!;
    const file = join(dir, 'c', blockPath(h));
    const bytes = readFileSync(file);
    bytes[bytes.length - 1]! ^= 1;
    writeFileSync(file, bytes);
    const reopened = await DiskCache.open(join(dir, 'c'), 1 << 30);
    const { f: f2 } = await fetcherFor([m.url], { disk: reopened, hedge: false });
    const before = m.blockRequests;
    expect((await readAll(f2)).equals(image)).toBe(true);
    expect(reopened.stats().discarded).toBe(1);
    expect(m.blockRequests - before).toBe(1); // only the damaged one went to the network
  });

  /** A mirror, and a disk cache (opened again, as by a new reader) holding the first half of the image's blocks. */
  async function halfCached() {
    const dir = tempDir();
    const m = await mirror();
    const half = Math.floor(image.length / 2 / 16384) * 16384;
    const c1 = await DiskCache.open(join(dir, 'c'), 1 << 30);
    const { f: a } = await fetcherFor([m.url], { disk: c1, hedge: false, readaheadBytes: 0 });
    for (let off = 0; off < half; off += 16384) await a.read(off, 16384);
    await a.close();
    return { m, half, c2: await DiskCache.open(join(dir, 'c'), 1 << 30) };
  }

  it('with a warm cache, readahead takes only what the cache holds: nothing goes to the mirrors that is not read', async () => {
    const { m, half, c2 } = await halfCached();
    const before = m.blockRequests;
    const { f: b } = await fetcherFor([m.url], { disk: c2, hedge: false, readaheadBytes: 8 << 20, readaheadNetwork: false });
    for (let off = 0; off < half; off += 16384) expect((await b.read(off, 16384)).equals(image.subarray(off, off + 16384))).toBe(true);
    expect(b.stats().prefetched).toBeGreaterThan(0); // readahead ran, from the cache
    expect(m.blockRequests).toBe(before);
    expect(b.stats().readaheadNetwork).toBe(false);
  });

  it('with readaheadDisk off, readahead leaves the cached blocks alone and fetches only the missing ones', async () => {
    const { m, half, c2 } = await halfCached();
    const { f: b } = await fetcherFor([m.url], { disk: c2, hedge: false, readaheadBytes: 4 * 16384, readaheadDisk: false });
    expect(b.stats().readaheadDisk).toBe(false);
    // The cached half: read on demand only, nothing ahead, nothing from the mirror.
    const before = m.blockRequests;
    const fromCache = half - 5 * 16384; // so that the readahead window (4 blocks) stays inside the cached half
    for (let off = 0; off < fromCache; off += 16384) expect((await b.read(off, 16384)).equals(image.subarray(off, off + 16384))).toBe(true);
    expect(b.stats().prefetched).toBe(0);
    expect(b.stats().diskHits).toBeGreaterThan(0);
    expect(b.stats().blocksFetched).toBe(0);
    expect(m.blockRequests).toBe(before);
    // Past it, readahead fetches from the mirror as usual.
    for (let off = half; off + 16384 <= image.length; off += 16384) expect((await b.read(off, 16384)).equals(image.subarray(off, off + 16384))).toBe(true);
    expect(b.stats().prefetched).toBeGreaterThan(0);
  });

  it('stays under its size limit, evicting the least recently used', async () => {
    const dir = tempDir();
    const m = await mirror();
    const limit = 200_000;
    const cache = await DiskCache.open(join(dir, 'c'), limit);
    const { f } = await fetcherFor([m.url], { disk: cache, hedge: false });
    await readAll(f);
    await cache.flush(); // every write (and the eviction after it) done
    const s = cache.stats();
    expect(s.bytes).toBeLessThanOrEqual(limit);
    expect(s.evicted).toBeGreaterThan(0);
    const onDisk = readdirSync(join(dir, 'c', 'blocks')).flatMap((fan) => readdirSync(join(dir, 'c', 'blocks', fan)).map((x) => statSync(join(dir, 'c', 'blocks', fan, x)).size));
    expect(onDisk.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(limit);
  });
});

describe('through a real Squid caching proxy', () => {
  it('serves blocks from the proxy cache once fetched, even with the mirror gone', async () => {
    const dir = tempDir();
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const squid = await startSquid(dir);
    onTestFinished(() => squid.stop());
    const run = async (version?: number) => {
      const o = await openImage({ mirrors: [nginx.url], proxy: squid.url, name: 't', version, key: key(), memoryBytes: 1 << 20, mode: 'soft', softTimeoutMs: 2000, rank: { deadlineMs: 1000 } });
      try {
        return await readAll(o.fetcher);
      } finally {
        await o.close();
      }
    };
    expect((await run()).equals(image)).toBe(true);
    const blockGets = countRequests(nginx.accessLog, '/blocks/');
    expect(blockGets).toBeGreaterThan(0);
    await nginx.stop();
    // The mirror is gone; the pinned version's manifest and every block come from Squid.
    expect((await run(2)).equals(image)).toBe(true);
  });
});

describe('hfk get', () => {
  it('writes the exact image through a set of good and bad mirrors', async () => {
    const dir = tempDir();
    const nginx = await startNginx(store, dir);
    onTestFinished(() => nginx.stop());
    const liar = await mirror({ kind: 'corrupt' });
    const partial = await mirror({ kind: '404' });
    const out = join(dir, 't.img');
    const r = await hfk(['get', 't', '--mirrors', `${liar.url},${partial.url},${await deadUrl()},${nginx.url}`, '--key', pubFile, '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(out).equals(image)).toBe(true);
    const j = JSON.parse(r.stdout);
    expect(j.version).toBe(2);
    expect(j.fetched.blocks).toBeGreaterThan(0);
    const bad = await hfk(['get', 'nope', '--mirrors', nginx.url, '--key', pubFile, '--out', join(dir, 'x.img')]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/no mirror has image 'nope'/);
    expect(bad.stderr.match(/there is no image 'nope'/g), bad.stderr).toHaveLength(1); // said once, not per mirror and again
    expect(readdirSync(dir).filter((f) => f.startsWith('x.img'))).toEqual([]);
  });

  it('takes the image as NAME or as --name NAME (as hfk mount does), once', async () => {
    const dir = tempDir();
    const m = await mirror();
    const out = join(dir, 'n.img');
    const r = await hfk(['get', '--name', 't@2', '--mirrors', m.url, '--key', pubFile, '--out', out, '--quiet']);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(out).equals(image)).toBe(true);
    const twice = await hfk(['get', 't', '--name', 't', '--mirrors', m.url, '--key', pubFile, '--out', join(dir, 'x.img')]);
    expect(twice.code).toBe(2);
    expect(twice.stderr).toContain("the image is given twice ('t' and --name t): give it once");
    const none = await hfk(['get', '--mirrors', m.url, '--key', pubFile, '--out', join(dir, 'x.img')]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('which image? give NAME[@VERSION] (or --name NAME[@VERSION])');
    const bad = await hfk(['get', '--name', 't@0', '--mirrors', m.url, '--key', pubFile, '--out', join(dir, 'x.img')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--name: the version after '@' must be a positive whole number: got '0'");
  });

  it('says that a --cache folder does not exist yet, creates it, and the next get reads from it', async () => {
    const dir = tempDir();
    const m = await mirror();
    const cache = join(dir, 'cache');
    const get = (out: string) => hfk(['get', 't', '--mirrors', m.url, '--key', pubFile, '--out', join(dir, out), '--cache', cache, '--json']);
    const first = await get('a.img');
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain(`--cache ${cache}: folder ${cache} does not exist yet; creating it`);
    expect(JSON.parse(first.stdout).fetched.diskHits).toBe(0);
    const again = await get('b.img');
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toMatch(/does not exist yet/);
    expect(JSON.parse(again.stdout).fetched).toMatchObject({ blocks: 0 });
    expect(JSON.parse(again.stdout).fetched.diskHits).toBeGreaterThan(0);
    expect(readFileSync(join(dir, 'b.img')).equals(image)).toBe(true);
  });

  it('checks --out before fetching anything', async () => {
    const dir = tempDir();
    const m = await mirror();
    const missing = await hfk(['get', 't', '--mirrors', m.url, '--key', pubFile, '--out', join(dir, 'nope', 'x.img')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`--out ${join(dir, 'nope', 'x.img')}: folder ${join(dir, 'nope')} does not exist`);
    const folder = await hfk(['get', 't', '--mirrors', m.url, '--key', pubFile, '--out', dir]);
    expect(folder.code).toBe(2);
    expect(folder.stderr).toMatch(/--out .* is a folder: give the file to write/);
    expect(m.requests).toBe(0);
  });

  it('removes its half-written file when interrupted (SIGINT, SIGTERM)', async () => {
    const dir = tempDir();
    const partial = await mirror({ kind: '404' }); // block objects never come: get keeps retrying
    for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      const child = hfkSpawn(['get', 't', '--mirrors', partial.url, '--key', pubFile, '--out', join(dir, 't.img')]);
      const ended = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => void (stderr += d.toString()));
      await vi.waitFor(() => expect(readdirSync(dir).some((f) => f.endsWith('.part'))).toBe(true), { timeout: 30_000, interval: 50 });
      // it says, once, that it will not give up by itself, and how to make it
      await vi.waitFor(() => expect(stderr).toMatch(/keeps retrying until a mirror has every block; --soft gives up/), { timeout: 30_000, interval: 50 });
      child.kill(signal);
      expect(await ended).toBe(code);
      expect(readdirSync(dir)).toEqual([]);
    }
  });
});

describe('concurrency', () => {
  // A memory cache of a few blocks only: blocks leave it while readers still wait for them. With the
  // tmpfs cache, blocks reach readers in reused memory (decoded in place by threads in the last case).
  for (const [memory, threads] of [['heap', 0], ['shm', 0], ['shm', 2]] as const) {
  it(`many readers of overlapping blocks stay exact while mirrors fail and recover (${memory} cache, ${threads} verify threads)`, async () => {
    const ms = [await mirror(), await mirror(), await mirror()];
    const { f } = await fetcherFor(
      ms.map((m) => m.url),
      {
        memory: memory === 'heap' ? new HeapCache(64 * 1024) : new ShmCache(64 * 1024, 16384, '/dev/shm'),
        maxDelayMs: 50,
        minHedgeMs: 10,
        ...(threads ? { verifier: makeVerifier(threads) } : {}),
      },
      { headersTimeoutMs: 500, bodyTimeoutMs: 200 },
    );
    let stop = false;
    const faults: Parameters<typeof startFaultyMirror>[1][] = [{ kind: 'ok' }, { kind: '500' }, { kind: 'corrupt' }, { kind: 'reset' }, { kind: 'cut' }, { kind: '404' }];
    let n = 0;
    const chaos = (async () => {
      while (!stop) {
        for (const m of ms) m.fault = faults[(n++ * 7 + ms.indexOf(m)) % faults.length]!;
        await new Promise((r) => setTimeout(r, 15));
      }
      for (const m of ms) m.fault = { kind: 'ok' };
    })();
    let seed = 1;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const readers = Array.from({ length: 12 }, async () => {
      for (let i = 0; i < 25; i++) {
        const off = Math.floor(rnd() * (f.size - 1));
        const len = 1 + Math.floor(rnd() * 100_000);
        const got = await f.read(off, len);
        expect(got.equals(image.subarray(off, Math.min(f.size, off + len)))).toBe(true);
      }
    });
    try {
      await Promise.all(readers);
    } finally {
      stop = true;
      await chaos;
    }
    const s = f.stats();
    expect(s.sharedFetches + s.memoryHits).toBeGreaterThan(0);
  });
  }

  it('an interrupted read rejects at once; the fetch goes on for the next reader', async () => {
    const m = await mirror({ kind: 'slow', delayMs: 300 });
    const { f } = await fetcherFor([m.url], { hedge: false, readaheadBytes: 0 });
    const ac = new AbortController();
    const i = f.manifest.blocks.findIndex((x) => x !== null);
    const p = f.read(i * 16384, 100, ac.signal);
    ac.abort();
    await expect(p).rejects.toThrow(AbortedError);
    expect((await f.read(i * 16384, 100)).equals(image.subarray(i * 16384, i * 16384 + 100))).toBe(true);
    expect(m.blockRequests).toBe(1);
  });
});

