import { describe, expect, it } from 'vitest';
import { MAX_BUCKETS, MAX_SWITCHES, Timeline } from './timeline.ts';

describe('Timeline', () => {
  it('counts blocks and bytes per 100 ms bucket and records each change of mirror', () => {
    let t = 1234;
    const tl = new Timeline({ now: () => t });
    tl.fetched('http://a/', 10);
    tl.fetched('http://a/', 20);
    t = 1450;
    tl.fetched('http://b/', 5);
    expect(tl.snapshot()).toEqual({
      startMs: 1200,
      bucketMs: 100,
      blocks: [2, 0, 1],
      bytes: [30, 0, 5],
      switches: [
        { atMs: 1234, from: null, to: 'http://a/' },
        { atMs: 1450, from: 'http://a/', to: 'http://b/' },
      ],
    });
    expect(tl.mirror).toBe('http://b/');
  });

  it('stays bounded: buckets merge and double, switches stop at a limit, no block is lost', () => {
    let t = 0;
    const tl = new Timeline({ now: () => t });
    let n = 0;
    for (; t < 1000 * 1000; t += 250) {
      tl.fetched(n % 2 ? 'http://a/' : 'http://b/', 1);
      n++;
    }
    const s = tl.snapshot();
    expect(s.blocks.length).toBeLessThanOrEqual(MAX_BUCKETS);
    expect(s.bucketMs).toBeGreaterThan(100);
    expect(s.blocks.reduce((a, b) => a + b, 0)).toBe(n);
    expect(s.bytes.reduce((a, b) => a + b, 0)).toBe(n);
    expect(s.switches).toHaveLength(MAX_SWITCHES);
  });
});
