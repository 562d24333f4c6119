import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { tempDir } from '../../test/helpers/tmp.ts';
import { AbortedError, BrokenError, MissingError } from '../errors.ts';
import { ReadThroughCache } from './cache.ts';
import { DiskCache } from './diskcache.ts';
import { MirrorGroup } from './group.ts';
import { Mirror } from './mirror.ts';
import { Retrying } from './retry.ts';
import { Router } from './router.ts';
import { type BlockRequest, type BlockSource, emptyStats, failureKind } from './source.ts';
import { MemoryOrigin, testBlock } from './testing/memory.ts';

const A = testBlock(1);
const B = testBlock(2);
const req = (b: typeof A): BlockRequest => ({ hash: b.hash, length: b.data.length, objectSize: b.object.length, index: 7 });

function mirror(name: string, options: { now?: () => number; blocks?: (typeof A)[] } = {}): { m: Mirror; o: MemoryOrigin } {
  const o = new MemoryOrigin(`mem://${name}/`);
  for (const b of options.blocks ?? [A, B]) o.files.set(b.rel, b.object);
  const m = new Mirror(o.location, o, { ...(options.now ? { now: options.now } : {}), health: { backoffBaseMs: 1000 } });
  return { m, o };
}

const stats = (s: BlockSource) => {
  const into = emptyStats();
  s.stats?.(into);
  return into;
};

