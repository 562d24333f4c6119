import { describe, expect, it } from 'vitest';
import { MirrorSet } from './mirror.ts';

describe('MirrorSet.order', () => {
  it('puts healthy mirrors first by expected cost, then those backing off, soonest back first', () => {
    let now = 1_000_000;
    const set = new MirrorSet(['http://a/', 'http://b/', 'http://c/', 'http://d/', 'http://e/'], {}, () => now);
    const [a, b, c, d, e] = set.mirrors;
    a!.health.seed(50, 10_000); // slow to answer
    b!.health.seed(5, 10_000); // fastest
    c!.health.seed(20, 10_000);
    d!.health.seed(1, 10_000); // would be the fastest, but it is backing off: 1st failure
    d!.health.broken(now);
    e!.health.broken(now - 10_000); // backing off from earlier, with more failures: further out
    e!.health.broken(now);
    expect(set.order(65_536).map((m) => m.url)).toEqual(['http://b/', 'http://c/', 'http://a/', 'http://d/', 'http://e/']);
    // Once its back-off is over, a mirror is ranked by its cost again.
    now += 3_600_000;
    expect(set.order(65_536).map((m) => m.url)).toEqual(['http://d/', 'http://b/', 'http://c/', 'http://a/', 'http://e/']);
  });

  it('a single mirror comes back as a list of its own, down or not', () => {
    const set = new MirrorSet(['http://only/'], {}, () => 5);
    const first = set.order(1);
    expect(first.map((m) => m.url)).toEqual(['http://only/']);
    set.mirrors[0]!.health.broken(5);
    expect(set.order(1)).toEqual([set.mirrors[0]]);
    // Each call gets its own array: the fetcher may reorder it.
    expect(set.order(1)).not.toBe(first);
  });
});