describe('MirrorGroup', () => {
  it('orders healthy mirrors by expected cost, then those backing off, soonest back first', () => {
    let now = 1_000_000;
    const ms = ['a', 'b', 'c', 'd', 'e'].map((n) => mirror(n, { now: () => now }).m);
    const [a, b, c, d, e] = ms;
    a!.health.seed(50, 10_000);
    b!.health.seed(5, 10_000);
    c!.health.seed(20, 10_000);
    d!.health.seed(1, 10_000); // the fastest, but backing off
    d!.health.broken(now);
    e!.health.broken(now - 10_000);
    e!.health.broken(now);
    const g = new MirrorGroup(ms);
    expect(g.order(65_536).map((m) => m.url)).toEqual(['mem://b/', 'mem://c/', 'mem://a/', 'mem://d/', 'mem://e/']);
    now += 3_600_000; // back-offs over: ranked by cost again
    expect(g.order(65_536).map((m) => m.url)).toEqual(['mem://d/', 'mem://b/', 'mem://c/', 'mem://a/', 'mem://e/']);
  });

  it('fails over by kind: missing is not an outage, bad bytes blame the sender, transport backs off', async () => {
    const lacks = mirror('lacks', { blocks: [] });
    const corrupt = mirror('corrupt');
    corrupt.o.behaviour = 'corrupt';
    const down = mirror('down');
    down.o.behaviour = 'broken';
    const good = mirror('good');
    const g = new MirrorGroup([lacks.m, corrupt.m, down.m, good.m], { hedge: false, explore: 0 });
    for (const [i, x] of [lacks, corrupt, down, good].entries()) x.m.health.seed(1 + i, 10_000); // tried in this order
    const got = await g.get(req(A));
    expect(got.data.equals(A.data)).toBe(true);
    expect(got.from).toBe('mem://good/');
    expect(lacks.m.health.missing).toBe(1);
    expect(lacks.m.isDown()).toBe(false);
    expect(corrupt.m.health.invalid).toBe(1);
    expect(corrupt.m.isDown()).toBe(true);
    expect(down.m.health.failures).toBe(1);
    expect(down.m.isDown()).toBe(true);
    expect(stats(g)).toMatchObject({ failovers: 3, blocksFetched: 1 });
  });

  it('says missing when every mirror lacks the block, broken when any failed otherwise', async () => {
    const g1 = new MirrorGroup([mirror('x', { blocks: [] }).m, mirror('y', { blocks: [] }).m], { hedge: false });
    await expect(g1.get(req(A))).rejects.toBeInstanceOf(MissingError);
    const z = mirror('z');
    z.o.behaviour = 'broken';
    const g2 = new MirrorGroup([mirror('x', { blocks: [] }).m, z.m], { hedge: false });
    const e = await g2.get(req(A)).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BrokenError);
    expect((e as Error).message).toMatch(/every mirror failed for block .*HTTP 404.*HTTP 503|every mirror failed for block .*HTTP 503.*HTTP 404/);
  });

  it('hedges a slow request to the next mirror; the first answer wins and the other is cancelled', async () => {
    const slow = mirror('slow');
    slow.o.behaviour = 'hang';
    const fast = mirror('fast');
    slow.m.health.seed(1, 100_000); // expected to answer at once: a hang is "much slower"
    fast.m.health.seed(2, 100_000);
    const g = new MirrorGroup([slow.m, fast.m], { minHedgeMs: 1, explore: 0 });
    const got = await g.get(req(A));
    expect(got.from).toBe('mem://fast/');
    expect(stats(g)).toMatchObject({ hedges: 1, hedgesWon: 1, failovers: 0 });
    await vi.waitFor(() => expect(slow.o.cancelled).toBe(1)); // the loser's request was cancelled
  });

  it('fails back to a mirror once its back-off has passed and it answers again', async () => {
    let now = 1_000;
    const first = mirror('first', { now: () => now });
    const second = mirror('second', { now: () => now });
    first.m.health.seed(1, 100_000);
    second.m.health.seed(50, 100_000);
    const g = new MirrorGroup([first.m, second.m], { hedge: false, explore: 0 });
    first.o.behaviour = 'broken';
    expect((await g.get(req(A))).from).toBe('mem://second/');
    expect(g.order(1)[0]).toBe(second.m); // backing off
    first.o.behaviour = 'ok';
    now += 60_000;
    expect(g.order(1)[0]).toBe(first.m);
    expect((await g.get(req(B))).from).toBe('mem://first/');
    expect(first.m.health.consecutiveFailures).toBe(0);
  });

  it('cancels what is under way on close, and refuses new requests', async () => {
    const h = mirror('h');
    h.o.behaviour = 'hang';
    const g = new MirrorGroup([h.m], { hedge: false });
    const p = g.get(req(A));
    await g.close();
    await expect(p).rejects.toBeInstanceOf(AbortedError);
    await expect(g.get(req(A))).rejects.toBeInstanceOf(AbortedError);
    expect(h.o.closed).toBe(true);
  });
});

describe('Retrying', () => {
  it('hard mode retries until the block comes, and says so every round', async () => {
    const x = mirror('x');
    x.o.behaviour = 'broken';
    const logs: string[] = [];
    const r = new Retrying(new MirrorGroup([x.m], { hedge: false }), {
      mode: 'hard',
      baseDelayMs: 1,
      log: (l) => {
        logs.push(l);
        if (logs.length === 3) x.o.behaviour = 'ok';
      },
    });
    x.m.health.seed(1, 1); // backing off does not stop the last resort from being asked
    const got = await r.get(req(A));
    expect(got.data.equals(A.data)).toBe(true);
    expect(logs).toHaveLength(3);
    expect(logs[0]).toMatch(/^WARNING: every mirror failed for block .*HTTP 503; retrying in 0\.0 s$/);
    expect(stats(r).retryRounds).toBe(3);
  });

  it('soft mode gives up at its deadline, cutting the pass under way short', async () => {
    const x = mirror('x');
    x.o.behaviour = 'hang';
    const r = new Retrying(new MirrorGroup([x.m], { hedge: false }), { mode: 'soft', softTimeoutMs: 30 });
    const e = await r.get(req(A)).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(BrokenError);
    expect((e as Error).message).toMatch(/gave up after \d+ s/);
    expect(x.o.cancelled).toBe(1);
  });

  it('soft mode reports the last real failure, not the cancellation', async () => {
    const x = mirror('x');
    x.o.behaviour = 'broken';
    const r = new Retrying(new MirrorGroup([x.m], { hedge: false }), { mode: 'soft', softTimeoutMs: 20, baseDelayMs: 5 });
    await expect(r.get(req(A))).rejects.toThrow(/HTTP 503.*gave up after/);
  });

  it('does not retry a cancelled read', async () => {
    const x = mirror('x');
    x.o.behaviour = 'hang';
    const logs: string[] = [];
    const r = new Retrying(new MirrorGroup([x.m], { hedge: false }), { mode: 'hard', log: (l) => logs.push(l) });
    const ac = new AbortController();
    const p = r.get(req(A), ac.signal);
    ac.abort();
    await expect(p).rejects.toBeInstanceOf(AbortedError);
    expect(logs).toEqual([]);
  });
});

describe('Router', () => {
  it('moves on only when a source lacks the block', async () => {
    const peer = mirror('peer', { blocks: [B] });
    const origin = mirror('origin');
    const r = new Router([new MirrorGroup([peer.m], { hedge: false }), new MirrorGroup([origin.m], { hedge: false })]);
    expect((await r.get(req(B))).from).toBe('mem://peer/');
    expect((await r.get(req(A))).from).toBe('mem://origin/');
    expect(origin.o.asked).toEqual([A.rel]);
  });

  it('any other failure is the answer: the next source is not asked', async () => {
    const peer = mirror('peer');
    peer.o.behaviour = 'corrupt';
    const origin = mirror('origin');
    const r = new Router([new MirrorGroup([peer.m], { hedge: false }), new MirrorGroup([origin.m], { hedge: false })]);
    const e = await r.get(req(A)).catch((x: unknown) => x);
    expect(failureKind(e)).toBe('broken');
    expect(origin.o.asked).toEqual([]);
  });

  it('says missing when no source has it', async () => {
    const r = new Router([new MirrorGroup([mirror('p', { blocks: [] }).m]), new MirrorGroup([mirror('q', { blocks: [] }).m])]);
    await expect(r.get(req(A))).rejects.toThrow(MissingError);
  });
});

describe('ReadThroughCache', () => {
  it('keeps what the inner source fetched and serves it from disk next time', async () => {
    const dir = tempDir('hfk-rtc-');
    const x = mirror('x');
    const cache = new ReadThroughCache(await DiskCache.open(join(dir, 'c'), 1 << 20), new MirrorGroup([x.m], { hedge: false }));
    expect(cache.holds(A.hash)).toBe(false);
    const first = await cache.get(req(A));
    await first.kept;
    expect(first.from).toBe('mem://x/');
    expect(cache.holds(A.hash)).toBe(true);
    const second = await cache.get(req(A));
    expect(second.from).toBe('disk');
    expect(second.data.equals(A.data)).toBe(true);
    expect(x.o.asked).toEqual([A.rel]);
    expect(stats(cache)).toMatchObject({ diskHits: 1, blocksFetched: 1 });
    await cache.close();
  });

  it('a damaged cached object is a miss: fetched again, not served', async () => {
    const dir = tempDir('hfk-rtc-');
    const x = mirror('x');
    const disk = await DiskCache.open(join(dir, 'c'), 1 << 20);
    const cache = new ReadThroughCache(disk, new MirrorGroup([x.m], { hedge: false }));
    await (await cache.get(req(A))).kept;
    const file = join(disk.dir, A.rel);
    const bytes = readFileSync(file);
    bytes[bytes.length - 1]! ^= 1;
    writeFileSync(file, bytes);
    const again = await cache.get(req(A));
    expect(again.from).toBe('mem://x/');
    expect(again.data.equals(A.data)).toBe(true);
    expect(disk.stats().discarded).toBe(1);
    await cache.close();
  });
});
